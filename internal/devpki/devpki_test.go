package devpki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"pec/internal/devpki"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	now := time.Now()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ca, err := devpki.NewRootCA(key(), "test root", now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	tsaCert, err := ca.IssueTSA(key().Public(), "test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(key().Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := ca.IssueClient(key().Public(), "partner-a", "Partner A", now)
	if err != nil {
		t.Fatal(err)
	}
	signerCert, err := ca.IssueDocumentSigner(key().Public(), "PEC signature", "PEC", now)
	if err != nil {
		t.Fatal(err)
	}
	if signerCert.KeyUsage&x509.KeyUsageContentCommitment == 0 || len(signerCert.UnknownExtKeyUsage) != 1 || !signerCert.UnknownExtKeyUsage[0].Equal(devpki.OIDDocumentSigning) {
		t.Errorf("document signer: key usage %v, EKU %v %v", signerCert.KeyUsage, signerCert.ExtKeyUsage, signerCert.UnknownExtKeyUsage)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		eku  x509.ExtKeyUsage
	}{
		{"tsa", tsaCert, x509.ExtKeyUsageTimeStamping},
		{"document signer", signerCert, x509.ExtKeyUsageEmailProtection},
		{"server", serverCert, x509.ExtKeyUsageServerAuth},
		{"client", clientCert, x509.ExtKeyUsageClientAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.eku}, CurrentTime: now}); err != nil {
				t.Fatal(err)
			}
		})
	}

	// RFC 3161 section 2.3: the TSA certificate's only EKU is timeStamping, critical.
	var found bool
	for _, ext := range tsaCert.Extensions {
		if ext.Id.Equal([]int{2, 5, 29, 37}) {
			found = true
			if !ext.Critical {
				t.Error("TSA extendedKeyUsage is not critical")
			}
		}
	}
	if !found || len(tsaCert.ExtKeyUsage) != 1 || tsaCert.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping {
		t.Errorf("TSA EKU = %v (found %v)", tsaCert.ExtKeyUsage, found)
	}

	certs, err := devpki.ParseCertsPEM(devpki.CertPEM(tsaCert, ca.Cert))
	if err != nil || len(certs) != 2 || !certs[1].Equal(ca.Cert) {
		t.Errorf("PEM round trip: %v, %d certificates", err, len(certs))
	}
	if _, err := devpki.ParseCertsPEM([]byte("not PEM")); err == nil {
		t.Error("ParseCertsPEM accepted no certificate")
	}
}
