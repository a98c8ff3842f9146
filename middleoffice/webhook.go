package middleoffice

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"pec/evidence"
)

// PushChannel pushes sealed exchanges to their recipients. The webhook
// channel is the node's own (over ExchangeOptions.Webhook); the mail
// channel is one that the secure-mail capability implements
// (ExchangeOptions.Mail).
type PushChannel interface {
	// Push delivers d — the seal, with the sealed manifest, and the
	// documents' envelopes — to the partner to, and returns its answer.
	// An error is a failed attempt, which the queue retries: a
	// *PushError when the recipient answered, with its status, and may
	// ask for a delay. Push reads d's payloads only until it returns. It
	// is safe for concurrent use.
	Push(ctx context.Context, to Partner, d *Delivery) (*PushAnswer, error)
}

// PushAnswer is a recipient's answer to a push that delivered.
type PushAnswer struct {
	// Status is the channel's status: the HTTP status of a webhook.
	Status int
	// Acknowledgment is the recipient's signed acknowledgment, when the
	// answer holds one: a CMS SignedData over the sealed manifest, as
	// Exchanges.Ack takes it.
	Acknowledgment []byte
	// Note says why an acknowledgment in the answer was not taken.
	Note string
	// Endpoint is the certificate the recipient's endpoint authenticated
	// with (a webhook's TLS server certificate); nil: none.
	Endpoint *x509.Certificate
}

// PushError is a push that did not deliver. Reason is the node's own text
// (the recipient's words, truncated and cleaned, at most).
type PushError struct {
	Status     int           // the recipient's status (HTTP); 0: no answer
	Reason     string        // "HTTP 503 Service Unavailable", "connection refused"
	RetryAfter time.Duration // asked for by the recipient (Retry-After); 0: none
}

func (e *PushError) Error() string { return "middleoffice: push: " + e.Reason }

// maxAnswerReason bounds what a failed answer's reason quotes of the
// recipient's body.
const maxAnswerReason = 200

// NewWebhookClient is the HTTP client of the webhook channel and of the
// notifications to senders, for ExchangeOptions.Webhook: tlsConfig holds
// the node's certificate and key (an HSM key: a crypto.Signer in
// tls.Certificate.PrivateKey) and the roots that endpoints' certificates
// chain to (RootCAs; nil: the system's). Redirects are not followed (a
// push goes where the directory says, or fails); TLS 1.2 at least.
//
// The webhook channel is the contract below, which a recipient on
// channel {type: webhook, url: https://...} implements; the
// notifications to senders are [Notification]'s.
//
// # The push
//
// The platform POSTs each exchange to the url, over TLS (1.2 at least)
// with the node's client certificate (mutual TLS; the recipient accepts
// the platform's certificate, and the platform checks the endpoint's
// server certificate against its configured roots). The body is
// multipart/related (RFC 2387), of a known Content-Length:
//
//	POST /pec/inbox HTTP/1.1
//	Content-Type: multipart/related; boundary="…"; type="application/pkcs7-mime"; start="<seal@pec>"
//	Idempotency-Key: <exchange id>
//	PEC-Exchange-ID: <exchange id>
//	PEC-Sender: <the sender's partner id>
//
//	--…
//	Content-Type: application/pkcs7-mime; smime-type=signed-data; name="seal.p7m"
//	Content-ID: <seal@pec>
//	Content-Disposition: attachment; filename="seal.p7m"
//	Content-Transfer-Encoding: binary
//
//	<the seal: CMS SignedData (DER), the platform's CAdES signature with
//	 the sealed manifest's JSON attached: SealedManifest, which names the
//	 sender, the submission evidence, each document's name, media type,
//	 size and SHA-256>
//	--…
//	Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name="document-0.p7m"
//	Content-ID: <document-0@pec>
//	Content-Disposition: attachment; filename="document-0.p7m"
//	Content-Transfer-Encoding: binary
//	PEC-Document-Index: 0
//	PEC-Envelope-SHA256: <hex>
//
//	<document 0 of the sealed manifest: CMS AuthEnvelopedData (DER,
//	 AES-256-GCM) for the recipient's encryption certificate>
//	--…
//	(one part per document, in the manifest's order)
//	--…--
//
// `openssl cms -verify` checks the seal and gives back the sealed
// manifest; `openssl cms -decrypt` opens each envelope, whose plaintext's
// SHA-256 is the manifest's. The same exchange may come more than once
// (at-least-once delivery: an answer lost, a node restarted): the
// recipient keeps one by its exchange id.
//
// # The answer
//
//   - 2xx with an empty body (or one of another type): delivered
//     (delivery.delivered, naming the endpoint's certificate and the
//     status). The recipient acknowledges or refuses later through the
//     pull API (POST /v1/exchanges/{id}/ack), where the exchange is too.
//   - 2xx with a body of type application/pkcs7-mime,
//     application/pkcs7-signature or application/cms, at most 1 MiB: the
//     recipient's signed acknowledgment, the same CMS SignedData over the
//     sealed manifest (attached or detached) that the pull API's ack
//     takes: delivered, then acknowledged (delivery.acknowledged). One
//     the platform refuses leaves the exchange delivered, the refusal
//     noted in the delivery's event.
//   - anything else — 3xx (not followed), 4xx, 5xx, no answer within
//     exchange.push_timeout, a TLS failure — is a failed attempt
//     (delivery.attempt_failed, with the status and the reason), tried
//     again with exponential backoff and jitter (exchange.retry_delay,
//     max_retry_delay; longer when a 429 or 503 says Retry-After), until
//     exchange.dead_letter_after after the first failure: then the
//     exchange is dead letter (delivery.failed) and its sender told.
func NewWebhookClient(tlsConfig *tls.Config) *http.Client {
	cfg := tlsConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSClientConfig:       cfg,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// webhookChannel is the PushChannel of recipients on webhook.
type webhookChannel struct{ client *http.Client }

var errNoWebhookClient = &PushError{Reason: "this node has no webhook client (ExchangeOptions.Webhook): it pushes nothing"}

// Push implements PushChannel.
func (w *webhookChannel) Push(ctx context.Context, to Partner, d *Delivery) (*PushAnswer, error) {
	if w.client == nil {
		return nil, errNoWebhookClient
	}
	req, err := pushRequest(ctx, to.Channel.URL, d)
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, &PushError{Reason: transportReason(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAcknowledgment+1))
	if err != nil && resp.StatusCode/100 != 2 {
		body = nil // a failure either way: its status says enough
	} else if err != nil {
		return nil, &PushError{Status: resp.StatusCode, Reason: "the answer's body could not be read: " + transportReason(err)}
	}
	ans, err := parseAnswer(resp.StatusCode, resp.Header, body, time.Now())
	if err != nil {
		return nil, err
	}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		ans.Endpoint = resp.TLS.PeerCertificates[0]
	}
	return ans, nil
}

// transportReason is a transport error's text without the URL (the
// directory holds it).
func transportReason(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	return truncate(err.Error(), maxReason)
}

// ackTypes are the media types of an answer that holds a signed
// acknowledgment.
var ackTypes = []string{"application/pkcs7-mime", "application/pkcs7-signature", "application/cms"}

// parseAnswer reads a webhook's answer: a *PushAnswer for a 2xx, else a
// *PushError; never another error. The body is at most
// maxAcknowledgment+1 bytes (more is refused as too large).
func parseAnswer(status int, h http.Header, body []byte, now time.Time) (*PushAnswer, error) {
	if status < 200 || status > 299 {
		reason := "HTTP " + strconv.Itoa(status)
		if t := http.StatusText(status); t != "" {
			reason += " " + t
		}
		if status >= 300 && status < 400 {
			reason += " (redirects are not followed)"
		}
		if q := quote(body, maxAnswerReason); q != "" {
			reason += ": " + q
		}
		return nil, &PushError{Status: status, Reason: reason, RetryAfter: retryAfter(h.Get("Retry-After"), now)}
	}
	ans := &PushAnswer{Status: status}
	if len(body) == 0 {
		return ans, nil
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || !containsFold(ackTypes, mt) {
		return ans, nil // a body of another kind says nothing to the platform
	}
	if len(body) > maxAcknowledgment {
		ans.Note = fmt.Sprintf("the acknowledgment in the answer is larger than %d bytes", maxAcknowledgment)
		return ans, nil
	}
	ans.Acknowledgment = body
	return ans, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// retryAfter reads a Retry-After header (RFC 9110 section 10.2.3):
// seconds or an HTTP date; 0 when absent, malformed or past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// quote is the start of an outside body as one line of printable text.
func quote(b []byte, n int) string {
	var sb strings.Builder
	for _, r := range string(b[:min(len(b), n)]) {
		switch {
		case r == unicode.ReplacementChar:
		case unicode.IsPrint(r):
			sb.WriteRune(r)
		case unicode.IsSpace(r):
			sb.WriteByte(' ')
		}
	}
	s := strings.Join(strings.Fields(sb.String()), " ")
	if len(b) > n && s != "" {
		s += "…"
	}
	return s
}

// pushRequest is the POST of d to url, as the contract above says; its
// body streams from the payloads (ReadAt, so that GetBody can start it
// again), of a known length.
func pushRequest(ctx context.Context, endpoint string, d *Delivery) (*http.Request, error) {
	var b [24]byte
	rand.Read(b[:])
	boundary := hex.EncodeToString(b[:])
	// The parts' headers and the closing delimiter, written by
	// multipart.Writer between the bodies.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, err
	}
	type piece struct {
		head []byte
		body io.ReaderAt
		size int64
	}
	var pieces []piece
	part := func(h textproto.MIMEHeader, body io.ReaderAt, size int64) error {
		if _, err := mw.CreatePart(h); err != nil {
			return err
		}
		pieces = append(pieces, piece{head: bytes.Clone(buf.Bytes()), body: body, size: size})
		buf.Reset()
		return nil
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", `application/pkcs7-mime; smime-type=signed-data; name="seal.p7m"`)
	h.Set("Content-ID", "<seal@pec>")
	h.Set("Content-Disposition", `attachment; filename="seal.p7m"`)
	h.Set("Content-Transfer-Encoding", "binary")
	if err := part(h, bytes.NewReader(d.Seal), int64(len(d.Seal))); err != nil {
		return nil, err
	}
	for i, doc := range d.Documents {
		name := "document-" + strconv.Itoa(i) + ".p7m"
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", `application/pkcs7-mime; smime-type=authEnveloped-data; name="`+name+`"`)
		h.Set("Content-ID", "<document-"+strconv.Itoa(i)+"@pec>")
		h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
		h.Set("Content-Transfer-Encoding", "binary")
		h.Set("PEC-Document-Index", strconv.Itoa(i))
		h.Set("PEC-Envelope-SHA256", doc.EnvelopeSHA256)
		if err := part(h, doc.Envelope, doc.Envelope.Size()); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	closing := bytes.Clone(buf.Bytes())
	length := int64(len(closing))
	for _, p := range pieces {
		length += int64(len(p.head)) + p.size
	}
	body := func() io.ReadCloser {
		rs := make([]io.Reader, 0, 2*len(pieces)+1)
		for _, p := range pieces {
			rs = append(rs, bytes.NewReader(p.head), io.NewSectionReader(p.body, 0, p.size))
		}
		return io.NopCloser(io.MultiReader(append(rs, bytes.NewReader(closing))...))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body())
	if err != nil {
		return nil, &PushError{Reason: "the webhook's url: " + err.Error()}
	}
	req.ContentLength = length
	req.GetBody = func() (io.ReadCloser, error) { return body(), nil }
	req.Header.Set("Content-Type", mime.FormatMediaType("multipart/related", map[string]string{
		"boundary": boundary, "type": "application/pkcs7-mime", "start": "<seal@pec>",
	}))
	req.Header.Set("Idempotency-Key", d.Exchange.ID)
	req.Header.Set("PEC-Exchange-ID", d.Exchange.ID)
	req.Header.Set("PEC-Sender", d.Exchange.Sender)
	return req, nil
}

// push delivers ex through a channel that pushes: the seal and the
// envelopes handed to ch, its answer recorded. A failed attempt is
// delivery.attempt_failed, and its *PushError returned for the queue to
// retry; the attempt that fails DeadLetterAfter after the first failure
// is delivery.failed instead, the exchange dead letter.
func (x *Exchanges) push(ctx context.Context, ex *Exchange, job *Job, to Partner, ch PushChannel, channel string, seal, content []byte) error {
	var sm SealedManifest
	if err := json.Unmarshal(content, &sm); err != nil {
		return err
	}
	d := &Delivery{Exchange: forRecipient(ex), Seal: seal, Manifest: sm}
	defer d.Close()
	for i, env := range ex.Envelopes {
		p, err := x.store.OpenPayload(ctx, ex.ID, env.Name)
		if err != nil {
			return err
		}
		d.Documents = append(d.Documents, DeliveredDocument{Document: ex.Manifest.Documents[i], Envelope: p, EnvelopeSHA256: env.SHA256})
	}
	pctx, cancel := context.WithTimeout(ctx, x.cfg.PushTimeout)
	answer, err := ch.Push(pctx, to, d)
	cancel()
	if err != nil {
		pe, ok := errors.AsType[*PushError](err)
		if !ok {
			pe = &PushError{Reason: truncate(err.Error(), maxReason)}
		}
		if ctx.Err() != nil {
			return ctx.Err() // the node stops: not the recipient's failure
		}
		return x.pushFailed(ctx, ex, job, channel, seal, pe)
	}
	note := answer.Note
	var signer *evidence.Actor
	if len(answer.Acknowledgment) > 0 {
		a, err := x.checkAck(ctx, recipientPrincipal(to), answer.Acknowledgment, content)
		if err != nil {
			note = "the acknowledgment in the answer was not taken: " + err.Error()
			if ae, ok := errors.AsType[*AckError](err); ok {
				note = "the acknowledgment in the answer was not taken: " + ae.Reason
			}
			x.log.WarnContext(ctx, "exchange: the acknowledgment in a webhook's answer was not taken", "exchange_id", ex.ID, "partner", ex.Recipient, "err", err)
		} else {
			if a == nil { // no AckVerifier: the signature is not checked, nor its signer named
				ra := recipientActor(ex)
				a = &ra
			}
			signer = a
		}
	}
	if err := x.delivered(ctx, ex, job, channel, seal, content, answer, note); err != nil {
		return err
	}
	if signer == nil {
		return nil
	}
	// A crash here loses the answer's acknowledgment, not the delivery:
	// the recipient acknowledges again through the pull API.
	cur, err := x.store.Exchange(ctx, ex.ID)
	if err != nil {
		return nil
	}
	if _, err := x.acknowledge(ctx, cur, *signer, ex.Recipient, Acknowledgment{Signed: answer.Acknowledgment}, content, channel); err != nil && !errors.Is(err, ErrAlreadyAcknowledged) {
		x.log.ErrorContext(ctx, "exchange: record the acknowledgment of a webhook's answer", "exchange_id", ex.ID, "err", err)
	}
	return nil
}

// recipientPrincipal is the recipient of a push as the checks of its
// signed acknowledgment see it: its partner entry, whose certificate
// rules name the certificates that may sign for it.
func recipientPrincipal(p Partner) *Principal {
	p = p.clone()
	return &Principal{Partner: &p}
}

// attempts counts the failed attempts of ex since it was last accepted
// for delivery (submitted, or redelivered from the dead letters), and
// returns the time of the first of them.
func attempts(ex *Exchange) (n int, first time.Time) {
	for _, e := range ex.Events {
		switch e.Type {
		case evidence.AdminAction:
			n, first = 0, time.Time{}
		case evidence.DeliveryAttemptFailed:
			if n == 0 {
				first = e.Time
			}
			n++
		}
	}
	return n, first
}

// pushFailed records a failed push: delivery.attempt_failed, and pe
// returned for the queue to retry; or, DeadLetterAfter after the first
// failure, delivery.failed, the exchange dead letter, the sender told.
func (x *Exchanges) pushFailed(ctx context.Context, ex *Exchange, job *Job, channel string, seal []byte, pe *PushError) error {
	now := x.now().UTC()
	n, first := attempts(ex)
	dead := n > 0 && now.Sub(first) >= x.cfg.DeadLetterAfter
	sealSum := sha256.Sum256(seal)
	reason := truncate(pe.Reason, maxReason)
	rec := &evidence.Record{
		ID:       evidence.NewID(now),
		Type:     evidence.DeliveryAttemptFailed,
		Time:     now,
		Subject:  ex.ID,
		Actors:   []evidence.Actor{evidence.ActorFromCertificate("platform", x.signer.Certificate()), recipientActor(ex)},
		Digests:  []evidence.Digest{{Name: "seal", Algorithm: "sha256", Value: sealSum[:]}},
		Previous: []string{ex.SubmissionEvidence},
		Attributes: []evidence.Attribute{
			{Key: "attempt", Value: strconv.Itoa(n + 1)},
			{Key: "channel", Value: channel},
			{Key: "reason", Value: reason},
			{Key: "recipient", Value: ex.Recipient},
		},
	}
	if pe.Status != 0 {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "status", Value: strconv.Itoa(pe.Status)})
	}
	st := &Step{Exchange: ex.ID, Prepared: now, From: []State{StateAccepted}}
	if dead {
		rec.Type = evidence.DeliveryFailed
		rec.Previous = append(rec.Previous, previous(ex, evidence.DeliveryAttemptFailed)...)
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "failing_since", Value: first.Format(time.RFC3339)})
		st.To, st.Finish = StateDeadLetter, job.ID
		st.Enqueue = x.notifyJobs(ex, rec.ID, now)
	}
	rec.SortAttributes()
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	st.Record = data
	st.Event = Event{Type: rec.Type, EvidenceID: rec.ID, Time: now, Detail: reason}
	if err := x.runStep(ctx, st); err != nil {
		if errors.Is(err, ErrStateChanged) {
			return nil // delivered or dead meanwhile, by another worker
		}
		return errors.Join(pe, err)
	}
	if dead {
		x.metrics.deliveries.WithLabelValues(channel, "dead-letter").Inc()
		x.log.ErrorContext(ctx, "exchange: delivery failed, dead letter", "exchange_id", ex.ID, "partner", ex.Recipient, "channel", channel, "attempts", n+1, "reason", reason, "evidence_id", rec.ID)
		return nil
	}
	x.metrics.deliveries.WithLabelValues(channel, "attempt-failed").Inc()
	return pe
}

// Redeliver gives a dead letter back to the queue, for an operator (the
// admin role) who fixed what made its channel fail: an admin.action
// record (action redeliver) naming the operator, the exchange accepted
// again, its delivery tried at once, and dead_letter_after counted anew
// from its next failure. An exchange that is not a dead letter is
// ErrStateChanged; one that does not exist, ErrExchangeNotFound; a
// principal without the role, a *ForbiddenError.
func (x *Exchanges) Redeliver(ctx context.Context, by *Principal, id string) (*Event, error) {
	if by == nil {
		return nil, errors.New("middleoffice: a redelivery needs the principal who asks for it")
	}
	if err := x.policy.Authorize(by, ActionAdminister, Resource{}); err != nil {
		return nil, err
	}
	if !validExchangeID(id) {
		return nil, ErrExchangeNotFound
	}
	ex, err := x.store.Exchange(ctx, id)
	if err != nil {
		return nil, err
	}
	if ex.State != StateDeadLetter {
		return nil, fmt.Errorf("%w: it is %s, not a dead letter", ErrStateChanged, ex.State)
	}
	now := x.now().UTC()
	rec := &evidence.Record{
		ID:         evidence.NewID(now),
		Type:       evidence.AdminAction,
		Time:       now,
		Subject:    ex.ID,
		Actors:     []evidence.Actor{by.Actor("admin")},
		Previous:   previous(ex, evidence.DeliveryFailed),
		Attributes: []evidence.Attribute{{Key: "action", Value: "redeliver"}, {Key: "recipient", Value: ex.Recipient}},
	}
	data, err := rec.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ev := Event{Type: rec.Type, EvidenceID: rec.ID, Time: now, By: by.ID(), Detail: "redeliver"}
	if err := x.runStep(ctx, &Step{
		Exchange: ex.ID, Prepared: now, Record: data, Event: ev,
		From: []State{StateDeadLetter}, To: StateAccepted,
		Enqueue: []*Job{{ID: ex.ID + "-" + JobProcess, Kind: JobProcess, Exchange: ex.ID, NotBefore: now}},
	}); err != nil {
		return nil, err
	}
	x.wake()
	x.log.InfoContext(ctx, "exchange: dead letter given back to the queue", "exchange_id", ex.ID, "partner", ex.Recipient, "by", by.Subject, "evidence_id", rec.ID)
	return &ev, nil
}
