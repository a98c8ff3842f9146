package tsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"time"

	"github.com/digitorus/timestamp"
)

// Client requests time-stamp tokens from a TSA over HTTP (RFC 3161 section
// 3.4). It is safe for concurrent use.
type Client struct {
	URL        string       // the TSA's endpoint
	HTTPClient *http.Client // nil: a client with a 30s timeout
}

// RequestOptions shape the TimeStampReq (RFC 3161 section 2.4.1). The zero
// value asks for a nonce and the TSA certificate.
type RequestOptions struct {
	NoNonce bool   // send no nonce
	NoCert  bool   // leave certReq false: the token will carry no certificate
	Policy  string // the TSA policy OID to ask for, dotted; "" for the TSA's default
}

// Result is a granted response.
type Result struct {
	Response []byte // the DER TimeStampResp as received
	Token    *Token

	// EvidenceID is the id of the evidence record of the token, from the
	// PEC-Evidence-ID response header of a PEC node keeping an evidence
	// log: what `pec proof export` and GET /v1/proofs/{id} take. It is ""
	// when the header is absent (another TSA) or is not 1 to 128
	// characters of A-Z a-z 0-9 . _ : - (the evidence id syntax), so that
	// a hostile header cannot reach a terminal.
	EvidenceID string
}

// EvidenceIDHeader is the response header in which a PEC node names the
// evidence record of the token it answers.
const EvidenceIDHeader = "PEC-Evidence-ID"

// maxResponseBytes bounds a TSA's response. A token with a certificate
// chain is a few kilobytes.
const maxResponseBytes = 1 << 20

// ErrResponseMismatch: the TSA's token does not answer the request sent
// (another imprint, nonce or policy, or a missing certificate).
var ErrResponseMismatch = errors.New("tsa: the response does not answer the request")

var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// Request asks the TSA to time-stamp digest, computed with h (SHA-256,
// SHA-384 or SHA-512). It checks that the response answers the request
// (RFC 3161 section 2.4.2): granted, the same imprint, the nonce echoed,
// the policy asked for, and, when certReq was set, the signer certificate
// present, named by the signing-certificate attribute and verifying the
// signature. It does not check the certificate's chain: that is [Verify]'s.
//
// A TSA's refusal is a *RejectError, also with an HTTP error status; a
// token that does not answer the request wraps ErrResponseMismatch, or an
// error of [Verify] for its signature.
func (c *Client) Request(ctx context.Context, h crypto.Hash, digest []byte, opts RequestOptions) (*Result, error) {
	if err := strongHash(h, "imprint"); err != nil {
		return nil, err
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("tsa: request: a %v digest has %d bytes, not %d", h, h.Size(), len(digest))
	}
	req := timestamp.Request{HashAlgorithm: h, HashedMessage: digest, Certificates: !opts.NoCert}
	if opts.Policy != "" {
		policy, err := parseOID(opts.Policy)
		if err != nil {
			return nil, fmt.Errorf("tsa: request: policy: %w", err)
		}
		req.TSAPolicyOID = policy
	}
	if !opts.NoNonce {
		// 64 random bits: RFC 3161 section 2.4.1 wants a nonce large
		// enough not to repeat.
		nonce, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
		if err != nil {
			return nil, fmt.Errorf("tsa: request: nonce: %w", err)
		}
		req.Nonce = nonce
	}
	der, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("tsa: request: encode: %w", err)
	}

	body, eid, err := c.post(ctx, der)
	if err != nil {
		return nil, err
	}
	token, err := responseToken(body)
	if err != nil {
		return nil, err
	}
	p, err := parseContentInfo(token)
	if err != nil {
		return nil, err
	}
	if err := p.answers(&req); err != nil {
		return nil, err
	}
	return &Result{Response: body, Token: p.tok, EvidenceID: eid}, nil
}

// evidenceID is the PEC-Evidence-ID header's value if it is an evidence
// id, "" otherwise.
func evidenceID(h http.Header) string {
	v := h.Values(EvidenceIDHeader)
	if len(v) != 1 || len(v[0]) == 0 || len(v[0]) > 128 {
		return ""
	}
	for i := 0; i < len(v[0]); i++ {
		c := v[0][i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return ""
		}
	}
	return v[0]
}

// post sends a DER TimeStampReq and returns the DER TimeStampResp and the
// evidence id the TSA named, if any.
func (c *Client) post(ctx context.Context, der []byte) ([]byte, string, error) {
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(der))
	if err != nil {
		return nil, "", fmt.Errorf("tsa: %w", err)
	}
	httpReq.Header.Set("Content-Type", "application/timestamp-query")
	httpReq.Header.Set("Accept", "application/timestamp-reply")
	resp, err := hc.Do(httpReq)
	if err != nil {
		return nil, "", fmt.Errorf("tsa: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("tsa: read response: %w", err)
	}
	if len(body) > maxResponseBytes {
		return nil, "", fmt.Errorf("tsa: response larger than %d bytes", maxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		// Some TSAs send their rejection with an error status.
		if _, err := responseToken(body); err != nil {
			if rej, ok := errors.AsType[*RejectError](err); ok {
				return nil, "", rej
			}
		}
		return nil, "", fmt.Errorf("tsa: %s answered HTTP %s", c.URL, resp.Status)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/timestamp-reply" {
		return nil, "", fmt.Errorf("tsa: response content type %q, want application/timestamp-reply", ct)
	}
	return body, evidenceID(resp.Header), nil
}

// answers checks that the token answers req (RFC 3161 section 2.4.2).
func (p *parsedToken) answers(req *timestamp.Request) error {
	tok := p.tok
	if tok.Hash != req.HashAlgorithm || !bytes.Equal(tok.Imprint, req.HashedMessage) {
		return fmt.Errorf("%w: the token stamps another imprint", ErrResponseMismatch)
	}
	if req.Nonce != nil && (tok.Nonce == nil || tok.Nonce.Cmp(req.Nonce) != 0) {
		return fmt.Errorf("%w: the nonce is not echoed", ErrResponseMismatch)
	}
	if req.TSAPolicyOID != nil && !tok.Policy.Equal(asn1.ObjectIdentifier(req.TSAPolicyOID)) {
		return fmt.Errorf("%w: policy %v, asked for %v", ErrResponseMismatch, tok.Policy, req.TSAPolicyOID)
	}
	if !req.Certificates {
		return nil
	}
	// certReq: the certificate that the ESSCertID names MUST be in the
	// token. Checking the signature with it catches a damaged token now
	// rather than at verification.
	signer, err := p.signer(nil)
	if err != nil {
		return fmt.Errorf("%w: certReq was set, but the token does not carry the signer certificate", ErrResponseMismatch)
	}
	tok.SignerCert = signer
	if err := p.checkSignature(signer); err != nil {
		return err
	}
	return p.checkSigningCertificate(signer)
}
