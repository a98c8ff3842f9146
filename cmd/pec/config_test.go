package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func TestConfigFaultsAreAllNamed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pec.yaml")
	bad := `data_dir: ""
log: {level: loud, format: xml}
listen: {tsa: "nowhere", api: "127.0.0.1:8443"}
tls: {}
hsm: {key_dir: keys}
tsa: {key_label: tsa, cert_file: tsa.pem, policy_oid: "1.2.x", accuracy: 1s, serial_file: s, journal_file: j}
`
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{
		"pec.yaml: data_dir: required",
		"pec.yaml: log.level:",
		"pec.yaml: log.format:",
		"pec.yaml: listen.tsa:",
		"pec.yaml: tls.cert_file:",
		"pec.yaml: tls.client_roots:",
		"pec.yaml: tsa.policy_oid:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
