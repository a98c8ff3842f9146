package middleoffice_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/internal/devpki"
	"pec/middleoffice"
	"pec/proof"
	"pec/proof/prooftest"
	"pec/signing"
	"pec/tsa"
)

// exchangeEnv is a node's parts for the exchange, all real: a root CA,
// an in-process TSA, the evidence log (proof.Log over the embedded
// store, software P-256 keys), the platform's CAdES signer (B-T), the
// directory and policy with partners a, b (pull) and c, and the embedded
// exchange store, each reopenable as after a restart.
type exchangeEnv struct {
	t        testing.TB
	dir      string
	ca       *devpki.CA
	rootPEM  string
	noteKey  *ecdsa.PrivateKey
	tsa      *tsa.Authority
	platform *signing.Signer
	policy   *middleoffice.Policy
	partners map[string]*testPartner
	cfg      middleoffice.ExchangeConfig

	logStore *proof.BoltStore
	log      *proof.Log
	store    middleoffice.ExchangeStore
	x        *middleoffice.Exchanges
	// wrap, when set, wraps the store and the appender of the next open.
	wrap func(middleoffice.ExchangeStore, evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender)
	// now, webhook and mail are the service's options, when set.
	now     func() time.Time
	webhook *http.Client
	mail    middleoffice.PushChannel
}

// testPartner is a partner's client certificate and encryption key.
type testPartner struct {
	id                 string
	key                *ecdsa.PrivateKey
	cert               *x509.Certificate
	encKey             *ecdsa.PrivateKey
	encCert            *x509.Certificate
	certFile, keyFile  string // PEM, for openssl
	encFile, encKeyPEM string
	principal          *middleoffice.Principal
}

// setup, when given, changes the partners a, b, c, d (in this order)
// before the directory is made, and the env's options before the
// service is: the CA is there to issue certificates.
func newExchangeEnv(t testing.TB, cfg middleoffice.ExchangeConfig, setup ...func(*exchangeEnv, []middleoffice.PartnerConfig)) *exchangeEnv {
	t.Helper()
	now := time.Now()
	e := &exchangeEnv{t: t, dir: t.TempDir(), partners: map[string]*testPartner{}, cfg: cfg}
	var err error
	if e.ca, err = devpki.NewRootCA(mustKey(t), "exchange test root", now); err != nil {
		t.Fatal(err)
	}
	e.rootPEM = e.writeFile("root.pem", devpki.CertPEM(e.ca.Cert))
	e.noteKey = mustKey(t)
	tsaKey := mustKey(t)
	tsaCert, err := e.ca.IssueTSA(tsaKey.Public(), "exchange test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(e.dir, "tsa-serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	e.tsa, err = tsa.New(tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second, Ordering: true}, tsaKey, []*x509.Certificate{tsaCert, e.ca.Cert}, serials, tsa.Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	platformKey := mustKey(t)
	platformCert, err := e.ca.IssueDocumentSigner(platformKey.Public(), "PEC platform", "PEC test", now)
	if err != nil {
		t.Fatal(err)
	}
	e.platform, err = signing.NewSigner(platformKey, []*x509.Certificate{platformCert, e.ca.Cert}, signing.SignerOptions{Timestamper: signing.LocalTSA{Authority: e.tsa}})
	if err != nil {
		t.Fatal(err)
	}

	var pcs []middleoffice.PartnerConfig
	for _, id := range []string{"a", "b", "c", "d"} {
		p := e.newPartner(id)
		pc := partner(id, nil, byFingerprint(p.cert))
		if id != "d" { // d has no encryption certificate
			pc.EncryptionCertificate = p.encCert.Raw
		}
		pcs = append(pcs, pc)
	}
	for _, f := range setup {
		f(e, pcs)
	}
	dir, err := middleoffice.Open(t.Context(), middleoffice.Config{
		Partners: pcs,
		Routes: []middleoffice.Route{
			{From: []string{"a"}, To: []string{"b", "d"}, Procedures: []string{"dossier"}},
			{From: []string{"b"}, To: []string{"a"}, Procedures: []string{"dossier"}},
			{From: []string{"a"}, To: []string{"b"}, Procedures: []string{"typed"}, DocumentTypes: []string{"invoice"}},
			{From: []string{"c"}, To: []string{"b"}, Procedures: []string{"other"}},
		},
	}, nil, middleoffice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.policy, err = middleoffice.NewPolicy(dir, middleoffice.Rules{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range e.partners {
		p.principal = dir.Resolve(p.cert)
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *exchangeEnv) writeFile(name string, data []byte) string {
	e.t.Helper()
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *exchangeEnv) newPartner(id string) *testPartner {
	t := e.t
	t.Helper()
	now := time.Now()
	p := &testPartner{id: id, key: mustKey(t), encKey: mustKey(t)}
	var err error
	if p.cert, err = e.ca.IssueClient(p.key.Public(), "partner-"+id, "Administration "+id, now); err != nil {
		t.Fatal(err)
	}
	p.encCert, err = e.ca.Issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: "partner-" + id + " encryption", Organization: []string{"Administration " + id}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyAgreement,
	}, p.encKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := func(k crypto.PrivateKey) []byte {
		b, err := devpki.KeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p.certFile = e.writeFile(id+".pem", devpki.CertPEM(p.cert))
	p.keyFile = e.writeFile(id+".key", keyPEM(p.key))
	p.encFile = e.writeFile(id+"-enc.pem", devpki.CertPEM(p.encCert))
	p.encKeyPEM = e.writeFile(id+"-enc.key", keyPEM(p.encKey))
	e.partners[id] = p
	return p
}

// open opens the evidence log, the exchange store and the service.
func (e *exchangeEnv) open() {
	t := e.t
	t.Helper()
	var err error
	if e.logStore, err = proof.OpenBolt(filepath.Join(e.dir, "evidence.db"), proof.BoltOptions{}); err != nil {
		t.Fatal(err)
	}
	signer, err := proof.NewNoteSigner("pec.test/exchange", e.noteKey)
	if err != nil {
		t.Fatal(err)
	}
	if e.log, err = proof.Open(context.Background(), e.logStore, signer, proof.AuthorityTimestamper{Authority: e.tsa}, proof.Config{SealInterval: 20 * time.Millisecond}, proof.Options{Registry: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	bolt, err := middleoffice.OpenBoltExchanges(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	var store middleoffice.ExchangeStore = bolt
	var ev evidence.Appender = e.log
	if e.wrap != nil {
		store, ev = e.wrap(store, ev)
		e.wrap = nil
	}
	e.store = store
	verifier := &signing.Verifier{Chain: signing.X509Validator{Roots: e.roots()}, TSARoots: e.roots()}
	if e.x, err = middleoffice.NewExchanges(e.cfg, store, e.policy, ev, e.platform, middleoffice.ExchangeOptions{AckVerifier: verifier, Registry: prometheus.NewRegistry(), Now: e.now, Webhook: e.webhook, Mail: e.mail}); err != nil {
		t.Fatal(err)
	}
}

func (e *exchangeEnv) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca.Cert)
	return p
}

// close stops the service's parts as a shutdown does (the log seals what
// it holds).
func (e *exchangeEnv) close() {
	if e.store != nil {
		e.store.Close()
		e.store = nil
	}
	if e.log != nil {
		e.log.Close()
		e.log = nil
	}
	if e.logStore != nil {
		e.logStore.Close()
		e.logStore = nil
	}
}

// restart closes every part and opens them again.
func (e *exchangeEnv) restart() {
	e.close()
	e.open()
}

// records are the log's records about subject, sealed or not, in order.
func (e *exchangeEnv) records(subject string) []*evidence.Record {
	t := e.t
	t.Helper()
	var out []*evidence.Record
	seen := map[string]bool{}
	add := func(data []byte) {
		r, err := evidence.UnmarshalRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		// A record sealed between the two reads is in both.
		if r.Subject == subject && !seen[r.ID] {
			seen[r.ID] = true
			out = append(out, r)
		}
	}
	ctx := context.Background()
	// The unsealed records first; then, once no tree is pending
	// (integrated, its checkpoint not signed yet: a seal interval at
	// most), the sealed ones: a record is in one of the two reads, or in
	// both (deduplicated).
	unsealed, err := e.logStore.Unsealed(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := e.logStore.Pending(ctx); errors.Is(err, proof.ErrNotFound) {
			break
		}
	}
	if err := e.logStore.Records(ctx, 0, func(_ uint64, r *proof.StoredRecord) error { add(r.Data); return nil }); err != nil && !errors.Is(err, proof.ErrNotFound) {
		t.Fatal(err)
	}
	for _, r := range unsealed {
		add(r.Data)
	}
	return out
}

// record is the log's record id, sealed: its proof exists.
func (e *exchangeEnv) record(id string) *evidence.Record {
	e.t.Helper()
	return prooftest.SealedRecord(e.t, e.log, e.logStore, id)
}

// document is a test document: its manifest entry and content.
type document struct {
	d       middleoffice.Document
	content []byte
}

func newDocument(name string, content []byte) document {
	sum := sha256.Sum256(content)
	return document{d: middleoffice.Document{Name: name, MediaType: "application/pdf", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content))}, content: content}
}

func manifest(to string, docs ...document) middleoffice.Manifest {
	m := middleoffice.Manifest{Recipient: to, Procedure: "dossier", Subject: "Demande d'extrait", Reference: "REF-2026-001"}
	for _, d := range docs {
		m.Documents = append(m.Documents, d.d)
	}
	return m
}

func sources(docs ...document) middleoffice.DocumentSource {
	return middleoffice.DocumentSourceFunc(func(_ context.Context, i int, d middleoffice.Document) (io.Reader, error) {
		return bytes.NewReader(docs[i].content), nil
	})
}

// faultStore is the real store with one injected fault: a crash between
// two writes, which the real store cannot be made to have.
type faultStore struct {
	middleoffice.ExchangeStore
	failPrepare, failCommit func(*middleoffice.Step) bool
	prepared                sync.Map // evidence id → *Step
	fired                   atomic.Bool
}

var errCrash = errors.New("injected crash")

func (f *faultStore) Prepare(ctx context.Context, st *middleoffice.Step) error {
	if f.failPrepare != nil && f.failPrepare(st) {
		f.fired.Store(true)
		return errCrash
	}
	f.prepared.Store(st.Event.EvidenceID, st)
	return f.ExchangeStore.Prepare(ctx, st)
}

func (f *faultStore) Commit(ctx context.Context, exchange, evidenceID string) error {
	if v, ok := f.prepared.Load(evidenceID); ok && f.failCommit != nil && f.failCommit(v.(*middleoffice.Step)) {
		f.fired.Store(true)
		return errCrash
	}
	return f.ExchangeStore.Commit(ctx, exchange, evidenceID)
}

// faultAppender is the real log whose answer is lost: the record is
// appended (or not), and the caller sees an error that says neither.
type faultAppender struct {
	evidence.Appender
	fail   func(*evidence.Record) bool
	append bool // append before failing
	fired  atomic.Bool
}

func (f *faultAppender) Append(ctx context.Context, recs ...*evidence.Record) ([]string, error) {
	if len(recs) == 1 && f.fail(recs[0]) {
		f.fired.Store(true)
		if f.append {
			if _, err := f.Appender.Append(ctx, recs...); err != nil {
				return nil, err
			}
		}
		return nil, errCrash
	}
	return f.Appender.Append(ctx, recs...)
}
