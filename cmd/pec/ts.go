package main

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/internal/devpki"
	"pec/tsa"
)

func newTSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ts",
		Short: "RFC 3161 time-stamp client: request and verify tokens from any TSA",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("ts needs a command: request or verify")}}
		},
	}
	cmd.AddCommand(newTSRequestCommand(), newTSVerifyCommand())
	return cmd
}

var hashNames = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

func parseHash(name string) (crypto.Hash, error) {
	h, ok := hashNames[strings.ToLower(name)]
	if !ok {
		return 0, &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("--hash %q: want sha256, sha384 or sha512", name)}}
	}
	return h, nil
}

// digestInput is the imprint to time-stamp or check: the digest of FILE (or
// stdin for "-"), or a digest given in hex.
func digestInput(file, digestHex string, h crypto.Hash, stdin io.Reader) ([]byte, error) {
	switch {
	case file != "" && digestHex != "":
		return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("give a FILE or --digest, not both")}}
	case digestHex != "":
		d, err := hex.DecodeString(digestHex)
		if err != nil {
			return nil, usageError("--digest: not hexadecimal: %v", err)
		}
		if len(d) != h.Size() {
			return nil, usageError("--digest: %d bytes, but %s digests have %d", len(d), hashName(h), h.Size())
		}
		return d, nil
	case file == "":
		return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("give the data FILE (or - for stdin) or --digest HEX")}}
	}
	var r io.Reader = stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, inputError(err)
		}
		defer f.Close()
		r = f
	}
	hh := h.New()
	if _, err := io.Copy(hh, r); err != nil {
		return nil, inputError(fmt.Errorf("read %s: %w", file, err))
	}
	return hh.Sum(nil), nil
}

func hashName(h crypto.Hash) string {
	for n, v := range hashNames {
		if v == h {
			return n
		}
	}
	return h.String()
}

func newTSRequestCommand() *cobra.Command {
	var (
		url, hash, digest, out, policy string
		noNonce, noCert                bool
		timeout                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "request --url URL [--hash sha256|sha384|sha512] [--no-nonce] [--no-cert] (FILE | --digest HEX) [-o TOKEN.tsr]",
		Short: "Ask a TSA for a time-stamp token on FILE (or a digest)",
		Long: `request sends an RFC 3161 TimeStampReq to URL and checks that the reply answers it (status,
imprint, nonce). With -o it saves the TimeStampResp in DER, as 'openssl ts -reply' does;
without, it prints the response in base64. A refusal by the TSA exits 1 with its reason.

When the TSA is a PEC node with an evidence log, its answer names the evidence record of
the token (header PEC-Evidence-ID): request prints "evidence: ID", on stdout with -o, on
stderr without (stdout then holds the token). pec proof export takes that ID.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if url == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--url is required")}}
			}
			h, err := parseHash(hash)
			if err != nil {
				return err
			}
			var file string
			if len(a) == 1 {
				file = a[0]
			}
			d, err := digestInput(file, digest, h, cmd.InOrStdin())
			if err != nil {
				return err
			}
			client := &tsa.Client{URL: url, HTTPClient: &http.Client{Timeout: timeout}}
			res, err := client.Request(cmd.Context(), h, d, tsa.RequestOptions{NoNonce: noNonce, NoCert: noCert, Policy: policy})
			if err != nil {
				if _, ok := errors.AsType[*tsa.RejectError](err); ok {
					return failure(err)
				}
				return failure(fmt.Errorf("request: %w", err))
			}
			// The evidence id goes to stdout, unless stdout holds the token.
			if out == "" {
				fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(res.Response))
				if res.EvidenceID != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "evidence: %s\n", res.EvidenceID)
				}
				return nil
			}
			if err := os.WriteFile(out, res.Response, 0o644); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pec: time-stamp token saved to %s (serial %s, time %s)\n",
				out, res.Token.Serial.Text(16), res.Token.GenTime.UTC().Format(time.RFC3339Nano))
			if res.EvidenceID != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "evidence: %s\n", res.EvidenceID)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "", "TSA URL (RFC 3161 over HTTP)")
	f.StringVar(&hash, "hash", "sha256", "imprint hash: sha256, sha384 or sha512")
	f.StringVar(&digest, "digest", "", "the digest to time-stamp, in hex, instead of a FILE")
	f.StringVarP(&out, "out", "o", "", "save the TimeStampResp (DER) to this file")
	f.StringVar(&policy, "policy", "", "ask for this TSA policy OID")
	f.BoolVar(&noNonce, "no-nonce", false, "send no nonce")
	f.BoolVar(&noCert, "no-cert", false, "do not ask for the TSA certificate in the token")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func newTSVerifyCommand() *cobra.Command {
	var (
		roots, untrusted   []string
		data, digest, hash string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "verify --roots ROOT.pem (--data FILE | --digest HEX [--hash H]) [--untrusted CERTS.pem] [--json] TOKEN.tsr",
		Short: "Check a time-stamp token (a TimeStampResp or a bare token, DER or PEM) from any TSA",
		Long: `verify checks the token's CMS signature, its signing-certificate attribute, the TSA
certificate's chain to ROOT.pem with the timeStamping purpose at the token's time, and that
it stamps the given data. Exit status: 0 valid, 1 invalid (the reason on stderr), 2 usage
or unreadable input.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(roots) == 0 {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--roots is required")}}
			}
			tokenBytes, err := os.ReadFile(a[0])
			if err != nil {
				return inputError(err)
			}
			opts := tsa.VerifyOptions{Roots: x509.NewCertPool()}
			if err := addPEMFiles(opts.Roots, roots); err != nil {
				return err
			}
			for _, file := range untrusted {
				certs, err := devpki.LoadCertsPEM(file)
				if err != nil {
					return inputError(err)
				}
				opts.Certificates = append(opts.Certificates, certs...)
			}
			var h crypto.Hash
			if digest != "" {
				if h, err = parseHash(hash); err != nil {
					return err
				}
			} else {
				// The token says which hash it used; the data is hashed the same way.
				if h, err = tsa.TokenHash(tokenBytes); err != nil {
					return failure(fmt.Errorf("invalid: %w", err))
				}
			}
			d, err := digestInput(data, digest, h, cmd.InOrStdin())
			if err != nil {
				return err
			}
			tok, err := tsa.Verify(tokenBytes, d, h, opts)
			if asJSON {
				report := verifyReport(tok, err)
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				_ = enc.Encode(report)
			}
			if err != nil {
				return failure(fmt.Errorf("invalid: %w", err))
			}
			if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "valid: time %s, serial %s, policy %s, TSA %q\n",
					tok.GenTime.UTC().Format(time.RFC3339Nano), tok.Serial.Text(16), tok.Policy, tok.SignerCert.Subject.String())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&roots, "roots", nil, "trusted root certificates (PEM; repeatable)")
	f.StringArrayVar(&untrusted, "untrusted", nil, "more certificates: the TSA certificate and intermediates (PEM; repeatable)")
	f.StringVar(&data, "data", "", "the time-stamped data (- for stdin)")
	f.StringVar(&digest, "digest", "", "the time-stamped digest, in hex, instead of --data")
	f.StringVar(&hash, "hash", "sha256", "hash of --digest: sha256, sha384 or sha512")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func addPEMFiles(pool *x509.CertPool, files []string) error {
	for _, file := range files {
		certs, err := devpki.LoadCertsPEM(file)
		if err != nil {
			return inputError(err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return nil
}

type tokenReport struct {
	Valid    bool      `json:"valid"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time,omitzero"`
	Serial   string    `json:"serial,omitempty"`
	Policy   string    `json:"policy,omitempty"`
	Accuracy string    `json:"accuracy,omitempty"`
	Nonce    string    `json:"nonce,omitempty"`
	TSA      string    `json:"tsa,omitempty"`
	Hash     string    `json:"hash,omitempty"`
	Imprint  string    `json:"imprint,omitempty"`
}

func verifyReport(tok *tsa.Token, err error) tokenReport {
	if err != nil || tok == nil {
		r := tokenReport{Valid: false}
		if err != nil {
			r.Reason = err.Error()
		}
		return r
	}
	r := tokenReport{
		Valid:   true,
		Time:    tok.GenTime.UTC(),
		Serial:  tok.Serial.Text(16),
		Policy:  tok.Policy.String(),
		Hash:    hashName(tok.Hash),
		Imprint: hex.EncodeToString(tok.Imprint),
	}
	if tok.Accuracy > 0 {
		r.Accuracy = tok.Accuracy.String()
	}
	if tok.Nonce != nil {
		r.Nonce = tok.Nonce.Text(16)
	}
	if tok.SignerCert != nil {
		r.TSA = tok.SignerCert.Subject.String()
	}
	return r
}
