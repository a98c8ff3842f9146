package signing

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"time"
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

	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}

	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidMD5WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidRSAPSS          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
)

func hashFromOID(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256
	case oid.Equal(oidSHA384):
		return crypto.SHA384
	case oid.Equal(oidSHA512):
		return crypto.SHA512
	case oid.Equal(oidSHA1):
		return crypto.SHA1
	case oid.Equal(oidMD5):
		return crypto.MD5
	}
	return 0
}

func oidOfHash(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return oidSHA256
	case crypto.SHA384:
		return oidSHA384
	case crypto.SHA512:
		return oidSHA512
	}
	return nil
}

// lenOfLen is the size of the length octets for a content of n bytes.
func lenOfLen(n int) int {
	switch {
	case n < 0x80:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffff:
		return 4
	}
	return 5
}

// appendHeader writes a tag and the definite length n.
func appendHeader(dst []byte, tag byte, n int) []byte {
	return appendLength(append(dst, tag), n)
}

// appendLength writes the definite length n, minimal (X.690 section 10.1).
func appendLength(dst []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(dst, byte(n))
	case n <= 0xff:
		return append(dst, 0x81, byte(n))
	case n <= 0xffff:
		return append(dst, 0x82, byte(n>>8), byte(n))
	case n <= 0xffffff:
		return append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// appendTLV writes tag and the concatenation of content.
func appendTLV(dst []byte, tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	dst = appendHeader(dst, tag, n)
	for _, c := range content {
		dst = append(dst, c...)
	}
	return dst
}

// tlv returns one TLV in a new slice.
func tlv(tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	return appendTLV(make([]byte, 0, 1+lenOfLen(n)+n), tag, content...)
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

// tlvLen is the size of a whole TLV whose content has n bytes.
func tlvLen(n int) int { return 1 + lenOfLen(n) + n }

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
