package cms

// BERToDER re-encodes BER (X.690 section 8) as DER where the two differ in
// ways that signers actually produce: indefinite lengths, non-minimal
// lengths, and constructed string types (a streamed eContent is a
// constructed OCTET STRING of chunks, as `openssl cms -sign -stream`
// writes it). The order of SET OF elements is kept: signed attributes are
// DER already, or their signature would not verify anyway.
//
// The error is ErrMalformed. The result is not checked further: parse it
// as DER.
func BERToDER(in []byte) ([]byte, error) {
	out, rest, err := berElement(in, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errBER
	}
	return out, nil
}

// ReadBERElement converts the first BER element of in, as BERToDER does,
// and returns what follows it (a PDF's /Contents pads a signature with
// zeros).
func ReadBERElement(in []byte) (der, rest []byte, err error) {
	return berElement(in, 0)
}

var errBER = malformed("neither DER nor BER")

const maxBERDepth = 64

// berElement converts the first element of in and returns what follows it.
func berElement(in []byte, depth int) (der, rest []byte, err error) {
	if depth > maxBERDepth || len(in) < 2 {
		return nil, nil, errBER
	}
	// Identifier octets (X.690 section 8.1.2), high tag numbers included.
	idLen := 1
	if in[0]&0x1f == 0x1f {
		for {
			if idLen >= len(in) || idLen > 5 {
				return nil, nil, errBER
			}
			c := in[idLen]
			idLen++
			if c&0x80 == 0 {
				break
			}
		}
	}
	id := in[:idLen]
	constructed := in[0]&0x20 != 0
	p := in[idLen:]
	if len(p) == 0 {
		return nil, nil, errBER
	}
	var content []byte
	switch l := p[0]; {
	case l == 0x80: // indefinite: constructed only, ends with 00 00
		if !constructed {
			return nil, nil, errBER
		}
		p = p[1:]
		var children [][]byte
		for {
			if len(p) < 2 {
				return nil, nil, errBER
			}
			if p[0] == 0 && p[1] == 0 {
				p = p[2:]
				break
			}
			child, r, err := berElement(p, depth+1)
			if err != nil {
				return nil, nil, err
			}
			children = append(children, child)
			p = r
		}
		return berConstructed(id, children), p, nil
	case l < 0x80:
		if int(l) > len(p)-1 {
			return nil, nil, errBER
		}
		content, rest = p[1:1+int(l)], p[1+int(l):]
	default:
		n := int(l & 0x7f)
		if n > 4 || n+1 > len(p) {
			return nil, nil, errBER
		}
		size := 0
		for _, c := range p[1 : 1+n] {
			size = size<<8 | int(c)
		}
		if size < 0 || size > len(p)-1-n {
			return nil, nil, errBER
		}
		content, rest = p[1+n:1+n+size], p[1+n+size:]
	}
	if !constructed {
		return tlvID(id, content), rest, nil
	}
	var children [][]byte
	for len(content) > 0 {
		child, r, err := berElement(content, depth+1)
		if err != nil {
			return nil, nil, err
		}
		children = append(children, child)
		content = r
	}
	return berConstructed(id, children), rest, nil
}

// berConstructed encodes a constructed element from its converted
// children; the constructed forms of universal string types become
// primitive (X.690 section 10.2).
func berConstructed(id []byte, children [][]byte) []byte {
	if len(id) == 1 && id[0]&0xc0 == 0 && isStringType(id[0]&0x1f) {
		var s []byte
		for _, c := range children {
			_, body := splitTLV(c)
			s = append(s, body...)
		}
		return tlvID([]byte{id[0] &^ 0x20}, s)
	}
	var body []byte
	for _, c := range children {
		body = append(body, c...)
	}
	return tlvID(id, body)
}

func isStringType(tag byte) bool {
	switch tag {
	case 3, 4, 12, 18, 19, 20, 21, 22, 25, 26, 27, 28, 30: // BIT, OCTET and character strings
		return true
	}
	return false
}

func tlvID(id, content []byte) []byte {
	out := make([]byte, 0, len(id)+5+len(content))
	out = append(out, id...)
	out = AppendLength(out, len(content))
	return append(out, content...)
}

// splitTLV returns the header and the content of one DER element made by
// this file (definite minimal lengths).
func splitTLV(der []byte) (header, content []byte) {
	i := 1
	if der[0]&0x1f == 0x1f {
		for der[i]&0x80 != 0 {
			i++
		}
		i++
	}
	if der[i] < 0x80 {
		return der[:i+1], der[i+1:]
	}
	n := int(der[i] & 0x7f)
	return der[:i+1+n], der[i+1+n:]
}
