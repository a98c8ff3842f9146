package gateway

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"pec/certvalidation"
	"pec/middleoffice"
	"pec/signing"
)

// The signature API: JSON over mutual TLS. Documents and signatures travel
// in base64 (encoding/json's []byte), digests in hexadecimal.

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

// VerificationRequest is the body of POST /v1/verifications.
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

type signingHandlers struct {
	svc      *signing.Service
	verifier *signing.Verifier
	log      *slog.Logger
	failures *failureLog
}

// registerSigning adds the signature routes that opts provides for.
func registerSigning(v1 *http.ServeMux, m *metrics, opts Options) {
	h := &signingHandlers{svc: opts.Signing, verifier: opts.Verifier, log: opts.logger(), failures: newFailureLog(opts.logger())}
	if h.svc != nil {
		v1.Handle("POST /v1/signatures", m.instrument("/v1/signatures", http.HandlerFunc(h.sign)))
		v1.Handle("POST /v1/signatures/batch", m.instrument("/v1/signatures/batch", http.HandlerFunc(h.batch)))
	}
	if h.verifier != nil {
		v1.Handle("POST /v1/verifications", m.instrument("/v1/verifications", http.HandlerFunc(h.verify)))
	}
}

// base64Len bounds the JSON size of n bytes in base64, plus room for the
// other fields.
func base64Len(n int64) int64 { return (n+2)/3*4 + 64<<10 }

func client(r *http.Request) signing.Client {
	return signing.Client{Certificate: r.TLS.PeerCertificates[0]}
}

func (h *signingHandlers) sign(w http.ResponseWriter, r *http.Request) {
	var req SignatureRequest
	if !decodeJSON(w, r, base64Len(h.svc.MaxDocument()), &req) {
		return
	}
	sreq := signing.Request{Profile: req.Profile, Document: req.Document, Detached: req.Detached, Visible: req.Visible}
	if req.Digest != "" {
		d, err := hex.DecodeString(req.Digest)
		if err != nil {
			writeProblem(w, http.StatusBadRequest, "digest: not hexadecimal")
			return
		}
		sreq.Digest = d
	}
	res, err := h.svc.Sign(r.Context(), client(r), sreq)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := SignatureResponse{
		ID: res.ID, Profile: res.Profile, Format: string(res.Format), Detached: res.Detached,
		Signature: res.Signature.DER, Digest: hex.EncodeToString(res.Signature.Digest),
		SigningTime: res.Signature.SigningTime,
	}
	switch {
	case res.Format == signing.PAdES:
		out.MediaType = "application/pdf"
	case res.Detached:
		out.MediaType = "application/pkcs7-signature"
	default:
		out.MediaType = "application/pkcs7-mime"
	}
	if res.Signature.Timestamp != nil {
		out.TimestampTime = res.Signature.Timestamp.GenTime.UTC()
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *signingHandlers) batch(w http.ResponseWriter, r *http.Request) {
	var req BatchRequest
	if !decodeJSON(w, r, int64(h.svc.MaxBatch())*140+4<<10, &req) {
		return
	}
	digests := make([][]byte, len(req.Digests))
	for i, d := range req.Digests {
		b, err := hex.DecodeString(d)
		if err != nil {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("digests[%d]: not hexadecimal", i))
			return
		}
		digests[i] = b
	}
	res, err := h.svc.SignDigests(r.Context(), client(r), req.Profile, digests)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := BatchResponse{ID: res.ID, Profile: res.Profile, Signatures: make([]BatchSignature, len(res.Signatures))}
	for i, s := range res.Signatures {
		out.Signatures[i] = BatchSignature{Digest: req.Digests[i], Signature: s.DER, SigningTime: s.SigningTime}
		if s.Timestamp != nil {
			out.Signatures[i].TimestampTime = s.Timestamp.GenTime.UTC()
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *signingHandlers) verify(w http.ResponseWriter, r *http.Request) {
	var req VerificationRequest
	limit := int64(signing.DefaultMaxDocumentBytes)
	if h.svc != nil {
		limit = h.svc.MaxDocument()
	}
	if !decodeJSON(w, r, 2*base64Len(limit), &req) {
		return
	}
	if len(req.Signature) == 0 {
		writeProblem(w, http.StatusBadRequest, "signature: required")
		return
	}
	opts := signing.VerifyOptions{Data: req.Data}
	if req.Digest != "" {
		hash, ok := signing.HashByName(cmpOr(req.DigestAlgorithm, "sha256"))
		d, err := hex.DecodeString(req.Digest)
		if !ok || err != nil || len(d) != hash.Size() {
			writeProblem(w, http.StatusBadRequest, "digest: want the hexadecimal digest of the data with digest_algorithm sha256, sha384 or sha512")
			return
		}
		opts.Digest, opts.Hash = d, hash
	}
	for i, c := range req.Certificates {
		certs, err := certvalidation.ParseCertificates(c)
		if err != nil {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("certificates[%d]: not a DER or PEM certificate", i))
			return
		}
		opts.Certificates = append(opts.Certificates, certs...)
	}
	report, err := h.verifier.Verify(r.Context(), req.Signature, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// A report is the answer, whatever its indication: the request was
	// understood and processed.
	writeJSON(w, http.StatusOK, report)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fail turns a signing error into a problem: the caller's mistakes are
// 4xx with a reason it can act on; our own failures are logged here, once,
// and answered without their text.
func (h *signingHandlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	if re, ok := errors.AsType[*signing.RequestError](err); ok {
		writeProblem(w, http.StatusBadRequest, re.Reason)
		return
	}
	switch {
	case errors.Is(err, signing.ErrNotAllowed):
		detail := "this client may not use this signature profile"
		if fe, ok := errors.AsType[*middleoffice.ForbiddenError](err); ok {
			detail += ": " + fe.Reason // the policy's reason, about this client only
		}
		writeProblem(w, http.StatusForbidden, detail)
	case errors.Is(err, signing.ErrUnknownProfile):
		writeProblem(w, http.StatusNotFound, "no such signature profile")
	case errors.Is(err, signing.ErrDataRequired):
		writeProblem(w, http.StatusBadRequest, "the signature is detached: give the signed data, or its digest")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		h.log.InfoContext(r.Context(), "signing: client went away", "err", err)
	case errors.Is(err, signing.ErrTimestamp):
		h.failures.error(r.Context(), "signing: signature timestamp", err)
		w.Header().Set("Retry-After", "5")
		writeProblem(w, http.StatusServiceUnavailable, "the signature timestamp could not be obtained: nothing was signed; try again later")
	case temporary(err):
		h.failures.error(r.Context(), "signing", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the key or the evidence log is temporarily unavailable: nothing was signed; try again later")
	default:
		h.failures.error(r.Context(), "signing", err)
		writeProblem(w, http.StatusInternalServerError, "internal failure: nothing was signed")
	}
}

// decodeJSON reads a JSON request body of at most limit bytes into v,
// strictly: unknown fields and trailing data are errors. It answers the
// problem itself and returns false when the body is not acceptable.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeProblem(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return false
	}
	if r.ContentLength > limit {
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", limit))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return true
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", limit))
		return false
	}
	// encoding/json's messages name the field and the offset, nothing of
	// ours: safe to return.
	writeProblem(w, http.StatusBadRequest, "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	return false
}
