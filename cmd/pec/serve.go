package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"pec/gateway"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/internal/lifecycle"
	"pec/middleoffice"
	"pec/proof"
	"pec/tsa"
)

func newServeCommand() *cobra.Command {
	var (
		configPath string
		dev        bool
		dir        string
		listens    []string
	)
	cmd := &cobra.Command{
		Use:   "serve (--config FILE | --dev --dir DIR) [--listen NAME=HOST:PORT]...",
		Short: "Run a PEC node: the TSA, the API, health and metrics",
		Long: `serve reads and checks the configuration, opens the keys, and serves until SIGTERM or
SIGINT, then finishes the requests under way. With --dev --dir DIR it first runs
'pec init --dir DIR' when DIR holds no pec.yaml. --listen NAME=HOST:PORT (NAME: tsa, api,
ops, web, smtp) overrides the address of one service; an empty address turns it off, port 0
picks a free one (the addresses are printed). ops serves /metrics, /readyz with every check
and its reason, and /healthz, over plain HTTP: give it a loopback or management address.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			overrides, err := parseListens(listens)
			if err != nil {
				return err
			}
			switch {
			case dev && dir == "":
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--dev needs --dir DIR")}}
			case dev && configPath != "":
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--dev and --config exclude each other")}}
			case !dev && configPath == "":
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE (or --dev --dir DIR) is required")}}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dev {
				configPath = filepath.Join(dir, "pec.yaml")
				if _, err := os.Stat(configPath); errors.Is(err, os.ErrNotExist) {
					if err := initNode(ctx, initOptions{dir: dir}, cmd.OutOrStdout()); err != nil {
						return err
					}
				}
			}
			cfg, err := LoadConfig(configPath)
			if err != nil {
				return inputError(err)
			}
			for name, addr := range overrides {
				*cfg.Listen.addr(name) = addr
			}
			return serve(ctx, cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	cmd.Flags().BoolVar(&dev, "dev", false, "development node: init DIR first if it holds no pec.yaml")
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the development node (with --dev)")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "NAME=HOST:PORT: override the address of service NAME (tsa, api, ops, web, smtp)")
	return cmd
}

func parseListens(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		name, addr, ok := strings.Cut(v, "=")
		known := false
		for _, n := range serviceNames {
			known = known || n == name
		}
		if !ok || !known {
			return nil, &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--listen %q: want NAME=HOST:PORT with NAME one of %s", v, strings.Join(serviceNames, ", "))}}
		}
		if addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return nil, &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--listen %q: %q is not HOST:PORT", v, addr)}}
			}
		}
		out[name] = addr
	}
	return out, nil
}

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cmpOr(cfg.Level, "info")))
	hopts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, hopts))
	}
	return slog.New(slog.NewJSONHandler(w, hopts))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// node is what serve opens; close releases it in reverse order.
type node struct {
	closers []func() error
	// exchangeStore is the embedded exchange store, for backups; nil:
	// none, or another kind.
	exchangeStore *middleoffice.BoltExchangeStore
}

func (n *node) onClose(f func() error) { n.closers = append(n.closers, f) }

func (n *node) close(log *slog.Logger) {
	for i := len(n.closers) - 1; i >= 0; i-- {
		if err := n.closers[i](); err != nil {
			log.Error("close", "err", err)
		}
	}
}

// stopTimeout bounds a node's stop: the requests under way, the queue's
// jobs in flight, the last seal.
const stopTimeout = 30 * time.Second

// serve runs the node until ctx is cancelled or one of its components
// fails. Its long-running parts are components of one lifecycle
// (internal/lifecycle): the clock guard, the evidence log's sequencer, the
// development CA, the exchange's queue workers, then the listeners; they
// stop in the reverse order — the listeners finish the requests under
// way, the queue finishes its jobs in flight or hands them back, the log
// seals what waits — within stopTimeout, before the stores and the keys
// close.
func serve(ctx context.Context, cfg *File, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	setServingProcs()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var n node
	defer n.close(log)
	life := lifecycle.New(log)
	defer func() {
		// Before the stores and keys close (deferred after n.close: run
		// first).
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		if err := life.Stop(stopCtx); err != nil {
			log.Warn("stop", "err", err)
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	// One node per data directory, told before any key or store opens.
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	n.onClose(unlock)
	// One node per tsa.node_id among the nodes sharing a PostgreSQL log
	// (nodeclaim.go): their serial numbers must never repeat.
	var claim *nodeClaim
	if cfg.Proof.Configured() && cfg.Proof.PostgresURLEnv != "" {
		if url := os.Getenv(cfg.Proof.PostgresURLEnv); url != "" {
			if claim, err = claimNodeID(ctx, url, cfg.TSA.NodeID, log); err != nil {
				return failure(err)
			}
			n.onClose(claim.Close)
		}
	}

	if _, err := applyKeyState(cfg); err != nil { // keystate.go: the current generation of each key
		return inputError(err)
	}
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{Logger: log, Registry: reg})
	if err != nil {
		return fmt.Errorf("open keys: %w", err)
	}
	n.onClose(keys.Close)

	authority, clock, err := openTSA(ctx, cfg, keys, log, reg, &n)
	if err != nil {
		return err
	}
	if err := life.Start(ctx, &lifecycle.Runner{ComponentName: "tsa clock guard", Run: func(ctx context.Context) error {
		clock.Run(ctx) // returns at once when it has no NTP server to watch
		<-ctx.Done()
		return nil
	}}); err != nil {
		return err
	}

	// The log time-stamps its checkpoints with the authority, which knows
	// nothing of the log; clients get tokens from the same authority
	// recording each in the log (served): no cycle, nothing bound late.
	plog, err := openProof(ctx, cfg, keys, authority, log, reg, &n)
	if err != nil {
		// A rolled-back, forked or damaged store is refused: exit 1,
		// the sizes and roots named.
		return failure(err)
	}
	if plog != nil {
		// The sequencer runs since Open; stopping it seals what waits.
		if err := life.Start(ctx, lifecycle.Func{ComponentName: "evidence log sequencer", OnStop: func(context.Context) error { return plog.Close() }}); err != nil {
			return err
		}
	}
	served := authority
	gopts := gateway.Options{
		Logger:   log,
		Registry: reg,
		Gatherer: reg,
		Ready:    []gateway.ReadinessCheck{{Name: "tsa", Check: authority.Ready}, {Name: "hsm", Check: keys.Ready}},
		// Each partner-facing listener answers 503 + Retry-After beyond
		// it, rather than queueing without bound.
		MaxInFlight: cfg.Listen.MaxInFlight,
		// A diagnosis aid, off unless asked for: the runtime's profiles
		// on the ops listener (bench/edgeload -profile).
		Pprof: os.Getenv("PEC_DEBUG_PPROF") == "1",
	}
	if claim != nil {
		gopts.Ready = append(gopts.Ready, gateway.ReadinessCheck{Name: "node_id", Check: claim.Ready})
	}
	if plog != nil {
		served = authority.WithEvidence(plog)
		gopts.Ready = append(gopts.Ready, gateway.ReadinessCheck{Name: "proof", Check: plog.Ready})
		if gopts.Proofs, err = proofReader(cfg, plog); err != nil {
			return err
		}
	}
	// One policy for every decision: the directory (pec.yaml's base and
	// the changes of the administration API), the profiles'
	// allowed_clients, proof.auditors.
	if gopts.Policy, err = openDirectory(ctx, cfg, plog, log, &n); err != nil {
		return err
	}
	if gopts.Signing, err = openSigning(ctx, cfg, keys, authority, plog, gopts.Policy, log, reg); err != nil {
		return err
	}
	if gopts.Verifier, err = openVerifier(cfg); err != nil {
		return err
	}
	if gopts.Validator, err = openValidator(cfg, log, reg); err != nil {
		return err
	}
	if gopts.Proofs != nil && hasCertValidation(cfg) {
		gopts.Proofs.Export.Validator = gopts.Validator // bundles carry revocation data
	}
	if gopts.Verifier != nil {
		gopts.Verifier.Chain = documentSigners(gopts.Validator) // revocation included
	}
	// The node's TLS certificate: what its listeners present and its
	// webhook client proves, swapped when the tls key rotates.
	nodeCert, err := nodeCertificate(ctx, cfg, keys)
	if err != nil {
		return err
	}
	var webhook *http.Client
	if cfg.Exchange.Configured() {
		if webhook, err = webhookClient(cfg, nodeCert); err != nil {
			return err
		}
	}
	if gopts.Exchanges, err = openExchanges(ctx, cfg, keys, webhook, gopts.Signing, gopts.Verifier, gopts.Policy, plog, log, reg, &n); err != nil {
		return err
	}
	if gopts.Exchanges != nil {
		if gopts.Uploads, err = middleoffice.OpenUploads(filepath.Join(cfg.DataDir, "uploads"), 0, nil); err != nil {
			return err
		}
	}
	if gopts.Exchanges != nil {
		// The queue stops after the listeners: requests under way finish
		// their steps first; its jobs in flight finish or go back.
		if err := life.Start(ctx, &lifecycle.Runner{ComponentName: "exchange queue", Run: gopts.Exchanges.Run}); err != nil {
			return err
		}
	}
	// POST /backup, GET /proof/snapshot on the ops listener (backup.go).
	gopts.Backup = newNodeBackup(cfg, plog, n.exchangeStore, log)

	var lines []string
	// lane: the tsa listener's server, which takes RFC 3161 requests on
	// its fast lane and hands the rest to srv (nil: srv alone).
	start := func(name string, addr string, handler http.Handler, tlsCfg *tls.Config, path string, lane *gateway.TSAServer) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return listenError(name, addr, err)
		}
		srv := &http.Server{
			Handler:           handler,
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
			ln = tls.NewListener(ln, tlsCfg)
		}
		lines = append(lines, fmt.Sprintf("  %-4s %s://%s%s", name, scheme, ln.Addr(), path))
		serve, shutdown := srv.Serve, srv.Shutdown
		if lane != nil {
			serve = func(ln net.Listener) error { return lane.Serve(srv, ln) }
			shutdown = lane.Shutdown
		}
		err = life.Start(ctx, lifecycle.Func{
			ComponentName: name + " listener",
			OnStart: func(context.Context) error {
				go func() {
					if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						life.Fail(fmt.Errorf("%s listener: %w", name, err))
					}
				}()
				return nil
			},
			// The requests under way finish; new ones are refused.
			OnStop: shutdown,
		})
		if err != nil {
			ln.Close()
			return err
		}
		log.Info("listening", "service", name, "addr", ln.Addr().String(), "tls", tlsCfg != nil)
		return nil
	}

	var serverTLS, apiTLS *tls.Config
	if cfg.Listen.API != "" || cfg.TLS.TSATLS {
		serverTLS, apiTLS, err = loadTLS(ctx, cfg, keys)
		if err != nil {
			return err
		}
	}
	if apiTLS != nil {
		gateway.ValidateClientCertificates(apiTLS, gopts.Validator, log)
	}
	// SIGHUP takes rotated keys (reload.go).
	if err := watchReload(ctx, cfg, keys, reloadable{tsa: authority, log: plog, logCerts: logCertsIn(gopts.Proofs), signing: gopts.Signing, tls: []*tls.Config{serverTLS, apiTLS}, cert: nodeCert, webhook: webhook}, log, reg, &n); err != nil {
		return err
	}
	if cfg.Listen.TSA != "" {
		lane := gateway.NewTSAServer(served, cfg.TSA.MaxBody(), gopts)
		h, err := withDevCA(ctx, cfg, keys, plog, lane.Handler(), log, reg, life) // devca.go
		if err != nil {
			return err
		}
		var tcfg *tls.Config
		if cfg.TLS.TSATLS {
			tcfg = serverTLS
		}
		if err := start("tsa", cfg.Listen.TSA, h, tcfg, "/tsa", lane); err != nil {
			return err
		}
	}
	if cfg.Listen.API != "" {
		if err := start("api", cfg.Listen.API, gateway.NewAPIHandler(served, cfg.TSA.MaxBody(), gopts), apiTLS, "/v1/", nil); err != nil {
			return err
		}
	}
	if cfg.Listen.Ops != "" {
		// Operators only: metrics and readiness details, never on the
		// partner-facing listeners (which keep /healthz and a plain
		// /readyz for load balancers).
		if err := start("ops", cfg.Listen.Ops, gateway.NewOpsHandler(gopts), nil, "/metrics", nil); err != nil {
			return err
		}
	}
	for _, name := range []string{"web", "smtp"} {
		if addr := *cfg.Listen.addr(name); addr != "" {
			log.Warn("service not part of this build yet; not listening", "service", name, "addr", addr)
		}
	}

	clients := filepath.Join(filepath.Dir(cfg.path), "pki", "clients")
	fmt.Fprintf(stdout, "PEC is serving (config %s):\n%s\n", cfg.path, strings.Join(lines, "\n"))
	if _, err := os.Stat(clients); err == nil {
		fmt.Fprintf(stdout, "  client certificates for the API: %s/NAME.pem and NAME.key (NAME: partner-a, partner-b, auditor, admin)\n", clients)
		if cfg.Listen.API != "" {
			fmt.Fprintf(stdout, "  partners: pec partner list --api https://%s --cert %s/admin.pem --key %s/admin.key --roots %s\n", cfg.Listen.API, clients, clients, filepath.Join(filepath.Dir(cfg.path), "pki", "root-ca.pem"))
		}
		fmt.Fprintf(stdout, "  root CA: %s\n", cfg.TLS.ClientRoots)
	}
	fmt.Fprintln(stdout, "Stop with Ctrl-C or SIGTERM.")

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-life.Failed():
		log.Error("a component failed: stopping the node", "err", runErr)
	}
	return runErr
}

// setServingProcs gives the Go scheduler one P more than its default (which
// already follows the CPU count and cgroup quota). The TSA journal's
// fdatasync, once per batch of tokens, keeps its P while it waits on the
// disk, and the scheduler may leave it there for up to 10 ms before handing
// it on: on two cores that idles half the machine. With one more P the
// cores stay busy (bench/tsaload, P-256 at 64 clients: 17.8k → 27.2k
// tokens/s). An explicit GOMAXPROCS is left as it is.
func setServingProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	setServingGC()
}

// servingGCPercent is pec serve's garbage-collection target when GOGC is
// not set. A time-stamp token allocates about 12 KB, nearly all of it
// garbage at once (the ECDSA signature's hedged nonce, HTTP, the token and
// its record), over a live heap of 10-20 MB: at the default of 100 the
// collector runs some 25 times a second at 20,000 tokens/s. At 400 it runs
// a quarter as often, for a heap a few times the live one (about 100 MB
// then): bench/edgeload, TSA, software P-256, 64 clients, 67-68 µs of node
// CPU a token at 100, 61-63 at 200, 56-61 at 400.
const servingGCPercent = 400

// setServingGC sets servingGCPercent; an explicit GOGC is left as it is.
func setServingGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(servingGCPercent)
	}
}

// openTSA builds the authority from the tsa section: the HSM key, the
// certificate chain, the serial-number source, the clock guard, and the
// journal of issued tokens when the node keeps no evidence log (with one,
// the log holds each token's record: one durable write).
func openTSA(ctx context.Context, cfg *File, keys hsm.KeyStore, log *slog.Logger, reg prometheus.Registerer, n *node) (*tsa.Authority, *tsa.ClockGuard, error) {
	chain, err := devpki.LoadCertsPEM(cfg.TSA.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tsa.cert_file: %w", err)
	}
	signer, err := keys.Signer(ctx, cfg.TSA.KeyLabel)
	if err != nil {
		return nil, nil, keyError("tsa.key_label", cfg.TSA.KeyLabel, err)
	}
	serials, err := tsa.OpenFileSerials(cfg.TSA.SerialFile, cfg.TSA.NodeID)
	if err != nil {
		return nil, nil, fmt.Errorf("tsa.serial_file: %w", err)
	}
	n.onClose(serials.Close)
	var journal tsa.Recorder
	if !cfg.Proof.Configured() {
		j, err := tsa.OpenJournal(cfg.TSA.JournalFile)
		if err != nil {
			return nil, nil, fmt.Errorf("tsa.journal_file: %w", err)
		}
		n.onClose(j.Close)
		journal = j
	}
	clock := tsa.NewClockGuard(cfg.TSA.Clock, cfg.TSA.Accuracy, tsa.ClockOptions{Logger: log, Registry: reg})
	authority, err := tsa.New(cfg.TSA, signer, chain, serials, tsa.Options{
		Logger: log, Registry: reg, Clock: clock, Recorder: journal,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w (tsa.cert_file %s, tsa.key_label %q)", err, cfg.TSA.CertFile, cfg.TSA.KeyLabel)
	}
	return authority, clock, nil
}

// loadTLS returns the TLS configuration of the tsa listener (server only)
// and of the API (mutual TLS).
func loadTLS(ctx context.Context, cfg *File, keys hsm.KeyStore) (server, api *tls.Config, err error) {
	chain, err := devpki.LoadCertsPEM(cfg.TLS.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	key, err := keys.Signer(ctx, cfg.TLS.KeyLabel)
	if err != nil {
		return nil, nil, keyError("tls.key_label", cfg.TLS.KeyLabel, err)
	}
	server, err = gateway.ServerTLSConfig(chain, key, nil)
	if err != nil {
		return nil, nil, err
	}
	if cfg.TLS.ClientRoots == "" {
		return server, nil, nil
	}
	roots, err := devpki.LoadCertsPEM(cfg.TLS.ClientRoots)
	if err != nil {
		return nil, nil, fmt.Errorf("tls.client_roots: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	api, err = gateway.ServerTLSConfig(chain, key, pool)
	return server, api, err
}

// openDirectory opens the directory (pec.yaml's directory section, then the
// changes kept in directory.file or the shared PostgreSQL, which win; those
// of other nodes followed) and the policy over it, with the signing
// profiles' allowed_clients and proof.auditors as rules. The directory's
// changes are evidence: without an evidence log it takes none.
func openDirectory(ctx context.Context, cfg *File, plog *proof.Log, log *slog.Logger, n *node) (*middleoffice.Policy, error) {
	store, err := openDirectoryStore(ctx, cfg, log) // pgstores.go
	if err != nil {
		return nil, err
	}
	n.onClose(store.Close)
	opts := middleoffice.Options{Logger: log}
	if plog != nil {
		opts.Evidence = plog
	}
	dir, err := middleoffice.Open(ctx, cfg.Directory, store, opts)
	if err != nil {
		return nil, failure(err)
	}
	followDirectory(ctx, dir, n)
	return middleoffice.NewPolicy(dir, middleoffice.Rules{
		SignProfiles: middleoffice.SignRules(cfg.Signing),
		Auditors:     cfg.Proof.Auditors,
	})
}
