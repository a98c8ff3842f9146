package main

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"

	"pec/certvalidation"
	"pec/gateway"
	"pec/hsm"
	"pec/internal/devca"
	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// File is pec.yaml. Each package owns its section and its Validate; this
// type only composes them.
type File struct {
	DataDir string         `yaml:"data_dir"`
	Log     LogConfig      `yaml:"log"`
	Listen  ListenConfig   `yaml:"listen"`
	TLS     TLSConfig      `yaml:"tls"`
	HSM     hsm.Config     `yaml:"hsm"`
	TSA     tsa.Config     `yaml:"tsa"`
	Proof   proof.Config   `yaml:"proof"`   // absent: no evidence log
	Signing signing.Config `yaml:"signing"` // absent: no signature profiles

	// Directory is the partners, their roles and the routing rules: the
	// base that the administration API's changes (kept in its file) win
	// over.
	Directory middleoffice.Config `yaml:"directory"`

	// Exchange is the exchange service: tele-dossiers between partners.
	Exchange ExchangeConfig `yaml:"exchange"`

	// CertValidation decides on certificates: the API's clients, POST
	// /v1/validations, signers.
	CertValidation certvalidation.Config `yaml:"certvalidation"`

	// DevCA is the development CA of `pec init` (its revocation data is
	// served on the tsa listener); absent in production.
	DevCA devca.Config `yaml:"devca"`

	path string // where it was read from
}

// ExchangeConfig is the exchange section: the service's own settings and
// the signature profile whose key seals the manifests and signs the
// acknowledgments of receipt.
type ExchangeConfig struct {
	middleoffice.ExchangeConfig `yaml:",inline"`
	// SealProfile names a CAdES profile of the signing section; empty: the
	// node serves no exchange.
	SealProfile string `yaml:"seal_profile"`
	// WebhookRoots are the roots the partners' webhook endpoints must
	// chain to (PEM files); empty: the system's.
	WebhookRoots []string `yaml:"webhook_roots"`
}

// Configured reports whether the node serves the exchange.
func (c ExchangeConfig) Configured() bool { return c.SealProfile != "" }

// LogConfig is the log section.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, text
}

// ListenConfig gives each service its address; empty turns it off.
type ListenConfig struct {
	TSA  string `yaml:"tsa"`
	API  string `yaml:"api"`
	Web  string `yaml:"web"`
	SMTP string `yaml:"smtp"`
	// Ops serves the operators: /metrics, /readyz with its details,
	// /healthz; plain HTTP, for a loopback or management address.
	Ops string `yaml:"ops"`
	// MaxInFlight bounds the requests each partner-facing listener serves
	// at once; more are answered 503 with Retry-After. 0: 1024.
	MaxInFlight int `yaml:"max_in_flight"`
}

// TLSConfig is the tls section: the API's server certificate, its HSM key,
// and the roots that client certificates must chain to.
type TLSConfig struct {
	CertFile    string `yaml:"cert_file"`
	KeyLabel    string `yaml:"key_label"`
	ClientRoots string `yaml:"client_roots"`
	TSATLS      bool   `yaml:"tsa_tls"`
}

// serviceNames are the NAMEs of `pec serve --listen NAME=HOST:PORT`.
var serviceNames = []string{"tsa", "api", "ops", "web", "smtp"}

func (l *ListenConfig) addr(name string) *string {
	switch name {
	case "tsa":
		return &l.TSA
	case "api":
		return &l.API
	case "web":
		return &l.Web
	case "smtp":
		return &l.SMTP
	case "ops":
		return &l.Ops
	}
	return nil
}

// LoadConfig reads pec.yaml strictly and reports every fault of the file at
// once, as a *ConfigError, each fault with its line: a YAML syntax error
// (alone: nothing after it can be read), unknown fields (with the nearest
// known name), values of the wrong type, the faults of each section's
// Validate, and the files and directories it names that are missing or
// unusable. Nothing is opened: no key, no store. Relative paths are
// resolved against the file's directory.
func LoadConfig(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no such file (pec init --dir DIR writes the pec.yaml of a development node)", path)
	} else if err != nil {
		return nil, err
	}
	cfg, doc, faults, fatal := decodeConfig(data)
	if !fatal {
		cfg.path = path
		cfg.resolvePaths(filepath.Dir(path))
		faults = append(faults, placeFaults(doc, cfg.Validate(), faults)...)
		faults = append(faults, placeFaults(doc, cfg.checkFiles(), faults)...)
	}
	if len(faults) > 0 {
		slices.SortStableFunc(faults, func(a, b ConfigFault) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
		})
		return nil, &ConfigError{File: path, Faults: faults}
	}
	return cfg, nil
}

// parseConfig decodes pec.yaml (syntax, fields, types) without validating
// it.
func parseConfig(data []byte) (*File, error) {
	cfg, _, faults, _ := decodeConfig(data)
	if len(faults) > 0 {
		return nil, &ConfigError{File: "pec.yaml", Faults: faults}
	}
	return cfg, nil
}

// Validate reports every fault of the file at once.
func (f *File) Validate() error {
	var errs []error
	if f.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", f.Log.Level))
	}
	switch f.Log.Format {
	case "", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not one of json, text", f.Log.Format))
	}
	for _, name := range serviceNames {
		if a := *f.Listen.addr(name); a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("listen.%s: %q is not HOST:PORT", name, a))
			}
		}
	}
	if f.Listen.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("listen.max_in_flight: %d: must be positive (0: the default, %d)", f.Listen.MaxInFlight, gateway.DefaultMaxInFlight))
	}
	if f.Listen.API != "" || f.TLS.TSATLS {
		if f.TLS.CertFile == "" {
			errs = append(errs, errors.New("tls.cert_file: required to serve TLS"))
		}
		if f.TLS.KeyLabel == "" {
			errs = append(errs, errors.New("tls.key_label: required to serve TLS"))
		}
	}
	if f.Listen.API != "" && f.TLS.ClientRoots == "" && len(f.CertValidation.Purposes["clientAuth"].Roots) == 0 {
		errs = append(errs, errors.New("tls.client_roots: required: the API accepts only mutual TLS"))
	}
	errs = append(errs, f.HSM.Validate(), f.TSA.Validate(), f.Signing.Validate())
	errs = append(errs, f.CertValidation.Validate(), f.Directory.Validate(), f.DevCA.Validate())
	if f.DevCA.Configured() && (f.Listen.TSA == "" || f.TLS.TSATLS) {
		errs = append(errs, errors.New("devca: its CRL and OCSP responder are served on the tsa listener in plain HTTP: listen.tsa must be set and tls.tsa_tls false"))
	}
	if f.Proof.Configured() {
		errs = append(errs, f.Proof.Validate())
	}
	errs = append(errs, f.Exchange.Validate())
	if f.Exchange.Configured() {
		var p *signing.ProfileConfig
		for i := range f.Signing.Profiles {
			if f.Signing.Profiles[i].Name == f.Exchange.SealProfile {
				p = &f.Signing.Profiles[i]
			}
		}
		switch {
		case p == nil:
			errs = append(errs, fmt.Errorf("exchange.seal_profile: %q is not a profile of signing.profiles", f.Exchange.SealProfile))
		case p.Format != "" && p.Format != string(signing.CAdES):
			errs = append(errs, fmt.Errorf("exchange.seal_profile: %q is a %s profile; the seal is a CAdES signature", f.Exchange.SealProfile, p.Format))
		}
		if !f.Proof.Configured() {
			errs = append(errs, errors.New("exchange.seal_profile: the exchange needs the evidence log (a proof section): every step is recorded"))
		}
	}
	return errors.Join(errs...)
}

func (f *File) resolvePaths(dir string) {
	for _, p := range []*string{
		&f.DataDir, &f.TLS.CertFile, &f.TLS.ClientRoots,
		&f.HSM.PINFile, &f.HSM.SoftHSM2Conf, &f.HSM.KeyDir,
		&f.TSA.CertFile, &f.TSA.SerialFile, &f.TSA.JournalFile,
		&f.Proof.File, &f.Proof.CertFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	f.resolveSigningPaths(dir)
	for i, p := range f.Exchange.WebhookRoots {
		if p != "" && !filepath.IsAbs(p) {
			f.Exchange.WebhookRoots[i] = filepath.Join(dir, p)
		}
	}
	f.CertValidation.ResolvePaths(dir)
	f.DevCA.ResolvePaths(dir)
	f.Directory.ResolvePaths(dir)
	if f.Directory.File == "" && f.DataDir != "" {
		f.Directory.File = filepath.Join(f.DataDir, "directory.json")
	}
	if f.Proof.CheckpointFile != "" && !filepath.IsAbs(f.Proof.CheckpointFile) {
		f.Proof.CheckpointFile = filepath.Join(dir, f.Proof.CheckpointFile)
	}
	if f.Proof.Configured() && f.Proof.CheckpointFile == "" && f.DataDir != "" {
		// The rollback guard is never off: by default, beside the data.
		f.Proof.CheckpointFile = filepath.Join(f.DataDir, "proof-checkpoint")
	}
}
