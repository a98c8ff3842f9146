package tsa

import (
	"encoding/asn1"
	"time"

	"pec/internal/cms"
)

// A few DER writers (X.690 section 10) for the fast path of encode.go. They
// append to dst and never fail: every length is known before it is written.

// DER tags used here.
const (
	tagBoolean         = 0x01
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagNull            = 0x05
	tagOID             = 0x06
	tagUTF8String      = 0x0c
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagSet             = 0x31
	tagContext0        = 0xa0 // [0] constructed
	tagContext4        = 0xa4 // [4] constructed
)

// mustMarshal encodes values known at start-up (OIDs, names).
func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic("tsa: encode constant: " + err.Error())
	}
	return b
}

// generalizedTimeLen is the size of the GeneralizedTime content of t at
// millisecond precision: RFC 3161 section 2.4.2 wants UTC ("Z"), no
// trailing zeros in the fraction and no dot for a whole second.
func generalizedTimeLen(t time.Time) int {
	ms := t.Nanosecond() / 1e6
	switch {
	case ms == 0:
		return 15
	case ms%100 == 0:
		return 17
	case ms%10 == 0:
		return 18
	}
	return 19
}

func appendGeneralizedTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	dst = cms.AppendHeader(dst, tagGeneralizedTime, generalizedTimeLen(t))
	dst = appendDigits(dst, t.Year(), 4)
	dst = appendDigits(dst, int(t.Month()), 2)
	dst = appendDigits(dst, t.Day(), 2)
	dst = appendDigits(dst, t.Hour(), 2)
	dst = appendDigits(dst, t.Minute(), 2)
	dst = appendDigits(dst, t.Second(), 2)
	if ms := t.Nanosecond() / 1e6; ms != 0 {
		dst = append(dst, '.')
		digits := 3
		for ms%10 == 0 {
			ms /= 10
			digits--
		}
		dst = appendDigits(dst, ms, digits)
	}
	return append(dst, 'Z')
}

// signingTimeLen and appendSigningTime encode the CMS signing-time
// attribute value: UTCTime for 1950-2049, GeneralizedTime otherwise (RFC
// 5652 section 11.3), to the second.
func signingTimeLen(t time.Time) int {
	if y := t.UTC().Year(); y >= 1950 && y < 2050 {
		return cms.TLVLen(13)
	}
	return cms.TLVLen(15)
}

func appendSigningTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	y := t.Year()
	if y >= 1950 && y < 2050 {
		dst = cms.AppendHeader(dst, tagUTCTime, 13)
		dst = appendDigits(dst, y%100, 2)
	} else {
		dst = cms.AppendHeader(dst, tagGeneralizedTime, 15)
		dst = appendDigits(dst, y, 4)
	}
	dst = appendDigits(dst, int(t.Month()), 2)
	dst = appendDigits(dst, t.Day(), 2)
	dst = appendDigits(dst, t.Hour(), 2)
	dst = appendDigits(dst, t.Minute(), 2)
	dst = appendDigits(dst, t.Second(), 2)
	return append(dst, 'Z')
}

func appendDigits(dst []byte, v, n int) []byte {
	var buf [8]byte
	for i := n - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[:n]...)
}

// appendBitString encodes a named-bit BIT STRING with only bit set (X.690
// section 11.2.2: no trailing zero bits).
func appendBitString(dst []byte, bit int) []byte {
	n := bit/8 + 1
	dst = cms.AppendHeader(dst, tagBitString, n+1)
	dst = append(dst, byte(7-bit%8))
	for i := 0; i < n-1; i++ {
		dst = append(dst, 0)
	}
	return append(dst, 0x80>>(bit%8))
}
