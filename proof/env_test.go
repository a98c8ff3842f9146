package proof_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

// env is a log's keys: a root CA, the tree-head key and its certificate,
// an in-process TSA with a software key.
type env struct {
	root    *devpki.CA
	roots   *x509.CertPool
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	signer  *proof.NoteSigner
	tsa     *tsa.Authority
	tsaCert *x509.Certificate
	tsaKey  *ecdsa.PrivateKey
	ts      proof.Timestamper
}

const origin = "pec.test/proof"

func newEnv(t testing.TB) *env {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devpki.NewRootCA(rootKey, "proof test root", now)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{root: ca, roots: x509.NewCertPool()}
	e.roots.AddCert(ca.Cert)
	e.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e.cert, err = ca.Issue(&x509.Certificate{
		SerialNumber:       big.NewInt(2),
		Subject:            pkix.Name{CommonName: "PEC proof log", Organization: []string{"PEC test"}},
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, e.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	e.signer, err = proof.NewNoteSigner(origin, e.key)
	if err != nil {
		t.Fatal(err)
	}
	tsaKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e.tsaCert, err = ca.IssueTSA(tsaKey.Public(), "proof test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	serials, err := tsa.OpenFileSerials(filepath.Join(dir, "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	cfg := tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second, Ordering: true}
	e.tsa, err = tsa.New(cfg, tsaKey, []*x509.Certificate{e.tsaCert, ca.Cert}, serials, tsa.Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	e.ts = proof.AuthorityTimestamper{Authority: e.tsa}
	e.tsaKey = tsaKey
	return e
}

func (e *env) auditOptions() proof.AuditOptions {
	return proof.AuditOptions{Verifier: e.signer.Verifier(), TSARoots: e.roots}
}

func openBolt(t testing.TB, path string) *proof.BoltStore {
	t.Helper()
	s, err := proof.OpenBolt(path, proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) openLog(t testing.TB, s proof.Store, cfg proof.Config) *proof.Log {
	t.Helper()
	l, err := proof.Open(t.Context(), s, e.signer, e.ts, cfg, proof.Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func sampleRecord(i int) *proof.Record {
	d := make([]byte, 32)
	d[0], d[1] = byte(i>>8), byte(i)
	return &proof.Record{
		Type:    proof.SubmissionAccepted,
		Subject: "dossier-" + big.NewInt(int64(i)).String(),
		Actors:  []proof.Actor{{Role: "sender", Subject: "CN=Comune di Test", Fingerprint: [32]byte{1, 2, 3}}},
		Digests: []proof.Digest{{Name: "dossier", Algorithm: "sha256", Value: d}},
	}
}
