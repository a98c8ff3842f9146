package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"pec/signing"
)

func newVerifyCommand() *cobra.Command {
	var (
		roots  []string
		data   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "verify --roots ROOT.pem [--data ORIGINAL] SIGNED [--json]",
		Short: "Check a CAdES/CMS signature (DER or PEM) or a signed PDF, and report as ETSI EN 319 102-1",
		Long: `verify checks every signature of SIGNED — a CMS file, attached or detached (give the signed data
with --data), or a PDF — against the trust anchors of ROOT.pem: the signed data, the signature value,
the signer's certificate and its chain, and the signature timestamp, which proves the signature
existed before the certificate expired. It prints the indication (TOTAL-PASSED, TOTAL-FAILED,
INDETERMINATE), the signer, the signing time and the timestamp's time; --json prints the whole
report. Exit status: 0 TOTAL-PASSED, 1 otherwise (indication and sub-indication on stderr), 2 usage
or input error.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(roots) == 0 {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots ROOT.pem is required")}}
			}
			pool := x509.NewCertPool()
			if err := addPEMFiles(pool, roots); err != nil {
				return err
			}
			signed, err := readInput(a[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			var opts signing.VerifyOptions
			if data != "" {
				if opts.Data, err = readInput(data, cmd.InOrStdin()); err != nil {
					return err
				}
			}
			v := &signing.Verifier{Chain: signing.X509Validator{Roots: pool}, TSARoots: pool}
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
	f.StringArrayVar(&roots, "roots", nil, "trust anchors (PEM; repeatable)")
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
