package proof

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/digitorus/timestamp"

	"pec/tsa"
)

// AuthorityTimestamper stamps checkpoints with an in-process authority.
// The tokens are not recorded as evidence of their own (the checkpoint
// carries its token): the authority does not learn about the log.
type AuthorityTimestamper struct{ Authority *tsa.Authority }

// Timestamp implements Timestamper.
func (a AuthorityTimestamper) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true}).Marshal()
	if err != nil {
		return nil, fmt.Errorf("proof: timestamp request: %w", err)
	}
	resp, _, err := a.Authority.RespondWith(ctx, req, tsa.RespondOptions{Unrecorded: true})
	if err != nil {
		return nil, fmt.Errorf("proof: timestamp: %w", err)
	}
	tok, err := tsa.ParseToken(resp)
	if err != nil {
		return nil, fmt.Errorf("proof: timestamp: %w", err)
	}
	return tok.Raw, nil
}

// ClientTimestamper stamps with a remote TSA.
type ClientTimestamper struct{ Client *tsa.Client }

// Timestamp implements Timestamper.
func (c ClientTimestamper) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	res, err := c.Client.Request(ctx, crypto.SHA256, digest, tsa.RequestOptions{})
	if err != nil {
		return nil, fmt.Errorf("proof: timestamp: %w", err)
	}
	if res.Token == nil {
		return nil, errors.New("proof: timestamp: no token")
	}
	return res.Token.Raw, nil
}

var (
	_ Timestamper = AuthorityTimestamper{}
	_ Timestamper = ClientTimestamper{}
)
