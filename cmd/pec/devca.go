package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"pec/hsm"
	"pec/internal/devca"
	"pec/internal/devpki"
	"pec/internal/lifecycle"
	"pec/proof"
)

// withDevCA serves the development CA's revocation data (pec.yaml's devca
// section) on the tsa listener beside h: GET /crl/root.crl and the OCSP
// responder at /ocsp. They are routed before h, so the tsa listener's
// in-flight bound never turns away the node's own revocation fetches under
// time-stamp load. Each issuance and revocation of `pec ca` is appended to
// plog (when the node keeps an evidence log) as soon as the state file
// shows it. Without a devca section h is returned as it is.
func withDevCA(ctx context.Context, cfg *File, keys hsm.KeyStore, plog *proof.Log, h http.Handler, log *slog.Logger, reg prometheus.Registerer, life *lifecycle.Group) (http.Handler, error) {
	if !cfg.DevCA.Configured() {
		return h, nil
	}
	ca, err := openDevCA(ctx, cfg, keys)
	if err != nil {
		return nil, err
	}
	opts := devca.Options{Logger: log, Registry: reg}
	if plog != nil {
		opts.Evidence = plog
	} else {
		log.Warn("development CA: no evidence log (proof section): its issuances and revocations are not recorded")
	}
	r, err := devca.New(cfg.DevCA, ca, opts)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	if !sameAddr(cfg.DevCA.Host(), cfg.Listen.TSA) {
		log.Warn("development CA: the certificates name devca.url, which is not the tsa listener: relying parties will not reach this node's CRL and OCSP responder",
			"url", cfg.DevCA.URL, "tsa", cfg.Listen.TSA)
	}
	// A component started after the evidence log's sequencer: stopped
	// before it, so that its last records are sealed.
	if err := life.Start(ctx, &lifecycle.Runner{ComponentName: "development CA", Run: func(ctx context.Context) error {
		r.Run(ctx)
		return nil
	}}); err != nil {
		return nil, err
	}
	log.Info("development CA: serving its CRL and OCSP responder", "crl", cfg.DevCA.CRLURL(), "ocsp", cfg.DevCA.OCSPURL())

	mux := http.NewServeMux()
	mux.Handle(devca.CRLPath, r)
	mux.Handle(devca.OCSPPath, r)
	mux.Handle(devca.OCSPPath+"/", r)
	mux.Handle("/", h)
	return mux, nil
}

// openDevCA returns the development CA of cfg: the root's certificate, its
// key in the HSM, and the revocation URLs its certificates carry.
func openDevCA(ctx context.Context, cfg *File, keys hsm.KeyStore) (*devpki.CA, error) {
	certs, err := devpki.LoadCertsPEM(cfg.DevCA.CertFile)
	if err != nil {
		return nil, fmt.Errorf("devca.cert_file: %w", err)
	}
	signer, err := keys.Signer(ctx, cfg.DevCA.KeyLabel)
	if err != nil {
		return nil, fmt.Errorf("devca.key_label %q: %w", cfg.DevCA.KeyLabel, err)
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("devca.key_label: the key " + cfg.DevCA.KeyLabel + " is not the key of devca.cert_file " + cfg.DevCA.CertFile)
	}
	return &devpki.CA{Cert: certs[0], Signer: signer, Revocation: devpki.RevocationURLs{
		CRL: cfg.DevCA.CRLURL(), OCSP: cfg.DevCA.OCSPURL(),
	}}, nil
}

// sameAddr compares two HOST:PORT, "localhost" and 127.0.0.1 apart.
func sameAddr(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp {
		return false
	}
	if ah == bh {
		return true
	}
	aip, bip := net.ParseIP(ah), net.ParseIP(bh)
	return aip != nil && bip != nil && aip.Equal(bip)
}
