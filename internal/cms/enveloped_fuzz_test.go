package cms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pec/internal/cms"
)

// envelopeError tells whether err is of a kind that decryption documents.
func envelopeError(err error) bool {
	for _, kind := range []error{cms.ErrMalformed, cms.ErrUnsupported, cms.ErrNoRecipient, cms.ErrDecryption} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// fuzzKeys are fixed keys, so that the committed corpus stays theirs:
// Bob (RSA) and Dana (X25519) of RFC 9216, a P-256 key of fixed bytes
// under a synthetic certificate (its issuer and serial name it), a KEK.
func fuzzKeys(t testing.TB) (keys []cms.RecipientKey, recipients []cms.Recipient) {
	bob := rfc9216Key(t, "lamps-bob.encrypt.crt", "lamps-bob.decrypt.p8.pem")
	dana := rfc9216Key(t, "lamps-dana.encrypt.crt", "lamps-dana.decrypt.p8.pem")
	d := bytes.Repeat([]byte{0x42}, 32)
	ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	p256 := &x509.Certificate{
		PublicKey: &ec.PublicKey, PublicKeyAlgorithm: x509.ECDSA, SerialNumber: big.NewInt(7),
		RawIssuer:    []byte{0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, 'f', 'u', 'z', 'z'},
		SubjectKeyId: []byte("fuzz p256"),
	}
	kek := bytes.Repeat([]byte{0x17}, 32)
	keys = []cms.RecipientKey{bob, dana, {Cert: p256, Key: ec}, {KEKID: []byte("fuzz kek"), KEK: kek}}
	recipients = []cms.Recipient{{Cert: bob.Cert}, {Cert: dana.Cert}, {Cert: p256, SubjectKeyID: true}, {KEKID: []byte("fuzz kek"), KEK: kek}}
	return keys, recipients
}

// FuzzDecrypt: whatever the bytes, decryption with each of the fuzz keys
// ends with an error of a documented kind and no plaintext, or with the
// plaintext that the streamed decryption gives too; never a panic.
//
// The committed corpus in testdata/fuzz/FuzzDecrypt holds the encrypted
// RFC 9216 samples, OpenSSL envelopes for Bob (DER, and BER from -stream:
// indefinite lengths, the ciphertext in pieces), and ours for each fuzz
// key; more of ours are added below.
func FuzzDecrypt(f *testing.F) {
	keys, recipients := fuzzKeys(f)
	for _, r := range recipients {
		for _, ce := range []cms.ContentEncryption{cms.AES256GCM, cms.AES128CBC} {
			env, err := cms.Encrypt([]byte("fuzzed content"), []cms.Recipient{r}, &cms.EnvelopeOptions{Content: ce})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(env)
		}
	}
	if env, err := cms.Encrypt(nil, recipients, nil); err == nil {
		f.Add(env)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, k := range keys {
			pt, env, err := cms.Decrypt(in, k, nil)
			if err != nil {
				if pt != nil || env != nil || !envelopeError(err) {
					t.Fatalf("%v (plaintext %v, envelope %v): want a documented kind and nothing", err, pt != nil, env != nil)
				}
				continue
			}
			if env.Size != int64(len(pt)) || env.Algorithm == "" || len(env.ContentType) < 2 {
				t.Fatalf("incomplete envelope %+v for %d bytes", env, len(pt))
			}
			var w bytes.Buffer
			env2, err := cms.DecryptTo(&w, bytes.NewReader(in), int64(len(in)), k, nil)
			if err != nil || !bytes.Equal(w.Bytes(), pt) || env2.Size != env.Size || env2.Authenticated != env.Authenticated ||
				!env2.ContentType.Equal(env.ContentType) {
				t.Fatalf("DecryptTo differs from Decrypt: %v", err)
			}
		}
	})
}

// TestFuzzCorpusDecrypts: the committed corpus is not only noise: every
// seed of ours, of OpenSSL and of RFC 9216 (but the KEK one) opens with a
// fuzz key. The regress- seeds are what the fuzzer found: a PKCS #1 v1.5
// key that does not decrypt, over CBC, whose substitute key gave a valid
// padding once in 256 tries while it was drawn at random.
func TestFuzzCorpusDecrypts(t *testing.T) {
	keys, _ := fuzzKeys(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzDecrypt")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 10 {
		t.Fatalf("%d seeds in %s", len(entries), dir)
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			in := corpusBytes(t, b)
			opened := slices.ContainsFunc(keys, func(k cms.RecipientKey) bool {
				_, _, err := cms.Decrypt(in, k, nil)
				return err == nil
			})
			if !opened && e.Name() != "rfc9216-encryptedKekri" && !strings.HasPrefix(e.Name(), "regress-") {
				t.Fatal("no fuzz key opens this seed")
			}
		})
	}
}

// corpusBytes reads a corpus file of one []byte value.
func corpusBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	s, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
	s, ok2 := strings.CutSuffix(strings.TrimSpace(s), ")")
	v, err := strconv.Unquote(s)
	if !ok || !ok2 || err != nil {
		t.Fatalf("not a corpus file of one []byte: %v", err)
	}
	return []byte(v)
}
