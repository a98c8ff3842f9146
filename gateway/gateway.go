// Package gateway is PEC's HTTP edge: it turns HTTP requests into calls of
// the services (middleoffice, signing, certvalidation, tsa) and their
// results and errors into protocol answers. The wire types are package
// [pec/gateway/api], which the typed Go client of the CLI shares.
//
//   - The tsa listener serves RFC 3161 section 3.4 "Time-Stamp Protocol via
//     HTTP": POST application/timestamp-query, answered with
//     application/timestamp-reply, and the published evidence log.
//   - The api listener serves the JSON API under /v1 to clients that
//     authenticate with a certificate (mutual TLS, RFC 8446 section 4.4.2).
//   - The ops listener serves the operators: /metrics (Prometheus text
//     format), /readyz with every check and its reason, /healthz. It is
//     meant for a loopback or management address, never for partners.
//   - The partner-facing listeners keep /healthz and a plain /readyz
//     (ready or not, no details) for load balancers.
//
// Every error of the JSON API and of the published log is an RFC 9457
// problem whose type (api.ProblemType) names one reason, decided in one
// place (problem.go); a wrong method is 405 with Allow. The time-stamp
// routes answer TimeStampResp rejections instead, as RFC 3161 clients
// expect. Internal error text is logged once here and never sent.
//
// Each partner-facing listener serves at most Options.MaxInFlight
// requests at once; one more is answered at once with 503 and Retry-After
// (RFC 3161 systemFailure on the time-stamp routes), never queued.
//
// Handlers stay thin: who may do what, proof reads and directory changes
// are methods of middleoffice (Proofs.Bundle, Admin), which the portals
// call too.
package gateway

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"pec/certvalidation"
	"pec/gateway/api"
	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// openAPI documents the api listener.
//
//go:embed openapi.yaml
var openAPI []byte

// TSAResponder is what the time-stamp endpoints need of a tsa.Authority.
type TSAResponder interface {
	// RespondWith answers one DER TimeStampReq; a client's mistake is a
	// rejection TimeStampResp and a nil error. evidenceID names the
	// token's timestamp.issued record ("" without an evidence log).
	RespondWith(ctx context.Context, req []byte, opts tsa.RespondOptions) (resp []byte, evidenceID string, err error)
}

// DefaultMaxInFlight is the in-flight bound of a listener when
// Options.MaxInFlight is 0.
const DefaultMaxInFlight = 1024

// Options hold optional collaborators; the zero value suits tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no gateway metrics
	Gatherer prometheus.Gatherer   // nil: no /metrics on the ops listener
	Ready    []ReadinessCheck      // what /readyz checks
	// Backup serves POST /backup and GET /proof/snapshot on the ops
	// listener (backup.go); nil: no backup routes.
	Backup Backuper

	// The signature API (POST /v1/signatures, /v1/signatures/batch,
	// /v1/verifications): served when set.
	Signing  *signing.Service  // nil: no signature endpoints
	Verifier *signing.Verifier // nil: no verification endpoint

	// Validator decides on client certificates at every API request and
	// serves POST /v1/validations; nil: crypto/tls's chain check alone (see
	// ValidateClientCertificates for the handshake).
	Validator *certvalidation.Validator

	// Proofs is the evidence log: GET /v1/proofs/{id} on the api listener
	// (through middleoffice.Proofs, with Policy), the published log on the
	// tsa listener; nil: neither.
	Proofs *ProofReader

	// Policy decides who may do what (proof reads, partner
	// administration; the signature service asks it too when cmd/pec
	// makes it the service's Authorizer), over the directory that client
	// certificates resolve to. The partner administration API (/v1/partners)
	// is served with it. nil: an empty directory, no administration API.
	Policy *middleoffice.Policy

	// Exchanges is the exchange service: /v1/exchanges, /v1/inbox (with
	// Policy). nil: no exchange routes.
	Exchanges *middleoffice.Exchanges
	// Uploads are the resumable uploads of large documents (/v1/uploads),
	// which submissions name; nil: none.
	Uploads *middleoffice.Uploads

	// MaxInFlight bounds the requests one partner-facing listener serves
	// at once (listen.max_in_flight); more are answered 503 with
	// Retry-After. 0: DefaultMaxInFlight; negative: no bound.
	MaxInFlight int

	// Pprof serves net/http/pprof's /debug/pprof/ on the ops listener
	// (profiles of the running node, for diagnosis); off by default:
	// `pec serve` turns it on when PEC_DEBUG_PPROF=1.
	Pprof bool
}

// ProofReader is the evidence log a node serves, and what every bundle
// carries: the certificates, and the validator that gathers their
// revocation data (ExportOptions.Validator).
type ProofReader struct {
	Log    *proof.Log
	Export proof.ExportOptions
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) logCerts() *proof.LogCerts {
	if o.Proofs == nil {
		return nil
	}
	return o.Proofs.Export.LogCerts
}

func (o Options) log() *proof.Log {
	if o.Proofs == nil {
		return nil
	}
	return o.Proofs.Log
}

// edge is what every handler of a listener shares: the logger, and the
// failure log that keeps an outage from writing a line a request.
type edge struct {
	log      *slog.Logger
	failures *failureLog
}

func newEdge(opts Options) *edge {
	return &edge{log: opts.logger(), failures: newFailureLog(opts.logger())}
}

// handle serves f, answering its error with writeError.
func (e *edge) handle(op operation, f func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			e.writeError(w, r, op, err)
		}
	})
}

// NewTSAHandler serves the tsa listener: POST /tsa, the published log
// (with opts.Proofs: no client certificate), /healthz and a plain /readyz.
// maxBody bounds a request (tsa.Config.MaxRequestBytes).
//
// It is NewTSAServer's Handler, without the fast lane of RFC 3161 requests
// that NewTSAServer adds when it serves the listener itself.
func NewTSAHandler(authority TSAResponder, maxBody int64, opts Options) http.Handler {
	return NewTSAServer(authority, maxBody, opts).Handler()
}

// NewAPIHandler serves the api listener. Every /v1 route requires a client
// certificate verified by the TLS layer (see ServerTLSConfig); a request
// without one is refused with 401 whatever the TLS settings.
func NewAPIHandler(authority TSAResponder, maxBody int64, opts Options) http.Handler {
	e := newEdge(opts)
	pol := opts.policy()
	m := newMetrics(opts.Registry, "api")
	v1 := http.NewServeMux()
	v1.Handle("GET /v1/whoami", m.instrument("/v1/whoami", whoami(pol)))
	v1.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPI)
	})
	// Any method: a wrong one is a TimeStampResp rejection too (405).
	v1.Handle("/v1/timestamps", m.instrument("/v1/timestamps", &tsaEndpoint{authority: authority, maxBody: maxBody, log: e.log, failures: e.failures}))
	registerSigning(v1, m, e, opts)
	if l := opts.log(); l != nil {
		proofs := middleoffice.NewProofs(l, pol, opts.Proofs.Export)
		registerProofs(v1, m, e, pol, proofs)
		if opts.Exchanges != nil {
			registerExchangeProof(v1, m, e, pol, proofs, opts.Exchanges)
		}
	}
	if opts.Policy != nil {
		registerPartners(v1, m, e, pol, middleoffice.NewAdmin(opts.Policy))
	}
	if opts.Exchanges != nil {
		registerExchanges(v1, m, e, pol, opts.Exchanges, opts.Uploads)
		if opts.Uploads != nil {
			registerUploads(v1, m, e, pol, opts.Exchanges, opts.Uploads)
		}
	}
	if opts.Validator != nil {
		v1.Handle("POST /v1/validations", m.instrument("/v1/validations", e.handle(operation{name: "certvalidation"}, (&validationEndpoint{v: opts.Validator}).serve)))
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", requireClientCert(problemRoutes(v1), opts.Validator, pol, e))
	registerProbes(mux, opts.Ready)
	return limitInFlight(problemRoutes(mux), opts.MaxInFlight, m)
}

// problemRoutes serves mux, answering the requests it routes nowhere with
// problems: 404 (not-found) when no route has the path, 405
// (method-not-allowed, with Allow) when routes have it for other methods.
func problemRoutes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r) // sets the path values
			return
		}
		// The mux's own answer: 404, 405 with Allow, or a redirect to the
		// canonical path.
		rec := &recorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeProblem(w, api.NewProblem(api.TypeNotFound, "no such route: "+quote(r.URL.Path)))
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeProblem(w, api.NewProblem(api.TypeMethodNotAllowed, r.Method+" is not served here; use "+rec.header.Get("Allow")))
		default:
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.body.Bytes())
		}
	})
}

// recorder keeps the answer of the mux's internal handlers.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

// ServerTLSConfig is the TLS configuration of a listener whose key is held by
// key (an HSM key: the private key never leaves the module). With clientRoots
// set, clients must present a certificate for clientAuth chaining to them.
func ServerTLSConfig(chain []*x509.Certificate, key crypto.Signer, clientRoots *x509.CertPool) (*tls.Config, error) {
	if len(chain) == 0 || key == nil {
		return nil, errors.New("gateway: TLS needs a certificate and its key")
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if clientRoots != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientRoots
	}
	return cfg, nil
}
