// Package gateway is PEC's HTTP edge: it turns HTTP requests into calls of the
// capability packages and their results and errors into protocol answers.
//
//   - The tsa listener serves RFC 3161 section 3.4 "Time-Stamp Protocol via
//     HTTP": POST application/timestamp-query, answered with
//     application/timestamp-reply.
//   - The api listener serves the JSON API under /v1 to clients that
//     authenticate with a certificate (mutual TLS, RFC 8446 section 4.4.2).
//     Errors are RFC 9457 problem details.
//   - Both serve /healthz, /readyz and /metrics (Prometheus text format).
//
// Only this package translates errors for HTTP clients; internal error text
// is logged once here and never sent.
package gateway

import (
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
	"pec/middleoffice"
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

// Options hold optional collaborators; the zero value suits tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no gateway metrics
	Gatherer prometheus.Gatherer   // nil: no /metrics
	Ready    []ReadinessCheck      // what /readyz checks

	// The signature API (POST /v1/signatures, /v1/signatures/batch,
	// /v1/verifications): served when set.
	Signing  *signing.Service  // nil: no signature endpoints
	Verifier *signing.Verifier // nil: no verification endpoint

	// Validator decides on client certificates at every API request and
	// serves POST /v1/validations; nil: crypto/tls's chain check alone (see
	// ValidateClientCertificates for the handshake).
	Validator *certvalidation.Validator

	// Proofs serves GET /v1/proofs/{id}; nil: no proof endpoint.
	Proofs *ProofReader

	// Policy decides who may do what (proof reads, partner
	// administration; the signature service asks it too when cmd/pec
	// makes it the service's Authorizer), over the directory that client
	// certificates resolve to. The partner administration API (/v1/partners)
	// is served with it. nil: an empty directory, no administration API.
	Policy *middleoffice.Policy
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// NewTSAHandler serves the tsa listener: POST /tsa plus the operator
// endpoints. maxBody bounds a request (tsa.Config.MaxRequestBytes).
func NewTSAHandler(authority TSAResponder, maxBody int64, opts Options) http.Handler {
	mux := http.NewServeMux()
	m := newMetrics(opts.Registry, "tsa")
	mux.Handle("/tsa", m.instrument("/tsa", &tsaEndpoint{authority: authority, maxBody: maxBody, log: opts.logger(), failures: newFailureLog(opts.logger())}))
	registerTlog(mux, m, opts) // the published log, with opts.Proofs: no client certificate
	registerOps(mux, opts.Ready, opts.Gatherer)
	return mux
}

// NewAPIHandler serves the api listener. Every /v1 route requires a client
// certificate verified by the TLS layer (see ServerTLSConfig); a request
// without one is refused with 401 whatever the TLS settings.
func NewAPIHandler(authority TSAResponder, maxBody int64, opts Options) http.Handler {
	log := opts.logger()
	pol := opts.policy()
	m := newMetrics(opts.Registry, "api")
	v1 := http.NewServeMux()
	v1.Handle("GET /v1/whoami", m.instrument("/v1/whoami", whoami(pol)))
	v1.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPI)
	})
	v1.Handle("POST /v1/timestamps", m.instrument("/v1/timestamps", &tsaEndpoint{authority: authority, maxBody: maxBody, log: log, failures: newFailureLog(log)}))
	registerSigning(v1, m, opts)
	registerProofs(v1, m, pol, opts)
	if opts.Policy != nil {
		registerPartners(v1, m, opts.Policy, log)
	}
	if opts.Validator != nil {
		v1.Handle("POST /v1/validations", m.instrument("/v1/validations", &validationEndpoint{v: opts.Validator, log: log}))
	}
	v1.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such API route: "+r.URL.Path)
	})

	mux := http.NewServeMux()
	mux.Handle("/v1/", requireClientCert(v1, opts.Validator, pol, log))
	registerOps(mux, opts.Ready, opts.Gatherer)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such route: "+r.URL.Path)
	})
	return mux
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
