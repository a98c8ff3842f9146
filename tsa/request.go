package tsa

import (
	"crypto"
	"encoding/asn1"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/cms"
)

// request is a decoded TimeStampReq (RFC 3161 section 2.4.1):
//
//	TimeStampReq ::= SEQUENCE  {
//	   version          INTEGER  { v1(1) },
//	   messageImprint   MessageImprint,
//	   reqPolicy        TSAPolicyId              OPTIONAL,
//	   nonce            INTEGER                  OPTIONAL,
//	   certReq          BOOLEAN                  DEFAULT FALSE,
//	   extensions       [0] IMPLICIT Extensions  OPTIONAL  }
//
// The slices alias the request bytes.
type request struct {
	imprintDER    []byte      // the whole MessageImprint, echoed verbatim in TSTInfo
	hash          crypto.Hash // 0 when the algorithm is not one we know
	hashOID       asn1.ObjectIdentifier
	hashedMessage []byte
	policy        asn1.ObjectIdentifier // nil when absent
	nonce         []byte                // DER INTEGER contents, nil when absent
	certReq       bool
	extensions    bool // the request carries extensions
}

// parseRequest decodes a DER TimeStampReq strictly: definite lengths,
// minimal encodings, no trailing bytes. It judges only the syntax; which
// algorithms, policies and extensions are acceptable is the authority's
// decision. A syntax fault is a *RejectError with badDataFormat.
func parseRequest(der []byte) (*request, error) {
	bad := func(reason string) error {
		return &RejectError{Status: StatusRejection, FailInfo: FailBadDataFormat, Reason: reason}
	}
	if len(der) == 0 {
		return nil, bad("empty request")
	}
	input := cryptobyte.String(der)
	var req request
	var body cryptobyte.String
	if !input.ReadASN1(&body, cbasn1.SEQUENCE) {
		return nil, bad("not a DER TimeStampReq")
	}
	if !input.Empty() {
		return nil, bad("trailing data after the TimeStampReq")
	}
	var version int64
	if !body.ReadASN1Integer(&version) {
		return nil, bad("malformed version")
	}
	if version != 1 {
		return nil, &RejectError{Status: StatusRejection, FailInfo: FailBadRequest, Reason: "unsupported TimeStampReq version"}
	}

	var element, imprint, algID, hashed cryptobyte.String
	if !body.ReadASN1Element(&element, cbasn1.SEQUENCE) {
		return nil, bad("malformed messageImprint")
	}
	req.imprintDER = element
	if !element.ReadASN1(&imprint, cbasn1.SEQUENCE) || !imprint.ReadASN1(&algID, cbasn1.SEQUENCE) ||
		!imprint.ReadASN1(&hashed, cbasn1.OCTET_STRING) || !imprint.Empty() {
		return nil, bad("malformed messageImprint")
	}
	if !algID.ReadASN1ObjectIdentifier(&req.hashOID) {
		return nil, bad("malformed hash algorithm")
	}
	// Parameters: absent or NULL (RFC 5754 section 2: both must be accepted).
	if !algID.Empty() {
		var null cryptobyte.String
		if !algID.ReadASN1(&null, cbasn1.NULL) || !null.Empty() || !algID.Empty() {
			return nil, &RejectError{Status: StatusRejection, FailInfo: FailBadAlg, Reason: "unexpected hash algorithm parameters"}
		}
	}
	req.hash = cms.HashFromOID(req.hashOID)
	req.hashedMessage = hashed

	if body.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
		var policy asn1.ObjectIdentifier
		if !body.ReadASN1ObjectIdentifier(&policy) {
			return nil, bad("malformed reqPolicy")
		}
		req.policy = policy
	}
	if body.PeekASN1Tag(cbasn1.INTEGER) {
		var nonce cryptobyte.String
		if !body.ReadASN1(&nonce, cbasn1.INTEGER) || !validInteger(nonce) {
			return nil, bad("malformed nonce")
		}
		req.nonce = nonce
	}
	if body.PeekASN1Tag(cbasn1.BOOLEAN) {
		var v cryptobyte.String
		if !body.ReadASN1(&v, cbasn1.BOOLEAN) || len(v) != 1 || (v[0] != 0 && v[0] != 0xff) {
			return nil, bad("malformed certReq")
		}
		req.certReq = v[0] == 0xff
	}
	extTag := cbasn1.Tag(0).ContextSpecific().Constructed()
	if body.PeekASN1Tag(extTag) {
		var exts cryptobyte.String
		if !body.ReadASN1(&exts, extTag) || exts.Empty() {
			return nil, bad("malformed extensions")
		}
		req.extensions = true
	}
	if !body.Empty() {
		return nil, bad("unexpected field in TimeStampReq")
	}
	return &req, nil
}

// validInteger reports whether b is the minimal two's-complement content of
// a DER INTEGER (X.690 section 8.3.2).
func validInteger(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if len(b) > 1 && ((b[0] == 0 && b[1]&0x80 == 0) || (b[0] == 0xff && b[1]&0x80 != 0)) {
		return false
	}
	return true
}

// integerContents is the DER INTEGER content of a non-negative n.
func integerContents(n *big.Int) []byte {
	b := n.Bytes()
	if len(b) == 0 {
		return []byte{0}
	}
	if b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}
