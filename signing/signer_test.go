package signing_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"pec/hsm"
	"pec/signing"
)

// keyCases are the signature algorithms of the issue: RSA PKCS#1 v1.5,
// RSA-PSS and ECDSA, with SoftHSM2 keys.
var keyCases = []struct {
	name string
	kt   hsm.KeyType
	pss  bool
}{
	{"RSA-2048", hsm.RSA2048, false},
	{"RSA-2048-PSS", hsm.RSA2048, true},
	{"P-256", hsm.ECP256, false},
	{"P-384", hsm.ECP384, false},
}

var hashCases = []struct {
	name string
	h    crypto.Hash
}{{"sha256", crypto.SHA256}, {"sha384", crypto.SHA384}, {"sha512", crypto.SHA512}}

// TestCAdESRoundTrip signs with every key type and hash, attached and
// detached, B-B and B-T, and verifies with our verifier.
func TestCAdESRoundTrip(t *testing.T) {
	p := newPKI(t)
	v := p.verifier()
	doc := []byte("Extrait du casier judiciaire — bulletin n°3\n")
	for _, kc := range keyCases {
		for _, hc := range hashCases {
			for _, bt := range []bool{false, true} {
				opts := signing.SignerOptions{Hash: hc.h, PSS: kc.pss}
				level := "B-B"
				if bt {
					opts.Timestamper, level = p.timestamper(), "B-T"
				}
				s, cert := p.signer(t, hsmKey(t, kc.kt), time.Time{}, opts)
				for _, detached := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/%s/detached=%v", kc.name, hc.name, level, detached)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						sig, err := s.Sign(context.Background(), doc, detached)
						if err != nil {
							t.Fatal(err)
						}
						if bt != (sig.Timestamp != nil) {
							t.Fatalf("timestamp %v, want %v", sig.Timestamp != nil, bt)
						}
						var vo signing.VerifyOptions
						if detached {
							vo.Data = doc
						}
						r, err := v.Verify(context.Background(), sig.DER, vo)
						if err != nil {
							t.Fatal(err)
						}
						wantPassed(t, r)
						sr := r.Signatures[0]
						if sr.Format != "CAdES-"+level {
							t.Errorf("format %q, want CAdES-%s", sr.Format, level)
						}
						if sr.Signer == nil || sr.Signer.Subject != cert.Subject.String() {
							t.Errorf("signer %+v", sr.Signer)
						}
						if !sr.SigningTime.Equal(sig.SigningTime) {
							t.Errorf("signing time %v, want %v", sr.SigningTime, sig.SigningTime)
						}
						if bt && (sr.Timestamp == nil || !sr.Timestamp.Valid || !sr.Timestamp.Time.Equal(sig.Timestamp.GenTime)) {
							t.Errorf("timestamp %+v, want valid at %v", sr.Timestamp, sig.Timestamp.GenTime)
						}
						if sr.Detached != detached {
							t.Errorf("detached %v", sr.Detached)
						}
						// Hash-only verification of a detached signature.
						if detached {
							r, err := v.Verify(context.Background(), sig.DER, signing.VerifyOptions{Digest: digest(hc.h, doc), Hash: hc.h})
							if err != nil {
								t.Fatal(err)
							}
							wantPassed(t, r)
						}
						// digitorus/pkcs7, a second CMS implementation, reads it
						// and, for PKCS#1 v1.5 and ECDSA (it knows no PSS), checks
						// the signature.
						if err := pkcs7Verify(sig.DER, doc, detached, !kc.pss); err != nil {
							t.Error(err)
						}
					})
				}
			}
		}
	}
}

// TestSignDigest: hash-only signing gives the same signature a verifier
// accepts for the document.
func TestSignDigest(t *testing.T) {
	p := newPKI(t)
	s, _ := p.signer(t, hsmKey(t, hsm.ECP256), time.Time{}, signing.SignerOptions{Hash: crypto.SHA384})
	doc := []byte("a large file, hashed by the client")
	sig, err := s.SignDigest(context.Background(), digest(crypto.SHA384, doc))
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.verifier().Verify(context.Background(), sig.DER, signing.VerifyOptions{Data: doc})
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, r)
	if _, err := s.SignDigest(context.Background(), digest(crypto.SHA256, doc)); err == nil {
		t.Error("a SHA-256 digest was signed by a SHA-384 signer")
	} else if _, ok := err.(*signing.RequestError); !ok {
		t.Errorf("error %T %v, want *RequestError", err, err)
	}
	// Detached without data: the verifier cannot answer.
	if _, err := p.verifier().Verify(context.Background(), sig.DER, signing.VerifyOptions{}); err != signing.ErrDataRequired {
		t.Errorf("Verify without data: %v", err)
	}
}

// TestCAdESOfAPDF: a CAdES signature holding a PDF is verified as CMS,
// not taken for the PDF it holds.
func TestCAdESOfAPDF(t *testing.T) {
	p := newPKI(t)
	s, _ := p.signer(t, hsmKey(t, hsm.ECP256), time.Time{}, signing.SignerOptions{})
	sig, err := s.Sign(context.Background(), samplePDF(1), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.verifier().Verify(context.Background(), sig.DER, signing.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, r)
	if r.Document != "CMS" {
		t.Errorf("document %q", r.Document)
	}
}

func TestNewSignerRefuses(t *testing.T) {
	p := newPKI(t)
	ec := hsmKey(t, hsm.ECP256)
	cert, err := p.ca.IssueDocumentSigner(ec.Public(), "x", "y", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other := softKey(t)
	expired, err := p.ca.IssueDocumentSigner(ec.Public(), "x", "y", time.Now().Add(-3*365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		key   crypto.Signer
		chain []*x509.Certificate
		opts  signing.SignerOptions
		want  string
	}{
		{"no certificate", ec, nil, signing.SignerOptions{}, "certificate are required"},
		{"another key's certificate", other, []*x509.Certificate{cert}, signing.SignerOptions{}, "not that of the key"},
		{"expired", ec, []*x509.Certificate{expired}, signing.SignerOptions{}, "not now"},
		{"PSS with ECDSA", ec, []*x509.Certificate{cert}, signing.SignerOptions{PSS: true}, "RSA-PSS needs an RSA key"},
		{"SHA-1", ec, []*x509.Certificate{cert}, signing.SignerOptions{Hash: crypto.SHA1}, "digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := signing.NewSigner(tc.key, tc.chain, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// pkcs7Mu serializes digitorus/pkcs7: its BER converter writes a package
// variable (ber.go, asn1Structured.EncodeTo), so Parse is not safe for
// concurrent use.
var pkcs7Mu sync.Mutex

// pkcs7Verify has digitorus/pkcs7 parse a signature and, when check is
// set, verify it.
func pkcs7Verify(der, content []byte, detached, check bool) error {
	pkcs7Mu.Lock()
	defer pkcs7Mu.Unlock()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return fmt.Errorf("pkcs7.Parse: %w", err)
	}
	if detached {
		p7.Content = content
	}
	if check {
		if err := p7.Verify(); err != nil {
			return fmt.Errorf("pkcs7 Verify: %w", err)
		}
	}
	return nil
}

func digest(h crypto.Hash, data []byte) []byte {
	d := h.New()
	d.Write(data)
	return d.Sum(nil)
}

func wantPassed(t testing.TB, r *signing.Report) {
	t.Helper()
	if r.Indication != signing.TotalPassed {
		t.Fatalf("%s/%s: %s\n%s", r.Indication, r.SubIndication, r.Detail, checksText(r))
	}
}

func wantResult(t testing.TB, r *signing.Report, ind signing.Indication, sub signing.SubIndication) {
	t.Helper()
	if r.Indication != ind || r.SubIndication != sub {
		t.Fatalf("%s/%s (%s), want %s/%s\n%s", r.Indication, r.SubIndication, r.Detail, ind, sub, checksText(r))
	}
}

func checksText(r *signing.Report) string {
	var b strings.Builder
	for i, s := range r.Signatures {
		fmt.Fprintf(&b, "signature %d %s: %s/%s %s\n", i, s.Field, s.Indication, s.SubIndication, s.Detail)
		for _, c := range s.Checks {
			fmt.Fprintf(&b, "  %s: %s %s\n", c.Name, c.Status, c.Detail)
		}
	}
	return b.String()
}
