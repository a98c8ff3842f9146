package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"

	"pec/internal/cms"
	"pec/tsa"
)

// Timestamper obtains RFC 3161 time-stamp tokens for the signature
// timestamps of CAdES and PAdES B-T. A *tsa.Client (a TSA over HTTP)
// satisfies it; [LocalTSA] adapts the node's own *tsa.Authority.
type Timestamper interface {
	// Request returns a granted token over digest, computed with h. A TSA's
	// refusal is a *tsa.RejectError. It is safe for concurrent use.
	Request(ctx context.Context, h crypto.Hash, digest []byte, opts tsa.RequestOptions) (*tsa.Result, error)
}

var _ Timestamper = (*tsa.Client)(nil)

// LocalTSA is the node's own time-stamping authority called in-process: no
// HTTP, and the authority's serial numbers and clock guard apply as for any
// other client. Its tokens are recorded as evidence by the signature they
// time-stamp (Service records the token's digest), not by the authority.
type LocalTSA struct {
	Authority *tsa.Authority
}

var _ Timestamper = LocalTSA{}

// Request builds a TimeStampReq (RFC 3161 section 2.4.1) with a nonce and
// certReq, has the authority answer it, and checks that the token answers
// it.
func (l LocalTSA) Request(ctx context.Context, h crypto.Hash, digest []byte, opts tsa.RequestOptions) (*tsa.Result, error) {
	hashOID := cms.OIDOfHash(h)
	if hashOID == nil || len(digest) != h.Size() {
		return nil, fmt.Errorf("signing: timestamp: a %v digest of %d bytes", h, len(digest))
	}
	if opts.Policy != "" {
		return nil, errors.New("signing: timestamp: the local TSA issues its default policy only")
	}
	imprint := tlv(tagSequence, algorithmID(hashOID, nil), tlv(tagOctetString, digest))
	body := [][]byte{{tagInteger, 1, 1}, imprint}
	var nonce *big.Int
	if !opts.NoNonce {
		var err error
		// 64 random bits, positive: RFC 3161 section 2.4.1.
		if nonce, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63)); err != nil {
			return nil, fmt.Errorf("signing: timestamp: nonce: %w", err)
		}
		body = append(body, mustMarshal(nonce))
	}
	if !opts.NoCert {
		body = append(body, []byte{tagBoolean, 1, 0xff})
	}
	// Unrecorded: the signature's own record names this token (one
	// durable write for a B-T signature, not two).
	// The token as the authority built it, not parsed again from resp
	// (its certificates above all).
	resp, tok, _, err := l.Authority.RespondToken(ctx, tlv(tagSequence, body...), tsa.RespondOptions{Unrecorded: true})
	if err != nil {
		return nil, err // a *tsa.RejectError when refused
	}
	if tok.Hash != h || !bytes.Equal(tok.Imprint, digest) {
		return nil, fmt.Errorf("%w: the token stamps another imprint", tsa.ErrResponseMismatch)
	}
	if nonce != nil && (tok.Nonce == nil || tok.Nonce.Cmp(nonce) != 0) {
		return nil, fmt.Errorf("%w: the nonce is not echoed", tsa.ErrResponseMismatch)
	}
	return &tsa.Result{Response: resp, Token: tok}, nil
}
