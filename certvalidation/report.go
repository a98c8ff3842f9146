package certvalidation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"
)

// Report is the record of one validation: what was decided, on which
// chain, after which checks, and on which revocation data. It is meant to
// be kept as evidence: the chain's certificates and the OCSP responses are
// included whole, CRLs by digest (and whole when small), so that the
// decision can be checked again later and offline.
type Report struct {
	Valid      bool             `json:"valid"`
	Reason     Reason           `json:"reason,omitempty"` // when invalid
	Detail     string           `json:"detail,omitempty"` // when invalid: the error text
	Purpose    Purpose          `json:"purpose"`
	At         time.Time        `json:"at"` // the validation time
	Revocation RevocationPolicy `json:"revocation_policy"`

	// Chain is the path that was accepted (or, when none was, the one that
	// came closest): the certificate validated first, the trust anchor
	// last.
	Chain  []CertificateInfo `json:"chain,omitempty"`
	Checks []Check           `json:"checks,omitempty"`
	// Path is Chain's certificates, for Go callers; not serialised.
	Path []*x509.Certificate `json:"-"`

	// RevocationData lists every CRL and OCSP response consulted for the
	// chain, usable or not (with why not).
	RevocationData []Evidence `json:"revocation,omitempty"`

	// Policies is the set of certificate policies the chain is valid for
	// (RFC 5280 section 6.1.6, user-constrained), when any.
	Policies []string `json:"policies,omitempty"`

	// Candidates are the paths tried, in order, with why each failed.
	Candidates []Candidate `json:"candidates,omitempty"`

	Warnings []string `json:"warnings,omitempty"`

	// ValidUntil bounds how long a decision made for "now" may be reused:
	// the earliest notAfter of the chain and nextUpdate of the revocation
	// data relied on.
	ValidUntil time.Time `json:"valid_until,omitzero"`

	// Cached is true when this report was served from the result cache.
	Cached bool `json:"cached,omitempty"`
}

// CertificateInfo describes one certificate of a chain, with its DER.
type CertificateInfo struct {
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	SerialNumber string    `json:"serial_number"` // hexadecimal
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	SHA256       string    `json:"sha256"` // of the DER, hexadecimal
	Key          string    `json:"key"`    // "ECDSA P-256", "RSA 2048"
	Signature    string    `json:"signature_algorithm"`
	TrustAnchor  bool      `json:"trust_anchor,omitempty"`
	DER          []byte    `json:"der"` // base64 in JSON
}

// Check is one check made on one certificate of the chain.
type Check struct {
	Name   string `json:"name"`   // signature, validity, name_chaining, ...
	Cert   int    `json:"cert"`   // index in Chain
	Status string `json:"status"` // ok, failed, warning, skipped
	Detail string `json:"detail,omitempty"`
}

// Check statuses.
const (
	StatusOK      = "ok"
	StatusFailed  = "failed"
	StatusWarning = "warning"
	StatusSkipped = "skipped"
)

// Evidence is one piece of revocation data consulted: a CRL (complete or
// delta) or an OCSP response, where it came from, what it said, and its
// bytes.
type Evidence struct {
	Cert       int       `json:"cert"`             // index in Chain of the certificate checked
	Type       string    `json:"type"`             // "crl", "delta-crl" or "ocsp"
	Origin     string    `json:"origin"`           // "request", "local", "cache" or "fetched"
	URL        string    `json:"url,omitempty"`    // where it was fetched from
	Status     string    `json:"status"`           // good, revoked, unknown, or unusable
	Reason     string    `json:"reason,omitempty"` // revocation reason, or why unusable
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	Issuer     string    `json:"issuer,omitempty"` // CRL issuer or OCSP responder
	ThisUpdate time.Time `json:"this_update,omitzero"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	ProducedAt time.Time `json:"produced_at,omitzero"`
	SHA256     string    `json:"sha256"` // of the DER, hexadecimal
	// DER is the response itself: always for OCSP, for CRLs up to
	// MaxEmbeddedCRLBytes (beyond, SHA256 and URL say where it is).
	DER []byte `json:"der,omitempty"`
	// Raw is always the whole response, for callers that embed it (a CMS
	// signature's revocation values); it is not serialised.
	Raw []byte `json:"-"`
}

// MaxEmbeddedCRLBytes is the size up to which a report carries a CRL whole.
const MaxEmbeddedCRLBytes = 64 << 10

// Candidate is one path tried and why it failed ("" when it is the one
// accepted).
type Candidate struct {
	Chain  []string `json:"chain"` // subjects, certificate validated first
	Reason Reason   `json:"reason,omitempty"`
	Detail string   `json:"detail,omitempty"`
}

func certInfoOf(c *x509.Certificate, anchor bool) CertificateInfo {
	sum := sha256.Sum256(c.Raw)
	serial := ""
	if c.SerialNumber != nil {
		serial = c.SerialNumber.Text(16)
	}
	return CertificateInfo{
		Subject:      c.Subject.String(),
		Issuer:       c.Issuer.String(),
		SerialNumber: serial,
		NotBefore:    c.NotBefore.UTC(),
		NotAfter:     c.NotAfter.UTC(),
		SHA256:       hex.EncodeToString(sum[:]),
		Key:          keyDescription(c.PublicKey),
		Signature:    c.SignatureAlgorithm.String(),
		TrustAnchor:  anchor,
		DER:          c.Raw,
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// clone returns a copy of r whose slices may be appended to without
// touching r (the result cache hands out clones).
func (r *Report) clone() *Report {
	c := *r
	c.Chain = append([]CertificateInfo(nil), r.Chain...)
	c.Path = append([]*x509.Certificate(nil), r.Path...)
	c.Checks = append([]Check(nil), r.Checks...)
	c.RevocationData = append([]Evidence(nil), r.RevocationData...)
	c.Policies = append([]string(nil), r.Policies...)
	c.Candidates = append([]Candidate(nil), r.Candidates...)
	c.Warnings = append([]string(nil), r.Warnings...)
	return &c
}
