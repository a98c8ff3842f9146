package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pec/hsm"
)

func TestSoftwareKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ks := open(t, hsm.Config{KeyDir: dir}, hsm.Options{})
	for _, kt := range keyTypes {
		label := "file-" + strings.ToLower(kt.String())
		signer, err := ks.GenerateKey(t.Context(), label, kt)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, label+".key")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" {
			t.Fatalf("%s: not a PEM PRIVATE KEY", path)
		}
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
			t.Errorf("%s holds another key", path)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestSoftwareBadLabels(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ks := open(t, hsm.Config{KeyDir: dir}, hsm.Options{})
	for _, label := range []string{"", ".", "..", "../escape", "a/b", `a\b`, ".hidden", "spa ce", "é", strings.Repeat("a", 129)} {
		if _, err := ks.GenerateKey(t.Context(), label, hsm.ECP256); err == nil {
			t.Errorf("GenerateKey(%q): no error", label)
		}
		if _, err := ks.Signer(t.Context(), label); err == nil {
			t.Errorf("Signer(%q): no error", label)
		}
	}
	for _, label := range []string{"tsa", "root-ca", "tls_server.2026", "A-Z.0-9"} {
		if _, err := ks.GenerateKey(t.Context(), label, hsm.ECP256); err != nil {
			t.Errorf("GenerateKey(%q): %v", label, err)
		}
	}
}

// TestSoftwareKeyReadableByOthers: like ssh, a key file others may read is
// refused.
func TestSoftwareKeyReadableByOthers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	path := filepath.Join(dir, "open.key")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644) // whatever the umask
	ks := open(t, hsm.Config{KeyDir: dir}, hsm.Options{})
	if _, err := ks.Signer(t.Context(), "open"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Signer on a 0644 key file: %v", err)
	}
	os.Chmod(path, 0o600)
	s, err := ks.Signer(t.Context(), "open")
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(s.Public()) {
		t.Fatal("another key")
	}
}

func TestSoftwareKeyDir(t *testing.T) {
	t.Parallel()
	if _, err := hsm.Open(t.Context(), hsm.Config{KeyDir: filepath.Join(t.TempDir(), "absent")}, hsm.Options{}); err == nil {
		t.Fatal("Open with a missing key_dir: no error")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := hsm.Open(t.Context(), hsm.Config{KeyDir: file}, hsm.Options{}); err == nil {
		t.Fatal("Open with a file as key_dir: no error")
	}
}
