package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/evidence"
	"pec/gateway/api"
	"pec/hsm"
	"pec/middleoffice"
	"pec/proof"
	"pec/signing"
)

// TestProblemFor: the one mapping from the services' errors to problems.
// Each error the services return gets its type, its status, Retry-After
// when the type calls for it, and a detail that never holds the internal
// error's text; together the cases produce every type of api.
func TestProblemFor(t *testing.T) {
	t.Parallel()
	forbidden := &middleoffice.ForbiddenError{Principal: "partner-b", Action: middleoffice.ActionSign, Reason: `no rule grants the signature profile "default"`}
	covered := map[api.ProblemType]bool{}
	for _, tc := range []struct {
		name   string
		err    error
		want   api.ProblemType
		retry  string
		detail string // in the detail
		fields []api.FieldError
	}{
		{"malformed JSON", refuse(api.TypeMalformedRequest, "malformed JSON: x"), api.TypeMalformedRequest, "", "malformed JSON", nil},
		{"partner not JSON", &middleoffice.InvalidError{Faults: []string{"malformed JSON: unexpected EOF"}}, api.TypeMalformedRequest, "", "unexpected EOF", nil},
		{"invalid field", invalidField("/digests/2", "not hexadecimal"), api.TypeInvalidRequest, "", "digests/2: not hexadecimal", []api.FieldError{{Pointer: "/digests/2", Detail: "not hexadecimal"}}},
		{"invalid partner", &middleoffice.InvalidError{Faults: []string{`channel.url: "" is not an https:// URL`, "certificates[1].fingerprint: not 64 hexadecimal digits"}},
			api.TypeInvalidRequest, "", "channel.url", []api.FieldError{{Pointer: "/channel/url", Detail: `"" is not an https:// URL`}, {Pointer: "/certificates/1/fingerprint", Detail: "not 64 hexadecimal digits"}}},
		{"signing request", fmt.Errorf("signing: %w", &signing.RequestError{Reason: "not a readable PDF"}), api.TypeInvalidRequest, "", "not a readable PDF", nil},
		{"validation options", fmt.Errorf("x: %w", certvalidation.ErrBadOptions), api.TypeInvalidRequest, "", "cannot be validated", nil},
		{"data required", signing.ErrDataRequired, api.TypeDataRequired, "", "give the signed data", nil},
		{"no trust anchors", certvalidation.ErrNoTrustAnchors, api.TypeNoTrustAnchors, "", "no trust anchors", nil},
		{"too large", tooLarge(10), api.TypePayloadTooLarge, "", "larger than 10 bytes", nil},
		{"max bytes", &http.MaxBytesError{Limit: 10}, api.TypePayloadTooLarge, "", "too large", nil},
		{"media type", refuse(api.TypeUnsupportedMediaType, "content type must be application/json"), api.TypeUnsupportedMediaType, "", "application/json", nil},
		{"no client certificate", refuse(api.TypeClientCertificateRequired, "a client certificate is required"), api.TypeClientCertificateRequired, "", "required", nil},
		{"client certificate", refuse(api.TypeClientCertificateInvalid, "the client certificate is not valid (revoked)"), api.TypeClientCertificateInvalid, "", "revoked", nil},
		{"disabled", refuse(api.TypePartnerDisabled, "the partner partner-c is disabled"), api.TypePartnerDisabled, "", "disabled", nil},
		{"profile not allowed", fmt.Errorf("%w: %w", signing.ErrNotAllowed, forbidden), api.TypeNotAllowed, "", `may not use this signature profile: no rule grants`, nil},
		{"policy", &middleoffice.ForbiddenError{Reason: "partner administration needs the admin role"}, api.TypeNotAllowed, "", "admin role", nil},
		{"no route", refuse(api.TypeNotFound, "no such route"), api.TypeNotFound, "", "no such route", nil},
		{"unknown profile", fmt.Errorf("signing: %w: %q", signing.ErrUnknownProfile, "nosuch"), api.TypeUnknownProfile, "", "no such signature profile", nil},
		{"unknown partner", fmt.Errorf("%w: %q", middleoffice.ErrNotFound, "nosuch"), api.TypeUnknownPartner, "", "no partner", nil},
		{"unknown proof", middleoffice.ErrNoProof, api.TypeUnknownProof, "", "for this client", nil},
		{"method", refuse(api.TypeMethodNotAllowed, "POST is not served here"), api.TypeMethodNotAllowed, "", "POST", nil},
		{"partner exists", fmt.Errorf("%w: %q", middleoffice.ErrExists, "partner-c"), api.TypePartnerExists, "", "exists", nil},
		{"partner conflict", fmt.Errorf("%w: subject of %q", middleoffice.ErrConflict, "partner-a"), api.TypePartnerConflict, "", `"partner-a"`, nil},
		{"directory changed", fmt.Errorf("middleoffice: store the change (evidence e1): %w (partner %q)", middleoffice.ErrDirectoryChanged, "partner-c"), api.TypeDirectoryChanged, "", "changed on another node meanwhile: nothing was changed", nil},
		{"internal", errors.New("pkcs11: CKR_DEVICE_ERROR at slot 3"), api.TypeInternal, "", "internal failure: nothing was done", nil},
		{"HSM away", fmt.Errorf("sign: %w", hsm.ErrUnavailable), api.TypeUnavailable, "1", "temporarily unavailable: nothing was done", nil},
		{"log away", fmt.Errorf("middleoffice: proof lookup: %w: %w", evidence.ErrUnavailable, errors.New("pq: connection refused")), api.TypeUnavailable, "1", "temporarily unavailable", nil},
		{"not sealed", fmt.Errorf("middleoffice: proof of x: %w", proof.ErrNotSealed), api.TypeNotSealed, "1", "not sealed yet", nil},
		{"signature timestamp", fmt.Errorf("signing: %w: %w", signing.ErrTimestamp, errors.New("dial tcp 10.0.0.1:318")), api.TypeTimestampUnavailable, "5", "timestamp could not be obtained: nothing was done", nil},
		{"overloaded", refuse(api.TypeOverloaded, "try again"), api.TypeOverloaded, "1", "try again", nil},
		{"delivery backlog", &middleoffice.BacklogError{Backlog: 4000, Max: 4000, RetryAfter: time.Second}, api.TypeDeliveryBacklog, "1", "4000 accepted exchanges wait for delivery", nil},
		{"delivery backlog, longer", fmt.Errorf("submit: %w", &middleoffice.BacklogError{Backlog: 10, Max: 5, RetryAfter: 2500 * time.Millisecond}), api.TypeDeliveryBacklog, "3", "nothing was read or recorded", nil},
		{"no evidence log", middleoffice.ErrNoEvidence, api.TypeNoEvidenceLog, "", "no evidence log", nil},
		{"manifest refused", &middleoffice.RejectedError{Reason: middleoffice.ReasonInvalidManifest, Detail: "documents[0].sha256: not 64 hexadecimal digits", Err: &middleoffice.ManifestError{Faults: []string{"documents[0].sha256: not 64 hexadecimal digits"}}},
			api.TypeInvalidManifest, "", "documents[0].sha256", []api.FieldError{{Pointer: "/documents/0/sha256", Detail: "not 64 hexadecimal digits"}}},
		{"manifest unreadable", &middleoffice.ManifestError{Faults: []string{"recipient: required"}}, api.TypeInvalidManifest, "", "recipient: required", []api.FieldError{{Pointer: "/recipient", Detail: "required"}}},
		{"route refused", &middleoffice.RejectedError{Reason: middleoffice.ReasonForbidden, Detail: "no route lets partner-c send dossier to partner-b", Err: forbidden}, api.TypeNotAllowed, "", "no route", nil},
		{"dossier too large", &middleoffice.RejectedError{Reason: middleoffice.ReasonTooLarge, Detail: "documents[0]: larger than 10 bytes"}, api.TypePayloadTooLarge, "", "larger than", nil},
		{"digest mismatch", &middleoffice.RejectedError{Reason: middleoffice.ReasonDigestMismatch, Detail: "documents[1]: its SHA-256 is not the declared one"}, api.TypeDigestMismatch, "", "SHA-256", nil},
		{"size mismatch", &middleoffice.RejectedError{Reason: middleoffice.ReasonSizeMismatch, Detail: "documents[0]: 9 bytes, declared 10"}, api.TypeSizeMismatch, "", "declared 10", nil},
		{"incomplete", &middleoffice.RejectedError{Reason: middleoffice.ReasonIncomplete, Detail: "documents[2]: missing"}, api.TypeIncompleteSubmission, "", "missing", nil},
		{"idempotency conflict", &middleoffice.RejectedError{Reason: middleoffice.ReasonIdempotencyConflict, Detail: "the key names another manifest"}, api.TypeIdempotencyConflict, "", "another manifest", nil},
		{"bad signature", &middleoffice.RejectedError{Reason: middleoffice.ReasonInvalidSignature, Detail: "documents[0].signatures[0]: TOTAL-FAILED HASH_FAILURE"}, api.TypeInvalidSignature, "", "HASH_FAILURE", nil},
		{"unreachable", &middleoffice.RejectedError{Reason: middleoffice.ReasonUnreachable, Detail: "partner-b has no encryption certificate"}, api.TypeRecipientUnreachable, "", "encryption certificate", nil},
		{"bad ack", &middleoffice.AckError{Reason: "the signed acknowledgment is not a CMS SignedData"}, api.TypeInvalidAcknowledgment, "", "not a CMS SignedData", nil},
		{"already acknowledged", middleoffice.ErrAlreadyAcknowledged, api.TypeAlreadyAcknowledged, "", "answered already", nil},
		{"unknown upload", middleoffice.ErrUploadNotFound, api.TypeUnknownUpload, "", "no upload", nil},
		{"upload offset", &middleoffice.OffsetError{Offset: 1024, Got: 0}, api.TypeUploadOffset, "", "at offset 1024", nil},
		{"upload busy", middleoffice.ErrUploadBusy, api.TypeUploadInUse, "", "another request", nil},
		{"upload refused", &middleoffice.UploadError{Reason: "size: -1 is not between 0 and 10 bytes"}, api.TypeInvalidRequest, "", "size: -1", nil},
		{"shredded", middleoffice.ErrShredded, api.TypeShredded, "", "destroyed", nil},
		{"unknown exchange", middleoffice.ErrExchangeNotFound, api.TypeUnknownExchange, "", "for this client", nil},
	} {
		covered[tc.want] = true
		t.Run(tc.name, func(t *testing.T) {
			e := &edge{log: slog.New(slog.DiscardHandler), failures: newFailureLog(slog.New(slog.DiscardHandler))}
			rec := httptest.NewRecorder()
			e.writeError(rec, httptest.NewRequest("GET", "/v1/x", nil), operation{name: "test", outcome: "nothing was done"}, tc.err)
			var p api.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Header().Get("Content-Type") != api.MediaProblem {
				t.Fatalf("not a problem: %q %s", rec.Header().Get("Content-Type"), rec.Body.Bytes())
			}
			info, _ := tc.want.Info()
			if p.Type != tc.want || rec.Code != info.Status || p.Status != info.Status || p.Title != info.Title {
				t.Errorf("HTTP %d %+v, want %s (%d)", rec.Code, p, tc.want, info.Status)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retry {
				t.Errorf("Retry-After %q, want %q", got, tc.retry)
			}
			if !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("detail %q, want %q in it", p.Detail, tc.detail)
			}
			for _, secret := range []string{"pkcs11", "pq:", "10.0.0.1", "middleoffice:", "signing:"} {
				if strings.Contains(rec.Body.String(), secret) {
					t.Errorf("internal text %q sent: %s", secret, rec.Body.Bytes())
				}
			}
			if fmt.Sprint(p.Errors) != fmt.Sprint(tc.fields) {
				t.Errorf("errors %+v, want %+v", p.Errors, tc.fields)
			}
		})
	}
	for _, pt := range api.ProblemTypes() {
		if !covered[pt.Type] {
			t.Errorf("no case for %s", pt.Type)
		}
	}
}

// TestClientGoneAway: a request whose client left gets no answer, and no
// error log.
func TestClientGoneAway(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e := &edge{log: slog.New(slog.DiscardHandler), failures: newFailureLog(slog.New(slog.DiscardHandler))}
	rec := httptest.NewRecorder()
	e.writeError(rec, httptest.NewRequest("GET", "/v1/x", nil).WithContext(ctx), operation{name: "test"}, fmt.Errorf("sign: %w", context.Canceled))
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("answered a client that left: %d %s", rec.Code, rec.Body.Bytes())
	}
}
