package proof_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

// env is a log's keys: a root CA, the tree-head key and its certificate,
// an in-process TSA with a software key.
type env struct {
	root    *devpki.CA
	rootKey *ecdsa.PrivateKey
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
	e := &env{root: ca, rootKey: rootKey, roots: x509.NewCertPool()}
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

func sampleRecord(i int) *evidence.Record {
	d := make([]byte, 32)
	d[0], d[1] = byte(i>>8), byte(i)
	return &evidence.Record{
		Type:    evidence.SubmissionAccepted,
		Subject: "dossier-" + big.NewInt(int64(i)).String(),
		Actors:  []evidence.Actor{{Role: "sender", Subject: "CN=Comune di Test", Fingerprint: [32]byte{1, 2, 3}}},
		Digests: []evidence.Digest{{Name: "dossier", Algorithm: "sha256", Value: d}},
	}
}

// appendSealed appends rec and waits until it is sealed: its id and leaf
// index.
func appendSealed(t testing.TB, l *proof.Log, rec *evidence.Record) (string, uint64) {
	t.Helper()
	ids, err := l.Append(t.Context(), rec)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	idx, _, err := l.WaitSealed(ctx, ids[0])
	if err != nil {
		t.Fatalf("WaitSealed(%s): %v", ids[0], err)
	}
	return ids[0], idx
}

// fastSeal is a config that seals quickly, for tests.
var fastSeal = proof.Config{SealInterval: 20 * time.Millisecond}

// save writes e's keys and certificates to dir, for a process that
// restarts the log (loadEnv).
func (e *env) save(t testing.TB, dir string) {
	t.Helper()
	for name, key := range map[string]any{"root.key": e.rootKey, "log.key": e.key, "tsa.key": e.tsaKey} {
		pem, err := devpki.KeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, cert := range map[string]*x509.Certificate{"root.pem": e.root.Cert, "log.pem": e.cert, "tsa.pem": e.tsaCert} {
		if err := os.WriteFile(filepath.Join(dir, name), devpki.CertPEM(cert), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadEnv is the env saved in dir, with a TSA whose serials are kept in
// dir too (unique across the processes).
func loadEnv(t testing.TB, dir string) *env {
	t.Helper()
	key := func(name string) *ecdsa.PrivateKey {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k.(*ecdsa.PrivateKey)
	}
	cert := func(name string) *x509.Certificate {
		c, err := devpki.LoadCertsPEM(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return c[0]
	}
	rootKey := key("root.key")
	e := &env{root: &devpki.CA{Cert: cert("root.pem"), Signer: rootKey}, rootKey: rootKey, roots: x509.NewCertPool(), key: key("log.key"), cert: cert("log.pem"), tsaKey: key("tsa.key"), tsaCert: cert("tsa.pem")}
	e.roots.AddCert(e.root.Cert)
	var err error
	if e.signer, err = proof.NewNoteSigner(origin, e.key); err != nil {
		t.Fatal(err)
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(dir, "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	cfg := tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second, Ordering: true}
	if e.tsa, err = tsa.New(cfg, e.tsaKey, []*x509.Certificate{e.tsaCert, e.root.Cert}, serials, tsa.Options{Registry: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	e.ts = proof.AuthorityTimestamper{Authority: e.tsa}
	return e
}

var update = flag.Bool("update", false, "rewrite the golden files and corpora")
