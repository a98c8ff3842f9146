package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/certvalidation"
	"pec/internal/devpki"
	"pec/signing"
)

// openValidator builds the certificate validator of the certvalidation
// section. A purpose without roots there takes them from the section that
// used to decide alone: clientAuth from tls.client_roots, documentSigning
// from signing.trust_anchors.
func openValidator(cfg *File, log *slog.Logger, reg prometheus.Registerer) (*certvalidation.Validator, error) {
	m, err := cfg.CertValidation.LoadMaterial()
	if err != nil {
		return nil, err
	}
	if len(m.Roots[certvalidation.PurposeClientAuth]) == 0 && cfg.TLS.ClientRoots != "" {
		roots, err := devpki.LoadCertsPEM(cfg.TLS.ClientRoots)
		if err != nil {
			return nil, fmt.Errorf("tls.client_roots: %w", err)
		}
		m.Roots[certvalidation.PurposeClientAuth] = roots
	}
	if len(m.Roots[certvalidation.PurposeDocumentSigning]) == 0 && len(cfg.Signing.TrustAnchors) > 0 {
		roots, err := certvalidation.LoadCertificates(cfg.Signing.TrustAnchors...)
		if err != nil {
			return nil, fmt.Errorf("signing.trust_anchors: %w", err)
		}
		m.Roots[certvalidation.PurposeDocumentSigning] = roots
	}
	return certvalidation.New(cfg.CertValidation, m, certvalidation.ValidatorOptions{Logger: log, Registry: reg})
}

// documentSigners is the signature verifier's path validation.
func documentSigners(v *certvalidation.Validator) signing.ChainValidator {
	return certChain{v: v, purpose: certvalidation.PurposeDocumentSigning}
}

// certChain is package certvalidation seen by the signature verifier
// (signing.ChainValidator): path validation with revocation, at the time
// the verifier asks for (the signature's proven time, for a past
// signature), for the documentSigning purpose.
type certChain struct {
	v       *certvalidation.Validator
	purpose certvalidation.Purpose
}

var _ signing.ChainValidator = certChain{}

// ValidateChain implements signing.ChainValidator.
func (c certChain) ValidateChain(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, at time.Time) (signing.ChainResult, error) {
	rep, err := c.v.Validate(ctx, cert, certvalidation.Options{Purpose: c.purpose, At: at, Intermediates: intermediates})
	if rep == nil {
		if errors.Is(err, certvalidation.ErrNoTrustAnchors) {
			return signing.ChainResult{Status: signing.ChainNotFound, Detail: "no trust anchors are configured for " + string(c.purpose)}, nil
		}
		return signing.ChainResult{}, err
	}
	res := signing.ChainResult{Path: rep.Path, Validation: rep}
	e, ok := errors.AsType[*certvalidation.Error](err)
	if !ok {
		return res, err // nil: valid
	}
	res.Detail = e.Error()
	switch e.Reason {
	case certvalidation.ReasonNoPath:
		res.Status = signing.ChainNotFound
	case certvalidation.ReasonExpired:
		res.Status = signing.ChainExpired
	case certvalidation.ReasonNotYetValid:
		res.Status = signing.ChainNotYetValid
	case certvalidation.ReasonRevoked:
		res.Status = signing.ChainRevoked
		for _, ev := range rep.RevocationData {
			if ev.Status == "revoked" && ev.Cert == e.Depth {
				res.RevokedAt = ev.RevokedAt
			}
		}
	case certvalidation.ReasonRevocationUnknown:
		// The validator's own failure to learn the status: the outcome is
		// unknown (INDETERMINATE), as the interface says.
		return res, e
	default:
		res.Status = signing.ChainInvalid
	}
	return res, nil
}
