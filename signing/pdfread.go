package signing

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// A reader of the parts of a PDF (ISO 32000-1) that signing and
// verification need: the cross-reference sections (tables and streams,
// section 7.5.4 and 7.5.8, hybrid files included), indirect objects (in
// the file and in object streams, section 7.5.7), the trailer, the
// catalog, the page tree and the interactive form. It never reconstructs
// a damaged file: offsets must be right, as signing tools keep them.

// PDF objects (section 7.3) as read.
type (
	pdfObj    any // nil (null), bool, int64, pdfReal, pdfName, pdfString, pdfArray, pdfDict, pdfRef, *pdfStream
	pdfReal   string
	pdfName   string
	pdfString []byte
	pdfArray  []pdfObj
	pdfDict   map[pdfName]pdfObj
	pdfRef    struct{ num, gen int }
)

type pdfStream struct {
	dict pdfDict
	data []byte // as stored (still encoded)
}

// Limits that keep a hostile file from exhausting memory or the stack.
const (
	maxPDFDepth       = 64        // nesting of arrays and dictionaries
	maxXRefSections   = 1000      // /Prev chain
	maxObjectNumber   = 10 << 20  // highest object number accepted
	maxXRefEntries    = 2 << 20   // cross-reference entries of all sections
	maxDecodedStream  = 64 << 20  // bytes of one decoded stream
	maxDecodedTotal   = 256 << 20 // bytes decoded from all streams of a file
	maxResolveHops    = 32        // references followed to reach a direct object
	maxPageTreeVisits = 1 << 16
)

type xrefEntry struct {
	kind   byte  // 1: at offset in the file; 2: the index-th object of object stream `stream`
	offset int64 // kind 1
	gen    int
	stream int // kind 2
	index  int // kind 2
}

// pdfDoc is a PDF file opened for reading.
type pdfDoc struct {
	data       []byte
	xref       map[int]xrefEntry
	trailer    pdfDict
	startxref  int64 // offset of the last cross-reference section
	xrefStream bool  // the last section is a cross-reference stream
	objects    map[int]pdfObj
	objStms    map[int]*objStm
	loading    map[int]bool
	decoded    int // bytes decoded so far, against maxDecodedTotal
}

type objStm struct {
	data    []byte
	offsets []int // of each object, from the start of data
}

func pdfErr(format string, args ...any) error {
	return fmt.Errorf("%w: PDF: "+format, append([]any{ErrMalformed}, args...)...)
}

// isPDF tells whether data looks like a PDF: the header within the first
// kilobyte (section 7.5.2; readers tolerate leading bytes). A DER
// SEQUENCE is CMS, even when the document it holds is a PDF.
func isPDF(data []byte) bool {
	if len(data) == 0 || data[0] == 0x30 {
		return false
	}
	return bytes.Contains(data[:min(len(data), 1024)], []byte("%PDF-"))
}

// readPDF opens data: the trailer and every cross-reference section.
func readPDF(data []byte) (*pdfDoc, error) {
	if !isPDF(data) {
		return nil, pdfErr("no %%PDF- header")
	}
	d := &pdfDoc{data: data, xref: map[int]xrefEntry{}, objects: map[int]pdfObj{}, objStms: map[int]*objStm{}, loading: map[int]bool{}}
	tail := data[max(0, len(data)-2048):]
	i := bytes.LastIndex(tail, []byte("startxref"))
	if i < 0 {
		return nil, pdfErr("no startxref")
	}
	l := &lexer{data: data, pos: len(data) - len(tail) + i + len("startxref")}
	off, ok := l.readInt()
	if !ok || off < 0 || off >= int64(len(data)) {
		return nil, pdfErr("bad startxref offset")
	}
	d.startxref = off
	seen := map[int64]bool{}
	for n := 0; ; n++ {
		if n >= maxXRefSections || seen[off] {
			return nil, pdfErr("cross-reference sections loop")
		}
		seen[off] = true
		trailer, isStream, err := d.readXRefSection(off)
		if err != nil {
			return nil, err
		}
		if d.trailer == nil {
			d.trailer, d.xrefStream = trailer, isStream
		}
		// A hybrid file (section 7.5.8.4): the table's trailer points at
		// a stream holding the compressed objects.
		if stm, ok := trailer["XRefStm"].(int64); ok && !isStream && !seen[stm] {
			seen[stm] = true
			if _, _, err := d.readXRefSection(stm); err != nil {
				return nil, err
			}
		}
		prev, ok := trailer["Prev"].(int64)
		if !ok {
			break
		}
		if prev < 0 || prev >= int64(len(data)) {
			return nil, pdfErr("bad /Prev offset %d", prev)
		}
		off = prev
	}
	if _, ok := d.trailer["Root"].(pdfRef); !ok {
		return nil, pdfErr("the trailer has no /Root")
	}
	return d, nil
}

// readXRefSection reads the section at off; entries already known (from
// a later section) win.
func (d *pdfDoc) readXRefSection(off int64) (pdfDict, bool, error) {
	l := &lexer{data: d.data, pos: int(off)}
	l.skipSpace()
	if bytes.HasPrefix(d.data[l.pos:], []byte("xref")) {
		l.pos += 4
		for {
			l.skipSpace()
			if bytes.HasPrefix(d.data[l.pos:], []byte("trailer")) {
				l.pos += len("trailer")
				break
			}
			start, ok1 := l.readInt()
			count, ok2 := l.readInt()
			if !ok1 || !ok2 || start < 0 || count < 0 || start+count > maxObjectNumber {
				return nil, false, pdfErr("bad cross-reference subsection at %d", l.pos)
			}
			for i := range int(count) {
				offset, ok1 := l.readInt()
				gen, ok2 := l.readInt()
				l.skipSpace()
				if !ok1 || !ok2 || l.pos >= len(d.data) || (d.data[l.pos] != 'n' && d.data[l.pos] != 'f') {
					return nil, false, pdfErr("bad cross-reference entry at %d", l.pos)
				}
				kind := d.data[l.pos]
				l.pos++
				num := int(start) + i
				if _, known := d.xref[num]; known {
					continue
				}
				if len(d.xref) >= maxXRefEntries {
					return nil, false, pdfErr("more than %d objects", maxXRefEntries)
				}
				if kind == 'n' {
					d.xref[num] = xrefEntry{kind: 1, offset: offset, gen: int(gen)}
				} else {
					d.xref[num] = xrefEntry{} // free
				}
			}
		}
		obj, err := l.readObject(0)
		if err != nil {
			return nil, false, err
		}
		trailer, ok := obj.(pdfDict)
		if !ok {
			return nil, false, pdfErr("the trailer is not a dictionary")
		}
		return trailer, false, nil
	}
	// A cross-reference stream (section 7.5.8).
	_, obj, err := d.readIndirectAt(off)
	if err != nil {
		return nil, false, err
	}
	st, ok := obj.(*pdfStream)
	if !ok || st.dict["Type"] != pdfName("XRef") {
		return nil, false, pdfErr("no cross-reference at offset %d", off)
	}
	data, err := d.decodeStream(st)
	if err != nil {
		return nil, false, err
	}
	w, ok := st.dict["W"].(pdfArray)
	if !ok || len(w) != 3 {
		return nil, false, pdfErr("cross-reference stream /W")
	}
	var widths [3]int
	rowLen := 0
	for i, x := range w {
		n, ok := x.(int64)
		if !ok || n < 0 || n > 8 {
			return nil, false, pdfErr("cross-reference stream /W")
		}
		widths[i] = int(n)
		rowLen += int(n)
	}
	size, _ := st.dict["Size"].(int64)
	index := pdfArray{int64(0), size}
	if idx, ok := st.dict["Index"].(pdfArray); ok {
		index = idx
	}
	if len(index)%2 != 0 || rowLen == 0 {
		return nil, false, pdfErr("cross-reference stream /Index")
	}
	pos := 0
	for i := 0; i < len(index); i += 2 {
		start, ok1 := index[i].(int64)
		count, ok2 := index[i+1].(int64)
		if !ok1 || !ok2 || start < 0 || count < 0 || start+count > maxObjectNumber {
			return nil, false, pdfErr("cross-reference stream /Index")
		}
		for j := range int(count) {
			if pos+rowLen > len(data) {
				return nil, false, pdfErr("cross-reference stream too short")
			}
			var f [3]int64
			for k := range 3 {
				for _, c := range data[pos : pos+widths[k]] {
					f[k] = f[k]<<8 | int64(c)
				}
				pos += widths[k]
			}
			if widths[0] == 0 {
				f[0] = 1 // type 1 is the default
			}
			num := int(start) + j
			if _, known := d.xref[num]; known {
				continue
			}
			if len(d.xref) >= maxXRefEntries {
				return nil, false, pdfErr("more than %d objects", maxXRefEntries)
			}
			switch f[0] {
			case 1:
				d.xref[num] = xrefEntry{kind: 1, offset: f[1], gen: int(f[2])}
			case 2:
				d.xref[num] = xrefEntry{kind: 2, stream: int(f[1]), index: int(f[2])}
			default:
				d.xref[num] = xrefEntry{}
			}
		}
	}
	return st.dict, true, nil
}

// readIndirectAt reads "num gen obj ... endobj" at off.
func (d *pdfDoc) readIndirectAt(off int64) (pdfRef, pdfObj, error) {
	if off < 0 || off >= int64(len(d.data)) {
		return pdfRef{}, nil, pdfErr("object offset %d outside the file", off)
	}
	l := &lexer{data: d.data, pos: int(off)}
	num, ok1 := l.readInt()
	gen, ok2 := l.readInt()
	if !ok1 || !ok2 || !l.keyword("obj") {
		return pdfRef{}, nil, pdfErr("no object at offset %d", off)
	}
	ref := pdfRef{int(num), int(gen)}
	obj, err := l.readObject(0)
	if err != nil {
		return ref, nil, err
	}
	dict, isDict := obj.(pdfDict)
	if isDict && l.keyword("stream") {
		// The keyword is followed by CRLF or LF (section 7.3.8.1).
		if l.pos < len(d.data) && d.data[l.pos] == '\r' {
			l.pos++
		}
		if l.pos < len(d.data) && d.data[l.pos] == '\n' {
			l.pos++
		}
		length, err := d.streamLength(dict["Length"])
		if err != nil {
			return ref, nil, err
		}
		if length < 0 || length > int64(len(d.data)-l.pos) {
			return ref, nil, pdfErr("stream of object %d: bad /Length %d", num, length)
		}
		st := &pdfStream{dict: dict, data: d.data[l.pos : l.pos+int(length)]}
		l.pos += int(length)
		if !l.keyword("endstream") {
			return ref, nil, pdfErr("stream of object %d: no endstream after /Length bytes", num)
		}
		return ref, st, nil
	}
	return ref, obj, nil
}

func (d *pdfDoc) streamLength(v pdfObj) (int64, error) {
	if ref, ok := v.(pdfRef); ok {
		if d.loading[ref.num] {
			return 0, pdfErr("stream /Length refers to itself")
		}
		obj, err := d.object(ref.num)
		if err != nil {
			return 0, err
		}
		v = obj
	}
	n, ok := v.(int64)
	if !ok {
		return 0, pdfErr("stream /Length is not an integer")
	}
	return n, nil
}

// object returns indirect object num (null when it does not exist,
// section 7.3.10).
func (d *pdfDoc) object(num int) (pdfObj, error) {
	if obj, ok := d.objects[num]; ok {
		return obj, nil
	}
	e, ok := d.xref[num]
	if !ok || e.kind == 0 {
		return nil, nil
	}
	if d.loading[num] {
		return nil, pdfErr("object %d refers to itself", num)
	}
	if len(d.loading) >= maxResolveHops {
		return nil, pdfErr("objects nested too deep")
	}
	d.loading[num] = true
	defer delete(d.loading, num)
	var obj pdfObj
	switch e.kind {
	case 1:
		ref, o, err := d.readIndirectAt(e.offset)
		if err != nil {
			return nil, err
		}
		if ref.num != num {
			return nil, pdfErr("the cross-reference of object %d points at object %d", num, ref.num)
		}
		obj = o
	case 2:
		stm, err := d.objectStream(e.stream)
		if err != nil {
			return nil, err
		}
		if e.index < 0 || e.index >= len(stm.offsets) {
			return nil, pdfErr("object %d: index %d outside its object stream", num, e.index)
		}
		l := &lexer{data: stm.data, pos: stm.offsets[e.index]}
		if obj, err = l.readObject(0); err != nil {
			return nil, err
		}
	}
	d.objects[num] = obj
	return obj, nil
}

// objectStream decodes object stream num (section 7.5.7).
func (d *pdfDoc) objectStream(num int) (*objStm, error) {
	if s, ok := d.objStms[num]; ok {
		return s, nil
	}
	e, ok := d.xref[num]
	if !ok || e.kind != 1 {
		return nil, pdfErr("object stream %d is not in the file", num)
	}
	obj, err := d.object(num)
	if err != nil {
		return nil, err
	}
	st, ok := obj.(*pdfStream)
	if !ok || st.dict["Type"] != pdfName("ObjStm") {
		return nil, pdfErr("object %d is not an object stream", num)
	}
	data, err := d.decodeStream(st)
	if err != nil {
		return nil, err
	}
	n, ok1 := st.dict["N"].(int64)
	first, ok2 := st.dict["First"].(int64)
	if !ok1 || !ok2 || n < 0 || first < 0 || first > int64(len(data)) || n > int64(len(data)) {
		return nil, pdfErr("object stream %d: bad /N or /First", num)
	}
	s := &objStm{data: data}
	l := &lexer{data: data[:first]}
	for range n {
		_, ok1 := l.readInt()
		off, ok2 := l.readInt()
		if !ok1 || !ok2 || off < 0 || first+off > int64(len(data)) {
			return nil, pdfErr("object stream %d: bad header", num)
		}
		s.offsets = append(s.offsets, int(first+off))
	}
	d.objStms[num] = s
	return s, nil
}

// decodeStream applies the stream's filters: none, or FlateDecode with or
// without a PNG predictor (section 7.4.4), which is what cross-reference
// and object streams use.
func (d *pdfDoc) decodeStream(st *pdfStream) ([]byte, error) {
	filter, err := d.resolve(st.dict["Filter"])
	if err != nil {
		return nil, err
	}
	if arr, ok := filter.(pdfArray); ok && len(arr) == 1 {
		filter = arr[0]
	}
	switch filter {
	case nil:
		return st.data, nil
	case pdfName("FlateDecode"):
	default:
		return nil, pdfErr("unsupported stream filter %v", filter)
	}
	zr, err := zlib.NewReader(bytes.NewReader(st.data))
	if err != nil {
		return nil, pdfErr("FlateDecode: %v", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxDecodedStream+1))
	if err != nil && len(out) == 0 {
		return nil, pdfErr("FlateDecode: %v", err)
	}
	if len(out) > maxDecodedStream {
		return nil, pdfErr("a stream decodes to more than %d bytes", maxDecodedStream)
	}
	if d.decoded += len(out); d.decoded > maxDecodedTotal {
		return nil, pdfErr("the streams decode to more than %d bytes", maxDecodedTotal)
	}
	parms, _ := d.resolve(st.dict["DecodeParms"])
	if arr, ok := parms.(pdfArray); ok && len(arr) == 1 {
		parms = arr[0]
	}
	p, _ := parms.(pdfDict)
	pred, _ := p["Predictor"].(int64)
	if pred < 10 {
		if pred > 1 {
			return nil, pdfErr("unsupported predictor %d", pred)
		}
		return out, nil
	}
	cols, ok := p["Columns"].(int64)
	if !ok {
		cols = 1
	}
	colors, ok := p["Colors"].(int64)
	if !ok {
		colors = 1
	}
	bpc, ok := p["BitsPerComponent"].(int64)
	if !ok {
		bpc = 8
	}
	if cols < 1 || cols > 1<<16 || colors < 1 || colors > 32 || (bpc != 1 && bpc != 2 && bpc != 4 && bpc != 8 && bpc != 16) {
		return nil, pdfErr("bad predictor parameters")
	}
	return unpredictPNG(out, int((cols*colors*bpc+7)/8), int(max(1, colors*bpc/8)))
}

// unpredictPNG undoes PNG row filters (RFC 2083 section 6).
func unpredictPNG(in []byte, rowLen, bpp int) ([]byte, error) {
	if len(in)%(rowLen+1) != 0 {
		return nil, pdfErr("predicted data is not whole rows")
	}
	out := make([]byte, 0, len(in)/(rowLen+1)*rowLen)
	prev := make([]byte, rowLen)
	for len(in) > 0 {
		ft, row := in[0], slices.Clone(in[1:rowLen+1])
		in = in[rowLen+1:]
		for i := range row {
			var left, upLeft byte
			if i >= bpp {
				left, upLeft = row[i-bpp], prev[i-bpp]
			}
			up := prev[i]
			switch ft {
			case 0:
			case 1:
				row[i] += left
			case 2:
				row[i] += up
			case 3:
				row[i] += byte((int(left) + int(up)) / 2)
			case 4:
				row[i] += paeth(left, up, upLeft)
			default:
				return nil, pdfErr("PNG filter type %d", ft)
			}
		}
		out = append(out, row...)
		prev = row
	}
	return out, nil
}

func paeth(a, b, c byte) byte {
	p := int(a) + int(b) - int(c)
	pa, pb, pc := abs(p-int(a)), abs(p-int(b)), abs(p-int(c))
	switch {
	case pa <= pb && pa <= pc:
		return a
	case pb <= pc:
		return b
	}
	return c
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// resolve follows references to a direct object.
func (d *pdfDoc) resolve(v pdfObj) (pdfObj, error) {
	for range maxResolveHops {
		ref, ok := v.(pdfRef)
		if !ok {
			return v, nil
		}
		obj, err := d.object(ref.num)
		if err != nil {
			return nil, err
		}
		v = obj
	}
	return nil, pdfErr("too many references in a row")
}

func (d *pdfDoc) dict(v pdfObj) (pdfDict, error) {
	obj, err := d.resolve(v)
	if err != nil {
		return nil, err
	}
	switch o := obj.(type) {
	case pdfDict:
		return o, nil
	case *pdfStream:
		return o.dict, nil
	}
	return nil, nil
}

func (d *pdfDoc) catalog() (pdfRef, pdfDict, error) {
	ref := d.trailer["Root"].(pdfRef)
	cat, err := d.dict(ref)
	if err != nil {
		return ref, nil, err
	}
	if cat == nil {
		return ref, nil, pdfErr("the /Root is not a dictionary")
	}
	return ref, cat, nil
}

// page returns the reference and dictionary of page n (1 is the first,
// -1 the last) by walking the page tree (section 7.7.3).
func (d *pdfDoc) page(n int) (pdfRef, pdfDict, error) {
	_, cat, err := d.catalog()
	if err != nil {
		return pdfRef{}, nil, err
	}
	root, err := d.dict(cat["Pages"])
	if err != nil || root == nil {
		return pdfRef{}, nil, pdfErr("no page tree")
	}
	count, _ := root["Count"].(int64)
	if n < 0 {
		n = int(count) + 1 + n
	}
	if n < 1 || int64(n) > count {
		return pdfRef{}, nil, badRequest("the PDF has %d pages, not a page %d", count, n)
	}
	visits := 0
	node := root
	for {
		kids, err := d.resolve(node["Kids"])
		if err != nil {
			return pdfRef{}, nil, err
		}
		arr, ok := kids.(pdfArray)
		if !ok {
			return pdfRef{}, nil, pdfErr("a page tree node has no /Kids")
		}
		descended := false
		for _, k := range arr {
			if visits++; visits > maxPageTreeVisits {
				return pdfRef{}, nil, pdfErr("page tree too large or cyclic")
			}
			ref, ok := k.(pdfRef)
			if !ok {
				return pdfRef{}, nil, pdfErr("a page tree kid is not a reference")
			}
			kid, err := d.dict(ref)
			if err != nil {
				return pdfRef{}, nil, err
			}
			if kid == nil {
				return pdfRef{}, nil, pdfErr("a page tree kid is not a dictionary")
			}
			if kid["Type"] == pdfName("Pages") {
				c, _ := kid["Count"].(int64)
				if int64(n) <= c {
					node, descended = kid, true
					break
				}
				n -= int(c)
				continue
			}
			if n == 1 {
				return ref, kid, nil
			}
			n--
		}
		if !descended {
			return pdfRef{}, nil, pdfErr("the page tree's /Count is wrong")
		}
	}
}

// lexer reads PDF tokens and objects (section 7.2, 7.3).
type lexer struct {
	data []byte
	pos  int
}

func isSpace(c byte) bool {
	return c == 0 || c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' '
}

func isDelim(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '[', ']', '{', '}', '/', '%':
		return true
	}
	return false
}

func (l *lexer) skipSpace() {
	for l.pos < len(l.data) {
		c := l.data[l.pos]
		if c == '%' {
			for l.pos < len(l.data) && l.data[l.pos] != '\n' && l.data[l.pos] != '\r' {
				l.pos++
			}
			continue
		}
		if !isSpace(c) {
			return
		}
		l.pos++
	}
}

// word reads a run of regular characters.
func (l *lexer) word() []byte {
	start := l.pos
	for l.pos < len(l.data) && !isSpace(l.data[l.pos]) && !isDelim(l.data[l.pos]) {
		l.pos++
	}
	return l.data[start:l.pos]
}

// keyword consumes kw if it is the next token.
func (l *lexer) keyword(kw string) bool {
	l.skipSpace()
	save := l.pos
	if string(l.word()) == kw {
		return true
	}
	l.pos = save
	return false
}

func (l *lexer) readInt() (int64, bool) {
	l.skipSpace()
	save := l.pos
	w := l.word()
	n, err := strconv.ParseInt(string(w), 10, 64)
	if err != nil || len(w) == 0 || w[0] == '+' {
		l.pos = save
		return 0, false
	}
	return n, true
}

func (l *lexer) readObject(depth int) (pdfObj, error) {
	if depth > maxPDFDepth {
		return nil, pdfErr("objects nested too deep")
	}
	l.skipSpace()
	if l.pos >= len(l.data) {
		return nil, pdfErr("unexpected end of data")
	}
	switch c := l.data[l.pos]; c {
	case '/':
		l.pos++
		return l.readName()
	case '(':
		l.pos++
		return l.readLiteral()
	case '<':
		if l.pos+1 < len(l.data) && l.data[l.pos+1] == '<' {
			l.pos += 2
			return l.readDict(depth)
		}
		l.pos++
		return l.readHex()
	case '[':
		l.pos++
		arr := pdfArray{}
		for {
			l.skipSpace()
			if l.pos >= len(l.data) {
				return nil, pdfErr("unterminated array")
			}
			if l.data[l.pos] == ']' {
				l.pos++
				return arr, nil
			}
			v, err := l.readObject(depth + 1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
	case ')', '>', ']', '{', '}':
		return nil, pdfErr("unexpected %q at offset %d", c, l.pos)
	}
	w := l.word()
	switch string(w) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null":
		return nil, nil
	case "":
		return nil, pdfErr("unexpected byte at offset %d", l.pos)
	}
	if n, err := strconv.ParseInt(string(w), 10, 64); err == nil {
		// "num gen R" is a reference (section 7.3.10).
		save := l.pos
		if gen, ok := l.readInt(); ok && n >= 0 && gen >= 0 && gen <= 65535 && n <= maxObjectNumber && l.keyword("R") {
			return pdfRef{int(n), int(gen)}, nil
		}
		l.pos = save
		return n, nil
	}
	if _, err := strconv.ParseFloat(string(w), 64); err == nil && validReal(w) {
		return pdfReal(w), nil
	}
	return nil, pdfErr("unexpected token %q at offset %d", truncate(w), l.pos-len(w))
}

func validReal(w []byte) bool {
	for _, c := range w {
		if (c < '0' || c > '9') && c != '.' && c != '-' && c != '+' {
			return false
		}
	}
	return true
}

func truncate(w []byte) string {
	if len(w) > 20 {
		return string(w[:20]) + "..."
	}
	return string(w)
}

func (l *lexer) readDict(depth int) (pdfObj, error) {
	d := pdfDict{}
	for {
		l.skipSpace()
		if l.pos+1 < len(l.data) && l.data[l.pos] == '>' && l.data[l.pos+1] == '>' {
			l.pos += 2
			return d, nil
		}
		if l.pos >= len(l.data) || l.data[l.pos] != '/' {
			return nil, pdfErr("a dictionary key is not a name at offset %d", l.pos)
		}
		l.pos++
		key, err := l.readName()
		if err != nil {
			return nil, err
		}
		v, err := l.readObject(depth + 1)
		if err != nil {
			return nil, err
		}
		d[key] = v
	}
}

// readName reads a name after its slash, #xx escapes decoded (section
// 7.3.5).
func (l *lexer) readName() (pdfName, error) {
	w := l.word()
	if !bytes.ContainsRune(w, '#') {
		return pdfName(w), nil
	}
	var out []byte
	for i := 0; i < len(w); i++ {
		if w[i] == '#' && i+2 < len(w) {
			v, err := strconv.ParseUint(string(w[i+1:i+3]), 16, 8)
			if err != nil {
				return "", pdfErr("bad name escape")
			}
			out = append(out, byte(v))
			i += 2
			continue
		}
		out = append(out, w[i])
	}
	return pdfName(out), nil
}

// readLiteral reads a literal string after its opening parenthesis
// (section 7.3.4.2).
func (l *lexer) readLiteral() (pdfObj, error) {
	var out []byte
	depth := 1
	for l.pos < len(l.data) {
		c := l.data[l.pos]
		l.pos++
		switch c {
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return pdfString(out), nil
			}
		case '\\':
			if l.pos >= len(l.data) {
				return nil, pdfErr("unterminated string")
			}
			e := l.data[l.pos]
			l.pos++
			switch e {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case '\r':
				if l.pos < len(l.data) && l.data[l.pos] == '\n' {
					l.pos++
				}
				continue
			case '\n':
				continue
			default:
				if e >= '0' && e <= '7' {
					v := int(e - '0')
					for k := 0; k < 2 && l.pos < len(l.data) && l.data[l.pos] >= '0' && l.data[l.pos] <= '7'; k++ {
						v = v*8 + int(l.data[l.pos]-'0')
						l.pos++
					}
					c = byte(v)
				} else {
					c = e
				}
			}
		}
		out = append(out, c)
	}
	return nil, pdfErr("unterminated string")
}

// readHex reads a hexadecimal string after its '<' (section 7.3.4.3).
func (l *lexer) readHex() (pdfObj, error) {
	var out []byte
	var hi byte
	half := false
	for l.pos < len(l.data) {
		c := l.data[l.pos]
		l.pos++
		if c == '>' {
			if half {
				out = append(out, hi<<4)
			}
			return pdfString(out), nil
		}
		if isSpace(c) {
			continue
		}
		v, ok := hexVal(c)
		if !ok {
			return nil, pdfErr("bad hexadecimal string")
		}
		if half {
			out = append(out, hi<<4|v)
		} else {
			hi = v
		}
		half = !half
	}
	return nil, pdfErr("unterminated hexadecimal string")
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
