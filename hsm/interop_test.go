package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// tool runs an independent implementation; a missing tool fails the test
// (never a skip), naming its Debian package.
func tool(t *testing.T, pkg, name string, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the %s package", name, pkg)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestInteropPKCS11Tool: OpenSC's pkcs11-tool, reading the token through
// the same module, sees each generated pair by label, with a shared CKA_ID,
// the private half sensitive and never extractable.
func TestInteropPKCS11Tool(t *testing.T) {
	t.Parallel()
	cfg := softhsmtest.NewToken(t, "interop")
	ks := open(t, cfg, hsm.Options{})
	// Usage as pkcs11-tool prints it: RSA signs and decrypts, EC only signs.
	labels := map[string]hsm.KeyType{"interop-rsa": hsm.RSA2048, "interop-ec": hsm.ECP384}
	usage := map[string]string{"interop-rsa": "decrypt, sign", "interop-ec": "sign"}
	for label, kt := range labels {
		if _, err := ks.GenerateKey(t.Context(), label, kt); err != nil {
			t.Fatal(err)
		}
	}
	out := string(tool(t, "opensc", "pkcs11-tool", "--module", softhsmtest.Module,
		"--token-label", cfg.TokenLabel, "--login", "--pin", softhsmtest.PIN(t, cfg), "--list-objects"))
	for label := range labels {
		priv := regexp.MustCompile(`Private Key Object; (RSA|EC)[^\n]*\n\s+label:\s+` + regexp.QuoteMeta(label) +
			`\n\s+ID:\s+([0-9a-f]{32})\n\s+Usage:\s+` + usage[label] + `\n\s+Access:[^\n]*sensitive, always sensitive, never extractable`)
		m := priv.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("pkcs11-tool does not list a sensitive, never extractable private key %q for %s:\n%s", label, usage[label], out)
			continue
		}
		pub := regexp.MustCompile(`Public Key Object;[^\n]*\n(?:\s+EC_[A-Z]+:[^\n]*\n)*\s+label:\s+` + regexp.QuoteMeta(label) + `\n\s+ID:\s+` + m[2])
		if !pub.MatchString(out) {
			t.Errorf("pkcs11-tool does not list the public key %q with ID %s:\n%s", label, m[2], out)
		}
	}
}

// TestInteropOpenSSL: openssl verifies our signatures and makes
// ciphertexts we decrypt, for token and software keys.
func TestInteropOpenSSL(t *testing.T) {
	t.Parallel()
	for name, cfg := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := open(t, cfg, hsm.Options{})
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			if err := os.WriteFile(data, []byte("an evidence record, canonical bytes"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				kt   hsm.KeyType
				opts crypto.SignerOpts
				args []string
			}{
				{hsm.ECP256, crypto.SHA256, []string{"-sha256"}},
				{hsm.ECP384, crypto.SHA384, []string{"-sha384"}},
				{hsm.RSA2048, crypto.SHA256, []string{"-sha256"}},
				{hsm.RSA3072, &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: rsa.PSSSaltLengthEqualsHash},
					[]string{"-sha512", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:64"}},
			} {
				t.Run(c.kt.String(), func(t *testing.T) {
					signer, err := ks.GenerateKey(t.Context(), uniqueLabel(t, "openssl"), c.kt)
					if err != nil {
						t.Fatal(err)
					}
					pubPEM := writePublicKey(t, dir, signer.Public())
					msg, _ := os.ReadFile(data)
					sig, err := signer.Sign(nil, digest(c.opts.HashFunc(), string(msg)), c.opts)
					if err != nil {
						t.Fatal(err)
					}
					sigFile := filepath.Join(dir, "sig-"+c.kt.String())
					os.WriteFile(sigFile, sig, 0o600)
					args := append([]string{"dgst"}, c.args...)
					args = append(args, "-verify", pubPEM, "-signature", sigFile, data)
					if out := tool(t, "openssl", "openssl", args...); !bytes.Contains(out, []byte("Verified OK")) {
						t.Fatalf("openssl dgst -verify: %s", out)
					}
				})
			}
			t.Run("openssl encrypts", func(t *testing.T) {
				label := uniqueLabel(t, "openssl-dec")
				if _, err := ks.GenerateKey(t.Context(), label, hsm.RSA2048); err != nil {
					t.Fatal(err)
				}
				dec, err := ks.Decrypter(t.Context(), label)
				if err != nil {
					t.Fatal(err)
				}
				pubPEM := writePublicKey(t, dir, dec.Public())
				secret := make([]byte, 32)
				rand.Read(secret)
				in := filepath.Join(dir, "secret")
				os.WriteFile(in, secret, 0o600)
				oaepLabel := []byte("pec exchange")
				for _, c := range []struct {
					name string
					args []string
					opts crypto.DecrypterOpts
				}{
					{"OAEP-SHA256-label", []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
						"-pkeyopt", "rsa_oaep_label:" + hex.EncodeToString(oaepLabel)}, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: oaepLabel}},
					{"OAEP-SHA1", []string{"-pkeyopt", "rsa_padding_mode:oaep"}, &rsa.OAEPOptions{Hash: crypto.SHA1}},
					{"PKCS1v15", []string{"-pkeyopt", "rsa_padding_mode:pkcs1"}, nil},
				} {
					t.Run(c.name, func(t *testing.T) {
						ct := filepath.Join(dir, "ct-"+c.name)
						args := append([]string{"pkeyutl", "-encrypt", "-pubin", "-inkey", pubPEM, "-in", in, "-out", ct}, c.args...)
						tool(t, "openssl", "openssl", args...)
						ciphertext, _ := os.ReadFile(ct)
						pt, err := dec.Decrypt(rand.Reader, ciphertext, c.opts)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(pt, secret) {
							t.Fatal("decrypted another secret")
						}
					})
				}
			})
		})
	}
}

func writePublicKey(t *testing.T, dir string, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "pub-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "PUBLIC KEY", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
