package signing

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"

	"pec/certvalidation"
)

// Indication is the overall result of a validation (ETSI EN 319 102-1
// section 5.1.3).
type Indication string

// The indications of ETSI EN 319 102-1.
const (
	TotalPassed   Indication = "TOTAL-PASSED"
	TotalFailed   Indication = "TOTAL-FAILED"
	Indeterminate Indication = "INDETERMINATE"
)

// SubIndication says why a validation did not pass (ETSI EN 319 102-1
// section 5.1.3, table 5).
type SubIndication string

// The sub-indications this verifier reports.
const (
	// TOTAL-FAILED
	FormatFailure    SubIndication = "FORMAT_FAILURE"     // not a signature this verifier can process
	HashFailure      SubIndication = "HASH_FAILURE"       // the signed data was changed
	SigCryptoFailure SubIndication = "SIG_CRYPTO_FAILURE" // the signature value does not verify with the signer's key
	Revoked          SubIndication = "REVOKED"            // the certificate was revoked before the proven signing time

	// INDETERMINATE
	NoSigningCertificateFound      SubIndication = "NO_SIGNING_CERTIFICATE_FOUND"      // the signer's certificate is missing, or not the one the signature names
	NoCertificateChainFound        SubIndication = "NO_CERTIFICATE_CHAIN_FOUND"        // no path to a trust anchor
	OutOfBoundsNoPOE               SubIndication = "OUT_OF_BOUNDS_NO_POE"              // the certificate expired, and nothing proves the signature existed before
	NotYetValid                    SubIndication = "NOT_YET_VALID"                     // the certificate is not valid yet
	RevokedNoPOE                   SubIndication = "REVOKED_NO_POE"                    // revoked, and nothing proves the signature existed before
	CertificateChainGeneralFailure SubIndication = "CERTIFICATE_CHAIN_GENERAL_FAILURE" // the path is invalid for another reason
	ChainConstraintsFailure        SubIndication = "CHAIN_CONSTRAINTS_FAILURE"         // the certificate may not sign (key usage)
	CryptoConstraintsFailure       SubIndication = "CRYPTO_CONSTRAINTS_FAILURE"        // a weak or unknown algorithm
	SigConstraintsFailure          SubIndication = "SIG_CONSTRAINTS_FAILURE"           // a constraint on the signature does not hold (the whole PDF is not covered)
	SignedDataNotFound             SubIndication = "SIGNED_DATA_NOT_FOUND"             // the signed data cannot be hashed as the signature needs
	TryLater                       SubIndication = "TRY_LATER"                         // revocation information could not be obtained
)

// Report is the result of a verification, in the spirit of ETSI EN 319
// 102-1: an overall indication, and one report per signature found.
type Report struct {
	Indication     Indication        `json:"indication"`
	SubIndication  SubIndication     `json:"sub_indication,omitempty"`
	Detail         string            `json:"detail,omitempty"`
	Document       string            `json:"document"` // "CMS" or "PDF"
	ValidationTime time.Time         `json:"validation_time"`
	Signatures     []SignatureReport `json:"signatures"`
}

// SignatureReport is the validation of one signature.
type SignatureReport struct {
	Indication    Indication    `json:"indication"`
	SubIndication SubIndication `json:"sub_indication,omitempty"`
	Detail        string        `json:"detail,omitempty"`
	// Format is the level reached: CAdES-B-T, CAdES-B-B, CMS (no
	// signing-certificate attribute), PAdES-B-T, PAdES-B-B, PDF (a PKCS #7
	// subfilter).
	Format             string       `json:"format,omitempty"`
	Field              string       `json:"field,omitempty"` // PDF signature field name
	Signer             *Certificate `json:"signer,omitempty"`
	SigningTime        time.Time    `json:"signing_time,omitzero"` // claimed by the signer
	Timestamp          *Timestamp   `json:"timestamp,omitempty"`   // the signature timestamp
	DigestAlgorithm    string       `json:"digest_algorithm,omitempty"`
	SignatureAlgorithm string       `json:"signature_algorithm,omitempty"`
	Detached           bool         `json:"detached,omitempty"`
	ByteRange          []int64      `json:"byte_range,omitempty"`            // PDF
	CoversDocument     *bool        `json:"covers_whole_document,omitempty"` // PDF
	Checks             []Check      `json:"checks"`
	// ChainValidation is the certificate validation the chain check rested
	// on, revocation data included (when package certvalidation decided).
	ChainValidation *certvalidation.Report `json:"chain_validation,omitempty"`
}

// Certificate names a certificate in a report.
type Certificate struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	SerialNumber      string    `json:"serial_number"` // hexadecimal
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
}

func certificateOf(c *x509.Certificate) *Certificate {
	sum := sha256.Sum256(c.Raw)
	return &Certificate{
		Subject:           c.Subject.String(),
		Issuer:            c.Issuer.String(),
		SerialNumber:      c.SerialNumber.Text(16),
		FingerprintSHA256: hex.EncodeToString(sum[:]),
		NotBefore:         c.NotBefore.UTC(),
		NotAfter:          c.NotAfter.UTC(),
	}
}

// Timestamp is a signature timestamp (RFC 3161 token over the signature
// value) as the verifier saw it.
type Timestamp struct {
	Time   time.Time `json:"time"` // genTime
	TSA    string    `json:"tsa,omitempty"`
	Serial string    `json:"serial,omitempty"` // hexadecimal
	Valid  bool      `json:"valid"`
	Detail string    `json:"detail,omitempty"` // why it is not valid
}

// CheckStatus is the outcome of one check.
type CheckStatus string

// Check outcomes.
const (
	CheckPassed  CheckStatus = "passed"
	CheckFailed  CheckStatus = "failed"
	CheckWarning CheckStatus = "warning" // passed with a reservation, or not checkable and not required
	CheckSkipped CheckStatus = "skipped" // an earlier failure made it pointless
)

// Check is one verification step and its outcome.
type Check struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail,omitempty"`
}

func (r *SignatureReport) check(name string, status CheckStatus, detail string) {
	r.Checks = append(r.Checks, Check{Name: name, Status: status, Detail: detail})
}

// fail sets the indication of r, once: the first failure found is the one
// reported.
func (r *SignatureReport) fail(ind Indication, sub SubIndication, detail string) {
	if r.Indication != "" && r.Indication != TotalPassed {
		return
	}
	r.Indication, r.SubIndication, r.Detail = ind, sub, detail
}

func (r *SignatureReport) failed() bool { return r.Indication != "" && r.Indication != TotalPassed }

// severity orders indications: the worst signature gives the document's.
func severity(i Indication) int {
	switch i {
	case TotalPassed:
		return 0
	case Indeterminate:
		return 1
	}
	return 2
}

// summarize sets the overall indication from the signatures'.
func (r *Report) summarize() {
	if len(r.Signatures) == 0 {
		if r.Indication == "" {
			r.Indication, r.SubIndication, r.Detail = TotalFailed, FormatFailure, "no signature found"
		}
		return
	}
	worst := -1
	for i := range r.Signatures {
		if worst < 0 || severity(r.Signatures[i].Indication) > severity(r.Signatures[worst].Indication) {
			worst = i
		}
	}
	if r.Indication != "" && severity(r.Indication) >= severity(r.Signatures[worst].Indication) {
		return // a document-level finding at least as bad
	}
	w := r.Signatures[worst]
	r.Indication, r.SubIndication, r.Detail = w.Indication, w.SubIndication, w.Detail
}

// Passed tells whether the document's validation is TOTAL-PASSED.
func (r *Report) Passed() bool { return r.Indication == TotalPassed }
