package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/gateway"
	"pec/hsm"
	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
)

// openExchanges builds the exchange service of the exchange section: its
// store (exchange.store: embedded in the data directory, or the
// PostgreSQL the nodes share), the policy's routing rules, the
// evidence log, the seal profile's signer, and the verifier of the
// recipients' acknowledgments (the signing section's trust anchors, or
// certvalidation's documentSigning purpose). It returns nil when the
// section names no seal profile. The caller runs its work queue.
func openExchanges(ctx context.Context, cfg *File, keys hsm.KeyStore, webhook *http.Client, svc *signing.Service, verifier *signing.Verifier, pol *middleoffice.Policy, plog *proof.Log, log *slog.Logger, reg prometheus.Registerer, n *node) (*middleoffice.Exchanges, error) {
	if !cfg.Exchange.Configured() {
		return nil, nil
	}
	if svc == nil || plog == nil {
		return nil, fmt.Errorf("exchange.seal_profile: the exchange needs the signing section's profile %q and the evidence log", cfg.Exchange.SealProfile)
	}
	p := svc.Profile(cfg.Exchange.SealProfile)
	if p == nil {
		return nil, fmt.Errorf("exchange.seal_profile: no signature profile %q", cfg.Exchange.SealProfile)
	}
	store, err := openExchangeStore(ctx, cfg) // pgstores.go
	if err != nil {
		return nil, err
	}
	n.onClose(store.Close)
	n.exchangeStore = boltExchanges(store) // for backups (backup.go)
	// Every payload encrypted at rest under its exchange's data key,
	// wrapped by a key of the HSM per retention period and month:
	// destroyed at the end of the retention (crypto-shredding).
	atRest, err := middleoffice.NewAtRest(store, keys, cfg.Exchange.Retention, middleoffice.AtRestOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	go func() {
		// This month's and next month's keys made ahead, so that no
		// submission waits for a key generation (seconds for RSA-3072).
		if err := atRest.PrepareKEKs(ctx, time.Now()); err != nil && ctx.Err() == nil {
			log.Warn("exchange: the at-rest keys could not be made ahead; the first submission of the month makes them", "err", err)
		}
	}()
	return middleoffice.NewExchanges(cfg.Exchange.ExchangeConfig, atRest, pol, plog, p.Signer(), middleoffice.ExchangeOptions{
		Logger: log, Registry: reg, AckVerifier: verifier, Webhook: webhook,
	})
}

// webhookClient is the client that pushes exchanges and notifications to
// partners' HTTPS endpoints: it authenticates with the node's TLS
// certificate and HSM key (cert, the one its listeners present: the key
// never leaves the module, and a rotated key is the one the next
// handshake proves) and trusts the endpoints' certificates that chain to
// exchange.webhook_roots (none given: the system's roots). Without a TLS
// certificate configured, no push is possible (nil).
func webhookClient(cfg *File, cert *gateway.ServerCertificate) (*http.Client, error) {
	if cert == nil {
		return nil, nil
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: cert.GetClientCertificate}
	if len(cfg.Exchange.WebhookRoots) > 0 {
		tcfg.RootCAs = x509.NewCertPool()
		if err := addPEMFiles(tcfg.RootCAs, cfg.Exchange.WebhookRoots); err != nil {
			return nil, fmt.Errorf("exchange.webhook_roots: %w", err)
		}
	}
	return middleoffice.NewWebhookClient(tcfg), nil
}
