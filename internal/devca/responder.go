package devca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ocsp"

	"pec/evidence"
	"pec/internal/devpki"
	"pec/internal/promreg"
)

// PollInterval is how often Run looks at the state file.
const PollInterval = time.Second

// maxOCSPRequest bounds an OCSP request: one CertID is about 100 bytes
// (RFC 5019 section 2.1.1 asks for one per request).
const maxOCSPRequest = 4 << 10

// Options hold a Responder's optional collaborators; the zero value suits
// tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
	// Evidence takes the records of issuances and revocations; nil: none
	// are recorded (a node without an evidence log).
	Evidence evidence.Appender
}

// Responder serves the revocation data of the development CA: GET
// CRLPath, and OCSP at OCSPPath (POST application/ocsp-request, or GET
// OCSPPath/BASE64, RFC 6960 appendix A.1). It is safe for concurrent use.
type Responder struct {
	cfg      Config
	ca       *devpki.CA
	log      *slog.Logger
	now      func() time.Time
	evidence evidence.Appender
	requests *prometheus.CounterVec // endpoint, result

	mu       sync.Mutex
	state    *State
	stat     os.FileInfo // of the state file loaded
	gen      int         // incremented at each load
	loadErr  error       // the last reload's failure, kept until the file changes
	crl      []byte
	crlThis  time.Time
	crlGen   int
	crlNum   *big.Int
	ocsp     map[string]ocspEntry // by serial and CertID hash
	recorded map[string]bool      // evidence ids appended (or found in the log)
}

type ocspEntry struct {
	der  []byte
	this time.Time
}

// New returns a Responder for ca's state (cfg.StateFile), which it reads
// at once: a missing or malformed state file is an error.
func New(cfg Config, ca *devpki.CA, opts Options) (*Responder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Configured() {
		return nil, errors.New("devca: not configured")
	}
	if ca == nil || ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("devca: no CA")
	}
	r := &Responder{
		cfg: cfg, ca: ca, log: opts.Logger, now: opts.Now, evidence: opts.Evidence,
		ocsp: map[string]ocspEntry{}, recorded: map[string]bool{},
		requests: promreg.Register(opts.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_devca_requests_total",
			Help: "Requests to the development CA's revocation data, by endpoint (crl, ocsp) and result (good, revoked, unknown, unauthorized, malformed, error).",
		}, []string{"endpoint", "result"})),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if _, err := r.current(); err != nil {
		return nil, err
	}
	return r, nil
}

// current returns the state, read again when the file changed since it
// was last read (another identity, size or modification time: Update
// replaces it by a rename).
func (r *Responder) current() (*State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.currentLocked()
}

func (r *Responder) currentLocked() (*State, error) {
	fi, err := os.Stat(r.cfg.StateFile)
	if err != nil {
		return nil, fmt.Errorf("devca: state file: %w", err)
	}
	if r.stat != nil && os.SameFile(r.stat, fi) && r.stat.Size() == fi.Size() && r.stat.ModTime().Equal(fi.ModTime()) {
		if r.loadErr != nil {
			return nil, r.loadErr
		}
		return r.state, nil
	}
	r.stat = fi
	s, err := Load(r.cfg.StateFile)
	if err != nil {
		// Fail closed: no answer rather than an answer from a state
		// that is no longer the CA's.
		r.loadErr = fmt.Errorf("devca: %w", err)
		r.log.Error("development CA: state file unreadable; CRL and OCSP answer errors until it is fixed", "err", err)
		return nil, r.loadErr
	}
	r.state, r.loadErr = s, nil
	r.gen++
	clear(r.ocsp)
	return s, nil
}

// CRL returns the current CRL (DER), signing a new one when the state
// changed or half of its validity has passed.
func (r *Responder) CRL() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.currentLocked()
	if err != nil {
		return nil, err
	}
	now := r.now()
	validity := r.cfg.crlValidity()
	if r.crl != nil && r.crlGen == r.gen && now.Before(r.crlThis.Add(validity/2)) {
		return r.crl, nil
	}
	var entries []x509.RevocationListEntry
	for _, c := range s.Certificates {
		if c.Revoked == nil || !c.NotAfter.After(now) {
			// An expired certificate leaves the CRL (RFC 5280 section
			// 3.3): its status is no longer anybody's business.
			continue
		}
		n, _ := new(big.Int).SetString(c.Serial, 16)
		code, _ := devpki.ParseReason(c.Revoked.Reason)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: c.Revoked.At, ReasonCode: code})
	}
	this := now.Truncate(time.Second)
	num := big.NewInt(this.UnixNano())
	if r.crlNum != nil && num.Cmp(r.crlNum) <= 0 {
		num = new(big.Int).Add(r.crlNum, big.NewInt(1)) // two CRLs within one second
	}
	der, err := r.ca.SignCRL(entries, num, this, this.Add(validity))
	if err != nil {
		return nil, err
	}
	r.crl, r.crlThis, r.crlGen, r.crlNum = der, this, r.gen, num
	r.log.Info("development CA: CRL signed", "revoked", len(entries), "crl_number", num.String())
	return der, nil
}

// OCSP answers one DER OCSPRequest with a DER OCSPResponse: a malformed
// request gets malformedRequest, a request about another issuer
// unauthorized (RFC 6960 section 2.3), an unknown serial number the status
// unknown. The result names the outcome (for metrics); err reports only
// our own failures (then the response is internalError or tryLater).
func (r *Responder) OCSP(req []byte) (resp []byte, result string, err error) {
	q, perr := ocsp.ParseRequest(req)
	if perr != nil {
		return ocsp.MalformedRequestErrorResponse, "malformed", nil
	}
	h := q.HashAlgorithm
	if !slices.Contains([]crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}, h) || q.SerialNumber == nil {
		return ocsp.MalformedRequestErrorResponse, "malformed", nil
	}
	name, key, err := issuerHashes(r.ca.Cert, h)
	if err != nil {
		return ocsp.InternalErrorErrorResponse, "error", err
	}
	if !bytes.Equal(q.IssuerNameHash, name) || !bytes.Equal(q.IssuerKeyHash, key) {
		return ocsp.UnauthorizedErrorResponse, "unauthorized", nil
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.currentLocked()
	if err != nil {
		return ocsp.TryLaterErrorResponse, "error", err
	}
	now := r.now()
	validity := r.cfg.ocspValidity()
	cacheKey := q.SerialNumber.Text(16) + " " + h.String()
	c := s.Lookup(q.SerialNumber)
	st := devpki.OCSPStatus{Serial: q.SerialNumber, Status: ocsp.Unknown, IssuerHash: h}
	result = "unknown"
	if c != nil {
		if e, ok := r.ocsp[cacheKey]; ok && now.Before(e.this.Add(validity/2)) {
			return e.der, statusResult(c), nil
		}
		st.Status, result = ocsp.Good, "good"
		if c.Revoked != nil {
			st.Status, result = ocsp.Revoked, "revoked"
			st.RevokedAt = c.Revoked.At
			st.Reason, _ = devpki.ParseReason(c.Revoked.Reason)
		}
	}
	st.ThisUpdate = now.Truncate(time.Second)
	st.NextUpdate = st.ThisUpdate.Add(validity)
	der, err := r.ca.SignOCSP(st)
	if err != nil {
		return ocsp.InternalErrorErrorResponse, "error", err
	}
	if c != nil {
		// Only the serial numbers the state holds: what outsiders ask
		// about cannot grow the cache.
		r.ocsp[cacheKey] = ocspEntry{der: der, this: st.ThisUpdate}
	}
	return der, result, nil
}

func statusResult(c *Certificate) string {
	if c.Revoked != nil {
		return "revoked"
	}
	return "good"
}

// issuerHashes are the CertID hashes of issuer (RFC 6960 section 4.1.1):
// of its subject's DER and of its public key's BIT STRING value.
func issuerHashes(issuer *x509.Certificate, h crypto.Hash) (name, key []byte, err error) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, nil, fmt.Errorf("devca: issuer key: %w", err)
	}
	hn := h.New()
	hn.Write(issuer.RawSubject)
	hk := h.New()
	hk.Write(spki.PublicKey.RightAlign())
	return hn.Sum(nil), hk.Sum(nil), nil
}

// ServeHTTP serves CRLPath and OCSPPath; other paths are 404.
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case req.URL.Path == CRLPath:
		r.serveCRL(w, req)
	case req.URL.Path == OCSPPath || strings.HasPrefix(req.URL.Path, OCSPPath+"/"):
		r.serveOCSP(w, req)
	default:
		http.NotFound(w, req)
	}
}

func (r *Responder) serveCRL(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	der, err := r.CRL()
	if err != nil {
		r.requests.WithLabelValues("crl", "error").Inc()
		r.log.Error("development CA: CRL", "err", err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the CRL cannot be made now", http.StatusServiceUnavailable)
		return
	}
	r.requests.WithLabelValues("crl", "ok").Inc()
	// RFC 2585 section 4.2; no-cache: a development CA's status changes
	// are to be seen at once.
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(der)
}

func (r *Responder) serveOCSP(w http.ResponseWriter, req *http.Request) {
	var body []byte
	switch req.Method {
	case http.MethodPost:
		if req.URL.Path != OCSPPath {
			http.NotFound(w, req)
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/ocsp-request" {
			r.requests.WithLabelValues("ocsp", "malformed").Inc()
			http.Error(w, "want Content-Type: application/ocsp-request", http.StatusUnsupportedMediaType)
			return
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxOCSPRequest))
		if err != nil {
			r.requests.WithLabelValues("ocsp", "malformed").Inc()
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		body = b
	case http.MethodGet:
		// RFC 6960 appendix A.1: GET {url}/{url-encoding of base-64
		// encoding of the DER encoding of the OCSPRequest}.
		enc := strings.TrimPrefix(req.URL.EscapedPath(), OCSPPath+"/")
		if dec, err := url.PathUnescape(enc); err == nil {
			enc = dec
		}
		if len(enc) > 2*maxOCSPRequest {
			r.requests.WithLabelValues("ocsp", "malformed").Inc()
			http.Error(w, "request too large", http.StatusRequestURITooLong)
			return
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			b = nil // answered malformedRequest below
		}
		body = b
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	resp, result, err := r.OCSP(body)
	if err != nil {
		r.log.Error("development CA: OCSP", "err", err)
	}
	r.requests.WithLabelValues("ocsp", result).Inc()
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(resp)
}

// Run looks at the state file every PollInterval until ctx ends: it reads
// it again when it changed and appends the records of the issuances and
// revocations it has not recorded yet (at once, then at each change, and a
// last time when ctx ends, so that what was done while the node ran is
// recorded by it: the caller closes the log after Run returns).
func (r *Responder) Run(ctx context.Context) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		r.Record(ctx)
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalRecordTimeout)
			defer cancel()
			r.Record(last)
			return
		case <-t.C:
		}
	}
}

// finalRecordTimeout bounds the last Record of Run, at shutdown.
const finalRecordTimeout = 5 * time.Second

// Record appends the evidence of every event of the state with an
// evidence id that is not yet recorded. A record the log already holds
// (a duplicate id: recorded by an earlier run of the node) counts as
// recorded. It returns the ids appended.
func (r *Responder) Record(ctx context.Context) []string {
	if r.evidence == nil {
		return nil
	}
	s, err := r.current()
	if err != nil {
		return nil // logged by current
	}
	var appended []string
	for _, c := range s.Certificates {
		for _, ev := range []struct {
			e    *Event
			verb string
		}{{&c.Issued, "issued"}, {c.Revoked, "revoked"}} {
			if ev.e == nil || ev.e.Evidence == "" {
				continue
			}
			r.mu.Lock()
			done := r.recorded[ev.e.Evidence]
			r.mu.Unlock()
			if done {
				continue
			}
			rec, err := EventRecord(c, *ev.e, ev.verb)
			if err == nil {
				_, err = r.evidence.Append(ctx, rec)
			}
			switch {
			case err == nil:
				appended = append(appended, ev.e.Evidence)
				r.log.InfoContext(ctx, "development CA: certificate "+ev.verb, "name", c.Name, "serial", c.Serial, "evidence_id", ev.e.Evidence)
			case errors.Is(err, evidence.ErrDuplicateID):
			default:
				if ctx.Err() == nil {
					r.log.WarnContext(ctx, "development CA: event not recorded yet; retried", "name", c.Name, "serial", c.Serial, "evidence_id", ev.e.Evidence, "err", err)
				}
				continue
			}
			r.mu.Lock()
			r.recorded[ev.e.Evidence] = true
			r.mu.Unlock()
		}
	}
	return appended
}

// EventRecord is the admin.action record of an issuance or revocation
// (verb "issued" or "revoked") of c: the operator who did it, the
// certificate's holder by fingerprint and subject, the certificate's
// SHA-256, and its name, serial number and the reason.
func EventRecord(c Certificate, ev Event, verb string) (*evidence.Record, error) {
	fp, err := hex.DecodeString(c.SHA256)
	if err != nil || len(fp) != 32 {
		return nil, fmt.Errorf("devca: certificate %s: bad fingerprint", c.Serial)
	}
	holder := evidence.Actor{Role: "subject", Subject: c.Subject}
	copy(holder.Fingerprint[:], fp)
	rec := &evidence.Record{
		ID:      ev.Evidence,
		Type:    evidence.AdminAction,
		Time:    ev.At.UTC(),
		Subject: "devca.certificate-" + verb,
		Actors:  []evidence.Actor{{Role: "operator", Subject: ev.By}, holder},
		Digests: []evidence.Digest{{Name: "certificate", Algorithm: "sha256", Value: fp}},
		Attributes: []evidence.Attribute{
			{Key: "name", Value: c.Name},
			{Key: "serial", Value: c.Serial},
		},
	}
	if verb == "revoked" {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "reason", Value: ev.Reason})
	}
	if c.Role != "" {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "role", Value: c.Role})
	}
	slices.SortFunc(rec.Attributes, func(a, b evidence.Attribute) int { return strings.Compare(a.Key, b.Key) })
	if verb == "revoked" && c.Issued.Evidence != "" {
		rec.Previous = []string{c.Issued.Evidence}
	}
	return rec, nil
}
