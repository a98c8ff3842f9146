package interop

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// NSSDB makes an NSS certificate database (the one pdfsig and the other
// NSS tools read, `sql:` format, empty password) in a new directory of
// t.TempDir() in which each of roots is a trusted CA for every purpose
// (`certutil -A -t CT,C,C`), and returns the directory, for `pdfsig
// -nssdir`. It needs certutil (libnss3-tools).
func NSSDB(t testing.TB, roots ...*x509.Certificate) string {
	t.Helper()
	Need(t, "certutil", "libnss3-tools")
	dir := t.TempDir()
	if _, err := Run("certutil", "-N", "-d", "sql:"+dir, "--empty-password"); err != nil {
		t.Fatal(err)
	}
	for i, c := range roots {
		f := filepath.Join(dir, "root.pem")
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		nick := c.Subject.CommonName
		if nick == "" || i > 0 {
			nick += " " + c.SerialNumber.Text(16)
		}
		if _, err := Run("certutil", "-A", "-d", "sql:"+dir, "-n", nick, "-t", "CT,C,C", "-i", f); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
