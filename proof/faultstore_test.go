package proof_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/proof"
)

// faultStore is a real BoltStore that fails chosen calls and records what
// the log asked of it: the ids whose Append returned nil (durable), every
// tree handed to Integrate and every checkpoint handed to PutHead. A fault
// is a func called before the real call; it returns the error to give
// back and whether the real call is made first (a commit whose answer is
// lost).
type faultStore struct {
	*proof.BoltStore

	mu        sync.Mutex
	append    fault
	integrate fault
	put       fault
	unsealed  fault
	// gate, when set, holds every Append before the real one until it is
	// closed; entered is signalled as each Append reaches it.
	gate    chan struct{}
	entered chan struct{}
	durable map[string]bool
	// integrated are the trees of every Integrate call, sealed the
	// checkpoints of every PutHead call, in order, with the error the log
	// was given.
	integrated []sealCall
	sealed     []sealCall
	// afterPut, when set, is called after each PutHead that wrote.
	afterPut func()
}

type fault func() (err error, commit bool)

type sealCall struct {
	checkpoint []byte // nil for an Integrate
	size       uint64
	err        error
}

func newFaultStore(t testing.TB) *faultStore {
	t.Helper()
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	t.Cleanup(func() { s.Close() })
	return &faultStore{BoltStore: s, durable: map[string]bool{}}
}

// failTimes fails n calls with err (n < 0: until the test sets another
// fault), making the real call first when commit.
func failTimes(n int, err error, commit bool) fault {
	var mu sync.Mutex
	return func() (error, bool) {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 {
			return nil, false
		}
		n--
		return err, commit
	}
}

func (s *faultStore) set(f *fault, to fault) {
	s.mu.Lock()
	*f = to
	s.mu.Unlock()
}

func (s *faultStore) take(f *fault) (error, bool) {
	s.mu.Lock()
	fn := *f
	s.mu.Unlock()
	if fn == nil {
		return nil, false
	}
	return fn()
}

func (s *faultStore) isDurable(ids ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if !s.durable[id] {
			return false
		}
	}
	return true
}

func (s *faultStore) seals() []sealCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sealed)
}

func (s *faultStore) Append(ctx context.Context, recs []proof.StoredRecord) error {
	s.mu.Lock()
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	}
	ferr, commit := s.take(&s.append)
	if ferr != nil && !commit {
		return ferr
	}
	err := s.BoltStore.Append(ctx, recs)
	if err == nil {
		s.mu.Lock()
		for _, r := range recs {
			s.durable[r.ID] = true
		}
		s.mu.Unlock()
	}
	if ferr != nil {
		return ferr
	}
	return err
}

func (s *faultStore) Integrate(ctx context.Context, prev *proof.Tree, b *proof.Batch) error {
	ferr, commit := s.take(&s.integrate)
	var err error
	if ferr == nil || commit {
		err = s.BoltStore.Integrate(ctx, prev, b)
	}
	if ferr != nil {
		err = ferr
	}
	s.mu.Lock()
	s.integrated = append(s.integrated, sealCall{size: b.Tree.Size, err: err})
	s.mu.Unlock()
	return err
}

func (s *faultStore) PutHead(ctx context.Context, h *proof.Head) error {
	ferr, commit := s.take(&s.put)
	var err error
	if ferr == nil || commit {
		err = s.BoltStore.PutHead(ctx, h)
	}
	s.mu.Lock()
	after := s.afterPut
	s.mu.Unlock()
	if err == nil && (ferr == nil || commit) && after != nil {
		after()
	}
	if ferr != nil {
		err = ferr
	}
	s.mu.Lock()
	s.sealed = append(s.sealed, sealCall{checkpoint: bytes.Clone(h.Checkpoint), size: h.Size, err: err})
	s.mu.Unlock()
	return err
}

func (s *faultStore) integrations() []sealCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.integrated)
}

func (s *faultStore) Unsealed(ctx context.Context, max int) ([]proof.StoredRecord, error) {
	if ferr, _ := s.take(&s.unsealed); ferr != nil {
		return nil, ferr
	}
	return s.BoltStore.Unsealed(ctx, max)
}

var _ proof.Store = (*faultStore)(nil)

// faultLog opens a log over s with a counting timestamper.
func faultLog(t *testing.T, e *env, s *faultStore) (*proof.Log, *switchTimestamper, *prometheus.Registry) {
	t.Helper()
	ts := &switchTimestamper{ok: e.ts}
	reg := prometheus.NewRegistry()
	l, err := proof.Open(t.Context(), s, e.signer, ts, fastSeal, proof.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, ts, reg
}

// appendIDs appends n records with ids prefix-0..., one Append each, and
// checks that every acknowledged id was durable in the store when Append
// returned.
func appendIDs(t *testing.T, l *proof.Log, s *faultStore, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		rec := sampleRecord(i)
		rec.ID = prefix + "-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		got, err := l.Append(t.Context(), rec)
		if err != nil {
			t.Fatalf("Append %s: %v", rec.ID, err)
		}
		if !s.isDurable(got...) {
			t.Fatalf("Append %s acknowledged before the store's Append returned", rec.ID)
		}
		ids = append(ids, got...)
	}
	return ids
}

// waitAllSealed waits (10 s at most) for every id to be sealed and
// published.
func waitAllSealed(t *testing.T, l *proof.Log, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		if _, _, err := l.WaitSealed(ctx, id); err != nil {
			t.Fatalf("WaitSealed(%s): %v", id, err)
		}
	}
}

// waitUntil polls cond for 10 s at most.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: not %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// auditHeads audits the store and counts its heads.
func auditHeads(t *testing.T, e *env, s proof.Store) int {
	t.Helper()
	rep, err := proof.Audit(t.Context(), s, e.auditOptions())
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if rep.Unsealed != 0 {
		t.Errorf("audit: %d records unsealed", rep.Unsealed)
	}
	return int(rep.Heads)
}

var errDisk = errors.New("injected: input/output error")

// TestStoreFaults: what the log does when a commit of its store fails.
func TestStoreFaults(t *testing.T) {
	e := newEnv(t)

	// Append fails: the caller gets ErrUnavailable, nothing is
	// acknowledged or written, readiness says so; the next Append works.
	t.Run("append fails", func(t *testing.T) {
		s := newFaultStore(t)
		l, _, _ := faultLog(t, e, s)
		s.set(&s.append, failTimes(1, errDisk, false))
		rec := sampleRecord(1)
		rec.ID = "refused"
		ids, err := l.Append(t.Context(), rec)
		if !errors.Is(err, evidence.ErrUnavailable) || !errors.Is(err, errDisk) {
			t.Fatalf("Append over a failing store: %v, %v; want ErrUnavailable wrapping the store's error", ids, err)
		}
		if ids != nil {
			t.Errorf("ids %v returned with an error", ids)
		}
		if _, err := s.Lookup(t.Context(), "refused"); !errors.Is(err, proof.ErrNotFound) {
			t.Errorf("the refused record: Lookup = %v, want ErrNotFound", err)
		}
		if l.Ready() == nil {
			t.Error("Ready() = nil right after a failed write")
		}
		// The same id can be appended once the store works.
		if _, err := l.Append(t.Context(), rec); err != nil {
			t.Fatalf("Append after the store recovered: %v", err)
		}
		ids = append(appendIDs(t, l, s, "after", 3), "refused")
		waitAllSealed(t, l, ids)
		heads := auditHeads(t, e, s)
		if heads < 1 {
			t.Errorf("%d heads", heads)
		}
		if err := l.Ready(); err != nil {
			t.Errorf("Ready() after the store recovered, appended and sealed: %v", err)
		}
	})

	// Append fails in a group commit: every caller of the group gets the
	// error, none is acknowledged.
	t.Run("append of a group fails", func(t *testing.T) {
		s := newFaultStore(t)
		l, _, _ := faultLog(t, e, s)
		s.mu.Lock()
		s.gate, s.entered = make(chan struct{}), make(chan struct{}, 1)
		s.mu.Unlock()
		// The first Append holds the writer; the next 8 queue behind it
		// and are written as one group, which fails.
		first := make(chan error, 1)
		go func() { _, err := l.Append(t.Context(), sampleRecord(100)); first <- err }()
		<-s.entered
		errs := make(chan error, 8)
		for i := range 8 {
			go func() { _, err := l.Append(t.Context(), sampleRecord(i)); errs <- err }()
		}
		time.Sleep(50 * time.Millisecond) // let them queue
		s.set(&s.append, failTimes(-1, errDisk, false))
		s.mu.Lock()
		close(s.gate)
		s.gate = nil
		s.mu.Unlock()
		failed := 0
		for range 8 {
			if err := <-errs; err != nil {
				if !errors.Is(err, evidence.ErrUnavailable) {
					t.Errorf("a caller of the failed group: %v, want ErrUnavailable", err)
				}
				failed++
			}
		}
		if err := <-first; !errors.Is(err, evidence.ErrUnavailable) {
			t.Errorf("the first caller: %v, want ErrUnavailable", err)
		}
		if failed != 8 {
			t.Errorf("%d of 8 queued callers failed: the group's write failed, it must fail them all", failed)
		}
		recs, err := s.BoltStore.Unsealed(t.Context(), 100)
		if err != nil || len(recs) != 0 {
			t.Errorf("the store holds %d records of failed appends (%v)", len(recs), err)
		}
	})

	// The head's write fails once, nothing written or its answer lost:
	// the same signed checkpoint is written again, not signed and
	// time-stamped a second time.
	for _, tc := range []struct {
		name   string
		commit bool
	}{
		{"head write fails before writing", false},
		{"head written, its answer lost", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFaultStore(t)
			l, ts, _ := faultLog(t, e, s)
			s.set(&s.put, failTimes(1, errDisk, tc.commit))
			ids := appendIDs(t, l, s, "seal", 20)
			waitAllSealed(t, l, ids)
			calls := s.seals()
			if len(calls) < 2 || calls[0].err == nil {
				t.Fatalf("head writes %+v: want a failed one, then its retry", calls)
			}
			if !bytes.Equal(calls[0].checkpoint, calls[1].checkpoint) {
				t.Errorf("the retry wrote another checkpoint (size %d, then %d): a signed checkpoint is written again as it is", calls[0].size, calls[1].size)
			}
			heads := auditHeads(t, e, s)
			if n := ts.count(); n != heads {
				t.Errorf("%d time-stamps for %d heads: the failed write was signed again", n, heads)
			}
			if l.Ready() != nil {
				t.Errorf("Ready after the write recovered: %v", l.Ready())
			}
			h, err := s.HeadAt(t.Context(), calls[0].size)
			if err != nil || !bytes.Equal(h.Checkpoint, calls[0].checkpoint) {
				t.Errorf("the head of size %d is not the checkpoint first signed: %v", calls[0].size, err)
			}
		})
	}

	// Integrate fails once, before writing, or written with its answer
	// lost: nothing is signed before the store holds the tree; the tree
	// the store holds is the one signed, once.
	for _, tc := range []struct {
		name   string
		err    error
		commit bool
	}{
		{"integrate fails before writing", errDisk, false},
		{"integrated, its answer lost", errDisk, true},
		{"integrate conflicts", proof.ErrConflict, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFaultStore(t)
			l, ts, reg := faultLog(t, e, s)
			s.set(&s.integrate, failTimes(1, tc.err, tc.commit))
			ids := appendIDs(t, l, s, "integrate", 20)
			waitAllSealed(t, l, ids)
			calls := s.integrations()
			if len(calls) < 1 || !errors.Is(calls[0].err, tc.err) {
				t.Fatalf("integrations %+v: want a failed one first", calls)
			}
			heads := auditHeads(t, e, s)
			if n := ts.count(); n != heads {
				t.Errorf("%d time-stamps for %d heads: a tree the store did not hold was signed", n, heads)
			}
			if tc.commit {
				// The first tree was found pending and signed as it is.
				if _, err := s.HeadAt(t.Context(), calls[0].size); err != nil {
					t.Errorf("the tree integrated with its answer lost (size %d) has no head: %v", calls[0].size, err)
				}
			}
			if got := counter(t, reg, "pec_proof_unpublished_checkpoints_total"); got != 0 {
				t.Errorf("pec_proof_unpublished_checkpoints_total = %v, want 0", got)
			}
			if l.Ready() != nil {
				t.Errorf("Ready after recovery: %v", l.Ready())
			}
		})
	}

	// ErrConflict from a head write that did write this very head (its
	// first answer lost, the retry finds it written): not a conflict at
	// all.
	t.Run("head write conflicts with its own head", func(t *testing.T) {
		s := newFaultStore(t)
		l, ts, reg := faultLog(t, e, s)
		s.set(&s.put, failTimes(1, proof.ErrConflict, true))
		ids := appendIDs(t, l, s, "own", 20)
		waitAllSealed(t, l, ids)
		if got := counter(t, reg, "pec_proof_unpublished_checkpoints_total"); got != 0 {
			t.Errorf("pec_proof_unpublished_checkpoints_total = %v, want 0: the head was written", got)
		}
		if calls := s.seals(); len(calls) < 1 || !errors.Is(calls[0].err, proof.ErrConflict) {
			t.Fatalf("head writes %+v", calls)
		}
		if heads := auditHeads(t, e, s); ts.count() != heads {
			t.Errorf("%d time-stamps for %d heads", ts.count(), heads)
		}
	})

	// Unsealed fails: records are still acknowledged (they are durable),
	// readiness reports the failure until sealing works again.
	t.Run("unsealed fails", func(t *testing.T) {
		s := newFaultStore(t)
		l, _, _ := faultLog(t, e, s)
		s.set(&s.unsealed, failTimes(-1, errDisk, false))
		ids := appendIDs(t, l, s, "unsealed", 5)
		waitUntil(t, "Ready() != nil while Unsealed fails", func() bool { return l.Ready() != nil })
		if !errors.Is(l.Ready(), errDisk) {
			t.Errorf("Ready() = %v, want the store's error", l.Ready())
		}
		if _, err := s.Lookup(t.Context(), ids[0]); !errors.Is(err, proof.ErrNotSealed) {
			t.Errorf("Lookup while sealing fails: %v, want ErrNotSealed", err)
		}
		s.set(&s.unsealed, nil)
		waitAllSealed(t, l, ids)
		waitUntil(t, "Ready() == nil after recovery", func() bool { return l.Ready() == nil })
		auditHeads(t, e, s)
	})
}

func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	return metric(t, reg, name).GetCounter().GetValue()
}
