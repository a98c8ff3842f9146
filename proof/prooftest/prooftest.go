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

	"pec/proof"
)

// RunStore runs the conformance suite; newStore returns a fresh, empty
// store, closed by the suite.
func RunStore(t *testing.T, newStore func(t *testing.T) proof.Store) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open(t, newStore)) })
	t.Run("CommitAndRead", func(t *testing.T) { testCommitAndRead(t, open(t, newStore)) })
	t.Run("Conflict", func(t *testing.T) { testConflict(t, open(t, newStore)) })
	t.Run("ConcurrentReaders", func(t *testing.T) { testConcurrentReaders(t, open(t, newStore)) })
	t.Run("InclusionAndConsistency", func(t *testing.T) { testProofs(t, open(t, newStore)) })
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

// Next makes the batch of the next n records.
func (b *Builder) Next(t testing.TB, n int) *proof.Batch {
	t.Helper()
	batch := &proof.Batch{Start: b.rng.End()}
	for range n {
		rec := proof.Record{ID: b.ID(b.n), Type: proof.SubmissionAccepted, Time: b.Time.Add(time.Duration(b.n) * time.Millisecond), Subject: "dossier-" + b.ID(b.n)}
		b.n++
		data, err := rec.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		batch.Records = append(batch.Records, proof.StoredRecord{ID: rec.ID, Data: data})
		if err := b.rng.Append(proof.LeafHash(data), func(id compact.NodeID, h []byte) {
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
		Checkpoint: fmt.Appendf(nil, "checkpoint %d\n", b.rng.End()),
		Token:      fmt.Appendf(nil, "token %d", b.rng.End()),
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

func commit(t testing.TB, s proof.Store, b *proof.Batch) {
	t.Helper()
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatalf("Commit(start %d, %d records): %v", b.Start, len(b.Records), err)
	}
}

func sameHead(t testing.TB, what string, got *proof.Head, want proof.Head) {
	t.Helper()
	if got.Size != want.Size || !bytes.Equal(got.Root, want.Root) || !bytes.Equal(got.Checkpoint, want.Checkpoint) || !bytes.Equal(got.Token, want.Token) {
		t.Errorf("%s: head of size %d, want %d (or other bytes)", what, got.Size, want.Size)
	}
}

func testCommitAndRead(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("a")
	b1, b2 := b.Next(t, 3), b.Next(t, 2)
	commit(t, s, b1)
	commit(t, s, b2)

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
		ids := make([]compact.NodeID, len(batch.Nodes))
		for i, n := range batch.Nodes {
			ids[i] = n.ID
		}
		hashes, err := s.Nodes(ctx, ids)
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

func testConflict(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("c")
	commit(t, s, b.Next(t, 2))
	// Another sequencer's batch at the same place.
	other := NewBuilder("d").Next(t, 3)
	if err := s.Commit(ctx, other); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Commit at a taken start: %v, want ErrConflict", err)
	}
	// A batch that skips records.
	skip := b.Next(t, 1)
	skip2 := b.Next(t, 1)
	if err := s.Commit(ctx, skip2); !errors.Is(err, proof.ErrConflict) {
		t.Errorf("Commit past the end: %v, want ErrConflict", err)
	}
	// An id already held: nothing of the batch is written.
	skip.Records[0].ID = b.ID(0)
	if err := s.Commit(ctx, skip); !errors.Is(err, proof.ErrDuplicateID) {
		t.Errorf("Commit of a held id: %v, want ErrDuplicateID", err)
	}
	if h, err := s.Latest(ctx); err != nil || h.Size != 2 {
		t.Errorf("after refused commits: Latest %v, %v; want size 2", h, err)
	}
	if _, err := s.Record(ctx, 2); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("a refused batch left record 2: %v", err)
	}
}

func testConcurrentReaders(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("r")
	commit(t, s, b.Next(t, 1))
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
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
	for range 50 {
		commit(t, s, b.Next(t, 7))
	}
	close(done)
	wg.Wait()
}

func testProofs(t *testing.T, s proof.Store) {
	ctx := t.Context()
	b := NewBuilder("p")
	var heads []proof.Head
	var recs []proof.StoredRecord
	for _, n := range []int{1, 2, 5, 8, 1, 13} {
		batch := b.Next(t, n)
		commit(t, s, batch)
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
