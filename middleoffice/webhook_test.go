package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/internal/cms"
	"pec/internal/interop"
	"pec/middleoffice"
	"pec/signing"
)

// clock is the service's time, which the tests move on.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// nodeTLS gives the env the node's webhook client: a TLS client
// certificate of the env's CA for a P-256 key on the SoftHSM2 token, the
// endpoints checked against the env's roots. It returns the certificate.
func nodeTLS(e *exchangeEnv) *x509.Certificate {
	t := e.t
	t.Helper()
	key := hsmKey(t)
	cert, err := e.ca.IssueClient(key.Public(), "pec node", "PEC test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.webhook = middleoffice.NewWebhookClient(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw, e.ca.Cert.Raw}, PrivateKey: key, Leaf: cert}},
		RootCAs:      e.roots(),
	})
	return cert
}

// endpoint is an HTTPS endpoint on 127.0.0.1 that requires a client
// certificate of the env's CA: a recipient's webhook or a sender's
// notification receiver. answer says what the n-th request (from 0) is
// answered; the requests are kept.
type endpoint struct {
	t      testing.TB
	srv    *httptest.Server
	url    string
	server *x509.Certificate
	answer func(n int, p *pushed) (status int, h http.Header, body []byte)

	mu       sync.Mutex
	requests []*pushed
}

// pushed is one request an endpoint received: a push (parsed as the
// contract says) or a notification.
type pushed struct {
	header       http.Header
	clientCert   *x509.Certificate
	length, read int64
	// A push.
	seal      []byte
	content   []byte // the sealed manifest's JSON
	manifest  middleoffice.SealedManifest
	envelopes [][]byte
	// A notification.
	notification middleoffice.Notification
	err          error // what the request did wrong
}

// newEndpoint starts an endpoint on addr ("": any port).
func newEndpoint(e *exchangeEnv, addr, path string, answer func(int, *pushed) (int, http.Header, []byte)) *endpoint {
	t := e.t
	t.Helper()
	ep := &endpoint{t: t, answer: answer}
	key := mustKey(t)
	var err error
	if ep.server, err = e.ca.IssueServer(key.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ep.srv = httptest.NewUnstartedServer(http.HandlerFunc(ep.serve))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ep.srv.Listener.Close()
		ep.srv.Listener = l
	}
	ep.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{ep.server.Raw, e.ca.Cert.Raw}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    e.roots(),
	}
	ep.srv.StartTLS()
	t.Cleanup(ep.srv.Close)
	ep.url = ep.srv.URL + path
	return ep
}

// freeAddr is an address on which nothing listens: connections to it are
// refused.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (ep *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	p := &pushed{header: r.Header.Clone(), length: r.ContentLength, clientCert: r.TLS.PeerCertificates[0]}
	body := &countingReader{r: r.Body}
	if r.Header.Get("Content-Type") == "application/json" {
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		p.err = dec.Decode(&p.notification)
	} else {
		p.err = readPush(r, body, p)
	}
	io.Copy(io.Discard, body)
	p.read = body.n
	ep.mu.Lock()
	n := len(ep.requests)
	ep.requests = append(ep.requests, p)
	ep.mu.Unlock()
	status, h, b := ep.answer(n, p)
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	w.Write(b)
}

// readPush reads a push as the contract of NewWebhookClient says.
func readPush(r *http.Request, body io.Reader, p *pushed) error {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["type"] != "application/pkcs7-mime" || params["start"] != "<seal@pec>" {
		return fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	if r.Method != http.MethodPost || r.Header.Get("Idempotency-Key") == "" || r.Header.Get("Idempotency-Key") != r.Header.Get("PEC-Exchange-ID") {
		return fmt.Errorf("%s with Idempotency-Key %q, PEC-Exchange-ID %q", r.Method, r.Header.Get("Idempotency-Key"), r.Header.Get("PEC-Exchange-ID"))
	}
	mr := multipart.NewReader(body, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return err
		}
		ct, ctParams, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if i == 0 {
			if part.Header.Get("Content-ID") != "<seal@pec>" || ct != "application/pkcs7-mime" || ctParams["smime-type"] != "signed-data" {
				return fmt.Errorf("first part: %v", part.Header)
			}
			p.seal = data
			continue
		}
		sum := sha256.Sum256(data)
		if part.Header.Get("PEC-Document-Index") != strconv.Itoa(i-1) || part.Header.Get("PEC-Envelope-SHA256") != hex.EncodeToString(sum[:]) ||
			ct != "application/pkcs7-mime" || ctParams["smime-type"] != "authEnveloped-data" || part.Header.Get("Content-ID") != fmt.Sprintf("<document-%d@pec>", i-1) {
			return fmt.Errorf("part %d: %v", i, part.Header)
		}
		p.envelopes = append(p.envelopes, data)
	}
	sd, err := cms.ParseSignedData(p.seal)
	if err != nil || !sd.Attached {
		return fmt.Errorf("the seal: %v", err)
	}
	p.content = sd.Content
	return json.Unmarshal(sd.Content, &p.manifest)
}

func (ep *endpoint) got() []*pushed {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return slices.Clone(ep.requests)
}

// status answers every request with status.
func status(code int) func(int, *pushed) (int, http.Header, []byte) {
	return func(int, *pushed) (int, http.Header, []byte) { return code, nil, nil }
}

// signedAck is the partner's signed acknowledgment of a pushed sealed
// manifest, made as a recipient's system makes it: CAdES by its key.
func signedAck(e *exchangeEnv, by *testPartner, content []byte) ([]byte, error) {
	s, err := signing.NewSigner(by.key, []*x509.Certificate{by.cert, e.ca.Cert}, signing.SignerOptions{})
	if err != nil {
		return nil, err
	}
	sig, err := s.Sign(context.Background(), content, false)
	if err != nil {
		return nil, err
	}
	return sig.DER, nil
}

// drain does every due job, and returns the errors of the failed ones.
func drain(t testing.TB, e *exchangeEnv) []error {
	t.Helper()
	var errs []error
	for range 100 {
		did, err := e.x.Work(t.Context())
		if !did {
			return errs
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	t.Fatal("the queue does not empty")
	return nil
}

func recordTypes(e *exchangeEnv, id string) []evidence.EventType {
	var out []evidence.EventType
	for _, r := range e.records(id) {
		out = append(out, r.Type)
	}
	return out
}

func certFP(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

func hasActor(r *evidence.Record, role string, c *x509.Certificate) bool {
	return slices.ContainsFunc(r.Actors, func(a evidence.Actor) bool { return a.Role == role && a.Fingerprint == certFP(c) })
}

// TestWebhookPushAndAck: b is on the webhook channel, a has a notify_url.
// The node pushes a's dossier to b over mutual TLS with its HSM key; b's
// endpoint checks the seal (openssl too) and decrypts the envelopes, and
// answers 200 with its signed acknowledgment: delivered, then
// acknowledged, each with evidence naming the endpoint and the signer; a
// is notified of both.
func TestWebhookPushAndAck(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	var hook, notify *endpoint
	var node *x509.Certificate
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		node = nodeTLS(e)
		hook = newEndpoint(e, "", "/pec/inbox", func(_ int, p *pushed) (int, http.Header, []byte) {
			if p.err != nil {
				return http.StatusBadRequest, nil, []byte(p.err.Error())
			}
			ack, err := signedAck(e, e.partners["b"], p.content)
			if err != nil {
				return http.StatusInternalServerError, nil, []byte(err.Error())
			}
			return http.StatusOK, http.Header{"Content-Type": {"application/pkcs7-mime; smime-type=signed-data"}}, ack
		})
		notify = newEndpoint(e, "", "/pec/notify", status(http.StatusNoContent))
		pcs[0].Channel.NotifyURL = notify.url
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: hook.url}
	})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	docs := []document{
		newDocument("demande.pdf", bytes.Repeat([]byte("%PDF-1.7 demande "), 5000)),
		newDocument("annexe.xml", []byte("<annexe/>")),
	}
	m := manifest("b", docs...)
	sub, err := e.x.Submit(ctx, a.principal, m, sources(docs...))
	if err != nil {
		t.Fatal(err)
	}
	if errs := drain(t, e); len(errs) > 0 {
		t.Fatalf("jobs failed: %v", errs)
	}

	pushes := hook.got()
	if len(pushes) != 1 {
		t.Fatalf("%d pushes, want 1", len(pushes))
	}
	p := pushes[0]
	if p.err != nil {
		t.Fatalf("the push: %v", p.err)
	}
	if p.clientCert == nil || certFP(p.clientCert) != certFP(node) {
		t.Error("the push is not authenticated by the node's certificate")
	}
	if p.length <= 0 || p.length != p.read {
		t.Errorf("Content-Length %d, body %d bytes", p.length, p.read)
	}
	if p.manifest.Exchange != sub.Exchange || p.manifest.Sender != "a" || p.manifest.SubmissionEvidence != sub.EvidenceID || len(p.envelopes) != 2 {
		t.Fatalf("pushed sealed manifest %+v, %d envelopes", p.manifest, len(p.envelopes))
	}
	sealFile := e.writeFile("pushed-seal.p7m", p.seal)
	if got := interop.OpenSSL(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", sealFile, "-CAfile", e.rootPEM); !bytes.Equal(got, p.content) {
		t.Error("openssl gives back another sealed manifest")
	}
	for i, env := range p.envelopes {
		var plain bytes.Buffer
		if _, err := cms.DecryptTo(&plain, bytes.NewReader(env), int64(len(env)), cms.RecipientKey{Cert: b.encCert, Key: b.encKey}, nil); err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if sum := sha256.Sum256(plain.Bytes()); hex.EncodeToString(sum[:]) != p.manifest.Manifest.Documents[i].SHA256 || !bytes.Equal(plain.Bytes(), docs[i].content) {
			t.Errorf("envelope %d decrypts to other bytes", i)
		}
	}

	st, err := e.x.Status(ctx, a.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	want := []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered, evidence.Acknowledged}
	if got := eventTypes(st); !slices.Equal(got, want) || st.State != middleoffice.StateAcknowledged {
		t.Fatalf("a's status: %v, %s; want %v, acknowledged", got, st.State, want)
	}
	if got := recordTypes(e, sub.Exchange); !slices.Equal(got, want) {
		t.Errorf("the log's records: %v, want %v", got, want)
	}
	delivered, acked := e.record(st.Events[1].EvidenceID), e.record(st.Events[2].EvidenceID)
	if recAttr(delivered, "channel") != "webhook" || recAttr(delivered, "status") != "200" || !hasActor(delivered, "endpoint", hook.server) || digest(delivered, "seal") != st.Seal.SHA256 {
		t.Errorf("delivery.delivered: %+v", delivered)
	}
	pushedSum := sha256.Sum256(p.seal)
	if st.Seal.SHA256 != hex.EncodeToString(pushedSum[:]) {
		t.Error("the stored seal is not the one pushed")
	}
	if recAttr(acked, "outcome") != "acknowledged" || recAttr(acked, "channel") != "webhook" || !hasActor(acked, "recipient", b.cert) || st.Acknowledgment == nil || digest(acked, "acknowledgment") != st.Acknowledgment.SHA256 {
		t.Errorf("delivery.acknowledged: %+v", acked)
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 0 {
		t.Errorf("acknowledged, in b's inbox: %d", len(list))
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs left: %+v", jobs)
	}

	// a was told of the delivery and the acknowledgment, over mutual TLS.
	var told []string
	for _, n := range notify.got() {
		if n.err != nil || certFP(n.clientCert) != certFP(node) || n.header.Get("Idempotency-Key") != n.notification.EvidenceID || n.header.Get("PEC-Event") != string(n.notification.Event) {
			t.Errorf("notification %+v", n)
		}
		if n.notification.Exchange != sub.Exchange || n.notification.Recipient != "b" || n.notification.Reference != m.Reference {
			t.Errorf("notification of %+v", n.notification)
		}
		told = append(told, string(n.notification.Event)+"/"+string(n.notification.State)+"/"+n.notification.EvidenceID)
	}
	slices.Sort(told)
	wantTold := []string{
		string(evidence.Acknowledged) + "/acknowledged/" + st.Events[2].EvidenceID,
		string(evidence.Delivered) + "/delivered/" + st.Events[1].EvidenceID,
	}
	if !slices.Equal(told, wantTold) {
		t.Errorf("a was told %v, want %v", told, wantTold)
	}
}

// TestWebhookDownThenUp: b's endpoint refuses connections, then answers
// 503 with Retry-After, then 200: each failure is evidence, the queue
// waits as asked, and the exchange is delivered once, when the endpoint
// is back; b then acknowledges through the pull API.
func TestWebhookDownThenUp(t *testing.T) {
	clk := &clock{}
	var addr string
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{RetryDelay: time.Second, MaxRetryDelay: time.Minute, DeadLetterAfter: time.Hour}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		e.now = clk.now
		addr = freeAddr(t)
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: "https://" + addr + "/pec/inbox"}
	})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	doc := newDocument("a.pdf", []byte("%PDF-1.7 down then up"))
	sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}

	// Down: connection refused.
	if errs := drain(t, e); len(errs) != 1 {
		t.Fatalf("while down: %v, want one failed job", errs)
	}
	st, _ := e.x.Status(ctx, a.principal, sub.Exchange)
	if st.State != middleoffice.StateAccepted || !slices.Equal(eventTypes(st), []evidence.EventType{evidence.SubmissionAccepted, evidence.DeliveryAttemptFailed}) {
		t.Fatalf("after a refused connection: %s, %v", st.State, eventTypes(st))
	}
	r := e.record(st.Events[1].EvidenceID)
	if recAttr(r, "attempt") != "1" || recAttr(r, "status") != "" || !strings.Contains(recAttr(r, "reason"), "connection refused") || recAttr(r, "channel") != "webhook" || recAttr(r, "recipient") != "b" {
		t.Errorf("the first attempt's record: %+v", r.Attributes)
	}
	if _, err := e.x.Fetch(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("b fetches an exchange not delivered: %v", err)
	}

	// Up, but overloaded: 503, Retry-After 120 s (more than the backoff;
	// capped at max_retry_delay, 1 minute), then 200.
	hook := newEndpoint(e, addr, "/pec/inbox", func(n int, p *pushed) (int, http.Header, []byte) {
		if n == 0 {
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"120"}}, []byte("maintenance\n")
		}
		return http.StatusAccepted, nil, nil
	})
	clk.advance(2 * time.Second)
	if errs := drain(t, e); len(errs) != 1 {
		t.Fatalf("while overloaded: %v, want one failed job", errs)
	}
	st, _ = e.x.Status(ctx, a.principal, sub.Exchange)
	r = e.record(st.Events[2].EvidenceID)
	if r.Type != evidence.DeliveryAttemptFailed || recAttr(r, "attempt") != "2" || recAttr(r, "status") != "503" || !strings.Contains(recAttr(r, "reason"), "maintenance") {
		t.Errorf("the second attempt's record: %s %+v", r.Type, r.Attributes)
	}
	jobs, _ := e.store.Jobs(ctx)
	if len(jobs) != 1 || jobs[0].Attempts != 2 || jobs[0].NotBefore.Sub(clk.now()) < 59*time.Second {
		t.Fatalf("the job after a 503 with Retry-After: %+v", jobs)
	}
	clk.advance(30 * time.Second)
	if did, err := e.x.Work(ctx); did {
		t.Fatalf("retried before Retry-After: %v", err)
	}
	clk.advance(31 * time.Second)
	if errs := drain(t, e); len(errs) != 0 {
		t.Fatalf("once up: %v", errs)
	}

	st, _ = e.x.Status(ctx, a.principal, sub.Exchange)
	want := []evidence.EventType{evidence.SubmissionAccepted, evidence.DeliveryAttemptFailed, evidence.DeliveryAttemptFailed, evidence.Delivered}
	if got := eventTypes(st); !slices.Equal(got, want) || st.State != middleoffice.StateDelivered {
		t.Fatalf("once up: %v, %s; want %v, delivered", got, st.State, want)
	}
	if got := recordTypes(e, sub.Exchange); !slices.Equal(got, want) {
		t.Errorf("the log's records: %v, want %v", got, want)
	}
	delivered := e.record(st.Events[3].EvidenceID)
	if recAttr(delivered, "status") != "202" || recAttr(delivered, "failed_attempts") != "2" || !slices.Contains(delivered.Previous, st.Events[2].EvidenceID) {
		t.Errorf("delivery.delivered: %+v, previous %v", delivered.Attributes, delivered.Previous)
	}
	if n := len(hook.got()); n != 2 {
		t.Errorf("%d pushes reached the endpoint, want 2 (503, then 202)", n)
	}
	// Retries pushed one seal: the one the evidence names.
	for _, p := range hook.got() {
		if sum := sha256.Sum256(p.seal); hex.EncodeToString(sum[:]) != st.Seal.SHA256 {
			t.Error("a retry pushed another seal")
		}
	}

	// Delivered without an acknowledgment: b answers through the pull API.
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 1 {
		t.Fatalf("b's inbox: %d, want the pushed exchange", len(list))
	}
	d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	ack, err := signedAck(e, b, mustContent(t, d.Seal))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Signed: ack}); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs left after the acknowledgment: %+v", jobs)
	}
}

func mustContent(t testing.TB, seal []byte) []byte {
	t.Helper()
	sd, err := cms.ParseSignedData(seal)
	if err != nil {
		t.Fatal(err)
	}
	return sd.Content
}

// TestWebhookDeadLetter: an endpoint that answers 503 for longer than
// dead_letter_after: every attempt is evidence, then the exchange is dead
// letter (delivery.failed), which its sender sees and is told of, and its
// recipient never sees; an operator gives it back to the queue once the
// endpoint is mended, and it is delivered.
func TestWebhookDeadLetter(t *testing.T) {
	clk := &clock{}
	var hook, notify *endpoint
	var mended atomic.Bool
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{RetryDelay: time.Minute, MaxRetryDelay: 10 * time.Minute, DeadLetterAfter: time.Hour}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		e.now = clk.now
		hook = newEndpoint(e, "", "/pec/inbox", func(int, *pushed) (int, http.Header, []byte) {
			if mended.Load() {
				return http.StatusOK, nil, nil
			}
			return http.StatusServiceUnavailable, nil, nil
		})
		pcs[2].Roles = []middleoffice.Role{middleoffice.RolePartner, middleoffice.RoleAdmin}
		notify = newEndpoint(e, "", "/pec/notify", status(http.StatusOK))
		pcs[0].Channel.NotifyURL = notify.url
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: hook.url}
	})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	doc := newDocument("a.pdf", []byte("%PDF-1.7 never delivered"))
	sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	var st *middleoffice.Exchange
	for range 40 {
		drain(t, e)
		if st, _ = e.x.Status(ctx, a.principal, sub.Exchange); st.State != middleoffice.StateAccepted {
			break
		}
		clk.advance(11 * time.Minute)
	}
	if st.State != middleoffice.StateDeadLetter {
		t.Fatalf("state %s, want dead-letter", st.State)
	}
	types := eventTypes(st)
	n := len(types) - 2
	if n < 4 || types[0] != evidence.SubmissionAccepted || types[len(types)-1] != evidence.DeliveryFailed ||
		slices.ContainsFunc(types[1:len(types)-1], func(t evidence.EventType) bool { return t != evidence.DeliveryAttemptFailed }) {
		t.Fatalf("events %v: want accepted, failed attempts, delivery.failed", types)
	}
	if got := recordTypes(e, sub.Exchange); !slices.Equal(got, types) {
		t.Errorf("the log's records %v, want the events' %v", got, types)
	}
	if len(hook.got()) != n+1 {
		t.Errorf("%d pushes, want %d", len(hook.got()), n+1)
	}
	failed := e.record(st.Events[len(st.Events)-1].EvidenceID)
	if recAttr(failed, "attempt") != strconv.Itoa(n+1) || recAttr(failed, "status") != "503" || recAttr(failed, "failing_since") == "" || !slices.Contains(failed.Previous, st.Events[len(st.Events)-2].EvidenceID) {
		t.Errorf("delivery.failed: %+v, previous %v", failed.Attributes, failed.Previous)
	}
	first := st.Events[1].Time
	if last := st.Events[len(st.Events)-1].Time; last.Sub(first) < time.Hour || last.Sub(first) > 90*time.Minute {
		t.Errorf("dead letter %v after the first failure, want about an hour", last.Sub(first))
	}

	// The recipient never sees it; nothing is left to do but what the
	// operators decide.
	if _, err := e.x.Status(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("b reads a dead letter's status: %v", err)
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 0 {
		t.Errorf("a dead letter in b's inbox")
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs left: %+v", jobs)
	}
	clk.advance(time.Hour)
	drain(t, e)
	if len(hook.got()) != n+1 {
		t.Error("a dead letter is pushed again")
	}
	got := notify.got()
	if len(got) != 1 || got[0].notification.Event != evidence.DeliveryFailed || got[0].notification.State != middleoffice.StateDeadLetter ||
		got[0].notification.EvidenceID != failed.ID || !strings.Contains(got[0].notification.Detail, "503") {
		t.Errorf("a was told %+v, want the dead letter", got)
	}
	redeliverAfterDeadLetter(t, e, clk, sub.Exchange, &mended)
}

// TestWebhookAnswers: what each answer of b's endpoint makes of a push.
func TestWebhookAnswers(t *testing.T) {
	var hook *endpoint
	type answerFunc func(e *exchangeEnv, p *pushed) (int, http.Header, []byte)
	var current atomic.Value // the answerFunc of the case
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		hook = newEndpoint(e, "", "/pec/inbox", func(_ int, p *pushed) (int, http.Header, []byte) {
			return current.Load().(answerFunc)(e, p)
		})
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: hook.url}
	})
	cmsType := http.Header{"Content-Type": {"application/pkcs7-mime"}}
	for _, tc := range []struct {
		name   string
		answer answerFunc
		state  middleoffice.State
		detail string // in the last event's detail
	}{
		{"200, a text body", func(*exchangeEnv, *pushed) (int, http.Header, []byte) {
			return http.StatusOK, http.Header{"Content-Type": {"text/plain"}}, []byte("merci")
		}, middleoffice.StateDelivered, ""},
		{"204", func(*exchangeEnv, *pushed) (int, http.Header, []byte) { return http.StatusNoContent, nil, nil }, middleoffice.StateDelivered, ""},
		{"200, an acknowledgment signed by c", func(e *exchangeEnv, p *pushed) (int, http.Header, []byte) {
			ack, _ := signedAck(e, e.partners["c"], p.content)
			return http.StatusOK, cmsType, ack
		}, middleoffice.StateDelivered, "not taken: the signed acknowledgment is signed by"},
		{"200, an acknowledgment of another content", func(e *exchangeEnv, p *pushed) (int, http.Header, []byte) {
			ack, _ := signedAck(e, e.partners["b"], []byte(`{"exchange":"other"}`))
			return http.StatusOK, cmsType, ack
		}, middleoffice.StateDelivered, "does not sign the sealed manifest"},
		{"200, not CMS", func(*exchangeEnv, *pushed) (int, http.Header, []byte) {
			return http.StatusOK, cmsType, []byte("garbage")
		}, middleoffice.StateDelivered, "not a CMS SignedData"},
		{"200, a detached acknowledgment by b", func(e *exchangeEnv, p *pushed) (int, http.Header, []byte) {
			s, _ := signing.NewSigner(e.partners["b"].key, []*x509.Certificate{e.partners["b"].cert}, signing.SignerOptions{})
			sig, _ := s.Sign(context.Background(), p.content, true)
			return http.StatusOK, http.Header{"Content-Type": {"application/pkcs7-signature"}}, sig.DER
		}, middleoffice.StateAcknowledged, ""},
		{"302", func(*exchangeEnv, *pushed) (int, http.Header, []byte) {
			return http.StatusFound, http.Header{"Location": {"https://elsewhere.example/"}}, nil
		}, middleoffice.StateAccepted, "HTTP 302 Found (redirects are not followed)"},
		{"400 with a body", func(*exchangeEnv, *pushed) (int, http.Header, []byte) {
			return http.StatusBadRequest, nil, []byte("bad\x00 multipart\r\n\r\nboundary")
		}, middleoffice.StateAccepted, "HTTP 400 Bad Request: bad multipart boundary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			current.Store(tc.answer)
			ctx := t.Context()
			doc := newDocument("a.pdf", []byte("%PDF-1.7 "+tc.name))
			m := manifest("b", doc)
			m.Reference = tc.name
			sub, err := e.x.Submit(ctx, e.partners["a"].principal, m, sources(doc))
			if err != nil {
				t.Fatal(err)
			}
			drain(t, e)
			st, err := e.x.Status(ctx, e.partners["a"].principal, sub.Exchange)
			if err != nil {
				t.Fatal(err)
			}
			last := st.Events[len(st.Events)-1]
			if st.State != tc.state || !strings.Contains(last.Detail, tc.detail) {
				t.Errorf("%s, last event %s %q; want %s, %q", st.State, last.Type, last.Detail, tc.state, tc.detail)
			}
			if tc.state == middleoffice.StateDelivered && tc.detail != "" {
				if r := e.record(last.EvidenceID); r.Type != evidence.Delivered || !strings.Contains(recAttr(r, "note"), tc.detail) {
					t.Errorf("the delivery's record does not note the refused acknowledgment: %+v", r.Attributes)
				}
			}
		})
	}
}

// TestMailWithoutChannel: a recipient on mail, on a node without the mail
// channel, finds its exchanges in the pull inbox, and the delivery says so.
func TestMailWithoutChannel(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelMail}
		pcs[1].Mail = []string{"greffe@b.example"}
	})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7 mail"))
	sub, err := e.x.Submit(ctx, e.partners["a"].principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	if errs := drain(t, e); len(errs) != 0 {
		t.Fatal(errs)
	}
	st, _ := e.x.Status(ctx, e.partners["b"].principal, sub.Exchange)
	if st.State != middleoffice.StateDelivered || !strings.Contains(st.Events[1].Detail, "mail channel is not available") {
		t.Errorf("status %s, event %+v", st.State, st.Events[1])
	}
	if r := e.record(st.Events[1].EvidenceID); recAttr(r, "channel") != "pull" || recAttr(r, "note") == "" {
		t.Errorf("delivery.delivered: %+v", r.Attributes)
	}
	if list, _ := e.x.Inbox(ctx, e.partners["b"].principal, "", 0); len(list) != 1 {
		t.Errorf("b's inbox: %d", len(list))
	}
}

// TestWebhookWithoutClient: a node with no webhook client pushes nothing:
// every attempt fails, as evidence that says why.
func TestWebhookWithoutClient(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: "https://b.example/pec"}
	})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7"))
	sub, err := e.x.Submit(ctx, e.partners["a"].principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	if errs := drain(t, e); len(errs) != 1 {
		t.Fatalf("%v, want one failure", errs)
	}
	st, _ := e.x.Status(ctx, e.partners["a"].principal, sub.Exchange)
	if len(st.Events) != 2 || !strings.Contains(st.Events[1].Detail, "no webhook client") {
		t.Errorf("events %+v", st.Events)
	}
}

// TestWebhookCrashAfterPush: the node stops after b's endpoint took the
// push, between the delivery's record and its commit: the restart commits
// the delivery, once, and pushes nothing again.
func TestWebhookCrashAfterPush(t *testing.T) {
	var hook *endpoint
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{PollInterval: 20 * time.Millisecond}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		hook = newEndpoint(e, "", "/pec/inbox", status(http.StatusOK))
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: hook.url}
	})
	fs := &faultStore{failCommit: func(st *middleoffice.Step) bool { return st.Event.Type == evidence.Delivered }}
	e.wrap = func(s middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
		fs.ExchangeStore = s
		return fs, ev
	}
	e.restart()
	ctx := t.Context()
	a := e.partners["a"]
	doc := newDocument("a.pdf", []byte("%PDF-1.7 crash"))
	sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	if did, err := e.x.Work(ctx); !did || err == nil || !fs.fired.Load() {
		t.Fatalf("Work = %v, %v; want the injected crash", did, err)
	}
	e.restart()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.x.Run(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := e.x.Status(ctx, a.principal, sub.Exchange)
		if err == nil && st.State == middleoffice.StateDelivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the restart: %+v, %v", st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a few polls: nothing more to push
	stop()
	<-done
	if n := len(hook.got()); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}
	if got := recordTypes(e, sub.Exchange); !slices.Equal(got, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered}) {
		t.Errorf("records %v", got)
	}
}

// redeliverAfterDeadLetter is the end of TestWebhookDeadLetter: the
// operator's part.
func redeliverAfterDeadLetter(t *testing.T, e *exchangeEnv, clk *clock, id string, mended *atomic.Bool) {
	ctx := t.Context()
	a, b, c := e.partners["a"], e.partners["b"], e.partners["c"]
	if _, err := e.x.Redeliver(ctx, b.principal, id); err == nil {
		t.Fatal("a partner without the admin role redelivers")
	} else if _, ok := errors.AsType[*middleoffice.ForbiddenError](err); !ok {
		t.Errorf("Redeliver by b: %v, want a *ForbiddenError", err)
	}
	ev, err := e.x.Redeliver(ctx, c.principal, id)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.record(ev.EvidenceID); r.Type != evidence.AdminAction || recAttr(r, "action") != "redeliver" || r.Actors[0].Fingerprint != c.principal.Fingerprint {
		t.Errorf("the redelivery's record: %+v", r)
	}
	if _, err := e.x.Redeliver(ctx, c.principal, id); !errors.Is(err, middleoffice.ErrStateChanged) {
		t.Errorf("redelivering what is no dead letter: %v", err)
	}
	// Still failing: dead_letter_after counts from the next failure, so
	// one more failure leaves it in the queue.
	drain(t, e)
	if st, _ := e.x.Status(ctx, a.principal, id); st.State != middleoffice.StateAccepted {
		t.Fatalf("one failure after the redelivery: %s, want accepted", st.State)
	}
	mended.Store(true)
	clk.advance(10 * time.Minute)
	drain(t, e)
	st, _ := e.x.Status(ctx, a.principal, id)
	if st.State != middleoffice.StateDelivered {
		t.Fatalf("after the redelivery: %s, %v", st.State, eventTypes(st))
	}
	if d := e.record(st.Events[len(st.Events)-1].EvidenceID); recAttr(d, "failed_attempts") != "1" {
		t.Errorf("the delivery counts %s failed attempts since the redelivery, want 1", recAttr(d, "failed_attempts"))
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 1 {
		t.Errorf("b's inbox: %d", len(list))
	}
}
