package proof

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	"pec/signing"
)

// SignReceipt makes the individually signed receipt of an encoded record
// (ARCHITECTURE.md "Evidence and proof": an acknowledgment returned to a
// partner, a mail receipt): a CMS SignedData with the record attached, in
// the CAdES baseline profile of signer — B-T when the signer has a
// timestamper — which `openssl cms -verify` accepts. The record's Merkle
// proof goes alongside, in its bundle.
func SignReceipt(ctx context.Context, signer *signing.Signer, encoded []byte) ([]byte, error) {
	if _, err := UnmarshalRecord(encoded); err != nil {
		return nil, err
	}
	sig, err := signer.Sign(ctx, encoded, false)
	if err != nil {
		return nil, fmt.Errorf("proof: sign receipt: %w", err)
	}
	return sig.DER, nil
}

// SignatureRefused is the event of a refused signature request.
const SignatureRefused EventType = "signature.refused"

// SignatureRecorder keeps the evidence of package signing's operations in
// the log: a signing.EvidenceRecorder. The operation id becomes the
// evidence id when it is a valid one (the client then holds the id of its
// evidence), and the record's subject in any case.
type SignatureRecorder struct {
	Log *Log
}

var _ signing.EvidenceRecorder = SignatureRecorder{}

// Record implements signing.EvidenceRecorder: it returns once the record
// is durable.
func (r SignatureRecorder) Record(ctx context.Context, e *signing.Evidence) error {
	rec, err := SignatureRecord(e)
	if err != nil {
		return err
	}
	_, err = r.Log.Append(ctx, rec)
	return err
}

// SignatureRecord turns the evidence of a signature operation into a
// record.
func SignatureRecord(e *signing.Evidence) (*Record, error) {
	rec := &Record{Type: SignatureCreated, Time: e.Time, Subject: e.ID}
	if e.Event == signing.EventRefused {
		rec.Type = SignatureRefused
	}
	if validID(e.ID) {
		rec.ID = e.ID
	}
	client := Actor{Role: "client", Subject: e.Client}
	if fp, err := hex.DecodeString(e.ClientSHA256); err == nil && len(fp) == 32 {
		client.Fingerprint = [32]byte(fp)
	}
	rec.Actors = []Actor{client}
	// signing names hashes as crypto.Hash does ("SHA-256"); records as
	// the rest of the log does ("sha256").
	hash := strings.ToLower(strings.ReplaceAll(e.Hash, "-", ""))
	for i, d := range e.Digests {
		v, err := hex.DecodeString(d)
		if err != nil || digestSizes[hash] != len(v) {
			return nil, fmt.Errorf("%w: signature evidence: digest %d is not a %s digest in hex", ErrMalformedRecord, i, e.Hash)
		}
		rec.Digests = append(rec.Digests, Digest{Name: fmt.Sprintf("document/%d", i), Algorithm: hash, Value: v})
	}
	for i, s := range e.Signatures {
		v, err := hex.DecodeString(s)
		if err != nil || len(v) != 32 {
			return nil, fmt.Errorf("%w: signature evidence: signature %d is not a SHA-256 in hex", ErrMalformedRecord, i)
		}
		rec.Digests = append(rec.Digests, Digest{Name: fmt.Sprintf("signature/%d", i), Algorithm: "sha256", Value: v})
	}
	for _, a := range []Attribute{{"format", string(e.Format)}, {"profile", e.Profile}, {"reason", e.Reason}} {
		if a.Value != "" {
			rec.Attributes = append(rec.Attributes, a)
		}
	}
	return rec, nil
}
