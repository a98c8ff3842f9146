// Package prooftest is the conformance suite of proof.Store: every store
// implementation passes RunStore.
package prooftest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"pec/evidence"
	"pec/proof"
)

// Factory makes stores for the suite.
type Factory struct {
	// New returns a fresh, empty store, closed by the suite.
	New func(t *testing.T) proof.Store
	// Reopen opens again the store that s was (closed by the suite
	// before): what was appended and sealed must be there.
	Reopen func(t *testing.T, s proof.Store) proof.Store
}

// RunStore runs the conformance suite.
func RunStore(t *testing.T, f Factory) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open(t, f.New)) })
	t.Run("AppendUnsealed", func(t *testing.T) { testAppendUnsealed(t, open(t, f.New)) })
	t.Run("SealAndRead", func(t *testing.T) { testSealAndRead(t, open(t, f.New)) })
	t.Run("PartialSeal", func(t *testing.T) { testPartialSeal(t, open(t, f.New)) })
	t.Run("Duplicate", func(t *testing.T) { testDuplicate(t, open(t, f.New)) })
	t.Run("Conflict", func(t *testing.T) { testConflict(t, open(t, f.New)) })
	t.Run("PendingTree", func(t *testing.T) { testPending(t, open(t, f.New)) })
	t.Run("OneRootPerSize", func(t *testing.T) { testOneRoot(t, open(t, f.New)) })
	t.Run("ConcurrentAppendersAndReaders", func(t *testing.T) { testConcurrent(t, open(t, f.New)) })
	t.Run("InclusionAndConsistency", func(t *testing.T) { testProofs(t, open(t, f.New)) })
	if f.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, f) })
		t.Run("ReopenPending", func(t *testing.T) { testReopenPending(t, f) })
	}
}

func open(t *testing.T, newStore func(t *testing.T) proof.Store) proof.Store {
	t.Helper()
	s := newStore(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// Builder makes well-formed batches (real RFC 9162 nodes, placeholder
// checkpoints and tokens) for store tests.
type Builder struct {
	rng  *compact.Range
	n    int
	prev *proof.Tree
	Tag  string // distinguishes the ids of two builders
	Time time.Time
}

// Sealed is a batch and the head that signs its tree.
type Sealed struct {
	proof.Batch
	Head proof.Head
}

var factory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// NewBuilder starts an empty log.
func NewBuilder(tag string) *Builder {
	return &Builder{rng: factory.NewEmptyRange(0), Tag: tag, Time: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
}

// ID is the id of the i-th record the builder makes.
func (b *Builder) ID(i int) string { return fmt.Sprintf("%s-%06d", b.Tag, i) }

// Records makes the next n records, to append.
func (b *Builder) Records(t testing.TB, n int) []proof.StoredRecord {
	t.Helper()
	var out []proof.StoredRecord
	for range n {
		rec := evidence.Record{ID: b.ID(b.n), Type: evidence.SubmissionAccepted, Time: b.Time.Add(time.Duration(b.n) * time.Millisecond), Subject: "dossier-" + b.ID(b.n)}
		b.n++
		data, err := rec.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, proof.StoredRecord{ID: rec.ID, Data: data})
	}
	return out
}

// Seal makes the batch that integrates recs on the builder's tree, with
// the head that signs it, and the tree it extends (nil: the empty log).
func (b *Builder) Seal(t testing.TB, recs []proof.StoredRecord) (prev *proof.Tree, batch *Sealed) {
	t.Helper()
	prev = b.prev
	batch = &Sealed{Batch: proof.Batch{Start: b.rng.End(), Records: recs}}
	for _, r := range recs {
		if err := b.rng.Append(proof.LeafHash(r.Data), func(id compact.NodeID, h []byte) {
			batch.Nodes = append(batch.Nodes, proof.Node{ID: id, Hash: h})
		}); err != nil {
			t.Fatal(err)
		}
	}
	root, err := b.rng.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	batch.Tree = proof.Tree{Size: b.rng.End(), Root: root}
	batch.Head = proof.Head{
		Size:       b.rng.End(),
		Root:       root,
		Checkpoint: fmt.Appendf(nil, "checkpoint %s %d\n", b.Tag, b.rng.End()),
		Token:      fmt.Appendf(nil, "token %s %d", b.Tag, b.rng.End()),
	}
	b.prev = &batch.Tree
	return prev, batch
}

// Next appends n records to s and seals them; it returns the batch.
func (b *Builder) Next(t testing.TB, s proof.Store, n int) *Sealed {
	t.Helper()
	recs := b.Records(t, n)
	if err := s.Append(context.Background(), recs); err != nil {
		t.Fatalf("Append(%d records): %v", n, err)
	}
	prev, batch := b.Seal(t, recs)
	SealIn(t, s, prev, batch)
	return batch
}

// SealIn integrates batch on prev in s, then writes its head.
func SealIn(t testing.TB, s proof.Store, prev *proof.Tree, batch *Sealed) {
	t.Helper()
	if err := s.Integrate(context.Background(), prev, &batch.Batch); err != nil {
		t.Fatalf("Integrate(start %d, %d records): %v", batch.Start, len(batch.Records), err)
	}
	if err := s.PutHead(context.Background(), &batch.Head); err != nil {
		t.Fatalf("PutHead(%d): %v", batch.Head.Size, err)
	}
}

func testEmpty(t *testing.T, s proof.Store) {
	ctx := t.Context()
	if _, err := s.Latest(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Latest on an empty store: %v, want ErrNotFound", err)
	}
	if _, err := s.Record(ctx, 0); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Record(0): %v, want ErrNotFound", err)
	}
	if _, err := s.Lookup(ctx, "nothing"); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Lookup: %v, want ErrNotFound", err)
	}
	if _, err := s.HeadCovering(ctx, 0); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("HeadCovering(0): %v, want ErrNotFound", err)
	}
	if _, err := s.HeadAt(ctx, 0); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("HeadAt(0): %v, want ErrNotFound", err)
	}
	n := 0
	if err := s.Heads(ctx, func(*proof.Head) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Heads: %d heads, %v", n, err)
	}
	if err := s.Records(ctx, 0, func(uint64, *proof.StoredRecord) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Records: %d records, %v", n, err)
	}
	if err := s.Trees(ctx, func(*proof.Tree) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Trees: %d trees, %v", n, err)
	}
	if _, err := s.Pending(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Pending: %v, want ErrNotFound", err)
	}
	if _, err := s.Nodes(ctx, []compact.NodeID{compact.NewNodeID(0, 0)}); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Nodes: %v, want ErrNotFound", err)
	}
}

func sameHead(t testing.TB, what string, got *proof.Head, want proof.Head) {
	t.Helper()
	if got.Size != want.Size || !bytes.Equal(got.Root, want.Root) || !bytes.Equal(got.Checkpoint, want.Checkpoint) || !bytes.Equal(got.Token, want.Token) {
		t.Errorf("%s: head of size %d, want %d (or other bytes)", what, got.Size, want.Size)
	}
}

func ids(recs []proof.StoredRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func unsealed(t testing.TB, s proof.Store) []string {
	t.Helper()
	recs, err := s.Unsealed(context.Background(), 1<<20)
	if err != nil {
		t.Fatalf("Unsealed: %v", err)
	}
	return ids(recs)
}

func sameIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
}

func testAppendUnsealed(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("u")
	r1, r2 := b.Records(t, 3), b.Records(t, 2)
	if err := s.Append(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, r2); err != nil {
		t.Fatal(err)
	}
	all := append(append([]proof.StoredRecord(nil), r1...), r2...)
	sameIDs(t, "Unsealed", unsealed(t, s), ids(all))
	got, err := s.Unsealed(ctx, 2)
	if err != nil || len(got) != 2 || got[0].ID != all[0].ID || !bytes.Equal(got[1].Data, all[1].Data) {
		t.Errorf("Unsealed(max 2) = %v, %v", ids(got), err)
	}
	for _, r := range all {
		if _, err := s.Lookup(ctx, r.ID); !errors.Is(err, proof.ErrNotSealed) {
			t.Errorf("Lookup(%s) of an unsealed record: %v, want ErrNotSealed", r.ID, err)
		}
	}
	if _, err := s.Record(ctx, 0); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Record(0) before any seal: %v, want ErrNotFound", err)
	}
	if _, err := s.Latest(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Latest before any seal: %v, want ErrNotFound", err)
	}
	if err := s.Append(ctx, nil); err != nil {
		t.Errorf("Append of nothing: %v", err)
	}
}

func testSealAndRead(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("a")
	b1, b2 := b.Next(t, s, 3), b.Next(t, s, 2)

	latest, err := s.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameHead(t, "Latest", latest, b2.Head)
	h, err := s.HeadAt(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	sameHead(t, "HeadAt(3)", h, b1.Head)
	if _, err := s.HeadAt(ctx, 4); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("HeadAt(4): %v, want ErrNotFound", err)
	}
	for i, want := range []uint64{3, 3, 3, 5, 5} {
		h, err := s.HeadCovering(ctx, uint64(i))
		if err != nil || h.Size != want {
			t.Errorf("HeadCovering(%d): %v, %v; want size %d", i, h, err, want)
		}
	}
	if _, err := s.HeadCovering(ctx, 5); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("HeadCovering(5): %v, want ErrNotFound", err)
	}
	sameIDs(t, "Unsealed after the seals", unsealed(t, s), nil)
	all := append(append([]proof.StoredRecord(nil), b1.Records...), b2.Records...)
	for i, want := range all {
		r, err := s.Record(ctx, uint64(i))
		if err != nil || r.ID != want.ID || !bytes.Equal(r.Data, want.Data) {
			t.Errorf("Record(%d) = %v, %v; want id %s", i, r, err, want.ID)
		}
		idx, err := s.Lookup(ctx, want.ID)
		if err != nil || idx != uint64(i) {
			t.Errorf("Lookup(%s) = %d, %v; want %d", want.ID, idx, err, i)
		}
	}
	if _, err := s.Lookup(ctx, "nothing"); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Lookup(nothing): %v, want ErrNotFound", err)
	}
	var got []string
	err = s.Records(ctx, 2, func(i uint64, r *proof.StoredRecord) error {
		if r.ID != all[i].ID || !bytes.Equal(r.Data, all[i].Data) {
			t.Errorf("Records: index %d is %s, want %s", i, r.ID, all[i].ID)
		}
		got = append(got, r.ID)
		return nil
	})
	if err != nil || len(got) != 3 || got[0] != all[2].ID {
		t.Errorf("Records(from 2): %v, %v", got, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Records(ctx, 0, func(uint64, *proof.StoredRecord) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Records stopped by fn: %d calls, %v", n, err)
	}
	var sizes []uint64
	if err := s.Heads(ctx, func(h *proof.Head) error { sizes = append(sizes, h.Size); return nil }); err != nil || len(sizes) != 2 || sizes[0] != 3 || sizes[1] != 5 {
		t.Errorf("Heads: sizes %v, %v", sizes, err)
	}
	for _, batch := range []*Sealed{b1, b2} {
		nodeIDs := make([]compact.NodeID, len(batch.Nodes))
		for i, n := range batch.Nodes {
			nodeIDs[i] = n.ID
		}
		hashes, err := s.Nodes(ctx, nodeIDs)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range batch.Nodes {
			if !bytes.Equal(hashes[i], n.Hash) {
				t.Errorf("Nodes: node %+v differs", n.ID)
			}
		}
	}
	if _, err := s.Nodes(ctx, []compact.NodeID{compact.NewNodeID(0, 5)}); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Nodes(level 0, index 5): %v, want ErrNotFound", err)
	}
}

// testPartialSeal: a seal takes the oldest unsealed records; the rest
// stay unsealed, in order.
func testPartialSeal(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("q")
	recs := b.Records(t, 6)
	if err := s.Append(ctx, recs[:4]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, recs[4:]); err != nil {
		t.Fatal(err)
	}
	prev, batch := b.Seal(t, recs[:3])
	SealIn(t, s, prev, batch)
	sameIDs(t, "Unsealed after sealing 3 of 6", unsealed(t, s), ids(recs[3:]))
	if idx, err := s.Lookup(ctx, recs[2].ID); err != nil || idx != 2 {
		t.Errorf("Lookup(%s) = %d, %v; want 2", recs[2].ID, idx, err)
	}
	if _, err := s.Lookup(ctx, recs[3].ID); !errors.Is(err, proof.ErrNotSealed) {
		t.Errorf("Lookup(%s): %v, want ErrNotSealed", recs[3].ID, err)
	}
	// Sealing a record that is sealed already, or was never appended,
	// is refused.
	never := NewBuilder("never").Records(t, 1)
	for _, r := range []proof.StoredRecord{recs[0], never[0]} {
		bad := &proof.Batch{Start: 3, Records: []proof.StoredRecord{r}, Tree: proof.Tree{Size: 4, Root: bytes.Repeat([]byte{1}, 32)}}
		if err := s.Integrate(ctx, batch.Head.Tree(), bad); !errors.Is(err, proof.ErrConflict) {
			t.Errorf("Integrate of %s, not an unsealed record: %v, want ErrConflict", r.ID, err)
		}
	}
	if _, err := s.Pending(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Pending after refused integrations: %v, want ErrNotFound", err)
	}
	prev, batch = b.Seal(t, recs[3:])
	SealIn(t, s, prev, batch)
	sameIDs(t, "Unsealed at the end", unsealed(t, s), nil)
}

func testDuplicate(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("d")
	sealed := b.Next(t, s, 2)
	pending := b.Records(t, 1)
	if err := s.Append(ctx, pending); err != nil {
		t.Fatal(err)
	}
	fresh := NewBuilder("e").Records(t, 2)
	for _, tc := range []struct {
		name string
		recs []proof.StoredRecord
	}{
		{"a sealed id", []proof.StoredRecord{fresh[0], {ID: sealed.Records[1].ID, Data: sealed.Records[1].Data}}},
		{"an unsealed id", []proof.StoredRecord{pending[0], fresh[0]}},
		{"twice in one call", []proof.StoredRecord{fresh[1], fresh[1]}},
		// A Fresh record (an id the log made) is not looked up; the
		// others of the call still are.
		{"a sealed id beside a Fresh record", []proof.StoredRecord{markFresh(fresh[0]), {ID: sealed.Records[0].ID, Data: sealed.Records[0].Data}}},
		{"an unsealed id beside a Fresh record", []proof.StoredRecord{pending[0], markFresh(fresh[1])}},
	} {
		if err := s.Append(ctx, tc.recs); !errors.Is(err, proof.ErrDuplicateID) {
			t.Errorf("Append of %s: %v, want ErrDuplicateID", tc.name, err)
		}
	}
	// Nothing of the refused calls was written.
	sameIDs(t, "Unsealed after refused appends", unsealed(t, s), ids(pending))
	if _, err := s.Lookup(ctx, fresh[0].ID); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("a refused append left %s: %v", fresh[0].ID, err)
	}
	// A Fresh record is appended like any other, and read back without
	// the mark (only Append reads it).
	if err := s.Append(ctx, []proof.StoredRecord{markFresh(fresh[0]), markFresh(fresh[1])}); err != nil {
		t.Fatalf("Append of Fresh records: %v", err)
	}
	got, err := s.Unsealed(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Unsealed after Fresh records", ids(got), append(ids(pending), fresh[0].ID, fresh[1].ID))
	for _, r := range got {
		if r.Fresh {
			t.Errorf("Unsealed returns %s marked Fresh", r.ID)
		}
	}
}

func markFresh(r proof.StoredRecord) proof.StoredRecord {
	r.Fresh = true
	return r
}

func testConflict(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("c")
	first := b.Next(t, s, 2)
	recs := b.Records(t, 2)
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// Another sequencer's view: a seal over the empty log.
	other := NewBuilder("c")
	other.Records(t, 2)
	_, otherBatch := other.Seal(t, first.Records)
	if err := s.Integrate(ctx, nil, &otherBatch.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Integrate over the empty log when a tree exists: %v, want ErrConflict", err)
	}
	// Same size as the stored tree, another root.
	forked := first.Head.Tree()
	forked.Root = bytes.Repeat([]byte{0x42}, 32)
	_, next := b.Seal(t, recs)
	if err := s.Integrate(ctx, forked, &next.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Integrate on a tree of the stored size with another root: %v, want ErrConflict", err)
	}
	// Another size than the stored tree's.
	bigger := &proof.Tree{Size: 3, Root: first.Head.Root}
	if err := s.Integrate(ctx, bigger, &next.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Integrate on a tree of another size: %v, want ErrConflict", err)
	}
	if h, err := s.Latest(ctx); err != nil || h.Size != 2 {
		t.Errorf("after refused seals: Latest %v, %v; want size 2", h, err)
	}
	if _, err := s.Record(ctx, 2); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("a refused seal left record 2: %v", err)
	}
	sameIDs(t, "Unsealed after refused seals", unsealed(t, s), ids(recs))
	SealIn(t, s, first.Head.Tree(), next)
}

// testPending: an integrated tree is pending until its head is stored:
// its records have their indexes but are not sealed, the tree cannot grow
// until it is signed, and only its own head (its size, its root) is taken.
func testPending(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("pt")
	first := b.Next(t, s, 2)
	if _, err := s.Pending(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Pending with every tree signed: %v, want ErrNotFound", err)
	}
	recs := b.Records(t, 3)
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	prev, batch := b.Seal(t, recs)
	if err := s.Integrate(ctx, prev, &batch.Batch); err != nil {
		t.Fatalf("Integrate: %v", err)
	}
	p, err := s.Pending(ctx)
	if err != nil || p.Size != 5 || !bytes.Equal(p.Root, batch.Tree.Root) {
		t.Fatalf("Pending after Integrate: %+v, %v; want size 5 and the batch's root", p, err)
	}
	sameIDs(t, "Unsealed with a pending tree", unsealed(t, s), nil)
	if h, err := s.Latest(ctx); err != nil || h.Size != 2 {
		t.Errorf("Latest with a pending tree: %v, %v; want the head of size 2", h, err)
	}
	for _, r := range recs {
		if _, err := s.Lookup(ctx, r.ID); !errors.Is(err, proof.ErrNotSealed) {
			t.Errorf("Lookup(%s) in the pending tree: %v, want ErrNotSealed", r.ID, err)
		}
	}
	if _, err := s.HeadCovering(ctx, 2); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("HeadCovering(2) in the pending tree: %v, want ErrNotFound", err)
	}
	n := 0
	if err := s.Records(ctx, 0, func(uint64, *proof.StoredRecord) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("Records with a pending tree: %d records, %v; want the 2 sealed", n, err)
	}
	// Its nodes are there: the tree of size 5 can be rebuilt (and
	// signed) by whoever seals next.
	nodeIDs := make([]compact.NodeID, len(batch.Nodes))
	for i, nd := range batch.Nodes {
		nodeIDs[i] = nd.ID
	}
	if hashes, err := s.Nodes(ctx, nodeIDs); err != nil || len(hashes) != len(nodeIDs) {
		t.Errorf("Nodes of the pending tree: %d, %v", len(hashes), err)
	}
	// The tree does not grow before it is signed.
	more := b.Records(t, 1)
	if err := s.Append(ctx, more); err != nil {
		t.Fatal(err)
	}
	prev2, batch2 := b.Seal(t, more)
	if err := s.Integrate(ctx, prev2, &batch2.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Integrate on a pending tree: %v, want ErrConflict", err)
	}
	// Only the pending tree's own head is taken.
	for _, tc := range []struct {
		name string
		h    proof.Head
	}{
		{"another root", proof.Head{Size: 5, Root: bytes.Repeat([]byte{7}, 32), Checkpoint: []byte("c"), Token: []byte("t")}},
		{"another size", proof.Head{Size: 4, Root: batch.Tree.Root, Checkpoint: []byte("c"), Token: []byte("t")}},
		{"a size never integrated", proof.Head{Size: 6, Root: batch2.Tree.Root, Checkpoint: []byte("c"), Token: []byte("t")}},
		{"the signed tree again", proof.Head{Size: 2, Root: first.Head.Root, Checkpoint: []byte("c"), Token: []byte("t")}},
	} {
		if err := s.PutHead(ctx, &tc.h); !errors.Is(err, proof.ErrConflict) {
			t.Errorf("PutHead of %s: %v, want ErrConflict", tc.name, err)
		}
	}
	var trees []string
	if err := s.Trees(ctx, func(tr *proof.Tree) error {
		trees = append(trees, fmt.Sprintf("%d/%x", tr.Size, tr.Root[:4]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Trees with a pending tree", trees, []string{fmt.Sprintf("2/%x", first.Head.Root[:4]), fmt.Sprintf("5/%x", batch.Tree.Root[:4])})
	if err := s.PutHead(ctx, &batch.Head); err != nil {
		t.Fatalf("PutHead of the pending tree: %v", err)
	}
	if _, err := s.Pending(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("Pending once signed: %v, want ErrNotFound", err)
	}
	// Signed again (another signature of the same tree): the first stays.
	again := batch.Head
	again.Checkpoint, again.Token = []byte("checkpoint signed again\n"), []byte("token again")
	if err := s.PutHead(ctx, &again); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("PutHead of a second signature of the tree: %v, want ErrConflict", err)
	}
	h, err := s.HeadAt(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	sameHead(t, "HeadAt(5) after a second signature", h, batch.Head)
	for i, r := range recs {
		if idx, err := s.Lookup(ctx, r.ID); err != nil || idx != uint64(2+i) {
			t.Errorf("Lookup(%s) once signed: %d, %v; want %d", r.ID, idx, err, 2+i)
		}
	}
	if h, err := s.HeadCovering(ctx, 2); err != nil || h.Size != 5 {
		t.Errorf("HeadCovering(2) once signed: %v, %v", h, err)
	}
	// The tree grows again.
	SealIn(t, s, prev2, batch2)
}

// testOneRoot: once a size is integrated, no other tree of that size is:
// not from the same start with other records, nor with the same records
// in another order.
func testOneRoot(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("or")
	b.Next(t, s, 1)
	recs := b.Records(t, 4)
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// Two sequencers' views of the same start: one integrates recs[:2],
	// the other would make the tree of size 3 of the other order.
	alt := *b
	alt.rng = factory.NewEmptyRange(0)
	if err := alt.rng.AppendRange(b.rng, nil); err != nil {
		t.Fatal(err)
	}
	prev, batch := b.Seal(t, recs[:2])
	if err := s.Integrate(ctx, prev, &batch.Batch); err != nil {
		t.Fatal(err)
	}
	swapped := []proof.StoredRecord{recs[1], recs[0]}
	aprev, abatch := alt.Seal(t, swapped)
	if err := s.Integrate(ctx, aprev, &abatch.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("a second integration from the same tree: %v, want ErrConflict", err)
	}
	if err := s.PutHead(ctx, &abatch.Head); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("PutHead of the other tree of size 3: %v, want ErrConflict", err)
	}
	if err := s.PutHead(ctx, &batch.Head); err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Unsealed", unsealed(t, s), ids(recs[2:]))
}

// testConcurrent: appenders and readers while one sequencer seals.
func testConcurrent(t *testing.T, s proof.Store) {
	ctx := t.Context()
	seq := NewBuilder("s")
	seq.Next(t, s, 1)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			ab := NewBuilder(fmt.Sprintf("w%d", w))
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				if err := s.Append(ctx, ab.Records(t, 3)); err != nil {
					t.Error(err)
					return
				}
				h, err := s.Latest(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Record(ctx, h.Size-1); err != nil {
					t.Errorf("the last record of head %d: %v", h.Size, err)
					return
				}
			}
		})
	}
	sealedN := 1
	for range 30 {
		recs, err := s.Unsealed(ctx, 50)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			continue
		}
		prev, batch := seq.Seal(t, recs)
		SealIn(t, s, prev, batch)
		sealedN += len(recs)
	}
	close(done)
	wg.Wait()
	if h, err := s.Latest(ctx); err != nil || h.Size != uint64(sealedN) {
		t.Errorf("Latest: %v, %v; want size %d", h, err, sealedN)
	}
}

func testReopen(t *testing.T, f Factory) {
	ctx := t.Context()
	s := f.New(t)
	b := NewBuilder("o")
	sealed := b.Next(t, s, 3)
	pending := b.Records(t, 2)
	if err := s.Append(ctx, pending); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, func(t *testing.T) proof.Store { return f.Reopen(t, s) })
	latest, err := s.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameHead(t, "Latest after reopening", latest, sealed.Head)
	sameIDs(t, "Unsealed after reopening", unsealed(t, s), ids(pending))
	prev, batch := b.Seal(t, pending)
	SealIn(t, s, prev, batch)
	if idx, err := s.Lookup(ctx, pending[1].ID); err != nil || idx != 4 {
		t.Errorf("Lookup(%s) = %d, %v; want 4", pending[1].ID, idx, err)
	}
}

// testReopenPending: a tree integrated and not signed when the store
// closed (a sequencer that died before it wrote the head) is pending
// after reopening, with its records, and takes its head.
func testReopenPending(t *testing.T, f Factory) {
	ctx := t.Context()
	s := f.New(t)
	b := NewBuilder("rp")
	b.Next(t, s, 2)
	recs := b.Records(t, 3)
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	prev, batch := b.Seal(t, recs[:2])
	if err := s.Integrate(ctx, prev, &batch.Batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, func(t *testing.T) proof.Store { return f.Reopen(t, s) })
	p, err := s.Pending(ctx)
	if err != nil || p.Size != 4 || !bytes.Equal(p.Root, batch.Tree.Root) {
		t.Fatalf("Pending after reopening: %+v, %v; want size 4", p, err)
	}
	sameIDs(t, "Unsealed after reopening", unsealed(t, s), ids(recs[2:]))
	if _, err := s.Lookup(ctx, recs[0].ID); !errors.Is(err, proof.ErrNotSealed) {
		t.Errorf("Lookup in the pending tree after reopening: %v, want ErrNotSealed", err)
	}
	if err := s.PutHead(ctx, &batch.Head); err != nil {
		t.Fatalf("PutHead after reopening: %v", err)
	}
	prev, batch = b.Seal(t, recs[2:])
	SealIn(t, s, prev, batch)
}

func testProofs(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("p")
	var heads []proof.Head
	var recs []proof.StoredRecord
	for _, n := range []int{1, 2, 5, 8, 1, 13} {
		batch := b.Next(t, s, n)
		heads = append(heads, batch.Head)
		recs = append(recs, batch.Records...)
	}
	for _, h := range heads {
		for i := uint64(0); i < h.Size; i++ {
			p, err := proof.InclusionProof(ctx, s, i, h.Size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", i, h.Size, err)
			}
			if err := proof.VerifyInclusion(recs[i].Data, i, h.Size, p, h.Root); err != nil {
				t.Errorf("inclusion of %d in %d: %v", i, h.Size, err)
			}
		}
	}
	for _, h1 := range heads {
		for _, h2 := range heads {
			if h1.Size > h2.Size {
				continue
			}
			p, err := proof.ConsistencyProof(ctx, s, h1.Size, h2.Size)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", h1.Size, h2.Size, err)
			}
			if err := proof.VerifyConsistency(h1.Size, h2.Size, p, h1.Root, h2.Root); err != nil {
				t.Errorf("consistency %d -> %d: %v", h1.Size, h2.Size, err)
			}
		}
	}
}

// SealedRecord waits (10 s at most) for the record id to be sealed in
// log, whose store is s, and returns it decoded: its proof exists.
func SealedRecord(t testing.TB, log *proof.Log, s proof.Store, id string) *evidence.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, _, err := log.WaitSealed(ctx, id)
	if err != nil {
		t.Fatalf("evidence %s: %v", id, err)
	}
	sr, err := s.Record(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := evidence.UnmarshalRecord(sr.Data)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != id {
		t.Fatalf("the log's record %d is %s, not %s", idx, r.ID, id)
	}
	return r
}
