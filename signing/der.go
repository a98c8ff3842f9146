package signing

import (
	"bytes"
	"encoding/asn1"
	"time"

	"pec/internal/cms"
)

// A few DER writers (X.690 section 10). They append to dst and never fail:
// every length is known before it is written. The constant parts of a
// signature (algorithm identifiers, the signer identifier, certificates,
// the content-type and signing-certificate attributes) are encoded once per
// Signer, so that a signature is a few appends around the HSM call.

const (
	tagBoolean         = 0x01
	tagInteger         = 0x02
	tagOctetString     = 0x04
	tagNull            = 0x05
	tagOID             = 0x06
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagSet             = 0x31
	tagContext0        = 0xa0 // [0] constructed
	tagContext1        = 0xa1 // [1] constructed
	tagContext2        = 0xa2 // [2] constructed
	tagContext4        = 0xa4 // [4] constructed
)

// Object identifiers of CMS (RFC 5652), ESS (RFC 5035), RFC 3161 and the
// algorithms (RFC 5754, RFC 4055, RFC 5758).
var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAttrSigningCertV1 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12}
	oidAttrSigningCertV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	// id-aa-signatureTimeStampToken (RFC 3161 appendix A, ETSI EN 319 122-1
	// section 5.3): a time-stamp token over the SignerInfo's signature value.
	oidAttrSignatureTimeStamp = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 14}
)

// tlv returns one TLV in a new slice.
func tlv(tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	return cms.AppendTLV(make([]byte, 0, cms.TLVLen(n)), tag, content...)
}

// mustMarshal encodes values known at start-up (OIDs, serial numbers).
func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic("signing: encode constant: " + err.Error())
	}
	return b
}

// algorithmID is an AlgorithmIdentifier with params (a whole DER element)
// or none.
func algorithmID(oid asn1.ObjectIdentifier, params []byte) []byte {
	return tlv(tagSequence, mustMarshal(oid), params)
}

// attribute is an Attribute { attrType, SET { value } } (RFC 5652 section
// 5.3) with one value, a whole DER element; oid is the DER of the type.
func attribute(oid, value []byte) []byte {
	return tlv(tagSequence, oid, tlv(tagSet, value))
}

// The DER of the OIDs written into every signature.
var (
	derOIDData               = mustMarshal(oidData)
	derOIDSignedData         = mustMarshal(oidSignedData)
	derOIDContentType        = mustMarshal(oidAttrContentType)
	derOIDMessageDigest      = mustMarshal(oidAttrMessageDigest)
	derOIDSigningTime        = mustMarshal(oidAttrSigningTime)
	derOIDSignatureTimeStamp = mustMarshal(oidAttrSignatureTimeStamp)
)

// signingTimeValue is the DER signing-time value of t.
func signingTimeValue(t time.Time) []byte {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		return tlv(tagUTCTime, []byte(t.Format("060102150405Z")))
	}
	return tlv(tagGeneralizedTime, []byte(t.Format("20060102150405Z")))
}

// derSetOf sorts DER elements as a SET OF needs them (X.690 section
// 11.6): ascending as octet strings, a shorter one padded with zeros.
func derSetOf(elems [][]byte) {
	for i := 1; i < len(elems); i++ {
		for j := i; j > 0 && setLess(elems[j], elems[j-1]); j-- {
			elems[j], elems[j-1] = elems[j-1], elems[j]
		}
	}
}

func setLess(a, b []byte) bool {
	n := min(len(a), len(b))
	if c := bytes.Compare(a[:n], b[:n]); c != 0 {
		return c < 0
	}
	// One is a prefix of the other: the padding zeros of the shorter
	// compare with the rest of the longer.
	for _, c := range b[n:] {
		if c != 0 {
			return true
		}
	}
	return false
}
