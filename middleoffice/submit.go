package middleoffice

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/internal/cms"
	"pec/internal/promreg"
	"pec/proof"
	"pec/signing"
)

// ExchangeOptions hold the optional collaborators of Exchanges; the zero
// value suits tests.
type ExchangeOptions struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
	// AckVerifier checks the recipients' signed acknowledgments (a valid
	// CMS signature, by a certificate of the recipient, over the sealed
	// manifest) and the senders' signatures of their documents (valid, over
	// the content received). nil: an acknowledgment must be a CMS
	// SignedData of the sealed manifest, its signature unchecked (its
	// digest is evidence), and a manifest with signatures is refused.
	AckVerifier *signing.Verifier
	// Webhook pushes exchanges to recipients on the webhook channel and
	// notifications to senders with a notify_url, over mutual TLS: the
	// node's certificate and key, the endpoints checked against the
	// configured roots ([NewWebhookClient]). nil: every push and
	// notification fails (recorded, retried, then dead letter or
	// dropped), as a misconfigured node should show.
	Webhook *http.Client
	// Mail delivers to recipients on the mail channel (secure mail
	// implements it). nil: they find their exchanges in the pull inbox,
	// and each delivery's event says so.
	Mail PushChannel
}

// Exchanges is the exchange service: submission ([Exchanges.Submit]),
// processing through the work queue ([Exchanges.Run]), and the pull
// channel ([Exchanges.Inbox], [Exchanges.Fetch], [Exchanges.Ack]) with
// tracking ([Exchanges.Status]). Every step is an evidence record,
// committed with its step through the store's outbox ([ExchangeStore]).
// It is safe for concurrent use.
type Exchanges struct {
	cfg      ExchangeConfig
	store    ExchangeStore
	policy   *Policy
	evidence evidence.Appender
	signer   *signing.Signer
	verifier *signing.Verifier
	log      *slog.Logger
	now      func() time.Time
	kick     chan struct{}
	freed    chan struct{} // a token per exchange delivered, for the submissions waiting (backlog.go)
	metrics  *exchangeMetrics
	webhook  *webhookChannel
	mail     PushChannel
}

type exchangeMetrics struct {
	submissions   *prometheus.CounterVec // outcome
	jobs          *prometheus.CounterVec // outcome
	deliveries    *prometheus.CounterVec // channel, outcome
	notifications *prometheus.CounterVec // outcome
}

// NewExchanges is the exchange service over store. policy decides who may
// send what to whom and holds the directory (recipients' encryption
// certificates); ev records every step; platform signs the
// acknowledgments of receipt (proof.SignReceipt) and the seals.
func NewExchanges(cfg ExchangeConfig, store ExchangeStore, policy *Policy, ev evidence.Appender, platform *signing.Signer, opts ExchangeOptions) (*Exchanges, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || policy == nil || ev == nil || platform == nil {
		return nil, errors.New("middleoffice: the exchange service needs a store, the policy, the evidence log and the platform's signer")
	}
	x := &Exchanges{
		cfg: cfg.withDefaults(), store: store, policy: policy, evidence: ev, signer: platform, verifier: opts.AckVerifier,
		log: opts.Logger, now: opts.Now, kick: make(chan struct{}, 1), freed: make(chan struct{}, freedTokens),
		webhook: &webhookChannel{client: opts.Webhook}, mail: opts.Mail,
		metrics: &exchangeMetrics{
			submissions: promreg.Register(opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pec_exchange_submissions_total", Help: "Submissions of tele-dossiers, by outcome.",
			}, []string{"outcome"})),
			jobs: promreg.Register(opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pec_exchange_jobs_total", Help: "Jobs of the exchange work queue, by outcome.",
			}, []string{"outcome"})),
			deliveries: promreg.Register(opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pec_exchange_deliveries_total", Help: "Deliveries of exchanges and failed attempts, by channel and outcome (delivered, attempt-failed, dead-letter).",
			}, []string{"channel", "outcome"})),
			notifications: promreg.Register(opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pec_exchange_notifications_total", Help: "Notifications to senders, by outcome (sent, failed, dropped).",
			}, []string{"outcome"})),
		},
	}
	if bs, ok := store.(BacklogStore); ok {
		promreg.Register(opts.Registry, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pec_exchange_backlog", Help: "Accepted exchanges waiting for their first seal and delivery (bounded by exchange.max_backlog).",
		}, func() float64 {
			n, _ := bs.Backlog(context.Background())
			return float64(n)
		}))
	}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if x.now == nil {
		x.now = time.Now
	}
	return x, nil
}

// MaxDocumentSize is the largest document the service takes (the
// exchange section's max_document_size).
func (x *Exchanges) MaxDocumentSize() int64 { return x.cfg.MaxDocumentSize }

// DocumentSource gives the contents of a submission's documents:
// Document is called once per document of the manifest, in order, and
// its reader is read up to the declared size (and one byte more, to see
// that there is no more) before the next call.
type DocumentSource interface {
	Document(ctx context.Context, i int, d Document) (io.Reader, error)
}

// DocumentSourceFunc is a function that is a DocumentSource.
type DocumentSourceFunc func(ctx context.Context, i int, d Document) (io.Reader, error)

// Document implements DocumentSource.
func (f DocumentSourceFunc) Document(ctx context.Context, i int, d Document) (io.Reader, error) {
	return f(ctx, i, d)
}

// Readers is the DocumentSource of readers given in the manifest's order.
func Readers(rs ...io.Reader) DocumentSource {
	return DocumentSourceFunc(func(_ context.Context, i int, _ Document) (io.Reader, error) {
		if i >= len(rs) {
			return nil, fmt.Errorf("no content for document %d", i)
		}
		return rs[i], nil
	})
}

// Submission is an accepted submission.
type Submission struct {
	Exchange    string
	SubmittedAt time.Time
	// EvidenceID is the submission.accepted record, Receipt its
	// acknowledgment of receipt: a CMS SignedData (CAdES, by the platform)
	// with the encoded record attached, which `openssl cms -verify`
	// checks.
	EvidenceID string
	Receipt    []byte
	// Replayed: an earlier submission with the same idempotency key; the
	// documents given this time were not read.
	Replayed bool
}

// Submit takes a tele-dossier from sender (a principal the gateway
// resolved): it checks the manifest, the configured limits and the
// routing rules (Policy.Authorize, ActionSend, once per document type),
// then streams each document from docs, hashing it and encrypting it for
// the recipient's encryption certificate (CMS AuthEnvelopedData,
// AES-256-GCM) as it is written to the store, so that neither the whole
// document nor its plaintext is ever kept; it checks the declared sizes
// and digests, records submission.accepted, and returns the exchange id
// and the acknowledgment of receipt once the record and the exchange are
// durable. The exchange is then sealed and delivered by the work queue.
//
// A refusal is a *RejectedError, recorded as submission.rejected first.
// With an idempotency key, a submission the sender made before with the
// same key returns that exchange and its receipt (Replayed); the same key
// with another manifest is refused (ReasonIdempotencyConflict). Other
// errors are the node's (the store, the evidence log: evidence.ErrUnavailable
// says to retry later) and were not answered by evidence. While the
// delivery backlog is at exchange.max_backlog, a submission is a
// *BacklogError, neither read nor recorded (backlog.go).
func (x *Exchanges) Submit(ctx context.Context, sender *Principal, m Manifest, docs DocumentSource) (*Submission, error) {
	if err := x.admit(ctx); err != nil {
		x.metrics.submissions.WithLabelValues("backlog").Inc()
		return nil, err
	}
	s, err := x.submit(ctx, sender, m, docs)
	outcome := "accepted"
	switch _, refused := errors.AsType[*RejectedError](err); {
	case refused:
		outcome = "rejected"
	case err != nil:
		outcome = "error"
	case s.Replayed:
		outcome = "replayed"
	}
	x.metrics.submissions.WithLabelValues(outcome).Inc()
	return s, err
}

// submission is one call of Submit.
type submission struct {
	x      *Exchanges
	id     string
	sender *Principal
	m      Manifest
	now    time.Time
}

func (x *Exchanges) submit(ctx context.Context, sender *Principal, m Manifest, docs DocumentSource) (*Submission, error) {
	if sender == nil || sender.Certificate == nil {
		return nil, errors.New("middleoffice: a submission needs the sender's principal")
	}
	now := x.now().UTC()
	s := &submission{x: x, id: evidence.NewID(now), sender: sender, m: m.normalized().withoutUploads(), now: now}
	m = s.m
	if err := m.Validate(); err != nil {
		return nil, s.reject(ctx, ReasonInvalidManifest, err.Error(), err)
	}
	if err := x.checkLimits(m); err != nil {
		return nil, s.reject(ctx, ReasonTooLarge, err.Error(), nil)
	}
	if m.IdempotencyKey != "" && sender.ID() != "" && !sender.Disabled() {
		if prev, err := s.replay(ctx); prev != nil || err != nil {
			return prev, err
		}
	}
	for _, t := range documentTypes(m) {
		if err := x.policy.Authorize(sender, ActionSend, Resource{Recipient: m.Recipient, Procedure: m.Procedure, DocumentType: t}); err != nil {
			detail := err.Error()
			if fe, ok := errors.AsType[*ForbiddenError](err); ok {
				detail = fe.Reason
			}
			return nil, s.reject(ctx, ReasonForbidden, detail, err)
		}
	}
	recipient, _ := x.policy.Directory().Partner(m.Recipient)
	encCert, err := x509.ParseCertificate(recipient.EncryptionCertificate)
	if err != nil {
		return nil, s.reject(ctx, ReasonUnreachable, fmt.Sprintf("the recipient %q has no encryption certificate", m.Recipient), nil)
	}

	// The documents, encrypted as they come.
	envelopes := make([]PayloadInfo, len(m.Documents))
	plain := make([][]byte, len(m.Documents))
	for i, d := range m.Documents {
		env, digest, err := s.receive(ctx, docs, i, d, encCert, contentEncryption(recipient))
		if err != nil {
			x.store.RemovePayloads(context.WithoutCancel(ctx), s.id)
			if r, ok := errors.AsType[*refusal](err); ok {
				return nil, s.reject(ctx, r.reason, r.detail, nil, r.digests...)
			}
			return nil, err
		}
		envelopes[i], plain[i] = env, digest
	}

	// The record, its receipt, and the step that commits them.
	rec := &evidence.Record{
		ID:      evidence.NewID(now),
		Type:    evidence.SubmissionAccepted,
		Time:    now,
		Subject: s.id,
		Actors:  []evidence.Actor{sender.Actor("sender"), evidence.ActorFromCertificate("recipient", encCert)},
		Digests: []evidence.Digest{{Name: "manifest", Algorithm: "sha256", Value: ManifestDigest(m)}},
		Attributes: []evidence.Attribute{
			{Key: "documents", Value: strconv.Itoa(len(m.Documents))},
			{Key: "procedure", Value: m.Procedure},
			{Key: "recipient", Value: m.Recipient},
			{Key: "sender", Value: sender.ID()},
		},
	}
	for i := range m.Documents {
		rec.Digests = append(rec.Digests, evidence.Digest{Name: "document/" + strconv.Itoa(i), Algorithm: "sha256", Value: plain[i]})
	}
	for i, e := range envelopes {
		v, _ := hex.DecodeString(e.SHA256)
		rec.Digests = append(rec.Digests, evidence.Digest{Name: "envelope/" + strconv.Itoa(i), Algorithm: "sha256", Value: v})
	}
	for i, d := range m.Documents {
		for j, sig := range d.Signatures {
			sum := sha256.Sum256(sig)
			rec.Digests = append(rec.Digests, evidence.Digest{Name: fmt.Sprintf("signature/%d/%d", i, j), Algorithm: "sha256", Value: sum[:]})
		}
	}
	data, err := rec.MarshalBinary()
	if err != nil {
		x.store.RemovePayloads(context.WithoutCancel(ctx), s.id)
		return nil, fmt.Errorf("middleoffice: submission record: %w", err)
	}
	receipt, err := proof.SignReceipt(ctx, x.signer, data)
	if err != nil {
		x.store.RemovePayloads(context.WithoutCancel(ctx), s.id)
		return nil, fmt.Errorf("middleoffice: acknowledgment of receipt: %w", err)
	}
	encFP := sha256.Sum256(encCert.Raw)
	ex := &Exchange{
		ID:                   s.id,
		Sender:               sender.ID(),
		SenderSubject:        sender.Subject,
		SenderCertificate:    sender.FingerprintHex(),
		Recipient:            m.Recipient,
		RecipientSubject:     encCert.Subject.String(),
		RecipientCertificate: hex.EncodeToString(encFP[:]),
		Manifest:             m,
		ManifestSHA256:       hex.EncodeToString(ManifestDigest(m)),
		State:                StatePending,
		SubmittedAt:          now,
		UpdatedAt:            now,
		SubmissionEvidence:   rec.ID,
		Receipt:              receipt,
		Envelopes:            envelopes,
	}
	step := &Step{
		Exchange: s.id,
		Prepared: now,
		Record:   data,
		Event:    Event{Type: evidence.SubmissionAccepted, EvidenceID: rec.ID, Time: now, By: sender.ID()},
		Create:   ex,
		To:       StateAccepted,
		Enqueue:  []*Job{{ID: s.id + "-" + JobProcess, Kind: JobProcess, Exchange: s.id, NotBefore: now}},
	}
	if err := x.runStep(ctx, step); err != nil {
		if kt, ok := errors.AsType[*KeyTakenError](err); ok {
			// The same key, submitted meanwhile: that one wins.
			x.store.RemovePayloads(context.WithoutCancel(ctx), s.id)
			prev, err := s.replay(ctx)
			if prev == nil && err == nil {
				err = fmt.Errorf("middleoffice: the idempotency key names exchange %s, which is gone", kt.Exchange)
			}
			return prev, err
		}
		return nil, err
	}
	x.wake()
	x.log.InfoContext(ctx, "exchange: accepted", "exchange_id", s.id, "partner", sender.ID(), "recipient", m.Recipient, "evidence_id", rec.ID)
	return &Submission{Exchange: s.id, SubmittedAt: now, EvidenceID: rec.ID, Receipt: receipt}, nil
}

func (x *Exchanges) checkLimits(m Manifest) error {
	if len(m.Documents) > x.cfg.MaxDocuments {
		return fmt.Errorf("%d documents, at most %d", len(m.Documents), x.cfg.MaxDocuments)
	}
	var total int64
	for i, d := range m.Documents {
		if d.Size > x.cfg.MaxDocumentSize {
			return fmt.Errorf("documents[%d]: %d bytes, at most %d", i, d.Size, x.cfg.MaxDocumentSize)
		}
		total += d.Size
	}
	if total > x.cfg.MaxDossierSize {
		return fmt.Errorf("%d bytes in all, at most %d", total, x.cfg.MaxDossierSize)
	}
	return nil
}

// documentTypes are the document types to authorize: each one named, and
// "" (the procedure alone) when a document has none.
func documentTypes(m Manifest) []string {
	var out []string
	for _, d := range m.Documents {
		if !slices.Contains(out, d.Type) {
			out = append(out, d.Type)
		}
	}
	slices.Sort(out)
	return out
}

// refusal is a document refused while it streams in.
type refusal struct {
	reason  Reason
	detail  string
	digests []evidence.Digest
}

func (r *refusal) Error() string { return r.detail }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// sourceReader keeps the error of the sender's reader apart from ours.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// receive streams document i into its envelope payload: the plaintext is
// hashed and encrypted on the way, never stored. It returns the
// envelope's payload and the plaintext's SHA-256, or a *refusal.
// contentEncryption is the envelope's content encryption for recipient.
func contentEncryption(recipient Partner) cms.ContentEncryption {
	if recipient.ContentEncryption == ContentAES256CBC {
		return cms.AES256CBC
	}
	return cms.AES256GCM
}

func (s *submission) receive(ctx context.Context, docs DocumentSource, i int, d Document, encCert *x509.Certificate, content cms.ContentEncryption) (PayloadInfo, []byte, error) {
	x := s.x
	name := "document-" + strconv.Itoa(i) + ".p7m"
	src, err := docs.Document(ctx, i, d)
	if err != nil {
		if ctx.Err() != nil {
			return PayloadInfo{}, nil, ctx.Err()
		}
		return PayloadInfo{}, nil, &refusal{reason: ReasonIncomplete, detail: fmt.Sprintf("documents[%d] (%q): %v", i, d.Name, err)}
	}
	w, err := x.store.CreatePayload(ctx, s.id, name)
	if err != nil {
		return PayloadInfo{}, nil, err
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	envHash := sha256.New()
	out := &countingWriter{w: io.MultiWriter(w, envHash)}
	ew, err := cms.NewEnvelopeWriter(out, d.Size, []cms.Recipient{{Cert: encCert}}, &cms.EnvelopeOptions{Content: content})
	if err != nil {
		if errors.Is(err, cms.ErrUnsupported) {
			return PayloadInfo{}, nil, &refusal{reason: ReasonUnreachable, detail: fmt.Sprintf("the recipient's encryption certificate cannot be used: %v", err)}
		}
		return PayloadInfo{}, nil, fmt.Errorf("middleoffice: envelope: %w", err)
	}
	plainHash := sha256.New()
	hashes := []io.Writer{plainHash}
	sigHashes, err := signatureHashes(d)
	if err != nil {
		return PayloadInfo{}, nil, &refusal{reason: ReasonInvalidSignature, detail: fmt.Sprintf("documents[%d] (%q): %v", i, d.Name, err)}
	}
	for _, h := range sigHashes {
		hashes = append(hashes, h)
	}
	var hw io.Writer = plainHash
	if len(hashes) > 1 {
		hw = io.MultiWriter(hashes...)
	}
	taken := &countingWriter{w: hw}
	sr := &sourceReader{r: io.LimitReader(src, d.Size+1)}
	var copyErr error
	if d.Size >= pipelineMin {
		// This goroutine reads the plaintext into the pipe's chunks and
		// hashes it; another encrypts each chunk where it is, hashes
		// the envelope and stores it: two cores, one copy of the bytes
		// (the read's). (A third goroutine for the document's hash
		// spread the work further but cost more CPU in handovers than
		// it gave: 28% -> 26% per CPU-second at one client.) Deferred
		// after the Abort, so that it runs first: no write after an
		// abort.
		pipe := newPipeWriter(envelopeInPlace{ew})
		defer pipe.Close()
		_, copyErr = pipe.ReadFrom(io.TeeReader(sr, taken))
		if err := pipe.Close(); copyErr == nil {
			copyErr = err
		}
	} else {
		// The envelope writer reads into its own chunk (ReadFrom), the
		// tee hashing what it reads: no copy buffer.
		_, copyErr = io.Copy(ew, io.TeeReader(sr, taken))
	}
	switch {
	case sr.err != nil:
		if ctx.Err() != nil {
			return PayloadInfo{}, nil, ctx.Err()
		}
		return PayloadInfo{}, nil, &refusal{reason: ReasonIncomplete, detail: fmt.Sprintf("documents[%d] (%q): reading it failed after %d bytes", i, d.Name, taken.n)}
	case taken.n > d.Size:
		return PayloadInfo{}, nil, &refusal{reason: ReasonSizeMismatch, detail: fmt.Sprintf("documents[%d] (%q): more than the declared %d bytes", i, d.Name, d.Size)}
	case copyErr != nil:
		// The store's failure (the source's is sr.err): not the
		// sender's fault, though the copy stopped short.
		return PayloadInfo{}, nil, fmt.Errorf("middleoffice: store documents[%d]: %w", i, copyErr)
	case taken.n < d.Size:
		return PayloadInfo{}, nil, &refusal{reason: ReasonSizeMismatch, detail: fmt.Sprintf("documents[%d] (%q): %d bytes, declared %d", i, d.Name, taken.n, d.Size),
			digests: []evidence.Digest{docDigest(i, plainHash)}}
	}
	if err := ew.Close(); err != nil {
		return PayloadInfo{}, nil, fmt.Errorf("middleoffice: store documents[%d]: %w", i, err)
	}
	digest := plainHash.Sum(nil)
	if hex.EncodeToString(digest) != d.SHA256 {
		return PayloadInfo{}, nil, &refusal{reason: ReasonDigestMismatch,
			detail:  fmt.Sprintf("documents[%d] (%q): its SHA-256 is %x, declared %s", i, d.Name, digest, d.SHA256),
			digests: []evidence.Digest{docDigest(i, plainHash)}}
	}
	if err := x.checkSignatures(ctx, i, d, digest, sigHashes); err != nil {
		return PayloadInfo{}, nil, err
	}
	if err := w.Commit(); err != nil {
		return PayloadInfo{}, nil, err
	}
	committed = true
	return PayloadInfo{Name: name, Size: out.n, SHA256: hex.EncodeToString(envHash.Sum(nil))}, digest, nil
}

// signatureHashes are the hashes the sender's signatures of d need, other
// than SHA-256 (always computed).
func signatureHashes(d Document) (map[crypto.Hash]hash.Hash, error) {
	out := map[crypto.Hash]hash.Hash{}
	for _, sig := range d.Signatures {
		sd, err := cms.ParseSignedData(sig)
		if err != nil {
			return nil, errors.New("a signature is not a CMS SignedData")
		}
		for _, si := range sd.SignerInfos {
			h, err := si.Hash()
			if err != nil {
				return nil, err
			}
			if h != crypto.SHA256 && out[h] == nil {
				out[h] = h.New()
			}
		}
	}
	return out, nil
}

// checkSignatures verifies the sender's signatures of document i, whose
// SHA-256 is sum: each valid (TOTAL-PASSED: the signature, the signer's
// certificate path and its revocation, through the AckVerifier's chain
// validator) over the content received. A signature that does not verify
// is a *refusal (ReasonInvalidSignature).
func (x *Exchanges) checkSignatures(ctx context.Context, i int, d Document, sum []byte, hashes map[crypto.Hash]hash.Hash) error {
	if len(d.Signatures) == 0 {
		return nil
	}
	if x.verifier == nil {
		return &refusal{reason: ReasonInvalidSignature, detail: fmt.Sprintf("documents[%d] (%q): this node checks no signatures (it has no trust anchors for signers)", i, d.Name)}
	}
	for j, sig := range d.Signatures {
		sd, _ := cms.ParseSignedData(sig)
		h, _ := sd.SignerInfos[0].Hash()
		digest := sum
		if h != crypto.SHA256 {
			digest = hashes[h].Sum(nil)
		}
		rep, err := x.verifier.Verify(ctx, sig, signing.VerifyOptions{Digest: digest, Hash: h})
		if err != nil {
			return &refusal{reason: ReasonInvalidSignature, detail: fmt.Sprintf("documents[%d].signatures[%d]: cannot be verified: %v", i, j, err)}
		}
		if !rep.Passed() {
			detail := fmt.Sprintf("documents[%d].signatures[%d]: %s", i, j, rep.Indication)
			if rep.SubIndication != "" {
				detail += " " + string(rep.SubIndication)
			}
			if rep.Detail != "" {
				detail += ": " + rep.Detail
			}
			return &refusal{reason: ReasonInvalidSignature, detail: detail}
		}
	}
	return nil
}

// pipelineMin is the size from which a document is encrypted, its
// envelope hashed and stored by a goroutine of its own: below it, the
// handover costs more than it saves.
const pipelineMin = 1 << 20

// envelopeInPlace writes the pipe's chunks, which are its own, to the
// envelope writer to be encrypted where they are.
type envelopeInPlace struct{ ew *cms.EnvelopeWriter }

func (e envelopeInPlace) Write(p []byte) (int, error) { return e.ew.WriteInPlace(p) }

// pipeWriter hands what is written to a goroutine that writes it to w, in
// order, through pipeBuffers buffers of pipeBuffer bytes (Write copies;
// ReadFrom reads into them). w may change the bytes it is given: they
// are the pipe's. A failure of w is returned by the next Write or
// ReadFrom, or by Close, which waits until every byte handed over is
// written. It is for one writer goroutine.
type pipeWriter struct {
	w      io.Writer
	full   chan []byte
	free   chan []byte
	done   chan struct{}
	err    atomic.Pointer[error]
	closed bool
}

const (
	pipeBuffers = 4
	pipeBuffer  = 64 << 10
)

func newPipeWriter(w io.Writer) *pipeWriter {
	p := &pipeWriter{w: w, full: make(chan []byte, pipeBuffers), free: make(chan []byte, pipeBuffers), done: make(chan struct{})}
	for range pipeBuffers {
		p.free <- make([]byte, 0, pipeBuffer)
	}
	go p.run()
	return p
}

func (p *pipeWriter) run() {
	defer close(p.done)
	for b := range p.full {
		if p.err.Load() == nil {
			if _, err := p.w.Write(b); err != nil {
				p.err.Store(&err)
			}
		}
		p.free <- b[:0]
	}
}

func (p *pipeWriter) Write(b []byte) (int, error) {
	if p.closed {
		return 0, errors.New("middleoffice: write after close")
	}
	if e := p.err.Load(); e != nil {
		return 0, *e
	}
	n := len(b)
	for len(b) > 0 {
		buf := <-p.free
		c := min(len(b), cap(buf))
		p.full <- append(buf, b[:c]...)
		b = b[c:]
	}
	return n, nil
}

// ReadFrom reads r to its end into the pipe's buffers, handing each
// over once full (or at the end), so that w gets whole pipeBuffer pieces.
func (p *pipeWriter) ReadFrom(r io.Reader) (int64, error) {
	if p.closed {
		return 0, errors.New("middleoffice: write after close")
	}
	var total int64
	for {
		if e := p.err.Load(); e != nil {
			return total, *e
		}
		buf := <-p.free
		n, err := io.ReadFull(r, buf[:cap(buf)])
		total += int64(n)
		if n > 0 {
			p.full <- buf[:n]
		} else {
			p.free <- buf
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}

// Close waits for the writes handed over and returns the first failure.
func (p *pipeWriter) Close() error {
	if !p.closed {
		p.closed = true
		close(p.full)
	}
	<-p.done
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func docDigest(i int, h hash.Hash) evidence.Digest {
	return evidence.Digest{Name: "document/" + strconv.Itoa(i), Algorithm: "sha256", Value: h.Sum(nil)}
}

// RefuseManifest records the refusal of a submission whose manifest did
// not decode (DecodeManifest's *ManifestError, cause) and returns it as a
// *RejectedError (ReasonInvalidManifest): the edge calls it so that a
// malformed submission is evidence too. The record names the SHA-256 of
// the bytes received ("manifest-received").
func (x *Exchanges) RefuseManifest(ctx context.Context, sender *Principal, raw []byte, cause error) error {
	if sender == nil || sender.Certificate == nil {
		return errors.New("middleoffice: a submission needs the sender's principal")
	}
	now := x.now().UTC()
	s := &submission{x: x, id: evidence.NewID(now), sender: sender, now: now}
	sum := sha256.Sum256(raw)
	detail := "invalid manifest"
	if me, ok := errors.AsType[*ManifestError](cause); ok {
		detail = strings.Join(me.Faults, "; ") // the sender's faults, nothing of ours
	}
	err := s.reject(ctx, ReasonInvalidManifest, detail, cause, evidence.Digest{Name: "manifest-received", Algorithm: "sha256", Value: sum[:]})
	x.metrics.submissions.WithLabelValues("rejected").Inc()
	return err
}

// reject records the refusal as submission.rejected and returns it as a
// *RejectedError; when the record cannot be made, the refusal is not
// answered and the log's error is returned (evidence.ErrUnavailable:
// retry later).
func (s *submission) reject(ctx context.Context, reason Reason, detail string, cause error, digests ...evidence.Digest) error {
	detail = truncate(detail, maxReason)
	rec := &evidence.Record{
		Type:    evidence.SubmissionRejected,
		Time:    s.now,
		Subject: s.id,
		Actors:  []evidence.Actor{s.sender.Actor("sender")},
		Digests: append([]evidence.Digest{{Name: "manifest", Algorithm: "sha256", Value: ManifestDigest(s.m)}}, digests...),
		Attributes: []evidence.Attribute{
			{Key: "detail", Value: detail},
			{Key: "reason", Value: string(reason)},
		},
	}
	if validName(s.m.Procedure) {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "procedure", Value: s.m.Procedure})
	}
	if validName(s.m.Recipient) {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "recipient", Value: s.m.Recipient})
	}
	if s.sender.ID() != "" {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "sender", Value: s.sender.ID()})
	}
	rec.SortAttributes()
	ids, err := s.x.evidence.Append(context.WithoutCancel(ctx), rec)
	if err != nil {
		return fmt.Errorf("middleoffice: record the refusal of a submission (%s): %w", reason, err)
	}
	s.x.log.InfoContext(ctx, "exchange: refused", "exchange_id", s.id, "partner", s.sender.ID(), "reason", string(reason), "evidence_id", ids[0])
	return &RejectedError{Exchange: s.id, Reason: reason, Detail: detail, EvidenceID: ids[0], Err: cause}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// replay answers a submission whose sender and idempotency key name an
// earlier exchange: nil, nil when they name none.
func (s *submission) replay(ctx context.Context) (*Submission, error) {
	x := s.x
	id, err := x.store.ByIdempotencyKey(ctx, s.sender.ID(), s.m.IdempotencyKey)
	if errors.Is(err, ErrExchangeNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	ex, err := x.settled(ctx, id)
	if errors.Is(err, ErrExchangeNotFound) {
		return nil, nil // aborted meanwhile
	} else if err != nil {
		return nil, err
	}
	if ex.ManifestSHA256 != hex.EncodeToString(ManifestDigest(s.m)) {
		return nil, s.reject(ctx, ReasonIdempotencyConflict, fmt.Sprintf("the idempotency key was used for exchange %s, with another manifest", ex.ID), nil)
	}
	return &Submission{Exchange: ex.ID, SubmittedAt: ex.SubmittedAt, EvidenceID: ex.SubmissionEvidence, Receipt: ex.Receipt, Replayed: true}, nil
}

// settled returns the exchange id after finishing its prepared step, if
// any; a pending exchange whose step could not be finished is an error.
func (x *Exchanges) settled(ctx context.Context, id string) (*Exchange, error) {
	if st, err := x.store.Prepared(ctx, id); err == nil {
		if err := x.finish(ctx, st); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, ErrStepNotFound) {
		return nil, err
	}
	ex, err := x.store.Exchange(ctx, id)
	if err != nil {
		return nil, err
	}
	if ex.State == StatePending {
		return nil, fmt.Errorf("middleoffice: exchange %s is still being accepted", id)
	}
	return ex, nil
}

// runStep is the outbox protocol: prepare the step (its record in the
// store), append the record to the log, commit the step. Once prepared,
// the step is driven to its end whatever the caller's context: the
// append and the commit do not stop when the caller goes. When the log
// refuses the record for sure (unavailable, malformed), the step is
// aborted, and a created exchange's payloads removed; when the outcome is
// unknown, the step stays prepared, for the recovery to finish.
func (x *Exchanges) runStep(ctx context.Context, st *Step) error {
	err := x.store.Prepare(ctx, st)
	if errors.Is(err, ErrStepPending) {
		// Another step of this exchange waits for its evidence: finish it
		// first, then ours, once.
		if p, perr := x.store.Prepared(ctx, st.Exchange); perr == nil {
			if ferr := x.finish(ctx, p); ferr != nil {
				return ferr
			}
		}
		err = x.store.Prepare(ctx, st)
	}
	if err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if err := x.appendRecord(bg, st.Record); err != nil {
		if definitelyNotAppended(err) {
			switch aerr := x.store.Abort(bg, st.Exchange, st.Event.EvidenceID); {
			case aerr == nil:
				if st.Create != nil {
					x.store.RemovePayloads(bg, st.Exchange)
				}
			case errors.Is(aerr, ErrStepCommitted):
				return nil // finished by the recovery meanwhile
			}
		}
		return fmt.Errorf("middleoffice: record %s of exchange %s: %w", st.Event.Type, st.Exchange, err)
	}
	if err := x.store.Commit(bg, st.Exchange, st.Event.EvidenceID); err != nil {
		return fmt.Errorf("middleoffice: commit %s of exchange %s (evidence %s is durable; the recovery commits it): %w", st.Event.Type, st.Exchange, st.Event.EvidenceID, err)
	}
	return nil
}

// finish completes a prepared step: its record appended (already there:
// fine), the step committed.
func (x *Exchanges) finish(ctx context.Context, st *Step) error {
	bg := context.WithoutCancel(ctx)
	if err := x.appendRecord(bg, st.Record); err != nil {
		return fmt.Errorf("middleoffice: record %s of exchange %s: %w", st.Event.Type, st.Exchange, err)
	}
	if err := x.store.Commit(bg, st.Exchange, st.Event.EvidenceID); err != nil {
		return fmt.Errorf("middleoffice: commit %s of exchange %s: %w", st.Event.Type, st.Exchange, err)
	}
	return nil
}

// appendRecord appends an encoded record: one whose id the log holds
// already is there (ids are fresh and chosen before the record is stored
// in the outbox, so the log's record is this one).
func (x *Exchanges) appendRecord(ctx context.Context, data []byte) error {
	rec, err := evidence.UnmarshalRecord(data)
	if err != nil {
		return err
	}
	if _, err := x.evidence.Append(ctx, rec); err != nil && !errors.Is(err, evidence.ErrDuplicateID) {
		return err
	}
	return nil
}

// definitelyNotAppended: the log says the record was not written.
func definitelyNotAppended(err error) bool {
	return errors.Is(err, evidence.ErrUnavailable) || errors.Is(err, evidence.ErrMalformedRecord) || errors.Is(err, proof.ErrClosed)
}

func (x *Exchanges) wake() {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}
