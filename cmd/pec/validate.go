package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/certvalidation"
)

// systemTrustStores are the CA bundles of the common Linux distributions,
// the trust anchors of `pec validate` without --roots (SSL_CERT_FILE first,
// as crypto/x509 reads it).
var systemTrustStores = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
}

func newValidateCommand() *cobra.Command {
	var (
		roots, intermediates, crls        []string
		at, purpose, host, email, revMode string
		asJSON                            bool
	)
	cmd := &cobra.Command{
		Use:   "validate [--roots FILE|DIR]... [--intermediates FILE]... [--crls FILE]... [--at RFC3339-TIME] [--purpose any|serverAuth|clientAuth|emailProtection|timeStamping|documentSigning] [--host DNS-NAME|IP] [--email ADDRESS] [--revocation none|prefer|require] [--json] CERT.pem",
		Short: "Validate a certificate: path to a trust anchor (RFC 5280), CRL and OCSP revocation",
		Long: `validate builds every path from the certificate in CERT.pem (PEM or DER; a PEM file may hold
the certificate followed by intermediates) to the trust anchors of --roots (PEM or DER files or
directories; default: the system's trust store), checks each as RFC 5280 section 6 says, for
the purpose (key usage and extended key usage), the host name or the email address, at the
time --at (default: now), then checks every certificate of the path for revocation: the CRLs
of --crls first, then OCSP responders and CRL distribution points over HTTP.

--revocation: none does not check; prefer (the default) accepts an unknown status with a
warning; require refuses it. MD5 and SHA-1 signatures and RSA keys under 2048 bits are refused.

Exit status: 0 valid, 1 invalid (the reason on stderr; the report on stdout with --json),
2 usage or unreadable input.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			p, err := certvalidation.ParsePurpose(purpose)
			if err != nil {
				return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--purpose: %v", err)}}
			}
			policy, err := certvalidation.ParseRevocationPolicy(revMode)
			if err != nil {
				return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--revocation: %v", err)}}
			}
			opts := certvalidation.Options{Purpose: p, Revocation: policy, Host: host, Email: email}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--at %q: not an RFC 3339 time such as 2025-01-31T12:00:00Z", at)}}
				}
				opts.At = t
			}
			if host != "" && !certvalidation.ValidHost(host) {
				return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--host %q: not a DNS name or an IP address", host)}}
			}
			if email != "" && !strings.Contains(email, "@") {
				return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--email %q: not an email address", email)}}
			}

			data, err := os.ReadFile(a[0])
			if err != nil {
				return inputError(err)
			}
			certs, err := certvalidation.ParseCertificates(data)
			if err != nil {
				return inputError(fmt.Errorf("%s: %w", a[0], err))
			}
			leaf := certs[0]
			opts.Intermediates = certs[1:]
			if len(intermediates) > 0 {
				more, err := certvalidation.LoadCertificates(intermediates...)
				if err != nil {
					return inputError(fmt.Errorf("--intermediates: %w", err))
				}
				opts.Intermediates = append(opts.Intermediates, more...)
			}
			anchors, err := loadRoots(roots)
			if err != nil {
				return err
			}
			m := certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{p: anchors}}
			if len(crls) > 0 {
				if m.CRLs, err = certvalidation.LoadCRLs(crls...); err != nil {
					return inputError(fmt.Errorf("--crls: %w", err))
				}
			}
			v, err := certvalidation.New(certvalidation.Config{Cache: certvalidation.CacheConfig{Results: -1}}, m, certvalidation.ValidatorOptions{})
			if err != nil {
				return inputError(err)
			}
			rep, verr := v.Validate(cmd.Context(), leaf, opts)
			if rep == nil {
				return inputError(verr)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				_ = enc.Encode(rep)
			}
			for _, w := range rep.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "pec: warning: %s\n", oneLine(w))
			}
			if verr != nil {
				e, ok := errors.AsType[*certvalidation.Error](verr)
				if !ok {
					return failure(verr)
				}
				return failure(errors.New(invalidText(e)))
			}
			if !asJSON {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "valid: %s\n", leaf.Subject.String())
				var chain []string
				for _, c := range rep.Chain {
					chain = append(chain, c.Subject)
				}
				fmt.Fprintf(out, "  chain: %s (trust anchor)\n", strings.Join(chain, " < "))
				var revocation []string
				for _, c := range rep.Checks {
					if c.Name == "revocation" {
						revocation = append(revocation, fmt.Sprintf("%d %s", c.Cert, c.Status))
					}
				}
				if len(revocation) > 0 {
					fmt.Fprintf(out, "  revocation (%s): %s\n", policy, strings.Join(revocation, ", "))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&roots, "roots", nil, "trust anchors: PEM or DER files, or directories of them (repeatable; default: the system trust store)")
	f.StringArrayVar(&intermediates, "intermediates", nil, "more CA certificates that may complete the path (PEM or DER; repeatable)")
	f.StringArrayVar(&crls, "crls", nil, "CRLs (PEM or DER), used before any fetch (repeatable)")
	f.StringVar(&at, "at", "", "validation time (RFC 3339); default: now")
	f.StringVar(&purpose, "purpose", "any", "any, serverAuth, clientAuth, emailProtection, timeStamping or documentSigning")
	f.StringVar(&host, "host", "", "the DNS name or IP address the certificate must be for")
	f.StringVar(&email, "email", "", "the email address the certificate must be for")
	f.StringVar(&revMode, "revocation", "prefer", "none, prefer (an unknown status is a warning) or require")
	f.BoolVar(&asJSON, "json", false, "print the validation report as JSON")
	return cmd
}

// loadRoots reads --roots, or the system trust store without it.
func loadRoots(paths []string) ([]*x509.Certificate, error) {
	if len(paths) == 0 {
		candidates := systemTrustStores
		if f := os.Getenv("SSL_CERT_FILE"); f != "" {
			candidates = []string{f}
		}
		for _, f := range candidates {
			if _, err := os.Stat(f); err == nil {
				paths = []string{f}
				break
			}
		}
		if len(paths) == 0 {
			return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--roots is required: no system trust store found")}}
		}
	}
	roots, err := certvalidation.LoadCertificates(paths...)
	if err != nil {
		return nil, inputError(fmt.Errorf("--roots: %w", err))
	}
	if len(roots) == 0 {
		return nil, inputError(errors.New("--roots: no certificate found"))
	}
	return roots, nil
}

// invalidText is the one line of stderr that says why: "invalid
// (expired): expired 2025-01-31T12:00:00Z; certificate 0 CN=...".
func invalidText(e *certvalidation.Error) string {
	s := fmt.Sprintf("invalid (%s): %s", e.Reason, oneLine(e.Detail))
	if e.Cert != nil {
		s += fmt.Sprintf("; certificate %d %q", e.Depth, e.Cert.Subject.String())
	}
	return s
}
