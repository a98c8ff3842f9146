package signing

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Config is the signing section of pec.yaml.
type Config struct {
	Profiles []ProfileConfig `yaml:"profiles"`
	// TrustAnchors are PEM files of the roots that signatures and their
	// timestamps are verified against (the verification API).
	TrustAnchors []string `yaml:"trust_anchors"`
	// TSAURL is the RFC 3161 endpoint of signature timestamps; empty: this
	// node's own TSA, called in-process.
	TSAURL string `yaml:"tsa_url"`
	// EvidenceFile is no longer used: every signature operation is a
	// record of the evidence log (the proof section). Accepted so that
	// the pec.yaml of earlier versions still loads.
	EvidenceFile     string `yaml:"evidence_file"`
	MaxDocumentBytes int64  `yaml:"max_document_bytes"` // a document to sign or verify; 0: 32 MiB
	MaxBatch         int    `yaml:"max_batch"`          // digests in one batch; 0: 1000
}

// ProfileConfig is one signature profile: who may sign what, with which
// key, in which format.
type ProfileConfig struct {
	Name      string `yaml:"name"`
	KeyLabel  string `yaml:"key_label"` // key in hsm; never a PIN
	CertFile  string `yaml:"cert_file"` // the key's certificate, then its chain (PEM)
	Format    string `yaml:"format"`    // cades or pades
	Digest    string `yaml:"digest"`    // sha256 (default), sha384, sha512
	RSAPSS    bool   `yaml:"rsa_pss"`   // RSA keys: RSASSA-PSS instead of PKCS#1 v1.5
	Timestamp bool   `yaml:"timestamp"` // add a signature timestamp: B-T instead of B-B
	// AllowedClients name the API clients that may use the profile: a
	// certificate's SHA-256 fingerprint ("sha256:HEX"), its subject as
	// /v1/whoami shows it ("CN=partner-a,O=..."), or a name ("partner-a"):
	// a certificate's common name, or a partner of the directory (see
	// Options.Authorizer: the node's policy decides, these are its rules
	// for the profile). The local operator (pec sign --config) may use
	// every profile.
	AllowedClients []string  `yaml:"allowed_clients"`
	PDF            PDFConfig `yaml:"pdf"`
}

// PDFConfig is the appearance of a PAdES profile's signatures.
type PDFConfig struct {
	Visible  bool      `yaml:"visible"`
	Page     int       `yaml:"page"` // 1 the first (default), -1 the last
	Rect     []float64 `yaml:"rect"` // [llx, lly, urx, ury] in points; empty: [36, 36, 256, 96]
	Reason   string    `yaml:"reason"`
	Location string    `yaml:"location"`
}

// Defaults of the limits.
const (
	DefaultMaxDocumentBytes = 32 << 20
	DefaultMaxBatch         = 1000
)

// Format is a signature format.
type Format string

// The formats a profile makes.
const (
	CAdES Format = "cades" // CMS, ETSI EN 319 122-1
	PAdES Format = "pades" // PDF, ETSI EN 319 142-1
)

var hashByName = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

// HashByName returns the hash named sha256, sha384 or sha512.
func HashByName(name string) (crypto.Hash, bool) {
	h, ok := hashByName[strings.ToLower(name)]
	return h, ok
}

var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Validate reports every invalid field by path: "signing.profiles[1].format: ...".
func (c Config) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	names := map[string]bool{}
	for i, p := range c.Profiles {
		at := fmt.Sprintf("signing.profiles[%d]", i)
		switch {
		case p.Name == "":
			fault("%s.name: required", at)
		case !profileName.MatchString(p.Name):
			fault("%s.name: %q is not a profile name (lowercase letters, digits, '.', '_', '-')", at, p.Name)
		case names[p.Name]:
			fault("%s.name: %q is used by another profile", at, p.Name)
		}
		names[p.Name] = true
		if p.KeyLabel == "" {
			fault("%s.key_label: required", at)
		}
		if p.CertFile == "" {
			fault("%s.cert_file: required", at)
		}
		if p.Format != string(CAdES) && p.Format != string(PAdES) {
			fault("%s.format: %q is not one of cades, pades", at, p.Format)
		}
		if _, ok := hashByName[p.Digest]; !ok && p.Digest != "" {
			fault("%s.digest: %q is not one of sha256, sha384, sha512", at, p.Digest)
		}
		for j, a := range p.AllowedClients {
			if _, err := ParseClientRule(a); err != nil {
				fault("%s.allowed_clients[%d]: %v", at, j, err)
			}
		}
		if p.Format != string(PAdES) && (p.PDF.Visible || len(p.PDF.Rect) > 0 || p.PDF.Reason != "" || p.PDF.Location != "" || p.PDF.Page != 0) {
			fault("%s.pdf: only with format: pades", at)
		}
		if n := len(p.PDF.Rect); n != 0 && n != 4 {
			fault("%s.pdf.rect: want [llx, lly, urx, ury], not %d numbers", at, n)
		} else if n == 4 && (p.PDF.Rect[2] <= p.PDF.Rect[0] || p.PDF.Rect[3] <= p.PDF.Rect[1]) {
			fault("%s.pdf.rect: the upper-right corner must be above and right of the lower-left one", at)
		}
	}
	if c.MaxDocumentBytes < 0 {
		fault("signing.max_document_bytes: must not be negative")
	}
	if c.MaxBatch < 0 {
		fault("signing.max_batch: must not be negative")
	}
	if c.TSAURL != "" && !strings.HasPrefix(c.TSAURL, "http://") && !strings.HasPrefix(c.TSAURL, "https://") {
		fault("signing.tsa_url: %q is not an http(s) URL", c.TSAURL)
	}
	return errors.Join(errs...)
}

// NeedsTimestamps tells whether a profile adds signature timestamps.
func (c Config) NeedsTimestamps() bool {
	for _, p := range c.Profiles {
		if p.Timestamp {
			return true
		}
	}
	return false
}

// MaxDocument is the document size limit in bytes.
func (c Config) MaxDocument() int64 {
	if c.MaxDocumentBytes == 0 {
		return DefaultMaxDocumentBytes
	}
	return c.MaxDocumentBytes
}

func (c Config) maxBatch() int {
	if c.MaxBatch == 0 {
		return DefaultMaxBatch
	}
	return c.MaxBatch
}

// ClientRule is one entry of allowed_clients: a certificate's SHA-256
// fingerprint, its subject, or a name (a common name, or a directory
// partner's id, which the node's policy matches).
type ClientRule struct {
	Fingerprint []byte // SHA-256 of the certificate
	Subject     string // RFC 4514, as crypto/x509 prints it
	Name        string // a common name or a partner id
}

// ParseClientRule reads one entry of allowed_clients: "sha256:HEX" (or 64
// hexadecimal digits) is a fingerprint, text holding "=" a subject, any
// other text a name.
func ParseClientRule(s string) (ClientRule, error) {
	hexFP, isFP := strings.CutPrefix(strings.TrimSpace(s), "sha256:")
	if !isFP && len(s) == 64 {
		hexFP, isFP = s, true
		if _, err := hex.DecodeString(s); err != nil {
			isFP = false
		}
	}
	switch {
	case s == "":
		return ClientRule{}, errors.New("empty")
	case isFP:
		fp, err := hex.DecodeString(strings.ReplaceAll(hexFP, ":", ""))
		if err != nil || len(fp) != 32 {
			return ClientRule{}, fmt.Errorf("%q is not a SHA-256 fingerprint in hexadecimal", s)
		}
		return ClientRule{Fingerprint: fp}, nil
	case strings.Contains(s, "="):
		return ClientRule{Subject: s}, nil
	}
	return ClientRule{Name: s}, nil
}

// MatchesCertificate reports whether the rule names the certificate with
// this SHA-256 fingerprint, subject and common name (a name rule matches
// the common name).
func (r ClientRule) MatchesCertificate(fingerprint [32]byte, subject, commonName string) bool {
	switch {
	case r.Fingerprint != nil:
		return bytes.Equal(r.Fingerprint, fingerprint[:])
	case r.Subject != "":
		return r.Subject == subject
	}
	return r.Name != "" && r.Name == commonName
}
