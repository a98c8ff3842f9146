package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"testing"
)

// TestStreamedGCM: the streamed GCM of gcmstream.go gives the ciphertext
// and tag of crypto/cipher's GCM, for sizes around the block and chunk
// boundaries, with and without additional data.
func TestStreamedGCM(t *testing.T) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	rand.Read(key)
	rand.Read(nonce)
	block, _ := aes.NewCipher(key)
	ref, _ := cipher.NewGCM(block)
	for _, size := range []int{0, 1, 15, 16, 17, 1000, streamChunk - 1, streamChunk, streamChunk + 1, 3*streamChunk + 5} {
		for _, aadLen := range []int{0, 5, 32} {
			t.Run(fmt.Sprintf("%d+%d", size, aadLen), func(t *testing.T) {
				pt := make([]byte, size)
				aad := make([]byte, aadLen)
				rand.Read(pt)
				rand.Read(aad)
				want := ref.Seal(nil, nonce, pt, aad)
				g, err := newGHASH(block, nonce)
				if err != nil {
					t.Fatal(err)
				}
				g.add(aad)
				ct := bytes.Clone(pt)
				gcmCTR(block, nonce).XORKeyStream(ct, ct)
				for off := 0; off < len(ct); off += streamChunk {
					g.add(ct[off:min(off+streamChunk, len(ct))])
				}
				tag := g.sum(uint64(aadLen), uint64(size))
				if got := append(ct, tag[:]...); !bytes.Equal(got, want) {
					t.Fatalf("streamed GCM differs from crypto/cipher")
				}
			})
		}
	}
}
