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
	t.Run("ConcurrentAppendersAndReaders", func(t *testing.T) { testConcurrent(t, open(t, f.New)) })
	t.Run("InclusionAndConsistency", func(t *testing.T) { testProofs(t, open(t, f.New)) })
	if f.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, f) })
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
	prev *proof.Head
	Tag  string // distinguishes the ids of two builders
	Time time.Time
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

// Seal makes the batch that seals recs on the builder's tree, and the
// head it extends (nil: the empty log).
func (b *Builder) Seal(t testing.TB, recs []proof.StoredRecord) (prev *proof.Head, batch *proof.Batch) {
	t.Helper()
	prev = b.prev
	batch = &proof.Batch{Start: b.rng.End(), Records: recs}
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
	batch.Head = proof.Head{
		Size:       b.rng.End(),
		Root:       root,
		Checkpoint: fmt.Appendf(nil, "checkpoint %s %d\n", b.Tag, b.rng.End()),
		Token:      fmt.Appendf(nil, "token %s %d", b.Tag, b.rng.End()),
	}
	head := batch.Head
	b.prev = &head
	return prev, batch
}

// Next appends n records to s and seals them; it returns the batch.
func (b *Builder) Next(t testing.TB, s proof.Store, n int) *proof.Batch {
	t.Helper()
	recs := b.Records(t, n)
	if err := s.Append(context.Background(), recs); err != nil {
		t.Fatalf("Append(%d records): %v", n, err)
	}
	prev, batch := b.Seal(t, recs)
	if err := s.Seal(context.Background(), prev, batch); err != nil {
		t.Fatalf("Seal(start %d, %d records): %v", batch.Start, len(batch.Records), err)
	}
	return batch
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
	for _, batch := range []*proof.Batch{b1, b2} {
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
	if err := s.Seal(ctx, prev, batch); err != nil {
		t.Fatal(err)
	}
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
		bad := &proof.Batch{Start: 3, Records: []proof.StoredRecord{r}, Head: proof.Head{Size: 4, Root: bytes.Repeat([]byte{1}, 32), Checkpoint: []byte("x"), Token: []byte("y")}}
		if err := s.Seal(ctx, batch.Head.Clone(), bad); !errors.Is(err, proof.ErrConflict) {
			t.Errorf("Seal of %s, not an unsealed record: %v, want ErrConflict", r.ID, err)
		}
	}
	prev, batch = b.Seal(t, recs[3:])
	if err := s.Seal(ctx, prev, batch); err != nil {
		t.Fatal(err)
	}
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
	if err := s.Seal(ctx, nil, otherBatch); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Seal over the empty log when a head exists: %v, want ErrConflict", err)
	}
	// Same size as the stored head, another root.
	forked := first.Head.Clone()
	forked.Root = bytes.Repeat([]byte{0x42}, 32)
	_, next := b.Seal(t, recs)
	if err := s.Seal(ctx, forked, next); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Seal on a head of the stored size with another root: %v, want ErrConflict", err)
	}
	if h, err := s.Latest(ctx); err != nil || h.Size != 2 {
		t.Errorf("after refused seals: Latest %v, %v; want size 2", h, err)
	}
	if _, err := s.Record(ctx, 2); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("a refused seal left record 2: %v", err)
	}
	sameIDs(t, "Unsealed after refused seals", unsealed(t, s), ids(recs))
	if err := s.Seal(ctx, first.Head.Clone(), next); err != nil {
		t.Errorf("the right seal after refused ones: %v", err)
	}
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
		if err := s.Seal(ctx, prev, batch); err != nil {
			t.Fatalf("Seal: %v", err)
		}
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
	if err := s.Seal(ctx, prev, batch); err != nil {
		t.Fatalf("Seal after reopening: %v", err)
	}
	if idx, err := s.Lookup(ctx, pending[1].ID); err != nil || idx != 4 {
		t.Errorf("Lookup(%s) = %d, %v; want 4", pending[1].ID, idx, err)
	}
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
