package cms

import (
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

const tagNull = 0x05

// DER writers (X.690 section 10). They append to dst and never fail: every
// length is known before it is written.

// LenOfLen is the size of the length octets for a content of n bytes.
func LenOfLen(n int) int {
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

// TLVLen is the size of a whole TLV whose content has n bytes.
func TLVLen(n int) int { return 1 + LenOfLen(n) + n }

// AppendHeader writes a tag and the definite length n.
func AppendHeader(dst []byte, tag byte, n int) []byte {
	return AppendLength(append(dst, tag), n)
}

// AppendLength writes the definite length n, minimal (X.690 section 10.1).
func AppendLength(dst []byte, n int) []byte {
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

// AppendTLV writes tag and the concatenation of content.
func AppendTLV(dst []byte, tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	dst = AppendHeader(dst, tag, n)
	for _, c := range content {
		dst = append(dst, c...)
	}
	return dst
}

// ReadAlgorithm reads an AlgorithmIdentifier (RFC 5652 section 10.1): its
// OID and its parameters (a whole DER element, nil when absent). what
// names the field in the error.
func ReadAlgorithm(s *cryptobyte.String, what string) (asn1.ObjectIdentifier, []byte, error) {
	var alg, params cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return nil, nil, fmt.Errorf("%s is not an AlgorithmIdentifier", what)
	}
	if alg.Empty() {
		return oid, nil, nil
	}
	var tag cbasn1.Tag
	if !alg.ReadAnyASN1Element(&params, &tag) || !alg.Empty() {
		return nil, nil, fmt.Errorf("%s has trailing data", what)
	}
	return oid, params, nil
}
