package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
)

// openExchanges builds the exchange service of the exchange section: the
// embedded store in the data directory, the policy's routing rules, the
// evidence log, the seal profile's signer, and the verifier of the
// recipients' acknowledgments (the signing section's trust anchors, or
// certvalidation's documentSigning purpose). It returns nil when the
// section names no seal profile. The caller runs its work queue.
func openExchanges(cfg *File, svc *signing.Service, verifier *signing.Verifier, pol *middleoffice.Policy, plog *proof.Log, log *slog.Logger, reg prometheus.Registerer, n *node) (*middleoffice.Exchanges, error) {
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
	store, err := middleoffice.OpenBoltExchanges(cfg.DataDir)
	if err != nil {
		return nil, failure(err)
	}
	n.onClose(store.Close)
	return middleoffice.NewExchanges(cfg.Exchange.ExchangeConfig, store, pol, plog, p.Signer(), middleoffice.ExchangeOptions{
		Logger: log, Registry: reg, AckVerifier: verifier,
	})
}

// runExchanges runs the work queue until ctx ends; done is closed once
// every worker stopped.
func runExchanges(ctx context.Context, x *middleoffice.Exchanges, log *slog.Logger) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		if err := x.Run(ctx); err != nil {
			log.Error("exchange: work queue stopped", "err", err)
		}
	}()
	return done
}
