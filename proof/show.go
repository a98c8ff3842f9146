package proof

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"pec/evidence"
)

// ErrNotVerified: a bundle that [VerifyBundle] did not accept has nothing
// to show. What an invalid bundle claims is not shown, so that no one reads
// it as proven.
var ErrNotVerified = errors.New("proof: show: the bundle was not verified")

// Summary is what a verified bundle proves, for a person
// ([Summary.WriteText]) or a program (its JSON encoding, whose field names
// are a contract: `pec proof show --json`, `pec proof verify --json`).
//
// Everything in it comes from the checked parts of the bundle: the
// canonical binary records, the signed checkpoint, the verified token and
// the certificate chains of the verification — never from the readable
// JSON copies of the records, which only have to match.
//
// A Summary of an invalid bundle ([FailedSummary]) holds Valid false, the
// failed check and the error, and nothing else.
type Summary struct {
	Valid bool   `json:"valid"`
	Check string `json:"check,omitempty"` // the check that failed: "bundle", "timestamp", "certificates", "revocation", "tree head", "record N (id ...)"
	Error string `json:"error,omitempty"`

	Format     string              `json:"format,omitzero"`   // BundleFormat or BundleFormatV1
	Evidence   string              `json:"evidence,omitzero"` // the id the bundle is for: Records[0]
	Records    []RecordSummary     `json:"records,omitzero"`  // the evidence, then the records it follows
	Checkpoint *CheckpointSummary  `json:"checkpoint,omitzero"`
	Timestamp  *TimestampSummary   `json:"timestamp,omitzero"`
	Revocation []RevocationSummary `json:"revocation,omitzero"` // empty, not absent, in a valid summary
}

// RecordSummary is one record of the bundle, decoded from its canonical
// encoding, and its place in the checkpoint's tree.
type RecordSummary struct {
	Index      uint64             `json:"index"` // leaf index in the log
	ID         string             `json:"id"`
	Type       evidence.EventType `json:"type"`
	Time       time.Time          `json:"time"` // UTC, RFC 3339 to the nanosecond
	Subject    string             `json:"subject"`
	Actors     []ActorSummary     `json:"actors"`
	Digests    []DigestSummary    `json:"digests"`
	Previous   []string           `json:"previous"` // ids of the records it follows or answers
	Attributes map[string]string  `json:"attributes"`
	LeafHash   string             `json:"leaf_hash"`       // RFC 9162 leaf hash of the record, base64, as in the log's tiles
	Inclusion  []string           `json:"inclusion_proof"` // the RFC 9162 inclusion proof in the checkpoint's tree, base64 hashes
}

// ActorSummary is an actor of a record.
type ActorSummary struct {
	Role        string `json:"role"`
	Subject     string `json:"subject"`
	Fingerprint string `json:"fingerprint"` // SHA-256 of the certificate, hex
}

// DigestSummary is a digest of a record.
type DigestSummary struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Value     string `json:"value"` // hex
}

// CheckpointSummary is the signed tree head the records are included in.
type CheckpointSummary struct {
	Origin  string             `json:"origin"`
	Size    uint64             `json:"size"`
	Root    string             `json:"root"`     // base64, as in the checkpoint
	KeyName string             `json:"key_name"` // signed-note key name
	KeyID   string             `json:"key_id"`   // signed-note key ID, 8 hex digits
	Signer  CertificateSummary `json:"signer"`   // the log key's certificate
}

// TimestampSummary is the RFC 3161 token on the checkpoint.
type TimestampSummary struct {
	Time             time.Time          `json:"time"` // genTime, UTC
	Accuracy         string             `json:"accuracy,omitempty"`
	Serial           string             `json:"serial"` // hex
	Policy           string             `json:"policy"` // OID, dotted
	TSAName          string             `json:"tsa_name,omitempty"`
	CheckpointSHA256 string             `json:"checkpoint_sha256"` // the imprint: SHA-256 of the checkpoint file, hex
	Signer           CertificateSummary `json:"signer"`            // the TSA's certificate
}

// CertificateSummary names a signer's certificate and the chain the
// verification built for it.
type CertificateSummary struct {
	Subject   string    `json:"subject"` // RFC 4514
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"` // hex
	SHA256    string    `json:"sha256"` // fingerprint of the DER, hex
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Chain     []string  `json:"chain"` // subjects from the issuer up to the trusted root
}

// RevocationSummary is one CRL or OCSP response of the bundle.
type RevocationSummary struct {
	File   string `json:"file"`
	Kind   string `json:"kind"`   // RevocationCRL or RevocationOCSP
	SHA256 string `json:"sha256"` // of the file, hex
}

// Summarize is the summary of a bundle that [VerifyBundle] accepted; any
// other bundle (one of [ReadBundle], or one that failed a check) gives
// ErrNotVerified.
func Summarize(b *Bundle) (*Summary, error) {
	if b == nil || b.verified == nil {
		return nil, ErrNotVerified
	}
	v := b.verified
	s := &Summary{
		Valid:      true,
		Format:     b.Manifest.Format,
		Evidence:   b.Manifest.Evidence,
		Revocation: []RevocationSummary{},
	}
	for i, r := range b.Records {
		leaf := sha256.Sum256(append([]byte{0}, b.RecordData[i]...))
		rs := RecordSummary{
			Index:      b.Manifest.Records[i].Index,
			ID:         r.ID,
			Type:       r.Type,
			Time:       r.Time.UTC(),
			Subject:    r.Subject,
			Actors:     []ActorSummary{},
			Digests:    []DigestSummary{},
			Previous:   append([]string{}, r.Previous...),
			Attributes: map[string]string{},
			LeafHash:   base64.StdEncoding.EncodeToString(leaf[:]),
			Inclusion:  []string{},
		}
		for _, h := range b.Inclusion[i] {
			rs.Inclusion = append(rs.Inclusion, base64.StdEncoding.EncodeToString(h))
		}
		for _, a := range r.Actors {
			rs.Actors = append(rs.Actors, ActorSummary{Role: a.Role, Subject: a.Subject, Fingerprint: hex.EncodeToString(a.Fingerprint[:])})
		}
		for _, d := range r.Digests {
			rs.Digests = append(rs.Digests, DigestSummary{Name: d.Name, Algorithm: d.Algorithm, Value: hex.EncodeToString(d.Value)})
		}
		for _, a := range r.Attributes {
			rs.Attributes[a.Key] = a.Value
		}
		s.Records = append(s.Records, rs)
	}
	s.Checkpoint = &CheckpointSummary{
		Origin:  v.checkpoint.Origin,
		Size:    v.checkpoint.Size,
		Root:    base64.StdEncoding.EncodeToString(v.checkpoint.Root),
		KeyName: v.keyName,
		KeyID:   fmt.Sprintf("%08x", v.keyID),
		Signer:  certificateSummary(v.logChain),
	}
	tok := v.token
	s.Timestamp = &TimestampSummary{
		Time:             tok.GenTime.UTC(),
		Serial:           tok.Serial.Text(16),
		Policy:           tok.Policy.String(),
		TSAName:          tok.TSAName,
		CheckpointSHA256: hex.EncodeToString(tok.Imprint),
		Signer:           certificateSummary(v.tsaChain),
	}
	if tok.Accuracy > 0 {
		s.Timestamp.Accuracy = tok.Accuracy.String()
	}
	for _, mr := range b.Manifest.Revocation {
		s.Revocation = append(s.Revocation, RevocationSummary{File: mr.File, Kind: mr.Kind, SHA256: mr.SHA256})
	}
	return s, nil
}

func certificateSummary(chain []*x509.Certificate) CertificateSummary {
	if len(chain) == 0 {
		return CertificateSummary{Chain: []string{}}
	}
	c := chain[0]
	fp := sha256.Sum256(c.Raw)
	cs := CertificateSummary{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		Serial:    c.SerialNumber.Text(16),
		SHA256:    hex.EncodeToString(fp[:]),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		Chain:     []string{},
	}
	for _, p := range chain[1:] {
		cs.Chain = append(cs.Chain, p.Subject.String())
	}
	return cs
}

// FailedSummary is the summary of a bundle that failed verification with
// err: Valid false, the failed check (for a *BundleError; "" otherwise)
// and the error's text on one line.
func FailedSummary(err error) *Summary {
	s := &Summary{Valid: false, Error: strings.ReplaceAll(err.Error(), "\n", "; ")}
	if be, ok := errors.AsType[*BundleError](err); ok {
		s.Check = be.Check
	} else if errors.Is(err, ErrMalformedBundle) {
		s.Check = "bundle"
	}
	return s
}

// WriteText writes s for a person: the verdict, each record, the
// checkpoint, the time-stamp and who signed them. Strings from the bundle
// that hold control or other unprintable characters are quoted, so that a
// record cannot rewrite the reader's terminal.
func (s *Summary) WriteText(w io.Writer) error {
	p := &textWriter{w: w}
	if !s.Valid {
		p.line("INVALID proof bundle: %s", printable(s.Error))
		return p.err
	}
	p.line("VALID proof bundle of evidence %s (%s)", printable(s.Evidence), s.Format)
	p.line("  checked offline: the certificates (and their revocation data), the checkpoint's signature,")
	p.line("  its time-stamp, and the inclusion of %d record%s in the checkpoint's tree", len(s.Records), plural(len(s.Records)))
	inBundle := map[string]int{}
	for i, r := range s.Records {
		inBundle[r.ID] = i + 1
	}
	for i, r := range s.Records {
		p.line("")
		if i == 0 {
			p.line("Record 1 of %d: the evidence", len(s.Records))
		} else {
			p.line("Record %d of %d", i+1, len(s.Records))
		}
		p.field("id", printable(r.ID))
		p.field("type", printable(string(r.Type)))
		p.field("time", r.Time.Format(time.RFC3339Nano))
		p.field("subject", printable(r.Subject))
		for _, a := range r.Actors {
			p.field("actor", fmt.Sprintf("%s: %s", printable(a.Role), printable(a.Subject)))
			p.field("", "certificate sha256 "+a.Fingerprint)
		}
		for _, d := range r.Digests {
			p.field("digest", fmt.Sprintf("%s: %s %s", printable(d.Name), printable(d.Algorithm), d.Value))
		}
		for _, id := range r.Previous {
			where := "not in this bundle"
			if n, ok := inBundle[id]; ok {
				where = "record " + strconv.Itoa(n) + " of this bundle"
			}
			p.field("answers", fmt.Sprintf("%s (%s)", printable(id), where))
		}
		for _, k := range slices.Sorted(maps.Keys(r.Attributes)) {
			p.field("attribute", fmt.Sprintf("%s = %s", printable(k), printable(r.Attributes[k])))
		}
		p.field("in the log", fmt.Sprintf("leaf %d of the checkpoint's tree (inclusion proof of %d hash%s)", r.Index, len(r.Inclusion), pluralES(len(r.Inclusion))))
		p.field("leaf hash", r.LeafHash)
	}
	cp := s.Checkpoint
	p.line("")
	p.line("Checkpoint (signed tree head)")
	p.field("origin", printable(cp.Origin))
	p.field("size", strconv.FormatUint(cp.Size, 10))
	p.field("root", cp.Root)
	p.field("key", fmt.Sprintf("%s+%s", printable(cp.KeyName), cp.KeyID))
	p.certificate("signed by", cp.Signer)
	ts := s.Timestamp
	p.line("")
	p.line("Time-stamp on the checkpoint (RFC 3161)")
	t := ts.Time.Format(time.RFC3339Nano)
	if ts.Accuracy != "" {
		t += " (accuracy " + ts.Accuracy + ")"
	}
	p.field("time", t)
	p.field("serial", ts.Serial)
	p.field("policy", ts.Policy)
	if ts.TSAName != "" {
		p.field("tsa name", printable(ts.TSAName))
	}
	p.field("imprint", "sha256 "+ts.CheckpointSHA256+" (of the checkpoint)")
	p.certificate("signed by", ts.Signer)
	p.line("")
	if len(s.Revocation) == 0 {
		p.line("Revocation data: none in the bundle")
	} else {
		p.line("Revocation data (checked at the time-stamp's time)")
		for _, r := range s.Revocation {
			p.field(r.Kind, fmt.Sprintf("%s sha256 %s", r.File, r.SHA256))
		}
	}
	return p.err
}

// textWriter writes lines until the first error, which sticks.
type textWriter struct {
	w   io.Writer
	err error
}

func (p *textWriter) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// field writes "  label:  value" with the values aligned.
func (p *textWriter) field(label, value string) {
	if label != "" {
		label += ":"
	}
	p.line("  %-12s %s", label, value)
}

func (p *textWriter) certificate(label string, c CertificateSummary) {
	p.field(label, printable(c.Subject))
	p.field("", "issuer "+printable(c.Issuer)+", serial "+c.Serial)
	p.field("", "valid "+c.NotBefore.Format(time.RFC3339)+" to "+c.NotAfter.Format(time.RFC3339))
	p.field("", "certificate sha256 "+c.SHA256)
	for _, subject := range c.Chain {
		p.field("", "under "+printable(subject))
	}
}

// printable is s, or s quoted when it holds a character that is not a
// printable one or a space: an escape sequence, a newline, a bidi control.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}
