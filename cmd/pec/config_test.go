package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"pec/configs"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGeneratedConfig renders the pec.yaml of `pec init` in both variants,
// compares it with the golden file (generated config is deterministic bytes),
// and checks that it decodes strictly and validates.
func TestGeneratedConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params configs.Params
	}{
		{"softhsm", configs.Params{Dev: true, Module: softHSMModule, TokenLabel: "pec-dev", PINFile: "hsm/pin", SoftHSM2Conf: "hsm/softhsm2.conf", PolicyOID: devPolicyOID, DevCAURL: defaultCAURL}},
		{"software", configs.Params{Dev: true, KeyDir: "keys", PolicyOID: devPolicyOID, DevCAURL: defaultCAURL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := configs.Render(tc.params)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", "pec-"+tc.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGeneratedConfig -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("generated pec.yaml differs from %s (run with -update if intended)", golden)
			}
			cfg, err := parseConfig(got)
			if err != nil {
				t.Fatalf("generated config does not decode: %v", err)
			}
			cfg.resolvePaths("/node")
			if err := cfg.Validate(); err != nil {
				t.Fatalf("generated config is invalid: %v", err)
			}
			if cfg.Listen.TSA == "" || cfg.Listen.API == "" {
				t.Errorf("listen = %+v", cfg.Listen)
			}
		})
	}
}

// minimal is a valid pec.yaml with software keys; its files are made by
// writeFiles.
const minimal = `data_dir: data
listen:
  tsa: "127.0.0.1:0"
hsm:
  key_dir: keys
tsa:
  key_label: tsa
  cert_file: tsa.pem
  policy_oid: "1.2.3"
  accuracy: 1s
  serial_file: data/serials
  journal_file: data/journal
`

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoadConfigFaults: every fault of a file at once, each with its line
// and path, in the order of the lines; a fault that explains another (a
// misspelt or mistyped field, then "required") alone; a syntax error alone.
func TestLoadConfigFaults(t *testing.T) {
	t.Parallel()
	base := map[string]string{"keys/": "", "tsa.pem": "x"}
	for _, tc := range []struct {
		name  string
		yaml  string
		files map[string]string // beside pec.yaml; a name ending in / is a directory
		want  []string          // the lines of the error, DIR for the directory
	}{
		{"valid", minimal, base, nil},
		{"unknown field with a suggestion", strings.Replace(minimal, "  accuracy: 1s", "  acuracy: 1s", 1), base, []string{
			// and no "tsa.accuracy: must be positive": the typo explains it
			"DIR/pec.yaml:10: tsa.acuracy: unknown field (did you mean accuracy?)",
		}},
		{"unknown field without one", minimal + "log: {colour: blue}\n", base, []string{
			"DIR/pec.yaml:13: log.colour: unknown field (this section has level, format)",
		}},
		{"unknown section", minimal + "tsl: {}\n", base, []string{
			"DIR/pec.yaml:13: tsl: unknown field (did you mean tls?)",
		}},
		{"a typo beside the field meant explains none of its faults", minimal + "proof: {file: p.db, origin: o.example/proof, key_label: proof, cert_file: tsa.pem, batchsize: 1, batch_size: -1}\n", base, []string{
			"DIR/pec.yaml:13: proof.batchsize: unknown field (did you mean batch_size?)",
			"DIR/pec.yaml:13: proof.batch_size: -1 is not within 0-1048576",
		}},
		{"wrong types", strings.NewReplacer("  tsa: \"127.0.0.1:0\"", "  tsa: \"127.0.0.1:0\"\n  max_in_flight: many", "accuracy: 1s", "accuracy: forever").Replace(minimal), base, []string{
			`DIR/pec.yaml:4: listen.max_in_flight: "many" is not an integer`,
			// and no "must be positive"
			`DIR/pec.yaml:11: tsa.accuracy: "forever" is not a duration such as 30s, 1m30s or 2h`,
		}},
		{"a section of the wrong type", strings.Replace(minimal, "hsm:\n  key_dir: keys\n", "hsm: [keys]\n", 1), base, []string{
			"DIR/pec.yaml:4: hsm: want a mapping of fields, not a list",
		}},
		{"set twice", minimal + "data_dir: other\n", base, []string{
			"DIR/pec.yaml:13: data_dir: set twice (first at line 1)",
		}},
		{"semantic faults at their line, or their section's", strings.NewReplacer(`policy_oid: "1.2.3"`, `policy_oid: "1.2.x"`, "listen:\n", "log: {level: loud}\nlisten:\n  api: \"127.0.0.1:0\"\n").Replace(minimal), base, []string{
			// No tls section: no line.
			"DIR/pec.yaml: tls.cert_file: required to serve TLS",
			"DIR/pec.yaml: tls.key_label: required to serve TLS",
			"DIR/pec.yaml: tls.client_roots: required: the API accepts only mutual TLS",
			`DIR/pec.yaml:2: log.level: "loud" is not one of debug, info, warn, error`,
			`DIR/pec.yaml:11: tsa.policy_oid: "1.2.x" is not an OID`,
		}},
		{"missing files", minimal + "proof:\n  file: data/proof.db\n  origin: o.example/proof\n  key_label: proof\n  cert_file: pki/proof.pem\n", map[string]string{}, []string{
			"DIR/pec.yaml:5: hsm.key_dir: DIR/keys: no such file or directory (the directory of the software keys, one LABEL.key file each; pec init --software-keys --dir DIR makes one)",
			"DIR/pec.yaml:8: tsa.cert_file: DIR/tsa.pem: no such file or directory",
			"DIR/pec.yaml:17: proof.cert_file: DIR/pki/proof.pem: no such file or directory",
		}},
		{"a PIN file and a module missing", strings.Replace(minimal, "  key_dir: keys\n", "  module: /nonexistent/lib/nosuch.so\n  token_label: t\n  pin_file: hsm/pin\n", 1), base, []string{
			"DIR/pec.yaml:5: hsm.module: /nonexistent/lib/nosuch.so: no such file or directory (install the PKCS#11 module (SoftHSM2: apt-get install softhsm2) or correct the path)",
			"DIR/pec.yaml:7: hsm.pin_file: DIR/hsm/pin: no such file or directory (write the token's user PIN in it, mode 0600, or give hsm.pin_env; pec init --dir DIR makes one for a development token)",
		}},
		{"a module on the loader's path is not looked for", strings.Replace(minimal, "  key_dir: keys\n", "  module: libsofthsm2.so\n  token_label: t\n  pin_file: pin\n", 1), map[string]string{"tsa.pem": "x", "pin": "1234"}, nil},
		{"unusable places", minimal, map[string]string{"keys": "a file", "tsa.pem/": "", "data": "a file"}, []string{
			"DIR/pec.yaml:1: data_dir: DIR/data: not a directory",
			"DIR/pec.yaml:5: hsm.key_dir: DIR/keys: not a directory",
			"DIR/pec.yaml:8: tsa.cert_file: DIR/tsa.pem: a directory, not a file",
			// and nothing of the files to create in data_dir
		}},
		{"a file in the way", strings.Replace(minimal, "data/serials", "state/tsa/serials", 1), map[string]string{"keys/": "", "tsa.pem": "x", "state": "a file"}, []string{
			"DIR/pec.yaml:11: tsa.serial_file: DIR/state/tsa/serials: cannot be created: DIR/state is not a directory",
		}},
		{"list items and map keys", minimal + `signing:
  profiles:
    - {name: a, key_label: k, cert_file: tsa.pem, format: cades}
    - {name: b, key_label: k, cert_file: nosuch.pem, format: pdf}
certvalidation:
  purposes:
    clientAuth: {roots: [roots/], revocation: sometimes}
    codeSigning: {}
directory:
  partners:
    - id: Partner_A
      name: A
      channel: {type: webhook}
`, map[string]string{"keys/": "", "tsa.pem": "x", "roots/": ""}, []string{
			"DIR/pec.yaml:16: signing.profiles[1].cert_file: DIR/nosuch.pem: no such file or directory",
			`DIR/pec.yaml:16: signing.profiles[1].format: "pdf" is not one of cades, pades`,
			`DIR/pec.yaml:19: certvalidation.purposes.clientAuth.revocation: unknown revocation policy "sometimes" (want none, prefer or require)`,
			`DIR/pec.yaml:20: certvalidation.purposes.codeSigning: unknown purpose "codeSigning" (want one of any, serverAuth, clientAuth, emailProtection, timeStamping, documentSigning)`,
			`DIR/pec.yaml:23: directory.partners[0].id: "Partner_A" is not a partner id (lowercase letters, digits, '.', '_', '-'; 63 at most)`,
			`DIR/pec.yaml:25: directory.partners[0].channel.url: "" is not an https:// URL`,
		}},
		{"a syntax error stops there", "data_dir: data\nlog: {level: loud}\ntsa:\n  key_label: [tsa\ncolour: blue\n", nil, []string{
			"DIR/pec.yaml:4: YAML syntax: did not find expected ',' or ']'", // where the [ is
		}},
		{"a syntax error of the scanner", "data_dir: data\nlog: {level: info}\ntsa: key_label: tsa\n", nil, []string{
			"DIR/pec.yaml:3: YAML syntax: mapping values are not allowed in this context",
		}},
		{"a syntax error of the parser", "data_dir: data\ntsa:\n  key_label: tsa\n  cert_file: tsa.pem\n bad: 2\n", nil, []string{
			"DIR/pec.yaml:5: YAML syntax: did not find expected key",
		}},
		{"an item among fields", "data_dir: data\ntsa:\n  - a\n  b: c\n", nil, []string{
			"DIR/pec.yaml:3: YAML syntax: did not find expected '-' indicator",
		}},
		{"the end of a file without its last newline", "data_dir: [a", nil, []string{
			"DIR/pec.yaml:1: YAML syntax: did not find expected ',' or ']'",
		}},
		{"an unknown anchor", "data_dir: &d data\nlog:\n  level: *dd\n", nil, []string{
			"DIR/pec.yaml:3: YAML syntax: unknown anchor 'dd' referenced",
		}},
		{"a tab", "data_dir: data\ntsa:\n\tkey_label: tsa\n", nil, []string{
			"DIR/pec.yaml:3: YAML syntax: found character that cannot start any token",
		}},
		{"a second document", minimal + "---\ndata_dir: other\n", base, []string{
			"DIR/pec.yaml:13: a second YAML document (after ---): pec.yaml holds one",
		}},
		{"empty", "# nothing\n", nil, []string{
			"DIR/pec.yaml: empty: no configuration in the file (pec init --dir DIR writes a commented one)",
		}},
		{"not a mapping", "- data_dir\n", nil, []string{
			`DIR/pec.yaml:1: want a mapping of fields, not a list`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			path := filepath.Join(dir, "pec.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(path)
			var got []string
			if err != nil {
				if _, ok := errors.AsType[*ConfigError](err); !ok {
					t.Errorf("error is a %T, not a *ConfigError", err)
				}
				got = strings.Split(strings.ReplaceAll(err.Error(), dir, "DIR"), "\n")
			} else if cfg == nil {
				t.Fatal("no configuration and no error")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("LoadConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	t.Parallel()
	_, err := LoadConfig(filepath.Join(t.TempDir(), "pec.yaml"))
	if err == nil || !strings.Contains(err.Error(), "pec.yaml: no such file (pec init --dir DIR writes") {
		t.Errorf("err = %v", err)
	}
}

// TestLoadConfigUnreadable: a file the user cannot read (root reads them all).
func TestLoadConfigUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"keys/": "", "tsa.pem": "x"})
	if err := os.Chmod(filepath.Join(dir, "tsa.pem"), 0); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pec.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "pec.yaml:8: tsa.cert_file: "+filepath.Join(dir, "tsa.pem")+": not readable by this user") {
		t.Errorf("err = %v", err)
	}
}
