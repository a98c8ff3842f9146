package certvalidation

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ValidatorOptions hold a Validator's optional collaborators; the zero
// value suits tests.
type ValidatorOptions struct {
	Logger     *slog.Logger          // nil: discard
	Registry   prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
	HTTPClient *http.Client          // nil: a client with the fetch timeout and the environment's proxy
}

// Options are the inputs of one validation. The zero value validates for
// PurposeAny at the current time with the configured anchors and policy.
type Options struct {
	Purpose Purpose   // "": PurposeAny
	At      time.Time // the validation time; zero: now (and the result may be cached)

	// Intermediates are untrusted certificates that may complete the path:
	// the rest of a TLS chain, the certificates of a CMS signature (the
	// first 64 are considered).
	Intermediates []*x509.Certificate
	// Roots, when set, are the trust anchors instead of the purpose's
	// configured ones.
	Roots []*x509.Certificate

	// CRLs and OCSPResponses (DER) come with the request (stapled, or
	// embedded in a signature) and are consulted before anything else.
	CRLs          [][]byte
	OCSPResponses [][]byte

	// Revocation overrides the purpose's configured policy when set.
	Revocation RevocationPolicy
	// Offline forbids fetching: decide with the given, local and cached
	// data (a proof checked years later).
	Offline bool

	Host  string // a DNS name or IP address the certificate must be for
	Email string // an email address the certificate must be for

	// The policy inputs of RFC 5280 section 6.1.1 (c) to (f).
	InitialPolicies       []string // user-initial-policy-set; empty: anyPolicy
	RequireExplicitPolicy bool     // initial-explicit-policy
	InhibitPolicyMapping  bool     // initial-policy-mapping-inhibit
	InhibitAnyPolicy      bool     // initial-any-policy-inhibit
}

// Validator validates certificates: path building and RFC 5280 section 6
// validation, CRL and OCSP revocation with caches, and a report of it all.
// It is safe for concurrent use.
type Validator struct {
	s             settings
	anchors       map[Purpose]*certSet
	intermediates *certSet
	localCRLs     []*crlRecord
	relax         map[[32]byte]relaxSet // by trust anchor fingerprint
	log           *slog.Logger
	now           func() time.Time
	fetch         *fetcher
	m             *metrics
	results       *lru[[32]byte, *Report]
	ocspCache     *lru[string, *ocspRecord]
	crlCache      *lru[string, *crlRecord]
	sigCache      *lru[sigKey, error] // certificate signatures checked, by certificate and issuer
}

// maxGivenIntermediates bounds the certificates a request may add to path
// building (a TLS chain has a handful; a CMS signature a few more).
const maxGivenIntermediates = 64

// sigCacheEntries bounds the cache of checked certificate signatures
// (about 100 bytes an entry).
const sigCacheEntries = 20000

// Load reads the files cfg names and returns a Validator for them.
func Load(cfg Config, opts ValidatorOptions) (*Validator, error) {
	m, err := cfg.LoadMaterial()
	if err != nil {
		return nil, err
	}
	return New(cfg, m, opts)
}

// New returns a Validator with the settings of cfg and the trust material
// m; the file lists of cfg are Load's to read, and ignored here.
func New(cfg Config, m Material, opts ValidatorOptions) (*Validator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := cfg.settings()
	v := &Validator{
		s:             s,
		anchors:       map[Purpose]*certSet{},
		intermediates: newCertSet(),
		log:           opts.Logger,
		now:           opts.Now,
		m:             newMetrics(opts.Registry),
		results:       newLRU[[32]byte, *Report](s.resultEntries),
		ocspCache:     newLRU[string, *ocspRecord](s.ocspEntries),
		crlCache:      newLRU[string, *crlRecord](s.crlEntries),
		sigCache:      newLRU[sigKey, error](sigCacheEntries),
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{
			Timeout:   s.fetchTimeout,
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second},
			// CRL and OCSP URLs are plain http; a redirect elsewhere is not
			// followed (RFC 5019 section 5 does not ask for it).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	v.fetch = &fetcher{client: client, timeout: s.fetchTimeout, m: v.m}
	for p, roots := range m.Roots {
		set := newCertSet()
		for _, r := range roots {
			if r == nil {
				return nil, fmt.Errorf("%w: nil root for %s", ErrBadOptions, p)
			}
			set.add(newCertInfo(r))
		}
		v.anchors[p] = set
	}
	for _, c := range m.Intermediates {
		if c != nil {
			v.intermediates.add(newCertInfo(c))
		}
	}
	for _, rel := range m.Relax {
		for _, a := range rel.Anchors {
			if a == nil {
				return nil, fmt.Errorf("%w: nil trust anchor in a relaxation", ErrBadOptions)
			}
			if v.relax == nil {
				v.relax = map[[32]byte]relaxSet{}
			}
			fp := sha256.Sum256(a.Raw)
			if v.relax[fp] == nil {
				v.relax[fp] = relaxSet{}
			}
			for _, c := range rel.Checks {
				if _, err := ParseProfileCheck(string(c)); err != nil {
					return nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
				}
				v.relax[fp][c] = true
			}
		}
	}
	for i, der := range m.CRLs {
		rec, err := parseCRL(der, "local", "")
		if err != nil {
			return nil, fmt.Errorf("certvalidation: CRL %d: %w", i+1, err)
		}
		v.localCRLs = append(v.localCRLs, rec)
	}
	return v, nil
}

// Anchors returns the trust anchors configured for purpose p.
func (v *Validator) Anchors(p Purpose) []*x509.Certificate {
	set := v.anchors[p]
	if set == nil {
		return nil
	}
	out := make([]*x509.Certificate, len(set.all))
	for i, ci := range set.all {
		out[i] = ci.c
	}
	return out
}

// RevocationPolicy returns the configured policy of purpose p.
func (v *Validator) RevocationPolicy(p Purpose) RevocationPolicy { return v.s.revocation[p] }

// Validate decides whether leaf is valid for opts.Purpose at opts.At: it
// builds every candidate path to a trust anchor and checks each (RFC 5280
// section 6.1) until one passes, then checks the revocation status of each
// certificate of that path (CRLs, RFC 5280 section 6.3, and OCSP, RFC
// 6960).
//
// The error is nil exactly when the chain is valid. An invalid chain gives
// an *Error and a report saying why; an impossible request (no anchors for
// the purpose, bad options) gives ErrNoTrustAnchors or ErrBadOptions and a
// nil report. A cancelled ctx stops fetches: their data counts as
// unavailable.
func (v *Validator) Validate(ctx context.Context, leaf *x509.Certificate, opts Options) (*Report, error) {
	if leaf == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrBadOptions)
	}
	purpose := opts.Purpose
	if purpose == "" {
		purpose = PurposeAny
	}
	if _, err := ParsePurpose(string(purpose)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	policy := opts.Revocation
	if policy == "" {
		policy = v.s.revocation[purpose]
	}
	if _, err := ParseRevocationPolicy(string(policy)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	anchors := v.anchors[purpose]
	if len(opts.Roots) > 0 {
		anchors = newCertSet()
		for _, r := range opts.Roots {
			if r != nil {
				anchors.add(newCertInfo(r))
			}
		}
	}
	if anchors == nil || len(anchors.all) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoTrustAnchors, purpose)
	}
	now := v.now()
	cacheable := opts.At.IsZero() && len(opts.Roots) == 0 && len(opts.CRLs) == 0 && len(opts.OCSPResponses) == 0 && v.s.resultEntries > 0
	var key [32]byte
	if cacheable {
		key = resultKey(leaf, purpose, policy, opts)
		if rep, ok := v.results.get(key, now); ok {
			v.m.lookup("results", true)
			v.m.validations.WithLabelValues(string(purpose), resultLabel(rep)).Inc()
			out := rep.clone()
			out.Cached = true
			v.restorePath(out, leaf, opts.Intermediates)
			if rep.Valid {
				return out, nil
			}
			return out, &Error{Cert: leaf, Reason: rep.Reason, Detail: rep.Detail}
		}
		v.m.lookup("results", false)
	}
	at := opts.At
	if at.IsZero() {
		at = now
	}
	start := time.Now()
	r := &run{
		v: v, opts: opts, purpose: purpose, policy: policy, at: at, now: now,
		anchors: anchors, infos: map[*x509.Certificate]*certInfo{},
		sigs: map[sigKey]error{}, signers: map[signerKey]*signerResult{},
		fetchesLeft: v.s.maxFetches,
		offline:     opts.Offline || v.s.offline,
	}
	rep, verr := r.validate(ctx, leaf)
	v.m.seconds.Observe(time.Since(start).Seconds())
	v.m.validations.WithLabelValues(string(purpose), resultLabel(rep)).Inc()
	if cacheable && (rep.Valid || rep.Reason == ReasonRevoked) {
		until := rep.ValidUntil
		if limit := now.Add(v.s.cacheMaxAge); until.IsZero() || until.After(limit) {
			until = limit
		}
		if until.After(now) {
			v.results.put(key, v.cacheCopy(rep, purpose), until)
		}
	}
	if verr != nil {
		v.log.DebugContext(ctx, "certificate invalid", "subject", leaf.Subject.String(), "purpose", string(purpose), "reason", string(verr.Reason), "err", verr.Error())
		return rep, verr
	}
	return rep, nil
}

// cacheCopy is the copy of a report the result cache keeps: its Path
// holds only the long-lived certificates (anchors, configured
// intermediates); those of the request, parsed afresh at each TLS
// handshake, are found again in the request on a hit (restorePath).
func (v *Validator) cacheCopy(rep *Report, p Purpose) *Report {
	c := rep.clone()
	for i, cert := range c.Path {
		fp := sha256.Sum256(cert.Raw)
		switch {
		case v.anchors[p] != nil && v.anchors[p].byFP[fp] != nil:
			c.Path[i] = v.anchors[p].byFP[fp].c
		case v.intermediates.byFP[fp] != nil:
			c.Path[i] = v.intermediates.byFP[fp].c
		default:
			c.Path[i] = nil
		}
	}
	return c
}

// restorePath fills the request's certificates back into a cached
// report's Path.
func (v *Validator) restorePath(rep *Report, leaf *x509.Certificate, given []*x509.Certificate) {
	for i, cert := range rep.Path {
		if cert != nil || i >= len(rep.Chain) {
			continue
		}
		for _, c := range append([]*x509.Certificate{leaf}, given...) {
			if c != nil {
				if sum := sha256.Sum256(c.Raw); hex.EncodeToString(sum[:]) == rep.Chain[i].SHA256 {
					rep.Path[i] = c
					break
				}
			}
		}
	}
}

func resultLabel(rep *Report) string {
	if rep.Valid {
		return "valid"
	}
	return string(rep.Reason)
}

// resultKey identifies the inputs of a validation at "now".
func resultKey(leaf *x509.Certificate, p Purpose, rp RevocationPolicy, o Options) [32]byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field(leaf.Raw)
	for _, c := range o.Intermediates {
		if c != nil {
			field(c.Raw)
		}
	}
	field([]byte{0xff}) // end of intermediates
	field([]byte(p))
	field([]byte(rp))
	field([]byte(o.Host))
	field([]byte(o.Email))
	field([]byte(strings.Join(o.InitialPolicies, ",")))
	field([]byte{b2u(o.RequireExplicitPolicy), b2u(o.InhibitPolicyMapping), b2u(o.InhibitAnyPolicy), b2u(o.Offline)})
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// run is the state of one validation.
type run struct {
	v           *Validator
	opts        Options
	purpose     Purpose
	policy      RevocationPolicy
	at, now     time.Time
	anchors     *certSet
	pool        *certSet // the request's intermediates and AIA fetches
	infos       map[*x509.Certificate]*certInfo
	sigs        map[sigKey]error
	signers     map[signerKey]*signerResult
	reqCRLs     []*crlRecord
	fetchesLeft int
	refused     int // fetches refused for want of budget (Limits.MaxFetches)
	offline     bool
	warnings    []string
	depth       int // nesting of CRL-issuer validations
}

type sigKey struct{ child, parent [32]byte }

func (r *run) info(c *x509.Certificate) *certInfo {
	if ci, ok := r.infos[c]; ok {
		return ci
	}
	ci := newCertInfo(c)
	r.infos[c] = ci
	return ci
}

func (r *run) warn(format string, args ...any) {
	w := fmt.Sprintf(format, args...)
	if !slices.Contains(r.warnings, w) {
		r.warnings = append(r.warnings, w)
	}
}

// takeFetch consumes one fetch of the validation's budget.
func (r *run) takeFetch() bool {
	if r.offline {
		return false
	}
	if r.fetchesLeft <= 0 {
		r.refused++
		return false
	}
	r.fetchesLeft--
	return true
}

// pathOutcome is the result of checking one candidate path.
type pathOutcome struct {
	path      []*certInfo
	err       *Error
	checks    []Check
	evidence  []Evidence
	policies  []string
	progress  int // checks passed before the failure
	until     time.Time
	structure bool // the structural checks passed (revocation may not have)
}

func (r *run) validate(ctx context.Context, leafCert *x509.Certificate) (*Report, *Error) {
	rep := &Report{Purpose: r.purpose, At: r.at.UTC(), Revocation: r.policy}
	leaf := r.info(leafCert)
	r.pool = newCertSet()
	given := r.opts.Intermediates
	truncated := ""
	if len(given) > maxGivenIntermediates {
		truncated = fmt.Sprintf("intermediates bound: only the first %d of %d intermediate certificates were considered", maxGivenIntermediates, len(given))
		r.warn("%s", truncated)
		given = given[:maxGivenIntermediates]
	}
	for _, c := range given {
		if c != nil {
			r.pool.add(r.info(c))
		}
	}
	for i, der := range r.opts.CRLs {
		rec, err := parseCRL(der, "request", "")
		if err != nil {
			r.warn("CRL %d of the request ignored: %v", i+1, err)
			continue
		}
		r.reqCRLs = append(r.reqCRLs, rec)
	}

	var best *pathOutcome
	var accepted *pathOutcome
	var limited *pathOutcome // the first candidate stopped by a bound
	b := r.newBuilder(r.anchors)
	tryPaths := func() {
		b.build(leaf, func(path []*certInfo) bool {
			out := r.checkPath(ctx, path, r.purpose, true)
			cand := Candidate{Chain: subjects(path)}
			if out.err != nil {
				cand.Reason, cand.Detail = out.err.Reason, out.err.Detail
			}
			rep.Candidates = append(rep.Candidates, cand)
			if out.err == nil {
				accepted = out
				return false
			}
			if out.err.Reason == ReasonLimitExceeded && limited == nil {
				limited = out
			}
			if best == nil || closer(out, best) {
				best = out
			}
			return ctx.Err() == nil
		})
	}
	tryPaths()
	// With no complete path at all, fetch missing issuers named by AIA
	// caIssuers (when allowed), then try again.
	if accepted == nil && best == nil && b.limit == "" && r.v.s.aia {
		if r.fetchIssuers(ctx, leaf) {
			b = r.newBuilder(r.anchors)
			tryPaths()
		}
	}

	// A bound that stopped the search, or the check of a candidate, leaves
	// the verdict open whatever the other candidates gave: the failure is
	// limit_exceeded, naming the bound, never the failure of a path that
	// was only a guess.
	cut := cmp.Or(b.limit, b.depthCut, truncated)
	var out *pathOutcome
	var verr *Error
	switch {
	case accepted != nil:
		out = accepted
	case limited != nil:
		out = limited
		verr = limited.err
	case cut != "":
		out = best
		verr = &Error{Cert: leafCert, Reason: ReasonLimitExceeded, Detail: "path building stopped: " + cut}
		if best != nil {
			verr.Detail += fmt.Sprintf("; the closest candidate path failed: %s: %s", best.err.Reason, best.err.Detail)
		}
	case best != nil:
		out = best
		verr = best.err
	default:
		detail := "no path to a trust anchor"
		if len(b.deadEnds) > 0 {
			detail += ": " + strings.Join(uniq(b.deadEnds), "; ")
		}
		verr = &Error{Cert: leafCert, Reason: ReasonNoPath, Detail: detail}
	}
	if out != nil {
		for i, ci := range out.path {
			rep.Chain = append(rep.Chain, certInfoOf(ci.c, i == len(out.path)-1))
			rep.Path = append(rep.Path, ci.c)
		}
		rep.Checks = out.checks
		rep.RevocationData = out.evidence
		rep.Policies = out.policies
		rep.ValidUntil = out.until
	}
	if b.limit != "" && (verr == nil || verr.Reason != ReasonLimitExceeded) {
		r.warn("path building stopped early: %s", b.limit)
	}
	rep.Warnings = r.warnings
	if verr != nil {
		rep.Valid = false
		rep.Reason = verr.Reason
		rep.Detail = verr.Error()
		return rep, verr
	}
	rep.Valid = true
	return rep, nil
}

// closer reports whether candidate a came closer to validity than b, to
// report the failure of the path most likely meant: one that passed every
// structural check (failing on revocation) before others; then one that is
// a real chain of signatures (a signature that does not verify says the
// candidate issuer never issued the certificate: a wrong guess, not a
// finding); then one that failed nearer the end certificate; then one that
// passed more checks.
func closer(a, b *pathOutcome) bool {
	if a.structure != b.structure {
		return a.structure
	}
	aSig, bSig := a.err.Reason == ReasonBadSignature, b.err.Reason == ReasonBadSignature
	if aSig != bSig {
		return !aSig
	}
	if a.err.Depth != b.err.Depth {
		return a.err.Depth < b.err.Depth
	}
	return a.progress > b.progress
}

func (r *run) newBuilder(anchors *certSet) *builder {
	return &builder{
		anchors:  anchors,
		pools:    []*certSet{r.pool, r.v.intermediates},
		maxDepth: r.v.s.maxDepth,
		maxPaths: r.v.s.maxCandidates,
		maxSteps: 64 * r.v.s.maxCandidates,
	}
}

func subjects(path []*certInfo) []string {
	out := make([]string, len(path))
	for i, ci := range path {
		out[i] = ci.c.Subject.String()
	}
	return out
}

func uniq(s []string) []string {
	var out []string
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// fetchIssuers follows the caIssuers URLs of the certificates that end a
// partial path (RFC 5280 section 4.2.2.1), adding what they return to the
// pool. It reports whether anything was added.
func (r *run) fetchIssuers(ctx context.Context, leaf *certInfo) bool {
	added := false
	frontier := []*certInfo{leaf}
	for range r.v.s.maxDepth {
		var next []*certInfo
		for _, ci := range frontier {
			for _, u := range ci.c.IssuingCertificateURL {
				if !fetchableURL(u) {
					continue
				}
				if !r.takeFetch() {
					if !r.offline {
						r.warn("caIssuers %s: limits.max_fetches: fetch budget exhausted", u)
					}
					continue
				}
				body, err := r.v.fetch.get(ctx, "aia", u, r.v.s.maxResponseBytes)
				if err != nil {
					r.warn("caIssuers %s: %v", u, err)
					continue
				}
				certs, err := ParseCertificates(body)
				if err != nil {
					r.warn("caIssuers %s: %v", u, err)
					continue
				}
				for _, c := range certs {
					nci := r.info(c)
					if r.pool.has(nci) || r.anchors.has(nci) {
						continue
					}
					r.pool.add(nci)
					added = true
					next = append(next, nci)
				}
			}
		}
		if len(next) == 0 {
			break
		}
		frontier = next
	}
	return added
}
