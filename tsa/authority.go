package tsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/internal/promreg"
)

// Authority answers time-stamp requests. It is safe for concurrent use.
type Authority struct {
	// key is the signing key and its certificate, replaced whole by
	// Rotate; shared by the authorities of WithEvidence.
	key       *atomic.Pointer[authorityKey]
	profile   keyProfile
	policy    asn1.ObjectIdentifier
	policyDER []byte
	// policyText is policy.String(), for every record.
	policyText string
	accepted   [][]byte // DER of every policy a request may ask for, the default first
	hashes     map[crypto.Hash]bool
	ordering   bool

	serials  SerialSource
	recorder Recorder
	evidence evidence.Appender
	clock    ClockStatus
	now      func() time.Time
	log      *slog.Logger
	metrics  *metrics

	order *orderState // shared by the authorities of WithEvidence
}

// authorityKey is what a token's signature depends on: the key, its
// certificate and the encoder of both. A request loads it once, so that a
// token is signed by the key its certificate names even while Rotate
// replaces it.
type authorityKey struct {
	enc   *encoder
	cert  *x509.Certificate
	actor evidence.Actor // the TSA in the evidence
	// tmpl holds the fields that every token of this key carries alike,
	// as ParseToken reads them (RespondToken): accuracy, ordering, the
	// tsa name, and the certificates sent on certReq.
	tmpl Token
}

// keyProfile is what a new key is prepared with: the parts of cfg that
// New read.
type keyProfile struct {
	sigHash  crypto.Hash
	accuracy time.Duration
	ordering bool
}

// orderState is the genTime of the last token, with ordering.
type orderState struct {
	mu      sync.Mutex
	lastGen time.Time
}

// New checks the TSA's certificate and key and prepares the authority; of
// cfg it uses the token profile (policies, accuracy, ordering, hashes). It
// fails fast, so that a misconfigured TSA never starts: chain[0] must be the
// certificate of signer's public key, valid now, with the extended key
// usage id-kp-timeStamping alone and critical (RFC 3161 section 2.3) and a
// key usage, if any, allowing digitalSignature or nonRepudiation. The rest
// of chain is sent with the TSA certificate when a request asks for
// certificates (self-signed roots are left out: a verifier must hold them).
func New(cfg Config, signer crypto.Signer, chain []*x509.Certificate, serials SerialSource, opts Options) (*Authority, error) {
	if err := cfg.validateProfile(); err != nil {
		return nil, err
	}
	if signer == nil || len(chain) == 0 || serials == nil {
		return nil, errors.New("tsa: a signer, its certificate and a serial source are required")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	sigHash := crypto.SHA256
	if cfg.SignatureHash != "" {
		sigHash = hashByName[cfg.SignatureHash]
	}
	prof := keyProfile{sigHash: sigHash, accuracy: cfg.Accuracy, ordering: cfg.Ordering}
	k, err := prof.prepare(signer, chain, now())
	if err != nil {
		return nil, err
	}
	a := &Authority{
		key:      new(atomic.Pointer[authorityKey]),
		profile:  prof,
		hashes:   map[crypto.Hash]bool{},
		ordering: cfg.Ordering,
		serials:  serials,
		recorder: opts.Recorder,
		evidence: opts.Evidence,
		clock:    opts.Clock,
		now:      now,
		log:      opts.Logger,
		metrics:  newMetrics(opts.Registry),
		order:    &orderState{},
	}
	a.key.Store(k)
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.policy, _ = parseOID(cfg.PolicyOID)
	a.policyDER = mustMarshal(a.policy)
	a.policyText = a.policy.String()
	a.accepted = append(a.accepted, a.policyDER)
	for _, p := range cfg.AcceptedPolicies {
		oid, _ := parseOID(p)
		a.accepted = append(a.accepted, mustMarshal(oid))
	}
	names := cfg.Hashes
	if len(names) == 0 {
		names = []string{"sha256", "sha384", "sha512"}
	}
	for _, n := range names {
		a.hashes[hashByName[n]] = true
	}
	return a, nil
}

// prepare checks chain[0] against signer (see New) and builds the
// encoder of the pair.
func (p keyProfile) prepare(signer crypto.Signer, chain []*x509.Certificate, now time.Time) (*authorityKey, error) {
	if signer == nil || len(chain) == 0 {
		return nil, errors.New("tsa: a signer and its certificate are required")
	}
	cert := chain[0]
	if err := CheckTSACertificate(cert, signer.Public(), now); err != nil {
		return nil, err
	}
	var extra []*x509.Certificate
	for _, c := range chain[1:] {
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		extra = append(extra, c)
	}
	enc, err := newEncoder(signer, cert, extra, p.sigHash, p.accuracy, p.ordering)
	if err != nil {
		return nil, err
	}
	k := &authorityKey{enc: enc, cert: cert, actor: evidence.ActorFromCertificate("tsa", cert)}
	if err := k.prepareTemplate(extra); err != nil {
		return nil, err
	}
	return k, nil
}

// Rotate makes signer, certified by chain[0], the key of every token
// issued from now on, by a and by the authorities of WithEvidence that
// share its key, with the checks of New. The swap is atomic: a request
// under way finishes with the key it started with, a request after
// Rotate returns gets the new one; none fails because of the rotation.
// Tokens issued before stay verifiable with the old certificate, which
// they name (ESSCertIDv2) and carry when asked. It returns the
// certificate replaced. On error nothing changes.
func (a *Authority) Rotate(signer crypto.Signer, chain []*x509.Certificate) (old *x509.Certificate, err error) {
	k, err := a.profile.prepare(signer, chain, a.now())
	if err != nil {
		return nil, err
	}
	return a.key.Swap(k).cert, nil
}

// CheckTSACertificate reports why cert cannot sign time-stamp tokens with
// the key pub at time now, or nil.
func CheckTSACertificate(cert *x509.Certificate, pub crypto.PublicKey, now time.Time) error {
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return errors.New("tsa: the TSA certificate is not the certificate of the TSA key")
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fmt.Errorf("tsa: the TSA certificate is valid from %s to %s, not now",
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := checkTimeStampingEKU(cert); err != nil {
		return fmt.Errorf("tsa: the TSA certificate must have a critical extended key usage with id-kp-timeStamping only (RFC 3161 section 2.3): %w", err)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return errors.New("tsa: the TSA certificate's key usage allows neither digitalSignature nor nonRepudiation")
	}
	return nil
}

// WithEvidence returns an authority that is a, recording every token it
// issues in ev (timestamp.issued) instead of a's Recorder. Both share the
// key, the serial numbers, the clock guard, the ordering and the metrics,
// so that the evidence log can time-stamp its own checkpoints with a —
// which knows nothing of the log — while clients are served by the
// returned authority, with no cycle between the two.
func (a *Authority) WithEvidence(ev evidence.Appender) *Authority {
	b := *a
	b.evidence = ev
	return &b
}

// Certificate is the TSA's certificate.
// After Rotate, the new one.
func (a *Authority) Certificate() *x509.Certificate { return a.key.Load().cert }

// Ready reports whether the authority can issue now: nil, or why not (the
// clock guard's reason, an expired certificate).
func (a *Authority) Ready() error {
	if a.clock != nil {
		if err := a.clock.Err(); err != nil {
			return err
		}
	}
	if a.now().After(a.key.Load().cert.NotAfter) {
		return errors.New("tsa: the TSA certificate has expired")
	}
	return nil
}

// Respond answers one DER TimeStampReq with a DER TimeStampResp, as
// RespondWith with no options.
func (a *Authority) Respond(ctx context.Context, der []byte) ([]byte, error) {
	resp, _, err := a.RespondWith(ctx, der, RespondOptions{})
	return resp, err
}

// RespondOptions say who asks for a token and how it is recorded.
type RespondOptions struct {
	// Client is who asked, named in the token's timestamp.issued record
	// so that it may read the record's proof; nil: not known (RFC 3161
	// over plain HTTP).
	Client *evidence.Actor
	// Unrecorded: the caller keeps the token in evidence of its own — a
	// checkpoint of the evidence log carries its token, a signature's
	// record names its signature timestamp — so the authority records it
	// neither as evidence nor in the journal. Serial numbers stay unique
	// (the serial source does not depend on the records).
	Unrecorded bool
	// Buf, when it has room for the response, holds it: a granted resp is
	// then Buf[:len(resp)], for a caller that reuses its buffers (the
	// gateway writes the answer out, then reuses Buf). The authority keeps
	// no reference to it once RespondWith returns. nil: a new slice.
	Buf []byte
}

// RespondWith answers one DER TimeStampReq with a DER TimeStampResp. A bad
// request gets a rejection and a nil error; err reports only the
// authority's own failures (signature, serial numbers, evidence), after
// which nothing was issued. With Options.Evidence, a granted token is
// released only once its timestamp.issued record is durable, and
// evidenceID is that record's id.
func (a *Authority) RespondWith(ctx context.Context, der []byte, opts RespondOptions) (resp []byte, evidenceID string, err error) {
	start := time.Now()
	resp, evidenceID, fail, err := a.respond(ctx, der, opts, nil)
	a.metrics.observe(fail, err, time.Since(start))
	return resp, evidenceID, err
}

// respond answers der; with tok, a granted token is also returned there,
// as ParseToken would read it from resp (RespondToken).
func (a *Authority) respond(ctx context.Context, der []byte, opts RespondOptions, tok **Token) ([]byte, string, FailInfo, error) {
	req, err := parseRequest(der)
	if err != nil {
		return a.reject(err)
	}
	if req.hash == 0 || !a.hashes[req.hash] {
		return a.reject(&RejectError{FailInfo: FailBadAlg, Reason: "unsupported hash algorithm " + req.hashOID.String() + ": use SHA-256, SHA-384 or SHA-512"})
	}
	if len(req.hashedMessage) != req.hash.Size() {
		return a.reject(&RejectError{FailInfo: FailBadDataFormat, Reason: fmt.Sprintf("the imprint has %d bytes; a %s digest has %d", len(req.hashedMessage), req.hash, req.hash.Size())})
	}
	policyDER := a.policyDER
	if req.policy != nil {
		policyDER = nil
		asked := mustMarshal(req.policy)
		for _, p := range a.accepted {
			if bytes.Equal(p, asked) {
				policyDER = p
				break
			}
		}
		if policyDER == nil {
			return a.reject(&RejectError{FailInfo: FailUnacceptedPolicy, Reason: "policy " + req.policy.String() + " is not offered by this TSA"})
		}
	}
	if req.extensions {
		return a.reject(&RejectError{FailInfo: FailUnacceptedExtension, Reason: "this TSA supports no request extension"})
	}
	if err := a.Ready(); err != nil {
		a.log.WarnContext(ctx, "tsa: not issuing", "err", err)
		return a.reject(&RejectError{FailInfo: FailTimeNotAvailable, Reason: "the TSA's time source is not available"})
	}

	serial, err := a.serials.NextSerial()
	if err != nil {
		return nil, "", FailSystemFailure, fmt.Errorf("tsa: serial number: %w", err)
	}
	gen := a.genTime()
	f := tokenFields{
		policyDER:   policyDER,
		imprintDER:  req.imprintDER,
		serial:      serialContents(serial),
		genTime:     gen,
		signingTime: gen.Truncate(time.Second),
		nonce:       req.nonce,
		certReq:     req.certReq,
		buf:         opts.Buf,
	}
	key := a.key.Load()
	resp, tokenAt, err := key.enc.encode(&f)
	if err != nil {
		return nil, "", FailSystemFailure, err
	}
	if tok != nil {
		pol := a.policy
		if req.policy != nil {
			pol = req.policy
		}
		*tok = key.token(resp[tokenAt:], opts.Buf != nil, req, pol, serial, gen)
	}
	if opts.Unrecorded || (a.recorder == nil && a.evidence == nil) {
		return resp, "", FailNone, nil
	}
	{
		issued := Issued{
			Serial:      serial,
			GenTime:     gen,
			Hash:        req.hash,
			Imprint:     req.hashedMessage,
			TokenSHA256: sha256.Sum256(resp[tokenAt:]),
		}
		if req.policy != nil {
			issued.Policy = req.policy
		} else {
			issued.Policy = a.policy
		}
		if a.evidence != nil {
			// One durable write: the evidence record is the record of
			// the token (the journal is for nodes without a log).
			ids, err := a.evidence.Append(ctx, key.issuedRecord(&issued, req.policy == nil, a.policyText, opts.Client))
			if err != nil {
				// Not recorded, not released: the token is dropped.
				return nil, "", FailSystemFailure, fmt.Errorf("tsa: record token %s: %w", serial.Text(16), err)
			}
			return resp, ids[0], FailNone, nil
		}
		if req.nonce != nil { // the journal keeps the nonce; the evidence record does not
			issued.Nonce = new(big.Int).SetBytes(req.nonce)
			if req.nonce[0]&0x80 != 0 { // a negative nonce, two's complement
				issued.Nonce.Sub(issued.Nonce, new(big.Int).Lsh(big.NewInt(1), uint(8*len(req.nonce))))
			}
		}
		if err := a.recorder.Record(ctx, &issued); err != nil {
			return nil, "", FailSystemFailure, fmt.Errorf("tsa: record token %s: %w", serial.Text(16), err)
		}
	}
	return resp, "", FailNone, nil
}

// issuedRecord is the timestamp.issued evidence of a token: the imprint,
// the SHA-256 of the token, serial and policy, the TSA and the client.
// defaultPolicy says that the policy is the TSA's own, whose text
// (policyText) is prepared.
func (k *authorityKey) issuedRecord(issued *Issued, defaultPolicy bool, policyText string, client *evidence.Actor) *evidence.Record {
	// One allocation for the record and its lists (this runs for every
	// token).
	buf := new(struct {
		rec     evidence.Record
		digests [2]evidence.Digest
		attrs   [2]evidence.Attribute
		actors  [2]evidence.Actor
	})
	subject := "tsa-serial-" + issued.Serial.Text(16)
	policy := policyText
	if !defaultPolicy {
		policy = issued.Policy.String()
	}
	buf.digests = [2]evidence.Digest{
		{Name: "imprint", Algorithm: hashNames[issued.Hash], Value: issued.Imprint},
		{Name: "token", Algorithm: "sha256", Value: issued.TokenSHA256[:]},
	}
	buf.attrs = [2]evidence.Attribute{{Key: "policy", Value: policy}, {Key: "serial", Value: subject[len("tsa-serial-"):]}}
	rec := &buf.rec
	*rec = evidence.Record{
		Type:       evidence.TimestampIssued,
		Time:       issued.GenTime,
		Subject:    subject,
		Digests:    buf.digests[:],
		Attributes: buf.attrs[:],
	}
	if client != nil {
		buf.actors = [2]evidence.Actor{*client, k.actor}
		rec.Actors = buf.actors[:2]
	} else {
		buf.actors[0] = k.actor
		rec.Actors = buf.actors[:1]
	}
	return rec
}

var hashNames = map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}

// genTime is the time of a new token, to the millisecond (the precision
// written in it). With ordering, two tokens never share a genTime and a
// later token never has an earlier one (RFC 3161 section 2.4.2).
func (a *Authority) genTime() time.Time {
	t := a.now().UTC().Truncate(time.Millisecond)
	if !a.ordering {
		return t
	}
	a.order.mu.Lock()
	defer a.order.mu.Unlock()
	if !t.After(a.order.lastGen) {
		t = a.order.lastGen.Add(time.Millisecond)
	}
	a.order.lastGen = t
	return t
}

func (a *Authority) reject(err error) ([]byte, string, FailInfo, error) {
	re, ok := errors.AsType[*RejectError](err)
	if !ok {
		return nil, "", FailSystemFailure, err
	}
	return Reject(re.FailInfo, re.Reason), "", re.FailInfo, nil
}

type metrics struct {
	requests *prometheus.CounterVec
	seconds  prometheus.Observer
	granted  prometheus.Counter
	failed   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_tsa_requests_total",
			Help: "Time-stamp requests answered, by outcome: granted, a failInfo name, or error.",
		}, []string{"status"}),
	}
	seconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pec_tsa_respond_seconds",
		Help:    "Time to answer a time-stamp request, signature and journal included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	})
	if reg != nil {
		m.requests = promreg.Register(reg, m.requests)
		seconds = promreg.Register(reg, seconds)
	}
	m.seconds = seconds
	m.granted = m.requests.WithLabelValues("granted")
	m.failed = m.requests.WithLabelValues("error")
	return m
}

func (m *metrics) observe(fail FailInfo, err error, d time.Duration) {
	m.seconds.Observe(d.Seconds())
	switch {
	case err != nil:
		m.failed.Inc()
	case fail == FailNone:
		m.granted.Inc()
	default:
		m.requests.WithLabelValues(fail.String()).Inc()
	}
}
