package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"pec/certvalidation"
	"pec/middleoffice"
	"pec/signing"
)

// Media types of the wire.
const (
	MediaJSON           = "application/json"
	MediaProblem        = "application/problem+json"
	MediaMergePatch     = "application/merge-patch+json" // RFC 7396
	MediaTimestampQuery = "application/timestamp-query"  // RFC 3161 section 3.4
	MediaTimestampReply = "application/timestamp-reply"
)

// Answer bounds: what a client reads of one answer at most.
const (
	MaxJSONAnswer   = 1 << 30 // a signed document travels in base64
	MaxBundleAnswer = 1 << 30
	maxProblem      = 64 << 10
)

// ErrTooLarge: an answer was larger than the client reads.
var ErrTooLarge = errors.New("api: the answer is larger than the client reads")

// ErrUnexpected: an answer was not what the API sends (not JSON of the
// expected shape, a missing field).
var ErrUnexpected = errors.New("api: the answer is not what the API sends")

// Client calls one node: the JSON API under /v1 (with an HTTPClient that
// presents a client certificate), or the published log of its tsa
// listener (any HTTPClient). Every method returns an *Error when the node
// answers with an error, and the transport's error when it does not
// answer. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient is a client of the node at base (http:// or https://HOST:PORT;
// a trailing /v1 is accepted). hc nil: http.DefaultClient.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("api: %q is not an http:// or https:// URL of a node", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	b := strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), "/v1")
	return &Client{base: b, hc: hc}, nil
}

// URL is the absolute URL of path ("/v1/whoami").
func (c *Client) URL(path string) string { return c.base + path }

// do sends one request and returns the answer of status want, its body
// read up to limit bytes. Any other answer is an *Error.
func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, limit int64, want ...int) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	ok := len(want) == 0 && resp.StatusCode/100 == 2
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
		return nil, nil, answerError(resp, data)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("api: read the answer: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, nil, fmt.Errorf("%w: %s %s: over %d bytes", ErrTooLarge, method, path, limit)
	}
	return resp, data, nil
}

// answerError makes the *Error of an error answer.
func answerError(resp *http.Response, body []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var p Problem
	if json.Unmarshal(body, &p) == nil && p.Type != "" {
		e.Problem = p
		return e
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 512 {
		text = text[:512] + "..."
	}
	e.text = text
	return e
}

// call is c.call decoding into a new T.
func call[T any](ctx context.Context, c *Client, method, path, contentType string, in any) (*T, error) {
	var out T
	if _, err := c.call(ctx, method, path, contentType, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// call sends in as JSON (nil: no body) and decodes a 2xx answer into out.
func (c *Client) call(ctx context.Context, method, path, contentType string, in, out any) (http.Header, error) {
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		if contentType == "" {
			contentType = MediaJSON
		}
	}
	resp, data, err := c.do(ctx, method, path, contentType, body, MaxJSONAnswer)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnexpected, err)
	}
	return resp.Header, nil
}

// Whoami is GET /v1/whoami.
func (c *Client) Whoami(ctx context.Context) (*Identity, error) {
	return call[Identity](ctx, c, http.MethodGet, "/v1/whoami", "", nil)
}

// Sign is POST /v1/signatures.
func (c *Client) Sign(ctx context.Context, req SignatureRequest) (*SignatureResponse, error) {
	var res SignatureResponse
	if _, err := c.call(ctx, http.MethodPost, "/v1/signatures", "", req, &res); err != nil {
		return nil, err
	}
	if len(res.Signature) == 0 {
		return nil, fmt.Errorf("%w: no signature", ErrUnexpected)
	}
	return &res, nil
}

// SignBatch is POST /v1/signatures/batch.
func (c *Client) SignBatch(ctx context.Context, req BatchRequest) (*BatchResponse, error) {
	var res BatchResponse
	if _, err := c.call(ctx, http.MethodPost, "/v1/signatures/batch", "", req, &res); err != nil {
		return nil, err
	}
	if len(res.Signatures) != len(req.Digests) {
		return nil, fmt.Errorf("%w: %d signatures for %d digests", ErrUnexpected, len(res.Signatures), len(req.Digests))
	}
	return &res, nil
}

// Verify is POST /v1/verifications: the report, whatever its indication.
func (c *Client) Verify(ctx context.Context, req VerificationRequest) (*signing.Report, error) {
	return call[signing.Report](ctx, c, http.MethodPost, "/v1/verifications", "", req)
}

// Validate is POST /v1/validations: the report, valid or not.
func (c *Client) Validate(ctx context.Context, req ValidationRequest) (*certvalidation.Report, error) {
	return call[certvalidation.Report](ctx, c, http.MethodPost, "/v1/validations", "", req)
}

// Timestamp is POST /v1/timestamps: the DER TimeStampResp of a DER
// TimeStampReq (granted or a rejection, RFC 3161 section 2.4.2) and the
// id of its evidence. An answer other than 200 is an *Error (its body, a
// rejection TimeStampResp, is not kept).
func (c *Client) Timestamp(ctx context.Context, query []byte) (reply []byte, evidenceID string, err error) {
	resp, data, err := c.do(ctx, http.MethodPost, "/v1/timestamps", MediaTimestampQuery, query, 1<<20, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	return data, resp.Header.Get(EvidenceHeader), nil
}

// Proof is GET /v1/proofs/{id}: the proof bundle (a ZIP, see package
// proof) and the id of the proof.read record of this read.
func (c *Client) Proof(ctx context.Context, id string) (bundle []byte, readID string, err error) {
	resp, data, err := c.do(ctx, http.MethodGet, "/v1/proofs/"+url.PathEscape(id), "", nil, MaxBundleAnswer, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	return data, resp.Header.Get(EvidenceHeader), nil
}

// Partners is GET /v1/partners.
func (c *Client) Partners(ctx context.Context) (*PartnerList, error) {
	return call[PartnerList](ctx, c, http.MethodGet, "/v1/partners", "", nil)
}

// Partner is GET /v1/partners/{id}.
func (c *Client) Partner(ctx context.Context, id string) (*middleoffice.Partner, error) {
	return call[middleoffice.Partner](ctx, c, http.MethodGet, "/v1/partners/"+url.PathEscape(id), "", nil)
}

// AddPartner is POST /v1/partners: the partner added, with its evidence
// id.
func (c *Client) AddPartner(ctx context.Context, p middleoffice.Partner) (*middleoffice.Partner, error) {
	return call[middleoffice.Partner](ctx, c, http.MethodPost, "/v1/partners", MediaJSON, p)
}

// ReplacePartner is PUT /v1/partners/{id}, id being p's.
func (c *Client) ReplacePartner(ctx context.Context, p middleoffice.Partner) (*middleoffice.Partner, error) {
	return call[middleoffice.Partner](ctx, c, http.MethodPut, "/v1/partners/"+url.PathEscape(p.ID), MediaJSON, p)
}

// PatchPartner is PATCH /v1/partners/{id} with a JSON merge patch (RFC
// 7396): patch is marshalled to JSON (a map of the members to change; nil
// values remove them).
func (c *Client) PatchPartner(ctx context.Context, id string, patch any) (*middleoffice.Partner, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return call[middleoffice.Partner](ctx, c, http.MethodPatch, "/v1/partners/"+url.PathEscape(id), MediaMergePatch, body)
}

// SetPartnerDisabled is POST /v1/partners/{id}/disable, or enable.
func (c *Client) SetPartnerDisabled(ctx context.Context, id string, disabled bool) (*middleoffice.Partner, error) {
	verb := "/disable"
	if !disabled {
		verb = "/enable"
	}
	return call[middleoffice.Partner](ctx, c, http.MethodPost, "/v1/partners/"+url.PathEscape(id)+verb, "", nil)
}

// The published log, on the tsa listener: no client certificate.

// Checkpoint is GET /checkpoint: the newest checkpoint, a signed note, of
// at most limit bytes.
func (c *Client) Checkpoint(ctx context.Context, limit int64) ([]byte, error) {
	return c.published(ctx, "/checkpoint", limit)
}

// CheckpointToken is GET /checkpoints/{size}.tst: the RFC 3161 token on the
// checkpoint of that size.
func (c *Client) CheckpointToken(ctx context.Context, size uint64, limit int64) ([]byte, error) {
	return c.published(ctx, "/checkpoints/"+strconv.FormatUint(size, 10)+".tst", limit)
}

// Tile is GET /{path}: a hash tile of c2sp.org/tlog-tiles ("tile/0/001.p/5").
func (c *Client) Tile(ctx context.Context, path string, limit int64) ([]byte, error) {
	return c.published(ctx, "/"+strings.TrimPrefix(path, "/"), limit)
}

// ConsistencyProof is GET /proof/consistency?old=&new=, its body as sent:
// a verifier parses it strictly (the sizes, the hashes' count and length)
// before it believes any of it.
func (c *Client) ConsistencyProof(ctx context.Context, oldSize, newSize uint64, limit int64) ([]byte, error) {
	return c.published(ctx, fmt.Sprintf("/proof/consistency?old=%d&new=%d", oldSize, newSize), limit)
}

// LogCertificates is GET /log-certificates: the certificates of the log's
// checkpoint keys (PEM), the current key's first, each followed by its
// chain, of at most limit bytes. Nothing in it is trusted before it
// chains to the caller's roots.
func (c *Client) LogCertificates(ctx context.Context, limit int64) ([]byte, error) {
	return c.published(ctx, "/log-certificates", limit)
}

func (c *Client) published(ctx context.Context, path string, limit int64) ([]byte, error) {
	_, data, err := c.do(ctx, http.MethodGet, path, "", nil, limit, http.StatusOK)
	return data, err
}
