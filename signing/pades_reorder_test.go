package signing

import (
	"fmt"
	"maps"
	"slices"
)

// FieldFirst is fieldFirst for the external tests (pades_test.go).
var FieldFirst = fieldFirst

// fieldFirst returns pdf followed by an incremental update that moves the
// top-level form field named name to the front of the interactive form's
// /Fields, the signed bytes untouched. Readers that check signatures in
// /Fields order, as pdfsig does, then check that one first: the tests use it
// to have pdfsig check every signature of a file with a fresh NSS state (see
// TestPAdESMultipleSignatures for why that matters with poppler).
func fieldFirst(pdf []byte, name string) ([]byte, error) {
	doc, err := readPDF(pdf)
	if err != nil {
		return nil, err
	}
	catRef, cat, err := doc.catalog()
	if err != nil {
		return nil, err
	}
	acro := cat["AcroForm"]
	form, err := doc.dict(acro)
	if err != nil || form == nil {
		return nil, fmt.Errorf("no interactive form: %v", err)
	}
	fieldsObj, err := doc.resolve(form["Fields"])
	if err != nil {
		return nil, err
	}
	fields, _ := fieldsObj.(pdfArray)
	at := -1
	for i, f := range fields {
		if fd, err := doc.dict(f); err == nil && fd != nil {
			if t, ok := fd["T"].(pdfString); ok && decodeTextString(t) == name {
				at = i
			}
		}
	}
	if at < 0 {
		return nil, fmt.Errorf("no top-level field %q", name)
	}
	reordered := append(pdfArray{fields[at]}, slices.Delete(slices.Clone(fields), at, at+1)...)

	out := slices.Clone(doc.data)
	if n := len(out); n > 0 && out[n-1] != '\n' && out[n-1] != '\r' {
		out = append(out, '\n')
	}
	inc := &increment{base: int64(len(out)), offsets: map[int]int64{}, gens: map[int]int{}}
	switch {
	case isRef(form["Fields"]):
		inc.object(form["Fields"].(pdfRef), appendObj(nil, reordered))
	case isRef(acro):
		f := maps.Clone(form)
		f["Fields"] = reordered
		inc.object(acro.(pdfRef), appendObj(nil, f))
	default:
		f := maps.Clone(form)
		f["Fields"] = reordered
		c := maps.Clone(cat)
		c["AcroForm"] = f
		inc.object(catRef, appendObj(nil, c))
	}
	size, _ := doc.trailer["Size"].(int64)
	next := int(size)
	for num := range doc.xref {
		next = max(next, num+1)
	}
	(&signerKey{}).appendXRef(doc, inc, next)
	return append(out, inc.buf...), nil
}

func isRef(o pdfObj) bool {
	_, ok := o.(pdfRef)
	return ok
}
