package signing_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/hsm"
	"pec/signing"
)

// newSigningKey is a new P-256 HSM key and its document-signing
// certificate from s's CA, with its chain.
func (s *service) newSigningKey(t testing.TB, cn string) (crypto.Signer, []*x509.Certificate) {
	t.Helper()
	key, err := keys.GenerateKey(context.Background(), fmt.Sprintf("rot-%d", time.Now().UnixNano()), hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.pki.ca.IssueDocumentSigner(key.Public(), cn, "PEC", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return key, []*x509.Certificate{cert, s.pki.ca.Cert}
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// TestServiceRotateKey: after RotateKey, a profile's signatures (CAdES,
// PAdES, batches) are made by the new HSM key, carry the new certificate
// and are recorded under it; the signatures of before still verify; a
// key its certificate does not certify, or a certificate that may not
// sign, is refused and changes nothing.
func TestServiceRotateKey(t *testing.T) {
	s := newService(t, nil)
	ctx := context.Background()
	v := s.pki.verifier()
	doc := []byte("une décision")
	before, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "default", Document: doc})
	if err != nil {
		t.Fatal(err)
	}
	oldCert := s.Profile("default").Signer().Certificate()

	key, chain := s.newSigningKey(t, "PEC signature rotated")
	cert := chain[0]
	old, err := s.RotateKey("default", key, chain)
	if err != nil {
		t.Fatal(err)
	}
	if !old.Equal(oldCert) || !s.Profile("default").Signer().Certificate().Equal(cert) {
		t.Errorf("RotateKey returned %q; the profile's certificate is %q", old.Subject, s.Profile("default").Signer().Certificate().Subject)
	}
	after, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "default", Document: doc})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(doc)
	batch, err := s.SignDigests(ctx, s.partnerA, "default", [][]byte{sum[:], sum[:]})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		der  []byte
		data []byte
		cert *x509.Certificate
	}{
		"before":  {before.Signature.DER, nil, oldCert},
		"after":   {after.Signature.DER, nil, cert},
		"batch 0": {batch.Signatures[0].DER, doc, cert},
		"batch 1": {batch.Signatures[1].DER, doc, cert},
	} {
		r, err := v.Verify(ctx, tc.der, signing.VerifyOptions{Data: tc.data})
		if err != nil {
			t.Fatal(err)
		}
		wantPassed(t, r)
		if got := r.Signatures[0].Signer.FingerprintSHA256; got != fingerprint(tc.cert) {
			t.Errorf("%s: signed by %s, want %q", name, r.Signatures[0].Signer.Subject, tc.cert.Subject)
		}
	}
	recs := s.evidence.Records()
	for i, want := range map[int]*x509.Certificate{0: oldCert, 1: cert, 2: cert} {
		if got := recs[i].Actors[1]; got != evidence.ActorFromCertificate("signer", want) {
			t.Errorf("record %d names signer %q, want %q", i, got.Subject, want.Subject)
		}
	}

	// Refusals: nothing changes.
	other, err := s.pki.ca.IssueDocumentSigner(softKey(t).Public(), "someone else", "PEC", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := keys.GenerateKey(ctx, fmt.Sprintf("rot-rsa-%d", time.Now().UnixNano()), hsm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.pki.ca.IssueDocumentSigner(rsaKey.Public(), "expired", "PEC", time.Now().Add(-10*365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		profile string
		key     crypto.Signer
		chain   []*x509.Certificate
		want    string
	}{
		{"another key's certificate", "default", key, []*x509.Certificate{other}, "not that of the key"},
		{"expired certificate", "pdf", rsaKey, []*x509.Certificate{expired}, "not now"},
		{"unknown profile", "nope", key, []*x509.Certificate{cert}, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Profile("default").Signer().Certificate()
			_, err := s.RotateKey(tc.profile, tc.key, tc.chain)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
			if !s.Profile("default").Signer().Certificate().Equal(before) {
				t.Error("a refused rotation changed the key")
			}
		})
	}
	if _, ok := rsaKey.Public().(*rsa.PublicKey); !ok {
		t.Fatal("not an RSA key")
	}
	if _, err := s.RotateKey("nope", key, []*x509.Certificate{cert}); !errors.Is(err, signing.ErrUnknownProfile) {
		t.Errorf("unknown profile: %v", err)
	}
}

// TestServiceRotateUnderLoad: signatures asked for while the profile's
// key is rotated back and forth all succeed, each verifying and recorded
// under the certificate it carries.
func TestServiceRotateUnderLoad(t *testing.T) {
	s := newService(t, func(c *signing.Config) { c.Profiles[0].Timestamp = false })
	ctx := context.Background()
	key1, chain1 := s.newSigningKey(t, "PEC signature 1")
	key2, chain2 := s.newSigningKey(t, "PEC signature 2")
	first, second := chain1[0], chain2[0]
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]string{} // evidence id → certificate fingerprint of the signature
	var failed atomic.Int64
	v := s.pki.verifier()
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				res, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "default", Document: fmt.Appendf(nil, "doc %d %d", w, i)})
				if err != nil {
					failed.Add(1)
					continue
				}
				r, err := v.Verify(ctx, res.Signature.DER, signing.VerifyOptions{})
				if err != nil || r.Signatures[0].Indication != signing.TotalPassed {
					failed.Add(1)
					continue
				}
				mu.Lock()
				results[res.ID] = r.Signatures[0].Signer.FingerprintSHA256
				mu.Unlock()
			}
		})
	}
	for i := range 10 {
		var err error
		if i%2 == 0 {
			_, err = s.RotateKey("default", key1, chain1)
		} else {
			_, err = s.RotateKey("default", key2, chain2)
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d signatures failed across the rotations", failed.Load())
	}
	byKey := map[string]int{}
	for _, r := range s.evidence.Records() {
		fp, ok := results[r.ID]
		if !ok {
			continue
		}
		byKey[fp]++
		if hex.EncodeToString(r.Actors[1].Fingerprint[:]) != fp {
			t.Errorf("record %s names signer %x, the signature carries %s", r.ID, r.Actors[1].Fingerprint, fp)
		}
	}
	if byKey[fingerprint(first)] == 0 || byKey[fingerprint(second)] == 0 {
		t.Errorf("signatures by key: %v", byKey)
	}
}
