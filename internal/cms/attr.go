package cms

import (
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// An Attribute is a CMS attribute (RFC 5652 section 5.3).
type Attribute struct {
	OID    asn1.ObjectIdentifier
	Values []cryptobyte.String // whole DER elements
}

// ParseAttributes reads the content of a SET OF Attribute (RFC 5652
// section 5.3). Each attribute must have a value.
func ParseAttributes(set cryptobyte.String) ([]Attribute, error) {
	var attrs []Attribute
	for !set.Empty() {
		var a Attribute
		var seq, values cryptobyte.String
		if !set.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&a.OID) ||
			!seq.ReadASN1(&values, cbasn1.SET) || !seq.Empty() {
			return nil, fmt.Errorf("an attribute is not an Attribute")
		}
		for !values.Empty() {
			var v cryptobyte.String
			var tag cbasn1.Tag
			if !values.ReadAnyASN1Element(&v, &tag) {
				return nil, fmt.Errorf("attribute %v: bad value", a.OID)
			}
			a.Values = append(a.Values, v)
		}
		if len(a.Values) == 0 {
			return nil, fmt.Errorf("attribute %v has no value", a.OID)
		}
		attrs = append(attrs, a)
	}
	return attrs, nil
}
