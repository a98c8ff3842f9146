package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pec/certvalidation"
	"pec/gateway/api"
	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
)

// Errors become RFC 9457 problems here, and only here: a handler returns
// the error of the service it called, or a *problemError for a mistake in
// the request's shape, and writeError picks the problem type
// (api.ProblemType: one per reason, each with its status), the detail the
// client may see (ours, about the caller only: never an internal error's
// text) and Retry-After; our own failures are logged once.

// problemError is a refusal decided by the gateway itself: the request's
// media type, size, syntax or fields.
type problemError struct {
	typ    api.ProblemType
	detail string
	fields []api.FieldError
}

func (e *problemError) Error() string { return "gateway: " + e.typ.Reason() + ": " + e.detail }

// refuse is a refusal of type t.
func refuse(t api.ProblemType, detail string) error { return &problemError{typ: t, detail: detail} }

// invalidField is an invalid-request naming the field at pointer (RFC
// 6901, "/digest").
func invalidField(pointer, detail string) error {
	return &problemError{typ: api.TypeInvalidRequest, detail: strings.TrimPrefix(pointer, "/") + ": " + detail,
		fields: []api.FieldError{{Pointer: pointer, Detail: detail}}}
}

// tooLarge is the payload-too-large of a body over limit bytes.
func tooLarge(limit int64) error {
	return refuse(api.TypePayloadTooLarge, fmt.Sprintf("request larger than %d bytes", limit))
}

// operation names what a handler was doing: in the log, and in the detail
// of our own failures, what the client may conclude ("nothing was signed").
type operation struct {
	name    string // for the log: "signing", "directory: change"
	outcome string // for the client, after our failures; may be empty
}

// writeError answers err as a problem.
func (e *edge) writeError(w http.ResponseWriter, r *http.Request, op operation, err error) {
	ctx := r.Context()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// The client went away: nobody reads an answer.
		e.log.InfoContext(ctx, op.name+": client went away", "err", err)
		return
	}
	p, retry := e.problemFor(r, op, err)
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	writeProblem(w, p)
}

// problemFor maps err to its problem and its Retry-After in seconds (0:
// none), logging our own failures.
func (e *edge) problemFor(r *http.Request, op operation, err error) (api.Problem, int) {
	ctx := r.Context()
	with := func(detail, outcome string) string {
		if outcome == "" {
			return detail
		}
		return detail + ": " + outcome
	}
	if pe, ok := errors.AsType[*problemError](err); ok {
		p := api.NewProblem(pe.typ, pe.detail)
		p.Errors = pe.fields
		return p, retryAfter(pe.typ)
	}
	if re, ok := errors.AsType[*middleoffice.RejectedError](err); ok {
		// A refused submission: the refusal is evidence, named.
		p := api.NewProblem(rejectionType(re.Reason), re.Detail)
		p.Exchange, p.EvidenceID = re.Exchange, re.EvidenceID
		if me, ok := errors.AsType[*middleoffice.ManifestError](err); ok {
			p.Errors = fieldErrors(me.Faults)
		}
		return p, 0
	}
	if me, ok := errors.AsType[*middleoffice.ManifestError](err); ok {
		// Not recorded: the sender's submission could not be read as one.
		p := api.NewProblem(api.TypeInvalidManifest, strings.Join(me.Faults, "; "))
		p.Errors = fieldErrors(me.Faults)
		return p, 0
	}
	if be, ok := errors.AsType[*middleoffice.BacklogError](err); ok {
		// Not recorded: the submission was not read.
		return api.NewProblem(api.TypeDeliveryBacklog, fmt.Sprintf("%d accepted exchanges wait for delivery on this node: nothing was read or recorded; try again later", be.Backlog)),
			max(1, int((be.RetryAfter+time.Second-1)/time.Second))
	}
	if oe, ok := errors.AsType[*middleoffice.OffsetError](err); ok {
		return api.NewProblem(api.TypeUploadOffset, fmt.Sprintf("the upload is at offset %d (Upload-Offset), not %d: resume from there", oe.Offset, oe.Got)), 0
	}
	if ue, ok := errors.AsType[*middleoffice.UploadError](err); ok {
		return api.NewProblem(api.TypeInvalidRequest, ue.Reason), 0
	}
	if ae, ok := errors.AsType[*middleoffice.AckError](err); ok {
		return api.NewProblem(api.TypeInvalidAcknowledgment, ae.Reason), 0
	}
	if ie, ok := errors.AsType[*middleoffice.InvalidError](err); ok {
		t := api.TypeInvalidRequest
		if len(ie.Faults) == 1 && (strings.HasPrefix(ie.Faults[0], "malformed JSON") || strings.HasPrefix(ie.Faults[0], "data after")) {
			t = api.TypeMalformedRequest // the body is not a partner at all
		}
		p := api.NewProblem(t, strings.Join(ie.Faults, "; "))
		if t == api.TypeInvalidRequest {
			p.Errors = fieldErrors(ie.Faults)
		}
		return p, 0
	}
	if re, ok := errors.AsType[*signing.RequestError](err); ok {
		return api.NewProblem(api.TypeInvalidRequest, re.Reason), 0
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return api.NewProblem(api.TypePayloadTooLarge, "request too large"), 0
	}
	fe, forbidden := errors.AsType[*middleoffice.ForbiddenError](err)
	switch {
	case errors.Is(err, signing.ErrNotAllowed):
		detail := "this client may not use this signature profile"
		if forbidden {
			detail += ": " + fe.Reason // the policy's reason, about this client only
		}
		return api.NewProblem(api.TypeNotAllowed, detail), 0
	case forbidden:
		return api.NewProblem(api.TypeNotAllowed, fe.Reason), 0
	case errors.Is(err, signing.ErrUnknownProfile):
		return api.NewProblem(api.TypeUnknownProfile, "no such signature profile"), 0
	case errors.Is(err, signing.ErrDataRequired):
		return api.NewProblem(api.TypeDataRequired, "the signature is detached: give the signed data, or its digest"), 0
	case errors.Is(err, certvalidation.ErrNoTrustAnchors):
		return api.NewProblem(api.TypeNoTrustAnchors, "purpose: this node has no trust anchors for it"), 0
	case errors.Is(err, certvalidation.ErrBadOptions):
		return api.NewProblem(api.TypeInvalidRequest, "the request cannot be validated as given"), 0
	case errors.Is(err, middleoffice.ErrNotFound):
		return api.NewProblem(api.TypeUnknownPartner, "no partner "+quote(r.PathValue("id"))), 0
	case errors.Is(err, middleoffice.ErrExists):
		return api.NewProblem(api.TypePartnerExists, "a partner with this id exists: change it with PUT or PATCH /v1/partners/{id}"), 0
	case errors.Is(err, middleoffice.ErrConflict):
		// Our own text, naming the partner whose rule it is: an
		// administrator may see it.
		return api.NewProblem(api.TypePartnerConflict, strings.TrimPrefix(err.Error(), "middleoffice: ")), 0
	case errors.Is(err, middleoffice.ErrDirectoryChanged):
		// Nodes sharing the directory: another changed it first. The
		// directory loads again by itself (Directory.Follow).
		return api.NewProblem(api.TypeDirectoryChanged, "the directory was changed on another node meanwhile: nothing was changed; send the change again"), 0
	case errors.Is(err, middleoffice.ErrExchangeNotFound):
		// The same answer for "no such exchange" and "not yours".
		return api.NewProblem(api.TypeUnknownExchange, "no exchange "+quote(r.PathValue("id"))+" for this client"), 0
	case errors.Is(err, middleoffice.ErrShredded):
		return api.NewProblem(api.TypeShredded, "the retention period of this dossier ended: its content was destroyed (crypto-shredding); its status and proofs remain"), 0
	case errors.Is(err, middleoffice.ErrUploadNotFound):
		return api.NewProblem(api.TypeUnknownUpload, "no upload "+quote(r.PathValue("id"))+" for this client (or it expired)"), 0
	case errors.Is(err, middleoffice.ErrUploadBusy):
		return api.NewProblem(api.TypeUploadInUse, "another request appends to the upload, or submits it: try again once it is done"), 0
	case errors.Is(err, middleoffice.ErrAlreadyAcknowledged):
		return api.NewProblem(api.TypeAlreadyAcknowledged, "the exchange was answered already, with another acknowledgment; read it with GET /v1/exchanges/{id}"), 0
	case errors.Is(err, middleoffice.ErrNoEvidence):
		return api.NewProblem(api.TypeNoEvidenceLog, "this node keeps no evidence log: its directory takes no changes"), 0
	case errors.Is(err, middleoffice.ErrNoProof):
		// The same answer for "no such record" and "not yours".
		return api.NewProblem(api.TypeUnknownProof, "no proof "+strconv.Quote(r.PathValue("id"))+" for this client"), 0
	case errors.Is(err, middleoffice.ErrNotSealedYet):
		return api.NewProblem(api.TypeNotSealed, "the exchange is accepted and waits for its seal: try again"), 1
	case errors.Is(err, proof.ErrNotSealed):
		return api.NewProblem(api.TypeNotSealed, "the evidence is recorded but not sealed yet: try again"), 1
	case errors.Is(err, signing.ErrTimestamp):
		e.failures.error(ctx, op.name+": signature timestamp", err)
		return api.NewProblem(api.TypeTimestampUnavailable, with("the signature timestamp could not be obtained", op.outcome)+"; try again later"), 5
	case temporary(err):
		e.failures.error(ctx, op.name, err)
		return api.NewProblem(api.TypeUnavailable, with("the key or the evidence log is temporarily unavailable", op.outcome)+"; try again later"), 1
	}
	e.failures.error(ctx, op.name, err)
	return api.NewProblem(api.TypeInternal, with("internal failure", op.outcome)), 0
}

// rejectionType is the problem type of a refused submission's reason.
func rejectionType(r middleoffice.Reason) api.ProblemType {
	switch r {
	case middleoffice.ReasonInvalidManifest:
		return api.TypeInvalidManifest
	case middleoffice.ReasonForbidden:
		return api.TypeNotAllowed
	case middleoffice.ReasonTooLarge:
		return api.TypePayloadTooLarge
	case middleoffice.ReasonDigestMismatch:
		return api.TypeDigestMismatch
	case middleoffice.ReasonSizeMismatch:
		return api.TypeSizeMismatch
	case middleoffice.ReasonIncomplete:
		return api.TypeIncompleteSubmission
	case middleoffice.ReasonIdempotencyConflict:
		return api.TypeIdempotencyConflict
	case middleoffice.ReasonInvalidSignature:
		return api.TypeInvalidSignature
	case middleoffice.ReasonUnreachable:
		return api.TypeRecipientUnreachable
	}
	return api.TypeInvalidRequest
}

// retryAfter is the Retry-After of the gateway's own 503s.
func retryAfter(t api.ProblemType) int {
	if info, ok := t.Info(); ok && info.RetryAfter {
		return 1
	}
	return 0
}

// fieldErrors reads the directory's faults, "channel.url: ...", as
// pointers to the fields they name.
func fieldErrors(faults []string) []api.FieldError {
	out := make([]api.FieldError, 0, len(faults))
	for _, f := range faults {
		name, detail, ok := strings.Cut(f, ": ")
		if !ok || strings.ContainsAny(name, " \"") {
			out = append(out, api.FieldError{Detail: f})
			continue
		}
		// certificates[0].fingerprint: /certificates/0/fingerprint
		ptr := strings.NewReplacer(".", "/", "[", "/", "]", "").Replace(name)
		out = append(out, api.FieldError{Pointer: "/" + ptr, Detail: detail})
	}
	return out
}

// writeProblem answers with a problem+json body.
func writeProblem(w http.ResponseWriter, p api.Problem) {
	w.Header().Set("Content-Type", api.MediaProblem)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", api.MediaJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}
