package gateway

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"pec/certvalidation"
	"pec/gateway/api"
	"pec/signing"
)

// The signature API: JSON over mutual TLS, the types of package api.

type signingHandlers struct {
	svc      *signing.Service
	verifier *signing.Verifier
}

// registerSigning adds the signature routes that opts provides for.
func registerSigning(v1 *http.ServeMux, m *metrics, e *edge, opts Options) {
	h := &signingHandlers{svc: opts.Signing, verifier: opts.Verifier}
	sign := operation{name: "signing", outcome: "nothing was signed"}
	if h.svc != nil {
		v1.Handle("POST /v1/signatures", m.instrument("/v1/signatures", e.handle(sign, h.sign)))
		v1.Handle("POST /v1/signatures/batch", m.instrument("/v1/signatures/batch", e.handle(sign, h.batch)))
	}
	if h.verifier != nil {
		v1.Handle("POST /v1/verifications", m.instrument("/v1/verifications", e.handle(operation{name: "verification"}, h.verify)))
	}
}

// base64Len bounds the JSON size of n bytes in base64, plus room for the
// other fields.
func base64Len(n int64) int64 { return (n+2)/3*4 + 64<<10 }

func client(r *http.Request) signing.Client {
	return signing.Client{Certificate: r.TLS.PeerCertificates[0]}
}

func (h *signingHandlers) sign(w http.ResponseWriter, r *http.Request) error {
	var req api.SignatureRequest
	if err := decodeJSON(w, r, base64Len(h.svc.MaxDocument()), &req); err != nil {
		return err
	}
	sreq := signing.Request{Profile: req.Profile, Document: req.Document, Detached: req.Detached, Visible: req.Visible}
	if req.Digest != "" {
		d, err := hex.DecodeString(req.Digest)
		if err != nil {
			return invalidField("/digest", "not hexadecimal")
		}
		sreq.Digest = d
	}
	res, err := h.svc.Sign(r.Context(), client(r), sreq)
	if err != nil {
		return err
	}
	out := api.SignatureResponse{
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
	return nil
}

func (h *signingHandlers) batch(w http.ResponseWriter, r *http.Request) error {
	var req api.BatchRequest
	if err := decodeJSON(w, r, int64(h.svc.MaxBatch())*140+4<<10, &req); err != nil {
		return err
	}
	digests := make([][]byte, len(req.Digests))
	for i, d := range req.Digests {
		b, err := hex.DecodeString(d)
		if err != nil {
			return invalidField(fmt.Sprintf("/digests/%d", i), "not hexadecimal")
		}
		digests[i] = b
	}
	res, err := h.svc.SignDigests(r.Context(), client(r), req.Profile, digests)
	if err != nil {
		return err
	}
	out := api.BatchResponse{ID: res.ID, Profile: res.Profile, Signatures: make([]api.BatchSignature, len(res.Signatures))}
	for i, s := range res.Signatures {
		out.Signatures[i] = api.BatchSignature{Digest: req.Digests[i], Signature: s.DER, SigningTime: s.SigningTime}
		if s.Timestamp != nil {
			out.Signatures[i].TimestampTime = s.Timestamp.GenTime.UTC()
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *signingHandlers) verify(w http.ResponseWriter, r *http.Request) error {
	var req api.VerificationRequest
	limit := int64(signing.DefaultMaxDocumentBytes)
	if h.svc != nil {
		limit = h.svc.MaxDocument()
	}
	if err := decodeJSON(w, r, 2*base64Len(limit), &req); err != nil {
		return err
	}
	if len(req.Signature) == 0 {
		return invalidField("/signature", "required")
	}
	opts := signing.VerifyOptions{Data: req.Data}
	if req.Digest != "" {
		hash, ok := signing.HashByName(cmpOr(req.DigestAlgorithm, "sha256"))
		d, err := hex.DecodeString(req.Digest)
		if !ok || err != nil || len(d) != hash.Size() {
			return invalidField("/digest", "want the hexadecimal digest of the data with digest_algorithm sha256, sha384 or sha512")
		}
		opts.Digest, opts.Hash = d, hash
	}
	for i, c := range req.Certificates {
		certs, err := certvalidation.ParseCertificates(c)
		if err != nil {
			return invalidField(fmt.Sprintf("/certificates/%d", i), "not a DER or PEM certificate")
		}
		opts.Certificates = append(opts.Certificates, certs...)
	}
	report, err := h.verifier.Verify(r.Context(), req.Signature, opts)
	if err != nil {
		return err
	}
	// A report is the answer, whatever its indication: the request was
	// understood and processed.
	writeJSON(w, http.StatusOK, report)
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// decodeJSON reads a JSON request body of at most limit bytes into v,
// strictly: unknown fields and trailing data are errors.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != api.MediaJSON {
		return refuse(api.TypeUnsupportedMediaType, "content type must be application/json")
	}
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return tooLarge(limit)
	}
	// encoding/json's messages name the field and the offset, nothing of
	// ours: safe to return.
	return refuse(api.TypeMalformedRequest, "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
}
