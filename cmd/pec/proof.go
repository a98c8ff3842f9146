package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"pec/certvalidation"
	"pec/gateway"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

func newProofCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proof",
		Short: "Evidence log: list, export and verify proof bundles, audit a store",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("proof needs a command: verify, list, export or audit")}}
		},
	}
	cmd.AddCommand(newProofVerifyCommand(), newProofListCommand(), newProofExportCommand(), newProofAuditCommand())
	cmd.AddCommand(newProofMonitorCommand())
	return cmd
}

func newProofVerifyCommand() *cobra.Command {
	var roots string
	cmd := &cobra.Command{
		Use:   "verify --roots ROOT.pem BUNDLE",
		Short: "Check a proof bundle offline: exit 0 valid, 1 invalid (the failed check on stderr), 2 usage or input error",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if roots == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots ROOT.pem is required")}}
			}
			certs, err := devpki.LoadCertsPEM(roots)
			if err != nil {
				return inputError(fmt.Errorf("--roots: %w", err))
			}
			pool := x509.NewCertPool()
			for _, c := range certs {
				pool.AddCert(c)
			}
			data, err := os.ReadFile(a[0])
			if err != nil {
				return inputError(err)
			}
			b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: pool})
			if err != nil {
				return failure(fmt.Errorf("invalid: %s", oneLine(err.Error())))
			}
			tok, _ := tsa.ParseToken(b.Token)
			fmt.Fprintf(cmd.OutOrStdout(), "valid: evidence %s (%d records) in tree head %d of %s, time-stamped %s\n",
				b.Manifest.Evidence, len(b.Records), b.Manifest.TreeHead.Size, b.Manifest.Origin, tok.GenTime.UTC().Format("2006-01-02T15:04:05.000Z"))
			return nil
		},
	}
	cmd.Flags().StringVar(&roots, "roots", "", "trusted root certificates (PEM)")
	return cmd
}

// proofConfig loads pec.yaml and checks it has a proof section.
func proofConfig(path string) (*File, error) {
	if path == "" {
		return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE is required")}}
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, inputError(err)
	}
	if !cfg.Proof.Configured() {
		return nil, usageError("%s: no proof section: this node keeps no evidence log", path)
	}
	return cfg, nil
}

// openProofStore opens the store of a stopped node for reading. A running
// node holds the store's lock: the open waits, then fails.
func openProofStore(cfg *File) (proof.Store, error) {
	if cfg.Proof.PostgresURLEnv != "" {
		return openPGStore(cfg)
	}
	s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		return nil, failure(fmt.Errorf("%w (is pec serve running on this store?)", err))
	}
	return s, nil
}

func newProofListCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "list --config FILE",
		Short: "Print the evidence ids of the log, one a line, oldest first",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := proofConfig(configPath)
			if err != nil {
				return err
			}
			s, err := openProofStore(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			var buf bytes.Buffer
			err = s.Records(cmd.Context(), 0, func(_ uint64, r *proof.StoredRecord) error {
				buf.WriteString(r.ID)
				buf.WriteByte('\n')
				if buf.Len() > 64<<10 {
					_, err := cmd.OutOrStdout().Write(buf.Bytes())
					buf.Reset()
					return err
				}
				return nil
			})
			if err != nil {
				return failure(err)
			}
			_, err = cmd.OutOrStdout().Write(buf.Bytes())
			return err
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	return cmd
}

// proofChains reads the log key's and the TSA's certificate chains.
func proofChains(cfg *File) (logChain, tsaChain []*x509.Certificate, err error) {
	logChain, err = devpki.LoadCertsPEM(cfg.Proof.CertFile)
	if err != nil || len(logChain) == 0 {
		return nil, nil, inputError(fmt.Errorf("proof.cert_file: %v", err))
	}
	tsaChain, err = devpki.LoadCertsPEM(cfg.TSA.CertFile)
	if err != nil {
		return nil, nil, inputError(fmt.Errorf("tsa.cert_file: %w", err))
	}
	return logChain, tsaChain, nil
}

// hasCertValidation reports whether the configuration has a
// certvalidation section.
func hasCertValidation(cfg *File) bool {
	return !reflect.ValueOf(cfg.CertValidation).IsZero()
}

// exportValidator is the certificate validator `pec proof export` gathers
// the bundle's revocation data with: that of the certvalidation section
// (nil without one: the bundle then carries none). It needs no running
// node.
func exportValidator(cfg *File) (*certvalidation.Validator, error) {
	if !hasCertValidation(cfg) {
		return nil, nil
	}
	v, err := openValidator(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, inputError(fmt.Errorf("certvalidation: %w", err))
	}
	return v, nil
}

func newProofExportCommand() *cobra.Command {
	var configPath, out string
	cmd := &cobra.Command{
		Use:   "export --config FILE ID -o BUNDLE",
		Short: "Write the proof bundle of evidence ID",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if out == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("-o BUNDLE is required")}}
			}
			cfg, err := proofConfig(configPath)
			if err != nil {
				return err
			}
			logChain, tsaChain, err := proofChains(cfg)
			if err != nil {
				return err
			}
			s, err := openProofStore(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			validator, err := exportValidator(cfg)
			if err != nil {
				return err
			}
			data, err := proof.Export(cmd.Context(), s, a[0], proof.ExportOptions{LogChain: logChain, TSAChain: tsaChain, Validator: validator})
			if errors.Is(err, proof.ErrNotFound) {
				return failure(fmt.Errorf("evidence %q: not in the log", a[0]))
			}
			if err != nil {
				return failure(err)
			}
			if err := os.WriteFile(out, data, 0o644); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the bundle file to write")
	return cmd
}

func newProofAuditCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "audit --config FILE",
		Short: "Check the whole evidence store: every record, tree node, tree head and time-stamp; exit 1 naming the first bad place",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := proofConfig(configPath)
			if err != nil {
				return err
			}
			logChain, tsaChain, err := proofChains(cfg)
			if err != nil {
				return err
			}
			v, err := proof.NewNoteVerifier(cfg.Proof.Origin, logChain[0].PublicKey)
			if err != nil {
				return inputError(fmt.Errorf("proof.cert_file: %w", err))
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			for _, c := range append(append([]*x509.Certificate(nil), logChain...), tsaChain...) {
				if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
					roots.AddCert(c)
				} else {
					inter.AddCert(c)
				}
			}
			s, err := openProofStore(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := proof.Audit(cmd.Context(), s, proof.AuditOptions{Verifier: v, TSARoots: roots, TSAIntermediates: inter})
			if err != nil {
				return failure(errors.New(oneLine(err.Error())))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit: %d records, %d tree heads: the store checks\n", rep.Records, rep.Heads)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	return cmd
}

// evidenceRecorder hands issued time-stamp tokens to the proof log once
// it is open (the log itself needs the TSA, so it opens after it).
type evidenceRecorder struct {
	mu  sync.RWMutex
	rec tsa.Recorder
}

func (e *evidenceRecorder) set(r tsa.Recorder) {
	e.mu.Lock()
	e.rec = r
	e.mu.Unlock()
}

// Record implements tsa.Recorder.
func (e *evidenceRecorder) Record(ctx context.Context, issued *tsa.Issued) error {
	e.mu.RLock()
	r := e.rec
	e.mu.RUnlock()
	if r == nil {
		return nil
	}
	return r.Record(ctx, issued)
}

// recorders records with each in turn: the journal first, then evidence.
type recorders []tsa.Recorder

func (rs recorders) Record(ctx context.Context, issued *tsa.Issued) error {
	for _, r := range rs {
		if err := r.Record(ctx, issued); err != nil {
			return err
		}
	}
	return nil
}

// openProof opens the evidence log of the proof section: the embedded
// store, the tree-head key in the HSM, and the TSA that stamps every
// batch. It returns nil when the node keeps no evidence log.
func openProof(ctx context.Context, cfg *File, keys hsm.KeyStore, authority *tsa.Authority, log *slog.Logger, reg prometheus.Registerer, n *node) (*proof.Log, error) {
	if !cfg.Proof.Configured() {
		return nil, nil
	}
	key, err := keys.Signer(ctx, cfg.Proof.KeyLabel)
	if err != nil {
		return nil, fmt.Errorf("proof.key_label %q: %w", cfg.Proof.KeyLabel, err)
	}
	chain, err := devpki.LoadCertsPEM(cfg.Proof.CertFile)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("proof.cert_file: %v", err)
	}
	if k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(chain[0].PublicKey) {
		return nil, errors.New("proof.cert_file: not the certificate of the key proof.key_label")
	}
	if !proof.IsEvidenceLogCertificate(chain[0]) {
		return nil, fmt.Errorf("proof.cert_file: the certificate lacks the extended key usage %s of an evidence log: bundles would not verify", proof.OIDEvidenceLog)
	}
	signer, err := proof.NewNoteSigner(cfg.Proof.Origin, key)
	if err != nil {
		return nil, fmt.Errorf("proof: %w", err)
	}
	var store proof.Store
	if cfg.Proof.PostgresURLEnv != "" {
		store, err = openPGStore(cfg)
	} else {
		store, err = proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{})
	}
	if err != nil {
		return nil, err
	}
	n.onClose(store.Close)
	l, err := proof.Open(ctx, store, signer, proof.AuthorityTimestamper{Authority: authority}, cfg.Proof, proof.Options{Logger: log, Registry: reg})
	if err != nil {
		return nil, err
	}
	n.onClose(l.Close)
	return l, nil
}

// openPGStore connects to the PostgreSQL store whose URL is in the
// environment variable proof.postgres_url_env.
func openPGStore(cfg *File) (proof.Store, error) {
	url := os.Getenv(cfg.Proof.PostgresURLEnv)
	if url == "" {
		return nil, usageError("proof.postgres_url_env: $%s is empty", cfg.Proof.PostgresURLEnv)
	}
	s, err := proof.OpenPG(context.Background(), url)
	if err != nil {
		return nil, failure(err)
	}
	return s, nil
}

// proofReader serves GET /v1/proofs/{id} from the node's log.
func proofReader(cfg *File, l *proof.Log) (*gateway.ProofReader, error) {
	logChain, tsaChain, err := proofChains(cfg)
	if err != nil {
		return nil, err
	}
	return &gateway.ProofReader{
		Log:     l,
		Export:  proof.ExportOptions{LogChain: logChain, TSAChain: tsaChain},
		Auditor: cfg.Proof.IsAuditor,
	}, nil
}
