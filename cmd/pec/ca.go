package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/evidence"
	"pec/hsm"
	"pec/internal/devca"
	"pec/internal/devpki"
)

// The ca commands drive the development CA of a node made by `pec init`:
// its root key is in the node's HSM, what it issued and revoked in
// DIR/pki/ca-state.json, and the node serves its CRL and OCSP responder.

// maxCADays bounds --days (RFC 5280 does not; a development certificate
// has no business outliving the root, valid ten years).
const maxCADays = 3650

// reservedCANames are the node's own certificates (pki/NAME.pem), which
// `pec ca issue` does not make.
var reservedCANames = []string{"root-ca", "tsa", "server", "proof", "signing"}

func newCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca issue|revoke",
		Short: "Issue and revoke certificates of a development node's CA",
		Long: `ca issues client certificates from the development root CA of a node made by 'pec init' (its key in
the node's HSM) and revokes them. What the CA issued and revoked is in DIR/pki/ca-state.json, which the
running node reads again as soon as it changes: its CRL (/crl/root.crl) and OCSP responder (/ocsp) on the
tsa listener answer from it, and the node's certificate validation refuses a revoked client at its next
handshake or request (within certvalidation.cache.max_age, 1s in the development pec.yaml). Each issuance
and revocation is an admin.action record of the node's evidence log, appended by the node (at once when
it runs, else when it starts) under the evidence id printed here. Exit status: 0 done, 1 failed (already
revoked), 2 usage or input error.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a subcommand is required: issue, revoke")}}
		},
	}
	cmd.AddCommand(newCAIssueCommand(), newCARevokeCommand())
	return cmd
}

// loadDevCA reads DIR/pec.yaml, which must have a devca section.
func loadDevCA(dir string) (*File, error) {
	if dir == "" {
		return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--dir DIR is required")}}
	}
	cfg, err := LoadConfig(filepath.Join(dir, "pec.yaml"))
	if err != nil {
		return nil, inputError(err)
	}
	if !cfg.DevCA.Configured() {
		return nil, usageError("%s has no devca section: its certificates come from another CA than a development one", cfg.path)
	}
	return cfg, nil
}

func newCAIssueCommand() *cobra.Command {
	var (
		dir, role, org string
		days           int
		force          bool
	)
	cmd := &cobra.Command{
		Use:   "issue --dir DIR NAME [--role partner|agent|auditor|admin] [--days N] [--org ORG] [--force]",
		Short: "Issue a client certificate: DIR/pki/clients/NAME.pem and NAME.key",
		Long: `issue makes a new P-256 key and a TLS client certificate for it (subject CN=NAME,O=ORG), signed by the
development root CA, naming the CA's CRL and OCSP responder, and writes DIR/pki/clients/NAME.pem and
NAME.key (mode 0600). An existing NAME.pem or NAME.key is kept unless --force, which replaces them and
revokes the certificates issued before under NAME (reason superseded). It then prints the 'pec partner add'
command that lets the certificate call the node's API with --role (the directory is the node's, changed
through its administration API).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			switch {
			case !devca.ValidName(name):
				return usageError("%q is not a certificate name: lowercase letters, digits, '.', '_', '-', 63 at most, as partner ids", name)
			case slices.Contains(reservedCANames, name):
				return usageError("%q is one of the node's own certificates (%s): choose another name", name, strings.Join(reservedCANames, ", "))
			case !devca.ValidRole(role):
				return usageError("--role %q: one of %s", role, strings.Join(devca.Roles, ", "))
			case days < 1 || days > maxCADays:
				return usageError("--days %d: from 1 to %d", days, maxCADays)
			case org == "":
				return usageError("--org: must not be empty")
			}
			cfg, err := loadDevCA(dir)
			if err != nil {
				return err
			}
			return caIssue(cmd, cfg, name, role, org, days, force)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the development node (pec init --dir)")
	cmd.Flags().StringVar(&role, "role", "partner", "the directory role the printed 'pec partner add' gives: "+strings.Join(devca.Roles, ", "))
	cmd.Flags().IntVar(&days, "days", 365, "validity in days")
	cmd.Flags().StringVar(&org, "org", "PEC development", "organization (O) of the subject")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing NAME.pem and NAME.key, revoking the certificates issued before under NAME")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(devca.Roles, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func caIssue(cmd *cobra.Command, cfg *File, name, role, org string, days int, force bool) error {
	ctx := cmd.Context()
	nodeDir := filepath.Dir(cfg.path)
	base := filepath.Join(nodeDir, "pki", "clients", name)
	if !force {
		for _, p := range []string{base + ".pem", base + ".key"} {
			if _, err := os.Stat(p); err == nil {
				return usageError("%s exists: --force replaces it (and revokes the certificates issued before under %s)", p, name)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return failure(err)
	}
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		return failure(fmt.Errorf("open keys: %w", err))
	}
	defer keys.Close()
	ca, err := openDevCA(ctx, cfg, keys)
	if err != nil {
		return failure(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return failure(err)
	}
	now := time.Now()
	cert, err := ca.IssueClientFor(key.Public(), name, org, now, time.Duration(days)*24*time.Hour)
	if err != nil {
		return failure(err)
	}
	keyPEM, err := devpki.KeyPEM(key)
	if err != nil {
		return failure(err)
	}
	by := operatorName()
	var entry devca.Certificate
	var superseded []devca.Certificate
	// The state first: a certificate on disk that the CA does not know
	// would be "unknown" to its responder; the reverse is harmless.
	err = devca.Update(cfg.DevCA.StateFile, func(s *devca.State) error {
		if force {
			var err error
			superseded, err = s.Revoke(name, devca.Event{At: now, By: by, Evidence: evidence.NewID(now), Reason: "superseded"})
			if err != nil && !errors.Is(err, devca.ErrNotFound) && !errors.Is(err, devca.ErrAlreadyRevoked) {
				return err
			}
		}
		var err error
		entry, err = s.Add(cert, name, role, devca.Event{At: now, By: by, Evidence: evidence.NewID(now)})
		return err
	})
	if err != nil {
		return failure(fmt.Errorf("devca.state_file: %w", err))
	}
	if err := writeFile(base+".key", keyPEM, 0o600); err != nil {
		return failure(err)
	}
	if err := writeFile(base+".pem", devpki.CertPEM(cert), 0o644); err != nil {
		return failure(err)
	}

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "pec ca: issued %s (serial %s), valid until %s\n", name, entry.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "  certificate: %s.pem\n  key:         %s.key\n", base, base)
	fmt.Fprintf(out, "  evidence:    %s\n", entry.Issued.Evidence)
	for _, c := range superseded {
		fmt.Fprintf(out, "  revoked %s (serial %s, superseded); evidence %s\n", c.Name, c.Serial, c.Revoked.Evidence)
	}
	fmt.Fprintln(out, "  (the node records the evidence as soon as it sees the change, or when it next starts)")
	clients := filepath.Join(nodeDir, "pki", "clients")
	api := cfg.Listen.API
	if api == "" {
		api = "HOST:PORT"
	}
	fmt.Fprintf(out, "To let it call the API, add it to the directory (unless a partner already claims its subject):\n")
	fmt.Fprintf(out, "  pec partner add %s --name %s --role %s --subject %s --issuer %s --api https://%s --cert %s --key %s --roots %s\n",
		name, shellQuote(org), role, shellQuote(cert.Subject.String()), shellQuote(ca.Cert.Subject.String()), api,
		shellQuote(filepath.Join(clients, "admin.pem")), shellQuote(filepath.Join(clients, "admin.key")), shellQuote(cfg.DevCA.CertFile))
	return nil
}

func newCARevokeCommand() *cobra.Command {
	var dir, reason string
	cmd := &cobra.Command{
		Use:   "revoke --dir DIR NAME [--reason R]",
		Short: "Revoke the certificates issued under NAME",
		Long: `revoke revokes every certificate of the development CA named NAME (a client of DIR/pki/clients) that
is not revoked yet, with an RFC 5280 reason:
` + strings.Join(devpki.ReasonNames(), ", ") + `. The running node's CRL and OCSP responder say so at
once, and its certificate validation refuses the certificate at its next handshake or request (within
certvalidation.cache.max_age). It needs no key: the node signs the CRL and the OCSP answers.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			if slices.Contains(reservedCANames, name) {
				// They name no CRL or OCSP responder (they go into proof
				// bundles checked offline): a revocation nobody would see.
				return usageError("%q is one of the node's own certificates, which name no revocation service: rotate its key instead", name)
			}
			if _, err := devpki.ParseReason(reason); err != nil {
				return usageError("--reason %q: one of %s", reason, strings.Join(devpki.ReasonNames(), ", "))
			}
			cfg, err := loadDevCA(dir)
			if err != nil {
				return err
			}
			return caRevoke(cmd.OutOrStdout(), cfg, name, reason)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the development node (pec init --dir)")
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason: "+strings.Join(devpki.ReasonNames(), ", "))
	_ = cmd.RegisterFlagCompletionFunc("reason", cobra.FixedCompletions(devpki.ReasonNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func caRevoke(out io.Writer, cfg *File, name, reason string) error {
	now := time.Now()
	var revoked []devca.Certificate
	err := devca.Update(cfg.DevCA.StateFile, func(s *devca.State) error {
		var err error
		revoked, err = s.Revoke(name, devca.Event{At: now, By: operatorName(), Evidence: evidence.NewID(now), Reason: reason})
		return err
	})
	switch {
	case errors.Is(err, devca.ErrNotFound):
		return usageError("no certificate named %q in %s (pec ca issue makes one)", name, cfg.DevCA.StateFile)
	case errors.Is(err, devca.ErrAlreadyRevoked):
		return failure(fmt.Errorf("every certificate named %q is already revoked: nothing to do", name))
	case err != nil:
		return failure(fmt.Errorf("devca.state_file: %w", err))
	}
	for _, c := range revoked {
		fmt.Fprintf(out, "pec ca: revoked %s (serial %s, %s); evidence %s\n", c.Name, c.Serial, reason, c.Revoked.Evidence)
	}
	fmt.Fprintln(out, "  (the node records the evidence as soon as it sees the change, or when it next starts)")
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
