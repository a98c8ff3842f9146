package devca_test

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"pec/internal/devca"
	"pec/internal/devpki"
	"pec/internal/interop"
)

// openssl runs openssl and returns its standard output and error together
// (ocsp and crl report verification on stderr).
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	interop.Need(t, "openssl", "openssl")
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("$ openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// OpenSSL's OCSP client and CRL tool read the responder's answers and
// check their signatures against the root.
func TestOpenSSL(t *testing.T) {
	e := newEnv(t)
	good := e.issue(t, "partner-a")
	revoked := e.issue(t, "partner-b")
	e.revoke(t, "partner-b", "affiliationChanged")
	srv := httptest.NewServer(e.responder(t, devca.Options{}))
	defer srv.Close()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := write("root.pem", devpki.CertPEM(e.ca.Cert))
	goodPEM := write("good.pem", devpki.CertPEM(good))
	revokedPEM := write("revoked.pem", devpki.CertPEM(revoked))

	for _, tc := range []struct {
		name, cert, hash string
		want             []string
	}{
		{"good", goodPEM, "-sha1", []string{`good.pem: good`, `Response verify OK`}},
		{"good, SHA-256 CertID", goodPEM, "-sha256", []string{`good.pem: good`, `Response verify OK`}},
		{"revoked", revokedPEM, "-sha1", []string{`revoked.pem: revoked`, `Reason: affiliationChanged`, `Revocation Time: `, `Response verify OK`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := openssl(t, "ocsp", "-issuer", root, tc.hash, "-cert", tc.cert, "-url", srv.URL+devca.OCSPPath, "-CAfile", root, "-no_nonce")
			for _, w := range tc.want {
				if !regexp.MustCompile(regexp.QuoteMeta(w)).MatchString(out) {
					t.Errorf("openssl ocsp output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("crl", func(t *testing.T) {
		der, err := e.responder(t, devca.Options{}).CRL()
		if err != nil {
			t.Fatal(err)
		}
		crl := write("root.crl", der)
		out := openssl(t, "crl", "-inform", "DER", "-in", crl, "-CAfile", root, "-noout", "-verify", "-text")
		for _, w := range []string{`verify OK`, `X509v3 CRL Number`, `X509v3 Authority Key Identifier`, `Affiliation Changed`, "Serial Number: " + regexp.QuoteMeta(upperHex(revoked.SerialNumber.Text(16)))} {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("openssl crl output lacks %q:\n%s", w, out)
			}
		}
		if regexp.MustCompile("Serial Number: " + upperHex(good.SerialNumber.Text(16))).MatchString(out) {
			t.Errorf("the good certificate is on the CRL:\n%s", out)
		}
	})
}

func upperHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	if len(b)%2 == 1 {
		b = append([]byte{'0'}, b...)
	}
	return string(b)
}
