package devpki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"pec/internal/devpki"
)

func newCA(t *testing.T) *devpki.CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devpki.NewRootCA(key, "test root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestRevocationURLs(t *testing.T) {
	ca := newCA(t)
	pub := ca.Signer.Public()
	now := time.Now()
	plain, err := ca.IssueClient(pub, "before", "Test", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.CRLDistributionPoints) != 0 || len(plain.OCSPServer) != 0 {
		t.Errorf("a CA without revocation URLs wrote %v %v", plain.CRLDistributionPoints, plain.OCSPServer)
	}
	ca.Revocation = devpki.RevocationURLs{CRL: "http://127.0.0.1:1/crl/root.crl", OCSP: "http://127.0.0.1:1/ocsp"}
	for _, tc := range []struct {
		name  string
		issue func() (*x509.Certificate, error)
		want  bool
	}{
		{"client", func() (*x509.Certificate, error) { return ca.IssueClient(pub, "c", "Test", now) }, true},
		{"client for 3 days", func() (*x509.Certificate, error) { return ca.IssueClientFor(pub, "c", "Test", now, 72*time.Hour) }, true},
		{"server", func() (*x509.Certificate, error) { return ca.IssueServer(pub, []string{"localhost"}, nil, now) }, true},
		{"intermediate CA", func() (*x509.Certificate, error) {
			return ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "sub"}, NotBefore: now, NotAfter: now.Add(time.Hour),
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, pub)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.issue()
			if err != nil {
				t.Fatal(err)
			}
			has := slices.Equal(c.CRLDistributionPoints, []string{ca.Revocation.CRL}) && slices.Equal(c.OCSPServer, []string{ca.Revocation.OCSP})
			if has != tc.want || (!tc.want && (len(c.CRLDistributionPoints) > 0 || len(c.OCSPServer) > 0)) {
				t.Errorf("CRL DP %v, OCSP %v; want them: %v", c.CRLDistributionPoints, c.OCSPServer, tc.want)
			}
		})
	}
	c, err := ca.IssueClientFor(pub, "c", "Test", now, 72*time.Hour)
	if err != nil || !c.NotAfter.Equal(now.Add(72*time.Hour).Truncate(time.Second)) {
		t.Errorf("notAfter %v, %v", c.NotAfter, err)
	}
	if _, err := ca.IssueClientFor(pub, "c", "Test", now, 0); err == nil {
		t.Error("a validity of 0 was accepted")
	}
}

func TestSignCRL(t *testing.T) {
	ca := newCA(t)
	now := time.Now().Truncate(time.Second)
	entries := []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(7), RevocationTime: now.Add(-time.Hour), ReasonCode: ocsp.KeyCompromise},
		{SerialNumber: big.NewInt(9), RevocationTime: now.Add(-time.Minute)},
	}
	der, err := ca.SignCRL(entries, big.NewInt(42), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if rl.Number.Int64() != 42 || len(rl.RevokedCertificateEntries) != 2 || rl.RevokedCertificateEntries[0].ReasonCode != ocsp.KeyCompromise || len(rl.AuthorityKeyId) == 0 {
		t.Errorf("CRL %+v", rl)
	}
	// RFC 5280 section 5.3.1: unspecified is no reason code extension at all.
	for _, ext := range rl.RevokedCertificateEntries[1].Extensions {
		if ext.Id.Equal([]int{2, 5, 29, 21}) {
			t.Error("an unspecified reason is written")
		}
	}
	if _, err := ca.SignCRL(nil, big.NewInt(1), now, now); err == nil {
		t.Error("nextUpdate = thisUpdate accepted")
	}
}

func TestSignOCSP(t *testing.T) {
	ca := newCA(t)
	now := time.Now().Truncate(time.Second)
	leaf, err := ca.IssueClient(ca.Signer.Public(), "c", "Test", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		st   devpki.OCSPStatus
	}{
		{"good", devpki.OCSPStatus{Status: ocsp.Good, IssuerHash: crypto.SHA256}},
		{"revoked", devpki.OCSPStatus{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour), Reason: ocsp.Superseded}},
		{"unknown", devpki.OCSPStatus{Status: ocsp.Unknown, IssuerHash: crypto.SHA1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			st.Serial, st.ThisUpdate, st.NextUpdate = leaf.SerialNumber, now, now.Add(time.Hour)
			der, err := ca.SignOCSP(st)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ocsp.ParseResponseForCert(der, leaf, ca.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != st.Status || !resp.ThisUpdate.Equal(now) || !resp.NextUpdate.Equal(now.Add(time.Hour)) {
				t.Errorf("%+v", resp)
			}
			if st.Status == ocsp.Revoked && (resp.RevocationReason != ocsp.Superseded || !resp.RevokedAt.Equal(st.RevokedAt)) {
				t.Errorf("revoked: reason %d at %v", resp.RevocationReason, resp.RevokedAt)
			}
		})
	}
	if _, err := ca.SignOCSP(devpki.OCSPStatus{}); err == nil {
		t.Error("no serial accepted")
	}
}

func TestParseReason(t *testing.T) {
	for _, name := range devpki.ReasonNames() {
		code, err := devpki.ParseReason(name)
		if err != nil || devpki.ReasonName(code) != name {
			t.Errorf("%s: %d %v", name, code, err)
		}
	}
	for _, bad := range []string{"", "KeyCompromise", "certificateHold", "removeFromCRL", "cACompromise"} {
		if _, err := devpki.ParseReason(bad); !errors.Is(err, devpki.ErrUnknownReason) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
