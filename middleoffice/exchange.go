package middleoffice

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"pec/evidence"
	"pec/internal/cms"
)

// The exchange: a partner submits a tele-dossier (a [Manifest] and its
// documents) to another through [Exchanges]; the platform checks it,
// records submission.accepted and answers with the acknowledgment of
// receipt, encrypts the documents for the recipient as they stream in,
// seals the manifest, and delivers it to the recipient's inbox (pull),
// where the recipient fetches and acknowledges it. Every step is an
// [Event] backed by an evidence record.

// ExchangeConfig is the exchange section of pec.yaml. The zero value
// suits tests and small nodes.
type ExchangeConfig struct {
	MaxDocuments    int   `yaml:"max_documents"`     // per dossier; 0: 64 (at most MaxDocumentsLimit)
	MaxDocumentSize int64 `yaml:"max_document_size"` // bytes; 0: 1 GiB
	MaxDossierSize  int64 `yaml:"max_dossier_size"`  // all documents of a dossier, bytes; 0: 4 GiB
	// Workers is the number of queue workers of Run; 0: 64. Each mostly
	// waits (the HSM, the TSA, the store's group commit, the evidence
	// log's durable write: some 12 ms a delivery at 128 clients), so that
	// the workers, not the CPU, bounded delivery: 16 delivered 1,246/s at
	// most with 0.5 of the 2 cores idle, 64 delivered 1,855/s (30 s steps
	// of bench/edgeload -mode exchange -workers at 128 clients).
	Workers int `yaml:"workers"`
	// MaxBacklog bounds the delivery backlog: the accepted exchanges that
	// the queue has not tried to seal and deliver yet. Once that many
	// wait, Submit refuses new submissions with a *BacklogError (the
	// gateway: 503 delivery-backlog, Retry-After) until the queue has
	// caught up below the bound; nothing acknowledged is dropped, and
	// exchanges whose push failed (a recipient's webhook down) do not
	// count. Concurrent submissions may pass it by the number in flight.
	// Past half of it, a submission first waits for one delivery (250 ms
	// at most). 0: DefaultMaxBacklog; negative: no bound.
	MaxBacklog int `yaml:"max_backlog"`
	// PollInterval is how often idle workers look for due jobs (retries,
	// jobs of other nodes) and for steps left unfinished; 0: 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// RetryDelay is the first delay of a failed job, doubled at each
	// attempt up to MaxRetryDelay; 0: 1s and 5m.
	RetryDelay    time.Duration `yaml:"retry_delay"`
	MaxRetryDelay time.Duration `yaml:"max_retry_delay"`
	// StepTimeout is how long a prepared step may wait for its evidence
	// before Run finishes it for its caller (a crash, a lost caller); 0: 1m.
	StepTimeout time.Duration `yaml:"step_timeout"`
	// DeadLetterAfter is how long a channel that pushes (webhook) may keep
	// failing, from the first failed attempt, before the exchange goes to
	// StateDeadLetter (delivery.failed); a notification to a sender is
	// dropped (logged) as long after its event. 0: 24h.
	DeadLetterAfter time.Duration `yaml:"dead_letter_after"`
	// ExpireAfter is how long a delivered exchange waits for its
	// recipient's acknowledgment or refusal before it expires
	// (delivery.expired: StateExpired, out of the inbox). 0: 720h (30
	// days); negative ("-1s"): never.
	ExpireAfter time.Duration `yaml:"expire_after"`
	// PushTimeout bounds one push to a recipient's webhook, documents
	// included, and one notification to a sender; 0: 5m.
	PushTimeout time.Duration `yaml:"push_timeout"`
	// Store is the exchange store: "embedded" (the default:
	// BoltExchangeStore in the data directory) or "postgres" (a database
	// shared by several nodes, see PGExchangeStore; its URL in the
	// variable PostgresURLEnv names, or else proof.postgres_url_env's).
	Store          string `yaml:"store"`
	PostgresURLEnv string `yaml:"postgres_url_env"`
	// Retention is how long each procedure's dossiers are kept before
	// their payloads are destroyed (crypto-shredding, see AtRest).
	Retention RetentionConfig `yaml:"retention"`
}

// MaxDocumentsLimit bounds ExchangeConfig.MaxDocuments: the
// submission.accepted record names two digests per document, and a
// record holds at most 256.
const MaxDocumentsLimit = 120

func (c ExchangeConfig) withDefaults() ExchangeConfig {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.MaxDocuments == 0 {
		c.MaxDocuments = 64
	}
	if c.MaxDocumentSize == 0 {
		c.MaxDocumentSize = 1 << 30
	}
	if c.MaxDossierSize == 0 {
		c.MaxDossierSize = 4 << 30
	}
	if c.Workers == 0 {
		c.Workers = 64
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	def(&c.PollInterval, time.Second)
	def(&c.RetryDelay, time.Second)
	def(&c.MaxRetryDelay, 5*time.Minute)
	def(&c.StepTimeout, time.Minute)
	def(&c.DeadLetterAfter, 24*time.Hour)
	def(&c.ExpireAfter, 30*24*time.Hour)
	def(&c.PushTimeout, 5*time.Minute)
	return c
}

// Validate reports every invalid field by path: "exchange.workers: ...".
func (c ExchangeConfig) Validate() error {
	var errs []error
	if c.MaxDocuments < 0 || c.MaxDocuments > MaxDocumentsLimit {
		errs = append(errs, fmt.Errorf("exchange.max_documents: %d is not between 1 and %d (0: 64)", c.MaxDocuments, MaxDocumentsLimit))
	}
	if c.MaxDocumentSize < 0 {
		errs = append(errs, errors.New("exchange.max_document_size: not negative"))
	}
	if c.MaxDossierSize < 0 {
		errs = append(errs, errors.New("exchange.max_dossier_size: not negative"))
	}
	if err := c.Retention.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Workers < 0 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("exchange.workers: %d is not between 1 and 256 (0: 64)", c.Workers))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"poll_interval", c.PollInterval}, {"retry_delay", c.RetryDelay}, {"max_retry_delay", c.MaxRetryDelay}, {"step_timeout", c.StepTimeout}, {"dead_letter_after", c.DeadLetterAfter}, {"push_timeout", c.PushTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("exchange.%s: not negative", d.name))
		}
	}
	errs = append(errs, validateStore("exchange", c.Store, "embedded", c.PostgresURLEnv)...)
	return errors.Join(errs...)
}

// Manifest is what a sender declares of a tele-dossier.
type Manifest struct {
	Recipient string     `json:"recipient"`           // a partner id
	Procedure string     `json:"procedure"`           // a procedure name of the routing rules
	Subject   string     `json:"subject,omitempty"`   // free text, for people
	Reference string     `json:"reference,omitempty"` // the sender's own reference
	Documents []Document `json:"documents"`
	// IdempotencyKey makes a retried submission return the first one's
	// exchange and receipt: the same sender and key, the same exchange.
	// It is the sender's, never shown to the recipient, and not part of
	// the sealed manifest.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Document is one document of a manifest.
type Document struct {
	Name      string `json:"name"`           // a file name, without directories
	MediaType string `json:"media_type"`     // "application/pdf"
	Type      string `json:"type,omitempty"` // the document type the routing rules name; "": none
	SHA256    string `json:"sha256"`         // of the content: 64 hexadecimal digits
	Size      int64  `json:"size"`           // of the content, bytes
	// Signatures are the sender's detached CMS signatures (DER; base64 in
	// JSON) of the content, each checked (certificate path, revocation:
	// certvalidation's documentSigning purpose) before the submission is
	// accepted; they travel in the sealed manifest to the recipient.
	Signatures [][]byte `json:"signatures,omitempty"`
	// Upload, in a submission, names a complete resumable upload of the
	// sender (POST /v1/uploads) that holds the content, instead of a part
	// of the submission's body; it is not kept in the exchange.
	Upload string `json:"upload,omitempty"`
}

// Limits of a manifest's fields (the configuration's limits come on top).
const (
	MaxManifestSize = 1 << 20
	maxSubject      = 1024
	maxReference    = 256
	maxFileName     = 255
	maxMediaType    = 127
	maxIdemKey      = 128
	maxReason       = 1024
)

// ManifestError is a manifest that is not well formed: each fault names
// its field ("documents[1].sha256: ..."). Its text is safe to show the
// sender.
type ManifestError struct{ Faults []string }

func (e *ManifestError) Error() string {
	return "middleoffice: invalid manifest: " + strings.Join(e.Faults, "; ")
}

// DecodeManifest reads a manifest from JSON strictly: unknown fields,
// trailing data and more than MaxManifestSize bytes are errors, as is a
// manifest Validate refuses. Digests are taken in either case and kept in
// lowercase. The errors are *ManifestError.
func DecodeManifest(data []byte) (Manifest, error) {
	if len(data) > MaxManifestSize {
		return Manifest{}, &ManifestError{Faults: []string{fmt.Sprintf("larger than %d bytes", MaxManifestSize)}}
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, &ManifestError{Faults: []string{"malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return Manifest{}, &ManifestError{Faults: []string{"data after the JSON object"}}
	}
	m = m.normalized()
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func (m Manifest) normalized() Manifest {
	m.Documents = append([]Document(nil), m.Documents...)
	for i := range m.Documents {
		m.Documents[i].SHA256 = strings.ToLower(m.Documents[i].SHA256)
	}
	return m
}

// withoutUploads is m without its documents' upload ids: how the content
// came is the transport's, not the dossier's (the DocumentSource has
// read them).
func (m Manifest) withoutUploads() Manifest {
	for i := range m.Documents {
		m.Documents[i].Upload = ""
	}
	return m
}

// Validate checks the manifest's syntax (the limits of the configuration
// are the service's); the error is a *ManifestError.
func (m Manifest) Validate() error {
	var faults []string
	fault := func(format string, args ...any) { faults = append(faults, fmt.Sprintf(format, args...)) }
	if !validName(m.Recipient) {
		fault("recipient: %q is not a partner id", m.Recipient)
	}
	if !validName(m.Procedure) {
		fault("procedure: %q is not a procedure name (lowercase letters, digits, '.', '_', '-')", m.Procedure)
	}
	if !validText(m.Subject, maxSubject, true) {
		fault("subject: at most %d bytes of UTF-8 text without control characters", maxSubject)
	}
	if !validText(m.Reference, maxReference, false) {
		fault("reference: at most %d bytes of UTF-8 text on one line", maxReference)
	}
	if m.IdempotencyKey != "" && !validKey(m.IdempotencyKey) {
		fault("idempotency_key: 1 to %d printable ASCII characters", maxIdemKey)
	}
	switch n := len(m.Documents); {
	case n == 0:
		fault("documents: at least one")
	case n > MaxDocumentsLimit:
		fault("documents: at most %d", MaxDocumentsLimit)
	}
	names := map[string]bool{}
	for i, d := range m.Documents {
		if len(faults) > 32 {
			fault("and more")
			break
		}
		at := fmt.Sprintf("documents[%d]", i)
		if !validFileName(d.Name) {
			fault("%s.name: %q is not a file name (no directories, no control characters, at most %d bytes)", at, d.Name, maxFileName)
		} else if names[d.Name] {
			fault("%s.name: %q is the name of another document", at, d.Name)
		}
		names[d.Name] = true
		if mt, _, err := mime.ParseMediaType(d.MediaType); err != nil || len(d.MediaType) > maxMediaType || !strings.Contains(mt, "/") {
			fault("%s.media_type: %q is not a media type such as application/pdf", at, d.MediaType)
		}
		if d.Type != "" && !validName(d.Type) {
			fault("%s.type: %q is not a document type name", at, d.Type)
		}
		if b, err := hex.DecodeString(d.SHA256); err != nil || len(b) != sha256.Size {
			fault("%s.sha256: not 64 hexadecimal digits", at)
		}
		if d.Size < 0 {
			fault("%s.size: negative", at)
		}
		if d.Upload != "" && !uploadIDSyntax.MatchString(d.Upload) {
			fault("%s.upload: %q is not an upload id", at, d.Upload)
		}
		if len(d.Signatures) > maxSignatures {
			fault("%s.signatures: at most %d", at, maxSignatures)
		}
		for j, sig := range d.Signatures {
			if err := checkSignatureShape(sig); err != nil {
				fault("%s.signatures[%d]: %v", at, j, err)
			}
		}
	}
	total := 0
	for _, d := range m.Documents {
		total += len(d.Signatures)
	}
	if total > maxManifestSignatures {
		fault("documents: %d signatures; at most %d in a dossier", total, maxManifestSignatures)
	}
	if len(faults) > 0 {
		return &ManifestError{Faults: faults}
	}
	return nil
}

// Bounds of the sender's signatures of one document.
const (
	maxSignatures    = 4
	maxSignatureSize = 64 << 10
	// maxManifestSignatures keeps the submission.accepted record within
	// its 256 digests: two per document, one per signature.
	maxManifestSignatures = 12
)

// checkSignatureShape checks that sig is a detached CMS SignedData with
// signers whose digest algorithms are acceptable; its signatures are
// checked with the content.
func checkSignatureShape(sig []byte) error {
	if len(sig) > maxSignatureSize {
		return fmt.Errorf("larger than %d bytes", maxSignatureSize)
	}
	sd, err := cms.ParseSignedData(sig)
	if err != nil {
		return errors.New("not a DER CMS SignedData")
	}
	if sd.Attached {
		return errors.New("attached: a signature of the document is detached (the document is the part)")
	}
	if len(sd.SignerInfos) == 0 {
		return errors.New("no signer")
	}
	for _, si := range sd.SignerInfos {
		if _, err := si.Hash(); err != nil {
			return fmt.Errorf("digest algorithm: %v", err)
		}
	}
	return nil
}

func validText(s string, max int, multiline bool) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) {
			return false
		}
	}
	return true
}

func validFileName(s string) bool {
	return s != "" && s != "." && s != ".." && validText(s, maxFileName, false) && !strings.ContainsAny(s, `/\`)
}

func validKey(s string) bool {
	if len(s) == 0 || len(s) > maxIdemKey {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ManifestDigest is the SHA-256 that the submission.accepted record names
// as "manifest": that of the manifest's JSON (encoding/json, fields in
// declaration order, digests in lowercase) with the idempotency key left
// out, so that a recipient, an auditor or the sender recomputes it from
// the manifest alone.
func ManifestDigest(m Manifest) []byte {
	m = m.normalized()
	m.IdempotencyKey = ""
	data, _ := json.Marshal(m)
	sum := sha256.Sum256(data)
	return sum[:]
}

// SealedManifest is the content of an exchange's seal: the platform's
// CAdES signature (attached) over its JSON. The recipient reads in it who
// sent what, when, with which digests; decrypting a document and hashing
// it against its Document.SHA256 proves it is what the sender submitted.
type SealedManifest struct {
	Exchange          string    `json:"exchange"`
	Sender            string    `json:"sender"`             // the partner id
	SenderSubject     string    `json:"sender_subject"`     // its certificate's subject
	SenderCertificate string    `json:"sender_certificate"` // the certificate's SHA-256, hex
	SubmittedAt       time.Time `json:"submitted_at"`
	// SubmissionEvidence is the id of the submission.accepted record.
	SubmissionEvidence string   `json:"submission_evidence"`
	Manifest           Manifest `json:"manifest"` // without the idempotency key
}

// State is where an exchange is.
type State string

// The states of an exchange.
const (
	// StatePending: prepared, its submission.accepted record not yet
	// committed; visible to nobody.
	StatePending State = "pending"
	// StateAccepted: acknowledged to the sender; waits to be sealed and
	// delivered.
	StateAccepted State = "accepted"
	// StateDelivered: sealed, in the recipient's inbox.
	StateDelivered State = "delivered"
	// StateRetrieved: the recipient fetched it.
	StateRetrieved State = "retrieved"
	// StateAcknowledged: the recipient acknowledged it, signed.
	StateAcknowledged State = "acknowledged"
	// StateRefused: the recipient refused it, with a reason.
	StateRefused State = "refused"
	// StateDeadLetter: its recipient's channel kept failing for
	// ExchangeConfig.DeadLetterAfter (delivery.failed); kept, never
	// delivered, for operators.
	StateDeadLetter State = "dead-letter"
	// StateExpired: delivered, neither acknowledged nor refused within
	// ExchangeConfig.ExpireAfter (delivery.expired); out of the inbox.
	StateExpired State = "expired"
)

// InInbox reports whether an exchange in state s is in its recipient's
// inbox: delivered and not yet acknowledged or refused.
func (s State) InInbox() bool { return s == StateDelivered || s == StateRetrieved }

// Exchange is a tele-dossier on its way, as the store keeps it.
type Exchange struct {
	ID                string `json:"id"`
	Sender            string `json:"sender"` // partner id
	SenderSubject     string `json:"sender_subject"`
	SenderCertificate string `json:"sender_certificate"` // SHA-256 of the certificate, hex
	Recipient         string `json:"recipient"`          // partner id
	// RecipientSubject and RecipientCertificate (SHA-256, hex) name the
	// encryption certificate the documents were encrypted for.
	RecipientSubject     string    `json:"recipient_subject"`
	RecipientCertificate string    `json:"recipient_certificate"`
	Manifest             Manifest  `json:"manifest"`
	ManifestSHA256       string    `json:"manifest_sha256"` // ManifestDigest, hex
	State                State     `json:"state"`
	SubmittedAt          time.Time `json:"submitted_at"`
	UpdatedAt            time.Time `json:"updated_at"`
	// SubmissionEvidence is the id of the submission.accepted record,
	// Receipt its individually signed acknowledgment of receipt (CMS).
	SubmissionEvidence string `json:"submission_evidence"`
	Receipt            []byte `json:"receipt,omitempty"`
	// Envelopes are the documents encrypted for the recipient, in the
	// manifest's order; Seal the platform's signature over the sealed
	// manifest (once delivered); Acknowledgment the recipient's signed
	// acknowledgment (once acknowledged, or refused with one).
	Envelopes      []PayloadInfo `json:"envelopes"`
	Seal           *PayloadInfo  `json:"seal,omitempty"`
	Acknowledgment *PayloadInfo  `json:"acknowledgment,omitempty"`
	Events         []Event       `json:"events"`
}

// PayloadInfo names a payload file of an exchange and its digest.
type PayloadInfo struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// Event is one step of an exchange, with the evidence that proves it.
type Event struct {
	Type       evidence.EventType `json:"type"`
	EvidenceID string             `json:"evidence_id"`
	Time       time.Time          `json:"time"`
	By         string             `json:"by,omitempty"` // the partner who acted; "": the platform
	// Detail is a refusal's reason, a failed attempt's or a dead
	// letter's, or a note on a delivery (the channel used instead of the
	// recipient's, an acknowledgment refused).
	Detail string `json:"detail,omitempty"`
}

func (e *Exchange) clone() *Exchange {
	if e == nil {
		return nil
	}
	c := *e
	c.Manifest = e.Manifest.normalized()
	c.Receipt = bytes.Clone(e.Receipt)
	c.Envelopes = append([]PayloadInfo(nil), e.Envelopes...)
	c.Events = append([]Event(nil), e.Events...)
	if e.Seal != nil {
		s := *e.Seal
		c.Seal = &s
	}
	if e.Acknowledgment != nil {
		a := *e.Acknowledgment
		c.Acknowledgment = &a
	}
	return &c
}

// event returns the exchange's last event of type t.
func (e *Exchange) event(t evidence.EventType) (Event, bool) {
	for i := len(e.Events) - 1; i >= 0; i-- {
		if e.Events[i].Type == t {
			return e.Events[i], true
		}
	}
	return Event{}, false
}

// Reason is why a submission was refused: the reason attribute of its
// submission.rejected record.
type Reason string

// The reasons of a refusal.
const (
	ReasonInvalidManifest     Reason = "invalid-manifest"     // a *ManifestError
	ReasonForbidden           Reason = "forbidden"            // the policy's *ForbiddenError
	ReasonTooLarge            Reason = "too-large"            // over the configuration's limits
	ReasonDigestMismatch      Reason = "digest-mismatch"      // a document's SHA-256 is not the declared one
	ReasonSizeMismatch        Reason = "size-mismatch"        // a document's size is not the declared one
	ReasonIncomplete          Reason = "incomplete"           // a document could not be read from the sender
	ReasonIdempotencyConflict Reason = "idempotency-conflict" // the key names another manifest
	ReasonUnreachable         Reason = "recipient-unreachable"
	ReasonInvalidSignature    Reason = "invalid-signature" // a sender's signature of a document does not verify
)

// RejectedError is a refused submission. The refusal is evidence: the
// submission.rejected record EvidenceID, whose subject is Exchange.
// Detail is safe to show the sender; Err, when set, is the cause
// (*ManifestError, *ForbiddenError).
type RejectedError struct {
	Exchange   string
	Reason     Reason
	Detail     string
	EvidenceID string
	Err        error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("middleoffice: submission refused (%s): %s", e.Reason, e.Detail)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Errors of the exchange service.
var (
	// ErrExchangeNotFound: no such exchange for this principal (also what
	// someone who is not a party to it is told).
	ErrExchangeNotFound = errors.New("middleoffice: no such exchange")
	// ErrAlreadyAcknowledged: the exchange was acknowledged or refused
	// already (with another acknowledgment).
	ErrAlreadyAcknowledged = errors.New("middleoffice: the exchange is already acknowledged")
	// ErrExpired: the exchange expired unanswered (StateExpired); it can
	// no longer be fetched, acknowledged or refused.
	ErrExpired = errors.New("middleoffice: the exchange expired unanswered")
	// ErrNotSealedYet: the exchange is accepted and waits for its seal
	// (the work queue seals and delivers it).
	ErrNotSealedYet = errors.New("middleoffice: the exchange is not sealed yet")
)

// AckError is an acknowledgment the service refuses: its text is safe to
// show the recipient.
type AckError struct{ Reason string }

func (e *AckError) Error() string { return "middleoffice: invalid acknowledgment: " + e.Reason }
