package cms

import (
	"crypto/cipher"
	"encoding/binary"
)

// Streamed AES-GCM (NIST SP 800-38D) for contents of any size in constant
// memory. crypto/cipher's GCM seals a whole message at once; here the
// keystream comes from cipher.NewCTR (the GCM counter, inc32, is the
// 128-bit increment of CTR for the 2^32-2 blocks GCM allows under one
// nonce), and GHASH from the standard GCM itself: sealing an empty
// plaintext with a piece D as additional data gives
//
//	T(D) = GHASH_H(D || L_D) ^ E_K(J0),  L_D = [8·len(D)]64 || [0]64
//
// so that G'(D) = G(D)·H = T(D) ^ E_K(J0) ^ L_D·H, where G is the GHASH
// polynomial of D without length block. G' of a concatenation folds as
// G'(X||Y) = G'(X)·H^n ^ G'(Y), n the number of blocks of Y, and the tag
// of additional data A and ciphertext C is G'(A||C) ^ L·H ^ E_K(J0). The
// pieces run at the speed of the assembly GHASH; the multiplications of
// this file, in constant time, are a handful per piece of streamChunk
// bytes.

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
	// gcmMaxSize is the largest GCM plaintext under one nonce (SP 800-38D
	// section 5.2.1.1: 2^39-256 bits).
	gcmMaxSize = (1<<32 - 2) * 16
	// streamChunk is the unit of streamed encryption and decryption: a
	// multiple of every block size.
	streamChunk = 64 << 10
)

// gf is an element of GF(2^128) in the bit order of GCM: hi holds bytes
// 0 to 7 big-endian, the coefficient of x^0 being the top bit of hi.
type gf struct{ hi, lo uint64 }

func gfLoad(b []byte) gf {
	return gf{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func (x gf) put(b []byte) {
	binary.BigEndian.PutUint64(b, x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
}

func (x gf) xor(y gf) gf { return gf{x.hi ^ y.hi, x.lo ^ y.lo} }

// gfMul is SP 800-38D algorithm 1, without branches on the operands.
func gfMul(x, y gf) gf {
	var z gf
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ 0xe1<<56&-lsb
	}
	return z
}

var gfOne = gf{1 << 63, 0}

func gfPow(h gf, n uint64) gf {
	r := gfOne
	for ; n > 0; n >>= 1 {
		if n&1 != 0 {
			r = gfMul(r, h)
		}
		h = gfMul(h, h)
	}
	return r
}

// ghash accumulates G' over pieces: every piece but the last of a run (the
// additional data, then the ciphertext) is a multiple of 16 bytes.
type ghash struct {
	gcm     cipher.AEAD
	nonce   []byte
	ej0, h  gf
	hChunk  gf // H^(streamChunk/16)
	lhChunk gf // L_D·H for a piece of streamChunk bytes
	state   gf
	tag     [gcmTagSize]byte
}

func newGHASH(block cipher.Block, nonce []byte) (*ghash, error) {
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	g := &ghash{gcm: gcm, nonce: nonce}
	var b [16]byte
	block.Encrypt(b[:], b[:])
	g.h = gfLoad(b[:])
	copy(b[:], nonce)
	binary.BigEndian.PutUint32(b[12:], 1)
	block.Encrypt(b[:], b[:])
	g.ej0 = gfLoad(b[:])
	g.hChunk = gfPow(g.h, streamChunk/16)
	g.lhChunk = gfMul(gf{streamChunk * 8, 0}, g.h)
	return g, nil
}

func (g *ghash) add(d []byte) {
	if len(d) == 0 {
		return
	}
	t := gfLoad(g.gcm.Seal(g.tag[:0], g.nonce, nil, d))
	hn, lh := g.hChunk, g.lhChunk
	if len(d) != streamChunk {
		hn = gfPow(g.h, uint64(len(d)+15)/16)
		lh = gfMul(gf{uint64(len(d)) * 8, 0}, g.h)
	}
	g.state = gfMul(g.state, hn).xor(t.xor(g.ej0).xor(lh))
}

// sum is the tag of aadLen bytes of additional data and ctLen of
// ciphertext, added before.
func (g *ghash) sum(aadLen, ctLen uint64) [gcmTagSize]byte {
	var out [gcmTagSize]byte
	g.state.xor(gfMul(gf{aadLen * 8, ctLen * 8}, g.h)).xor(g.ej0).put(out[:])
	return out
}

// gcmCTR is the keystream of GCM for a 12-byte nonce: the counter block
// J0+1 = nonce || 00000002 onwards.
func gcmCTR(block cipher.Block, nonce []byte) cipher.Stream {
	var iv [16]byte
	copy(iv[:], nonce)
	binary.BigEndian.PutUint32(iv[12:], 2)
	return cipher.NewCTR(block, iv[:])
}
