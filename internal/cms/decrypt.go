package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"io"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/poly1305"
)

// Reading EnvelopedData and AuthEnvelopedData, DER or BER, from an
// io.ReaderAt in constant memory.
//
// What is released, and when:
//
//   - AuthEnvelopedData (GCM, ChaCha20-Poly1305): two passes over the
//     source. The first checks the tag over the whole ciphertext and
//     writes nothing; the second decrypts and writes, and checks the tag
//     again, so that a source that changed between the passes is an
//     error too. Nothing unauthenticated is written unless the source
//     changes under the reader; on any error, discard what was written.
//   - EnvelopedData (CBC): no integrity to check. The plaintext is written
//     as it is decrypted, in one pass, and the padding checked at the
//     end: on an error, discard what was written. Such content is only
//     as trustworthy as a signature inside it.
//   - [Decrypt], in memory, returns the plaintext only when all is well.

// DecryptOptions are the choices of a decryption; the zero value (or nil)
// is the policy without legacy algorithms, with crypto/rand.
type DecryptOptions struct {
	// AllowLegacy accepts Triple-DES content encryption and RSAES-OAEP
	// with SHA-1, for reading old envelopes.
	AllowLegacy bool
	// Rand draws the random key of the PKCS #1 v1.5 fallback; nil:
	// crypto/rand.
	Rand io.Reader
}

// An Envelope describes a decrypted envelope.
type Envelope struct {
	// Authenticated: an AuthEnvelopedData whose tag verified.
	Authenticated bool
	ContentType   asn1.ObjectIdentifier // of the plaintext; id-data mostly
	Algorithm     string                // the content encryption: "AES-256-GCM"
	Size          int64                 // of the plaintext
}

// Decrypt opens in, a DER or BER ContentInfo of an EnvelopedData or an
// AuthEnvelopedData, with key. The plaintext is returned only when it
// decrypted whole and, for an AuthEnvelopedData, its tag verified.
//
// The errors are ErrMalformed, ErrUnsupported (an algorithm outside the
// policy of envpolicy.go, or a key of another kind than the recipient's),
// ErrNoRecipient, ErrDecryption, or the key's own (an HSM unavailable).
func Decrypt(in []byte, key RecipientKey, opts *DecryptOptions) ([]byte, *Envelope, error) {
	var out bytes.Buffer
	out.Grow(len(in))
	env, err := DecryptTo(&out, bytes.NewReader(in), int64(len(in)), key, opts)
	if err != nil {
		return nil, nil, err
	}
	return out.Bytes(), env, nil
}

// DecryptTo opens the envelope of size bytes at src with key and writes
// the plaintext to dst, in constant memory, as the comment at the top of
// decrypt.go says: nothing before the tag verified for an
// AuthEnvelopedData (src is read twice and must not change meanwhile),
// as it is decrypted for an EnvelopedData. On an error, discard what was
// written. The errors are those of [Decrypt], and dst's.
func DecryptTo(dst io.Writer, src io.ReaderAt, size int64, key RecipientKey, opts *DecryptOptions) (*Envelope, error) {
	if opts == nil {
		opts = &DecryptOptions{}
	}
	b := &berReader{r: src, size: size}
	env, err := parseEnvelope(b)
	if err != nil {
		return nil, err
	}
	p, err := contentPolicy(env.algOID, env.algParams, env.auth, opts.AllowLegacy)
	if err != nil {
		return nil, err
	}
	cek, err := openRecipientInfos(env.ris, &key, openOptions{keyLen: p.alg.keyLen, legacy: opts.AllowLegacy, rand: randOr(opts.Rand)})
	if err != nil {
		return nil, err
	}
	out := &Envelope{Authenticated: env.auth, ContentType: env.contentType, Algorithm: p.alg.name}
	buf := make([]byte, streamChunk)
	switch p.alg.mode {
	case modeGCM:
		out.Size, err = env.openGCM(b, dst, buf, cek, p)
	case modeChaCha:
		out.Size, err = env.openChaCha(b, dst, buf, cek, p)
	default:
		out.Size, err = env.openCBC(b, dst, buf, cek, p)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func randOr(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}

// envelope is the skeleton of an envelope, read by parseEnvelope.
type envelope struct {
	auth         bool
	ris          cryptobyte.String // the content of the RecipientInfos SET, DER
	contentType  asn1.ObjectIdentifier
	algOID       asn1.ObjectIdentifier
	algParams    []byte
	content      berTLV // the encryptedContent
	contentLimit int64
	aad          []byte // the DER authAttrs, SET OF tag: the GCM additional data
	mac          []byte
}

// Bounds on the fields read whole.
const (
	maxSmall          = 64 << 10 // an OID, an algorithm, the mac
	maxRecipientInfos = 1 << 20
	maxAttrs          = 1 << 20
)

// parseEnvelope reads the skeleton of a ContentInfo holding an
// EnvelopedData (RFC 5652 section 6.1) or an AuthEnvelopedData (RFC 5083
// section 2.1), and nothing after it.
//
//	EnvelopedData ::= SEQUENCE {
//	  version CMSVersion,
//	  originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//	  recipientInfos RecipientInfos,
//	  encryptedContentInfo EncryptedContentInfo,
//	  unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
//	AuthEnvelopedData ::= SEQUENCE {
//	  version CMSVersion,
//	  originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//	  recipientInfos RecipientInfos,
//	  authEncryptedContentInfo EncryptedContentInfo,
//	  authAttrs [1] IMPLICIT AuthAttributes OPTIONAL,
//	  mac MessageAuthenticationCode,
//	  unauthAttrs [2] IMPLICIT UnauthAttributes OPTIONAL }
//	EncryptedContentInfo ::= SEQUENCE {
//	  contentType ContentType,
//	  contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
//	  encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }
func parseEnvelope(b *berReader) (*envelope, error) {
	env := &envelope{}
	ci, err := b.header(0, b.size)
	if err != nil {
		return nil, err
	}
	if ci.tag != 0x30 {
		return nil, malformed("not a ContentInfo")
	}
	c := b.open(ci, b.size)
	contentType, err := readOID(c, "ContentInfo contentType")
	if err != nil {
		return nil, err
	}
	switch {
	case contentType.Equal(OIDEnveloped):
	case contentType.Equal(OIDAuthEnvData):
		env.auth = true
	default:
		return nil, malformed("content type %v is neither envelopedData nor authEnvelopedData", contentType)
	}
	explicit, _, err := c.expect(0xa0, false, "ContentInfo content")
	if err != nil {
		return nil, err
	}
	ec := b.open(explicit, c.end)
	body, _, err := ec.expect(0x30, false, "EnvelopedData")
	if err != nil {
		return nil, err
	}
	bc := b.open(body, ec.end)
	if err := env.parseBody(b, bc); err != nil {
		return nil, err
	}
	if ec.pos, err = bc.close(); err != nil {
		return nil, err
	}
	if c.pos, err = ec.close(); err != nil {
		return nil, err
	}
	end, err := c.close()
	if err != nil {
		return nil, err
	}
	if end != b.size {
		return nil, malformed("%d bytes after the ContentInfo", b.size-end)
	}
	return env, nil
}

func (env *envelope) parseBody(b *berReader, bc *berCursor) error {
	t, _, err := bc.expect(0x02, false, "version")
	if err != nil {
		return err
	}
	v, err := bc.readDER(t, maxSmall, "version")
	if err != nil {
		return err
	}
	var version int64
	vs := cryptobyte.String(v)
	if !vs.ReadASN1Integer(&version) || !vs.Empty() {
		return malformed("version is not a small INTEGER")
	}
	if env.auth && version != 0 {
		return malformed("AuthEnvelopedData version %d, want 0 (RFC 5083 section 2.1)", version)
	}
	if !env.auth && version != 0 && (version < 2 || version > 4) {
		return malformed("EnvelopedData version %d is not 0, 2, 3 or 4 (RFC 5652 section 6.1)", version)
	}
	if t, ok, err := bc.expect(0xa0, true, "originatorInfo"); err != nil {
		return err
	} else if ok {
		if err := bc.skip(t, 0); err != nil {
			return err
		}
	}
	if t, _, err = bc.expect(0x31, false, "RecipientInfos"); err != nil {
		return err
	}
	ris, err := bc.readDER(t, maxRecipientInfos, "RecipientInfos")
	if err != nil {
		return err
	}
	s := cryptobyte.String(ris)
	if !s.ReadASN1(&env.ris, cbasn1.SET) || !s.Empty() {
		return malformed("RecipientInfos is not a SET")
	}
	if t, _, err = bc.expect(0x30, false, "EncryptedContentInfo"); err != nil {
		return err
	}
	eci := b.open(t, bc.end)
	if env.contentType, err = readOID(eci, "EncryptedContentInfo contentType"); err != nil {
		return err
	}
	if t, _, err = eci.expect(0x30, false, "contentEncryptionAlgorithm"); err != nil {
		return err
	}
	alg, err := eci.readDER(t, maxSmall, "contentEncryptionAlgorithm")
	if err != nil {
		return err
	}
	as := cryptobyte.String(alg)
	if env.algOID, env.algParams, err = ReadAlgorithm(&as, "contentEncryptionAlgorithm"); err != nil || !as.Empty() {
		return malformed("contentEncryptionAlgorithm is not an AlgorithmIdentifier")
	}
	t, ok, err := eci.expectString(0x80, true, "encryptedContent")
	if err != nil {
		return err
	}
	if !ok {
		return unsupported("no encryptedContent: a detached content is not supported")
	}
	env.content, env.contentLimit = t, eci.end
	if err := eci.skip(t, 0); err != nil {
		return err
	}
	if bc.pos, err = eci.close(); err != nil {
		return err
	}
	if !env.auth {
		if t, ok, err := bc.expect(0xa1, true, "unprotectedAttrs"); err != nil {
			return err
		} else if ok {
			return bc.skip(t, 0)
		}
		return nil
	}
	if t, ok, err = bc.expect(0xa1, true, "authAttrs"); err != nil {
		return err
	} else if ok {
		attrs, err := bc.readDER(t, maxAttrs, "authAttrs")
		if err != nil {
			return err
		}
		attrs[0] = 0x31 // RFC 5083 section 2.2: the DER SET OF is authenticated
		env.aad = attrs
	}
	if t, _, err = bc.expectString(0x04, false, "mac"); err != nil {
		return err
	}
	mac, err := bc.readDER(t, maxSmall, "mac")
	if err != nil {
		return err
	}
	ms := cryptobyte.String(mac)
	var m cryptobyte.String
	if !ms.ReadASN1(&m, cbasn1.OCTET_STRING) || !ms.Empty() {
		return malformed("mac is not an OCTET STRING")
	}
	env.mac = m
	if t, ok, err := bc.expect(0xa2, true, "unauthAttrs"); err != nil {
		return err
	} else if ok {
		return bc.skip(t, 0)
	}
	return nil
}

func readOID(c *berCursor, what string) (asn1.ObjectIdentifier, error) {
	t, _, err := c.expect(0x06, false, what)
	if err != nil {
		return nil, err
	}
	d, err := c.readDER(t, maxSmall, what)
	if err != nil {
		return nil, err
	}
	var oid asn1.ObjectIdentifier
	s := cryptobyte.String(d)
	if !s.ReadASN1ObjectIdentifier(&oid) || !s.Empty() {
		return nil, malformed("%s is not an OID", what)
	}
	return oid, nil
}

// stream reads the encrypted content through buf, in pieces of len(buf)
// bytes but the last, and gives each to fn; it returns the length.
func (env *envelope) stream(b *berReader, buf []byte, fn func([]byte) error) (int64, error) {
	fill := 0
	var total int64
	_, err := b.segments(env.content, env.contentLimit, 0, func(off, n int64) error {
		for n > 0 {
			k := min(n, int64(len(buf)-fill))
			if err := b.readAt(buf[fill:fill+int(k)], off); err != nil {
				return err
			}
			fill += int(k)
			off += k
			n -= k
			total += k
			if fill == len(buf) {
				if err := fn(buf); err != nil {
					return err
				}
				fill = 0
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if fill > 0 {
		if err := fn(buf[:fill]); err != nil {
			return 0, err
		}
	}
	return total, nil
}

var errSourceChanged = malformed("the envelope changed between the passes of its decryption")

func (env *envelope) openGCM(b *berReader, dst io.Writer, buf, cek []byte, p contentParams) (int64, error) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return 0, decryptionFailed()
	}
	tag := func(pass func([]byte)) (int64, [gcmTagSize]byte, error) {
		gh, err := newGHASH(block, p.iv)
		if err != nil {
			return 0, [gcmTagSize]byte{}, err
		}
		gh.add(env.aad)
		n, err := env.stream(b, buf, func(c []byte) error {
			gh.add(c)
			if pass != nil {
				pass(c)
			}
			return nil
		})
		if err != nil {
			return 0, [gcmTagSize]byte{}, err
		}
		if n > gcmMaxSize {
			return 0, [gcmTagSize]byte{}, malformed("a GCM ciphertext of %d bytes (at most %d)", n, int64(gcmMaxSize))
		}
		return n, gh.sum(uint64(len(env.aad)), uint64(n)), nil
	}
	n, t, err := tag(nil)
	if err != nil {
		return 0, err
	}
	if len(env.mac) != p.tagLen || subtle.ConstantTimeCompare(t[:p.tagLen], env.mac) != 1 {
		return 0, decryptionFailed()
	}
	ctr := gcmCTR(block, p.iv)
	var werr error
	n2, t2, err := tag(func(c []byte) {
		if werr == nil {
			ctr.XORKeyStream(c, c)
			_, werr = dst.Write(c)
		}
	})
	if err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	if n2 != n || t2 != t {
		return 0, errSourceChanged
	}
	return n, nil
}

// openChaCha is AEAD_CHACHA20_POLY1305 (RFC 8439 section 2.8) in two
// passes, as openGCM.
func (env *envelope) openChaCha(b *berReader, dst io.Writer, buf, cek []byte, p contentParams) (int64, error) {
	stream := func(xor bool, w io.Writer) (int64, []byte, error) {
		c, err := chacha20.NewUnauthenticatedCipher(cek, p.iv)
		if err != nil {
			return 0, nil, decryptionFailed()
		}
		var polyKey [32]byte
		c.XORKeyStream(polyKey[:], polyKey[:])
		c.SetCounter(1)
		mac := poly1305.New(&polyKey)
		var zeros [16]byte
		mac.Write(env.aad)
		mac.Write(zeros[:(16-len(env.aad)%16)%16])
		var werr error
		n, err := env.stream(b, buf, func(chunk []byte) error {
			mac.Write(chunk)
			if xor && werr == nil {
				c.XORKeyStream(chunk, chunk)
				_, werr = w.Write(chunk)
			}
			return nil
		})
		if err != nil {
			return 0, nil, err
		}
		if werr != nil {
			return 0, nil, werr
		}
		mac.Write(zeros[:(16-n%16)%16])
		var lens [16]byte
		binary.LittleEndian.PutUint64(lens[:8], uint64(len(env.aad)))
		binary.LittleEndian.PutUint64(lens[8:], uint64(n))
		mac.Write(lens[:])
		return n, mac.Sum(nil), nil
	}
	n, t, err := stream(false, nil)
	if err != nil {
		return 0, err
	}
	if subtle.ConstantTimeCompare(t, env.mac) != 1 {
		return 0, decryptionFailed()
	}
	n2, t2, err := stream(true, dst)
	if err != nil {
		return 0, err
	}
	if n2 != n || !bytes.Equal(t, t2) {
		return 0, errSourceChanged
	}
	return n, nil
}

// openCBC decrypts in one pass, holding back the last block for its
// padding (RFC 5652 section 6.3).
func (env *envelope) openCBC(b *berReader, dst io.Writer, buf, cek []byte, p contentParams) (int64, error) {
	block, err := p.block(cek)
	if err != nil {
		return 0, decryptionFailed()
	}
	bs := block.BlockSize()
	mode := cipher.NewCBCDecrypter(block, p.iv)
	held := make([]byte, 0, bs)
	var written int64
	_, err = env.stream(b, buf, func(c []byte) error {
		if len(c)%bs != 0 {
			return malformed("a CBC ciphertext that is not a whole number of blocks")
		}
		mode.CryptBlocks(c, c)
		if len(held) > 0 {
			if _, err := dst.Write(held); err != nil {
				return err
			}
			written += int64(len(held))
		}
		if _, err := dst.Write(c[:len(c)-bs]); err != nil {
			return err
		}
		written += int64(len(c) - bs)
		held = append(held[:0], c[len(c)-bs:]...)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(held) == 0 {
		return 0, malformed("an empty CBC ciphertext")
	}
	// The padding, checked without branching on its bytes.
	pad := int(held[bs-1])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, bs)
	for i := range bs {
		in := subtle.ConstantTimeLessOrEq(bs-i, pad)
		good &= subtle.ConstantTimeSelect(in, subtle.ConstantTimeByteEq(held[i], byte(pad)), 1)
	}
	if good != 1 {
		return 0, decryptionFailed()
	}
	if _, err := dst.Write(held[:bs-pad]); err != nil {
		return 0, err
	}
	return written + int64(bs-pad), nil
}
