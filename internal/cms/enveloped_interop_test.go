package cms_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"pec/internal/cms"
	"pec/internal/interop"
)

// OpenSSL 3.0 and the envelopes, both ways. What it can do: EnvelopedData
// and AuthEnvelopedData (AES-GCM) with RSA key transport (PKCS #1 v1.5 by
// default, RSAES-OAEP on request) and ECDH P-256 key agreement; DER and
// BER (-stream). What it cannot: X25519 key agreement (neither way: "no
// matching recipient", "operation not supported for this keytype"), and
// ChaCha20-Poly1305 ("unknown cipher"); those are tested against the RFC
// 9216 samples and our own round trips.

// TestOpenSSLDecryptsOurs: `openssl cms -decrypt` opens what we write.
func TestOpenSSLDecryptsOurs(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	rsaP, p256, p384 := newParty(t, "rsa2048", 0), newParty(t, "p256", 0), newParty(t, "p384", 0)
	big := randomBytes(3<<20 + 5) // many chunks, a partial last one
	for _, tc := range []struct {
		name string
		r    cms.Recipient
		p    *party
		ce   cms.ContentEncryption
		pt   []byte
	}{
		{"rsa-oaep/aes256-gcm", rsaP.recipient(), rsaP, cms.AES256GCM, []byte("hello, openssl")},
		{"rsa-oaep/aes128-gcm", rsaP.recipient(), rsaP, cms.AES128GCM, []byte("hello, openssl")},
		{"rsa-oaep/aes256-cbc", rsaP.recipient(), rsaP, cms.AES256CBC, []byte("hello, openssl")},
		{"rsa-pkcs1v15/aes256-cbc", cms.Recipient{Cert: rsaP.cert, PKCS1v15: true}, rsaP, cms.AES256CBC, []byte("legacy")},
		{"rsa-ski/aes256-gcm", cms.Recipient{Cert: rsaP.cert, SubjectKeyID: true}, rsaP, cms.AES256GCM, []byte("by key id")},
		{"p256/aes256-gcm", p256.recipient(), p256, cms.AES256GCM, []byte("hello, openssl")},
		{"p256/aes128-cbc", p256.recipient(), p256, cms.AES128CBC, []byte("hello, openssl")},
		{"p256-ski/aes256-gcm", cms.Recipient{Cert: p256.cert, SubjectKeyID: true}, p256, cms.AES256GCM, []byte("by key id")},
		{"p384/aes256-gcm", p384.recipient(), p384, cms.AES256GCM, []byte("hello, openssl")},
		{"rsa-oaep/aes256-gcm/3MiB", rsaP.recipient(), rsaP, cms.AES256GCM, big},
		{"p256/aes256-cbc/3MiB", p256.recipient(), p256, cms.AES256CBC, big},
		{"empty/aes256-gcm", p256.recipient(), p256, cms.AES256GCM, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := cms.Encrypt(tc.pt, []cms.Recipient{tc.r, newParty(t, "p256", 0).recipient()}, &cms.EnvelopeOptions{Content: tc.ce})
			if err != nil {
				t.Fatal(err)
			}
			in := filepath.Join(t.TempDir(), "env.der")
			if err := os.WriteFile(in, env, 0o600); err != nil {
				t.Fatal(err)
			}
			got := interop.OpenSSL(t, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-recip", tc.p.certFile, "-inkey", tc.p.keyFile)
			if !bytes.Equal(got, tc.pt) {
				t.Fatalf("openssl decrypted %d bytes, want %d", len(got), len(tc.pt))
			}
		})
	}
}

// TestWeDecryptOpenSSL: we open what `openssl cms -encrypt` writes, DER
// and BER (-stream: indefinite lengths, the ciphertext in pieces), and
// refuse, by name, what the policy refuses.
func TestWeDecryptOpenSSL(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	rsaP, p256 := newParty(t, "rsa2048", 0), newParty(t, "p256", 0)
	dir := t.TempDir()
	small := []byte("hello from openssl\n")
	big := randomBytes(2<<20 + 3)
	files := map[string][]byte{"small": small, "big": big}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oaep := []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}
	kdf := []string{"-keyopt", "ecdh_kdf_md:sha256"}
	for _, tc := range []struct {
		name   string
		p      *party
		args   []string
		input  string
		stream bool
		alg    string
		want   error // without AllowLegacy; nil: opens
	}{
		{"rsa-oaep-sha256/aes256-cbc", rsaP, append([]string{"-aes256"}, oaep...), "small", false, "AES-256-CBC", nil},
		{"rsa-oaep-sha256/aes256-gcm", rsaP, append([]string{"-aes-256-gcm"}, oaep...), "small", false, "AES-256-GCM", nil},
		{"rsa-oaep-sha256/aes128-gcm/stream", rsaP, append([]string{"-aes-128-gcm"}, oaep...), "big", true, "AES-128-GCM", nil},
		{"rsa-oaep-sha256/aes256-cbc/stream", rsaP, append([]string{"-aes256"}, oaep...), "big", true, "AES-256-CBC", nil},
		{"rsa-pkcs1v15/aes256-cbc", rsaP, []string{"-aes256"}, "small", false, "AES-256-CBC", nil},
		{"rsa-pkcs1v15/aes192-cbc/stream", rsaP, []string{"-aes192"}, "big", true, "AES-192-CBC", nil},
		{"rsa-ski/aes256-gcm", rsaP, append([]string{"-aes-256-gcm", "-keyid"}, oaep...), "small", false, "AES-256-GCM", nil},
		{"p256-sha256kdf/aes256-gcm", p256, append([]string{"-aes-256-gcm"}, kdf...), "small", false, "AES-256-GCM", nil},
		{"p256-sha256kdf/aes256-cbc/stream", p256, append([]string{"-aes256"}, kdf...), "big", true, "AES-256-CBC", nil},
		{"p256-sha384kdf-aes256wrap/aes256-gcm", p256, []string{"-aes-256-gcm", "-keyopt", "ecdh_kdf_md:sha384", "-keyopt", "ecdh_cofactor_mode:1"}, "small", false, "AES-256-GCM", nil},
		{"p256-ski/aes256-gcm", p256, append([]string{"-aes-256-gcm", "-keyid"}, kdf...), "small", false, "AES-256-GCM", nil},
		// Refused by the policy; the legacy ones open with AllowLegacy.
		{"rsa-oaep-sha1 (legacy)", rsaP, []string{"-aes256", "-keyopt", "rsa_padding_mode:oaep"}, "small", false, "AES-256-CBC", cms.ErrUnsupported},
		{"3des (legacy)", rsaP, append([]string{"-des3"}, oaep...), "small", false, "3DES-CBC", cms.ErrUnsupported},
		{"p256-sha1kdf (openssl's default)", p256, []string{"-aes-256-gcm"}, "small", false, "", cms.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "env")
			args := []string{"cms", "-encrypt", "-binary", "-in", filepath.Join(dir, tc.input), "-outform", "DER", "-out", out}
			if tc.stream {
				args = append(args, "-stream")
			}
			args = append(append(append(args, tc.args[:1]...), "-recip", tc.p.certFile), tc.args[1:]...)
			interop.OpenSSL(t, args...)
			env, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if tc.stream && isDER(env) {
				t.Fatal("openssl -stream wrote DER: the BER path goes untested")
			}
			got, info, err := cms.Decrypt(env, tc.p.rkey(), nil)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("%v, want %v", err, tc.want)
				}
				if tc.alg == "" {
					return
				}
				if got, info, err = cms.Decrypt(env, tc.p.rkey(), &cms.DecryptOptions{AllowLegacy: true}); err != nil {
					t.Fatalf("with AllowLegacy: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, files[tc.input]) || info.Algorithm != tc.alg {
				t.Fatalf("decrypted %d bytes (want %d), %+v", len(got), len(files[tc.input]), info)
			}
			// Streamed from a file too.
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var w bytes.Buffer
			opts := &cms.DecryptOptions{AllowLegacy: tc.want != nil}
			if _, err := cms.DecryptTo(&w, f, int64(len(env)), tc.p.rkey(), opts); err != nil || !bytes.Equal(w.Bytes(), files[tc.input]) {
				t.Fatalf("DecryptTo from the file: %d bytes, %v", w.Len(), err)
			}
		})
	}
}
