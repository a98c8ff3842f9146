// Package api is the wire of PEC's HTTP interfaces: the request and
// response types that package gateway serves and that [Client], the typed
// Go client of the pec CLI, sends and reads. Both sides use these types,
// so that a field renamed on one side is renamed on the other.
//
// The JSON API lives under /v1 on the api listener (mutual TLS, RFC 8446
// section 4.4.2); the published evidence log (c2sp.org/tlog-checkpoint and
// tlog-tiles, RFC 9162 consistency proofs) and RFC 3161 section 3.4 over
// HTTP on the tsa listener; /metrics and the readiness details on the ops
// listener. Every error answer of the JSON API and of the published log is
// an RFC 9457 problem ([Problem]) whose type is one of the [ProblemType]
// constants, documented in gateway/openapi.yaml.
//
// Documents and signatures travel in base64 (encoding/json's []byte),
// digests in hexadecimal.
package api

import (
	"time"

	"pec/middleoffice"
)

// EvidenceHeader carries the id of the evidence record of an answer: the
// token's timestamp.issued, the proof.read of a bundle, the admin.action
// of a directory change.
const EvidenceHeader = "PEC-Evidence-ID"

// SignatureRequest is the body of POST /v1/signatures.
type SignatureRequest struct {
	Profile string `json:"profile"`
	// Document is the document to sign (base64); or Digest is its digest in
	// hexadecimal, computed with the profile's digest algorithm (CAdES
	// profiles only: the signature is then detached).
	Document []byte `json:"document,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Detached bool   `json:"detached,omitempty"` // CAdES: leave the document out of the signature
	Visible  *bool  `json:"visible,omitempty"`  // PAdES: override the profile's visibility
}

// SignatureResponse is one signature made.
type SignatureResponse struct {
	ID            string    `json:"id"` // of the evidence record
	Profile       string    `json:"profile"`
	Format        string    `json:"format"` // cades or pades
	Detached      bool      `json:"detached"`
	MediaType     string    `json:"media_type"` // of Signature: application/pkcs7-mime, application/pkcs7-signature, application/pdf
	Signature     []byte    `json:"signature"`  // the DER CMS, or the signed PDF
	Digest        string    `json:"digest"`     // the signed message digest, hexadecimal
	SigningTime   time.Time `json:"signing_time"`
	TimestampTime time.Time `json:"timestamp_time,omitzero"` // the signature timestamp's genTime (B-T)
}

// BatchRequest is the body of POST /v1/signatures/batch.
type BatchRequest struct {
	Profile string   `json:"profile"`
	Digests []string `json:"digests"` // hexadecimal, computed with the profile's digest algorithm
}

// BatchResponse holds the detached CAdES signatures of a batch, in the
// order of its digests.
type BatchResponse struct {
	ID         string           `json:"id"` // of the evidence record of the whole batch
	Profile    string           `json:"profile"`
	Signatures []BatchSignature `json:"signatures"`
}

// BatchSignature is the signature of one digest of a batch.
type BatchSignature struct {
	Digest        string    `json:"digest"`
	Signature     []byte    `json:"signature"` // DER CMS, detached
	SigningTime   time.Time `json:"signing_time"`
	TimestampTime time.Time `json:"timestamp_time,omitzero"`
}

// VerificationRequest is the body of POST /v1/verifications; the answer
// is a signing.Report.
type VerificationRequest struct {
	Signature []byte `json:"signature"` // a CMS (DER or PEM) or a PDF
	// For a detached CMS signature: the signed data, or its digest in
	// hexadecimal with its algorithm (sha256, the default, sha384, sha512).
	Data            []byte `json:"data,omitempty"`
	Digest          string `json:"digest,omitempty"`
	DigestAlgorithm string `json:"digest_algorithm,omitempty"`
	// Certificates the signature does not carry (its signer's, its
	// intermediates), each DER or PEM (base64 in JSON), as pec verify
	// --certs gives them.
	Certificates [][]byte `json:"certificates,omitempty"`
}

// ValidationRequest is the body of POST /v1/validations; the answer is a
// certvalidation.Report. Certificates and revocation data travel in
// base64, each DER or PEM.
type ValidationRequest struct {
	Certificate   []byte   `json:"certificate"`
	Intermediates [][]byte `json:"intermediates,omitempty"`
	// Purpose selects the node's trust anchors and revocation policy, and
	// the key usage checked: any, serverAuth, clientAuth, emailProtection,
	// timeStamping, documentSigning. Default: any.
	Purpose string `json:"purpose,omitempty"`
	// At is the validation time (RFC 3339); default: now.
	At    *time.Time `json:"at,omitempty"`
	Host  string     `json:"host,omitempty"`
	Email string     `json:"email,omitempty"`
	// Revocation may make the node's policy for the purpose stricter, never
	// weaker: none, prefer, require.
	Revocation    string   `json:"revocation,omitempty"`
	CRLs          [][]byte `json:"crls,omitempty"`
	OCSPResponses [][]byte `json:"ocsp_responses,omitempty"`
}

// Identity is how the platform names an authenticated client (GET
// /v1/whoami): its certificate, and the directory's partner it stands for.
type Identity struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	SerialNumber      string    `json:"serial_number"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotAfter          time.Time `json:"not_after"`
	// Partner is the directory's id of the client; empty: no partner
	// claims the certificate (it has no role).
	Partner string              `json:"partner,omitempty"`
	Name    string              `json:"name,omitempty"`
	Roles   []middleoffice.Role `json:"roles"`
}

// PartnerList is the body of GET /v1/partners.
type PartnerList struct {
	Partners []middleoffice.Partner `json:"partners"`
}

// ConsistencyProof is the body of GET /proof/consistency: the RFC 9162
// section 2.1.4 proof that the tree of size New extends the tree of size
// Old, hashes in base64. A verifier checks it against the roots of two
// checkpoints it has verified, never against anything the server says.
type ConsistencyProof struct {
	Old   uint64   `json:"old"`
	New   uint64   `json:"new"`
	Proof []string `json:"proof"`
}

// Readiness is the body of /readyz. On the ops listener it holds every
// check with its reason; on the partner-facing listeners, the status
// alone.
type Readiness struct {
	Status string  `json:"status"` // ready, not ready
	Checks []Check `json:"checks,omitempty"`
}

// Check is one readiness check.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, failing
	Reason string `json:"reason,omitempty"`
}
