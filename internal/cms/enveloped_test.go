package cms_test

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/cms"
)

// A party is a recipient: its certificate and key, and both as PEM files
// for openssl.
type party struct {
	name     string
	cert     *x509.Certificate
	key      crypto.PrivateKey
	certFile string
	keyFile  string
}

func (p *party) recipient() cms.Recipient { return cms.Recipient{Cert: p.cert} }
func (p *party) rkey() cms.RecipientKey   { return cms.RecipientKey{Cert: p.cert, Key: p.key} }

var (
	caOnce sync.Once
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	serial int64 = 100
	serMu  sync.Mutex
)

// newParty issues a certificate for a new key of kind "rsa2048",
// "rsa1024", "p256", "p384" or "x25519" under a throw-away CA, with key
// usage ku (0: the one that suits the key).
func newParty(t testing.TB, kind string, ku x509.KeyUsage) *party {
	t.Helper()
	caOnce.Do(func() {
		caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Envelope Test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		d, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		caCert, _ = x509.ParseCertificate(d)
	})
	var key crypto.PrivateKey
	var pub any
	agree := true
	switch kind {
	case "rsa2048":
		k := rsaKey // cms_test.go's
		key, pub, agree = k, &k.PublicKey, false
	case "rsa1024":
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		key, pub, agree = k, &k.PublicKey, false
	case "p256", "p384":
		c := elliptic.P256()
		if kind == "p384" {
			c = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key, pub = k, &k.PublicKey
	case "x25519":
		// crypto/x509 does not issue certificates for X25519 keys: Dana's
		// of RFC 9216 serves.
		dana := rfc9216Key(t, "lamps-dana.encrypt.crt", "lamps-dana.decrypt.p8.pem")
		return &party{name: kind, cert: dana.Cert, key: dana.Key,
			certFile: filepath.Join(rfc9216, "certs-and-keys", "lamps-dana.encrypt.crt"),
			keyFile:  filepath.Join(rfc9216, "certs-and-keys", "lamps-dana.decrypt.p8.pem")}
	default:
		t.Fatalf("no key kind %q", kind)
	}
	if ku == 0 {
		ku = x509.KeyUsageKeyEncipherment
		if agree {
			ku = x509.KeyUsageKeyAgreement
		}
	}
	serMu.Lock()
	serial++
	sn := serial
	serMu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: kind + " recipient"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: ku, SubjectKeyId: []byte(fmt.Sprintf("ski-%d", sn)),
	}
	d, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(d)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &party{name: kind, cert: cert, key: key, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// isDER tells whether b is one DER element: BERToDER, which writes DER,
// leaves it unchanged.
func isDER(b []byte) bool {
	d, err := cms.BERToDER(b)
	return err == nil && bytes.Equal(d, b)
}

var contents = []cms.ContentEncryption{cms.AES256GCM, cms.AES128GCM, cms.AES256CBC, cms.AES128CBC}

// TestEnvelopeRoundTrip: every kind of recipient, every content
// encryption, sizes around the block and chunk boundaries; the envelope is
// DER of the announced length and opens with the key, in memory and
// streamed.
func TestEnvelopeRoundTrip(t *testing.T) {
	kek := randomBytes(32)
	rsaP, p256, p384, x25519 := newParty(t, "rsa2048", 0), newParty(t, "p256", 0), newParty(t, "p384", 0), newParty(t, "x25519", 0)
	type rcase struct {
		name string
		r    cms.Recipient
		k    cms.RecipientKey
	}
	recipients := []rcase{
		{"rsa-oaep", rsaP.recipient(), rsaP.rkey()},
		{"rsa-pkcs1v15", cms.Recipient{Cert: rsaP.cert, PKCS1v15: true}, rsaP.rkey()},
		{"rsa-ski", cms.Recipient{Cert: rsaP.cert, SubjectKeyID: true}, rsaP.rkey()},
		{"p256", p256.recipient(), p256.rkey()},
		{"p256-ski", cms.Recipient{Cert: p256.cert, SubjectKeyID: true}, p256.rkey()},
		{"p256-ecdh-key", p256.recipient(), cms.RecipientKey{Cert: p256.cert, Key: mustECDH(t, p256.key)}},
		{"p384", p384.recipient(), p384.rkey()},
		{"x25519", x25519.recipient(), x25519.rkey()},
		{"kek", cms.Recipient{KEKID: []byte("data key 1"), KEK: kek}, cms.RecipientKey{KEKID: []byte("data key 1"), KEK: kek}},
	}
	for _, rc := range recipients {
		for _, ce := range contents {
			for _, size := range []int{0, 17, 2*64<<10 + 5} {
				t.Run(fmt.Sprintf("%s/%v/%d", rc.name, ce, size), func(t *testing.T) {
					t.Parallel()
					pt := randomBytes(size)
					out, err := cms.Encrypt(pt, []cms.Recipient{rc.r}, &cms.EnvelopeOptions{Content: ce})
					if err != nil {
						t.Fatal(err)
					}
					if !isDER(out) {
						t.Fatal("the envelope is not DER")
					}
					var streamed bytes.Buffer
					n, err := cms.EncryptTo(&streamed, bytes.NewReader(pt), int64(size), []cms.Recipient{rc.r}, &cms.EnvelopeOptions{Content: ce})
					if err != nil || n != int64(streamed.Len()) || streamed.Len() != len(out) {
						t.Fatalf("EncryptTo: %d bytes, %v; Encrypt gave %d", n, err, len(out))
					}
					for _, in := range [][]byte{out, streamed.Bytes()} {
						got, env, err := cms.Decrypt(in, rc.k, nil)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, pt) || env.Size != int64(size) || env.Algorithm != ce.String() ||
							env.Authenticated != (ce == cms.AES256GCM || ce == cms.AES128GCM) || !env.ContentType.Equal(cms.OIDData) {
							t.Fatalf("decrypted %d bytes (want %d), %+v", len(got), size, env)
						}
					}
				})
			}
		}
	}
	t.Run("all recipients at once", func(t *testing.T) {
		pt := []byte("for everyone")
		var rs []cms.Recipient
		for _, rc := range recipients {
			rs = append(rs, rc.r)
		}
		out, err := cms.Encrypt(pt, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, rc := range recipients {
			if got, _, err := cms.Decrypt(out, rc.k, nil); err != nil || !bytes.Equal(got, pt) {
				t.Errorf("%s: %q, %v", rc.name, got, err)
			}
		}
		other := newParty(t, "p256", 0)
		if _, _, err := cms.Decrypt(out, other.rkey(), nil); !errors.Is(err, cms.ErrNoRecipient) {
			t.Errorf("a stranger: %v, want ErrNoRecipient", err)
		}
	})
	t.Run("content type", func(t *testing.T) {
		out, err := cms.Encrypt([]byte("signed inside"), []cms.Recipient{p256.recipient()}, &cms.EnvelopeOptions{ContentType: cms.OIDSignedData})
		if err != nil {
			t.Fatal(err)
		}
		if _, env, err := cms.Decrypt(out, p256.rkey(), nil); err != nil || !env.ContentType.Equal(cms.OIDSignedData) {
			t.Fatalf("%+v, %v", env, err)
		}
	})
}

func mustECDH(t testing.TB, k crypto.PrivateKey) *ecdh.PrivateKey {
	t.Helper()
	e, err := k.(*ecdsa.PrivateKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEnvelopeWriterMisuse: the declared size is kept to, both ways.
func TestEnvelopeWriterMisuse(t *testing.T) {
	p := newParty(t, "p256", 0)
	rs := []cms.Recipient{p.recipient()}
	w, err := cms.NewEnvelopeWriter(io.Discard, 10, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 11)); err == nil {
		t.Error("11 bytes into a writer of 10")
	}
	w, _ = cms.NewEnvelopeWriter(io.Discard, 10, rs, nil)
	w.Write(make([]byte, 9))
	if err := w.Close(); err == nil {
		t.Error("Close after 9 bytes of 10")
	}
	if _, err := cms.EncryptTo(io.Discard, bytes.NewReader(make([]byte, 11)), 10, rs, nil); err == nil {
		t.Error("EncryptTo of 11 bytes declared 10")
	}
	if _, err := cms.EncryptTo(io.Discard, bytes.NewReader(make([]byte, 9)), 10, rs, nil); err == nil {
		t.Error("EncryptTo of 9 bytes declared 10")
	}
	if _, err := cms.Encrypt(nil, nil, nil); err == nil {
		t.Error("no recipient")
	}
}

// TestEnvelopePolicyOnWrite: weak or unsuitable recipients are refused.
func TestEnvelopePolicyOnWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *party
	}{
		{"rsa1024", newParty(t, "rsa1024", 0)},
		{"rsa without keyEncipherment", newParty(t, "rsa2048", x509.KeyUsageDigitalSignature)},
		{"p256 without keyAgreement", newParty(t, "p256", x509.KeyUsageDigitalSignature)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cms.Encrypt([]byte("x"), []cms.Recipient{tc.p.recipient()}, nil); !errors.Is(err, cms.ErrUnsupported) {
				t.Fatalf("%v, want ErrUnsupported", err)
			}
		})
	}
	t.Run("ed25519", func(t *testing.T) {
		if _, err := cms.Encrypt([]byte("x"), []cms.Recipient{{Cert: edCert}}, nil); !errors.Is(err, cms.ErrUnsupported) {
			t.Fatalf("%v, want ErrUnsupported", err)
		}
	})
}

// fields locates, in one of our envelopes for one recipient, the
// encryptedKey of its RecipientInfo, the ciphertext and the mac.
type span struct{ off, end int }

func fields(t testing.TB, env []byte) (key, ct, mac span) {
	t.Helper()
	env = env[:len(env):len(env)]
	at := func(b []byte) span { // b aliases env, and its capacity runs to env's end
		off := cap(env) - cap(b)
		return span{off, off + len(b)}
	}
	s := cryptobyte.String(env)
	var ci, explicit, body, ris, ri, eci, reks, rek, ek, c, m cryptobyte.String
	var tag cbasn1.Tag
	var skip cryptobyte.String
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.SkipASN1(cbasn1.OBJECT_IDENTIFIER) ||
		!ci.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) || !explicit.ReadASN1(&body, cbasn1.SEQUENCE) ||
		!body.SkipASN1(cbasn1.INTEGER) || !body.ReadASN1(&ris, cbasn1.SET) || !ris.ReadAnyASN1(&ri, &tag) {
		t.Fatal("not an envelope of ours")
	}
	ok := ri.SkipASN1(cbasn1.INTEGER)
	switch tag {
	case cbasn1.SEQUENCE: // KeyTransRecipientInfo
		ok = ok && ri.ReadAnyASN1Element(&skip, &tag) && ri.SkipASN1(cbasn1.SEQUENCE) && ri.ReadASN1(&ek, cbasn1.OCTET_STRING)
	case cbasn1.Tag(1).Constructed().ContextSpecific(): // KeyAgreeRecipientInfo
		ok = ok && ri.SkipASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) && ri.SkipASN1(cbasn1.SEQUENCE) &&
			ri.ReadASN1(&reks, cbasn1.SEQUENCE) && reks.ReadASN1(&rek, cbasn1.SEQUENCE) &&
			rek.ReadAnyASN1Element(&skip, &tag) && rek.ReadASN1(&ek, cbasn1.OCTET_STRING)
	default: // KEKRecipientInfo
		ok = ok && ri.SkipASN1(cbasn1.SEQUENCE) && ri.SkipASN1(cbasn1.SEQUENCE) && ri.ReadASN1(&ek, cbasn1.OCTET_STRING)
	}
	if !ok || !body.ReadASN1(&eci, cbasn1.SEQUENCE) || !eci.SkipASN1(cbasn1.OBJECT_IDENTIFIER) || !eci.SkipASN1(cbasn1.SEQUENCE) ||
		!eci.ReadASN1(&c, cbasn1.Tag(0).ContextSpecific()) {
		t.Fatal("not an envelope of ours")
	}
	if body.PeekASN1Tag(cbasn1.OCTET_STRING) {
		body.ReadASN1(&m, cbasn1.OCTET_STRING)
		mac = at(m)
	}
	return at(ek), at(c), mac
}

// TestEnvelopeTamper: whatever byte of an AuthEnvelopedData is flipped,
// Decrypt returns the plaintext or an error, never other bytes (a flip in
// the content type, which RFC 5083 leaves unauthenticated, still gives the
// plaintext); a flip in the wrapped key, the ciphertext or the tag is an
// error always, and DecryptTo writes nothing. EnvelopedData has no
// integrity (a flipped IV byte flips a plaintext byte, by design): only a
// flipped wrapped key must fail. Every truncation of either fails.
func TestEnvelopeTamper(t *testing.T) {
	kek := randomBytes(16)
	rsaP, p256, x25519 := newParty(t, "rsa2048", 0), newParty(t, "p256", 0), newParty(t, "x25519", 0)
	pt := []byte("The dossier of an exchange: not to be altered unseen.")
	for _, tc := range []struct {
		name string
		r    cms.Recipient
		k    cms.RecipientKey
		ce   cms.ContentEncryption
	}{
		{"rsa-oaep/gcm", rsaP.recipient(), rsaP.rkey(), cms.AES256GCM},
		{"rsa-pkcs1v15/gcm", cms.Recipient{Cert: rsaP.cert, PKCS1v15: true}, rsaP.rkey(), cms.AES256GCM},
		{"p256/gcm", p256.recipient(), p256.rkey(), cms.AES256GCM},
		{"x25519/gcm", x25519.recipient(), x25519.rkey(), cms.AES128GCM},
		{"kek/gcm", cms.Recipient{KEKID: []byte("k"), KEK: kek}, cms.RecipientKey{KEKID: []byte("k"), KEK: kek}, cms.AES256GCM},
		{"p256/cbc", p256.recipient(), p256.rkey(), cms.AES256CBC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := cms.Encrypt(pt, []cms.Recipient{tc.r}, &cms.EnvelopeOptions{Content: tc.ce})
			if err != nil {
				t.Fatal(err)
			}
			key, ct, mac := fields(t, env)
			if key.end-key.off < 16 || ct.end-ct.off < len(pt) {
				t.Fatalf("fields not found: key %v ct %v mac %v", key, ct, mac)
			}
			aead := tc.ce == cms.AES256GCM || tc.ce == cms.AES128GCM
			for i := range env {
				bad := bytes.Clone(env)
				bad[i] ^= 0x01
				got, _, err := cms.Decrypt(bad, tc.k, nil)
				if aead && err == nil && !bytes.Equal(got, pt) {
					t.Fatalf("byte %d flipped: other plaintext released: %q", i, got)
				}
				inKey := i >= key.off && i < key.end
				inSealed := aead && (i >= ct.off && i < ct.end || i >= mac.off && i < mac.end)
				if (inKey || inSealed) && err == nil {
					t.Fatalf("byte %d flipped (key %v, ciphertext %v, mac %v): no error", i, key, ct, mac)
				}
				if aead && inSealed {
					var w countWriter
					if _, err := cms.DecryptTo(&w, bytes.NewReader(bad), int64(len(bad)), tc.k, nil); !errors.Is(err, cms.ErrDecryption) || w.n != 0 {
						t.Fatalf("byte %d flipped: DecryptTo wrote %d bytes, %v", i, w.n, err)
					}
				}
			}
			for n := range len(env) {
				if got, _, err := cms.Decrypt(env[:n], tc.k, nil); err == nil {
					t.Fatalf("truncated to %d bytes: %q", n, got)
				}
			}
		})
	}
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// changingReader serves env, and flips one byte from the second read at
// the start of the ciphertext on (the second pass): a file rewritten
// under the decrypter.
type changingReader struct {
	env     []byte
	ct, at  int
	ctReads int
}

func (r *changingReader) ReadAt(p []byte, off int64) (int, error) {
	if int(off) == r.ct {
		r.ctReads++
	}
	n := copy(p, r.env[off:])
	if r.ctReads >= 2 && int(off) <= r.at && r.at < int(off)+n {
		p[r.at-int(off)] ^= 1
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestEnvelopeSourceChanged: a ciphertext that changes between the two
// passes of an AuthEnvelopedData is an error.
func TestEnvelopeSourceChanged(t *testing.T) {
	p := newParty(t, "p256", 0)
	env, err := cms.Encrypt(randomBytes(3*64<<10), []cms.Recipient{p.recipient()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, ct, _ := fields(t, env)
	r := &changingReader{env: env, ct: ct.off, at: ct.end - 10}
	if _, err := cms.DecryptTo(io.Discard, r, int64(len(env)), p.rkey(), nil); !errors.Is(err, cms.ErrMalformed) {
		t.Fatalf("%v, want ErrMalformed (changed between the passes)", err)
	}
}

// TestEnvelopeCBCPadding: a CBC plaintext whose padding is wrong (RFC
// 5652 section 6.3) is ErrDecryption, and in memory nothing is released.
// The content-encryption key and IV come from a counting Rand, so that
// the test can write ciphertexts of its own into the envelope.
func TestEnvelopeCBCPadding(t *testing.T) {
	kek := randomBytes(32)
	rs := []cms.Recipient{{KEKID: []byte("k"), KEK: kek}}
	key := cms.RecipientKey{KEKID: []byte("k"), KEK: kek}
	pt := randomBytes(20) // two blocks once padded
	env, err := cms.Encrypt(pt, rs, &cms.EnvelopeOptions{Content: cms.AES256CBC, Rand: &counting{}})
	if err != nil {
		t.Fatal(err)
	}
	cek, iv := make([]byte, 32), make([]byte, 16)
	(&counting{}).Read(cek)
	(&counting{c: 32}).Read(iv)
	_, ct, _ := fields(t, env)
	block, _ := aes.NewCipher(cek)
	with := func(last []byte) []byte {
		p := append(bytes.Clone(pt[:16]), last...)
		c := make([]byte, 32)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(c, p)
		bad := bytes.Clone(env)
		copy(bad[ct.off:ct.end], c)
		return bad
	}
	good := append(bytes.Clone(pt[16:]), bytes.Repeat([]byte{12}, 12)...)
	if got, _, err := cms.Decrypt(with(good), key, nil); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("the test's own ciphertext: %v", err)
	}
	for name, last := range map[string][]byte{
		"pad 0":              append(bytes.Clone(pt[16:]), append(bytes.Repeat([]byte{12}, 11), 0)...),
		"pad 17":             append(bytes.Clone(pt[16:]), append(bytes.Repeat([]byte{12}, 11), 17)...),
		"pad bytes differ":   append(bytes.Clone(pt[16:]), append(append(bytes.Repeat([]byte{12}, 5), 11), bytes.Repeat([]byte{12}, 6)...)...),
		"first pad byte off": append(bytes.Clone(pt[16:]), append([]byte{13}, bytes.Repeat([]byte{12}, 11)...)...),
	} {
		t.Run(name, func(t *testing.T) {
			if got, _, err := cms.Decrypt(with(last), key, nil); !errors.Is(err, cms.ErrDecryption) || got != nil {
				t.Fatalf("%q, %v; want ErrDecryption", got, err)
			}
		})
	}
}

// TestEnvelopeBeyond4GiB: the lengths of an envelope larger than 4 GiB are
// written with five length octets, and Len says the whole size.
func TestEnvelopeBeyond4GiB(t *testing.T) {
	const size = 5 << 30
	var head bytes.Buffer
	w, err := cms.NewEnvelopeWriter(&head, size, []cms.Recipient{{KEKID: []byte("k"), KEK: randomBytes(16)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := head.Bytes()
	if h[0] != 0x30 || h[1] != 0x85 {
		t.Fatalf("header % x", h[:8])
	}
	var n int64
	for _, c := range h[2:7] {
		n = n<<8 | int64(c)
	}
	if n+7 != w.Len() || w.Len() != int64(head.Len())+size+18 {
		t.Fatalf("outer length %d, Len %d, header %d", n, w.Len(), head.Len())
	}
	// The [0] IMPLICIT encryptedContent closes the header: 0x80 and the size.
	if !bytes.HasSuffix(h, []byte{0x80, 0x85, 0x01, 0x40, 0x00, 0x00, 0x00}) {
		t.Fatalf("encryptedContent header % x, want 80 85 01 40 00 00 00", h[len(h)-7:])
	}
	if _, err := cms.NewEnvelopeWriter(io.Discard, 65<<30, []cms.Recipient{{KEKID: []byte("k"), KEK: randomBytes(16)}}, nil); err == nil {
		t.Fatal("a GCM envelope of 65 GiB (beyond SP 800-38D's bound)")
	}
}

// TestEnvelopeAttemptsBounded: each RecipientInfo tried costs a
// private-key operation; more than 8 that name one key and fail are
// refused without trying the rest.
func TestEnvelopeAttemptsBounded(t *testing.T) {
	p, other := newParty(t, "p256", 0), newParty(t, "p256", 0)
	wrong := cms.RecipientKey{Cert: p.cert, Key: other.key} // names p, but another key
	for _, n := range []int{8, 9} {
		rs := make([]cms.Recipient, n)
		for i := range rs {
			rs[i] = p.recipient()
		}
		env, err := cms.Encrypt([]byte("x"), rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := cms.Decrypt(env, p.rkey(), nil); err != nil {
			t.Fatalf("%d RecipientInfos, the right key: %v", n, err)
		}
		_, _, err = cms.Decrypt(env, wrong, nil)
		if n == 8 && !errors.Is(err, cms.ErrDecryption) || n == 9 && !errors.Is(err, cms.ErrMalformed) {
			t.Fatalf("%d RecipientInfos, the wrong key: %v", n, err)
		}
	}
}
