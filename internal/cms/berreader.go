package cms

import (
	"io"
)

// A berReader walks BER (X.690 section 8) or DER over an io.ReaderAt
// without holding it: the skeleton of an envelope is read header by
// header, its small fields whole, its encrypted content in place. Lengths
// are definite or indefinite, strings primitive or constructed, as
// streaming writers (`openssl cms -stream`) give them.
type berReader struct {
	r    io.ReaderAt
	size int64
}

// A berTLV is the header of one element at off.
type berTLV struct {
	off    int64
	tag    byte // the first identifier octet
	hdr    int  // identifier and length octets
	length int64
}

const indefinite = -1

func (t berTLV) constructed() bool { return t.tag&0x20 != 0 }
func (t berTLV) content() int64    { return t.off + int64(t.hdr) }

var errTruncated = malformed("truncated BER")

func (b *berReader) readAt(p []byte, off int64) error {
	n, err := b.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return errTruncated
	}
	return err
}

// header reads the header of the element at off, which must end by limit.
func (b *berReader) header(off, limit int64) (berTLV, error) {
	var buf [16]byte
	n := min(limit-off, int64(len(buf)))
	if n < 2 {
		return berTLV{}, errTruncated
	}
	if err := b.readAt(buf[:n], off); err != nil {
		return berTLV{}, err
	}
	t := berTLV{off: off, tag: buf[0]}
	i := 1
	if buf[0]&0x1f == 0x1f { // high tag number (X.690 section 8.1.2.4)
		for {
			if i >= int(n) || i > 5 {
				return berTLV{}, errBER
			}
			c := buf[i]
			i++
			if c&0x80 == 0 {
				break
			}
		}
	}
	if i >= int(n) {
		return berTLV{}, errTruncated
	}
	l := buf[i]
	i++
	switch {
	case l == 0x80:
		if !t.constructed() {
			return berTLV{}, errBER
		}
		t.length = indefinite
	case l < 0x80:
		t.length = int64(l)
	default:
		k := int(l & 0x7f)
		if k > 8 || i+k > int(n) {
			return berTLV{}, errBER
		}
		var v uint64
		for _, c := range buf[i : i+k] {
			v = v<<8 | uint64(c)
		}
		i += k
		if v > uint64(limit-off-int64(i)) {
			return berTLV{}, errTruncated
		}
		t.length = int64(v)
	}
	t.hdr = i
	if t.length != indefinite && t.content()+t.length > limit {
		return berTLV{}, errTruncated
	}
	return t, nil
}

// end is the offset after the element t; limit bounds an indefinite one.
func (b *berReader) end(t berTLV, limit int64, depth int) (int64, error) {
	if t.length != indefinite {
		return t.content() + t.length, nil
	}
	if depth > maxBERDepth {
		return 0, errBER
	}
	c := b.open(t, limit)
	for {
		more, err := c.more()
		if err != nil {
			return 0, err
		}
		if !more {
			return c.close()
		}
		child, err := c.next()
		if err != nil {
			return 0, err
		}
		if err := c.skip(child, depth+1); err != nil {
			return 0, err
		}
	}
}

// A berCursor walks the children of a constructed element.
type berCursor struct {
	b     *berReader
	pos   int64
	end   int64 // the definite end; for an indefinite element, the limit
	indef bool
}

func (b *berReader) open(t berTLV, limit int64) *berCursor {
	c := &berCursor{b: b, pos: t.content(), end: limit, indef: t.length == indefinite}
	if !c.indef {
		c.end = t.content() + t.length
	}
	return c
}

// more tells whether another child follows (an end-of-contents octets
// pair ends an indefinite element).
func (c *berCursor) more() (bool, error) {
	if !c.indef {
		return c.pos < c.end, nil
	}
	var eoc [2]byte
	if c.end-c.pos < 2 {
		return false, errTruncated
	}
	if err := c.b.readAt(eoc[:], c.pos); err != nil {
		return false, err
	}
	return eoc != [2]byte{}, nil
}

func (c *berCursor) next() (berTLV, error) {
	t, err := c.b.header(c.pos, c.end)
	if err != nil {
		return berTLV{}, err
	}
	if t.tag == 0 {
		return berTLV{}, errBER // end-of-contents where an element should be
	}
	return t, nil
}

// skip moves past the child t.
func (c *berCursor) skip(t berTLV, depth int) error {
	e, err := c.b.end(t, c.end, depth)
	if err != nil {
		return err
	}
	c.pos = e
	return nil
}

// close checks that the children are all read and returns the offset
// after the element.
func (c *berCursor) close() (int64, error) {
	if !c.indef {
		if c.pos != c.end {
			return 0, errBER
		}
		return c.end, nil
	}
	more, err := c.more()
	if err != nil {
		return 0, err
	}
	if more {
		return 0, errBER
	}
	return c.pos + 2, nil
}

// expect reads the next child, which must have tag; it returns ok false
// (and reads nothing) when the next child has another tag or there is
// none, if optional.
func (c *berCursor) expect(tag byte, optional bool, what string) (berTLV, bool, error) {
	more, err := c.more()
	if err != nil {
		return berTLV{}, false, err
	}
	if !more {
		if optional {
			return berTLV{}, false, nil
		}
		return berTLV{}, false, malformed("no %s", what)
	}
	t, err := c.next()
	if err != nil {
		return berTLV{}, false, err
	}
	if t.tag != tag {
		if optional {
			return berTLV{}, false, nil
		}
		return berTLV{}, false, malformed("%s: tag %#x, want %#x", what, t.tag, tag)
	}
	return t, true, nil
}

// expectString is expect for a string type that BER may give primitive
// or constructed: tag is the primitive form.
func (c *berCursor) expectString(tag byte, optional bool, what string) (berTLV, bool, error) {
	t, ok, err := c.expect(tag, true, what)
	if err != nil || ok {
		return t, ok, err
	}
	return c.expect(tag|0x20, optional, what)
}

// readDER reads the child t whole, at most max bytes, as DER (BER
// converted), and moves past it.
func (c *berCursor) readDER(t berTLV, max int64, what string) ([]byte, error) {
	e, err := c.b.end(t, c.end, 0)
	if err != nil {
		return nil, err
	}
	if e-t.off > max {
		return nil, malformed("%s of %d bytes (at most %d)", what, e-t.off, max)
	}
	buf := make([]byte, e-t.off)
	if err := c.b.readAt(buf, t.off); err != nil {
		return nil, err
	}
	c.pos = e
	return BERToDER(buf)
}

// segments calls fn for each primitive piece of the string t in order
// (itself if primitive; the pieces of a constructed OCTET STRING,
// X.690 section 8.7.3, nested or not) and returns the offset after t.
func (b *berReader) segments(t berTLV, limit int64, depth int, fn func(off, n int64) error) (int64, error) {
	if !t.constructed() {
		if t.length > 0 {
			if err := fn(t.content(), t.length); err != nil {
				return 0, err
			}
		}
		return t.content() + t.length, nil
	}
	if depth > maxBERDepth {
		return 0, errBER
	}
	c := b.open(t, limit)
	for {
		more, err := c.more()
		if err != nil {
			return 0, err
		}
		if !more {
			return c.close()
		}
		child, err := c.next()
		if err != nil {
			return 0, err
		}
		if child.tag&^0x20 != 0x04 {
			return 0, malformed("a piece of a constructed OCTET STRING has tag %#x", child.tag)
		}
		if c.pos, err = b.segments(child, c.end, depth+1, fn); err != nil {
			return 0, err
		}
	}
}
