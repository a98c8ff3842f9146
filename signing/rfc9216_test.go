package signing_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/signing"
)

// rfc9216 holds the signed samples of RFC 9216 ("S/MIME Example Keys and
// Certificates") and their certificates, made by an implementation that is
// none of ours, read in place from the shared test data.
const rfc9216 = "../../shared/testdata/cms-rfc9216"

func rfc9216Certs(t *testing.T, names ...string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, n := range names {
		certs, err := certvalidation.LoadCertificates(filepath.Join(rfc9216, n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, certs...)
	}
	return out
}

// TestRFC9216Samples verifies every signed sample of RFC 9216, one t.Run
// each: RSA PKCS #1 v1.5, RSASSA-PSS, Ed25519 (RFC 8419) with signed
// attributes and, detached, without; and two signers in a SignedData that
// carries no certificate, which verifies once they are given
// (VerifyOptions.Certificates, `pec verify --certs`) and not before.
func TestRFC9216Samples(t *testing.T) {
	roots := x509.NewCertPool()
	for _, c := range rfc9216Certs(t, "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem", "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem") {
		roots.AddCert(c)
	}
	signers := rfc9216Certs(t, "certs-and-keys/lamps-alice.crt", "certs-and-keys/lamps-carlos.crt")
	content := []byte("This is some sample content.")
	v := &signing.Verifier{Chain: signing.X509Validator{Roots: roots}}
	for _, tc := range []struct {
		file       string
		opts       signing.VerifyOptions
		signatures int
		algorithm  string // of the first signature
		sub        signing.SubIndication
	}{
		{"signedByAliceRSA", signing.VerifyOptions{}, 1, "RSA PKCS#1 v1.5", ""},
		{"signedByAliceRSAPSS", signing.VerifyOptions{}, 1, "RSA-PSS", ""},
		{"signedByCarlosEd25519", signing.VerifyOptions{}, 1, "Ed25519", ""},
		{"signedByCarlosDetached", signing.VerifyOptions{Data: content}, 1, "Ed25519", ""},
		{"signedByAliceAndCarlosNoCerts", signing.VerifyOptions{Certificates: signers}, 2, "Ed25519", ""},
		// What must fail: the same samples short of what they need.
		{"signedByAliceAndCarlosNoCerts", signing.VerifyOptions{}, 2, "Ed25519", signing.NoSigningCertificateFound},
		{"signedByCarlosDetached", signing.VerifyOptions{Data: []byte("This is some other content.")}, 1, "Ed25519", signing.HashFailure},
		{"signedByCarlosDetached", signing.VerifyOptions{Digest: make([]byte, 64)}, 1, "Ed25519", signing.SignedDataNotFound},
	} {
		name := tc.file
		if tc.sub != "" {
			name += "/" + string(tc.sub)
		}
		t.Run(name, func(t *testing.T) {
			for _, form := range []string{"binary-files/" + tc.file + ".p7m", "pem-encoded/" + tc.file + ".pem"} {
				signed, err := os.ReadFile(filepath.Join(rfc9216, form))
				if err != nil {
					t.Fatal(err)
				}
				opts := tc.opts
				if opts.Digest != nil {
					opts.Hash = crypto.SHA512
				}
				r, err := v.Verify(context.Background(), signed, opts)
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if len(r.Signatures) != tc.signatures {
					t.Fatalf("%s: %d signatures, want %d", form, len(r.Signatures), tc.signatures)
				}
				if got := r.Signatures[0].SignatureAlgorithm; got != tc.algorithm {
					t.Errorf("%s: algorithm %q, want %q", form, got, tc.algorithm)
				}
				if tc.sub == "" {
					wantPassed(t, r)
					continue
				}
				if r.SubIndication != tc.sub {
					t.Fatalf("%s: %s/%s (%s), want %s\n%s", form, r.Indication, r.SubIndication, r.Detail, tc.sub, checksText(r))
				}
			}
		})
	}
	// The signatures made at the time of the samples verify at that time
	// too, well inside the certificates' validity.
	t.Run("at 2021-01-01", func(t *testing.T) {
		old := &signing.Verifier{Chain: signing.X509Validator{Roots: roots}, Now: func() time.Time { return time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC) }}
		signed, err := os.ReadFile(filepath.Join(rfc9216, "binary-files/signedByCarlosEd25519.p7m"))
		if err != nil {
			t.Fatal(err)
		}
		r, err := old.Verify(context.Background(), signed, signing.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantPassed(t, r)
	})
}
