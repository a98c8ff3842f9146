package cms_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"pec/internal/cms"
)

const rfc9216 = "../../../shared/testdata/cms-rfc9216"

// rfc9216Key reads the certificate and PKCS #8 key of an RFC 9216 party.
func rfc9216Key(t testing.TB, cert, key string) cms.RecipientKey {
	t.Helper()
	c, err := x509.ParseCertificate(pemFile(t, filepath.Join(rfc9216, "certs-and-keys", cert)))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(pemFile(t, filepath.Join(rfc9216, "certs-and-keys", key)))
	if err != nil {
		t.Fatal(err)
	}
	return cms.RecipientKey{Cert: c, Key: k}
}

func pemFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		t.Fatalf("%s: no PEM", name)
	}
	return p.Bytes
}

// TestRFC9216Decrypt opens every encrypted sample of RFC 9216 with the
// keys of its recipients.
func TestRFC9216Decrypt(t *testing.T) {
	bob := rfc9216Key(t, "lamps-bob.encrypt.crt", "lamps-bob.decrypt.p8.pem")
	dana := rfc9216Key(t, "lamps-dana.encrypt.crt", "lamps-dana.decrypt.p8.pem")
	const content = "This is some sample content."
	for _, tc := range []struct {
		file, who string
		key       cms.RecipientKey
		alg       string
		auth      bool
	}{
		{"encryptedForBobRSAOaep.p7m", "bob", bob, "AES-128-CBC", false},
		{"encryptedForBobAndDana.p7m", "bob", bob, "AES-128-CBC", false},
		{"encryptedForBobAndDana.p7m", "dana", dana, "AES-128-CBC", false},
		{"authEnvelopedForBobChaCha20Poly1305.p7m", "bob", bob, "ChaCha20-Poly1305", true},
		{"authEnvelopedForDanaX25519HKDF.p7m", "dana", dana, "AES-128-GCM", true},
	} {
		t.Run(tc.file+"/"+tc.who, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(rfc9216, "binary-files", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			pt, env, err := cms.Decrypt(in, tc.key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(pt) != content || env.Algorithm != tc.alg || env.Authenticated != tc.auth || !env.ContentType.Equal(cms.OIDData) || env.Size != int64(len(content)) {
				t.Fatalf("got %q, %+v", pt, env)
			}
			if !tc.auth {
				return
			}
			// Any byte flipped: the content or an error, never other
			// bytes; the last one (the tag) is an error.
			for i := range in {
				bad := bytes.Clone(in)
				bad[i] ^= 0x80
				got, _, err := cms.Decrypt(bad, tc.key, nil)
				if err == nil && string(got) != content || i == len(in)-1 && !errors.Is(err, cms.ErrDecryption) {
					t.Fatalf("byte %d flipped: %q, %v", i, got, err)
				}
			}
		})
	}
	// The KEK of encryptedKekri.p7m is not in the testdata: the sample
	// parses, its KEKRecipientInfo is found by its key identifier, and a
	// wrong KEK fails the AES key wrap's integrity check.
	t.Run("encryptedKekri.p7m", func(t *testing.T) {
		in, err := os.ReadFile(filepath.Join(rfc9216, "binary-files", "encryptedKekri.p7m"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := cms.Decrypt(in, cms.RecipientKey{KEKID: []byte("keyid"), KEK: make([]byte, 32)}, nil); !errors.Is(err, cms.ErrDecryption) {
			t.Fatalf("%v, want ErrDecryption", err)
		}
		if _, _, err := cms.Decrypt(in, cms.RecipientKey{KEKID: []byte("other"), KEK: make([]byte, 32)}, nil); !errors.Is(err, cms.ErrNoRecipient) {
			t.Fatalf("%v, want ErrNoRecipient", err)
		}
		if _, _, err := cms.Decrypt(in, cms.RecipientKey{KEKID: []byte("keyid"), KEK: make([]byte, 16)}, nil); !errors.Is(err, cms.ErrUnsupported) {
			t.Fatalf("%v, want ErrUnsupported (a 128-bit KEK for aes256-wrap)", err)
		}
	})
	t.Run("wrong recipient", func(t *testing.T) {
		in, _ := os.ReadFile(filepath.Join(rfc9216, "binary-files", "encryptedForBobRSAOaep.p7m"))
		if _, _, err := cms.Decrypt(in, dana, nil); !errors.Is(err, cms.ErrNoRecipient) {
			t.Fatalf("%v, want ErrNoRecipient", err)
		}
	})
}
