// Package tsa is an RFC 3161 time-stamping authority and a client and
// verifier for tokens of any TSA, following the ETSI EN 319 422 profile.
//
// # The authority
//
// [Authority.Respond] answers one DER TimeStampReq (RFC 3161 section 2.4.1)
// with a TimeStampResp (section 2.4.2): a token signed by a crypto.Signer
// (an HSM key from package hsm), with the ESSCertIDv2 signing-certificate
// attribute (RFC 5816), the configured policy, the declared accuracy, the
// nonce echoed and the certificates when certReq asks for them. A bad
// request gets a rejection with the right failInfo, never an error: errors
// report only the authority's own failures (HSM, disk).
//
// Serial numbers come from a [SerialSource] (unique across restarts and
// nodes, see [FileSerials]); every issued token is recorded by a [Recorder]
// (see [Journal]) before it is returned; a [ClockGuard] (ETSI EN 319 421
// section 7.7.2) stops issuance while the clock cannot be trusted to the
// declared accuracy.
//
// # The client and the verifier
//
// [Client] requests tokens over HTTP (RFC 3161 section 3.4); [Verify] checks
// a token from any TSA: CMS signature (RFC 5652), signing-certificate
// attribute (RFC 2634 / RFC 5816), the TSA certificate's chain and its
// critical timeStamping extended key usage (RFC 3161 section 2.3), and the
// message imprint.
package tsa

import (
	"context"
	"crypto"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
)

// Config is the tsa section of pec.yaml.
type Config struct {
	KeyLabel         string        `yaml:"key_label"` // key in hsm; never a PIN
	CertFile         string        `yaml:"cert_file"` // TSA certificate, then its chain (PEM)
	PolicyOID        string        `yaml:"policy_oid"`
	AcceptedPolicies []string      `yaml:"accepted_policies"` // other policies a request may ask for
	Accuracy         time.Duration `yaml:"accuracy"`          // declared in every token; "1s"
	Ordering         bool          `yaml:"ordering"`          // tokens strictly ordered by genTime
	Hashes           []string      `yaml:"hashes"`            // imprint hashes accepted; empty: sha256, sha384, sha512
	SignatureHash    string        `yaml:"signature_hash"`    // digest of the CMS signature; empty: sha256
	MaxRequestBytes  int64         `yaml:"max_request_bytes"` // HTTP body limit; 0: 64 KiB
	NodeID           int           `yaml:"node_id"`           // 0-65535, unique per node sharing the serial space
	SerialFile       string        `yaml:"serial_file"`
	JournalFile      string        `yaml:"journal_file"`
	Clock            ClockConfig   `yaml:"clock"`
}

// DefaultMaxRequestBytes bounds a request when the config does not. A
// TimeStampReq with a SHA-512 imprint, a nonce, a policy and no extensions
// is under 150 bytes.
const DefaultMaxRequestBytes = 64 << 10

// Validate reports every invalid field by path: "tsa.policy_oid: ...".
func (c Config) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.KeyLabel == "" {
		fault("tsa.key_label: required")
	}
	if c.CertFile == "" {
		fault("tsa.cert_file: required")
	}
	errs = append(errs, c.validateProfile())
	if c.MaxRequestBytes < 0 {
		fault("tsa.max_request_bytes: must not be negative")
	}
	if c.NodeID < 0 || c.NodeID > 0xffff {
		fault("tsa.node_id: %d is not within 0-65535", c.NodeID)
	}
	if c.SerialFile == "" {
		fault("tsa.serial_file: required (serial numbers must stay unique across restarts)")
	}
	if c.JournalFile == "" {
		fault("tsa.journal_file: required (every issued token is recorded)")
	}
	errs = append(errs, c.Clock.validate())
	return errors.Join(errs...)
}

// validateProfile checks what the authority itself uses: the token
// profile. Files and the clock are the caller's to open (see New).
func (c Config) validateProfile() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := parseOID(c.PolicyOID); err != nil {
		fault("tsa.policy_oid: %v", err)
	}
	for i, p := range c.AcceptedPolicies {
		if _, err := parseOID(p); err != nil {
			fault("tsa.accepted_policies[%d]: %v", i, err)
		}
	}
	if c.Accuracy <= 0 {
		fault("tsa.accuracy: must be positive (a TSA declares its accuracy, ETSI EN 319 422 section 5.2)")
	}
	for i, h := range c.Hashes {
		if _, ok := hashByName[h]; !ok {
			fault("tsa.hashes[%d]: %q is not one of sha256, sha384, sha512", i, h)
		}
	}
	if c.SignatureHash != "" {
		if _, ok := hashByName[c.SignatureHash]; !ok {
			fault("tsa.signature_hash: %q is not one of sha256, sha384, sha512", c.SignatureHash)
		}
	}
	return errors.Join(errs...)
}

// MaxBody is the request size limit in bytes.
func (c Config) MaxBody() int64 {
	if c.MaxRequestBytes == 0 {
		return DefaultMaxRequestBytes
	}
	return c.MaxRequestBytes
}

var hashByName = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

// parseOID reads a dotted OID such as "1.2.3.4".
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	if s == "" {
		return nil, errors.New("required")
	}
	oid, err := parseDotted(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not an OID", s)
	}
	return oid, nil
}

func parseDotted(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	n, digits := 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if digits == 0 {
				return nil, errors.New("empty arc")
			}
			oid = append(oid, n)
			n, digits = 0, 0
			continue
		}
		c := s[i]
		if c < '0' || c > '9' || (digits == 1 && n == 0) || n > (1<<31-1)/10-9 {
			return nil, errors.New("bad arc")
		}
		n = n*10 + int(c-'0')
		digits++
	}
	// X.660: the first arc is 0, 1 or 2; under 0 and 1 the second is below 40.
	if len(oid) < 2 || oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, errors.New("bad first arcs")
	}
	return oid, nil
}

// SerialSource hands out serial numbers for tokens.
type SerialSource interface {
	// NextSerial returns a positive serial number that no source sharing
	// this serial space has returned or will return, across restarts. It
	// is safe for concurrent use.
	NextSerial() (*big.Int, error)
}

// Issued describes one issued token: what the journal keeps and the proof
// log will turn into evidence. It holds no payload, only digests.
type Issued struct {
	Serial      *big.Int
	GenTime     time.Time
	Policy      asn1.ObjectIdentifier
	Hash        crypto.Hash // of the message imprint
	Imprint     []byte
	Nonce       *big.Int // nil when the request had none
	TokenSHA256 [32]byte // SHA-256 of the DER TimeStampToken
}

// Recorder keeps the record of issued tokens.
type Recorder interface {
	// Record returns once the record is durable: a token is released only
	// after it is recorded. It is safe for concurrent use; the Issued and
	// its slices must not be retained after it returns.
	Record(ctx context.Context, issued *Issued) error
}

// ClockStatus tells whether the clock may be used to issue tokens.
type ClockStatus interface {
	// Err is nil while the clock is within the declared accuracy of UTC;
	// otherwise it says why not (an operator-facing reason).
	Err() error
}

// Options hold optional collaborators; the zero value suits tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
	Clock    ClockStatus           // nil: the local clock is trusted
	// Evidence records every issued token (timestamp.issued) before it
	// is released; when set, Recorder is not used: the record is the one
	// durable write of a token.
	Evidence evidence.Appender
	// Recorder keeps the record of issued tokens of a node without an
	// evidence log (a Journal). nil, with no Evidence: not recorded.
	Recorder Recorder
}

// PKIStatus values (RFC 3161 section 2.4.2).
const (
	StatusGranted                = 0
	StatusGrantedWithMods        = 1
	StatusRejection              = 2
	StatusWaiting                = 3
	StatusRevocationWarning      = 4
	StatusRevocationNotification = 5
)

// FailInfo is a PKIFailureInfo bit (RFC 3161 section 2.4.2).
type FailInfo int

// The failure reasons of RFC 3161 section 2.4.2.
const (
	FailBadAlg              FailInfo = 0  // unrecognized or unsupported algorithm
	FailBadRequest          FailInfo = 2  // transaction not permitted or supported
	FailBadDataFormat       FailInfo = 5  // the data submitted has the wrong format
	FailTimeNotAvailable    FailInfo = 14 // the TSA's time source is not available
	FailUnacceptedPolicy    FailInfo = 15 // the requested TSA policy is not supported
	FailUnacceptedExtension FailInfo = 16 // the requested extension is not supported
	FailAddInfoNotAvailable FailInfo = 17 // the additional information requested is not available
	FailSystemFailure       FailInfo = 25 // the request cannot be handled due to system failure
	FailNone                FailInfo = -1 // no failInfo in the response
)

var failNames = map[FailInfo]string{
	FailBadAlg: "badAlg", FailBadRequest: "badRequest", FailBadDataFormat: "badDataFormat",
	FailTimeNotAvailable: "timeNotAvailable", FailUnacceptedPolicy: "unacceptedPolicy",
	FailUnacceptedExtension: "unacceptedExtension", FailAddInfoNotAvailable: "addInfoNotAvailable",
	FailSystemFailure: "systemFailure",
}

func (f FailInfo) String() string {
	if n, ok := failNames[f]; ok {
		return n
	}
	if f == FailNone {
		return "none"
	}
	return fmt.Sprintf("failInfo(%d)", int(f))
}

// RejectError is a TSA's refusal: the PKIStatus, failInfo and text of a
// TimeStampResp that carries no token.
type RejectError struct {
	Status   int // PKIStatus, StatusRejection or StatusWaiting usually
	FailInfo FailInfo
	Reason   string // the statusString, as the TSA wrote it
}

func (e *RejectError) Error() string {
	status := "rejection"
	switch e.Status {
	case StatusWaiting:
		status = "waiting"
	case StatusRevocationWarning:
		status = "revocationWarning"
	case StatusRevocationNotification:
		status = "revocationNotification"
	}
	msg := "tsa: " + status
	if e.FailInfo != FailNone {
		msg += " (" + e.FailInfo.String() + ")"
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}
