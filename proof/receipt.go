package proof

import (
	"context"
	"fmt"

	"pec/evidence"
	"pec/signing"
)

// SignReceipt makes the individually signed receipt of an encoded record
// (ARCHITECTURE.md "Evidence and proof": an acknowledgment returned to a
// partner, a mail receipt): a CMS SignedData with the record attached, in
// the CAdES baseline profile of signer — B-T when the signer has a
// timestamper — which `openssl cms -verify` accepts. The record's Merkle
// proof goes alongside, in its bundle.
func SignReceipt(ctx context.Context, signer *signing.Signer, encoded []byte) ([]byte, error) {
	if _, err := evidence.UnmarshalRecord(encoded); err != nil {
		return nil, err
	}
	sig, err := signer.Sign(ctx, encoded, false)
	if err != nil {
		return nil, fmt.Errorf("proof: sign receipt: %w", err)
	}
	return sig.DER, nil
}
