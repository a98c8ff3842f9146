package evidence

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// EventType names what a record is evidence of: dotted lowercase words.
// The constants are the platform's events; other types matching the same
// syntax are accepted, so that an older verifier reads newer logs.
type EventType string

// The platform's events.
const (
	SubmissionAccepted EventType = "submission.accepted"
	SubmissionRejected EventType = "submission.rejected"
	Delivered          EventType = "delivery.delivered"
	Retrieved          EventType = "delivery.retrieved"
	Acknowledged       EventType = "delivery.acknowledged"
	DeliveryFailed     EventType = "delivery.failed"
	Expired            EventType = "delivery.expired"
	SignatureCreated   EventType = "signature.created"
	SignatureRefused   EventType = "signature.refused"
	TimestampIssued    EventType = "timestamp.issued"
	MailAccepted       EventType = "mail.accepted"
	MailDelivered      EventType = "mail.delivered"
	AdminAction        EventType = "admin.action"
	ProofRead          EventType = "proof.read"
)

// DeliveryAttemptFailed is one failed attempt to push an exchange through
// its recipient's channel (a webhook that answered 503, or did not
// answer): its attributes name the channel, the attempt, the status (the
// HTTP status, when there was an answer) and the reason; the queue tries
// again later. When the channel keeps failing for the configured time,
// DeliveryFailed puts the exchange in the dead-letter state, kept for
// operators. Expired: delivered, and neither acknowledged nor refused
// within the configured time, the exchange left its recipient's inbox.
const DeliveryAttemptFailed EventType = "delivery.attempt_failed"

// Retention by crypto-shredding. PayloadDestroyed: the data key of an
// exchange, under which its payloads were encrypted at rest, and the
// payloads' ciphertext were destroyed at the end of its retention period;
// its subject is the exchange, its digests name what became unreadable
// (the SHA-256 of each payload, as the exchange's earlier records name
// them), so that every proof about the exchange still verifies while the
// payloads themselves are gone. KeyDestroyed: a key-encryption key of the
// HSM was destroyed once every data key it wrapped was past retention;
// its subject is the key's label, and from then on no copy of the store
// (a backup) can be decrypted either.
const (
	PayloadDestroyed EventType = "payload.destroyed"
	KeyDestroyed     EventType = "key.destroyed"
)

// Actor is a party to an event, named by its certificate.
type Actor struct {
	Role        string   // "sender", "recipient", "operator", "tsa"...
	Fingerprint [32]byte // SHA-256 of the certificate's DER
	Subject     string   // the certificate's subject, RFC 4514 text
}

// ActorFromCertificate names the holder of cert in role.
func ActorFromCertificate(role string, cert *x509.Certificate) Actor {
	return Actor{Role: role, Fingerprint: sha256.Sum256(cert.Raw), Subject: cert.Subject.String()}
}

// Digest is the digest of a payload: the evidence never holds the payload.
type Digest struct {
	Name      string // what was digested: "dossier", "attachment/3", "token"...
	Algorithm string // "sha256", "sha384" or "sha512"
	Value     []byte
}

// Attribute is a named detail of an event (a status, a reason code).
// Attributes are kept sorted by key, which is unique.
type Attribute struct {
	Key, Value string
}

// Record is one piece of evidence: a leaf of the log.
//
// Its encoding ([Record.MarshalBinary]) is canonical: one record has one
// encoding, which is what the log hashes.
type Record struct {
	ID         string    // evidence id; empty: assigned by Log.Append
	Type       EventType // required
	Time       time.Time // required; kept in UTC to the nanosecond
	Subject    string    // the exchange or operation id
	Actors     []Actor
	Digests    []Digest
	Previous   []string // ids of the records this one follows or answers
	Attributes []Attribute
}

// RecordVersion is the version of the record encoding written.
const RecordVersion = 1

// recordMagic opens every encoded record: a verifier that meets other bytes
// knows at once that they are no PEC evidence.
const recordMagic = "PEC-EV"

// Limits of a record, so that a decoder of outside bytes allocates little.
const (
	maxString     = 4096
	maxBytes      = 1024
	maxItems      = 256
	MaxRecordSize = 1 << 20
)

// ErrMalformedRecord: bytes that are not the canonical encoding of a valid
// record.
var ErrMalformedRecord = errors.New("evidence: malformed record")

// NewID returns a fresh evidence id: 32 hex digits, the first 12 the
// milliseconds since 1970 (ids sort roughly by creation), the rest random.
func NewID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id may be an evidence id: ids are names in URLs
// and file names, 1-128 characters of [A-Za-z0-9._:-].
func ValidID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// validType: dotted words of [a-z0-9_], at least two.
func validType(t EventType) bool {
	if len(t) > 64 {
		return false
	}
	words, n := 0, 0 // dotted words, and the length of the current one
	for i := 0; i <= len(t); i++ {
		if i == len(t) || t[i] == '.' {
			if n == 0 {
				return false // an empty word
			}
			words, n = words+1, 0
			continue
		}
		if c := t[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
		n++
	}
	return words >= 2
}

var digestSizes = map[string]int{"sha256": 32, "sha384": 48, "sha512": 64}

// DigestSize is the size of a digest of the named algorithm ("sha256",
// "sha384", "sha512"); 0 for any other name.
func DigestSize(algorithm string) int { return digestSizes[algorithm] }

// Validate reports what makes r unfit for the log, or nil.
func (r *Record) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !ValidID(r.ID) {
		fault("id %q: 1-128 characters of A-Z a-z 0-9 . _ : -", r.ID)
	}
	if !validType(r.Type) {
		fault("type %q: dotted lowercase words such as %q", r.Type, SubmissionAccepted)
	}
	if r.Time.IsZero() {
		fault("time: required")
	}
	// The names of the fields are formatted only for a fault: a record
	// is validated on every append (the hot path of every operation).
	bad := func(s string) bool { return len(s) > maxString || !utf8.ValidString(s) }
	const badString = "%s: not UTF-8 or over %d bytes"
	if bad(r.Subject) {
		fault(badString, "subject", maxString)
	}
	if len(r.Actors) > maxItems || len(r.Digests) > maxItems || len(r.Previous) > maxItems || len(r.Attributes) > maxItems {
		fault("over %d actors, digests, previous records or attributes", maxItems)
	}
	for i, a := range r.Actors {
		if a.Role == "" {
			fault("actors[%d].role: required", i)
		}
		if bad(a.Role) {
			fault(badString, fmt.Sprintf("actors[%d].role", i), maxString)
		}
		if bad(a.Subject) {
			fault(badString, fmt.Sprintf("actors[%d].subject", i), maxString)
		}
	}
	for i, d := range r.Digests {
		if bad(d.Name) {
			fault(badString, fmt.Sprintf("digests[%d].name", i), maxString)
		}
		if n, ok := digestSizes[d.Algorithm]; !ok || len(d.Value) != n {
			fault("digests[%d]: a sha256, sha384 or sha512 digest of its size", i)
		}
	}
	for i, p := range r.Previous {
		if !ValidID(p) {
			fault("previous[%d]: %q is not an evidence id", i, p)
		}
	}
	for i, a := range r.Attributes {
		if bad(a.Key) {
			fault(badString, fmt.Sprintf("attributes[%d].key", i), maxString)
		}
		if bad(a.Value) {
			fault(badString, fmt.Sprintf("attributes[%d].value", i), maxString)
		}
		if a.Key == "" {
			fault("attributes[%d].key: required", i)
		}
		if i > 0 && r.Attributes[i-1].Key >= a.Key {
			fault("attributes: keys must be unique and sorted (%q after %q)", a.Key, r.Attributes[i-1].Key)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrMalformedRecord, errors.Join(errs...))
	}
	return nil
}

// SortAttributes puts r's attributes in key order, as the encoding wants.
func (r *Record) SortAttributes() {
	slices.SortFunc(r.Attributes, func(a, b Attribute) int { return strings.Compare(a.Key, b.Key) })
}

// MarshalBinary is the canonical encoding of r (version 1): the magic
// "PEC-EV", the version byte, then the fields in this order, every string
// and byte string as a big-endian uint32 length and its bytes, every list
// as a big-endian uint16 count and its items:
//
//	id, type, time (int64 nanoseconds since 1970-01-01T00:00:00Z),
//	subject, actors (role, fingerprint, subject), digests (name,
//	algorithm, value), previous (ids), attributes (key, value; sorted
//	by key, unique)
//
// It fails when r is invalid (see [Record.Validate]).
func (r *Record) MarshalBinary() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r.appendEncoding(make([]byte, 0, r.encodedSize())), nil
}

func (r *Record) encodedSize() int {
	n := len(recordMagic) + 1 + 4 + len(r.ID) + 4 + len(r.Type) + 8 + 4 + len(r.Subject) + 8
	for _, a := range r.Actors {
		n += 12 + len(a.Role) + 32 + len(a.Subject)
	}
	for _, d := range r.Digests {
		n += 12 + len(d.Name) + len(d.Algorithm) + len(d.Value)
	}
	for _, p := range r.Previous {
		n += 4 + len(p)
	}
	for _, a := range r.Attributes {
		n += 8 + len(a.Key) + len(a.Value)
	}
	return n
}

func appendStr[S ~string | ~[]byte](b []byte, s S) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func (r *Record) appendEncoding(b []byte) []byte {
	b = append(b, recordMagic...)
	b = append(b, RecordVersion)
	b = appendStr(b, r.ID)
	b = appendStr(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	b = appendStr(b, r.Subject)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Actors)))
	for _, a := range r.Actors {
		b = appendStr(b, a.Role)
		b = appendStr(b, a.Fingerprint[:])
		b = appendStr(b, a.Subject)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Digests)))
	for _, d := range r.Digests {
		b = appendStr(b, d.Name)
		b = appendStr(b, d.Algorithm)
		b = appendStr(b, d.Value)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Previous)))
	for _, p := range r.Previous {
		b = appendStr(b, p)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Attributes)))
	for _, a := range r.Attributes {
		b = appendStr(b, a.Key)
		b = appendStr(b, a.Value)
	}
	return b
}

// decoder reads the encoding; the first fault sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformedRecord, what)
	}
}

func (d *decoder) bytes(what string, max int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < 4 {
		d.fail(what + ": truncated")
		return nil
	}
	n := binary.BigEndian.Uint32(d.b)
	if n > uint32(max) || int(n) > len(d.b)-4 {
		d.fail(what + ": bad length")
		return nil
	}
	v := d.b[4 : 4+n]
	d.b = d.b[4+n:]
	return v
}

func (d *decoder) str(what string) string { return string(d.bytes(what, maxString)) }

func (d *decoder) count(what string) int {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 2 {
		d.fail(what + ": truncated")
		return 0
	}
	n := int(binary.BigEndian.Uint16(d.b))
	d.b = d.b[2:]
	if n > maxItems {
		d.fail(what + ": too many")
		return 0
	}
	return n
}

// UnmarshalRecord decodes the canonical encoding of a record. Anything
// else — another version, trailing bytes, an invalid field, an encoding
// that is not the canonical one — wraps ErrMalformedRecord.
func UnmarshalRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMalformedRecord, MaxRecordSize)
	}
	if len(data) < len(recordMagic)+1 || string(data[:len(recordMagic)]) != recordMagic {
		return nil, fmt.Errorf("%w: not a PEC evidence record", ErrMalformedRecord)
	}
	if v := data[len(recordMagic)]; v != RecordVersion {
		return nil, fmt.Errorf("%w: version %d (this verifier reads version %d)", ErrMalformedRecord, v, RecordVersion)
	}
	d := &decoder{b: data[len(recordMagic)+1:]}
	r := &Record{}
	r.ID = d.str("id")
	r.Type = EventType(d.str("type"))
	if d.err == nil {
		if len(d.b) < 8 {
			d.fail("time: truncated")
		} else {
			r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(d.b))).UTC()
			d.b = d.b[8:]
		}
	}
	r.Subject = d.str("subject")
	if n := d.count("actors"); n > 0 {
		r.Actors = make([]Actor, n)
		for i := range r.Actors {
			r.Actors[i].Role = d.str("actor role")
			fp := d.bytes("actor fingerprint", 32)
			if d.err == nil && len(fp) != 32 {
				d.fail("actor fingerprint: not 32 bytes")
			}
			copy(r.Actors[i].Fingerprint[:], fp)
			r.Actors[i].Subject = d.str("actor subject")
		}
	}
	if n := d.count("digests"); n > 0 {
		r.Digests = make([]Digest, n)
		for i := range r.Digests {
			r.Digests[i].Name = d.str("digest name")
			r.Digests[i].Algorithm = d.str("digest algorithm")
			r.Digests[i].Value = bytes.Clone(d.bytes("digest value", maxBytes))
		}
	}
	if n := d.count("previous"); n > 0 {
		r.Previous = make([]string, n)
		for i := range r.Previous {
			r.Previous[i] = d.str("previous")
		}
	}
	if n := d.count("attributes"); n > 0 {
		r.Attributes = make([]Attribute, n)
		for i := range r.Attributes {
			r.Attributes[i].Key = d.str("attribute key")
			r.Attributes[i].Value = d.str("attribute value")
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedRecord, len(d.b))
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	// One record, one encoding: what does not re-encode to the same bytes
	// (a time that overflows, say) is not canonical.
	if !bytes.Equal(r.appendEncoding(nil), data) {
		return nil, fmt.Errorf("%w: not the canonical encoding", ErrMalformedRecord)
	}
	return r, nil
}

// Involves reports whether the holder of the certificate with this
// SHA-256 fingerprint is an actor of r: the test of "a partner reads the
// proofs of its own exchanges" (an auditor reads all).
func (r *Record) Involves(fingerprint [32]byte) bool {
	for _, a := range r.Actors {
		if a.Fingerprint == fingerprint {
			return true
		}
	}
	return false
}

// EncodedID reads the id of an encoded record without decoding the rest;
// "" when the bytes are not a record.
func EncodedID(data []byte) string {
	h := len(recordMagic) + 1
	if len(data) < h+4 || string(data[:len(recordMagic)]) != recordMagic {
		return ""
	}
	n := binary.BigEndian.Uint32(data[h:])
	if uint64(n) > uint64(len(data)-h-4) || n > 128 {
		return ""
	}
	return string(data[h+4 : h+4+int(n)])
}
