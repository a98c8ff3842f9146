package tsa_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/tsa"
)

// TestRotate: after Rotate, tokens are signed by the new key and name the
// new certificate, on the authority and on the WithEvidence one that
// shares its key (whose records name the new TSA certificate); tokens of
// before still verify with the old certificate.
func TestRotate(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	ev := &evidence.Memory{}
	served := a.WithEvidence(ev)
	req := makeRequest(t, reqOpts{certReq: true})
	digest := sha256.Sum256([]byte("a tele-dossier"))
	before, err := served.Respond(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := a.ca.IssueTSA(key.Public(), "tsa test TSA 2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.Rotate(key, []*x509.Certificate{cert, a.ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if !old.Equal(a.cert) || !a.Certificate().Equal(cert) || !served.Certificate().Equal(cert) {
		t.Errorf("Rotate returned %q, Certificate %q / %q", old.Subject, a.Certificate().Subject, served.Certificate().Subject)
	}
	for name, auth := range map[string]*tsa.Authority{"base": a.Authority, "with evidence": served} {
		resp, err := auth.Respond(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tsa.Verify(resp, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: a.roots})
		if err != nil {
			t.Fatalf("%s: a token after the rotation: %v", name, err)
		}
		if !tok.SignerCert.Equal(cert) {
			t.Errorf("%s: token signed by %q, want the new certificate", name, tok.SignerCert.Subject)
		}
		// A token without certificates: the old certificate alone does
		// not verify it, the new one does.
		bare, err := auth.Respond(context.Background(), makeRequest(t, reqOpts{}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tsa.Verify(bare, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: a.roots, Certificates: []*x509.Certificate{a.cert}}); err == nil {
			t.Errorf("%s: a new token verifies with the old certificate", name)
		}
		if _, err := tsa.Verify(bare, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: a.roots, Certificates: []*x509.Certificate{cert}}); err != nil {
			t.Errorf("%s: a new token without certificates: %v", name, err)
		}
	}
	recs := ev.Records()
	if got := recs[len(recs)-1].Actors[0].Subject; !strings.Contains(got, "tsa test TSA 2") {
		t.Errorf("the record of a new token names TSA %q", got)
	}
	if got := recs[0].Actors[0].Subject; strings.Contains(got, "TSA 2") {
		t.Errorf("the record of an old token names TSA %q", got)
	}
	tok, err := tsa.Verify(before, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: a.roots})
	if err != nil || !tok.SignerCert.Equal(a.cert) {
		t.Errorf("a token of before the rotation: %v", err)
	}
}

// TestRotateRefuses: a certificate New would refuse is refused by Rotate
// too, and nothing changes.
func TestRotateRefuses(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	good, _ := a.ca.IssueTSA(key.Public(), "TSA 2", now)
	server, _ := a.ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "server"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, key.Public())
	expired, _ := a.ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "TSA"}, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, key.Public())
	for _, tc := range []struct {
		name  string
		key   *ecdsa.PrivateKey
		chain []*x509.Certificate
		want  string
	}{
		{"another key", other, []*x509.Certificate{good}, "not the certificate of the TSA key"},
		{"no timeStamping EKU", key, []*x509.Certificate{server}, "timeStamping"},
		{"expired", key, []*x509.Certificate{expired}, "not now"},
		{"no certificate", key, nil, "required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := a.Rotate(tc.key, tc.chain); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
			if !a.Certificate().Equal(a.cert) {
				t.Errorf("a refused rotation changed the certificate")
			}
		})
	}
}

// TestRotateUnderLoad: clients asking for tokens while the key is rotated
// back and forth all get tokens, each verifying with the certificate it
// names and signed by the key of that certificate.
func TestRotateUnderLoad(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	served := a.WithEvidence(&evidence.Memory{})
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert2, _ := a.ca.IssueTSA(key2.Public(), "TSA 2", time.Now())
	req := makeRequest(t, reqOpts{certReq: true})
	digest := sha256.Sum256([]byte("a tele-dossier"))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var tokens, failed atomic.Int64
	seen := [2]atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := served.Respond(context.Background(), req)
				if err != nil {
					failed.Add(1)
					continue
				}
				tok, err := tsa.Verify(resp, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: a.roots})
				if err != nil {
					failed.Add(1)
					continue
				}
				if tok.SignerCert.Equal(cert2) {
					seen[1].Add(1)
				} else {
					seen[0].Add(1)
				}
				tokens.Add(1)
			}
		})
	}
	for i := range 20 {
		var err error
		if i%2 == 0 {
			_, err = a.Rotate(key2, []*x509.Certificate{cert2})
		} else {
			_, err = a.Rotate(a.key, []*x509.Certificate{a.cert})
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("%d tokens, %d failed, %d/%d by the first/second key", tokens.Load(), failed.Load(), seen[0].Load(), seen[1].Load())
	}
}
