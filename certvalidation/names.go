package certvalidation

import (
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A dname is a distinguished name in the canonical form of RFC 5280 section
// 7.1: each RDN is a set of attribute type and value pairs, sorted; string
// values (whatever their ASN.1 string type) are compared case-insensitively
// after trimming and collapsing white space, as RFC 4518 prepares them for
// caseIgnoreMatch. PKITS 4.3 checks exactly this (white space,
// capitalisation, PrintableString rolled over to UTF8String).
type dname []rdn

// An rdn is one RelativeDistinguishedName: its AVAs in canonical order.
type rdn []ava

type ava struct {
	oid   string // dotted
	value string // canonical: "s:" + prepared string, or "b:" + hex DER
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// parseName reads a DER Name (RFC 5280 section 4.1.2.4).
func parseName(der []byte) (dname, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed name")
	}
	return parseRDNSequence(seq)
}

func parseRDNSequence(seq cryptobyte.String) (dname, error) {
	var n dname
	for !seq.Empty() {
		var set cryptobyte.String
		if !seq.ReadASN1(&set, cbasn1.SET) {
			return nil, errors.New("malformed relative distinguished name")
		}
		r, err := parseRDN(set)
		if err != nil {
			return nil, err
		}
		n = append(n, r)
	}
	return n, nil
}

// parseRDN reads the content of a SET OF AttributeTypeAndValue.
func parseRDN(set cryptobyte.String) (rdn, error) {
	var r rdn
	for !set.Empty() {
		var atv cryptobyte.String
		var oid asn1.ObjectIdentifier
		var value cryptobyte.String
		var tag cbasn1.Tag
		if !set.ReadASN1(&atv, cbasn1.SEQUENCE) ||
			!atv.ReadASN1ObjectIdentifier(&oid) ||
			!atv.ReadAnyASN1Element(&value, &tag) || !atv.Empty() {
			return nil, errors.New("malformed attribute in name")
		}
		r = append(r, ava{oid: oid.String(), value: canonicalValue(tag, value)})
	}
	if len(r) == 0 {
		return nil, errors.New("empty relative distinguished name")
	}
	// A SET is unordered: sort the AVAs (insertion sort, RDNs are tiny).
	for i := 1; i < len(r); i++ {
		for j := i; j > 0 && r[j].less(r[j-1]); j-- {
			r[j], r[j-1] = r[j-1], r[j]
		}
	}
	return r, nil
}

func (a ava) less(b ava) bool {
	if a.oid != b.oid {
		return a.oid < b.oid
	}
	return a.value < b.value
}

// canonicalValue prepares an attribute value for comparison. element is the
// whole TLV.
func canonicalValue(tag cbasn1.Tag, element cryptobyte.String) string {
	var content cryptobyte.String
	var t cbasn1.Tag
	el := element
	if !el.ReadAnyASN1(&content, &t) {
		return "b:" + hex.EncodeToString(element)
	}
	var s string
	switch tag {
	case cbasn1.UTF8String, cbasn1.PrintableString, cbasn1.IA5String, 26 /* VisibleString */, 18 /* NumericString */ :
		if !utf8.Valid(content) {
			return "b:" + hex.EncodeToString(element)
		}
		s = string(content)
	case cbasn1.T61String:
		// Teletex: read as Latin-1, which is what its users meant in practice.
		r := make([]rune, len(content))
		for i, b := range content {
			r[i] = rune(b)
		}
		s = string(r)
	case 30: // BMPString: UCS-2 big-endian
		if len(content)%2 != 0 {
			return "b:" + hex.EncodeToString(element)
		}
		u := make([]uint16, len(content)/2)
		for i := range u {
			u[i] = uint16(content[2*i])<<8 | uint16(content[2*i+1])
		}
		s = string(utf16.Decode(u))
	case 28: // UniversalString: UCS-4 big-endian
		if len(content)%4 != 0 {
			return "b:" + hex.EncodeToString(element)
		}
		r := make([]rune, len(content)/4)
		for i := range r {
			r[i] = rune(uint32(content[4*i])<<24 | uint32(content[4*i+1])<<16 | uint32(content[4*i+2])<<8 | uint32(content[4*i+3]))
		}
		s = string(r)
	default:
		return "b:" + hex.EncodeToString(element)
	}
	return "s:" + prepareString(s)
}

// prepareString is the part of RFC 4518 string preparation that matters for
// matching names in certificates: case folding and insignificant space
// handling (leading and trailing spaces dropped, inner runs collapsed).
func prepareString(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(unicode.ToLower(unicode.ToUpper(r)))
	}
	return b.String()
}

func (r rdn) equal(s rdn) bool {
	if len(r) != len(s) {
		return false
	}
	for i := range r {
		if r[i] != s[i] {
			return false
		}
	}
	return true
}

func (n dname) equal(m dname) bool {
	if len(n) != len(m) {
		return false
	}
	for i := range n {
		if !n[i].equal(m[i]) {
			return false
		}
	}
	return true
}

// within reports whether n is in the subtree rooted at base: base's RDNs
// are the first RDNs of n (RFC 5280 section 4.2.1.10, directoryName).
func (n dname) within(base dname) bool {
	if len(base) > len(n) {
		return false
	}
	for i := range base {
		if !n[i].equal(base[i]) {
			return false
		}
	}
	return true
}

// key is a string that two names share exactly when they are equal: a map
// key for finding issuers by name.
func (n dname) key() string {
	var b strings.Builder
	for _, r := range n {
		b.WriteByte('{')
		for _, a := range r {
			b.WriteString(a.oid)
			b.WriteByte('=')
			b.WriteString(strconv.Itoa(len(a.value)))
			b.WriteByte(':')
			b.WriteString(a.value)
		}
		b.WriteByte('}')
	}
	return b.String()
}

// emailAddresses returns the emailAddress attributes of a subject name
// (PKCS #9), to which rfc822Name constraints apply when the certificate has
// no subjectAltName (RFC 5280 section 4.2.1.10).
func (n dname) emailAddresses() []string {
	var out []string
	oid := oidEmailAddress.String()
	for _, r := range n {
		for _, a := range r {
			if a.oid == oid && strings.HasPrefix(a.value, "s:") {
				out = append(out, a.value[2:])
			}
		}
	}
	return out
}
