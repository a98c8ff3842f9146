package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/internal/devpki"
	"pec/middleoffice"
	"pec/proof"
	"pec/proof/prooftest"
	"pec/signing"
	"pec/tsa"
)

// exchangeNode is a node serving the exchange, every part real: a root
// CA, an in-process TSA, the evidence log (proof.Log over the embedded
// store), the platform's CAdES signer (software P-256, B-T), the
// directory and its policy, the embedded exchange store and service, and
// the API handler — served over mutual TLS on 127.0.0.1 unless the node
// is for in-process calls (the fuzz target). Its work queue does not run:
// deliver() seals and delivers what waits, so that a test sees an
// exchange before its seal.
//
// Partners: a sends procedure dossier to b (pull) and to d (no encryption
// certificate) and to e (disabled); b sends dossier to a; c sends only
// procedure other to b.
type exchangeNode struct {
	t        testing.TB
	ca       *devpki.CA
	roots    *x509.CertPool
	dir      string // the exchange store's data directory
	logStore *proof.BoltStore
	log      *proof.Log
	x        *middleoffice.Exchanges
	xreg     *prometheus.Registry // the exchange service's metrics
	policy   *middleoffice.Policy
	handler  http.Handler
	url      string // "" without a server
	partners map[string]*exPartner
}

// exPartner is a partner's client certificate, its client, its
// encryption key and its signer (for acknowledgments).
type exPartner struct {
	id      string
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	encKey  *ecdsa.PrivateKey
	encCert *x509.Certificate
	client  *http.Client
	signer  *signing.Signer
}

type nodeOptions struct {
	cfg      middleoffice.ExchangeConfig
	noServer bool               // in-process only: call n.handler
	server   func(*http.Server) // adjusts the server before it starts
}

func newExchangeNode(t testing.TB, opts nodeOptions) *exchangeNode {
	t.Helper()
	now := time.Now()
	p := newPKI(t)
	n := &exchangeNode{t: t, ca: p.ca, roots: x509.NewCertPool(), dir: t.TempDir(), partners: map[string]*exPartner{}}
	n.roots.AddCert(p.ca.Cert)
	authority := newAuthority(t, p, tsa.Options{})

	// The evidence log.
	var err error
	if n.logStore, err = proof.OpenBolt(filepath.Join(n.dir, "evidence.db"), proof.BoltOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.logStore.Close() })
	noteSigner, err := proof.NewNoteSigner("pec.test/gateway-exchange", mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if n.log, err = proof.Open(context.Background(), n.logStore, noteSigner, proof.AuthorityTimestamper{Authority: authority}, proof.Config{SealInterval: 20 * time.Millisecond}, proof.Options{Registry: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.log.Close() })

	// The platform's signer: receipts and seals.
	platformKey := mustKey(t)
	platformCert, err := p.ca.IssueDocumentSigner(platformKey.Public(), "PEC platform", "PEC test", now)
	if err != nil {
		t.Fatal(err)
	}
	platform, err := signing.NewSigner(platformKey, []*x509.Certificate{platformCert, p.ca.Cert}, signing.SignerOptions{Timestamper: signing.LocalTSA{Authority: authority}})
	if err != nil {
		t.Fatal(err)
	}

	// The directory.
	var pcs []middleoffice.PartnerConfig
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		pt := n.newPartner(id)
		pc := middleoffice.PartnerConfig{Partner: middleoffice.Partner{
			ID: id, Name: "Administration " + id, Roles: []middleoffice.Role{middleoffice.RolePartner},
			Certificates: []middleoffice.CertificateRule{{Fingerprint: fingerprintHex(pt.cert)}},
			Disabled:     id == "e",
		}}
		if id != "d" {
			pc.EncryptionCertificate = pt.encCert.Raw
		}
		pcs = append(pcs, pc)
	}
	n.newPartner("stranger") // a certificate of the client roots that no partner claims
	dir, err := middleoffice.Open(t.Context(), middleoffice.Config{
		Partners: pcs,
		Routes: []middleoffice.Route{
			{From: []string{"a"}, To: []string{"b", "d", "e"}, Procedures: []string{"dossier"}},
			{From: []string{"b"}, To: []string{"a"}, Procedures: []string{"dossier"}},
			{From: []string{"c"}, To: []string{"b"}, Procedures: []string{"other"}},
		},
	}, nil, middleoffice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.policy, err = middleoffice.NewPolicy(dir, middleoffice.Rules{}); err != nil {
		t.Fatal(err)
	}

	// The exchange service.
	store, err := middleoffice.OpenBoltExchanges(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	verifier := &signing.Verifier{Chain: signing.X509Validator{Roots: n.roots}, TSARoots: n.roots}
	n.xreg = prometheus.NewRegistry()
	if n.x, err = middleoffice.NewExchanges(opts.cfg, store, n.policy, n.log, platform, middleoffice.ExchangeOptions{AckVerifier: verifier, Registry: n.xreg}); err != nil {
		t.Fatal(err)
	}
	n.handler = gateway.NewAPIHandler(authority, 1024, gateway.Options{
		Policy: n.policy, Exchanges: n.x, Proofs: &gateway.ProofReader{Log: n.log}, Registry: prometheus.NewRegistry(),
	})
	if opts.noServer {
		return n
	}

	serverKey := mustKey(t)
	serverCert, err := p.ca.IssueServer(serverKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := gateway.ServerTLSConfig([]*x509.Certificate{serverCert, p.ca.Cert}, serverKey, n.roots)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(n.handler)
	srv.TLS = tlsCfg
	if opts.server != nil {
		opts.server(srv.Config)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	n.url = srv.URL
	return n
}

func fingerprintHex(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func (n *exchangeNode) newPartner(id string) *exPartner {
	t := n.t
	t.Helper()
	now := time.Now()
	p := &exPartner{id: id, key: mustKey(t), encKey: mustKey(t)}
	var err error
	if p.cert, err = n.ca.IssueClient(p.key.Public(), "partner-"+id, "Administration "+id, now); err != nil {
		t.Fatal(err)
	}
	if p.encCert, err = n.ca.IssueEncryption(p.encKey.Public(), "partner-"+id+" encryption", "Administration "+id, now); err != nil {
		t.Fatal(err)
	}
	if p.signer, err = signing.NewSigner(p.key, []*x509.Certificate{p.cert, n.ca.Cert}, signing.SignerOptions{}); err != nil {
		t.Fatal(err)
	}
	p.client = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: n.roots, ServerName: "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{p.cert.Raw}, PrivateKey: p.key}},
	}}}
	n.t.Cleanup(p.client.CloseIdleConnections)
	n.partners[id] = p
	return p
}

// api is the typed client of partner id.
func (n *exchangeNode) api(id string) *api.Client {
	n.t.Helper()
	c, err := api.NewClient(n.url, n.partners[id].client)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// do sends a request as partner id: over TLS to the server, or, for a
// node without one, to the handler in process with the TLS state the
// server would leave (a verified client certificate).
func (n *exchangeNode) do(t testing.TB, id, method, path string, hdr http.Header, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	resp, data, err := n.try(id, method, path, hdr, body)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, path, id, err)
	}
	return resp, data
}

func (n *exchangeNode) try(id, method, path string, hdr http.Header, body io.Reader) (*http.Response, []byte, error) {
	p := n.partners[id]
	if n.url == "" {
		req := httptest.NewRequest(method, path, body)
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.cert}, VerifiedChains: [][]*x509.Certificate{{p.cert, n.ca.Cert}}}
		rec := httptest.NewRecorder()
		n.handler.ServeHTTP(rec, req)
		resp := rec.Result()
		return resp, rec.Body.Bytes(), nil
	}
	req, err := http.NewRequest(method, n.url+path, body)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp, data, err
}

// deliver runs the work queue until nothing is due: every accepted
// exchange sealed and in its recipient's inbox.
func (n *exchangeNode) deliver() {
	n.t.Helper()
	for {
		did, err := n.x.Work(context.Background())
		if err != nil {
			n.t.Fatal(err)
		}
		if !did {
			return
		}
	}
}

// record is the log's record id, once sealed: its proof exists.
func (n *exchangeNode) record(t testing.TB, id string) *evidence.Record {
	t.Helper()
	return prooftest.SealedRecord(t, n.log, n.logStore, id)
}

// records are the log's records of type typ, sealed or not.
func (n *exchangeNode) records(t testing.TB, typ evidence.EventType) []*evidence.Record {
	t.Helper()
	var out []*evidence.Record
	seen := map[string]bool{}
	add := func(data []byte) {
		r, err := evidence.UnmarshalRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		if r.Type == typ && !seen[r.ID] { // a record sealed between the two reads is in both
			seen[r.ID] = true
			out = append(out, r)
		}
	}
	ctx := context.Background()
	if err := n.logStore.Records(ctx, 0, func(_ uint64, r *proof.StoredRecord) error { add(r.Data); return nil }); err != nil && !errors.Is(err, proof.ErrNotFound) {
		t.Fatal(err)
	}
	unsealed, err := n.logStore.Unsealed(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range unsealed {
		add(r.Data)
	}
	return out
}

func attr(r *evidence.Record, key string) string {
	for _, a := range r.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// payloads are the exchanges that have payloads in the store.
func (n *exchangeNode) payloads(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.dir, "payloads"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// wantRefusal checks a refused submission's problem: it names an
// exchange and its submission.rejected record, which the log holds
// (sealed), about that exchange, by sender, for reason; the exchange does
// not exist for its sender and nothing of it is kept.
func (n *exchangeNode) wantRefusal(t testing.TB, p api.Problem, sender string, reason middleoffice.Reason) *evidence.Record {
	t.Helper()
	if p.EvidenceID == "" || p.Exchange == "" {
		t.Fatalf("refusal %s without its evidence: %+v", p.Type.Reason(), p)
	}
	rec := n.record(t, p.EvidenceID)
	partner := n.policy.Directory().Resolve(n.partners[sender].cert).ID() // "": no partner claims it
	if rec.Type != evidence.SubmissionRejected || rec.Subject != p.Exchange || attr(rec, "reason") != string(reason) || attr(rec, "sender") != partner {
		t.Errorf("evidence %s: %s about %s, reason %q, sender %q; want submission.rejected about %s, %q, %q",
			rec.ID, rec.Type, rec.Subject, attr(rec, "reason"), attr(rec, "sender"), p.Exchange, reason, partner)
	}
	if len(rec.Actors) == 0 || rec.Actors[0].Fingerprint != sha256.Sum256(n.partners[sender].cert.Raw) {
		t.Errorf("evidence %s does not name the sender's certificate: %+v", rec.ID, rec.Actors)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "payloads", p.Exchange)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused exchange %s: payloads kept (%v)", p.Exchange, err)
	}
	if n.url != "" {
		resp, body := n.do(t, sender, "GET", "/v1/exchanges/"+p.Exchange, nil, nil)
		wantTypedProblem(t, resp.StatusCode, resp.Header, body, api.TypeUnknownExchange)
	}
	return rec
}

// problem checks that an answer is a typed problem of type want.
func problem(t testing.TB, resp *http.Response, body []byte, want api.ProblemType) api.Problem {
	t.Helper()
	return wantTypedProblem(t, resp.StatusCode, resp.Header, body, want)
}

// newDoc is a manifest's entry for content.
func newDoc(name string, content []byte) middleoffice.Document {
	sum := sha256.Sum256(content)
	return middleoffice.Document{Name: name, MediaType: "application/pdf", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content))}
}

func manifestTo(to string, docs ...middleoffice.Document) middleoffice.Manifest {
	return middleoffice.Manifest{Recipient: to, Procedure: "dossier", Subject: "Demande d'extrait", Reference: "REF-1", Documents: docs}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// bodyPart is a part of a multipart body as a test writes it.
type bodyPart struct {
	header  textproto.MIMEHeader
	content []byte
}

// formPart is a multipart/form-data part; filename and contentType may
// be empty.
func formPart(name, filename, contentType string, content []byte) bodyPart {
	h := textproto.MIMEHeader{}
	cd := `form-data; name="` + name + `"`
	if filename != "" {
		cd += `; filename="` + filename + `"`
	}
	h.Set("Content-Disposition", cd)
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return bodyPart{header: h, content: content}
}

// mixedPart is a multipart/mixed part.
func mixedPart(contentType string, content []byte) bodyPart {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", contentType)
	return bodyPart{header: h, content: content}
}

// multipartBody writes parts as a multipart body of mediaType; it returns
// the Content-Type (with the boundary) and the body.
func multipartBody(t testing.TB, mediaType string, parts ...bodyPart) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		w, err := mw.CreatePart(p.header)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(p.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mediaType + "; boundary=" + mw.Boundary(), buf.Bytes()
}

// submission is the form body of manifest m (JSON, or raw bytes) and
// documents.
func submission(t testing.TB, m any, docs ...[]byte) (string, []byte) {
	t.Helper()
	raw, ok := m.([]byte)
	if !ok {
		raw = mustJSON(t, m)
	}
	parts := []bodyPart{formPart(api.ManifestPart, "", api.MediaJSON, raw)}
	for i, d := range docs {
		parts = append(parts, formPart(api.DocumentPart, "doc"+string(rune('0'+i))+".pdf", "application/pdf", d))
	}
	return multipartBody(t, api.MediaMultipartForm, parts...)
}

func contentType(ct string) http.Header { return http.Header{"Content-Type": {ct}} }

// post submits a body as partner from.
func (n *exchangeNode) post(t testing.TB, from, ct string, body []byte, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	h := contentType(ct)
	for k, v := range hdr {
		h[k] = v
	}
	return n.do(t, from, "POST", "/v1/exchanges", h, bytes.NewReader(body))
}

// accepted submits m and docs as partner from and checks the answer:
// 201, the exchange's Location and evidence, a receipt whose record is
// the log's submission.accepted.
func (n *exchangeNode) accepted(t testing.TB, from string, m middleoffice.Manifest, docs ...[]byte) api.Submission {
	t.Helper()
	ct, body := submission(t, m, docs...)
	resp, data := n.post(t, from, ct, body, nil)
	return n.wantAccepted(t, resp, data)
}

func (n *exchangeNode) wantAccepted(t testing.TB, resp *http.Response, data []byte) api.Submission {
	t.Helper()
	var s api.Submission
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &s) != nil {
		t.Fatalf("submission: %s %s", resp.Status, data)
	}
	if s.Exchange == "" || s.Replayed || resp.Header.Get("Location") != "/v1/exchanges/"+s.Exchange || resp.Header.Get(api.EvidenceHeader) != s.EvidenceID {
		t.Fatalf("submission %+v, Location %q, %s %q", s, resp.Header.Get("Location"), api.EvidenceHeader, resp.Header.Get(api.EvidenceHeader))
	}
	if rec := n.record(t, s.EvidenceID); rec.Type != evidence.SubmissionAccepted || rec.Subject != s.Exchange {
		t.Fatalf("evidence %s: %s about %s", rec.ID, rec.Type, rec.Subject)
	}
	return s
}
