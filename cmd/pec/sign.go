package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/gateway/api"
	"pec/hsm"
	"pec/signing"
)

func newSignCommand() *cobra.Command {
	var (
		configPath, apiBase, certFile, keyFile, profile, out string
		roots                                                []string
		detached                                             bool
		timeout                                              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sign (--config FILE | --api URL --cert C.pem --key C.key [--roots ROOT.pem]) --profile NAME [--detached] IN -o OUT",
		Short: "Sign a document with a signature profile: locally with the node's keys, or through the API",
		Long: `sign makes a CAdES signature (a CMS file: attached, or detached with --detached) or, with a
PAdES profile, a signed PDF, as the profile says. With --config it signs locally with the keys and the
TSA of that node's pec.yaml (stop pec serve first, or set signing.tsa_url, when the profile wants
timestamps); with --api it asks a node over mutual TLS with a client certificate. IN may be - for
stdin, OUT - for stdout. Exit status: 0 signed, 1 refused or failed, 2 usage or input error (an unknown
profile, a document the profile cannot sign).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			mistake := func(msg string) error {
				return &exitError{code: exitUsage, err: usageMistake{errors.New(msg)}}
			}
			switch {
			case (configPath == "") == (apiBase == ""):
				return mistake("give --config FILE (local keys) or --api URL (a node), one of them")
			case apiBase != "" && (certFile == "" || keyFile == ""):
				return mistake("--api needs the client certificate: --cert C.pem --key C.key")
			case configPath != "" && (certFile != "" || keyFile != "" || len(roots) > 0):
				return mistake("--cert, --key and --roots go with --api")
			case profile == "":
				return mistake("--profile NAME is required")
			case out == "":
				return mistake("-o OUT is required")
			}
			doc, err := readInput(a[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			var res *api.SignatureResponse
			if apiBase != "" {
				res, err = signRemote(cmd.Context(), apiBase, certFile, keyFile, roots, timeout, api.SignatureRequest{Profile: profile, Document: doc, Detached: detached})
			} else {
				res, err = signLocal(cmd.Context(), configPath, signing.Request{Profile: profile, Document: doc, Detached: detached})
			}
			if err != nil {
				return err
			}
			if out == "-" {
				_, err = cmd.OutOrStdout().Write(res.Signature)
			} else {
				err = os.WriteFile(out, res.Signature, 0o644)
			}
			if err != nil {
				return failure(err)
			}
			what := res.Format
			if res.Format == string(signing.CAdES) && res.Detached {
				what += ", detached"
			}
			stamp := ""
			if !res.TimestampTime.IsZero() {
				stamp = ", timestamp " + res.TimestampTime.UTC().Format(time.RFC3339Nano)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pec: signed with profile %s (%s%s) to %s; evidence %s\n", res.Profile, what, stamp, out, res.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "sign locally with the keys of this pec.yaml")
	f.StringVar(&apiBase, "api", "", "sign through the API of this node (https://HOST:PORT)")
	f.StringVar(&certFile, "cert", "", "client certificate for the API (PEM)")
	f.StringVar(&keyFile, "key", "", "its private key (PEM)")
	f.StringArrayVar(&roots, "roots", nil, "roots the node's TLS certificate must chain to (PEM; repeatable; default: the system's)")
	f.StringVar(&profile, "profile", "", "signature profile")
	f.BoolVar(&detached, "detached", false, "CAdES: leave the document out of the signature")
	f.StringVarP(&out, "out", "o", "", "where to write the signature or the signed PDF (- for stdout)")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long (--api)")
	return cmd
}

// readInput reads a file, or stdin for "-".
func readInput(path string, stdin io.Reader) ([]byte, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, inputError(err)
	}
	return data, nil
}

// signLocal signs with the node's own keys: the profile of pec.yaml, its
// HSM key, the node's TSA (in-process) or signing.tsa_url, and the node's
// evidence log, which records the operation and seals it before the
// command ends (the node must be stopped: pec serve holds the log).
func signLocal(ctx context.Context, configPath string, req signing.Request) (*api.SignatureResponse, error) {
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return nil, inputError(err)
	}
	if err := nodeStopped(cfg.DataDir, "sign through it (pec sign --api URL --cert C.pem --key C.key), or stop it first"); err != nil {
		return nil, failure(err)
	}
	if _, err := applyKeyState(cfg); err != nil { // keystate.go
		return nil, inputError(err)
	}
	i := slices.IndexFunc(cfg.Signing.Profiles, func(p signing.ProfileConfig) bool { return p.Name == req.Profile })
	if i < 0 {
		var names []string
		for _, p := range cfg.Signing.Profiles {
			names = append(names, p.Name)
		}
		return nil, usageError("no signature profile %q in %s (profiles: %s)", req.Profile, configPath, strings.Join(names, ", "))
	}
	// Only the profile used is loaded: its key, its certificate, its TSA.
	cfg.Signing.Profiles = cfg.Signing.Profiles[i : i+1]
	log := slog.New(slog.DiscardHandler)
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{Logger: log})
	if err != nil {
		return nil, failure(fmt.Errorf("open keys: %w", err))
	}
	defer keys.Close()
	var n node
	defer n.close(log)
	// The node's TSA: for the signature timestamp, and for the checkpoint
	// that seals the operation's evidence.
	authority, clock, err := openTSA(ctx, cfg, keys, log, nil, &n)
	if err != nil {
		return nil, failure(fmt.Errorf("the node's TSA: %w (if pec serve runs on this node, sign through it with --api)", err))
	}
	if len(cfg.TSA.Clock.NTPServers) > 0 {
		clock.Check(ctx)
	}
	plog, err := openProof(ctx, cfg, keys, authority, log, nil, &n)
	if err != nil {
		return nil, failure(fmt.Errorf("the node's evidence log: %w (if pec serve runs on this node, sign through it with --api)", err))
	}
	svc, err := openSigning(ctx, cfg, keys, authority, plog, nil, log, nil)
	if err != nil {
		return nil, failure(err)
	}
	res, err := svc.Sign(ctx, signing.Client{}, req)
	if err != nil {
		if _, ok := errors.AsType[*signing.RequestError](err); ok {
			return nil, inputError(err)
		}
		return nil, failure(err)
	}
	out := &api.SignatureResponse{
		ID: res.ID, Profile: res.Profile, Format: string(res.Format), Detached: res.Detached,
		Signature: res.Signature.DER, SigningTime: res.Signature.SigningTime,
	}
	if res.Signature.Timestamp != nil {
		out.TimestampTime = res.Signature.Timestamp.GenTime
	}
	return out, nil
}

// apiClient is the typed client of the node at base, over mutual TLS with
// the client certificate of certFile and keyFile.
func apiClient(base, certFile, keyFile string, roots []string, timeout time.Duration) (*api.Client, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, inputError(fmt.Errorf("client certificate: %w", err))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if len(roots) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		if err := addPEMFiles(cfg.RootCAs, roots); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(base, &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: timeout})
	if err != nil {
		return nil, usageError("--api: %v", err)
	}
	return c, nil
}

// apiError gives an error of the API client the exit status it calls
// for: the caller's mistakes (4xx but 401 and 403) exit 2; refusals (401,
// 403), the node's failures and a node that does not answer exit 1.
func apiError(err error) error {
	if e, ok := errors.AsType[*api.Error](err); ok && e.ClientMistake() {
		return inputError(e)
	}
	return failure(err)
}

func signRemote(ctx context.Context, base, certFile, keyFile string, roots []string, timeout time.Duration, req api.SignatureRequest) (*api.SignatureResponse, error) {
	c, err := apiClient(base, certFile, keyFile, roots, timeout)
	if err != nil {
		return nil, err
	}
	res, err := c.Sign(ctx, req)
	if err != nil {
		return nil, apiError(err)
	}
	return res, nil
}
