package main

import (
	"bytes"
	"testing"

	"pec/configs"
)

// FuzzParseConfig: any bytes give a configuration or faults, never a
// panic; a syntax error is one fault alone; every fault placed in the file
// is on one of its lines; whatever decodes can be validated and its faults
// placed.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []configs.Params{
		{Dev: true, Module: softHSMModule, TokenLabel: "pec-dev", PINFile: "hsm/pin", SoftHSM2Conf: "hsm/softhsm2.conf", PolicyOID: devPolicyOID},
		{KeyDir: "keys", PolicyOID: "1.2.3"},
	} {
		b, err := configs.Render(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("data_dir: x\n---\ndata_dir: y\n"))
	f.Add([]byte("tsa: {accuracy: forever}\n"))
	f.Add([]byte("listen: [1, 2]\n"))
	f.Add([]byte("tsa:\n  acuracy: 1s\n  hashes: [md5]\ndata_dir: a\ndata_dir: b\n"))
	f.Add([]byte("base: &b {key_label: x}\ntsa: {<<: *b, node_id: -1}\nsigning: {profiles: [{name: A}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, doc, faults, fatal := decodeConfig(data)
		if fatal && len(faults) != 1 {
			t.Fatalf("fatal with %d faults: %v", len(faults), faults)
		}
		if _, err := parseConfig(data); (err != nil) != (len(faults) > 0) {
			t.Errorf("parseConfig: %v, decodeConfig: %d faults", err, len(faults))
		}
		if !fatal {
			cfg.resolvePaths("/node")
			faults = append(faults, placeFaults(doc, cfg.Validate(), faults)...)
		}
		lines := 1
		for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(br))
		}
		for _, fl := range faults {
			if fl.Line < 0 || fl.Line > lines || fl.Message == "" {
				t.Errorf("fault %+v (the file has at most %d lines)", fl, lines)
			}
		}
	})
}
