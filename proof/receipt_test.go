package proof_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pec/internal/devpki"
	"pec/internal/interop"
	"pec/proof"
	"pec/signing"
)

// TestReceiptOpenSSL: the signed receipt of a record is CAdES B-T that
// `openssl cms -verify` accepts, giving back the record's exact bytes.
func TestReceiptOpenSSL(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	e := newEnv(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := e.root.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "PEC receipts", Organization: []string{"PEC test"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signing.NewSigner(key, []*x509.Certificate{cert, e.root.Cert}, signing.SignerOptions{Timestamper: signing.LocalTSA{Authority: e.tsa}})
	if err != nil {
		t.Fatal(err)
	}
	rec := sampleRecord(42)
	rec.ID, rec.Time = "receipt-42", time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC)
	data, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	der, err := proof.SignReceipt(t.Context(), signer, data)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in, out, root := filepath.Join(dir, "receipt.p7m"), filepath.Join(dir, "record.bin"), filepath.Join(dir, "root.pem")
	if err := os.WriteFile(in, der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, devpki.CertPEM(e.root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	interop.OpenSSL(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", in, "-CAfile", root, "-out", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("openssl cms -verify gave other content than the record")
	}
	// B-T: the signature timestamp is an unsigned attribute.
	if printed := interop.OpenSSL(t, "cms", "-cmsout", "-print", "-inform", "DER", "-in", in); !bytes.Contains(printed, []byte("id-smime-aa-timeStampToken")) {
		t.Error("the receipt has no signature timestamp (CAdES B-T)")
	}
	if _, err := proof.SignReceipt(t.Context(), signer, []byte("not a record")); err == nil {
		t.Error("a receipt for bytes that are no record")
	}
}
