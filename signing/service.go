package signing

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
)

// KeyStore is what a Service needs of hsm.KeyStore.
type KeyStore interface {
	// Signer returns the key labelled label.
	Signer(ctx context.Context, label string) (crypto.Signer, error)
}

// Options hold the collaborators of a Service.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
	// Timestamper gives the signature timestamps of the profiles that
	// want them (timestamp: true); required then.
	Timestamper Timestamper
	// Evidence records every operation (signature.created,
	// signature.refused) before its result is released; required.
	Evidence evidence.Appender
	// Authorizer decides which API clients may use which profile: the
	// node's policy (package middleoffice), which takes the profiles'
	// allowed_clients among its rules. nil: allowed_clients alone
	// (NewAllowedClients).
	Authorizer Authorizer
}

// Authorizer decides whether an API client may use a signature profile.
type Authorizer interface {
	// AuthorizeSign returns nil when the holder of cert (verified by
	// mutual TLS) may sign with the profile called profile, and an error
	// saying why not otherwise; the error's text goes into the evidence of
	// the refusal, never to the client. It is safe for concurrent use.
	AuthorizeSign(ctx context.Context, cert *x509.Certificate, profile string) error
}

// AllowedClients is the Authorizer of the profiles' allowed_clients alone,
// matched against the certificate (a name rule: its common name): the
// rules of a Service that is given no policy.
type AllowedClients map[string][]ClientRule

// NewAllowedClients collects the allowed_clients of each profile of cfg
// (which Validate has checked).
func NewAllowedClients(cfg Config) AllowedClients {
	a := AllowedClients{}
	for _, p := range cfg.Profiles {
		rules := []ClientRule{}
		for _, e := range p.AllowedClients {
			if r, err := ParseClientRule(e); err == nil {
				rules = append(rules, r)
			}
		}
		a[p.Name] = rules
	}
	return a
}

// AuthorizeSign implements Authorizer.
func (a AllowedClients) AuthorizeSign(_ context.Context, cert *x509.Certificate, profile string) error {
	fp := sha256.Sum256(cert.Raw)
	subject := cert.Subject.String()
	for _, r := range a[profile] {
		if r.MatchesCertificate(fp, subject, cert.Subject.CommonName) {
			return nil
		}
	}
	return errors.New("client not in allowed_clients")
}

// Service makes signatures with the configured profiles: it checks that
// the client may use the profile, signs, and records the evidence before
// returning the signature. It is safe for concurrent use.
type Service struct {
	profiles map[string]*Profile
	authz    Authorizer
	evidence evidence.Appender
	now      func() time.Time
	log      *slog.Logger
	metrics  *metrics
	maxDoc   int64
	maxBatch int

	ids     sync.Map // *x509.Certificate → *identity
	idCount atomic.Int64
}

// Profile is a loaded signature profile.
type Profile struct {
	Name      string
	Format    Format
	Timestamp bool
	signer    *Signer // its key rotates (Signer.Rotate)
	pdf       PDFOptions
	m         *profileMetrics
}

// Signer is the profile's signer.
func (p *Profile) Signer() *Signer { return p.signer }

// Client is the caller of a signature operation.
type Client struct {
	// Certificate is the client's certificate, verified by mutual TLS. nil
	// is the local operator (pec sign --config), who holds the keys
	// already and may use every profile.
	Certificate *x509.Certificate
}

// identity is what a request needs of its client, computed once.
type identity struct {
	local       bool
	cert        *x509.Certificate
	subject     string
	fingerprint [32]byte
	actor       evidence.Actor // role "client"
}

var localOperator = &identity{local: true, subject: "local operator", actor: evidence.Actor{Role: "operator", Subject: "local operator"}}

// identify returns the identity of c, from a cache keyed by the
// certificate: the requests of one TLS connection share one parsed
// certificate, and its subject text and fingerprint cost more than the
// rest of a request outside the HSM. The cache is bounded: when full, it
// starts over.
func (s *Service) identify(c Client) *identity {
	if c.Certificate == nil {
		return localOperator
	}
	if id, ok := s.ids.Load(c.Certificate); ok {
		return id.(*identity)
	}
	id := &identity{
		cert:        c.Certificate,
		subject:     c.Certificate.Subject.String(),
		fingerprint: sha256.Sum256(c.Certificate.Raw),
	}
	id.actor = evidence.Actor{Role: "client", Fingerprint: id.fingerprint, Subject: id.subject}
	if s.idCount.Add(1) > maxCachedIdentities {
		s.ids.Clear()
		s.idCount.Store(1)
	}
	s.ids.Store(c.Certificate, id)
	return id
}

const maxCachedIdentities = 4096

// Load builds the service from the signing section: each profile's key
// from keys, its certificate chain from its cert_file, checked to match
// (see NewSigner).
func Load(ctx context.Context, cfg Config, keys KeyStore, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Evidence == nil {
		return nil, errors.New("signing: an evidence log is required: every signature operation is recorded")
	}
	s := &Service{
		profiles: map[string]*Profile{},
		authz:    opts.Authorizer,
		evidence: opts.Evidence,
		now:      opts.Now,
		log:      opts.Logger,
		metrics:  newMetrics(opts.Registry),
		maxDoc:   cfg.MaxDocument(),
		maxBatch: cfg.maxBatch(),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.authz == nil {
		s.authz = NewAllowedClients(cfg)
	}
	for i, pc := range cfg.Profiles {
		at := fmt.Sprintf("signing.profiles[%d] (%s)", i, pc.Name)
		chain, err := LoadCertificates(pc.CertFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file: %w", at, err)
		}
		key, err := keys.Signer(ctx, pc.KeyLabel)
		if err != nil {
			return nil, fmt.Errorf("%s.key_label %q: %w", at, pc.KeyLabel, err)
		}
		so := SignerOptions{PSS: pc.RSAPSS, Now: s.now}
		so.Hash, _ = HashByName(cmpOr(pc.Digest, "sha256"))
		if pc.Timestamp {
			if opts.Timestamper == nil {
				return nil, fmt.Errorf("%s: timestamp: true needs a TSA", at)
			}
			so.Timestamper = opts.Timestamper
		}
		signer, err := NewSigner(key, chain, so)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		p := &Profile{Name: pc.Name, Format: Format(pc.Format), Timestamp: pc.Timestamp, signer: signer, m: s.metrics.profile(pc.Name, Format(pc.Format))}
		p.pdf = PDFOptions{Visible: pc.PDF.Visible, Page: pc.PDF.Page, Reason: pc.PDF.Reason, Location: pc.PDF.Location}
		if len(pc.PDF.Rect) == 4 {
			p.pdf.Rect = [4]float64(pc.PDF.Rect)
		}
		s.profiles[pc.Name] = p
	}
	return s, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// LoadCertificates reads a PEM file of certificates, the first one the
// signer's.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return certs, nil
}

// RotateKey makes key, certified by chain[0], the key of the profile
// called name (see [Signer.Rotate]): its next signature is made by it,
// recorded under the new certificate. It returns the certificate
// replaced.
func (s *Service) RotateKey(name string, key crypto.Signer, chain []*x509.Certificate) (old *x509.Certificate, err error) {
	p := s.profiles[name]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, name)
	}
	old, err = p.signer.Rotate(key, chain)
	if err != nil {
		return nil, fmt.Errorf("signing: profile %s: %w", name, err)
	}
	return old, nil
}

// Profile returns the profile called name, or nil.
func (s *Service) Profile(name string) *Profile { return s.profiles[name] }

// Profiles lists the profile names, sorted.
func (s *Service) Profiles() []string {
	names := make([]string, 0, len(s.profiles))
	for n := range s.profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// MaxDocument is the size limit of a document, in bytes.
func (s *Service) MaxDocument() int64 { return s.maxDoc }

// MaxBatch is the number of digests a batch may hold.
func (s *Service) MaxBatch() int { return s.maxBatch }

// Request is one signature to make.
type Request struct {
	Profile string
	// Document is the document to sign; or Digest is its digest computed
	// with the profile's hash (hash-only signing, CAdES profiles: the
	// signature is detached).
	Document []byte
	Digest   []byte
	Detached bool  // CAdES: the signature does not hold the document
	Visible  *bool // PAdES: overrides the profile's visibility
}

// Result is a signature made and recorded.
type Result struct {
	ID        string // of the evidence record
	Profile   string
	Format    Format
	Detached  bool
	Signature *Signature
}

// BatchResult is the signatures of a batch, in the order of its digests.
type BatchResult struct {
	ID         string
	Profile    string
	Signatures []*Signature
}

// profileFor finds the profile and asks the authorizer whether the client
// may use it (the local operator may use every profile). A refusal is
// recorded as evidence, with the authorizer's reason.
func (s *Service) profileFor(ctx context.Context, id *identity, name string) (*Profile, error) {
	p := s.profiles[name]
	if p == nil {
		s.metrics.unknown.Inc()
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, name)
	}
	if id.local {
		return p, nil
	}
	if why := s.authz.AuthorizeSign(ctx, id.cert, name); why != nil {
		p.m.refused.Inc()
		rec := &evidence.Record{Type: evidence.SignatureRefused, Time: s.now().UTC(), Actors: []evidence.Actor{id.actor, p.signer.current().actor},
			Attributes: []evidence.Attribute{{Key: "profile", Value: name}, {Key: "reason", Value: reasonText(why)}}}
		if _, err := s.evidence.Append(ctx, rec); err != nil {
			s.log.ErrorContext(ctx, "signing: record refusal", "err", err)
		}
		s.log.WarnContext(ctx, "signing: client refused", "profile", name, "client", id.subject)
		return nil, fmt.Errorf("%w %q: %w", ErrNotAllowed, name, why)
	}
	return p, nil
}

// reasonText bounds the authorizer's reason to what a record attribute
// holds.
func reasonText(err error) string {
	const limit = 1024
	s := err.Error()
	if len(s) > limit {
		s = s[:limit]
	}
	return s
}

// Sign makes one signature with a profile: CAdES attached or detached, of
// a document or of a digest, or PAdES of a PDF. The evidence is recorded
// before it returns. A client that may not use the profile gets
// ErrNotAllowed and nothing is signed; a request the profile cannot serve
// is a *RequestError; an unknown profile, ErrUnknownProfile.
func (s *Service) Sign(ctx context.Context, c Client, req Request) (*Result, error) {
	start := time.Now()
	id := s.identify(c)
	p, err := s.profileFor(ctx, id, req.Profile)
	if err != nil {
		return nil, err
	}
	// One key for the signature and its evidence, whatever a rotation
	// does meanwhile.
	k := p.signer.current()
	res, digest, err := s.sign(ctx, p, k, req)
	if err != nil {
		p.m.failure(err)
		return nil, err
	}
	if res.ID, err = s.record(ctx, id, p, k, [][]byte{digest}, []*Signature{res.Signature}); err != nil {
		p.m.errors.Inc()
		return nil, err
	}
	p.m.signed(1, time.Since(start))
	return res, nil
}

func (s *Service) sign(ctx context.Context, p *Profile, signer *signerKey, req Request) (*Result, []byte, error) {
	res := &Result{Profile: p.Name, Format: p.Format}
	hasDoc, hasDigest := req.Document != nil, req.Digest != nil
	switch {
	case hasDoc == hasDigest:
		return nil, nil, badRequest("give a document or a digest, one of them")
	case int64(len(req.Document)) > s.maxDoc:
		return nil, nil, badRequest("the document is larger than %d bytes: sign its digest instead", s.maxDoc)
	case p.Format == PAdES && hasDigest:
		return nil, nil, badRequest("profile %q makes PAdES signatures, which need the PDF itself, not its digest", p.Name)
	case p.Format == PAdES && req.Detached:
		return nil, nil, badRequest("profile %q makes PAdES signatures, which are inside the PDF: detached is for CAdES", p.Name)
	case p.Format == CAdES && req.Visible != nil:
		return nil, nil, badRequest("profile %q makes CAdES signatures, which have no appearance", p.Name)
	}
	var sig *Signature
	var err error
	switch {
	case hasDigest:
		res.Detached = true
		sig, err = signer.signDigest(ctx, req.Digest)
	case p.Format == PAdES:
		opts := p.pdf
		if req.Visible != nil {
			opts.Visible = *req.Visible
		}
		sig, err = signer.signPDF(ctx, req.Document, opts)
	default:
		res.Detached = req.Detached
		sig, err = signer.signContent(ctx, req.Document, req.Detached)
	}
	if err != nil {
		return nil, nil, err
	}
	res.Signature = sig
	if p.Format == PAdES {
		// The evidence names the document submitted; the signature
		// itself covers the byte range of the signed PDF.
		return res, digestOf(signer.hash, req.Document), nil
	}
	return res, sig.Digest, nil
}

// batchWorkers bounds the signatures of one batch in flight: as many as
// the HSM session pool holds by default on a small machine, so that a
// batch keeps the key busy without queueing on the pool.
const batchWorkers = 8

// SignDigests makes a detached CAdES signature of each digest (computed
// with the profile's hash) with a CAdES profile: one call, one
// authorization, one evidence record for the whole batch. Either every
// signature is returned or none.
func (s *Service) SignDigests(ctx context.Context, c Client, profile string, digests [][]byte) (*BatchResult, error) {
	start := time.Now()
	id := s.identify(c)
	p, err := s.profileFor(ctx, id, profile)
	if err != nil {
		return nil, err
	}
	if err := s.checkBatch(p, digests); err != nil {
		p.m.failure(err)
		return nil, err
	}
	k := p.signer.current() // the whole batch with one key
	sigs := make([]*Signature, len(digests))
	errs := make([]error, len(digests))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	workers := min(batchWorkers, len(digests))
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(digests); i += workers {
				if sigs[i], errs[i] = k.signDigest(ctx, digests[i]); errs[i] != nil {
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// The first failure, not the cancellations it caused.
		for _, e := range errs {
			if e != nil && !errors.Is(e, context.Canceled) {
				err = e
				break
			}
		}
		p.m.failure(err)
		return nil, err
	}
	res := &BatchResult{Profile: p.Name, Signatures: sigs}
	if res.ID, err = s.record(ctx, id, p, k, digests, sigs); err != nil {
		p.m.errors.Inc()
		return nil, err
	}
	p.m.signed(len(sigs), time.Since(start))
	return res, nil
}

func (s *Service) checkBatch(p *Profile, digests [][]byte) error {
	if p.Format != CAdES {
		return badRequest("profile %q makes PAdES signatures: a batch signs digests with a CAdES profile", p.Name)
	}
	if len(digests) == 0 || len(digests) > s.maxBatch {
		return badRequest("a batch holds 1 to %d digests, not %d", s.maxBatch, len(digests))
	}
	size := p.signer.Hash().Size()
	for i, d := range digests {
		if len(d) != size {
			return badRequest("digest %d has %d bytes; the profile hashes with %s (%d bytes)", i, len(d), hashName(p.signer.Hash(), nil), size)
		}
	}
	return nil
}

// record writes the evidence of signatures (signature.created): who asked,
// which key signed, the digests of what was signed, the SHA-256 of each
// signature value and of each signature timestamp (the token is recorded
// here, not by the TSA: one durable write for a B-T signature). A batch
// larger than one record holds is recorded in parts of sigsPerRecord
// signatures, appended together (one write), which share their subject
// and say which part they are. It returns the id of the (first) record,
// which is the operation's.
func (s *Service) record(ctx context.Context, id *identity, p *Profile, k *signerKey, digests [][]byte, sigs []*Signature) (string, error) {
	now := s.now().UTC()
	hash := hashNames[k.hash]
	var recs []*evidence.Record
	subject := ""
	if len(sigs) > sigsPerRecord {
		subject = "batch-" + evidence.NewID(now)
	}
	for start := 0; start < len(sigs); start += sigsPerRecord {
		end := min(start+sigsPerRecord, len(sigs))
		rec := &evidence.Record{Type: evidence.SignatureCreated, Time: now, Subject: subject, Actors: []evidence.Actor{id.actor, k.actor}}
		rec.Digests = make([]evidence.Digest, 0, 3*(end-start))
		for i := start; i < end; i++ {
			rec.Digests = append(rec.Digests, evidence.Digest{Name: indexedName("document/", i), Algorithm: hash, Value: digests[i]})
		}
		for i := start; i < end; i++ {
			sig := sigs[i]
			sum := sha256.Sum256(sig.Value)
			rec.Digests = append(rec.Digests, evidence.Digest{Name: indexedName("signature/", i), Algorithm: "sha256", Value: sum[:]})
			if sig.Timestamp != nil {
				ts := sha256.Sum256(sig.Timestamp.Raw)
				rec.Digests = append(rec.Digests, evidence.Digest{Name: indexedName("signature-timestamp/", i), Algorithm: "sha256", Value: ts[:]})
			}
		}
		rec.Attributes = []evidence.Attribute{{Key: "format", Value: string(p.Format)}}
		if subject != "" {
			parts := (len(sigs) + sigsPerRecord - 1) / sigsPerRecord
			rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "part", Value: strconv.Itoa(start/sigsPerRecord+1) + "/" + strconv.Itoa(parts)})
		}
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "profile", Value: p.Name})
		recs = append(recs, rec)
	}
	ids, err := s.evidence.Append(ctx, recs...)
	if err != nil {
		// Not recorded, not released.
		return "", fmt.Errorf("signing: record evidence: %w", err)
	}
	// The evidence is the record of each signature; the log says it at
	// debug level only, and builds nothing unless it will (a signature costs
	// tens of microseconds).
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "signing: signed", "id", ids[0], "profile", p.Name, "client", id.subject, "count", len(sigs))
	}
	return ids[0], nil
}

// sigsPerRecord bounds the signatures of one record: three digests each
// (document, signature, timestamp), under evidence's 256 items.
const sigsPerRecord = 64

var hashNames = map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}

func indexedName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

type metrics struct {
	ops     *prometheus.CounterVec   // profile, outcome
	seconds *prometheus.HistogramVec // format
	sigs    *prometheus.CounterVec   // profile
	unknown prometheus.Counter
}

// profileMetrics are the series of one profile, resolved once.
type profileMetrics struct {
	ok, refused, badRequest, errors prometheus.Counter
	sigs                            prometheus.Counter
	seconds                         prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_signing_requests_total",
			Help: "Signature requests, by profile and outcome: signed, refused, bad_request, error (unknown profiles under profile \"unknown\").",
		}, []string{"profile", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pec_signing_seconds",
			Help:    "Time to answer a signature request (batches included), by format.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"format"}),
		sigs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_signing_signatures_total",
			Help: "Signatures released, by profile (a batch counts each of its signatures).",
		}, []string{"profile"}),
	}
	if reg != nil {
		m.ops = registerOrReuse(reg, m.ops)
		m.seconds = registerOrReuse(reg, m.seconds)
		m.sigs = registerOrReuse(reg, m.sigs)
	}
	// Profile names come from the configuration only, so labels stay
	// bounded; an unknown one is counted as "unknown".
	m.unknown = m.ops.WithLabelValues("unknown", "unknown_profile")
	return m
}

func (m *metrics) profile(name string, f Format) *profileMetrics {
	return &profileMetrics{
		ok:         m.ops.WithLabelValues(name, "signed"),
		refused:    m.ops.WithLabelValues(name, "refused"),
		badRequest: m.ops.WithLabelValues(name, "bad_request"),
		errors:     m.ops.WithLabelValues(name, "error"),
		sigs:       m.sigs.WithLabelValues(name),
		seconds:    m.seconds.WithLabelValues(string(f)),
	}
}

func (m *profileMetrics) failure(err error) {
	if _, ok := errors.AsType[*RequestError](err); ok {
		m.badRequest.Inc()
		return
	}
	m.errors.Inc()
}

func (m *profileMetrics) signed(n int, d time.Duration) {
	m.ok.Inc()
	m.sigs.Add(float64(n))
	m.seconds.Observe(d.Seconds())
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
