package hsm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/hsm"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	const mod = "/usr/lib/softhsm/libsofthsm2.so"
	for _, c := range []struct {
		name string
		cfg  hsm.Config
		want []string // the lines of the error, in order; none: valid
	}{
		{"module by label, pin file", hsm.Config{Module: mod, TokenLabel: "pec", PINFile: "/etc/pec/pin"}, nil},
		{"module by serial, pin env", hsm.Config{Module: mod, TokenSerial: "1a2b3c", PINEnv: "PEC_HSM_PIN", Sessions: 8}, nil},
		{"both label and serial", hsm.Config{Module: mod, TokenLabel: "pec", TokenSerial: "1a2b", PINFile: "p", SoftHSM2Conf: "c"}, nil},
		{"software keys", hsm.Config{KeyDir: "/var/lib/pec/keys"}, nil},
		{"empty", hsm.Config{}, []string{
			"hsm.module: required (a PKCS#11 module), or hsm.key_dir for software keys",
		}},
		{"module and key_dir", hsm.Config{Module: mod, KeyDir: "k", TokenLabel: "pec", PINFile: "p"}, []string{
			"hsm.key_dir: set together with hsm.module: choose a PKCS#11 module or software keys",
		}},
		{"module alone", hsm.Config{Module: mod}, []string{
			"hsm.token_label: required with hsm.module (or hsm.token_serial)",
			"hsm.pin_file: required with hsm.module (or hsm.pin_env); the PIN itself never goes in pec.yaml",
		}},
		{"both PIN sources, negative sessions and wait", hsm.Config{Module: mod, TokenLabel: "pec", PINFile: "p", PINEnv: "E", Sessions: -1, Wait: -time.Second}, []string{
			"hsm.sessions: -1 is negative (0 picks a size from the CPU count)",
			"hsm.wait: -1s is negative (0: 10s)",
			"hsm.pin_env: set together with hsm.pin_file: choose one",
		}},
		{"wait", hsm.Config{Module: mod, TokenLabel: "pec", PINFile: "p", Wait: 3 * time.Second}, nil},
		{"long label and serial, bad env name", hsm.Config{Module: mod, TokenLabel: strings.Repeat("l", 33), TokenSerial: strings.Repeat("s", 17), PINEnv: "A=B"}, []string{
			`hsm.token_label: "` + strings.Repeat("l", 33) + `" is not a PKCS#11 token label (UTF-8, at most 32 bytes)`,
			`hsm.token_serial: "` + strings.Repeat("s", 17) + `" is longer than a PKCS#11 token serial (16 characters)`,
			`hsm.pin_env: "A=B" is not an environment variable name`,
		}},
		{"token fields with software keys", hsm.Config{KeyDir: "k", TokenLabel: "pec", PINFile: "p", SoftHSM2Conf: "c", Sessions: 4, Wait: time.Second}, []string{
			"hsm.token_label: only with hsm.module (software keys in hsm.key_dir need none)",
			"hsm.pin_file: only with hsm.module (software keys in hsm.key_dir need none)",
			"hsm.softhsm2_conf: only with hsm.module (software keys in hsm.key_dir need none)",
			"hsm.sessions: only with hsm.module",
			"hsm.wait: only with hsm.module",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("Validate() lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeyTypeString(t *testing.T) {
	t.Parallel()
	for kt, want := range map[hsm.KeyType]string{
		hsm.RSA2048: "RSA-2048", hsm.RSA3072: "RSA-3072", hsm.ECP256: "ECDSA-P256", hsm.ECP384: "ECDSA-P384", 0: "KeyType(0)",
	} {
		if got := kt.String(); got != want {
			t.Errorf("KeyType(%d).String() = %q, want %q", int(kt), got, want)
		}
	}
}
