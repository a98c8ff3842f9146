package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"pec/certvalidation"
	"pec/signing"
)

func newVerifyCommand() *cobra.Command {
	var (
		roots, certs, untrusted, intermediates, crls []string
		data, at, revMode                            string
		asJSON                                       bool
	)
	cmd := &cobra.Command{
		Use:   "verify --roots ROOT.pem [--certs CERTS.pem]... [--crls CRL]... [--revocation none|prefer|require] [--at RFC3339-TIME] [--data ORIGINAL] SIGNED [--json]",
		Short: "Check a CAdES/CMS signature (DER, BER or PEM) or a signed PDF, and report as ETSI EN 319 102-1",
		Long: `verify checks every signature of SIGNED — a CMS file, attached or detached (give the signed data
with --data), or a PDF — against the trust anchors of ROOT.pem: the signed data, the signature value
(RSA, RSA-PSS, ECDSA, Ed25519), the signer's certificate and its chain, and the signature
timestamp, which proves the signature existed before the certificate expired. It prints the
indication (TOTAL-PASSED, TOTAL-FAILED, INDETERMINATE), the signer, the signing time and the
timestamp's time; --json prints the whole report.

The signer's certificate is validated as the node's verification API does it (package
certvalidation, purpose documentSigning): its path to ROOT.pem (RFC 5280), a key usage and an
extended key usage fit for signing documents (a TLS-only or time-stamping-only certificate is
INDETERMINATE), and its revocation: the CRLs of --crls first, then OCSP responders and CRL
distribution points over HTTP. --revocation: none does not check; prefer (the default) accepts an
unknown status with a warning; require refuses it.

--certs (or --untrusted, --intermediates) gives certificates (PEM or DER, a file may hold several)
that the signature does not carry: the signer's, or CAs that complete its path. --at validates at
that time instead of now.

Exit status: 0 TOTAL-PASSED, 1 otherwise (indication and sub-indication on stderr), 2 usage or
input error.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(roots) == 0 {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots ROOT.pem is required")}}
			}
			policy, err := certvalidation.ParseRevocationPolicy(revMode)
			if err != nil {
				return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--revocation: %v", err)}}
			}
			var when time.Time
			if at != "" {
				if when, err = time.Parse(time.RFC3339, at); err != nil {
					return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--at %q: not an RFC 3339 time such as 2025-01-31T12:00:00Z", at)}}
				}
			}
			anchors, err := loadRoots(roots)
			if err != nil {
				return err
			}
			var opts signing.VerifyOptions
			if more := slices.Concat(certs, untrusted, intermediates); len(more) > 0 {
				if opts.Certificates, err = certvalidation.LoadCertificates(more...); err != nil {
					return inputError(fmt.Errorf("--certs: %w", err))
				}
			}
			m := certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeDocumentSigning: anchors}}
			if len(crls) > 0 {
				if m.CRLs, err = certvalidation.LoadCRLs(crls...); err != nil {
					return inputError(fmt.Errorf("--crls: %w", err))
				}
			}
			cfg := certvalidation.Config{
				Purposes: map[string]certvalidation.PurposeConfig{string(certvalidation.PurposeDocumentSigning): {Revocation: string(policy)}},
				Cache:    certvalidation.CacheConfig{Results: -1},
			}
			validator, err := certvalidation.New(cfg, m, certvalidation.ValidatorOptions{})
			if err != nil {
				return inputError(err)
			}
			signed, err := readInput(a[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			if data != "" {
				if opts.Data, err = readInput(data, cmd.InOrStdin()); err != nil {
					return err
				}
			}
			tsaRoots := x509.NewCertPool()
			for _, c := range anchors {
				tsaRoots.AddCert(c)
			}
			// The chain check of the verification API (cmd/pec serve):
			// certvalidation for documentSigning, revocation included.
			v := &signing.Verifier{Chain: documentSigners(validator), TSARoots: tsaRoots}
			if !when.IsZero() {
				v.Now = func() time.Time { return when }
			}
			report, err := v.Verify(cmd.Context(), signed, opts)
			switch {
			case errors.Is(err, signing.ErrDataRequired):
				return &exitError{code: exitUsage, err: usageMistake{errors.New("the signature is detached: give the signed data with --data ORIGINAL")}}
			case err != nil:
				return inputError(err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				_ = enc.Encode(report)
			} else {
				printReport(cmd.OutOrStdout(), report)
			}
			for _, s := range report.Signatures {
				if s.ChainValidation != nil {
					for _, w := range s.ChainValidation.Warnings {
						fmt.Fprintf(cmd.ErrOrStderr(), "pec: warning: %s\n", oneLine(w))
					}
				}
			}
			if !report.Passed() {
				msg := string(report.Indication) + "/" + string(report.SubIndication)
				if report.Detail != "" {
					msg += ": " + oneLine(report.Detail)
				}
				return failure(errors.New(msg))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&roots, "roots", nil, "trust anchors: PEM or DER files, or directories of them (repeatable)")
	f.StringArrayVar(&certs, "certs", nil, "certificates the signature does not carry: the signer's, intermediates (PEM or DER; repeatable)")
	f.StringArrayVar(&untrusted, "untrusted", nil, "the same as --certs")
	f.StringArrayVar(&intermediates, "intermediates", nil, "the same as --certs")
	f.StringArrayVar(&crls, "crls", nil, "CRLs (PEM or DER), used before any fetch (repeatable)")
	f.StringVar(&revMode, "revocation", "prefer", "none, prefer (an unknown status is a warning) or require")
	f.StringVar(&at, "at", "", "validation time (RFC 3339); default: now")
	f.StringVar(&data, "data", "", "the signed data of a detached signature (- for stdin)")
	f.BoolVar(&asJSON, "json", false, "print the whole report as JSON")
	return cmd
}

// printReport writes the report for a person: the indication, then each
// signature with its signer, times and failed or reserved checks.
func printReport(w io.Writer, r *signing.Report) {
	line := string(r.Indication)
	if r.SubIndication != "" {
		line += "/" + string(r.SubIndication)
	}
	fmt.Fprintf(w, "%s (%s, %d signature(s), validated at %s)\n", line, r.Document, len(r.Signatures), r.ValidationTime.Format(time.RFC3339))
	for i, s := range r.Signatures {
		head := fmt.Sprintf("signature %d", i+1)
		if s.Field != "" {
			head += " (" + s.Field + ")"
		}
		fmt.Fprintf(w, "%s: %s", head, s.Indication)
		if s.SubIndication != "" {
			fmt.Fprintf(w, "/%s", s.SubIndication)
		}
		if s.Format != "" {
			fmt.Fprintf(w, ", %s", s.Format)
		}
		fmt.Fprintln(w)
		if s.Signer != nil {
			fmt.Fprintf(w, "  signer: %s (issuer %s)\n", s.Signer.Subject, s.Signer.Issuer)
		}
		if s.DigestAlgorithm != "" {
			fmt.Fprintf(w, "  algorithms: %s, %s\n", s.DigestAlgorithm, s.SignatureAlgorithm)
		}
		if !s.SigningTime.IsZero() {
			fmt.Fprintf(w, "  signing time: %s (claimed by the signer)\n", s.SigningTime.Format(time.RFC3339))
		}
		if t := s.Timestamp; t != nil {
			state := "valid"
			if !t.Valid {
				state = "not trusted: " + t.Detail
			}
			fmt.Fprintf(w, "  timestamp: %s by %s (%s)\n", t.Time.Format(time.RFC3339Nano), t.TSA, state)
		}
		if s.CoversDocument != nil {
			if *s.CoversDocument {
				fmt.Fprintln(w, "  covers the whole document")
			} else {
				fmt.Fprintln(w, "  does not cover the whole document")
			}
		}
		for _, c := range s.Checks {
			if c.Status != signing.CheckPassed {
				fmt.Fprintf(w, "  %s: %s: %s\n", c.Name, c.Status, c.Detail)
			}
		}
	}
	if r.Detail != "" && r.Indication != signing.TotalPassed {
		fmt.Fprintf(w, "reason: %s\n", r.Detail)
	}
}
