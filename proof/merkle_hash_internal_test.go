package proof

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
)

// TestHashesAsRFC6962: LeafHash and hashChildren give rfc6962's hashes,
// for records of every size around the block boundaries and for children
// of any length (the fallback).
func TestHashesAsRFC6962(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 31, 55, 56, 63, 64, 65, 400, 4096} {
		data := make([]byte, n)
		rand.Read(data)
		if got, want := LeafHash(data), rfc6962.DefaultHasher.HashLeaf(data); !bytes.Equal(got, want) {
			t.Errorf("LeafHash of %d bytes: %x, want %x", n, got, want)
		}
	}
	for _, sizes := range [][2]int{{32, 32}, {0, 0}, {31, 32}, {32, 33}, {64, 1}} {
		l, r := make([]byte, sizes[0]), make([]byte, sizes[1])
		rand.Read(l)
		rand.Read(r)
		if got, want := hashChildren(l, r), rfc6962.DefaultHasher.HashChildren(l, r); !bytes.Equal(got, want) {
			t.Errorf("hashChildren of %d and %d bytes: %x, want %x", sizes[0], sizes[1], got, want)
		}
	}
	// The pooled state is reset: the same record hashes the same after
	// others.
	a := LeafHash([]byte("a"))
	LeafHash(bytes.Repeat([]byte("b"), 1000))
	if b := LeafHash([]byte("a")); !bytes.Equal(a, b) {
		t.Errorf("LeafHash(a) changed after another hash: %x then %x", a, b)
	}
}
