package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ProblemType is the type member of a problem (RFC 9457 section 3.1.1): a
// URI naming one reason, always answered with the same HTTP status. The
// URIs are identifiers, in a urn:pec:problem: namespace of our own; they
// are not meant to be dereferenced (RFC 9457 section 3.1.1: consumers
// SHOULD NOT do so). gateway/openapi.yaml lists them all.
type ProblemType string

// ProblemPrefix begins every ProblemType.
const ProblemPrefix = "urn:pec:problem:"

// The problem types: one per reason a request is refused or fails.
const (
	// The request itself (400, 413, 415).
	TypeMalformedRequest     ProblemType = ProblemPrefix + "malformed-request"
	TypeInvalidRequest       ProblemType = ProblemPrefix + "invalid-request"
	TypeDataRequired         ProblemType = ProblemPrefix + "data-required"
	TypeNoTrustAnchors       ProblemType = ProblemPrefix + "no-trust-anchors"
	TypePayloadTooLarge      ProblemType = ProblemPrefix + "payload-too-large"
	TypeUnsupportedMediaType ProblemType = ProblemPrefix + "unsupported-media-type"

	// A submission or an acknowledgment refused (400, 409, 422): each is
	// evidence (submission.rejected), named by the problem's evidence_id.
	TypeInvalidManifest       ProblemType = ProblemPrefix + "invalid-manifest"
	TypeIncompleteSubmission  ProblemType = ProblemPrefix + "incomplete-submission"
	TypeDigestMismatch        ProblemType = ProblemPrefix + "digest-mismatch"
	TypeSizeMismatch          ProblemType = ProblemPrefix + "size-mismatch"
	TypeInvalidSignature      ProblemType = ProblemPrefix + "invalid-signature"
	TypeRecipientUnreachable  ProblemType = ProblemPrefix + "recipient-unreachable"
	TypeIdempotencyConflict   ProblemType = ProblemPrefix + "idempotency-conflict"
	TypeInvalidAcknowledgment ProblemType = ProblemPrefix + "invalid-acknowledgment"
	TypeAlreadyAcknowledged   ProblemType = ProblemPrefix + "already-acknowledged"

	// The client (401, 403).
	TypeClientCertificateRequired ProblemType = ProblemPrefix + "client-certificate-required"
	TypeClientCertificateInvalid  ProblemType = ProblemPrefix + "client-certificate-invalid"
	TypePartnerDisabled           ProblemType = ProblemPrefix + "partner-disabled"
	TypeNotAllowed                ProblemType = ProblemPrefix + "not-allowed"

	// What the request names (404, 405, 409).
	TypeNotFound         ProblemType = ProblemPrefix + "not-found"
	TypeUnknownProfile   ProblemType = ProblemPrefix + "unknown-profile"
	TypeUnknownPartner   ProblemType = ProblemPrefix + "unknown-partner"
	TypeUnknownProof     ProblemType = ProblemPrefix + "unknown-proof"
	TypeUnknownExchange  ProblemType = ProblemPrefix + "unknown-exchange"
	TypeUnknownUpload    ProblemType = ProblemPrefix + "unknown-upload"
	TypeUploadOffset     ProblemType = ProblemPrefix + "upload-offset-mismatch"
	TypeUploadInUse      ProblemType = ProblemPrefix + "upload-in-use"
	TypeMethodNotAllowed ProblemType = ProblemPrefix + "method-not-allowed"
	TypeShredded         ProblemType = ProblemPrefix + "shredded"
	TypePartnerExists    ProblemType = ProblemPrefix + "partner-exists"
	TypePartnerConflict  ProblemType = ProblemPrefix + "partner-conflict"
	TypeDirectoryChanged ProblemType = ProblemPrefix + "directory-changed"

	// The node (500, 503).
	TypeInternal             ProblemType = ProblemPrefix + "internal"
	TypeUnavailable          ProblemType = ProblemPrefix + "unavailable"
	TypeNotSealed            ProblemType = ProblemPrefix + "not-sealed"
	TypeTimestampUnavailable ProblemType = ProblemPrefix + "timestamp-unavailable"
	TypeOverloaded           ProblemType = ProblemPrefix + "overloaded"
	TypeDeliveryBacklog      ProblemType = ProblemPrefix + "delivery-backlog"
	TypeNoEvidenceLog        ProblemType = ProblemPrefix + "no-evidence-log"
)

// ProblemInfo describes a problem type: its HTTP status, its title (the
// same at every occurrence, RFC 9457 section 3.1.3), and whether the
// answer carries Retry-After.
type ProblemInfo struct {
	Type       ProblemType
	Status     int
	Title      string
	RetryAfter bool
}

var problemTypes = []ProblemInfo{
	{TypeMalformedRequest, http.StatusBadRequest, "The request is not well-formed", false},
	{TypeInvalidRequest, http.StatusBadRequest, "A field of the request is invalid", false},
	{TypeDataRequired, http.StatusBadRequest, "A detached signature needs its signed data", false},
	{TypeNoTrustAnchors, http.StatusBadRequest, "The node has no trust anchors for this purpose", false},
	{TypePayloadTooLarge, http.StatusRequestEntityTooLarge, "The request body is too large", false},
	{TypeUnsupportedMediaType, http.StatusUnsupportedMediaType, "The request body has the wrong media type", false},
	{TypeInvalidManifest, http.StatusBadRequest, "The manifest is invalid", false},
	{TypeIncompleteSubmission, http.StatusBadRequest, "The submission is incomplete", false},
	{TypeDigestMismatch, http.StatusUnprocessableEntity, "A document is not the one the manifest declares", false},
	{TypeSizeMismatch, http.StatusUnprocessableEntity, "A document's size is not the declared one", false},
	{TypeInvalidSignature, http.StatusUnprocessableEntity, "A sender's signature of a document does not verify", false},
	{TypeRecipientUnreachable, http.StatusUnprocessableEntity, "The recipient cannot receive dossiers", false},
	{TypeIdempotencyConflict, http.StatusConflict, "The idempotency key names another submission", false},
	{TypeInvalidAcknowledgment, http.StatusUnprocessableEntity, "The acknowledgment is refused", false},
	{TypeAlreadyAcknowledged, http.StatusConflict, "The exchange is acknowledged already", false},
	{TypeClientCertificateRequired, http.StatusUnauthorized, "A client certificate is required", false},
	{TypeClientCertificateInvalid, http.StatusUnauthorized, "The client certificate is not valid", false},
	{TypePartnerDisabled, http.StatusForbidden, "The partner is disabled", false},
	{TypeNotAllowed, http.StatusForbidden, "The policy does not allow this", false},
	{TypeNotFound, http.StatusNotFound, "No such resource", false},
	{TypeUnknownProfile, http.StatusNotFound, "No such signature profile", false},
	{TypeUnknownPartner, http.StatusNotFound, "No such partner", false},
	{TypeUnknownProof, http.StatusNotFound, "No such proof for this client", false},
	{TypeUnknownExchange, http.StatusNotFound, "No such exchange for this client", false},
	{TypeUnknownUpload, http.StatusNotFound, "No such upload for this client", false},
	{TypeUploadOffset, http.StatusConflict, "The upload is at another offset", false},
	{TypeUploadInUse, http.StatusConflict, "The upload is in use by another request", false},
	{TypeMethodNotAllowed, http.StatusMethodNotAllowed, "Method not allowed on this resource", false},
	{TypeShredded, http.StatusGone, "The dossier's content is destroyed", false},
	{TypePartnerExists, http.StatusConflict, "A partner with this id exists", false},
	{TypePartnerConflict, http.StatusConflict, "The partner's certificates are another partner's", false},
	{TypeDirectoryChanged, http.StatusConflict, "The directory was changed on another node meanwhile", false},
	{TypeInternal, http.StatusInternalServerError, "Internal failure", false},
	{TypeUnavailable, http.StatusServiceUnavailable, "Temporarily unavailable", true},
	{TypeNotSealed, http.StatusServiceUnavailable, "The evidence is not sealed yet", true},
	{TypeTimestampUnavailable, http.StatusServiceUnavailable, "The signature timestamp could not be obtained", true},
	{TypeOverloaded, http.StatusServiceUnavailable, "The node is overloaded", true},
	{TypeDeliveryBacklog, http.StatusServiceUnavailable, "The node's deliveries are behind", true},
	{TypeNoEvidenceLog, http.StatusServiceUnavailable, "This node keeps no evidence log", false},
}

// ProblemTypes returns every problem type, in the order of the list above.
func ProblemTypes() []ProblemInfo { return append([]ProblemInfo(nil), problemTypes...) }

// Info describes t; ok is false for a type this package does not define.
func (t ProblemType) Info() (info ProblemInfo, ok bool) {
	for _, p := range problemTypes {
		if p.Type == t {
			return p, true
		}
	}
	return ProblemInfo{}, false
}

// Reason is the last part of t: "not-allowed".
func (t ProblemType) Reason() string { return strings.TrimPrefix(string(t), ProblemPrefix) }

// Problem is an RFC 9457 problem detail, the body (application/problem+json)
// of every error answer of the API and of the published log.
type Problem struct {
	Type   ProblemType `json:"type"`
	Title  string      `json:"title"`
	Status int         `json:"status"`
	Detail string      `json:"detail,omitempty"`
	// Errors names the fields at fault (invalid-request), an extension
	// member after RFC 9457 section 3's example.
	Errors []FieldError `json:"errors,omitempty"`
	// Exchange and EvidenceID name a refused submission and the
	// submission.rejected record that proves the refusal (extension
	// members).
	Exchange   string `json:"exchange,omitempty"`
	EvidenceID string `json:"evidence_id,omitempty"`
}

// FieldError is one field at fault: Pointer is an RFC 6901 JSON pointer
// into the request body ("/digest", "/certificates/2"), empty when the
// fault is not one field's.
type FieldError struct {
	Pointer string `json:"pointer,omitempty"`
	Detail  string `json:"detail"`
}

// NewProblem is a problem of type t with its status and title.
func NewProblem(t ProblemType, detail string) Problem {
	info, ok := t.Info()
	if !ok {
		info = ProblemInfo{Type: TypeInternal, Status: http.StatusInternalServerError, Title: "Internal failure"}
		t = TypeInternal
	}
	return Problem{Type: t, Title: info.Title, Status: info.Status, Detail: detail}
}

// Error is an answer of the node other than success: its HTTP status and,
// when the body is a problem, the problem. Its text is "403 Forbidden:
// the detail", as the CLI prints it.
type Error struct {
	StatusCode int
	Problem    Problem       // Type is empty when the body was not a problem
	RetryAfter time.Duration // from Retry-After (seconds); 0: none
	text       string        // the body, when it was not a problem
}

func (e *Error) Error() string {
	detail := e.Problem.Detail
	if detail == "" {
		detail = e.Problem.Title
	}
	if detail == "" {
		detail = e.text
	}
	s := fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if detail != "" {
		s += ": " + detail
	}
	for _, f := range e.Problem.Errors {
		if f.Pointer != "" && !strings.Contains(detail, f.Detail) {
			s += "; " + f.Pointer + ": " + f.Detail
		}
	}
	return s
}

// ClientMistake reports whether the node refused the request for a fault
// of the request itself (4xx), not of who sent it (401, 403) nor of the
// node (5xx).
func (e *Error) ClientMistake() bool {
	return e.StatusCode >= 400 && e.StatusCode < 500 && e.StatusCode != http.StatusUnauthorized && e.StatusCode != http.StatusForbidden
}
