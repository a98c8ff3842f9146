package signing

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"pec/internal/cms"
)

// ErrMalformed: the input is not a CMS SignedData (RFC 5652 section 5) or
// a PDF that this package can read. Parse errors wrap it.
var ErrMalformed = errors.New("signing: malformed signature")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// signedData is a SignedData read by the one CMS reader (package
// internal/cms), with what this package's profile adds: at least one
// SignerInfo.
type signedData struct {
	*cms.SignedData
	attached bool              // eContent present
	signers  []*cms.SignerInfo // at least one
}

// cmsPEMTypes are the PEM labels of CMS signatures that tools write.
var cmsPEMTypes = []string{"CMS", "PKCS7", "PKCS #7 SIGNED DATA"}

// parseCMS reads a ContentInfo holding a SignedData, DER or BER, bare or
// in PEM.
func parseCMS(in []byte) (*signedData, error) {
	der := in
	if trimmed := bytes.TrimSpace(in); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, rest := pem.Decode(trimmed)
		if block == nil {
			return nil, malformed("bad PEM")
		}
		if !slices.Contains(cmsPEMTypes, block.Type) {
			return nil, malformed("PEM block %q is not a CMS signature", block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, malformed("data after the PEM block")
		}
		der = block.Bytes
	}
	sd, err := cms.ParseSignedDataBER(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(sd.SignerInfos) == 0 {
		return nil, malformed("no SignerInfo: the SignedData holds no signature")
	}
	return &signedData{SignedData: sd, attached: sd.Attached, signers: sd.SignerInfos}, nil
}

// berElement converts the first BER element of in and returns what
// follows it (cms.ReadBERElement; depth is unused, kept for the PDF
// reader's call).
func berElement(in []byte, _ int) (der, rest []byte, err error) {
	return cms.ReadBERElement(in)
}
