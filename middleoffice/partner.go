package middleoffice

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"pec/certvalidation"
)

// Role is what a principal may do, beside what rules grant it by name.
type Role string

// The roles of the directory.
const (
	RolePartner Role = "partner" // an administration's information system: exchanges
	RoleAgent   Role = "agent"   // an instructing service: receives, answers
	RoleAuditor Role = "auditor" // reads every proof
	RoleAdmin   Role = "admin"   // manages the directory
)

var roles = []Role{RolePartner, RoleAgent, RoleAuditor, RoleAdmin}

// Channels of delivery.
const (
	ChannelPull    = "pull"    // the recipient lists its inbox and downloads (the default)
	ChannelWebhook = "webhook" // pushed to the recipient's HTTPS endpoint over mutual TLS
	ChannelMail    = "mail"    // S/MIME to the partner's mail addresses
)

// CertificateRule authenticates a partner: a certificate by its SHA-256
// fingerprint, or any certificate with this subject (and, when given, this
// issuer), which survives the partner's certificate renewals. Names are RFC
// 4514 text as crypto/x509 prints them, as /v1/whoami shows them:
// "CN=partner-a,O=Partner A administration". Every certificate must also
// chain to the API's client roots (validated at the TLS layer).
type CertificateRule struct {
	Fingerprint string `yaml:"fingerprint" json:"fingerprint,omitempty"` // 64 hexadecimal digits ("sha256:" and colons accepted)
	Subject     string `yaml:"subject" json:"subject,omitempty"`
	Issuer      string `yaml:"issuer" json:"issuer,omitempty"` // with subject only
	// File is a PEM certificate whose fingerprint makes the rule
	// (pec.yaml only).
	File string `yaml:"file" json:"-"`
}

// Channel is how a partner receives what is sent to it.
type Channel struct {
	Type string `yaml:"type" json:"type"`         // pull (default), webhook, mail
	URL  string `yaml:"url" json:"url,omitempty"` // webhook: the https:// endpoint
	// NotifyURL, when set, is the https:// endpoint that is told, as the
	// partner sends, of its exchanges' deliveries, acknowledgments,
	// refusals, failures and expiries (see [Notification]); whatever the
	// channel type.
	NotifyURL string `yaml:"notify_url" json:"notify_url,omitempty"`
}

// The content encryptions of a partner's dossiers.
const (
	ContentAES256GCM = "aes-256-gcm"
	ContentAES256CBC = "aes-256-cbc"
)

// Partner is an entry of the directory: an administration, an instructing
// service, an auditor or an administrator of the platform.
type Partner struct {
	ID           string            `yaml:"id" json:"id"`
	Name         string            `yaml:"name" json:"name"`
	Roles        []Role            `yaml:"roles" json:"roles"` // empty: [partner]
	Certificates []CertificateRule `yaml:"certificates" json:"certificates"`
	// EncryptionCertificate (DER; base64 in JSON, which accepts PEM too) is
	// what dossiers sent to the partner are encrypted for. pec.yaml names
	// a file instead (encryption_cert_file).
	EncryptionCertificate []byte `yaml:"-" json:"encryption_certificate,omitempty"`
	// ContentEncryption is how its dossiers' documents are encrypted:
	// "aes-256-gcm" (the default: CMS AuthEnvelopedData, RFC 5083/5084)
	// or "aes-256-cbc" (EnvelopedData, RFC 3565) for a recipient whose
	// tools cannot read the former (CBC carries no integrity of its own:
	// the seal's digests are then the only check).
	ContentEncryption string   `yaml:"content_encryption" json:"content_encryption,omitempty"`
	Channel           Channel  `yaml:"channel" json:"channel"`
	Mail              []string `yaml:"mail" json:"mail,omitempty"`
	// OpenPGPKeys are ASCII-armored public keys, for secure mail (later).
	OpenPGPKeys []string `yaml:"openpgp_keys" json:"openpgp_keys,omitempty"`
	// SignatureProfiles the partner may use, beside those whose
	// allowed_clients name it ("*": every profile).
	SignatureProfiles []string `yaml:"signature_profiles" json:"signature_profiles,omitempty"`
	Disabled          bool     `yaml:"disabled" json:"disabled"`

	// Set by the directory, ignored in requests: the number of changes
	// made through the API (0: as in pec.yaml), the time of the last one,
	// and the id of its admin.action evidence.
	Revision   int64     `yaml:"-" json:"revision"`
	UpdatedAt  time.Time `yaml:"-" json:"updated_at,omitzero"`
	EvidenceID string    `yaml:"-" json:"evidence_id,omitempty"`
}

// Route is a routing rule: senders From may send the procedures (and, when
// DocumentTypes is not empty, only those document types) to the
// recipients To. "*" stands for any partner, procedure or type.
type Route struct {
	From          []string `yaml:"from" json:"from"`
	To            []string `yaml:"to" json:"to"`
	Procedures    []string `yaml:"procedures" json:"procedures"`
	DocumentTypes []string `yaml:"document_types" json:"document_types,omitempty"`
}

// Config is the directory section of pec.yaml: the operator's base.
// Partners added or changed through the API are kept in File and win over
// the partners given here with the same id; a partner present only here is
// taken from here at every start.
type Config struct {
	File     string          `yaml:"file"` // the store of API changes; empty: DATA_DIR/directory.json
	Partners []PartnerConfig `yaml:"partners"`
	Routes   []Route         `yaml:"routes"`
}

// PartnerConfig is a partner in pec.yaml.
type PartnerConfig struct {
	Partner            `yaml:",inline"`
	EncryptionCertFile string `yaml:"encryption_cert_file"` // PEM
}

// Configured reports whether the section says anything.
func (c Config) Configured() bool {
	return c.File != "" || len(c.Partners) > 0 || len(c.Routes) > 0
}

// ResolvePaths makes the section's file names absolute, relative to dir.
func (c *Config) ResolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.File)
	for i := range c.Partners {
		abs(&c.Partners[i].EncryptionCertFile)
		for j := range c.Partners[i].Certificates {
			abs(&c.Partners[i].Certificates[j].File)
		}
	}
}

// Validate reports every invalid field by path: "directory.partners[1].id: ...".
func (c Config) Validate() error {
	var errs []error
	ids := map[string]bool{}
	for i, pc := range c.Partners {
		at := fmt.Sprintf("directory.partners[%d]", i)
		p := pc.Partner
		// Files are read by Open; here a rule with a file stands for a
		// fingerprint.
		for j, r := range p.Certificates {
			if r.File != "" {
				if r.Fingerprint != "" || r.Subject != "" || r.Issuer != "" {
					errs = append(errs, fmt.Errorf("%s.certificates[%d]: file or fingerprint or subject, one of them", at, j))
				}
				p.Certificates = slices.Clone(p.Certificates)
				p.Certificates[j] = CertificateRule{Fingerprint: strings.Repeat("0", 64)}
			}
		}
		// One fault a line, each with its path: pec.yaml points at its line.
		if ie, ok := errors.AsType[*InvalidError](p.validate(at + ".")); ok {
			for _, f := range ie.Faults {
				errs = append(errs, errors.New(f))
			}
		}
		if ids[p.ID] {
			errs = append(errs, fmt.Errorf("%s.id: %q is used by another partner", at, p.ID))
		}
		ids[p.ID] = true
		if pc.EncryptionCertFile != "" && len(pc.EncryptionCertificate) > 0 {
			errs = append(errs, fmt.Errorf("%s.encryption_cert_file: only one encryption certificate", at))
		}
	}
	for i, r := range c.Routes {
		at := fmt.Sprintf("directory.routes[%d]", i)
		check := func(field string, values []string, need bool, valid func(string) bool) {
			if need && len(values) == 0 {
				errs = append(errs, fmt.Errorf("%s.%s: required (\"*\" for any)", at, field))
			}
			for j, v := range values {
				if v != "*" && !valid(v) {
					errs = append(errs, fmt.Errorf("%s.%s[%d]: %q is not a name (lowercase letters, digits, '.', '_', '-') or \"*\"", at, field, j, v))
				}
			}
		}
		check("from", r.From, true, validName)
		check("to", r.To, true, validName)
		check("procedures", r.Procedures, true, validName)
		check("document_types", r.DocumentTypes, false, validName)
	}
	return errors.Join(errs...)
}

var nameSyntax = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func validName(s string) bool { return nameSyntax.MatchString(s) }

// Limits of a partner, so that one entry stays small.
const (
	maxText  = 256 // a name, a subject, a URL
	maxItems = 32  // certificates, mail addresses, keys, profiles
	maxKey   = 64 << 10
)

// InvalidError is a partner the directory refuses: each fault names its
// field ("certificates[0].fingerprint: ..."). Its text is safe to show the
// client that sent the partner.
type InvalidError struct{ Faults []string }

func (e *InvalidError) Error() string {
	return "middleoffice: invalid partner: " + strings.Join(e.Faults, "; ")
}

// Validate checks p as an entry of the directory; the error is an
// *InvalidError.
func (p Partner) Validate() error { return p.validate("") }

func (p Partner) validate(at string) error {
	var faults []string
	fault := func(format string, args ...any) { faults = append(faults, at+fmt.Sprintf(format, args...)) }
	switch {
	case p.ID == "":
		fault("id: required")
	case !validName(p.ID):
		fault("id: %q is not a partner id (lowercase letters, digits, '.', '_', '-'; 63 at most)", p.ID)
	}
	if p.Name == "" || len(p.Name) > maxText {
		fault("name: required, at most %d bytes", maxText)
	}
	for i, r := range p.Roles {
		if !slices.Contains(roles, r) {
			fault("roles[%d]: %q is not one of partner, agent, auditor, admin", i, r)
		}
	}
	if len(p.Roles) > len(roles) {
		fault("roles: at most %d", len(roles))
	}
	if len(p.Certificates) > maxItems || len(p.Mail) > maxItems || len(p.OpenPGPKeys) > maxItems || len(p.SignatureProfiles) > maxItems {
		fault("at most %d certificates, mail addresses, OpenPGP keys and signature profiles each", maxItems)
	}
	for i, r := range p.Certificates {
		switch {
		case r.Fingerprint != "" && (r.Subject != "" || r.Issuer != ""):
			fault("certificates[%d]: a fingerprint, or a subject (and an issuer): not both", i)
		case r.Fingerprint != "":
			if _, err := parseFingerprint(r.Fingerprint); err != nil {
				fault("certificates[%d].fingerprint: %v", i, err)
			}
		case r.Subject == "" && r.Issuer != "":
			fault("certificates[%d].subject: required with an issuer", i)
		case r.Subject == "":
			fault("certificates[%d]: a fingerprint or a subject is required", i)
		case !strings.Contains(r.Subject, "=") || len(r.Subject) > maxText:
			fault("certificates[%d].subject: %q is not a distinguished name such as CN=partner-a,O=Example", i, r.Subject)
		case r.Issuer != "" && (!strings.Contains(r.Issuer, "=") || len(r.Issuer) > maxText):
			fault("certificates[%d].issuer: %q is not a distinguished name", i, r.Issuer)
		}
	}
	if len(p.EncryptionCertificate) > 0 {
		if len(p.EncryptionCertificate) > maxKey {
			fault("encryption_certificate: larger than %d bytes", maxKey)
		} else if _, err := x509.ParseCertificate(p.EncryptionCertificate); err != nil {
			fault("encryption_certificate: not a DER or PEM certificate")
		}
	}
	switch p.ContentEncryption {
	case "", ContentAES256GCM, ContentAES256CBC:
	default:
		fault("content_encryption: %q is not %s or %s", p.ContentEncryption, ContentAES256GCM, ContentAES256CBC)
	}
	switch p.Channel.Type {
	case "", ChannelPull, ChannelMail:
		if p.Channel.URL != "" {
			fault("channel.url: only with type webhook")
		}
		if p.Channel.Type == ChannelMail && len(p.Mail) == 0 {
			fault("mail: the mail channel needs an address")
		}
	case ChannelWebhook:
		u, err := url.Parse(p.Channel.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || len(p.Channel.URL) > maxText {
			fault("channel.url: %q is not an https:// URL", p.Channel.URL)
		}
	default:
		fault("channel.type: %q is not one of pull, webhook, mail", p.Channel.Type)
	}
	if p.Channel.NotifyURL != "" {
		u, err := url.Parse(p.Channel.NotifyURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || len(p.Channel.NotifyURL) > maxText {
			fault("channel.notify_url: %q is not an https:// URL", p.Channel.NotifyURL)
		}
	}
	for i, m := range p.Mail {
		if a, err := mail.ParseAddress(m); err != nil || a.Address != m || len(m) > maxText {
			fault("mail[%d]: %q is not a mail address", i, m)
		}
	}
	for i, k := range p.OpenPGPKeys {
		if len(k) > maxKey || !strings.Contains(k, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
			fault("openpgp_keys[%d]: not an ASCII-armored OpenPGP public key", i)
		}
	}
	for i, s := range p.SignatureProfiles {
		if s != "*" && !validName(s) {
			fault("signature_profiles[%d]: %q is not a profile name", i, s)
		}
	}
	if len(faults) > 0 {
		return &InvalidError{Faults: faults}
	}
	return nil
}

// normalize puts p in the form the directory keeps: default roles and
// channel, fingerprints as 64 lowercase hexadecimal digits, a DER
// encryption certificate.
func (p *Partner) normalize() {
	if len(p.Roles) == 0 {
		p.Roles = []Role{RolePartner}
	}
	if p.Channel.Type == "" {
		p.Channel.Type = ChannelPull
	}
	if p.Certificates == nil {
		p.Certificates = []CertificateRule{}
	}
	for i, r := range p.Certificates {
		if fp, err := parseFingerprint(r.Fingerprint); err == nil && r.Fingerprint != "" {
			p.Certificates[i].Fingerprint = hex.EncodeToString(fp[:])
		}
	}
	if len(p.EncryptionCertificate) > 0 && bytes.HasPrefix(bytes.TrimSpace(p.EncryptionCertificate), []byte("-----BEGIN")) {
		if certs, err := certvalidation.ParseCertificates(p.EncryptionCertificate); err == nil && len(certs) == 1 {
			p.EncryptionCertificate = certs[0].Raw
		}
	}
}

func parseFingerprint(s string) ([32]byte, error) {
	var fp [32]byte
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return fp, fmt.Errorf("%q is not a SHA-256 fingerprint (64 hexadecimal digits)", s)
	}
	copy(fp[:], b)
	return fp, nil
}

func (p Partner) clone() Partner {
	q := p
	q.Roles = slices.Clone(p.Roles)
	q.Certificates = slices.Clone(p.Certificates)
	q.EncryptionCertificate = slices.Clone(p.EncryptionCertificate)
	q.Mail = slices.Clone(p.Mail)
	q.OpenPGPKeys = slices.Clone(p.OpenPGPKeys)
	q.SignatureProfiles = slices.Clone(p.SignatureProfiles)
	return q
}

// Has reports whether p has role r.
func (p *Partner) Has(r Role) bool { return slices.Contains(p.Roles, r) }

// fromConfig reads the files a partner of pec.yaml names.
func (pc PartnerConfig) fromConfig(at string) (Partner, error) {
	p := pc.Partner.clone()
	if pc.EncryptionCertFile != "" {
		c, err := loadCertificate(pc.EncryptionCertFile)
		if err != nil {
			return Partner{}, fmt.Errorf("%s.encryption_cert_file: %w", at, err)
		}
		p.EncryptionCertificate = c.Raw
	}
	for i, r := range p.Certificates {
		if r.File == "" {
			continue
		}
		c, err := loadCertificate(r.File)
		if err != nil {
			return Partner{}, fmt.Errorf("%s.certificates[%d].file: %w", at, i, err)
		}
		sum := sha256.Sum256(c.Raw)
		p.Certificates[i] = CertificateRule{Fingerprint: hex.EncodeToString(sum[:])}
	}
	p.Revision, p.UpdatedAt, p.EvidenceID = 0, time.Time{}, ""
	p.normalize()
	return p, nil
}

func loadCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := certvalidation.ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// DecodePartner reads a partner from JSON strictly: unknown fields and
// trailing data are errors, as is a partner Validate refuses. The fields
// the directory sets (revision, updated_at, evidence_id) are ignored.
func DecodePartner(data []byte) (Partner, error) {
	var p Partner
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Partner{}, &InvalidError{Faults: []string{"malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return Partner{}, &InvalidError{Faults: []string{"data after the JSON object"}}
	}
	p.Revision, p.UpdatedAt, p.EvidenceID = 0, time.Time{}, ""
	p.normalize()
	if err := p.Validate(); err != nil {
		return Partner{}, err
	}
	return p, nil
}

// MaxPatchDepth bounds the nesting of a merge patch.
const MaxPatchDepth = 16

// Patch applies a JSON merge patch (RFC 7396) to p: members of the patch
// replace those of p, null removes them, objects merge. The id cannot
// change; the result is decoded and checked as DecodePartner does.
func (p Partner) Patch(patch []byte) (Partner, error) {
	var pv any
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.UseNumber()
	if err := dec.Decode(&pv); err != nil {
		return Partner{}, &InvalidError{Faults: []string{"malformed JSON merge patch: " + strings.TrimPrefix(err.Error(), "json: ")}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return Partner{}, &InvalidError{Faults: []string{"data after the JSON merge patch"}}
	}
	if _, ok := pv.(map[string]any); !ok {
		return Partner{}, &InvalidError{Faults: []string{"a merge patch of a partner is a JSON object"}}
	}
	if depth(pv, 0) > MaxPatchDepth {
		return Partner{}, &InvalidError{Faults: []string{"the merge patch is nested too deeply"}}
	}
	cur, err := json.Marshal(p)
	if err != nil {
		return Partner{}, err
	}
	var target any
	d := json.NewDecoder(bytes.NewReader(cur))
	d.UseNumber()
	if err := d.Decode(&target); err != nil {
		return Partner{}, err
	}
	merged := mergePatch(target, pv)
	m := merged.(map[string]any)
	for _, k := range []string{"revision", "updated_at", "evidence_id"} {
		delete(m, k)
	}
	out, err := json.Marshal(merged)
	if err != nil {
		return Partner{}, err
	}
	q, err := DecodePartner(out)
	if err != nil {
		return Partner{}, err
	}
	if q.ID != p.ID {
		return Partner{}, &InvalidError{Faults: []string{"id: a partner's id does not change"}}
	}
	return q, nil
}

// mergePatch is RFC 7396 section 2, MergePatch(Target, Patch).
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

func depth(v any, d int) int {
	if d > MaxPatchDepth {
		return d
	}
	deepest := d
	switch t := v.(type) {
	case map[string]any:
		for _, e := range t {
			deepest = max(deepest, depth(e, d+1))
		}
	case []any:
		for _, e := range t {
			deepest = max(deepest, depth(e, d+1))
		}
	}
	return deepest
}
