package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
	"pec/signing"
)

// TestDocumentSignersCarryRevocationEvidence: the signature verifier's path
// validation goes through certvalidation, and what it hands back carries
// the CRL its decision rested on — good, then revoked — so that signature
// reports include their revocation evidence.
func TestDocumentSignersCarryRevocationEvidence(t *testing.T) {
	root := certtest.Root(t, certtest.CATemplate("evidence root"), nil)
	var crl atomic.Value // []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pkix-crl")
		_, _ = w.Write(crl.Load().([]byte))
	}))
	t.Cleanup(srv.Close)
	tmpl := certtest.LeafTemplate("document signer")
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	tmpl.CRLDistributionPoints = []string{srv.URL + "/root.crl"}
	leaf := root.Issue(t, tmpl, nil)

	issueCRL := func(number int64, revoked ...x509.RevocationListEntry) {
		now := time.Now()
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(number), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: revoked,
		}, root.Cert, root.Key)
		if err != nil {
			t.Fatal(err)
		}
		crl.Store(der)
	}

	for _, tc := range []struct {
		name       string
		revoked    []x509.RevocationListEntry
		wantStatus signing.ChainStatus
		wantCRL    string
	}{
		{"good", nil, signing.ChainValid, "good"},
		{"revoked", []x509.RevocationListEntry{{SerialNumber: leaf.Cert.SerialNumber, RevocationTime: time.Now().Add(-10 * time.Minute)}}, signing.ChainRevoked, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issueCRL(int64(len(tc.revoked)+1), tc.revoked...)
			// A fresh validator each time: no cached CRL from the case before.
			v, err := certvalidation.New(certvalidation.Config{}, certvalidation.Material{
				Roots: map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeDocumentSigning: {root.Cert}},
			}, certvalidation.ValidatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := documentSigners(v).ValidateChain(context.Background(), leaf.Cert, nil, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.wantStatus {
				t.Fatalf("status %v, want %v (%s)", res.Status, tc.wantStatus, res.Detail)
			}
			if res.Validation == nil || len(res.Validation.RevocationData) == 0 {
				t.Fatalf("no revocation evidence in the result: %+v", res.Validation)
			}
			ev := res.Validation.RevocationData[0]
			if ev.Type != "crl" || ev.Status != tc.wantCRL || ev.URL != srv.URL+"/root.crl" || len(ev.DER) == 0 || ev.SHA256 == "" {
				t.Errorf("revocation evidence %+v", ev)
			}
		})
	}
}
