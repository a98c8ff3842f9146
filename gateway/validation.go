package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"pec/certvalidation"
	"pec/gateway/api"
)

// Client certificates and the validation API rest on package
// certvalidation: RFC 5280 path validation with CRL and OCSP revocation,
// where crypto/tls would check only the chain.

// handshakeTimeout bounds the validation of a client certificate during a
// TLS handshake (revocation fetches included; each is bounded by
// certvalidation's own fetch timeout).
const handshakeTimeout = 15 * time.Second

// ValidateClientCertificates makes cfg (from ServerTLSConfig, with client
// roots) hand every client certificate to v for the clientAuth purpose, at
// each handshake, resumed ones included (tls.Config.VerifyConnection). The
// roots of cfg stay as the list of acceptable CAs the server announces;
// crypto/tls itself no longer decides. v caches each decision for at most
// the lifetime of the revocation data it rests on, and the API checks it
// again at every request (see NewAPIHandler), so that a certificate revoked
// while a connection stays open is refused once its cached status expires.
func ValidateClientCertificates(cfg *tls.Config, v *certvalidation.Validator, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("gateway: a client certificate is required")
		}
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		_, err := validateClient(ctx, v, cs.PeerCertificates)
		if err != nil {
			log.Info("client certificate refused", "subject", cs.PeerCertificates[0].Subject.String(), "err", err)
			return fmt.Errorf("gateway: client certificate refused: %w", err)
		}
		return nil
	}
}

func validateClient(ctx context.Context, v *certvalidation.Validator, chain []*x509.Certificate) (*certvalidation.Report, error) {
	return v.Validate(ctx, chain[0], certvalidation.Options{
		Purpose:       certvalidation.PurposeClientAuth,
		Intermediates: chain[1:],
	})
}

// validationTimeout bounds one POST /v1/validations: what fetching
// revocation data may take (each fetch has its own bound too).
const validationTimeout = 20 * time.Second

// maxValidationRequest bounds a request: certificates and CRLs in base64.
const maxValidationRequest = 4 << 20

type validationEndpoint struct {
	v *certvalidation.Validator
}

// serve answers POST /v1/validations: 200 with the report (valid or not)
// when the request could be processed, a problem otherwise.
func (e *validationEndpoint) serve(w http.ResponseWriter, r *http.Request) error {
	var req api.ValidationRequest
	if err := decodeJSON(w, r, maxValidationRequest, &req); err != nil {
		return err
	}
	if len(req.Certificate) == 0 {
		return invalidField("/certificate", "required")
	}
	certs, err := certvalidation.ParseCertificates(req.Certificate)
	if err != nil {
		return invalidField("/certificate", "not a DER or PEM certificate")
	}
	opts := certvalidation.Options{Intermediates: certs[1:], Host: req.Host, Email: req.Email}
	for i, der := range req.Intermediates {
		more, err := certvalidation.ParseCertificates(der)
		if err != nil {
			return invalidField(fmt.Sprintf("/intermediates/%d", i), "not a DER or PEM certificate")
		}
		opts.Intermediates = append(opts.Intermediates, more...)
	}
	if req.Purpose == "" {
		req.Purpose = string(certvalidation.PurposeAny)
	}
	if opts.Purpose, err = certvalidation.ParsePurpose(req.Purpose); err != nil {
		return invalidField("/purpose", err.Error())
	}
	opts.Revocation = e.v.RevocationPolicy(opts.Purpose)
	if req.Revocation != "" {
		p, err := certvalidation.ParseRevocationPolicy(req.Revocation)
		if err != nil {
			return invalidField("/revocation", err.Error())
		}
		opts.Revocation = opts.Revocation.Stricter(p)
	}
	if req.At != nil {
		opts.At = *req.At
	}
	if req.Host != "" && !certvalidation.ValidHost(req.Host) {
		return invalidField("/host", "not a DNS name or an IP address")
	}
	for i, der := range req.CRLs {
		crls, err := certvalidation.ParseCRLs(der)
		if err != nil {
			return invalidField(fmt.Sprintf("/crls/%d", i), "not a DER or PEM CRL")
		}
		opts.CRLs = append(opts.CRLs, crls...)
	}
	opts.OCSPResponses = req.OCSPResponses
	ctx, cancel := context.WithTimeout(r.Context(), validationTimeout)
	defer cancel()
	rep, err := e.v.Validate(ctx, certs[0], opts)
	if rep != nil {
		// Valid or not, the report is the answer.
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
	if errors.Is(err, certvalidation.ErrNoTrustAnchors) {
		return refuse(api.TypeNoTrustAnchors, fmt.Sprintf("purpose: this node has no trust anchors for %s", opts.Purpose))
	}
	return err
}
