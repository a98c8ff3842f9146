package proof

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/digitorus/timestamp"

	"pec/tsa"
)

// Timestamper obtains RFC 3161 time-stamp tokens.
type Timestamper interface {
	// Timestamp returns a TimeStampToken (the DER ContentInfo, RFC 3161
	// section 2.4.2) on a SHA-256 digest. It is safe for concurrent use.
	Timestamp(ctx context.Context, sha256Digest []byte) ([]byte, error)
}

// AuthorityTimestamper stamps with an in-process authority.
type AuthorityTimestamper struct{ Authority *tsa.Authority }

// Timestamp implements Timestamper.
func (a AuthorityTimestamper) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true}).Marshal()
	if err != nil {
		return nil, fmt.Errorf("proof: timestamp request: %w", err)
	}
	resp, err := a.Authority.Respond(ctx, req)
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

// TimestampRecorder records every token a TSA issues as evidence
// (TimestampIssued): the imprint, the SHA-256 of the token, the serial
// number and the policy. It is a tsa.Recorder; with a tsa.Journal before
// it, the operator's journal and the evidence log both hold the token.
type TimestampRecorder struct {
	Log *Log
}

var hashNames = map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}

// Record implements tsa.Recorder. The tokens of the log's own checkpoints
// (see [Sealing]) are not recorded.
func (r TimestampRecorder) Record(ctx context.Context, issued *tsa.Issued) error {
	if Sealing(ctx) {
		return nil
	}
	rec := &Record{
		Type:    TimestampIssued,
		Time:    issued.GenTime,
		Subject: "tsa-serial-" + issued.Serial.Text(16),
		Digests: []Digest{
			{Name: "imprint", Algorithm: hashNames[issued.Hash], Value: bytes.Clone(issued.Imprint)},
			{Name: "token", Algorithm: "sha256", Value: bytes.Clone(issued.TokenSHA256[:])},
		},
		Attributes: []Attribute{{Key: "policy", Value: issued.Policy.String()}, {Key: "serial", Value: issued.Serial.Text(16)}},
	}
	_, err := r.Log.Append(ctx, rec)
	return err
}

var (
	_ tsa.Recorder = TimestampRecorder{}
	_ Timestamper  = AuthorityTimestamper{}
	_ Timestamper  = ClientTimestamper{}
)
