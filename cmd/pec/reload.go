package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/gateway"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/internal/promreg"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// reloadable are the parts of a running node that hold a key: what a
// SIGHUP gives the current generation of DATA_DIR/keys.json.
type reloadable struct {
	tsa      *tsa.Authority
	log      *proof.Log      // nil: no evidence log
	logCerts *proof.LogCerts // what bundles and /log-certificates carry; nil with no log
	signing  *signing.Service
	// tls are the TLS configurations of the listeners (nil ones are
	// skipped); they present cert, the tls key's certificate.
	tls []*tls.Config
	// cert is the node's TLS certificate and key (nodeCertificate): what
	// its listeners present and its webhook client proves; nil without a
	// TLS certificate configured.
	cert *gateway.ServerCertificate
	// webhook is the client of the webhook pushes (nil: none): its idle
	// connections are closed when the tls key rotates, so that the next
	// push authenticates with the new key.
	webhook *http.Client
}

// nodeCertificate is the node's TLS certificate (tls.cert_file) with its
// HSM key (tls.key_label), swapped by a reload when the tls key rotates;
// nil when none is configured.
func nodeCertificate(ctx context.Context, cfg *File, keys hsm.KeyStore) (*gateway.ServerCertificate, error) {
	if cfg.TLS.CertFile == "" || cfg.TLS.KeyLabel == "" {
		return nil, nil
	}
	chain, err := devpki.LoadCertsPEM(cfg.TLS.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	key, err := keys.Signer(ctx, cfg.TLS.KeyLabel)
	if err != nil {
		return nil, fmt.Errorf("tls.key_label %q: %w", cfg.TLS.KeyLabel, err)
	}
	return gateway.NewServerCertificate(chain, key)
}

// reloader applies key rotations to a running node.
type reloader struct {
	cfg  *File
	keys hsm.KeyStore
	r    reloadable
	log  *slog.Logger

	tlsCert *gateway.ServerCertificate // nil: no TLS listener
	reloads *prometheus.CounterVec     // pec_keys_reloads_total{result}

	mu       sync.Mutex
	live     map[string]string // slot → label of the key in use
	recorded map[string]bool   // evidence ids appended
}

// watchReload makes the node's keys rotatable: the TLS listeners present
// their certificate through a gateway.ServerCertificate (call it before
// they serve), the rotations the node already uses are recorded as
// evidence (once: a record the log holds is not appended again), and each
// SIGHUP until ctx ends applies the key state again. A failed reload
// leaves every key as it was and is logged; the node goes on serving.
func watchReload(ctx context.Context, cfg *File, keys hsm.KeyStore, r reloadable, log *slog.Logger, reg prometheus.Registerer, n *node) error {
	rl := &reloader{cfg: cfg, keys: keys, r: r, log: log, live: map[string]string{}, recorded: map[string]bool{}}
	rl.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pec_keys_reloads_total",
		Help: "Reloads of the key state (SIGHUP), by result: ok, or failed (the keys in use kept).",
	}, []string{"result"})
	if reg != nil {
		rl.reloads = promreg.Register(reg, rl.reloads)
	}
	for _, ref := range cfg.keyRefs() {
		rl.live[ref.slot] = *ref.label
	}
	if slices.ContainsFunc(r.tls, func(c *tls.Config) bool { return c != nil }) {
		if r.cert == nil {
			return errors.New("keys: TLS listeners without the node's certificate")
		}
		rl.tlsCert = r.cert
		for _, c := range r.tls {
			if c != nil {
				rl.tlsCert.Serve(c)
			}
		}
	} else {
		rl.tlsCert = r.cert // the webhook client's alone, if any
	}
	if st, err := loadKeyState(cfg); err == nil {
		rl.record(ctx, st)
	} else {
		log.Warn("keys: key state not read", "err", err)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop: // the node closes, whatever ctx says (a listener that failed)
				return
			case <-hup:
				if err := rl.reload(ctx); err != nil {
					rl.reloads.WithLabelValues("failed").Inc()
					log.Error("keys: reload failed; the keys in use are kept", "err", err)
				} else {
					rl.reloads.WithLabelValues("ok").Inc()
				}
			}
		}
	}()
	n.onClose(func() error { signal.Stop(hup); close(stop); <-done; return nil })
	return nil
}

// reload takes the current generation of every key of the key state that
// is not the one in use, key by key: each is checked first, then swapped
// atomically. It returns the failures, joined; the keys that were
// swapped stay swapped.
func (rl *reloader) reload(ctx context.Context) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	st, err := loadKeyState(rl.cfg)
	if err != nil {
		return err
	}
	var errs []error
	done := map[string]bool{}
	for _, ref := range rl.cfg.keyRefs() {
		g, ok := st.current(ref.slot)
		if !ok || g.Label == rl.live[ref.slot] || done[ref.slot] {
			continue
		}
		slots, err := rl.apply(ctx, ref.slot, g)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref.slot, err))
			continue
		}
		for _, s := range slots {
			done[s] = true
		}
	}
	rl.record(ctx, st)
	if len(errs) == 0 {
		rl.log.Info("keys: reloaded")
	}
	return errors.Join(errs...)
}

// apply makes generation g the key of slot (and of the signing slots
// sharing it, which it returns too).
func (rl *reloader) apply(ctx context.Context, slot string, g keyGeneration) ([]string, error) {
	certFile := rl.cfg.keyPath(g.CertFile)
	chain, err := devpki.LoadCertsPEM(certFile)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("certificate %s: %v", certFile, err)
	}
	if got := certSHA256(chain[0]); got != g.CertSHA256 {
		return nil, fmt.Errorf("certificate %s has sha256 %s, the key state says %s", certFile, got, g.CertSHA256)
	}
	key, err := rl.keys.Signer(ctx, g.Label)
	// A key another process (pec keys rotate) made a moment ago: a token
	// may show it to this process's sessions a little later, or be
	// briefly unavailable while SoftHSM2 re-reads its object store (the
	// HSM recovers by itself): look again, 13 s at most.
	for wait := 100 * time.Millisecond; (errors.Is(err, hsm.ErrKeyNotFound) || errors.Is(err, hsm.ErrUnavailable)) && wait <= 6400*time.Millisecond; wait *= 2 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		key, err = rl.keys.Signer(ctx, g.Label)
	}
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", g.Label, err)
	}
	slots := []string{slot}
	var old *x509.Certificate
	absent := ""
	switch {
	case slot == "tsa":
		old, err = rl.r.tsa.Rotate(key, chain)
	case slot == "proof" && rl.r.log == nil:
		absent = "the node keeps no evidence log"
	case slot == "proof":
		if !proof.IsEvidenceLogCertificate(chain[0]) || !samePublic(key.Public(), chain[0].PublicKey) {
			return nil, errors.New("not an evidence log certificate of the key")
		}
		// The certificate first: a bundle of a head the new key signs
		// must find it.
		if err = rl.r.logCerts.Rotate(chain); err == nil {
			err = rl.r.log.Rotate(key)
		}
	case slot == "tls" && rl.tlsCert == nil:
		absent = "no listener serves TLS"
	case slot == "tls":
		if old, err = rl.tlsCert.Set(chain, key); err == nil && rl.r.webhook != nil {
			rl.r.webhook.CloseIdleConnections()
		}
	case strings.HasPrefix(slot, "signing/") && rl.r.signing == nil:
		absent = "no signature service"
	case strings.HasPrefix(slot, "signing/"):
		profiles := g.Profiles
		if len(profiles) == 0 {
			profiles = []string{strings.TrimPrefix(slot, "signing/")}
		}
		slots = nil
		for _, p := range profiles {
			if old, err = rl.r.signing.RotateKey(p, key, chain); err != nil {
				break
			}
			slots = append(slots, "signing/"+p)
		}
	}
	if err != nil {
		return nil, err
	}
	if absent != "" {
		// Nothing serves with this key now; the node opens it at its
		// next start (the key and certificate were checked above).
		rl.live[slot] = g.Label
		rl.log.Info("keys: not in use by this node ("+absent+"); taken at its next start", "key", slot, "key_label", g.Label)
		return slots, nil
	}
	for _, s := range slots {
		rl.live[s] = g.Label
	}
	attrs := []any{"key", slot, "key_label", g.Label, "cert_sha256", g.CertSHA256}
	if old != nil {
		attrs = append(attrs, "old_cert_sha256", certSHA256(old))
	}
	rl.log.Info("keys: rotated", attrs...)
	return slots, nil
}

// record appends the keys.rotated evidence of every rotation to a key
// the node uses, once. A record the log holds already (a duplicate id)
// counts as recorded.
func (rl *reloader) record(ctx context.Context, st *keyState) {
	if rl.r.log == nil {
		return
	}
	for slot, s := range st.Keys {
		for i := 1; i < len(s.Generations); i++ {
			g := s.Generations[i]
			if rl.recorded[g.Evidence] {
				continue
			}
			if applied := slices.ContainsFunc(s.Generations[i:], func(h keyGeneration) bool { return h.Label == rl.live[slot] }); !applied {
				continue // not taken yet
			}
			rec, err := rotationRecord(slot, s, i)
			if err == nil {
				_, err = rl.r.log.Append(ctx, rec)
			}
			if err != nil && !errors.Is(err, evidence.ErrDuplicateID) {
				rl.log.Warn("keys: rotation not recorded yet; retried at the next reload", "key", slot, "evidence_id", g.Evidence, "err", err)
				continue
			}
			rl.recorded[g.Evidence] = true
		}
	}
}

// logCertsIn are the log certificates of the node's proof reader.
func logCertsIn(p *gateway.ProofReader) *proof.LogCerts {
	if p == nil {
		return nil
	}
	return p.Export.LogCerts
}
