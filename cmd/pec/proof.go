package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"pec/certvalidation"
	"pec/evidence"
	"pec/gateway"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

func newProofCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proof",
		Short: "Evidence log: list, export, verify and show proof bundles, audit a store",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("proof needs a command: verify, show, list, export, audit, monitor or accept-store")}}
		},
	}
	cmd.AddCommand(newProofVerifyCommand(), newProofShowCommand(), newProofListCommand(), newProofExportCommand(), newProofAuditCommand(), newProofMonitorCommand(), newProofAcceptStoreCommand())
	return cmd
}

func newProofVerifyCommand() *cobra.Command {
	var roots string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify --roots ROOT.pem [--json] BUNDLE",
		Short: "Check a proof bundle offline: exit 0 valid, 1 invalid (the failed check on stderr), 2 usage or input error",
		Long: `verify checks a proof bundle with no server and no network. With --json it prints the
result on stdout, valid or not: {"valid": true, ...} with what pec proof show --json prints,
or {"valid": false, "check": ..., "error": ...}. Exit status: 0 valid, 1 invalid, 2 usage
or unreadable input.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if roots == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots ROOT.pem is required")}}
			}
			pool, err := loadRootPool(roots)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(a[0])
			if err != nil {
				return inputError(err)
			}
			b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: pool})
			if err != nil {
				if asJSON {
					writeJSON(cmd.OutOrStdout(), proof.FailedSummary(err))
				}
				return failure(fmt.Errorf("invalid: %s", oneLine(err.Error())))
			}
			s, err := proof.Summarize(b)
			if err != nil {
				return failure(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "valid: evidence %s (%d records) in tree head %d of %s, time-stamped %s\n",
				s.Evidence, len(s.Records), s.Checkpoint.Size, s.Checkpoint.Origin, s.Timestamp.Time.Format("2006-01-02T15:04:05.000Z"))
			return nil
		},
	}
	cmd.Flags().StringVar(&roots, "roots", "", "trusted root certificates (PEM)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// loadRootPool reads the trust anchors of --roots.
func loadRootPool(file string) (*x509.CertPool, error) {
	certs, err := devpki.LoadCertsPEM(file)
	if err != nil {
		return nil, inputError(fmt.Errorf("--roots: %w", err))
	}
	if len(certs) == 0 {
		return nil, inputError(fmt.Errorf("--roots: %s: no certificate", file))
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// writeJSON prints v indented, as the other --json outputs.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newProofShowCommand() *cobra.Command {
	var roots, configPath, ops string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show (--roots ROOT.pem BUNDLE | --config FILE [--roots ROOT.pem] [--ops URL] ID) [--json]",
		Short: "Verify a proof bundle, then print what it proves: records, checkpoint, time-stamp, signers",
		Long: `show verifies a proof bundle as verify does, then prints it for a person: each record
(type, time, subject, actors, digests, the records it answers, attributes), its place in the
checkpoint's tree, the checkpoint, the time-stamp on it and the certificates that signed them.
It prints from the bundle's canonical binary records, never from their readable JSON copies.
A bundle that does not verify is not shown: exit 1 with the failed check on stderr (with
--json, {"valid": false, ...} on stdout).

With --config FILE ID, show builds the bundle of evidence ID from that node's store, as
pec proof export does, and verifies it with --roots, or by default with the self-signed
certificates of the node's proof.cert_file and tsa.cert_file. On a running node, the store is
a snapshot that the node gives on its ops listener (see pec proof list).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var (
				data []byte
				pool *x509.CertPool
				err  error
			)
			if configPath != "" {
				cfg, err := proofConfig(configPath)
				if err != nil {
					return err
				}
				if roots != "" {
					if pool, err = loadRootPool(roots); err != nil {
						return err
					}
				} else if pool, err = nodeRoots(cfg); err != nil {
					return err
				}
				if data, err = exportBundle(cmd.Context(), cfg, ops, a[0]); err != nil {
					return err
				}
			} else {
				if roots == "" {
					return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots ROOT.pem is required to show a bundle file (or --config FILE ID)")}}
				}
				if pool, err = loadRootPool(roots); err != nil {
					return err
				}
				if data, err = os.ReadFile(a[0]); err != nil {
					return inputError(err)
				}
			}
			b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: pool})
			if err != nil {
				if asJSON {
					writeJSON(cmd.OutOrStdout(), proof.FailedSummary(err))
				}
				return failure(fmt.Errorf("invalid: %s", oneLine(err.Error())))
			}
			s, err := proof.Summarize(b)
			if err != nil {
				return failure(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			return s.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&roots, "roots", "", "trusted root certificates (PEM)")
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml): show evidence ID of that node's log")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	opsFlag(cmd, &ops)
	return cmd
}

// nodeRoots are the self-signed certificates of the node's log and TSA
// chains: the anchors of its own bundles, as audit takes them.
func nodeRoots(cfg *File) (*x509.CertPool, error) {
	logChain, tsaChain, err := proofChains(cfg)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for _, c := range append(append([]*x509.Certificate(nil), logChain...), tsaChain...) {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			pool.AddCert(c)
			n++
		}
	}
	if n == 0 {
		return nil, usageError("proof.cert_file and tsa.cert_file hold no root certificate: give --roots ROOT.pem")
	}
	return pool, nil
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
	if _, err := applyKeyState(cfg); err != nil { // keystate.go
		return nil, inputError(err)
	}
	if !cfg.Proof.Configured() {
		return nil, usageError("%s: no proof section: this node keeps no evidence log", path)
	}
	// A running node holds its embedded store: list, show, export and
	// audit then read a snapshot it gives (openProofSource); accept-store
	// needs it stopped (accept.go).
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
	var (
		configPath, since, actor, ops string
		types                         []string
		ids, asJSON                   bool
	)
	cmd := &cobra.Command{
		Use:   "list --config FILE [--ops URL] [--type T]... [--since TIME|DURATION] [--actor TEXT] [--ids | --json]",
		Short: "Print the records of the log, oldest first: ID, TIME, TYPE, ACTOR",
		Long: `list prints the records of the node's evidence log in log order, one a line, under a
header: ID, TIME (UTC, to the millisecond), TYPE and ACTOR (the first actor's certificate
subject and role, "+N" when there are more, "-" when none).

A stopped node's store is read in place. A running node holds it: list (and show, export and
audit) then ask the node on its ops listener (listen.ops, or --ops URL) for a consistent
snapshot of it (GET /proof/snapshot: the store file as one read transaction sees it, its
records not yet sealed, its saved checkpoint), check it, read it, and delete it. The records
listed are those sealed at that instant.

  --type T      records of type T or under it (--type timestamp: timestamp.issued, ...);
                repeatable: any of them
  --since X     records timed at or after X: RFC 3339 (2026-03-02T09:00:00Z), a date
                (2026-03-02, UTC), or a duration back from now (24h, 90m)
  --actor TEXT  records with an actor whose subject or certificate fingerprint (hex)
                holds TEXT, ignoring case
  --ids         the ids only, one a line, no header (the output of earlier versions)
  --json        one JSON object a line: index, id, time, type, subject, actors, digests,
                previous, attributes`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ids && asJSON {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--ids and --json: choose one")}}
			}
			var from time.Time
			if since != "" {
				var err error
				if from, err = parseSince(since, time.Now()); err != nil {
					return &exitError{code: exitUsage, err: usageMistake{err}}
				}
			}
			cfg, err := proofConfig(configPath)
			if err != nil {
				return err
			}
			s, err := openProofSource(cmd.Context(), cfg, ops)
			if err != nil {
				return err
			}
			defer s.Close()
			match := recordFilter(types, from, actor)
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			var tw *tabwriter.Writer
			var enc *json.Encoder
			switch {
			case asJSON:
				enc = json.NewEncoder(out)
			case !ids:
				tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "%-32s\t%-24s\t%-21s\t%s\n", "ID", "TIME", "TYPE", "ACTOR")
			}
			rows := 0
			err = s.Records(cmd.Context(), 0, func(index uint64, sr *proof.StoredRecord) error {
				r, err := evidence.UnmarshalRecord(sr.Data)
				if err != nil {
					return fmt.Errorf("record %d (id %s): %w (pec proof audit checks the whole store)", index, printable(sr.ID), err)
				}
				if !match(r) {
					return nil
				}
				rows++
				switch {
				case enc != nil:
					return enc.Encode(listEntry(index, r))
				case tw == nil:
					_, err := fmt.Fprintln(out, r.ID)
					return err
				}
				// Cells padded to the platform's widths, and a flush every
				// 4096 rows: the output streams, and stays aligned unless a
				// value is longer.
				fmt.Fprintf(tw, "%-32s\t%s\t%-21s\t%s\n", printable(r.ID), r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), printable(string(r.Type)), actorCell(r.Actors))
				if rows%4096 == 0 {
					return tw.Flush()
				}
				return nil
			})
			if tw != nil {
				if ferr := tw.Flush(); err == nil {
					err = ferr
				}
			}
			if ferr := out.Flush(); err == nil {
				err = ferr
			}
			if err != nil {
				return failure(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	f.StringArrayVar(&types, "type", nil, "only records of this type, or under it (repeatable)")
	f.StringVar(&since, "since", "", "only records timed at or after this RFC 3339 time, date or duration ago")
	f.StringVar(&actor, "actor", "", "only records with an actor whose subject or fingerprint holds this text")
	f.BoolVar(&ids, "ids", false, "print the ids only, one a line")
	f.BoolVar(&asJSON, "json", false, "print one JSON object a line")
	opsFlag(cmd, &ops)
	return cmd
}

// parseSince reads --since: an RFC 3339 time, a date (UTC) or a duration
// back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-03-02T09:00:00Z), a date (2026-03-02) or a duration (24h)", v)
}

// recordFilter is the conjunction of list's filters.
func recordFilter(types []string, since time.Time, actor string) func(*evidence.Record) bool {
	actor = strings.ToLower(actor)
	return func(r *evidence.Record) bool {
		if len(types) > 0 && !slices.ContainsFunc(types, func(t string) bool {
			t = strings.TrimSuffix(t, ".")
			return string(r.Type) == t || strings.HasPrefix(string(r.Type), t+".")
		}) {
			return false
		}
		if !since.IsZero() && r.Time.Before(since) {
			return false
		}
		if actor != "" && !slices.ContainsFunc(r.Actors, func(a evidence.Actor) bool {
			return strings.Contains(strings.ToLower(a.Subject), actor) || strings.Contains(hex.EncodeToString(a.Fingerprint[:]), actor)
		}) {
			return false
		}
		return true
	}
}

// actorCell is list's ACTOR column.
func actorCell(actors []evidence.Actor) string {
	if len(actors) == 0 {
		return "-"
	}
	a := actors[0]
	who := a.Subject
	if who == "" {
		who = "sha256:" + hex.EncodeToString(a.Fingerprint[:8])
	}
	cell := printable(who) + " (" + printable(a.Role) + ")"
	if len(actors) > 1 {
		cell += fmt.Sprintf(" +%d", len(actors)-1)
	}
	return cell
}

// listRecord is a line of list --json.
type listRecord struct {
	Index      uint64                `json:"index"`
	ID         string                `json:"id"`
	Time       time.Time             `json:"time"`
	Type       evidence.EventType    `json:"type"`
	Subject    string                `json:"subject"`
	Actors     []proof.ActorSummary  `json:"actors"`
	Digests    []proof.DigestSummary `json:"digests"`
	Previous   []string              `json:"previous"`
	Attributes map[string]string     `json:"attributes"`
}

func listEntry(index uint64, r *evidence.Record) listRecord {
	e := listRecord{
		Index: index, ID: r.ID, Time: r.Time.UTC(), Type: r.Type, Subject: r.Subject,
		Actors: []proof.ActorSummary{}, Digests: []proof.DigestSummary{}, Previous: append([]string{}, r.Previous...), Attributes: map[string]string{},
	}
	for _, a := range r.Actors {
		e.Actors = append(e.Actors, proof.ActorSummary{Role: a.Role, Subject: a.Subject, Fingerprint: hex.EncodeToString(a.Fingerprint[:])})
	}
	for _, d := range r.Digests {
		e.Digests = append(e.Digests, proof.DigestSummary{Name: d.Name, Algorithm: d.Algorithm, Value: hex.EncodeToString(d.Value)})
	}
	for _, a := range r.Attributes {
		e.Attributes[a.Key] = a.Value
	}
	return e
}

// printable is s, or s quoted when it holds a character that would act
// on a terminal rather than print.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
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

// exportBundle makes the bundle of evidence id from the node's store.
func exportBundle(ctx context.Context, cfg *File, ops, id string) ([]byte, error) {
	logChain, tsaChain, err := proofChains(cfg)
	if err != nil {
		return nil, err
	}
	s, err := openProofSource(ctx, cfg, ops)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	validator, err := exportValidator(cfg)
	if err != nil {
		return nil, err
	}
	certs, err := logCertsOf(cfg) // every key of the log, rotated ones too
	if err != nil {
		return nil, inputError(err)
	}
	data, err := proof.Export(ctx, s, id, proof.ExportOptions{LogChain: logChain, LogCerts: certs, TSAChain: tsaChain, Validator: validator})
	if errors.Is(err, proof.ErrNotFound) {
		return nil, failure(fmt.Errorf("evidence %q: not in the log", id))
	}
	if err != nil {
		return nil, failure(err)
	}
	return data, nil
}

func newProofExportCommand() *cobra.Command {
	var configPath, out, ops string
	cmd := &cobra.Command{
		Use:   "export --config FILE [--ops URL] ID -o BUNDLE",
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
			data, err := exportBundle(cmd.Context(), cfg, ops, a[0])
			if err != nil {
				return err
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
	opsFlag(cmd, &ops)
	return cmd
}

func newProofAuditCommand() *cobra.Command {
	var configPath, ops string
	cmd := &cobra.Command{
		Use:   "audit --config FILE [--ops URL]",
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
			// Every key of the log: the heads of before a rotation are
			// the old key's.
			certs, err := logCertsOf(cfg)
			if err != nil {
				return inputError(err)
			}
			v, err := certs.Verifier(cfg.Proof.Origin)
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
			s, err := openProofSource(cmd.Context(), cfg, ops)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := proof.Audit(cmd.Context(), s, proof.AuditOptions{Verifier: v, TSARoots: roots, TSAIntermediates: inter, CheckpointFile: s.Guard})
			if err != nil {
				return failure(errors.New(oneLine(err.Error())))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit: %d records, %d tree heads: the store checks\n", rep.Records, rep.Heads)
			if rep.Pending > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "audit: %d more records integrated into a tree whose signed head is not stored yet (the next start signs exactly that tree)\n", rep.Pending)
			}
			if rep.Unsealed > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "audit: %d more records durable, not yet sealed (the next start seals them)\n", rep.Unsealed)
			}
			if s.From != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "audit: checked a snapshot of the running node (from %s), against its saved checkpoint\n", s.From)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	opsFlag(cmd, &ops)
	return cmd
}

// opsFlag is --ops of the commands that read a running node's evidence
// log through its ops listener.
func opsFlag(cmd *cobra.Command, ops *string) {
	cmd.Flags().StringVar(ops, "ops", "", "read a snapshot from the running node's ops listener (http://HOST:PORT); default: listen.ops when the node runs")
}

// openProof opens the evidence log of the proof section: the store, the
// tree-head key in the HSM, and the TSA that stamps every checkpoint. It
// checks the store against the saved checkpoint (proof.checkpoint_file):
// a rolled-back or forked store is refused. It returns nil when the node
// keeps no evidence log.
func openProof(ctx context.Context, cfg *File, keys hsm.KeyStore, authority *tsa.Authority, log *slog.Logger, reg prometheus.Registerer, n *node) (*proof.Log, error) {
	if !cfg.Proof.Configured() {
		return nil, nil
	}
	key, err := keys.Signer(ctx, cfg.Proof.KeyLabel)
	if err != nil {
		return nil, keyError("proof.key_label", cfg.Proof.KeyLabel, err)
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
	if err := acceptRetiredLogKeys(cfg, signer); err != nil { // keystate.go
		return nil, err
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
	certs, err := logCertsOf(cfg) // rotated by SIGHUP (reload.go)
	if err != nil {
		return nil, err
	}
	return &gateway.ProofReader{
		Log:    l,
		Export: proof.ExportOptions{LogChain: logChain, LogCerts: certs, TSAChain: tsaChain},
		// Who reads what is the policy's (openDirectory): proof.auditors
		// are among its rules.
	}, nil
}
