package cms

// EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083),
// written in one pass in constant memory, and read back: see decrypt.go.
// The algorithms are those of the policy in envpolicy.go.
//
// The output is DER with definite lengths, which a writer can only give
// when it knows the ciphertext's length before writing it: the caller
// declares the plaintext's size (a dossier's size is known), the GCM
// ciphertext has that size and the tag follows it in the mac field, the
// CBC ciphertext is the size padded to the next block.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ContentEncryption is the content-encryption algorithm of a new
// envelope. The zero value is AES-256-GCM.
type ContentEncryption int

const (
	// AES256GCM: AuthEnvelopedData, AES-256-GCM, 12-byte nonce, 16-byte
	// tag (RFC 5083, RFC 5084).
	AES256GCM ContentEncryption = iota
	// AES128GCM: the same with AES-128.
	AES128GCM
	// AES256CBC: EnvelopedData, AES-256-CBC (RFC 3565), for recipients
	// whose tools do not read AuthEnvelopedData. No integrity: sign the
	// content inside, or outside.
	AES256CBC
	// AES128CBC: the same with AES-128.
	AES128CBC
)

func (c ContentEncryption) alg() (contentAlg, bool) {
	var oid asn1.ObjectIdentifier
	switch c {
	case AES256GCM:
		oid = OIDAES256GCM
	case AES128GCM:
		oid = OIDAES128GCM
	case AES256CBC:
		oid = OIDAES256CBC
	case AES128CBC:
		oid = OIDAES128CBC
	default:
		return contentAlg{}, false
	}
	i := slices.IndexFunc(contentAlgs, func(a contentAlg) bool { return a.oid.Equal(oid) })
	return contentAlgs[i], true
}

func (c ContentEncryption) String() string {
	if a, ok := c.alg(); ok {
		return a.name
	}
	return fmt.Sprintf("ContentEncryption(%d)", int(c))
}

// A Recipient is one party that can decrypt an envelope: a certificate,
// or a key-encryption key shared beforehand.
type Recipient struct {
	// Cert is the recipient's encryption certificate. An RSA key gets a
	// KeyTransRecipientInfo with RSAES-OAEP, SHA-256 and MGF1-SHA-256
	// (RFC 8017, RFC 4055); an EC key (P-256, P-384, P-521) a
	// KeyAgreeRecipientInfo with ephemeral-static ECDH and the ANSI X9.63
	// KDF of the curve's hash (RFC 5753); an X25519 key the same with
	// HKDF-SHA256 (RFC 8418). The content-encryption key is wrapped with
	// AES-256 key wrap (RFC 3394). A key usage, when the certificate has
	// one, must allow keyEncipherment (RSA) or keyAgreement (ECDH).
	Cert *x509.Certificate
	// PKCS1v15 selects RSAES-PKCS1-v1_5 key transport, for a legacy
	// recipient that cannot do OAEP.
	PKCS1v15 bool
	// SubjectKeyID names the recipient by its certificate's
	// subjectKeyIdentifier instead of its issuer and serial number.
	SubjectKeyID bool

	// KEKID and KEK, instead of Cert: a KEKRecipientInfo (RFC 5652
	// section 6.2.3) whose content-encryption key is wrapped with KEK, an
	// AES key of 16, 24 or 32 bytes, under the key identifier KEKID.
	KEKID, KEK []byte
}

// EnvelopeOptions are the choices of a new envelope; the zero value (or
// nil) is AES-256-GCM over id-data with crypto/rand.
type EnvelopeOptions struct {
	Content     ContentEncryption
	ContentType asn1.ObjectIdentifier // nil: id-data
	Rand        io.Reader             // nil: crypto/rand
}

// Encrypt envelopes plaintext for the recipients: the DER ContentInfo of
// an AuthEnvelopedData (or EnvelopedData for CBC).
func Encrypt(plaintext []byte, recipients []Recipient, opts *EnvelopeOptions) ([]byte, error) {
	var out bytes.Buffer
	w, err := NewEnvelopeWriter(&out, int64(len(plaintext)), recipients, opts)
	if err != nil {
		return nil, err
	}
	out.Grow(int(w.Len()))
	if _, err := w.Write(plaintext); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// EncryptTo envelopes the size bytes of src for the recipients and writes
// the DER to dst, in constant memory; it returns the bytes written. src
// must give exactly size bytes.
func EncryptTo(dst io.Writer, src io.Reader, size int64, recipients []Recipient, opts *EnvelopeOptions) (int64, error) {
	w, err := NewEnvelopeWriter(dst, size, recipients, opts)
	if err != nil {
		return 0, err
	}
	if _, err := w.ReadFrom(src); err != nil {
		return w.written, err
	}
	if err := w.Close(); err != nil {
		return w.written, err
	}
	return w.written, nil
}

// An EnvelopeWriter encrypts what is written to it into an envelope of a
// declared size: everything before the ciphertext is written by
// [NewEnvelopeWriter], the ciphertext as the plaintext comes, the rest by
// Close. It holds one chunk of 64 KiB whatever the size.
type EnvelopeWriter struct {
	w       io.Writer
	size    int64 // plaintext declared
	n       int64 // plaintext taken
	total   int64 // DER length
	written int64
	mode    contentMode
	buf     []byte // nil until needed (chunk)
	bufLen  int
	fill    int
	ctr     cipher.Stream
	gh      *ghash
	cbc     cipher.BlockMode
	err     error
	closed  bool
}

var (
	errTooLong  = errors.New("more plaintext than the declared size")
	errTooShort = errors.New("less plaintext than the declared size")
	errClosed   = errors.New("write to a closed envelope writer")
)

// NewEnvelopeWriter writes to w the beginning of an envelope of size
// bytes of plaintext for the recipients, and returns the writer that
// takes the plaintext. Close writes the end; the envelope is whole only
// when Close returned nil. Errors: no recipient, a recipient key or
// certificate the policy refuses (ErrUnsupported), or w's.
func NewEnvelopeWriter(w io.Writer, size int64, recipients []Recipient, opts *EnvelopeOptions) (*EnvelopeWriter, error) {
	if opts == nil {
		opts = &EnvelopeOptions{}
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	alg, ok := opts.Content.alg()
	if !ok {
		return nil, unsupported("content encryption %v", opts.Content)
	}
	if len(recipients) == 0 {
		return nil, errors.New("no recipient")
	}
	if size < 0 || alg.mode == modeGCM && size > gcmMaxSize {
		return nil, fmt.Errorf("plaintext size %d out of range", size)
	}
	contentType := opts.ContentType
	if contentType == nil {
		contentType = OIDData
	}
	cek := make([]byte, alg.keyLen)
	if _, err := io.ReadFull(rnd, cek); err != nil {
		return nil, err
	}
	var ris [][]byte
	version := 0
	for i, r := range recipients {
		ri, v, err := r.info(cek, rnd)
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i, err)
		}
		ris = append(ris, ri)
		if v != 0 {
			version = 2 // RFC 5652 section 6.1
		}
	}
	slices.SortFunc(ris, bytes.Compare) // DER SET OF
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	// One chunk and a block (the CBC padding), made when first needed
	// (never by a writer given whole blocks in place); a content smaller
	// than a chunk needs no more than itself (a 10 KiB document does not
	// cost 64 KiB).
	e := &EnvelopeWriter{w: w, size: size, mode: alg.mode, bufLen: int(min(size, streamChunk)) + aes.BlockSize}
	var params []byte
	ctLen, trailer := size, int64(0)
	if alg.mode == modeGCM {
		nonce := make([]byte, gcmNonceSize)
		if _, err := io.ReadFull(rnd, nonce); err != nil {
			return nil, err
		}
		params = AppendTLV(nil, 0x30, AppendTLV(nil, 0x04, nonce), []byte{0x02, 0x01, gcmTagSize})
		if e.gh, err = newGHASH(block, nonce); err != nil {
			return nil, err
		}
		e.ctr = gcmCTR(block, nonce)
		trailer = 2 + gcmTagSize
		version = 0 // RFC 5083 section 2.1
	} else {
		iv := make([]byte, aes.BlockSize)
		if _, err := io.ReadFull(rnd, iv); err != nil {
			return nil, err
		}
		params = AppendTLV(nil, 0x04, iv)
		e.cbc = cipher.NewCBCEncrypter(block, iv)
		ctLen = (size/aes.BlockSize + 1) * aes.BlockSize // PKCS #7 padding, RFC 5652 section 6.3
	}
	ctOID := der(contentType)
	algID := AppendTLV(nil, 0x30, der(alg.oid), params)
	eciLen := int64(len(ctOID)+len(algID)) + tlvLen64(ctLen)
	risTLV := AppendTLV(nil, 0x31, ris...)
	bodyLen := 3 + int64(len(risTLV)) + tlvLen64(eciLen) + trailer
	typeOID := der(OIDEnveloped)
	if alg.mode == modeGCM {
		typeOID = der(OIDAuthEnvData)
	}
	ciLen := int64(len(typeOID)) + tlvLen64(tlvLen64(bodyLen))
	e.total = tlvLen64(ciLen)

	h := appendHeader64(nil, 0x30, ciLen)
	h = append(h, typeOID...)
	h = appendHeader64(h, 0xa0, tlvLen64(bodyLen))
	h = appendHeader64(h, 0x30, bodyLen)
	h = append(h, 0x02, 0x01, byte(version))
	h = append(h, risTLV...)
	h = appendHeader64(h, 0x30, eciLen)
	h = append(h, ctOID...)
	h = append(h, algID...)
	h = appendHeader64(h, 0x80, ctLen) // [0] IMPLICIT EncryptedContent, primitive
	if err := e.out(h); err != nil {
		return nil, err
	}
	return e, nil
}

// Len is the length of the whole envelope, known from the start.
func (e *EnvelopeWriter) Len() int64 { return e.total }

func (e *EnvelopeWriter) out(p []byte) error {
	if e.err != nil {
		return e.err
	}
	n, err := e.w.Write(p)
	e.written += int64(n)
	if err != nil {
		e.err = err
	}
	return err
}

// Write encrypts p. More than the declared size is an error.
func (e *EnvelopeWriter) Write(p []byte) (int, error) {
	if e.closed {
		return 0, errClosed
	}
	if e.err != nil {
		return 0, e.err
	}
	if int64(len(p)) > e.size-e.n {
		e.err = errTooLong
		return 0, e.err
	}
	e.grow()
	taken := 0
	for len(p) > 0 {
		c := copy(e.buf[e.fill:min(streamChunk, len(e.buf))], p)
		e.fill += c
		p = p[c:]
		taken += c
		e.n += int64(c)
		if e.fill == streamChunk {
			if err := e.chunk(e.buf[:streamChunk]); err != nil {
				return taken, err
			}
			e.fill = 0
		}
	}
	return taken, nil
}

// ReadFrom encrypts what r gives until its end, reading into the writer's
// own chunk (io.Copy calls it).
func (e *EnvelopeWriter) ReadFrom(r io.Reader) (int64, error) {
	if e.closed {
		return 0, errClosed
	}
	e.grow()
	var total int64
	for e.err == nil {
		room := min(int64(streamChunk-e.fill), e.size-e.n)
		if room == 0 {
			// At the declared size: r must be at its end.
			var one [1]byte
			n, err := r.Read(one[:])
			switch {
			case n > 0:
				e.err = errTooLong
			case err == io.EOF:
				return total, nil
			case err != nil:
				return total, err
			}
			continue
		}
		n, err := r.Read(e.buf[e.fill : e.fill+int(room)])
		e.fill += n
		e.n += int64(n)
		total += int64(n)
		if e.fill == streamChunk {
			if err := e.chunk(e.buf[:streamChunk]); err != nil {
				return total, err
			}
			e.fill = 0
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	return total, e.err
}

// WriteInPlace encrypts p where it is — p holds its ciphertext when it
// returns, which Write may not do (io.Writer) — and writes it, saving the
// copy into the writer's chunk: for a caller whose buffers are its own (a
// pipeline handing over chunks). p must be whole 16-byte blocks, except
// at the content's end; otherwise, and for CBC, or after a Write that
// left part of a chunk, it is written as Write does (and left as it was).
func (e *EnvelopeWriter) WriteInPlace(p []byte) (int, error) {
	if e.mode != modeGCM || e.fill != 0 || e.closed || e.err != nil ||
		int64(len(p)) > e.size-e.n || (len(p)%16 != 0 && e.n+int64(len(p)) != e.size) {
		return e.Write(p)
	}
	e.n += int64(len(p))
	if err := e.chunk(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// grow makes the writer's chunk.
func (e *EnvelopeWriter) grow() {
	if e.buf == nil {
		e.buf = make([]byte, e.bufLen)
	}
}

func (e *EnvelopeWriter) chunk(p []byte) error {
	if e.mode == modeGCM {
		e.ctr.XORKeyStream(p, p)
		e.gh.add(p)
	} else {
		e.cbc.CryptBlocks(p, p)
	}
	return e.out(p)
}

// Close encrypts the rest and writes the end of the envelope: the CBC
// padding, or the GCM tag. It fails when less than the declared size was
// written.
func (e *EnvelopeWriter) Close() error {
	if e.closed {
		return e.err
	}
	e.closed = true
	if e.err != nil {
		return e.err
	}
	if e.n != e.size {
		e.err = errTooShort
		return e.err
	}
	if e.mode != modeGCM {
		e.grow() // CBC pads the last block there
	}
	last := e.buf[:e.fill]
	if e.mode == modeGCM {
		e.ctr.XORKeyStream(last, last)
		e.gh.add(last)
		if err := e.out(last); err != nil {
			return err
		}
		tag := e.gh.sum(0, uint64(e.size))
		return e.out(append([]byte{0x04, gcmTagSize}, tag[:]...))
	}
	pad := aes.BlockSize - e.fill%aes.BlockSize
	for range pad {
		last = append(last, byte(pad))
	}
	e.cbc.CryptBlocks(last, last)
	return e.out(last)
}

// DER of lengths beyond 4 GiB (AppendLength stops there).

func lenOfLen64(n int64) int {
	if n < 0x80 {
		return 1
	}
	c := 1
	for ; n > 0; n >>= 8 {
		c++
	}
	return c
}

func tlvLen64(n int64) int64 { return 1 + int64(lenOfLen64(n)) + n }

func appendHeader64(dst []byte, tag byte, n int64) []byte {
	dst = append(dst, tag)
	if n < 0x80 {
		return append(dst, byte(n))
	}
	l := lenOfLen64(n) - 1
	dst = append(dst, 0x80|byte(l))
	for i := l - 1; i >= 0; i-- {
		dst = append(dst, byte(n>>(8*i)))
	}
	return dst
}

func der(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err) // OIDs and integers of our own
	}
	return b
}
