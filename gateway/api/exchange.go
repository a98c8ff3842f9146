package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"pec/middleoffice"
)

// The exchange, over mutual TLS (see gateway/openapi.yaml):
//
//	POST /v1/exchanges                    submit: multipart/form-data (or multipart/mixed), part "manifest"
//	                                      (application/json, a middleoffice.Manifest) first, then one part per
//	                                      document in the manifest's order; streamed, never whole in memory.
//	                                      201 (200 for a replay of the same Idempotency-Key) + Submission
//	GET  /v1/exchanges/{id}               the exchange and its events (sender, or recipient once delivered)
//	GET  /v1/exchanges/{id}/receipt       the sender's acknowledgment of receipt (CMS, DER)
//	GET  /v1/inbox?after=ID&limit=N       the recipient's delivered exchanges not yet acknowledged
//	GET  /v1/exchanges/{id}/seal          the platform's seal (CMS with the sealed manifest attached)
//	GET  /v1/exchanges/{id}/delivery      the seal and every encrypted document: multipart/mixed, recorded
//	                                      (delivery.retrieved, id in PEC-Evidence-ID)
//	GET  /v1/exchanges/{id}/documents/{n} one encrypted document (Range requests served), recorded
//	POST /v1/exchanges/{id}/ack           the recipient's signed acknowledgment or refusal (AckRequest)
//	GET  /v1/exchanges/{id}/proof         one proof bundle of every step (recorded: proof.read)

// Media types of the exchange.
const (
	MediaMultipartForm  = "multipart/form-data"
	MediaMultipartMixed = "multipart/mixed"
	// MediaCMS is a DER CMS ContentInfo (RFC 8551 section 3.2.1 media
	// type, with the smime-type parameter naming its content).
	MediaCMS          = "application/pkcs7-mime"
	MediaCMSSigned    = MediaCMS + "; smime-type=signed-data"
	MediaCMSEnveloped = MediaCMS + "; smime-type=authEnveloped-data"
)

// IdempotencyHeader carries a submission's idempotency key
// (draft-ietf-httpapi-idempotency-key-header); the manifest's
// idempotency_key is the same thing, and both may not differ.
const IdempotencyHeader = "Idempotency-Key"

// ManifestPart and DocumentPart are the form names of a submission's
// parts (multipart/form-data); in multipart/mixed the first part is the
// manifest and the others its documents, whatever their names.
const (
	ManifestPart = "manifest"
	DocumentPart = "document"
)

// Submission is the answer of POST /v1/exchanges: the exchange id, and the
// acknowledgment of receipt — the submission.accepted record (EvidenceID)
// attached to the platform's CAdES signature, which `openssl cms -verify`
// checks.
type Submission struct {
	Exchange    string    `json:"exchange"`
	EvidenceID  string    `json:"evidence_id"`
	SubmittedAt time.Time `json:"submitted_at"`
	Receipt     []byte    `json:"receipt"` // DER CMS SignedData, base64
	// Replayed: the answer of an earlier submission with the same
	// idempotency key; the documents sent this time were not read.
	Replayed bool `json:"replayed,omitempty"`
}

// Inbox is the body of GET /v1/inbox: a page of exchanges, oldest first;
// Next, when not empty, is the after= of the next page.
type Inbox struct {
	Exchanges []middleoffice.Exchange `json:"exchanges"`
	Next      string                  `json:"next,omitempty"`
}

// AckRequest is the body of POST /v1/exchanges/{id}/ack (application/json);
// a bare DER CMS (application/pkcs7-mime) is Signed alone.
type AckRequest struct {
	// Signed is the recipient's CMS SignedData over the sealed manifest
	// (the content of the seal, byte for byte), attached or detached.
	Signed []byte `json:"signed,omitempty"`
	// Reject, when not empty, refuses the dossier for this reason.
	Reject string `json:"reject,omitempty"`
}

// UploadRequest is the body of POST /v1/uploads: the document's declared
// size and SHA-256 (hexadecimal), as its manifest will declare them.
type UploadRequest struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Upload is a document of a submission, in the manifest's order.
type Upload struct {
	Name    string // the part's file name
	Content io.Reader
}

// Submit is POST /v1/exchanges: the manifest, then the documents
// streamed from their readers (sizes and digests as the manifest
// declares them), as multipart/form-data. key, when not empty, is sent as
// the Idempotency-Key.
func (c *Client) Submit(ctx context.Context, m middleoffice.Manifest, key string, docs []Upload) (*Submission, error) {
	manifest, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeSubmission(mw, manifest, docs))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/exchanges", pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if key != "" {
		req.Header.Set(IdempotencyHeader, key)
	}
	var out Submission
	if _, err := c.decode(req, &out, http.StatusCreated, http.StatusOK); err != nil {
		pr.CloseWithError(err)
		return nil, err
	}
	return &out, nil
}

func writeSubmission(mw *multipart.Writer, manifest []byte, docs []Upload) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="`+ManifestPart+`"`)
	h.Set("Content-Type", MediaJSON)
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(manifest); err != nil {
		return err
	}
	for _, d := range docs {
		w, err := mw.CreateFormFile(DocumentPart, d.Name)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, d.Content); err != nil {
			return err
		}
	}
	return mw.Close()
}

// Exchange is GET /v1/exchanges/{id}.
func (c *Client) Exchange(ctx context.Context, id string) (*middleoffice.Exchange, error) {
	return call[middleoffice.Exchange](ctx, c, http.MethodGet, "/v1/exchanges/"+url.PathEscape(id), "", nil)
}

// Receipt is GET /v1/exchanges/{id}/receipt: the acknowledgment of
// receipt (DER).
func (c *Client) Receipt(ctx context.Context, id string) ([]byte, error) {
	_, data, err := c.do(ctx, http.MethodGet, "/v1/exchanges/"+url.PathEscape(id)+"/receipt", "", nil, 1<<20, http.StatusOK)
	return data, err
}

// Inbox is GET /v1/inbox: after "" for the first page; limit 0 for the
// node's default.
func (c *Client) Inbox(ctx context.Context, after string, limit int) (*Inbox, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/inbox"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return call[Inbox](ctx, c, http.MethodGet, path, "", nil)
}

// Seal is GET /v1/exchanges/{id}/seal: the platform's seal (DER).
func (c *Client) Seal(ctx context.Context, id string) ([]byte, error) {
	_, data, err := c.do(ctx, http.MethodGet, "/v1/exchanges/"+url.PathEscape(id)+"/seal", "", nil, 4<<20, http.StatusOK)
	return data, err
}

// DeliveryPart is one part of a fetched delivery: the seal first, then
// each document's envelope, named NAME.p7m after the document.
type DeliveryPart struct {
	Name    string // "seal.p7m", then the documents' names with ".p7m"
	Content io.Reader
}

// Delivery is GET /v1/exchanges/{id}/delivery: each part is handed to
// part in order, its content streamed (read it before returning); it
// returns the id of the delivery.retrieved record.
func (c *Client) Delivery(ctx context.Context, id string, part func(DeliveryPart) error) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/exchanges/"+url.PathEscape(id)+"/delivery", nil)
	if err != nil {
		return "", fmt.Errorf("api: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
		return "", answerError(resp, data)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != MediaMultipartMixed || params["boundary"] == "" {
		return "", fmt.Errorf("%w: the delivery is not multipart/mixed", ErrUnexpected)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("api: read the delivery: %w", err)
		}
		if err := part(DeliveryPart{Name: p.FileName(), Content: p}); err != nil {
			return "", err
		}
	}
	return resp.Header.Get(EvidenceHeader), nil
}

// ExchangeProof is GET /v1/exchanges/{id}/proof: the proof bundle of
// every step of the exchange, and the id of the read's record.
func (c *Client) ExchangeProof(ctx context.Context, id string) (bundle []byte, readID string, err error) {
	resp, data, err := c.do(ctx, http.MethodGet, "/v1/exchanges/"+url.PathEscape(id)+"/proof", "", nil, MaxBundleAnswer, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	return data, resp.Header.Get(EvidenceHeader), nil
}

// Ack is POST /v1/exchanges/{id}/ack: the event recorded.
func (c *Client) Ack(ctx context.Context, id string, req AckRequest) (*middleoffice.Event, error) {
	return call[middleoffice.Event](ctx, c, http.MethodPost, "/v1/exchanges/"+url.PathEscape(id)+"/ack", MediaJSON, req)
}

// decode sends req and decodes an answer of one of the statuses want
// into out.
func (c *Client) decode(req *http.Request, out any, want ...int) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
		return nil, answerError(resp, data)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxJSONAnswer))
	if err != nil {
		return nil, fmt.Errorf("api: read the answer: %w", err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnexpected, err)
	}
	return resp, nil
}

// CreateUpload is POST /v1/uploads: a resumable upload of size bytes of
// SHA-256 sum (hexadecimal).
func (c *Client) CreateUpload(ctx context.Context, size int64, sum string) (*middleoffice.Upload, error) {
	return call[middleoffice.Upload](ctx, c, http.MethodPost, "/v1/uploads", MediaJSON, UploadRequest{Size: size, SHA256: sum})
}

// UploadStatus is GET /v1/uploads/{id}: where the upload stands.
func (c *Client) UploadStatus(ctx context.Context, id string) (*middleoffice.Upload, error) {
	return call[middleoffice.Upload](ctx, c, http.MethodGet, "/v1/uploads/"+url.PathEscape(id), "", nil)
}

// AppendUpload is PATCH /v1/uploads/{id}: n bytes of r at offset.
func (c *Client) AppendUpload(ctx context.Context, id string, offset int64, r io.Reader, n int64) (*middleoffice.Upload, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, c.base+"/v1/uploads/"+url.PathEscape(id), io.LimitReader(r, n))
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	var out middleoffice.Upload
	if _, err := c.decode(req, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}
