package main

import (
	"testing"

	"pec/configs"
)

// FuzzParseConfig: any bytes give a configuration or an error, never a
// panic, and whatever decodes can be validated.
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
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig(data)
		if err != nil {
			return
		}
		cfg.resolvePaths("/node")
		_ = cfg.Validate()
	})
}
