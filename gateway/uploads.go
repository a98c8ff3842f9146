package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"pec/gateway/api"
	"pec/middleoffice"
)

// Resumable uploads (middleoffice.Uploads) of large documents, before the
// submission that names them (a document's "upload"), over mutual TLS:
//
//	POST   /v1/uploads        {"size": N, "sha256": HEX}: 201, the upload (Location, Upload-Offset: 0)
//	PATCH  /v1/uploads/{id}   Upload-Offset: N, the bytes from N on (application/offset+octet-stream
//	                          or application/octet-stream): 200, the upload and its new Upload-Offset
//	GET    /v1/uploads/{id}   (and HEAD) the upload, Upload-Offset: where to resume
//	DELETE /v1/uploads/{id}   204
//
// After a failed PATCH the client asks where the upload is (GET or HEAD)
// and goes on from there: every byte answered is durable. The shape
// follows the tus resumable upload protocol's core (Upload-Offset, PATCH
// at the offset, 409 on a wrong one), without its discovery headers.

// UploadOffsetHeader carries an upload's offset.
const uploadOffsetHeader = "Upload-Offset"

type uploadHandlers struct {
	uploads *middleoffice.Uploads
	x       *middleoffice.Exchanges
	pol     *middleoffice.Policy
}

func registerUploads(v1 *http.ServeMux, m *metrics, e *edge, pol *middleoffice.Policy, x *middleoffice.Exchanges, uploads *middleoffice.Uploads) {
	h := &uploadHandlers{uploads: uploads, x: x, pol: pol}
	op := operation{name: "upload", outcome: "ask the upload (GET /v1/uploads/{id}) where it stands"}
	route := func(pattern, name string, f func(http.ResponseWriter, *http.Request) error) {
		v1.Handle(pattern, m.instrument(name, e.handle(op, f)))
	}
	route("POST /v1/uploads", "/v1/uploads", h.create)
	route("GET /v1/uploads/{id}", "/v1/uploads/{id}", h.status)
	route("PATCH /v1/uploads/{id}", "/v1/uploads/{id}", h.append)
	route("DELETE /v1/uploads/{id}", "/v1/uploads/{id}", h.delete)
}

func writeUpload(w http.ResponseWriter, status int, up *middleoffice.Upload) {
	w.Header().Set(uploadOffsetHeader, strconv.FormatInt(up.Offset, 10))
	writeJSON(w, status, up)
}

func (h *uploadHandlers) create(w http.ResponseWriter, r *http.Request) error {
	var req api.UploadRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		return err
	}
	up, err := h.uploads.Create(r.Context(), principal(h.pol, r), req.Size, req.SHA256, h.x.MaxDocumentSize())
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/uploads/"+up.ID)
	writeUpload(w, http.StatusCreated, up)
	return nil
}

func (h *uploadHandlers) status(w http.ResponseWriter, r *http.Request) error {
	up, err := h.uploads.Status(r.Context(), principal(h.pol, r), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeUpload(w, http.StatusOK, up)
	return nil
}

func (h *uploadHandlers) append(w http.ResponseWriter, r *http.Request) error {
	switch ct := r.Header.Get("Content-Type"); ct {
	case "application/offset+octet-stream", "application/octet-stream":
	default:
		return refuse(api.TypeUnsupportedMediaType, "content type must be application/offset+octet-stream (or application/octet-stream)")
	}
	offset, err := strconv.ParseInt(r.Header.Get(uploadOffsetHeader), 10, 64)
	if err != nil || offset < 0 {
		return refuse(api.TypeInvalidRequest, "Upload-Offset: the offset the bytes start at is required (GET the upload to know it)")
	}
	body := &progressReader{r: r.Body, rc: http.NewResponseController(w)}
	body.extend()
	up, err := h.uploads.Append(r.Context(), principal(h.pol, r), r.PathValue("id"), offset, body)
	if up != nil {
		w.Header().Set(uploadOffsetHeader, strconv.FormatInt(up.Offset, 10))
	}
	if err != nil {
		if r.Context().Err() == nil && up != nil && !errors.As(err, new(*middleoffice.OffsetError)) && !errors.As(err, new(*middleoffice.UploadError)) {
			// The body failed: what came is kept; the client resumes.
			return refuse(api.TypeIncompleteSubmission, "the body ended at offset "+strconv.FormatInt(up.Offset, 10)+": resume from there")
		}
		return err
	}
	writeUpload(w, http.StatusOK, up)
	return nil
}

func (h *uploadHandlers) delete(w http.ResponseWriter, r *http.Request) error {
	if err := h.uploads.Delete(r.Context(), principal(h.pol, r), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
