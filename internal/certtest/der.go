package certtest

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SwapLast replaces the last DER element equal to old inside der (in a
// SignedData, the SignerInfo's rather than a certificate's), re-encoding
// the lengths of every element around it: the way tests break one field of
// a signed structure and keep the rest well-formed.
func SwapLast(t testing.TB, der, old, new []byte) []byte {
	t.Helper()
	out, found := swapLastElement(der, old, new)
	if !found {
		t.Fatal("element to swap not found")
	}
	return out
}

func swapLastElement(elem, old, new []byte) ([]byte, bool) {
	if bytes.Equal(elem, old) {
		return new, true
	}
	s := cryptobyte.String(elem)
	var content cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&content, &tag) || tag&0x20 == 0 {
		return elem, false
	}
	var children [][]byte
	for !content.Empty() {
		var child cryptobyte.String
		var ct cbasn1.Tag
		if !content.ReadAnyASN1Element(&child, &ct) {
			return elem, false
		}
		children = append(children, child)
	}
	for i := len(children) - 1; i >= 0; i-- {
		c, found := swapLastElement(children[i], old, new)
		if !found {
			continue
		}
		children[i] = c
		var b cryptobyte.Builder
		b.AddASN1(tag, func(b *cryptobyte.Builder) {
			for _, c := range children {
				b.AddBytes(c)
			}
		})
		return b.BytesOrPanic(), true
	}
	return elem, false
}
