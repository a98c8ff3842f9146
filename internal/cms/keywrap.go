package cms

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// AES key wrap with the default initial value (RFC 3394 section 2.2),
// the key-wrap algorithm of RFC 3565 for KeyAgreeRecipientInfo and
// KEKRecipientInfo.

var kwIV = [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

var errKeyWrap = errors.New("AES key wrap: the key to wrap is not a multiple of 8 bytes of at least 16")

// wrapKey wraps key (16 bytes or more, a multiple of 8) with kek (RFC 3394
// section 2.2.1).
func wrapKey(kek, key []byte) ([]byte, error) {
	if len(key) < 16 || len(key)%8 != 0 {
		return nil, errKeyWrap
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	copy(out, kwIV[:])
	copy(out[8:], key)
	var blk [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(blk[:8], out[:8])
			copy(blk[8:], out[8*i:8*i+8])
			b.Encrypt(blk[:], blk[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(blk[:8])^t)
			copy(out[8*i:], blk[8:])
		}
	}
	return out, nil
}

// unwrapKey is the inverse (RFC 3394 section 2.2.2) and checks the
// integrity value in constant time; any failure is ErrDecryption.
func unwrapKey(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 24 || len(wrapped)%8 != 0 {
		return nil, decryptionFailed()
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, decryptionFailed()
	}
	n := len(wrapped)/8 - 1
	out := make([]byte, len(wrapped))
	copy(out, wrapped)
	var blk [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(out[:8])^t)
			copy(blk[8:], out[8*i:8*i+8])
			b.Decrypt(blk[:], blk[:])
			copy(out[:8], blk[:8])
			copy(out[8*i:], blk[8:])
		}
	}
	if subtle.ConstantTimeCompare(out[:8], kwIV[:]) != 1 {
		return nil, decryptionFailed()
	}
	return out[8:], nil
}
