// Package devca is the development CA of a node that `pec init` made: what
// its root issued and revoked (a state file shared by the node and the
// `pec ca` commands), and the revocation data the node serves for it — a
// complete CRL (RFC 5280 section 5) and an OCSP responder (RFC 6960, the
// RFC 5019 profile: one certificate per request, POST or GET).
//
// It is for development only: production certificates come from a real
// CA, whose own CRLs and responders certvalidation fetches. Nothing of this
// package runs unless pec.yaml has a devca section (which `pec init`
// writes).
//
// # State
//
// The state file (JSON, [State]) lists every end-entity certificate the
// root issued: serial number, name, subject, fingerprint, who issued it
// and when, and its revocation if any. [Update] changes it under an
// exclusive lock (a lock file beside it, flock(2)) and replaces it whole
// and durably (internal/atomicfile), so that concurrent `pec ca` commands
// and a running node agree: the node reads it again whenever it changed
// (at every CRL or OCSP request, and once a second in [Responder.Run]).
//
// # Revocation data
//
// The CRL is signed again when the state changed and when half its
// validity has passed (its nextUpdate is [Config.CRLValidity] after its
// thisUpdate); its CRL number is the nanoseconds since 1970 of its
// thisUpdate, as Boulder numbers its CRLs, so that it grows across
// restarts without being stored. OCSP responses are signed by the root
// itself (RFC 6960 section 4.2.2.2), for the CertID hash of the request,
// and reused until half of [Config.OCSPValidity] has passed or the state
// changed. A serial number the state does not hold is "unknown"; a request
// about another issuer is answered "unauthorized" (section 2.3). Requests
// carry no nonce echo (RFC 5019 section 2.1.1: pre-produced responses).
//
// # Evidence
//
// Issuing and revoking are security-relevant. `pec ca` gives each event an
// evidence id when it writes it to the state; the node that serves the CA
// appends the event's admin.action record to its evidence log under that
// id, at start and whenever the state changed ([Responder.Run]), so an
// event is recorded once (a second append is refused as a duplicate id),
// whether the node ran when the command did or started later. The
// certificates `pec init` issued have no evidence id: they are the node's
// own making, before any log exists.
package devca

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Config is the devca section of pec.yaml.
type Config struct {
	// URL is the base of the revocation URLs written into the
	// certificates: URL/crl/root.crl and URL/ocsp. The node serves them on
	// its tsa listener (plain HTTP), so URL is http://ADDRESS-OF-LISTEN.TSA.
	URL       string `yaml:"url"`
	StateFile string `yaml:"state_file"` // what the root issued and revoked
	KeyLabel  string `yaml:"key_label"`  // the root's key in the HSM
	CertFile  string `yaml:"cert_file"`  // the root's certificate
	// CRLValidity is nextUpdate - thisUpdate of the CRL; it is signed
	// again at each change and when half of it has passed. 0: DefaultValidity.
	CRLValidity time.Duration `yaml:"crl_validity"`
	// OCSPValidity is nextUpdate - thisUpdate of OCSP responses. 0:
	// DefaultValidity.
	OCSPValidity time.Duration `yaml:"ocsp_validity"`
}

// DefaultValidity is the validity of CRLs and OCSP responses when the
// configuration gives none.
const DefaultValidity = 10 * time.Minute

// The paths of the revocation data under Config.URL.
const (
	CRLPath  = "/crl/root.crl"
	OCSPPath = "/ocsp"
)

// Configured reports whether the section is present: without it, nothing
// of the development CA runs.
func (c Config) Configured() bool { return c != Config{} }

// CRLURL is the CRL distribution point of the certificates.
func (c Config) CRLURL() string { return strings.TrimRight(c.URL, "/") + CRLPath }

// OCSPURL is the OCSP responder of the certificates.
func (c Config) OCSPURL() string { return strings.TrimRight(c.URL, "/") + OCSPPath }

// Host is the HOST:PORT of URL.
func (c Config) Host() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	if u.Port() == "" {
		return u.Hostname() + ":80"
	}
	return u.Host
}

// Validate reports every invalid field by path: "devca.url: ...". An
// absent section is valid.
func (c Config) Validate() error {
	if !c.Configured() {
		return nil
	}
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || u.Scheme != "http" || u.Host == "" || strings.TrimRight(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		// RFC 5280 section 4.2.1.13 and RFC 5019 section 5: revocation
		// data over plain HTTP (it is signed; fetching it over TLS would
		// need revocation data of its own).
		fault("devca.url: %q: want http://HOST:PORT, the address of the tsa listener", c.URL)
	}
	for _, f := range []struct{ name, v string }{{"state_file", c.StateFile}, {"key_label", c.KeyLabel}, {"cert_file", c.CertFile}} {
		if f.v == "" {
			fault("devca.%s: required", f.name)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"crl_validity", c.CRLValidity}, {"ocsp_validity", c.OCSPValidity}} {
		if d.v != 0 && d.v < 2*time.Second {
			fault("devca.%s: %s: at least 2s (0: %s)", d.name, d.v, DefaultValidity)
		}
	}
	return errors.Join(errs...)
}

func (c Config) crlValidity() time.Duration {
	if c.CRLValidity == 0 {
		return DefaultValidity
	}
	return c.CRLValidity
}

func (c Config) ocspValidity() time.Duration {
	if c.OCSPValidity == 0 {
		return DefaultValidity
	}
	return c.OCSPValidity
}

// ResolvePaths makes the file names of c relative to dir (the directory of
// pec.yaml) absolute.
func (c *Config) ResolvePaths(dir string) {
	for _, p := range []*string{&c.StateFile, &c.CertFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
