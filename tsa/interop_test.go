package tsa_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pec/internal/devpki"
	"pec/internal/interop"
	"pec/tsa"
)

// TestOpenSSLAcceptsOurTokens: OpenSSL builds the requests (every hash, with
// and without nonce and certReq), our authority answers, and `openssl ts
// -verify` accepts every reply — for an ECDSA P-256 and an RSA-2048 TSA key.
func TestOpenSSLAcceptsOurTokens(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    *testTSA
	}{
		{"P-256", newTestTSA(t, nil)},
		{"RSA-2048/sha384", newTestTSAKey(t, rsaKey, func(c *tsa.Config, _ *tsa.Options) { c.SignatureHash = "sha384" })},
	} {
		dir := t.TempDir()
		doc := filepath.Join(dir, "doc.txt")
		root := filepath.Join(dir, "root.pem")
		tsaPEM := filepath.Join(dir, "tsa.pem")
		writeFile(t, doc, []byte("A tele-dossier of the civil registry.\n"))
		writeFile(t, root, devpki.CertPEM(tc.a.ca.Cert))
		writeFile(t, tsaPEM, devpki.CertPEM(tc.a.cert))
		for _, hash := range []string{"sha256", "sha384", "sha512"} {
			for _, nonce := range []bool{true, false} {
				for _, cert := range []bool{true, false} {
					name := fmt.Sprintf("%s/%s/nonce=%v/cert=%v", tc.name, hash, nonce, cert)
					t.Run(name, func(t *testing.T) {
						query := filepath.Join(t.TempDir(), "req.tsq")
						args := []string{"ts", "-query", "-data", doc, "-" + hash, "-out", query}
						if !nonce {
							args = append(args, "-no_nonce")
						}
						if cert {
							args = append(args, "-cert")
						}
						interop.OpenSSL(t, args...)
						req, err := os.ReadFile(query)
						if err != nil {
							t.Fatal(err)
						}
						resp, err := tc.a.Respond(context.Background(), req)
						if err != nil {
							t.Fatal(err)
						}
						reply := filepath.Join(t.TempDir(), "resp.tsr")
						writeFile(t, reply, resp)
						verify := []string{"ts", "-verify", "-queryfile", query, "-in", reply, "-CAfile", root}
						if !cert {
							verify = append(verify, "-untrusted", tsaPEM)
						}
						out := string(interop.OpenSSL(t, verify...))
						if !strings.Contains(out, "Verification: OK") {
							t.Fatalf("openssl ts -verify: %s", out)
						}
						text := string(interop.OpenSSL(t, "ts", "-reply", "-in", reply, "-text"))
						for _, want := range []string{"Status: Granted.", "Policy OID: 2.999.3161.1", "Accuracy: 0x01 seconds", "TSA: DirName:"} {
							if !strings.Contains(text, want) {
								t.Errorf("openssl ts -reply -text lacks %q:\n%s", want, text)
							}
						}
						if !nonce && !strings.Contains(text, "Nonce: unspecified") {
							t.Errorf("a nonce appeared:\n%s", text)
						}
					})
				}
			}
		}
	}
}

// TestOpenSSLReadsOurRejections: a rejection is a TimeStampResp OpenSSL reads.
func TestOpenSSLReadsOurRejections(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	path := filepath.Join(t.TempDir(), "rejected.tsr")
	writeFile(t, path, tsa.Reject(tsa.FailBadAlg, "unsupported hash algorithm"))
	text := string(interop.OpenSSL(t, "ts", "-reply", "-in", path, "-text"))
	for _, want := range []string{"Status: Rejected", "unsupported hash algorithm", "unrecognized or unsupported algorithm identifier"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl ts -reply -text lacks %q:\n%s", want, text)
		}
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
