package certvalidation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Config is the certvalidation section of pec.yaml. The zero value works:
// every bound and duration has a default (see the Default constants), and
// a purpose without roots has no trust anchors until Material gives some.
type Config struct {
	// Purposes maps a purpose name (clientAuth, documentSigning, ...) to
	// its trust anchors and revocation policy.
	Purposes map[string]PurposeConfig `yaml:"purposes"`
	// Intermediates are more CA certificates for path building (PEM or DER
	// files, or directories of them). Untrusted: only anchors are trusted.
	Intermediates []string `yaml:"intermediates"`
	// CRLs kept locally (PEM or DER files, or directories), consulted
	// before any fetch.
	CRLs []string `yaml:"crls"`
	// AllowWeakAlgorithms accepts MD5 and SHA-1 signatures and RSA or DSA
	// keys under 2048 bits (PKITS needs it; production should not).
	AllowWeakAlgorithms bool `yaml:"allow_weak_algorithms"`
	// Relax lets the certificates and CRLs of a legacy PKI break named
	// issuance rules of RFC 5280 (see ProfileCheck), for the paths that end
	// at its trust anchors only.
	Relax      []RelaxConfig    `yaml:"relax"`
	Fetch      FetchConfig      `yaml:"fetch"`
	Revocation RevocationConfig `yaml:"revocation"`
	Cache      CacheConfig      `yaml:"cache"`
	Limits     Limits           `yaml:"limits"`
}

// PurposeConfig is the trust of one purpose.
type PurposeConfig struct {
	Roots      []string `yaml:"roots"`      // PEM or DER files, or directories
	Revocation string   `yaml:"revocation"` // none, prefer or require; "" is prefer
}

// RelaxConfig turns off named profile checks for the paths that end at
// some trust anchors:
//
//	relax:
//	  - anchors: [roots/legacy-root.pem]
//	    checks: [policy_constraints, basic_constraints_critical]
type RelaxConfig struct {
	Anchors []string `yaml:"anchors"` // PEM or DER files, or directories: the anchors it applies to
	Checks  []string `yaml:"checks"`  // ProfileCheck names
}

// FetchConfig bounds what is fetched over HTTP: CRLs from distribution
// points, OCSP responses, and (optionally) missing intermediates from the
// authority information access caIssuers URL.
type FetchConfig struct {
	Offline          bool          `yaml:"offline"`            // never fetch: local and cached data only
	Timeout          time.Duration `yaml:"timeout"`            // per fetch; 0: DefaultFetchTimeout
	MaxCRLBytes      int64         `yaml:"max_crl_bytes"`      // 0: DefaultMaxCRLBytes
	MaxResponseBytes int64         `yaml:"max_response_bytes"` // OCSP responses and certificates; 0: DefaultMaxResponseBytes
	AIAIntermediates bool          `yaml:"aia_intermediates"`  // fetch a missing issuer from caIssuers
}

// RevocationConfig tunes CRL and OCSP checking.
type RevocationConfig struct {
	// MaxAge is how long after its thisUpdate a CRL or OCSP response
	// without nextUpdate counts as current; 0: DefaultMaxAge.
	MaxAge time.Duration `yaml:"max_age"`
	// ClockSkew tolerates a thisUpdate this far in the future; 0:
	// DefaultClockSkew.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// OCSPNonce sends a nonce (RFC 8954) with each OCSP request and
	// requires the response to echo it.
	OCSPNonce bool `yaml:"ocsp_nonce"`
}

// CacheConfig sizes the caches. Entries expire at the nextUpdate of the
// data they rest on, and after MaxAge at most.
type CacheConfig struct {
	Results int           `yaml:"results"` // validation results for "now"; 0: DefaultCacheEntries, -1: none
	OCSP    int           `yaml:"ocsp"`    // OCSP responses; 0: DefaultCacheEntries
	CRLs    int           `yaml:"crls"`    // fetched CRLs; 0: DefaultCRLCacheEntries
	MaxAge  time.Duration `yaml:"max_age"` // 0: DefaultCacheMaxAge
}

// Limits bound the work one validation can cause, whatever certificates it
// is given (deep or branching paths, huge name-constraint sets).
type Limits struct {
	MaxDepth           int `yaml:"max_depth"`            // certificates in a path, anchor included; 0: DefaultMaxDepth
	MaxCandidates      int `yaml:"max_candidates"`       // complete paths tried; 0: DefaultMaxCandidates
	MaxNameComparisons int `yaml:"max_name_comparisons"` // name-constraint checks per path; 0: DefaultMaxNameComparisons
	MaxFetches         int `yaml:"max_fetches"`          // HTTP fetches per validation; 0: DefaultMaxFetches
}

// Defaults.
const (
	DefaultFetchTimeout       = 5 * time.Second
	DefaultMaxCRLBytes        = 16 << 20
	DefaultMaxResponseBytes   = 64 << 10
	DefaultMaxAge             = 24 * time.Hour
	DefaultClockSkew          = 5 * time.Minute
	DefaultCacheEntries       = 10000
	DefaultCRLCacheEntries    = 64
	DefaultCacheMaxAge        = time.Hour
	DefaultMaxDepth           = 10
	DefaultMaxCandidates      = 16
	DefaultMaxNameComparisons = 100000
	DefaultMaxFetches         = 16
)

// Validate reports every invalid field by path: "certvalidation.purposes.x: ...".
func (c Config) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	names := make([]string, 0, len(c.Purposes))
	for name := range c.Purposes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		pc := c.Purposes[name]
		if _, err := ParsePurpose(name); err != nil {
			fault("certvalidation.purposes.%s: %v", name, err)
		}
		if pc.Revocation != "" {
			if _, err := ParseRevocationPolicy(pc.Revocation); err != nil {
				fault("certvalidation.purposes.%s.revocation: %v", name, err)
			}
		}
	}
	for i, rc := range c.Relax {
		if len(rc.Anchors) == 0 {
			fault("certvalidation.relax[%d].anchors: name the trust anchors it applies to", i)
		}
		if len(rc.Checks) == 0 {
			fault("certvalidation.relax[%d].checks: name the checks to relax", i)
		}
		for j, name := range rc.Checks {
			if _, err := ParseProfileCheck(name); err != nil {
				fault("certvalidation.relax[%d].checks[%d]: %v", i, j, err)
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"fetch.timeout", c.Fetch.Timeout}, {"revocation.max_age", c.Revocation.MaxAge},
		{"revocation.clock_skew", c.Revocation.ClockSkew}, {"cache.max_age", c.Cache.MaxAge},
	} {
		if d.v < 0 {
			fault("certvalidation.%s: must not be negative", d.name)
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"fetch.max_crl_bytes", c.Fetch.MaxCRLBytes}, {"fetch.max_response_bytes", c.Fetch.MaxResponseBytes},
		{"cache.ocsp", int64(c.Cache.OCSP)}, {"cache.crls", int64(c.Cache.CRLs)},
		{"limits.max_depth", int64(c.Limits.MaxDepth)}, {"limits.max_candidates", int64(c.Limits.MaxCandidates)},
		{"limits.max_name_comparisons", int64(c.Limits.MaxNameComparisons)}, {"limits.max_fetches", int64(c.Limits.MaxFetches)},
	} {
		if n.v < 0 {
			fault("certvalidation.%s: must not be negative", n.name)
		}
	}
	if c.Cache.Results < -1 {
		fault("certvalidation.cache.results: must be -1 (no cache), 0 (default) or positive")
	}
	if c.Limits.MaxDepth == 1 {
		fault("certvalidation.limits.max_depth: must be at least 2 (a certificate and its trust anchor)")
	}
	return errors.Join(errs...)
}

// ResolvePaths makes the file names of c relative to dir (the directory of
// pec.yaml) absolute.
func (c *Config) ResolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for name, pc := range c.Purposes {
		roots := make([]string, len(pc.Roots))
		for i, r := range pc.Roots {
			roots[i] = abs(r)
		}
		pc.Roots = roots
		c.Purposes[name] = pc
	}
	for i := range c.Intermediates {
		c.Intermediates[i] = abs(c.Intermediates[i])
	}
	for i := range c.CRLs {
		c.CRLs[i] = abs(c.CRLs[i])
	}
	for i, rc := range c.Relax {
		anchors := make([]string, len(rc.Anchors))
		for k, a := range rc.Anchors {
			anchors[k] = abs(a)
		}
		c.Relax[i].Anchors = anchors
	}
}

// Material is the trust material of a Validator held in memory: what
// LoadMaterial reads from the files of a Config, or what a caller builds
// (tests, `pec validate --roots`).
type Material struct {
	Roots         map[Purpose][]*x509.Certificate
	Intermediates []*x509.Certificate
	CRLs          [][]byte // DER
	Relax         []Relaxation
}

// Relaxation turns off profile checks for the paths that end at Anchors
// (compared by their DER, whichever purpose or request they come from).
type Relaxation struct {
	Anchors []*x509.Certificate
	Checks  []ProfileCheck
}

// LoadMaterial reads the roots, intermediates and CRLs the Config names.
// Faults name the field: "certvalidation.purposes.clientAuth.roots: ...".
func (c Config) LoadMaterial() (Material, error) {
	m := Material{Roots: map[Purpose][]*x509.Certificate{}}
	var errs []error
	for name, pc := range c.Purposes {
		p, err := ParsePurpose(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("certvalidation.purposes: %w", err))
			continue
		}
		if len(pc.Roots) == 0 {
			continue
		}
		roots, err := LoadCertificates(pc.Roots...)
		if err != nil {
			errs = append(errs, fmt.Errorf("certvalidation.purposes.%s.roots: %w", name, err))
			continue
		}
		if len(roots) == 0 {
			errs = append(errs, fmt.Errorf("certvalidation.purposes.%s.roots: no certificate found", name))
		}
		m.Roots[p] = roots
	}
	if len(c.Intermediates) > 0 {
		certs, err := LoadCertificates(c.Intermediates...)
		if err != nil {
			errs = append(errs, fmt.Errorf("certvalidation.intermediates: %w", err))
		}
		m.Intermediates = certs
	}
	if len(c.CRLs) > 0 {
		crls, err := LoadCRLs(c.CRLs...)
		if err != nil {
			errs = append(errs, fmt.Errorf("certvalidation.crls: %w", err))
		}
		m.CRLs = crls
	}
	for i, rc := range c.Relax {
		anchors, err := LoadCertificates(rc.Anchors...)
		if err != nil {
			errs = append(errs, fmt.Errorf("certvalidation.relax[%d].anchors: %w", i, err))
			continue
		}
		rel := Relaxation{Anchors: anchors}
		for _, name := range rc.Checks {
			pc, err := ParseProfileCheck(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("certvalidation.relax[%d].checks: %w", i, err))
				continue
			}
			rel.Checks = append(rel.Checks, pc)
		}
		m.Relax = append(m.Relax, rel)
	}
	return m, errors.Join(errs...)
}

// settings are a Config with its defaults applied.
type settings struct {
	revocation       map[Purpose]RevocationPolicy
	allowWeak        bool
	offline          bool
	aia              bool
	fetchTimeout     time.Duration
	maxCRLBytes      int64
	maxResponseBytes int64
	maxAge           time.Duration
	skew             time.Duration
	nonce            bool
	resultEntries    int
	ocspEntries      int
	crlEntries       int
	cacheMaxAge      time.Duration
	maxDepth         int
	maxCandidates    int
	maxNameChecks    int
	maxFetches       int
}

func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

func (c Config) settings() settings {
	s := settings{
		revocation:       map[Purpose]RevocationPolicy{},
		allowWeak:        c.AllowWeakAlgorithms,
		offline:          c.Fetch.Offline,
		aia:              c.Fetch.AIAIntermediates,
		fetchTimeout:     orDefault(c.Fetch.Timeout, DefaultFetchTimeout),
		maxCRLBytes:      orDefault(c.Fetch.MaxCRLBytes, DefaultMaxCRLBytes),
		maxResponseBytes: orDefault(c.Fetch.MaxResponseBytes, DefaultMaxResponseBytes),
		maxAge:           orDefault(c.Revocation.MaxAge, DefaultMaxAge),
		skew:             orDefault(c.Revocation.ClockSkew, DefaultClockSkew),
		nonce:            c.Revocation.OCSPNonce,
		resultEntries:    orDefault(c.Cache.Results, DefaultCacheEntries),
		ocspEntries:      orDefault(c.Cache.OCSP, DefaultCacheEntries),
		crlEntries:       orDefault(c.Cache.CRLs, DefaultCRLCacheEntries),
		cacheMaxAge:      orDefault(c.Cache.MaxAge, DefaultCacheMaxAge),
		maxDepth:         orDefault(c.Limits.MaxDepth, DefaultMaxDepth),
		maxCandidates:    orDefault(c.Limits.MaxCandidates, DefaultMaxCandidates),
		maxNameChecks:    orDefault(c.Limits.MaxNameComparisons, DefaultMaxNameComparisons),
		maxFetches:       orDefault(c.Limits.MaxFetches, DefaultMaxFetches),
	}
	if s.resultEntries < 0 {
		s.resultEntries = 0
	}
	for _, p := range AllPurposes {
		s.revocation[p] = RevocationPrefer
	}
	for name, pc := range c.Purposes {
		if p, err := ParsePurpose(name); err == nil && pc.Revocation != "" {
			if rp, err := ParseRevocationPolicy(pc.Revocation); err == nil {
				s.revocation[p] = rp
			}
		}
	}
	return s
}
