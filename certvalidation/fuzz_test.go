package certvalidation_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pec/certvalidation"
)

// The fuzz targets feed outside input to the paths that read it: a
// certificate (and everything validation reads from it: names, name
// constraints, distribution points, policies), a CRL, an OCSP response.
// Invariants: no panic, a report always, an error of the documented types,
// and validity never resting on data that did not check out.

func fuzzValidator(f *testing.F, cfg certvalidation.Config) *certvalidation.Validator {
	f.Helper()
	cfg.Fetch.Offline = true
	cfg.Cache.Results = -1
	v, err := certvalidation.New(cfg, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		f.Fatal(err)
	}
	return v
}

func checkOutcome(t *testing.T, rep *certvalidation.Report, err error) {
	t.Helper()
	if rep == nil {
		t.Fatalf("no report (%v)", err)
	}
	if err != nil {
		if _, ok := errors.AsType[*certvalidation.Error](err); !ok {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if rep.Valid {
			t.Fatal("report valid with an error")
		}
	}
}

func FuzzParseCertificate(f *testing.F) {
	for _, name := range []string{"ValidCertificatePathTest1EE.crt", "DSAParametersInheritedCACert.crt", "InvalidNegativeSerialNumberTest15EE.crt",
		"ValiddistributionPointTest5EE.crt", "nameConstraintsDN1CACert.crt", "ValidDNandRFC822nameConstraintsTest27EE.crt", "PoliciesP1234CACert.crt"} {
		data, err := os.ReadFile(filepath.Join(pkitsDir, "certs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	anchor := pkitsCert(f, "TrustAnchorRootCertificate.crt")
	v := fuzzValidator(f, certvalidation.Config{AllowWeakAlgorithms: true})
	at := time.Date(2022, 5, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := certvalidation.ParseCertificate(data)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Raw, data) {
			t.Fatal("Raw is not the input")
		}
		rep, err := v.Validate(context.Background(), c, certvalidation.Options{
			At: at, Roots: []*x509.Certificate{anchor}, Revocation: certvalidation.RevocationRequire,
			Intermediates: []*x509.Certificate{c}, Host: "example.com", Email: "a@example.com",
		})
		checkOutcome(t, rep, err)
	})
}

func FuzzCRL(f *testing.F) {
	for _, name := range []string{"GoodCACRL.crl", "RevokedsubCACRL.crl", "indirectCRLCA3cRLIssuerCRL.crl", "deltaCRLCA1deltaCRL.crl", "UnknownCRLEntryExtensionCACRL.crl"} {
		f.Add(pkitsCRL(f, name))
	}
	anchor := pkitsCert(f, "TrustAnchorRootCertificate.crt")
	leaf := pkitsCert(f, "ValidCertificatePathTest1EE.crt")
	ca := pkitsCert(f, "GoodCACert.crt")
	rootCRL := pkitsCRL(f, "TrustAnchorRootCRL.crl")
	v := fuzzValidator(f, certvalidation.Config{AllowWeakAlgorithms: true})
	at := time.Date(2022, 5, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := v.Validate(context.Background(), leaf, certvalidation.Options{
			At: at, Roots: []*x509.Certificate{anchor}, Intermediates: []*x509.Certificate{ca},
			CRLs: [][]byte{rootCRL, data}, Revocation: certvalidation.RevocationRequire,
		})
		checkOutcome(t, rep, err)
		if err == nil && !decidedBy(rep, 0, data) {
			t.Fatal("valid, but not because of the only CRL that covers the certificate")
		}
	})
}

func FuzzOCSP(f *testing.F) {
	dir := filepath.Join("testdata", "ocsp")
	for _, name := range []string{"good.der", "revoked.der"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	ca, err := certvalidation.LoadCertificates(filepath.Join(dir, "ca.pem"))
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := certvalidation.LoadCertificates(filepath.Join(dir, "leaf.pem"))
	if err != nil {
		f.Fatal(err)
	}
	v := fuzzValidator(f, certvalidation.Config{})
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := v.Validate(context.Background(), leaf[0], certvalidation.Options{
			At: at, Roots: ca, OCSPResponses: [][]byte{data}, Revocation: certvalidation.RevocationRequire,
		})
		checkOutcome(t, rep, err)
		if err == nil && !decidedBy(rep, 0, data) {
			t.Fatal("valid, but not because of the only OCSP response")
		}
	})
}

// decidedBy reports whether the report shows data (by digest) as the good
// revocation evidence for certificate cert.
func decidedBy(rep *certvalidation.Report, cert int, data []byte) bool {
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	for _, ev := range rep.RevocationData {
		if ev.Cert == cert && ev.Status == "good" && ev.SHA256 == want {
			return true
		}
	}
	return false
}

// TestOCSPFixture pins what the committed OpenSSL responses say.
func TestOCSPFixture(t *testing.T) {
	dir := filepath.Join("testdata", "ocsp")
	ca, err := certvalidation.LoadCertificates(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certvalidation.LoadCertificates(filepath.Join(dir, "leaf.pem"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Offline: true}}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]certvalidation.Reason{"good.der": "", "revoked.der": certvalidation.ReasonRevoked} {
		resp, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := v.Validate(context.Background(), leaf[0], certvalidation.Options{
			At: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), Roots: ca, OCSPResponses: [][]byte{resp}, Revocation: certvalidation.RevocationRequire,
		})
		if reasonOf(err) != want {
			t.Errorf("%s: want %q, got %v", name, want, err)
		}
		if want == "" && !decidedBy(rep, 0, resp) {
			t.Errorf("%s: evidence %+v", name, rep.RevocationData)
		}
	}
}
