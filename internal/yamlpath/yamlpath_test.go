package yamlpath_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"pec/internal/yamlpath"
)

// The shape of a small pec.yaml: nested sections, lists of mappings, maps,
// an inline struct, a type with its own text decoding.
type config struct {
	DataDir string            `yaml:"data_dir"`
	Listen  listen            `yaml:"listen"`
	TSA     tsa               `yaml:"tsa"`
	Signing signing           `yaml:"signing"`
	Purpose map[string]roots  `yaml:"purposes"`
	Labels  map[string]string `yaml:"labels"`
	Peer    netip.Addr        `yaml:"peer"`   // encoding.TextUnmarshaler
	Ports   map[int]string    `yaml:"ports"`  // non-string keys
	Weight  float64           `yaml:"weight"` // a number
	Any     any               `yaml:"any"`
	Skipped string            `yaml:"-"`
	Plain   int               // no tag: "plain"
	private int
}

type listen struct {
	API         string `yaml:"api"`
	MaxInFlight int    `yaml:"max_in_flight"`
}

type tsa struct {
	KeyLabel string        `yaml:"key_label"`
	Accuracy time.Duration `yaml:"accuracy"`
	Hashes   []string      `yaml:"hashes"`
	Clock    struct {
		NTPServers []string `yaml:"ntp_servers"`
		Off        bool     `yaml:"off"`
	} `yaml:"clock"`
}

type signing struct {
	Profiles []profile `yaml:"profiles"`
}

type profile struct {
	common   `yaml:",inline"`
	CertFile string `yaml:"cert_file"`
	Rect     [4]float64
}

type common struct {
	Name string `yaml:"name"`
	Page int8   `yaml:"page"`
}

type roots struct {
	Roots []string `yaml:"roots"`
}

var typ = reflect.TypeFor[config]()

func parse(t testing.TB, doc string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatalf("test document does not parse: %v", err)
	}
	return &n
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []yamlpath.Step
	}{
		{"tsa", []yamlpath.Step{{Key: "tsa", Index: -1}}},
		{"tsa.clock.ntp_servers[1]", []yamlpath.Step{{Key: "tsa", Index: -1}, {Key: "clock", Index: -1}, {Key: "ntp_servers", Index: -1}, {Index: 1}}},
		{"a[0][12].b", []yamlpath.Step{{Key: "a", Index: -1}, {Index: 0}, {Index: 12}, {Key: "b", Index: -1}}},
		{"certvalidation.purposes.clientAuth.roots", []yamlpath.Step{{Key: "certvalidation", Index: -1}, {Key: "purposes", Index: -1}, {Key: "clientAuth", Index: -1}, {Key: "roots", Index: -1}}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := yamlpath.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
			if back := yamlpath.Format(got); back != tc.in {
				t.Errorf("Format(Parse(%q)) = %q", tc.in, back)
			}
		})
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "a[", "a[]", "a[x]", "a[-1]", "a[01]", "a]", "[0]", "a[0]b", "a b", "a:b", "middleoffice: invalid", strings.Repeat("a", yamlpath.MaxPath+1)} {
		t.Run("bad/"+bad, func(t *testing.T) {
			if s, err := yamlpath.Parse(bad); !errors.Is(err, yamlpath.ErrSyntax) {
				t.Errorf("Parse(%q) = %v, %v; want ErrSyntax", bad, s, err)
			}
		})
	}
}

const located = `# pec.yaml
data_dir: data
listen: {api: "127.0.0.1:8443", max_in_flight: 10}
tsa:
  key_label: tsa
  accuracy: 1s
  hashes:
    - sha256
    - sha512
  clock:
    ntp_servers: [a, b]
base: &base
  cert_file: x.pem
signing:
  profiles:
    - name: one
      cert_file: one.pem
    - <<: *base
      name: two
purposes:
  clientAuth:
    roots: [r.pem]
`

func TestLocate(t *testing.T) {
	t.Parallel()
	doc := parse(t, located)
	for _, tc := range []struct {
		path        string
		line, col   int
		exact       bool
		explanation string
	}{
		{"data_dir", 2, 1, true, "a top-level key"},
		{"listen.api", 3, 10, true, "a key of a flow mapping"},
		{"listen.max_in_flight", 3, 33, true, ""},
		{"tsa", 4, 1, true, "a section: where its key is written"},
		{"tsa.accuracy", 6, 3, true, ""},
		{"tsa.hashes[1]", 9, 7, true, "a sequence item"},
		{"tsa.clock.ntp_servers[0]", 11, 19, true, ""},
		{"signing.profiles[0]", 16, 7, true, "a mapping item: its first key"},
		{"signing.profiles[1].name", 19, 7, true, ""},
		{"signing.profiles[1].cert_file", 13, 3, true, "merged from an anchor: where the anchor has it"},
		{"purposes.clientAuth.roots[0]", 22, 13, true, ""},
		{"tsa.serial_file", 4, 1, false, "missing: its section"},
		{"tsa.clock.max_unreachable", 10, 3, false, ""},
		{"tsa.hashes[7]", 7, 3, false, "index out of range: the list"},
		{"tsa.accuracy.x", 6, 3, false, "below a scalar"},
		{"signing.profiles[5].name", 15, 3, false, ""},
		{"proof.file", 0, 0, false, "no such section"},
		{"middleoffice: invalid partner", 0, 0, false, "not a path"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			line, col, exact := yamlpath.Locate(doc, tc.path)
			if line != tc.line || col != tc.col || exact != tc.exact {
				t.Errorf("Locate(%q) = %d:%d %v, want %d:%d %v (%s)", tc.path, line, col, exact, tc.line, tc.col, tc.exact, tc.explanation)
			}
		})
	}
	if line, _, _ := yamlpath.Locate(nil, "a"); line != 0 {
		t.Errorf("Locate(nil) = line %d", line)
	}
	if line, _, _ := yamlpath.Locate(&yaml.Node{Kind: yaml.DocumentNode}, "a"); line != 0 {
		t.Errorf("Locate(empty document) = line %d", line)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		doc  string
		want []string // "LINE:COL PATH: MESSAGE"
	}{
		{"valid", `
data_dir: d
listen: {api: ":1", max_in_flight: 3}
tsa: {accuracy: 1m30s, hashes: [sha256], clock: {off: true}}
signing: {profiles: [{name: a, page: -1, cert_file: c, rect: [1, 2, 3.5, 4]}]}
purposes: {clientAuth: {roots: [r]}}
labels: {a: b, "1": c}
peer: 192.0.2.1
ports: {80: http}
weight: 1.5
any: {whatever: [1, 2]}
plain: 7
`, nil},
		{"nulls are zero values", "tsa:\nlisten: ~\nsigning: {profiles: [null]}\n", nil},
		{"unknown field, suggestion", "tsa:\n  acuracy: 1s\n", []string{"2:3 tsa.acuracy: unknown field (did you mean accuracy?)"}},
		{"unknown field, transposition", "tsa: {kye_label: x}\n", []string{"1:7 tsa.kye_label: unknown field (did you mean key_label?)"}},
		{"unknown field, case", "Data_Dir: x\n", []string{"1:1 Data_Dir: unknown field (did you mean data_dir?)"}},
		{"unknown field, none close", "colour: blue\n", []string{"1:1 colour: unknown field (the top level has data_dir, listen, tsa, signing, purposes, labels, peer, ports, weight, any, plain)"}},
		{"unknown field in a section, none close", "listen: {smtp: x}\n", []string{"1:10 listen.smtp: unknown field (this section has api, max_in_flight)"}},
		{"skipped and private fields are unknown", "skipped: x\nprivate: 1\n", []string{
			"1:1 skipped: unknown field (the top level has data_dir, listen, tsa, signing, purposes, labels, peer, ports, weight, any, plain)",
			"2:1 private: unknown field (the top level has data_dir, listen, tsa, signing, purposes, labels, peer, ports, weight, any, plain)",
		}},
		{"unknown field in a list item", "signing:\n  profiles:\n    - name: a\n    - nmae: b\n", []string{"4:7 signing.profiles[1].nmae: unknown field (did you mean name?)"}},
		{"unknown field in a map value", "purposes:\n  clientAuth:\n    root: [x]\n", []string{"3:5 purposes.clientAuth.root: unknown field (did you mean roots?)"}},
		{"not an integer", "listen:\n  max_in_flight: many\n", []string{`2:18 listen.max_in_flight: "many" is not an integer`}},
		{"not a whole number", "listen: {max_in_flight: 1.5}\n", []string{`1:25 listen.max_in_flight: "1.5" is not a whole number`}},
		{"out of range", "signing: {profiles: [{page: 300}]}\n", []string{`1:29 signing.profiles[0].page: "300" is out of range for an integer`}},
		{"not a duration", "tsa: {accuracy: forever}\n", []string{`1:17 tsa.accuracy: "forever" is not a duration such as 30s, 1m30s or 2h`}},
		{"a bare number is no duration", "tsa: {accuracy: 5}\n", []string{`1:17 tsa.accuracy: "5" is not a duration such as 30s, 1m30s or 2h`}},
		{"not a bool", "tsa: {clock: {off: maybe}}\n", []string{`1:20 tsa.clock.off: "maybe" is not true or false`}},
		{"not a number", "weight: heavy\n", []string{`1:9 weight: "heavy" is not a number`}},
		{"a list for a string", "data_dir: [a, b]\n", []string{"1:11 data_dir: want a string, not a list"}},
		{"a mapping for a string", "data_dir: {a: b}\n", []string{"1:11 data_dir: want a string, not a mapping"}},
		{"a list for a section", "listen: [1, 2]\n", []string{"1:9 listen: want a mapping of fields, not a list"}},
		{"a scalar for a section", "tsa: on\n", []string{`1:6 tsa: want a mapping of fields, not "on"`}},
		{"a scalar for a list", "tsa: {hashes: sha256}\n", []string{`1:15 tsa.hashes: want a list, not "sha256"`}},
		{"a scalar for a map", "purposes: x\n", []string{`1:11 purposes: want a mapping, not "x"`}},
		{"a wrong map key", "ports: {http: x}\n", []string{`1:9 ports.http: "http" is not an integer`}},
		{"an array too long", "signing: {profiles: [{rect: [1, 2, 3, 4, 5]}]}\n", []string{"1:29 signing.profiles[0].rect: 5 items where at most 4 fit"}},
		{"text decoding", "peer: 999.1.1.1\n", []string{`1:7 peer: "999.1.1.1": ParseAddr("999.1.1.1"): IPv4 field has value >255`}},
		{"set twice", "data_dir: a\ntsa: {}\ndata_dir: b\n", []string{"3:1 data_dir: set twice (first at line 1)"}},
		{"a key that is a list", "? [a]\n: x\n", []string{"1:3 a key must be a plain name, not a list"}},
		{"inline fields", "signing: {profiles: [{name: a, page: 2, nme: x}]}\n", []string{"1:41 signing.profiles[0].nme: unknown field (did you mean name?)"}},
		{"merged keys are checked", "base: &b {acuracy: 1s}\ntsa:\n  <<: *b\n", []string{
			"1:1 base: unknown field (the top level has data_dir, listen, tsa, signing, purposes, labels, peer, ports, weight, any, plain)",
			"1:11 tsa.acuracy: unknown field (did you mean accuracy?)",
		}},
		{"own keys win over merged ones", "tsa:\n  <<: [{accuracy: 1s}, {accuracy: x}]\n  key_label: k\n", nil},
		{"merge of a scalar", "tsa:\n  <<: x\n", []string{`2:7 tsa: << merges mappings, not "x"`}},
		{"alias of a wrong value", "listen: {api: &a [1]}\ndata_dir: *a\n", []string{"1:15 listen.api: want a string, not a list", "1:15 data_dir: want a string, not a list"}},
		{"every fault at once, in order", `data_dir: d
listen:
  max_in_flight: many
tsa:
  acuracy: 1s
  accuracy: forever
  clock: {off: 2}
signing:
  profiles:
    - {name: a, digest: sha1}
`, []string{
			`3:18 listen.max_in_flight: "many" is not an integer`,
			"5:3 tsa.acuracy: unknown field (did you mean accuracy?)",
			`6:13 tsa.accuracy: "forever" is not a duration such as 30s, 1m30s or 2h`,
			`7:16 tsa.clock.off: "2" is not true or false`,
			"10:17 signing.profiles[0].digest: unknown field (this section has name, page, cert_file, rect)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := parse(t, tc.doc)
			var got []string
			for _, f := range yamlpath.Check(doc, typ) {
				got = append(got, fmt.Sprintf("%d:%d %v", f.Line, f.Column, f))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Check (-want +got):\n%s", diff)
			}
			// Without the entries that hold faults, the rest decodes.
			faults := yamlpath.Check(doc, typ)
			yamlpath.Drop(doc, faults)
			var v config
			if err := doc.Decode(&v); err != nil {
				t.Errorf("after Drop: %v", err)
			}
			// Check agrees with the strict decoder: no fault, no error.
			err := strictDecode([]byte(tc.doc))
			// Check is stricter in one case: the decoder truncates 1.5.
			stricter := tc.name == "not a whole number"
			if (len(got) == 0) != (err == nil) && !(stricter && err == nil) {
				t.Errorf("Check found %d faults, the strict decoder: %v", len(got), err)
			}
		})
	}
}

func strictDecode(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var v config
	return dec.Decode(&v)
}

// TestDrop: the entries that hold faults go, the rest stays and decodes:
// the first of two data_dir, the fields beside a misspelt one, the
// sections beside a wrong one.
func TestDrop(t *testing.T) {
	t.Parallel()
	doc := parse(t, `data_dir: first
listen: {api: ":1", max_in_flight: many}
tsa:
  key_label: tsa
  acuracy: 1s
  hashes: [sha256, [x]]
signing: on
data_dir: second
`)
	faults := yamlpath.Check(doc, typ)
	var entries []string
	for _, f := range faults {
		entries = append(entries, f.Path+" in "+f.Entry)
	}
	want := []string{
		"listen.max_in_flight in listen.max_in_flight",
		"tsa.acuracy in tsa.acuracy",
		"tsa.hashes[1] in tsa.hashes",
		"signing in signing",
		"data_dir in data_dir",
	}
	if diff := cmp.Diff(want, entries); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	yamlpath.Drop(doc, faults)
	var got config
	if err := doc.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.DataDir != "first" || got.Listen.API != ":1" || got.TSA.KeyLabel != "tsa" || got.TSA.Hashes != nil || got.Listen.MaxInFlight != 0 {
		t.Errorf("decoded %+v", got)
	}
	if line, _, exact := yamlpath.Locate(doc, "tsa.key_label"); line != 4 || !exact {
		t.Errorf("tsa.key_label at line %d after Drop", line)
	}
	if line, _, exact := yamlpath.Locate(doc, "tsa.acuracy"); exact {
		t.Errorf("tsa.acuracy still at line %d", line)
	}
}

func TestCheckSuggestion(t *testing.T) {
	t.Parallel()
	faults := yamlpath.Check(parse(t, "tsa: {acuracy: 1s}\n"), typ)
	if len(faults) != 1 || faults[0].Suggestion != "accuracy" {
		t.Fatalf("faults = %v", faults)
	}
}

func TestCheckAliasCycle(t *testing.T) {
	t.Parallel()
	// yaml.v3 parses an anchor that contains its own alias into a cycle.
	type tree struct {
		Kids []tree `yaml:"kids"`
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("kids: &a [{kids: *a}]\n"), &n); err != nil {
		t.Fatalf("parser refuses the cycle: %v", err)
	}
	faults := yamlpath.Check(&n, reflect.TypeFor[tree]())
	if len(faults) == 0 || !strings.Contains(faults[len(faults)-1].Message, "contains itself") {
		t.Errorf("faults = %v", faults)
	}
}

func TestCheckAliasBomb(t *testing.T) {
	t.Parallel()
	// A billion laughs: each anchor doubles the one before; bomb stands
	// for 2^31 strings, of the right type. Check stops at MaxNodes.
	var b strings.Builder
	b.WriteString("defs:\n  - &l0 [a, a]\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "  - &l%d [*l%d, *l%d]\n", i, i-1, i-1)
	}
	b.WriteString("bomb: *l30\n")
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &n); err != nil {
		t.Fatal(err)
	}
	bomb := reflect.TypeFor[string]()
	for range 31 {
		bomb = reflect.SliceOf(bomb)
	}
	typ := reflect.StructOf([]reflect.StructField{
		{Name: "Defs", Type: reflect.TypeFor[any](), Tag: `yaml:"defs"`},
		{Name: "Bomb", Type: bomb, Tag: `yaml:"bomb"`},
	})
	start := time.Now()
	faults := yamlpath.Check(&n, typ)
	if time.Since(start) > 10*time.Second {
		t.Errorf("Check took %v", time.Since(start))
	}
	if len(faults) != 1 || !strings.Contains(faults[0].Message, "more than") {
		t.Errorf("faults = %v", faults)
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	fields := []string{"key_label", "cert_file", "policy_oid", "accuracy", "serial_file", "journal_file", "node_id", "hashes"}
	for _, tc := range []struct{ word, want string }{
		{"acuracy", "accuracy"},    // a letter missing
		{"accurracy", "accuracy"},  // a letter more
		{"acucracy", "accuracy"},   // a letter changed
		{"kye_label", "key_label"}, // two swapped
		{"Accuracy", "accuracy"},   // case
		{"CERT_FILE", "cert_file"}, // case
		{"certfile", "cert_file"},  // separator missing
		{"cert-file", "cert_file"}, // separator changed
		{"serial", ""},             // 5 edits away
		{"node", ""},               // "node_id" is 3 away
		{"hashs", "hashes"},        // a letter missing
		{"hash", ""},               // 2 away: too many for 4 letters
		{"xyz", ""},                // nothing near
		{"", ""},                   // nothing
		{"journal_files", "journal_file"},
	} {
		if got := yamlpath.Suggest(tc.word, fields); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.word, got, tc.want)
		}
	}
	// Short words: one edit at most, so that tls does not become tsa.
	top := []string{"tsa", "api", "ops", "web", "log", "tls"}
	for _, tc := range []struct{ word, want string }{
		{"tsl", "tls"}, {"ap", "api"}, {"tlz", "tls"}, {"xyz", ""}, {"ssl", ""},
	} {
		if got := yamlpath.Suggest(tc.word, top); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.word, got, tc.want)
		}
	}
	if got := yamlpath.Suggest("ab", []string{"ac", "ab_"}); got != "ab_" {
		t.Errorf("tie: %q", got)
	}
}
