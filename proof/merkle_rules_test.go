package proof_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"pec/proof"
)

// rfc9162Tree is the Merkle tree of RFC 9162 section 2.1.1, computed from
// its definition (MTH, PATH and PROOF of sections 2.1.1, 2.1.3.1 and
// 2.1.4.1), apart from the library that proof uses: the reference the
// proofs below are made from.
type rfc9162Tree [][]byte // the leaf inputs

func nodeHash(l, r []byte) []byte {
	h := sha256.New()
	h.Write([]byte{1})
	h.Write(l)
	h.Write(r)
	return h.Sum(nil)
}

func leafHash(d []byte) []byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(d)
	return h.Sum(nil)
}

// split is k of RFC 9162: the largest power of two smaller than n.
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

func (d rfc9162Tree) root() []byte {
	switch n := len(d); n {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		return leafHash(d[0])
	default:
		k := split(n)
		return nodeHash(d[:k].root(), d[k:].root())
	}
}

// path is PATH(m, D[n]).
func (d rfc9162Tree) path(m int) [][]byte {
	n := len(d)
	if n <= 1 {
		return nil
	}
	k := split(n)
	if m < k {
		return append(d[:k].path(m), d[k:].root())
	}
	return append(d[k:].path(m-k), d[:k].root())
}

// proof is PROOF(m, D[n]).
func (d rfc9162Tree) proof(m int) [][]byte { return d.subproof(m, true) }

func (d rfc9162Tree) subproof(m int, b bool) [][]byte {
	n := len(d)
	if m == n {
		if b {
			return nil
		}
		return [][]byte{d.root()}
	}
	k := split(n)
	if m <= k {
		return append(d[:k].subproof(m, b), d[k:].root())
	}
	return append(d[k:].subproof(m-k, false), d[:k].root())
}

func treeOf(n int) rfc9162Tree {
	d := make(rfc9162Tree, n)
	for i := range d {
		d[i] = fmt.Appendf(nil, "record %d", i)
	}
	return d
}

func flipped(proof [][]byte, i int) [][]byte {
	out := make([][]byte, len(proof))
	for j := range proof {
		out[j] = bytes.Clone(proof[j])
	}
	out[i][0] ^= 1
	return out
}

// TestInclusionRules: proof.VerifyInclusion accepts the RFC 9162 proofs
// of every leaf of trees of 1 to 9 leaves, and refuses each proof broken
// in one way: index at or past the size, a proof too short or too long,
// each element flipped, another root, another record, another index.
func TestInclusionRules(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 9; n++ {
		d := treeOf(n)
		root := d.root()
		for m := range n {
			p := d.path(m)
			name := fmt.Sprintf("size %d/index %d", n, m)
			if err := proof.VerifyInclusion(d[m], uint64(m), uint64(n), p, root); err != nil {
				t.Errorf("%s: the RFC 9162 proof is refused: %v", name, err)
			}
			bad := map[string]error{
				"index = size":                      proof.VerifyInclusion(d[m], uint64(n), uint64(n), p, root),
				"index > size":                      proof.VerifyInclusion(d[m], uint64(n+1), uint64(n), p, root),
				"proof one hash longer":             proof.VerifyInclusion(d[m], uint64(m), uint64(n), slices.Concat(p, [][]byte{root}), root),
				"another root":                      proof.VerifyInclusion(d[m], uint64(m), uint64(n), p, leafHash([]byte("x"))),
				"a short root":                      proof.VerifyInclusion(d[m], uint64(m), uint64(n), p, root[:31]),
				"another record":                    proof.VerifyInclusion([]byte("forged"), uint64(m), uint64(n), p, root),
				"the leaf hash given as the record": proof.VerifyInclusion(leafHash(d[m]), uint64(m), uint64(n), p, root),
				"size 0":                            proof.VerifyInclusion(d[m], uint64(m), 0, p, root),
			}
			if len(p) > 0 {
				bad["proof one hash shorter"] = proof.VerifyInclusion(d[m], uint64(m), uint64(n), p[:len(p)-1], root)
				bad["a short proof element"] = proof.VerifyInclusion(d[m], uint64(m), uint64(n), append([][]byte{p[0][:31]}, p[1:]...), root)
			}
			if n > 1 {
				bad["another index"] = proof.VerifyInclusion(d[m], uint64((m+1)%n), uint64(n), p, root)
			}
			for i := range p {
				bad[fmt.Sprintf("element %d flipped", i)] = proof.VerifyInclusion(d[m], uint64(m), uint64(n), flipped(p, i), root)
			}
			for rule, err := range bad {
				if err == nil {
					t.Errorf("%s/%s: accepted", name, rule)
				}
			}
		}
	}
}

// TestConsistencyRules: proof.VerifyConsistency accepts the RFC 9162
// proofs between every pair of sizes up to 9 (size 0 and equal sizes
// included), and refuses each proof broken in one way.
func TestConsistencyRules(t *testing.T) {
	t.Parallel()
	empty := treeOf(0).root()
	other := bytes.Repeat([]byte{7}, 32)
	for n := 0; n <= 9; n++ {
		d := treeOf(n)
		root2 := d.root()
		for m := 0; m <= n; m++ {
			root1 := d[:m].root()
			var p [][]byte
			if m > 0 {
				p = d.proof(m)
			}
			name := fmt.Sprintf("%d to %d", m, n)
			if err := proof.VerifyConsistency(uint64(m), uint64(n), p, root1, root2); err != nil {
				t.Errorf("%s: the RFC 9162 proof is refused: %v", name, err)
			}
			bad := map[string]error{
				"another first root":    proof.VerifyConsistency(uint64(m), uint64(n), p, other, root2),
				"a short second root":   proof.VerifyConsistency(uint64(m), uint64(n), p, root1, root2[:31]),
				"a short first root":    proof.VerifyConsistency(uint64(m), uint64(n), p, root1[:31], root2),
				"proof one hash longer": proof.VerifyConsistency(uint64(m), uint64(n), slices.Concat(p, [][]byte{other}), root1, root2),
			}
			if m < n {
				bad["sizes swapped"] = proof.VerifyConsistency(uint64(n), uint64(m), p, root2, root1)
				bad["roots swapped"] = proof.VerifyConsistency(uint64(m), uint64(n), p, root2, root1)
			}
			if m > 0 || n == 0 {
				// From the empty tree, every tree is an extension.
				bad["another second root"] = proof.VerifyConsistency(uint64(m), uint64(n), p, root1, other)
			}
			if len(p) > 0 {
				bad["proof one hash shorter"] = proof.VerifyConsistency(uint64(m), uint64(n), p[:len(p)-1], root1, root2)
				bad["no proof"] = proof.VerifyConsistency(uint64(m), uint64(n), nil, root1, root2)
			}
			for i := range p {
				bad[fmt.Sprintf("element %d flipped", i)] = proof.VerifyConsistency(uint64(m), uint64(n), flipped(p, i), root1, root2)
			}
			for rule, err := range bad {
				if err == nil {
					t.Errorf("%s/%s: accepted", name, rule)
				}
			}
		}
	}
	// The cases of the empty first tree, which the wrapper decides before
	// the library: each rule alone.
	leaf := treeOf(1).root()
	for _, tc := range []struct {
		name         string
		size2        uint64
		proof        [][]byte
		root1, root2 []byte
	}{
		{"from size 0/a non-empty proof", 1, [][]byte{leaf}, empty, leaf},
		{"from size 0/first root not the empty tree's", 1, nil, other, leaf},
		{"from size 0/first root not the empty tree's, to size 0", 0, nil, other, other},
		{"0 to 0/other second root", 0, nil, empty, other},
		{"from size 0/a second root of 31 bytes", 1, nil, empty, leaf[:31]},
		{"from size 0/no second root", 5, nil, empty, nil},
	} {
		if err := proof.VerifyConsistency(0, tc.size2, tc.proof, tc.root1, tc.root2); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
