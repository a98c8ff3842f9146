package signing

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// Serialization of PDF objects (ISO 32000-1 section 7.3) and the
// incremental update (section 7.5.6) that adds a signature.

func appendObj(dst []byte, v pdfObj) []byte {
	switch o := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, o)
	case int64:
		return strconv.AppendInt(dst, o, 10)
	case pdfReal:
		return append(dst, o...)
	case pdfName:
		return appendName(dst, o)
	case pdfString:
		return appendLiteral(dst, o)
	case pdfRef:
		return fmt.Appendf(dst, "%d %d R", o.num, o.gen)
	case pdfArray:
		dst = append(dst, '[')
		for i, e := range o {
			if i > 0 {
				dst = append(dst, ' ')
			}
			dst = appendObj(dst, e)
		}
		return append(dst, ']')
	case pdfDict:
		dst = append(dst, "<<"...)
		for _, k := range slices.Sorted(maps.Keys(o)) {
			dst = append(dst, ' ')
			dst = appendName(dst, k)
			dst = append(dst, ' ')
			dst = appendObj(dst, o[k])
		}
		return append(dst, " >>"...)
	}
	// Streams are never rewritten: only dictionaries and arrays are.
	panic(fmt.Sprintf("signing: cannot serialize a %T", v))
}

// appendName writes a name, escaping what is not a regular printable
// character (section 7.3.5).
func appendName(dst []byte, n pdfName) []byte {
	dst = append(dst, '/')
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c < '!' || c > '~' || c == '#' || isDelim(c) {
			dst = fmt.Appendf(dst, "#%02X", c)
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// appendLiteral writes a literal string (section 7.3.4.2), escaping the
// delimiters and what is not printable ASCII.
func appendLiteral(dst []byte, s []byte) []byte {
	dst = append(dst, '(')
	for _, c := range s {
		switch {
		case c == '(' || c == ')' || c == '\\':
			dst = append(dst, '\\', c)
		case c < ' ' || c > '~':
			dst = fmt.Appendf(dst, "\\%03o", c)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, ')')
}

// textString encodes a text string (section 7.9.2.2): ASCII as is,
// anything else as UTF-16BE with a byte order mark.
func textString(s string) pdfString {
	ascii := true
	for i := 0; i < len(s); i++ {
		ascii = ascii && s[i] >= ' ' && s[i] <= '~'
	}
	if ascii {
		return pdfString(s)
	}
	out := []byte{0xfe, 0xff}
	for _, u := range utf16.Encode([]rune(s)) {
		out = append(out, byte(u>>8), byte(u))
	}
	return out
}

// pdfDate is a date string (section 7.9.4) in UTC.
func pdfDate(t time.Time) pdfString {
	return pdfString(t.UTC().Format("D:20060102150405Z"))
}

// PDFOptions shape a PAdES signature. The zero value makes an invisible
// signature.
type PDFOptions struct {
	Visible bool
	Page    int // the page of a visible signature: 1 (and 0) the first, -1 the last
	// Rect is the signature box: lower-left x, y and upper-right x, y, in
	// points from the page's lower-left corner. Zero: 220×60 points at
	// (36, 36).
	Rect     [4]float64
	Reason   string // why the document is signed, shown by readers
	Location string
}

var defaultRect = [4]float64{36, 36, 256, 96}

// increment is an incremental update being written.
type increment struct {
	base    int64 // where the update starts in the file
	buf     []byte
	offsets map[int]int64 // object number → file offset
	gens    map[int]int
}

func (inc *increment) object(ref pdfRef, body []byte) {
	inc.offsets[ref.num] = inc.base + int64(len(inc.buf))
	inc.gens[ref.num] = ref.gen
	inc.buf = fmt.Appendf(inc.buf, "%d %d obj\n", ref.num, ref.gen)
	inc.buf = append(inc.buf, body...)
	inc.buf = append(inc.buf, "\nendobj\n"...)
}

// placeholders of the signature dictionary, at fixed widths.
const byteRangePlaceholder = "[0 0000000000 0000000000 0000000000]"

// pdfPlan is the signed PDF before its signature: the bytes, and where
// the /ByteRange and /Contents placeholders are.
type pdfPlan struct {
	out         []byte
	byteRangeAt int // offset of the '[' of the /ByteRange placeholder
	contentsAt  int // offset of the '<' of /Contents
	reserve     int // bytes of CMS that /Contents holds
}

// planPDF writes the incremental update that adds a signature field with
// a signature dictionary whose /Contents is reserve zero bytes.
func (s *signerKey) planPDF(doc *pdfDoc, opts PDFOptions, now time.Time, reserve int) (*pdfPlan, error) {
	if _, ok := doc.trailer["Encrypt"]; ok {
		return nil, badRequest("encrypted PDFs cannot be signed here")
	}
	size, ok := doc.trailer["Size"].(int64)
	if !ok || size < 1 || size > maxObjectNumber {
		return nil, pdfErr("the trailer has no valid /Size")
	}
	page := opts.Page
	if page == 0 {
		page = 1
	}
	pageRef, pageDict, err := doc.page(page)
	if err != nil {
		return nil, err
	}
	catRef, cat, err := doc.catalog()
	if err != nil {
		return nil, err
	}
	// Signing a file whose form a verifier cannot read would give a
	// signature nobody can check.
	if _, err := doc.signatureFields(); err != nil {
		return nil, err
	}

	out := doc.data
	if n := len(out); n > 0 && out[n-1] != '\n' && out[n-1] != '\r' {
		out = append(out[:n:n], '\n')
	}
	inc := &increment{base: int64(len(out)), offsets: map[int]int64{}, gens: map[int]int{}}
	next := int(size)
	for num := range doc.xref {
		next = max(next, num+1) // a /Size too small must not make numbers collide
	}
	alloc := func() pdfRef { r := pdfRef{next, 0}; next++; return r }
	sigRef, widgetRef, apRef := alloc(), alloc(), alloc()

	// The signature dictionary (section 12.8.1, ETSI EN 319 142-1 section
	// 5.3): /Contents and /ByteRange are filled in once the rest is known.
	name := s.cert.Subject.CommonName
	var sd []byte
	sd = append(sd, "<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /ETSI.CAdES.detached /ByteRange "...)
	brAt := len(sd)
	sd = append(sd, byteRangePlaceholder...)
	sd = append(sd, " /Contents "...)
	contentsAt := len(sd)
	sd = append(sd, '<')
	sd = append(sd, strings.Repeat("0", 2*reserve)...)
	sd = append(sd, "> /M "...)
	sd = appendObj(sd, pdfDate(now))
	if name != "" {
		sd = append(sd, " /Name "...)
		sd = appendObj(sd, textString(name))
	}
	if opts.Reason != "" {
		sd = append(sd, " /Reason "...)
		sd = appendObj(sd, textString(opts.Reason))
	}
	if opts.Location != "" {
		sd = append(sd, " /Location "...)
		sd = appendObj(sd, textString(opts.Location))
	}
	sd = append(sd, " >>"...)
	sigAt := len(inc.buf) + len(fmt.Sprintf("%d %d obj\n", sigRef.num, sigRef.gen))
	inc.object(sigRef, sd)

	// The widget annotation, merged with its signature field (section
	// 12.7.4.5), and its appearance.
	rect := [4]float64{}
	if opts.Visible {
		rect = opts.Rect
		if rect == ([4]float64{}) {
			rect = defaultRect
		}
	}
	w, h := rect[2]-rect[0], rect[3]-rect[1]
	if w < 0 || h < 0 {
		return nil, badRequest("the signature box %v is upside down", rect)
	}
	fieldName := uniqueFieldName(doc, cat)
	widget := pdfDict{
		"Type": pdfName("Annot"), "Subtype": pdfName("Widget"), "FT": pdfName("Sig"),
		"T": textString(fieldName), "V": sigRef, "P": pageRef,
		"Rect": pdfArray{realOf(rect[0]), realOf(rect[1]), realOf(rect[2]), realOf(rect[3])},
		"F":    int64(132), // Print, Locked (section 12.5.3)
		"AP":   pdfDict{"N": apRef},
	}
	inc.object(widgetRef, appendObj(nil, widget))
	if opts.Visible {
		fontRef := alloc()
		content := appearanceText(w, h, name, now, opts.Reason)
		ap := appendObj(nil, pdfDict{
			"Type": pdfName("XObject"), "Subtype": pdfName("Form"),
			"BBox":      pdfArray{int64(0), int64(0), realOf(w), realOf(h)},
			"Resources": pdfDict{"Font": pdfDict{"F1": fontRef}},
			"Length":    int64(len(content)),
		})
		inc.object(apRef, slices.Concat(ap, []byte("\nstream\n"), content, []byte("\nendstream")))
		inc.object(fontRef, appendObj(nil, pdfDict{
			"Type": pdfName("Font"), "Subtype": pdfName("Type1"),
			"BaseFont": pdfName("Helvetica"), "Encoding": pdfName("WinAnsiEncoding"),
		}))
	} else {
		ap := appendObj(nil, pdfDict{
			"Type": pdfName("XObject"), "Subtype": pdfName("Form"),
			"BBox": pdfArray{int64(0), int64(0), int64(0), int64(0)}, "Length": int64(0),
		})
		inc.object(apRef, slices.Concat(ap, []byte("\nstream\n\nendstream")))
	}

	// The page lists the widget among its annotations.
	switch annots := pageDict["Annots"].(type) {
	case pdfRef:
		arr, err := doc.resolve(annots)
		if err != nil {
			return nil, err
		}
		list, _ := arr.(pdfArray)
		inc.object(annots, appendObj(nil, append(slices.Clone(list), widgetRef)))
	default:
		list, _ := annots.(pdfArray)
		p := maps.Clone(pageDict)
		p["Annots"] = append(slices.Clone(list), widgetRef)
		inc.object(pageRef, appendObj(nil, p))
	}

	// The interactive form lists the field (section 12.7.2); SigFlags 3:
	// signatures exist, and the file must be updated by appending only.
	acro := cat["AcroForm"]
	var form pdfDict
	if r, ok := acro.(pdfRef); ok {
		if form, err = doc.dict(r); err != nil {
			return nil, err
		}
	} else {
		form, _ = acro.(pdfDict)
	}
	form = maps.Clone(form)
	if form == nil {
		form = pdfDict{}
	}
	flags, _ := form["SigFlags"].(int64)
	form["SigFlags"] = flags | 3
	if r, ok := form["Fields"].(pdfRef); ok {
		arr, err := doc.resolve(r)
		if err != nil {
			return nil, err
		}
		list, _ := arr.(pdfArray)
		inc.object(r, appendObj(nil, append(slices.Clone(list), widgetRef)))
	} else {
		list, _ := form["Fields"].(pdfArray)
		form["Fields"] = append(slices.Clone(list), widgetRef)
	}
	if r, ok := acro.(pdfRef); ok {
		inc.object(r, appendObj(nil, form))
	} else {
		c := maps.Clone(cat)
		c["AcroForm"] = form
		inc.object(catRef, appendObj(nil, c))
	}

	s.appendXRef(doc, inc, next)
	plan := &pdfPlan{
		out:         slices.Concat(out, inc.buf),
		byteRangeAt: int(inc.base) + sigAt + brAt,
		contentsAt:  int(inc.base) + sigAt + contentsAt,
		reserve:     reserve,
	}
	return plan, nil
}

// appendXRef writes the update's cross-reference section and trailer: a
// table after a table, a stream after a stream (section 7.5.8.4 lets a
// reader expect the kind it started with).
func (s *signerKey) appendXRef(doc *pdfDoc, inc *increment, next int) {
	id := make([]byte, 16)
	rand.Read(id)
	trailer := pdfDict{"Root": doc.trailer["Root"], "Prev": doc.startxref}
	if info, ok := doc.trailer["Info"]; ok {
		trailer["Info"] = info
	}
	first := pdfString(id)
	if ids, ok := doc.trailer["ID"].(pdfArray); ok && len(ids) == 2 {
		if f, ok := ids[0].(pdfString); ok {
			first = f
		}
	}
	trailer["ID"] = pdfArray{first, pdfString(id)}

	if doc.xrefStream {
		xrefRef := pdfRef{next, 0}
		next++
		inc.offsets[xrefRef.num] = inc.base + int64(len(inc.buf))
		inc.gens[xrefRef.num] = 0
		nums := slices.Sorted(maps.Keys(inc.offsets))
		var index pdfArray
		var data []byte
		for i := 0; i < len(nums); {
			j := i
			for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
				j++
			}
			index = append(index, int64(nums[i]), int64(j-i+1))
			for _, n := range nums[i : j+1] {
				o := inc.offsets[n]
				data = append(data, 1, byte(o>>40), byte(o>>32), byte(o>>24), byte(o>>16), byte(o>>8), byte(o), byte(inc.gens[n]>>8), byte(inc.gens[n]))
			}
			i = j + 1
		}
		trailer["Type"] = pdfName("XRef")
		trailer["Size"] = int64(next)
		trailer["W"] = pdfArray{int64(1), int64(6), int64(2)}
		trailer["Index"] = index
		trailer["Length"] = int64(len(data))
		start := len(inc.buf)
		body := slices.Concat(appendObj(nil, trailer), []byte("\nstream\n"), data, []byte("\nendstream"))
		inc.object(xrefRef, body)
		inc.buf = fmt.Appendf(inc.buf, "startxref\n%d\n%%%%EOF\n", inc.base+int64(start))
		return
	}
	start := len(inc.buf)
	inc.buf = append(inc.buf, "xref\n"...)
	nums := slices.Sorted(maps.Keys(inc.offsets))
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		inc.buf = fmt.Appendf(inc.buf, "%d %d\n", nums[i], j-i+1)
		for _, n := range nums[i : j+1] {
			inc.buf = fmt.Appendf(inc.buf, "%010d %05d n\r\n", inc.offsets[n], inc.gens[n])
		}
		i = j + 1
	}
	trailer["Size"] = int64(next)
	inc.buf = append(inc.buf, "trailer\n"...)
	inc.buf = appendObj(inc.buf, trailer)
	inc.buf = fmt.Appendf(inc.buf, "\nstartxref\n%d\n%%%%EOF\n", inc.base+int64(start))
}

func realOf(f float64) pdfObj {
	if f == float64(int64(f)) {
		return int64(f)
	}
	return pdfReal(strconv.FormatFloat(f, 'f', -1, 64))
}

// uniqueFieldName is "Signature1", or the first "SignatureN" that no
// top-level field of the form has.
func uniqueFieldName(doc *pdfDoc, cat pdfDict) string {
	used := map[string]bool{}
	if form, err := doc.dict(cat["AcroForm"]); err == nil && form != nil {
		if fields, err := doc.resolve(form["Fields"]); err == nil {
			list, _ := fields.(pdfArray)
			for _, f := range list {
				if fd, err := doc.dict(f); err == nil && fd != nil {
					if t, ok := fd["T"].(pdfString); ok {
						used[decodeTextString(t)] = true
					}
				}
			}
		}
	}
	for n := 1; ; n++ {
		if name := "Signature" + strconv.Itoa(n); !used[name] {
			return name
		}
	}
}

// decodeTextString reads a text string (section 7.9.2.2): UTF-16BE with a
// byte order mark, or PDFDocEncoding, read as Latin-1 (they agree on the
// printable characters that matter for names).
func decodeTextString(s pdfString) string {
	if len(s) >= 2 && s[0] == 0xfe && s[1] == 0xff {
		u := make([]uint16, 0, len(s)/2)
		for i := 2; i+1 < len(s); i += 2 {
			u = append(u, uint16(s[i])<<8|uint16(s[i+1]))
		}
		return string(utf16.Decode(u))
	}
	r := make([]rune, len(s))
	for i, c := range s {
		r[i] = rune(c)
	}
	return string(r)
}

// appearanceText is the content stream of a visible signature: a framed
// box with who signed, when, and why, in Helvetica (a standard font every
// reader has, section 9.6.2.2).
func appearanceText(w, h float64, name string, t time.Time, reason string) []byte {
	lines := []string{"Digitally signed by " + name, "Date: " + t.UTC().Format("2006-01-02 15:04:05 UTC")}
	if reason != "" {
		lines = append(lines, "Reason: "+reason)
	}
	size := min(9, (h-6)/float64(len(lines))/1.25)
	size = max(size, 1)
	maxChars := max(int((w-8)/(size*0.5)), 4)
	var b strings.Builder
	fmt.Fprintf(&b, "q 0.96 0.97 1 rg 0 0 %s %s re f 0.1 0.2 0.5 RG 1 w 0.5 0.5 %s %s re S Q\n",
		num(w), num(h), num(max(w-1, 0)), num(max(h-1, 0)))
	fmt.Fprintf(&b, "BT /F1 %s Tf 0 0 0 rg %s TL 4 %s Td\n", num(size), num(size*1.25), num(h-4-size))
	for i, l := range lines {
		if len([]rune(l)) > maxChars {
			l = string([]rune(l)[:maxChars-1]) + "."
		}
		if i > 0 {
			b.WriteString("T* ")
		}
		b.Write(appendLiteral(nil, winAnsi(l)))
		b.WriteString(" Tj\n")
	}
	b.WriteString("ET")
	return []byte(b.String())
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// winAnsi encodes s for a WinAnsiEncoding font: Latin-1 code points as
// themselves (WinAnsi agrees with Latin-1 there), anything else as '?'.
func winAnsi(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 0x20 || (r > 0x7e && r < 0xa0) || r > 0xff {
			r = '?'
		}
		out = append(out, byte(r))
	}
	return out
}

// hexPad writes der in hexadecimal over the zeros of the /Contents
// placeholder.
func hexPad(dst, der []byte) {
	hex.Encode(dst, der)
	for i := 2 * len(der); i < len(dst); i++ {
		dst[i] = '0'
	}
}
