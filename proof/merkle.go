package proof

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	mproof "github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var hasher = rfc6962.DefaultHasher

var rangeFactory = &compact.RangeFactory{Hash: hashChildren}

// leafDigests are SHA-256 states for LeafHash: rfc6962's hasher makes one
// for each hash, a 200-byte allocation each record of a seal.
var leafDigests = sync.Pool{New: func() any { return sha256.New() }}

var leafPrefix = []byte{rfc6962.RFC6962LeafHashPrefix}

// LeafHash is the RFC 9162 leaf hash of an encoded record:
// SHA-256(0x00 || record).
func LeafHash(encoded []byte) []byte {
	h := leafDigests.Get().(hash.Hash)
	h.Reset()
	h.Write(leafPrefix)
	h.Write(encoded)
	sum := h.Sum(make([]byte, 0, sha256.Size))
	leafDigests.Put(h)
	return sum
}

// hashChildren is the RFC 9162 hash of an interior node,
// SHA-256(0x01 || left || right), as rfc6962's HashChildren, without a
// hash object for each node.
func hashChildren(l, r []byte) []byte {
	if len(l) != sha256.Size || len(r) != sha256.Size {
		return hasher.HashChildren(l, r)
	}
	var b [1 + 2*sha256.Size]byte
	b[0] = rfc6962.RFC6962NodeHashPrefix
	copy(b[1:], l)
	copy(b[1+sha256.Size:], r)
	sum := sha256.Sum256(b[:])
	return sum[:]
}

// EmptyRoot is the root hash of the empty tree: SHA-256 of the empty
// string (RFC 9162 section 2.1.1).
func EmptyRoot() []byte { return hasher.EmptyRoot() }

// loadRange reads the compact range of the tree of size: the roots of its
// perfect subtrees, O(log size) nodes.
func loadRange(ctx context.Context, store Store, size uint64) (*compact.Range, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes, err := store.Nodes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("proof: load tree of size %d: %w", size, err)
	}
	return rangeFactory.NewRange(0, size, hashes)
}

// InclusionProof is the RFC 9162 inclusion proof (section 2.1.3) of the
// record at index in the tree of the given size, from the stored nodes:
// O(log size) reads.
func InclusionProof(ctx context.Context, s Store, index, size uint64) ([][]byte, error) {
	nodes, err := mproof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("proof: inclusion proof: %w", err)
	}
	return rehash(ctx, s, nodes)
}

// ConsistencyProof is the RFC 9162 consistency proof (section 2.1.4)
// between the trees of size1 and size2, from the stored nodes.
func ConsistencyProof(ctx context.Context, s Store, size1, size2 uint64) ([][]byte, error) {
	if size1 == 0 || size1 == size2 {
		if size1 > size2 {
			return nil, fmt.Errorf("proof: consistency proof: size %d > %d", size1, size2)
		}
		return [][]byte{}, nil
	}
	nodes, err := mproof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("proof: consistency proof: %w", err)
	}
	return rehash(ctx, s, nodes)
}

func rehash(ctx context.Context, s Store, nodes mproof.Nodes) ([][]byte, error) {
	hashes, err := s.Nodes(ctx, nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, hashChildren)
}

// VerifyInclusion checks an inclusion proof of the record encoding in a
// tree of the given size and root.
func VerifyInclusion(encoded []byte, index, size uint64, proof [][]byte, root []byte) error {
	return mproof.VerifyInclusion(hasher, index, size, LeafHash(encoded), proof, root)
}

// VerifyConsistency checks a consistency proof between two tree heads:
// that the tree of size2 and root2 extends the tree of size1 and root1.
// From the empty tree the proof is empty, and root1 must be the empty
// tree's root: two different "empty" trees are not consistent.
func VerifyConsistency(size1, size2 uint64, proof [][]byte, root1, root2 []byte) error {
	if size1 == 0 {
		switch {
		case len(proof) != 0:
			return errors.New("proof: a consistency proof from the empty tree is empty")
		case !bytes.Equal(root1, EmptyRoot()):
			return errors.New("proof: consistency: the first tree has size 0 but not the empty tree's root")
		case size2 == 0 && !bytes.Equal(root2, root1):
			return errors.New("proof: consistency: two empty trees with different roots")
		case len(root2) != hasher.Size():
			return fmt.Errorf("proof: consistency: a root of %d bytes", len(root2))
		}
		return nil
	}
	return mproof.VerifyConsistency(hasher, size1, size2, proof, root1, root2)
}
