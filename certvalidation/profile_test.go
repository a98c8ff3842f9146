package certvalidation_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pec/certvalidation"
	"pec/internal/certtest"
	"pec/internal/interop"
)

// TestCRLProfile: the CRL number rules of RFC 5280 section 5.2.3. A CRL
// that is the issuer's (signed by it, in scope, current) and breaks them
// makes the certificate invalid as malformed_crl, whatever the revocation
// policy but none, unless other data decides or the rule is relaxed for
// the trust anchor; one that is not the issuer's is merely unusable.
func TestCRLProfile(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("CRL Profile Root"), nil)
	leaf := root.Issue(t, certtest.LeafTemplate("crl profile leaf"), nil)
	impostor := certtest.Root(t, certtest.CATemplate("CRL Profile Root"), nil)
	crl := func(tmpl certtest.CRLTemplate) []byte { return root.CRL(t, tmpl) }
	n := big.NewInt
	octets20 := new(big.Int).Sub(new(big.Int).Lsh(n(1), 159), n(1))
	octets21 := new(big.Int).Lsh(n(1), 159)
	revoked := []*big.Int{leaf.Cert.SerialNumber}

	for _, tc := range []struct {
		name   string
		crls   [][]byte
		policy certvalidation.RevocationPolicy
		relax  bool
		want   certvalidation.Reason
		detail string
	}{
		{name: "CRL number", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(1)})}},
		{name: "CRL number of 20 octets", crls: [][]byte{crl(certtest.CRLTemplate{Number: octets20})}},
		{name: "no CRL number", crls: [][]byte{crl(certtest.CRLTemplate{})}, want: certvalidation.ReasonMalformedCRL, detail: "crl_number: the CRL has no CRL number"},
		{name: "no CRL number, policy prefer", crls: [][]byte{crl(certtest.CRLTemplate{})}, policy: certvalidation.RevocationPrefer, want: certvalidation.ReasonMalformedCRL, detail: "no CRL number"},
		{name: "no CRL number, policy none", crls: [][]byte{crl(certtest.CRLTemplate{})}, policy: certvalidation.RevocationNone},
		{name: "critical CRL number", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(1), NumberCritical: true})}, want: certvalidation.ReasonMalformedCRL, detail: "crl_number: the CRL number extension is marked critical"},
		{name: "negative CRL number", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(-3)})}, want: certvalidation.ReasonMalformedCRL, detail: "crl_number: the CRL number is negative"},
		{name: "CRL number of 21 octets", crls: [][]byte{crl(certtest.CRLTemplate{Number: octets21})}, want: certvalidation.ReasonMalformedCRL, detail: "crl_number: the CRL number is 21 octets long"},
		{name: "no CRL number, relaxed for the anchor", crls: [][]byte{crl(certtest.CRLTemplate{})}, relax: true},
		{name: "no CRL number and revoked, relaxed for the anchor", crls: [][]byte{crl(certtest.CRLTemplate{Revoked: revoked})}, relax: true, want: certvalidation.ReasonRevoked},
		{name: "no CRL number and revoked", crls: [][]byte{crl(certtest.CRLTemplate{Revoked: revoked})}, want: certvalidation.ReasonMalformedCRL},
		{name: "no CRL number, not signed by the issuer", crls: [][]byte{impostor.CRL(t, certtest.CRLTemplate{})}, want: certvalidation.ReasonRevocationUnknown, detail: "does not verify"},
		{name: "no CRL number, and a good CRL", crls: [][]byte{crl(certtest.CRLTemplate{}), crl(certtest.CRLTemplate{Number: n(2)})}},
		{name: "good delta CRL", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(5)}), crl(certtest.CRLTemplate{Number: n(6), DeltaOf: n(5)})}},
		{name: "delta CRL revoking", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(5)}), crl(certtest.CRLTemplate{Number: n(6), DeltaOf: n(5), Revoked: revoked})}, want: certvalidation.ReasonRevoked},
		{name: "delta CRL with a critical CRL number", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(5)}), crl(certtest.CRLTemplate{Number: n(6), NumberCritical: true, DeltaOf: n(5)})},
			want: certvalidation.ReasonMalformedCRL, detail: "the delta CRL of"},
		{name: "delta CRL without a CRL number", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(5)}), crl(certtest.CRLTemplate{DeltaOf: n(5)})},
			want: certvalidation.ReasonMalformedCRL, detail: "crl_number: the CRL has no CRL number"},
		{name: "delta CRL without a CRL number, relaxed", crls: [][]byte{crl(certtest.CRLTemplate{Number: n(5)}), crl(certtest.CRLTemplate{DeltaOf: n(5), Revoked: revoked})}, relax: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var m certvalidation.Material
			if tc.relax {
				m.Relax = []certvalidation.Relaxation{{Anchors: []*x509.Certificate{root.Cert}, Checks: []certvalidation.ProfileCheck{certvalidation.ProfileCRLNumber}}}
			}
			v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Offline: true}}, m, certvalidation.ValidatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			policy := tc.policy
			if policy == "" {
				policy = certvalidation.RevocationRequire
			}
			rep, err := v.Validate(context.Background(), leaf.Cert, certvalidation.Options{Roots: []*x509.Certificate{root.Cert}, CRLs: tc.crls, Revocation: policy})
			wantReason(t, rep, err, tc.want)
			if !strings.Contains(rep.Detail, tc.detail) {
				t.Errorf("detail %q does not say %q", rep.Detail, tc.detail)
			}
			if tc.want == certvalidation.ReasonMalformedCRL {
				if ev := findEvidence(rep, 0, "crl"); ev == nil || ev.Status != "unusable" || !strings.HasPrefix(ev.Reason, "malformed CRL: ") {
					t.Errorf("evidence: %+v", rep.RevocationData)
				}
			}
		})
	}
}

// TestNegativeSerialWithOpenSSL: a certificate OpenSSL issues with a
// negative serial number (crypto/x509 cannot) is refused, unless the rule
// is relaxed for its anchor.
func TestNegativeSerialWithOpenSSL(t *testing.T) {
	t.Parallel()
	interop.Need(t, "openssl", "openssl")
	dir := t.TempDir()
	root := certtest.Root(t, certtest.CATemplate("Negative Serial Root"), nil)
	rootPEM := certtest.WritePEM(t, dir, "root.pem", root.Cert)
	rootKey := certtest.WriteKey(t, dir, "root.key", root.Key)
	csr, key, leafPEM := filepath.Join(dir, "leaf.csr"), filepath.Join(dir, "leaf.key"), filepath.Join(dir, "leaf.pem")
	interop.OpenSSL(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=negative serial")
	// With extensions (without, OpenSSL writes a version 1 certificate,
	// which has no authority key identifier either).
	ext := filepath.Join(dir, "leaf.ext")
	if err := os.WriteFile(ext, []byte("basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	interop.OpenSSL(t, "x509", "-req", "-in", csr, "-CA", rootPEM, "-CAkey", rootKey, "-set_serial", "-4660", "-days", "2", "-extfile", ext, "-out", leafPEM)
	data, err := os.ReadFile(leafPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certvalidation.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	if certs[0].SerialNumber.Sign() >= 0 {
		t.Fatalf("serial %v", certs[0].SerialNumber)
	}
	for _, relax := range []bool{false, true} {
		var m certvalidation.Material
		if relax {
			m.Relax = []certvalidation.Relaxation{{Anchors: []*x509.Certificate{root.Cert}, Checks: []certvalidation.ProfileCheck{certvalidation.ProfileSerialNumber}}}
		}
		v, err := certvalidation.New(certvalidation.Config{}, m, certvalidation.ValidatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := v.Validate(context.Background(), certs[0], certvalidation.Options{Roots: []*x509.Certificate{root.Cert}, Revocation: certvalidation.RevocationNone})
		if relax {
			wantReason(t, rep, err, "")
		} else if reasonOf(err) != certvalidation.ReasonMalformedCertificate || !strings.Contains(err.Error(), "serial_number: the serial number is negative") {
			t.Errorf("want malformed_certificate (serial_number), got %v", err)
		}
	}
}

// TestTrustAnchorFaults: trust anchors whose certificate cannot serve as
// a CA's, beyond those of certtest.Table: DSA without parameters (PKITS's
// inheriting CA trusted directly), an extension this package cannot read.
func TestTrustAnchorFaults(t *testing.T) {
	t.Parallel()
	v, err := certvalidation.New(certvalidation.Config{AllowWeakAlgorithms: true, Fetch: certvalidation.FetchConfig{Offline: true}}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	validate := func(leaf, root *x509.Certificate) error {
		_, err := v.Validate(context.Background(), leaf, certvalidation.Options{Roots: []*x509.Certificate{root}, Revocation: certvalidation.RevocationNone})
		return err
	}
	dsaCA := pkitsCert(t, "DSAParametersInheritedCACert.crt")
	if err := validate(pkitsCert(t, "ValidDSAParameterInheritanceTest5EE.crt"), dsaCA); reasonOf(err) != certvalidation.ReasonUnsupportedAlgorithm || !strings.Contains(err.Error(), "without domain parameters") {
		t.Errorf("DSA anchor without parameters: %v", err)
	}

	// A CRL distribution point with neither a name nor a CRL issuer, which
	// RFC 5280 section 4.2.1.13 forbids and this package does not read.
	tmpl := certtest.CATemplate("Root with a malformed extension")
	tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 31}, Value: []byte{0x30, 0x02, 0x30, 0x00}}}
	key := certtest.Key(t)
	tmpl.SerialNumber = big.NewInt(0x5e1f)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := certvalidation.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	under := (&certtest.Issued{Cert: bad, Key: key}).Issue(t, certtest.LeafTemplate("under a malformed root"), nil)
	if err := validate(under.Cert, bad); reasonOf(err) != certvalidation.ReasonMalformed || !strings.Contains(err.Error(), "the trust anchor") {
		t.Errorf("malformed anchor: %v", err)
	}
}

// TestRelaxConfig: relaxations are named in the configuration, checked,
// and read with the anchors they apply to.
func TestRelaxConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := certtest.Root(t, certtest.CATemplate("Legacy Root"), nil)
	certtest.WritePEM(t, dir, "legacy.pem", root.Cert)
	leaf := root.IssueWithoutAKI(t, certtest.LeafTemplate("legacy leaf"), nil)

	bad := certvalidation.Config{Relax: []certvalidation.RelaxConfig{{Checks: []string{"serial_number", "everything"}}, {Anchors: []string{"legacy.pem"}}}}
	err := bad.Validate()
	for _, want := range []string{
		"certvalidation.relax[0].anchors: name the trust anchors",
		`certvalidation.relax[0].checks[1]: unknown profile check "everything"`,
		"certvalidation.relax[1].checks: name the checks to relax",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in: %v", want, err)
		}
	}

	cfg := certvalidation.Config{
		Purposes: map[string]certvalidation.PurposeConfig{"any": {Roots: []string{"legacy.pem"}, Revocation: "none"}},
		Relax:    []certvalidation.RelaxConfig{{Anchors: []string{"legacy.pem"}, Checks: []string{"authority_key_id"}}},
	}
	cfg.ResolvePaths(dir)
	v, err := certvalidation.Load(cfg, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(context.Background(), leaf.Cert, certvalidation.Options{}); err != nil {
		t.Errorf("relaxed: %v", err)
	}
	cfg.Relax = nil
	v, err = certvalidation.Load(cfg, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(context.Background(), leaf.Cert, certvalidation.Options{}); reasonOf(err) != certvalidation.ReasonMalformedCertificate {
		t.Errorf("not relaxed: %v", err)
	}

	missing := certvalidation.Config{Relax: []certvalidation.RelaxConfig{{Anchors: []string{filepath.Join(dir, "nosuch.pem")}, Checks: []string{"serial_number"}}}}
	if _, err := certvalidation.Load(missing, certvalidation.ValidatorOptions{}); err == nil || !strings.Contains(err.Error(), "certvalidation.relax[0].anchors:") {
		t.Errorf("missing anchor file: %v", err)
	}
	_, err = certvalidation.New(certvalidation.Config{}, certvalidation.Material{Relax: []certvalidation.Relaxation{{Anchors: []*x509.Certificate{root.Cert}, Checks: []certvalidation.ProfileCheck{"nothing"}}}}, certvalidation.ValidatorOptions{})
	if !errors.Is(err, certvalidation.ErrBadOptions) {
		t.Errorf("unknown check in Material: %v", err)
	}
}

// crlWithoutNumber makes a CRL of ca's database with `openssl ca -gencrl`
// and a configuration that names no crlnumber file: OpenSSL then writes no
// CRL number.
func crlWithoutNumber(t *testing.T, ca *interop.CA) []byte {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nonumber.cnf")
	text := "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = " + filepath.Join(ca.Dir, "index.txt") +
		"\ndefault_md = sha256\ndefault_crl_days = 1\nunique_subject = no\ncrl_extensions = e\n[ e ]\nauthorityKeyIdentifier = keyid:always\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "crl.pem")
	interop.OpenSSL(t, "ca", "-config", conf, "-keyfile", ca.KeyFile, "-cert", ca.CertFile, "-gencrl", "-out", out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ders, err := certvalidation.ParseCRLs(data)
	if err != nil {
		t.Fatal(err)
	}
	der := ders[0]
	if rl, err := x509.ParseRevocationList(der); err != nil || rl.Number != nil {
		t.Fatalf("openssl wrote a CRL number or no CRL: %v", err)
	}
	return der
}
