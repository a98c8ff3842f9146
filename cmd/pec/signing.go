package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/hsm"
	"pec/internal/devpki"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// resolveSigningPaths makes the signing section's paths absolute.
func (f *File) resolveSigningPaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range f.Signing.Profiles {
		abs(&f.Signing.Profiles[i].CertFile)
	}
	for i := range f.Signing.TrustAnchors {
		abs(&f.Signing.TrustAnchors[i])
	}
}

// openSigning builds the signature service of the signing section: the
// profiles' HSM keys and certificates, the TSA of the signature timestamps
// (this node's authority in-process, or signing.tsa_url), and the evidence
// log that records every operation, and the authorizer the profiles ask
// (the node's policy; nil: their allowed_clients alone, for the local
// operator of pec sign --config, who may use every profile anyway). It
// returns nil when no profile is configured.
func openSigning(ctx context.Context, cfg *File, keys hsm.KeyStore, authority *tsa.Authority, plog *proof.Log, authz signing.Authorizer, log *slog.Logger, reg prometheus.Registerer) (*signing.Service, error) {
	if len(cfg.Signing.Profiles) == 0 {
		return nil, nil
	}
	if plog == nil {
		return nil, errors.New("signing: the signature profiles need the evidence log (a proof section): every operation is recorded")
	}
	var ts signing.Timestamper
	switch {
	case cfg.Signing.TSAURL != "":
		ts = &tsa.Client{URL: cfg.Signing.TSAURL, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	case authority != nil:
		ts = signing.LocalTSA{Authority: authority}
	}
	return signing.Load(ctx, cfg.Signing, keys, signing.Options{
		Logger: log, Registry: reg, Timestamper: ts, Evidence: plog, Authorizer: authz,
	})
}

// openVerifier is the verifier of the verification API: the signing
// section's trust anchors, for signers and for their timestamps. It
// returns nil when none is configured.
func openVerifier(cfg *File) (*signing.Verifier, error) {
	if len(cfg.Signing.TrustAnchors) == 0 {
		return nil, nil
	}
	roots := x509.NewCertPool()
	for _, file := range cfg.Signing.TrustAnchors {
		certs, err := devpki.LoadCertsPEM(file)
		if err != nil {
			return nil, fmt.Errorf("signing.trust_anchors: %w", err)
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	// Chains are checked with crypto/x509 against the anchors; once
	// certvalidation is wired here, it replaces X509Validator (revocation
	// included) through signing.ChainValidator.
	return &signing.Verifier{Chain: signing.X509Validator{Roots: roots}, TSARoots: roots}, nil
}
