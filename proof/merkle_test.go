package proof_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"pec/proof"
)

// TestConsistencyFromEmpty: from the empty tree, the proof is empty and
// the first root must be the empty tree's (SHA-256 of nothing); two
// "empty" trees with different roots are not consistent.
func TestConsistencyFromEmpty(t *testing.T) {
	empty := sha256.Sum256(nil)
	if !bytes.Equal(proof.EmptyRoot(), empty[:]) {
		t.Fatalf("EmptyRoot %x", proof.EmptyRoot())
	}
	other := bytes.Repeat([]byte{7}, 32)
	leaf := proof.LeafHash([]byte("a record"))
	for _, tc := range []struct {
		name         string
		size1, size2 uint64
		proof        [][]byte
		root1, root2 []byte
		ok           bool
	}{
		{"empty to empty", 0, 0, nil, empty[:], empty[:], true},
		{"empty to one leaf", 0, 1, nil, empty[:], leaf, true},
		{"two empty trees, other roots", 0, 0, nil, empty[:], other, false},
		{"a size-0 tree that is not empty", 0, 0, nil, other, other, false},
		{"a size-0 tree that is not empty, to one leaf", 0, 1, nil, other, leaf, false},
		{"a proof from the empty tree", 0, 1, [][]byte{leaf}, empty[:], leaf, false},
		{"a short second root", 0, 1, nil, empty[:], leaf[:8], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := proof.VerifyConsistency(tc.size1, tc.size2, tc.proof, tc.root1, tc.root2)
			if (err == nil) != tc.ok {
				t.Errorf("VerifyConsistency: %v, want ok %v", err, tc.ok)
			}
		})
	}
}
