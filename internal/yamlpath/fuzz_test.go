package yamlpath_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"pec/internal/yamlpath"
)

// FuzzCheck: any document and path give faults or none, never a panic;
// every fault has a line; a document Check passes decodes strictly with no
// type error (Check never accepts what the decoder refuses); a path that
// parses formats back to itself.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(located), "signing.profiles[1].cert_file")
	f.Add([]byte("tsa: {acuracy: 1s, accuracy: forever}\nlisten: [1]\n"), "tsa.accuracy")
	f.Add([]byte("base: &b {name: x}\nsigning: {profiles: [{<<: *b, page: 300}]}\n"), "signing.profiles[0].name")
	f.Add([]byte("kids: &a [{kids: *a}]\n"), "kids[0].kids[0]")
	f.Add([]byte("? [a]\n: x\ndata_dir: a\ndata_dir: b\n"), "a[0][1]")
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		var n yaml.Node
		if err := yaml.Unmarshal(data, &n); err != nil {
			return
		}
		faults := yamlpath.Check(&n, typ)
		// YAML breaks lines at \n, \r, and (YAML 1.1, which the parser
		// follows) NEL, LS and PS: an upper bound of the line count.
		lines := 1
		for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(br))
		}
		for _, fl := range faults {
			if fl.Line < 1 || fl.Line > lines {
				t.Errorf("fault %v at line %d of %d", fl, fl.Line, lines)
			}
		}
		if len(faults) == 0 {
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			var v config
			if err := dec.Decode(&v); err != nil {
				if _, ok := errors.AsType[*yaml.TypeError](err); ok {
					t.Errorf("Check found nothing, the decoder: %v", err)
				}
			}
		}
		// Without the entries that hold them, the faults are gone (but for
		// those of the document as a whole, and the node bound).
		yamlpath.Drop(&n, faults)
		for _, fl := range yamlpath.Check(&n, typ) {
			if fl.Entry != "" && !strings.HasPrefix(fl.Message, "more than") {
				t.Errorf("after Drop: %v (entry %q)", fl, fl.Entry)
			}
		}
		if line, _, _ := yamlpath.Locate(&n, path); line < 0 || line > lines {
			t.Errorf("Locate(%q) = line %d of %d", path, line, lines)
		}
		if steps, err := yamlpath.Parse(path); err == nil {
			if back := yamlpath.Format(steps); back != path {
				t.Errorf("Format(Parse(%q)) = %q", path, back)
			}
		}
	})
}
