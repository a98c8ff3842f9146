package cms

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // ESSCertID (RFC 2634) hashes the certificate with SHA-1
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
)

// Hash algorithm identifiers (RFC 5754 section 2; RFC 8017 for SHA-1 and
// MD5).
var (
	OIDSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	OIDSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	OIDSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	OIDSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	OIDMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
)

// Signature algorithm identifiers (RFC 4055, RFC 5754, RFC 5758).
var (
	OIDRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	OIDMD5WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	OIDSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	OIDRSAPSS          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	OIDMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	OIDSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	OIDSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	OIDSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	OIDECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	OIDECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	OIDECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	OIDECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	OIDECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	OIDEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112} // RFC 8410, RFC 8419
	OIDEd448           = asn1.ObjectIdentifier{1, 3, 101, 113}
)

// Content types (RFC 5652 section 4, 5.1) and the attributes of RFC 5652
// section 11 and ESS (RFC 2634, RFC 5035).
var (
	OIDData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	OIDAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	OIDAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	OIDAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	OIDAttrSigningCertV1 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12}
	OIDAttrSigningCertV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
)

// HashFromOID is the hash a digest algorithm OID names, 0 if unknown.
// SHA-1 and MD5 are recognised so that callers can refuse them by name.
func HashFromOID(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(OIDSHA256):
		return crypto.SHA256
	case oid.Equal(OIDSHA384):
		return crypto.SHA384
	case oid.Equal(OIDSHA512):
		return crypto.SHA512
	case oid.Equal(OIDSHA1):
		return crypto.SHA1
	case oid.Equal(OIDMD5):
		return crypto.MD5
	}
	return 0
}

// OIDOfHash is the digest algorithm OID of h for the hashes we sign with,
// SHA-256, SHA-384 and SHA-512; nil for any other.
func OIDOfHash(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return OIDSHA256
	case crypto.SHA384:
		return OIDSHA384
	case crypto.SHA512:
		return OIDSHA512
	}
	return nil
}

// DigestHash is the hash of a digestAlgorithm under the one policy:
// SHA-256, SHA-384 or SHA-512, parameters absent or NULL (RFC 5754 section
// 2). SHA-1 and MD5 are refused as weak, anything else as unknown; the
// errors are ErrUnsupported. The hash is returned with the error when
// known, for reports that name it.
func DigestHash(oid asn1.ObjectIdentifier, params []byte) (crypto.Hash, error) {
	h := HashFromOID(oid)
	if h == 0 {
		return 0, unsupported("unknown digest algorithm %v", oid)
	}
	if !NullOrAbsent(params) {
		return h, unsupported("digest algorithm %v with parameters", oid)
	}
	return strongHash(h)
}

func strongHash(h crypto.Hash) (crypto.Hash, error) {
	switch h {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
		return h, nil
	case crypto.SHA1, crypto.MD5:
		return h, unsupported("digest algorithm %v is weak", h)
	}
	return h, unsupported("digest algorithm %v", h)
}

// Digest hashes data with h. The SHA-2 hashes go through their Sum
// functions, whose state stays on the stack: a signature is hashed three
// times, and the heap allocations of hash.Hash states weigh on the garbage
// collector at tens of thousands of signatures a second.
func Digest(h crypto.Hash, data []byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(data)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(data)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(data)
		return d[:]
	}
	if !h.Available() {
		return nil
	}
	d := h.New()
	d.Write(data)
	return d.Sum(nil)
}

// NullOrAbsent tells whether AlgorithmIdentifier parameters are absent or
// NULL, as both are seen for hash algorithms (RFC 5754 section 2).
func NullOrAbsent(params []byte) bool {
	return params == nil || bytes.Equal(params, []byte{tagNull, 0})
}
