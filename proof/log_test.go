package proof_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"pec/evidence"
	"pec/proof"
)

type appended struct {
	id  string
	idx uint64
}

func TestLogAppendProveAudit(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "proof.db")
	s := openBolt(t, path)
	cfg := fastSeal
	cfg.BatchSize = 16
	l := e.openLog(t, s, cfg)
	ctx := t.Context()

	const writers, each = 8, 25
	got := make([][]appended, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ids, err := l.Append(ctx, sampleRecord(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], appended{id: ids[0]})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Acknowledged when durable, sealed within the interval.
	for w := range got {
		for i := range got[w] {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			idx, _, err := l.WaitSealed(wctx, got[w][i].id)
			cancel()
			if err != nil {
				t.Fatalf("WaitSealed(%s): %v", got[w][i].id, err)
			}
			got[w][i].idx = idx
		}
	}
	latest := l.Latest()
	if latest == nil || latest.Size != writers*each {
		t.Fatalf("latest head %v, want size %d", latest, writers*each)
	}
	seen := map[uint64]bool{}
	for _, rs := range got {
		for _, r := range rs {
			if seen[r.idx] {
				t.Fatalf("index %d given twice", r.idx)
			}
			seen[r.idx] = true
			h, err := s.HeadCovering(ctx, r.idx)
			if err != nil {
				t.Fatalf("the head covering %d: %v", r.idx, err)
			}
			rec, err := s.Record(ctx, r.idx)
			if err != nil || rec.ID != r.id {
				t.Fatalf("Record(%d) = %v, %v; want id %s", r.idx, rec, err, r.id)
			}
			for _, head := range []*proof.Head{latest, h} {
				p, err := proof.InclusionProof(ctx, s, r.idx, head.Size)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyInclusion(rec.Data, r.idx, head.Size, p, head.Root); err != nil {
					t.Fatalf("inclusion of %d in the head of size %d: %v", r.idx, head.Size, err)
				}
			}
		}
	}
	rep, err := proof.Audit(ctx, s, e.auditOptions())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != writers*each || rep.Heads < 1 || rep.Unsealed != 0 {
		t.Errorf("audit report %+v", rep)
	}

	// Reopen: the log goes on from the stored tree.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, sampleRecord(0)); !errors.Is(err, proof.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	s.Close()
	s = openBolt(t, path)
	defer s.Close()
	cfg = fastSeal
	cfg.BatchWait = time.Millisecond
	l = e.openLog(t, s, cfg)
	defer l.Close()
	if _, idx := appendSealed(t, l, sampleRecord(1000)); idx != writers*each {
		t.Errorf("index after reopen: %d", idx)
	}
	h := l.Latest()
	p, err := proof.ConsistencyProof(ctx, s, latest.Size, h.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(latest.Size, h.Size, p, latest.Root, h.Root); err != nil {
		t.Errorf("consistency across reopen: %v", err)
	}
	if _, err := proof.Audit(ctx, s, e.auditOptions()); err != nil {
		t.Error(err)
	}
}

// TestLogAckBeforeSeal: Append returns once durable, before any seal; the
// seal follows within the interval; Close seals what is left.
func TestLogAckBeforeSeal(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "proof.db")
	s := openBolt(t, path)
	defer s.Close()
	ts := &switchTimestamper{ok: e.ts}
	ts.set(true) // no checkpoint can be made
	reg := prometheus.NewRegistry()
	l, err := proof.Open(t.Context(), s, e.signer, ts, fastSeal, proof.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := l.Append(t.Context(), sampleRecord(1), sampleRecord(2))
	if err != nil {
		t.Fatalf("Append with the TSA down: %v (a record is acknowledged once durable)", err)
	}
	if _, err := s.Lookup(t.Context(), ids[1]); !errors.Is(err, proof.ErrNotSealed) {
		t.Errorf("Lookup of an unsealed record: %v, want ErrNotSealed", err)
	}
	wctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := l.WaitSealed(wctx, ids[0]); !errors.Is(err, proof.ErrNotSealed) {
		t.Errorf("WaitSealed with no TSA: %v, want ErrNotSealed", err)
	}
	if l.Ready() == nil {
		t.Error("Ready while sealing fails")
	}
	ts.set(false)
	wctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	idx, head, err := l.WaitSealed(wctx, ids[1])
	if err != nil || idx != 1 || head.Size != 2 {
		t.Fatalf("WaitSealed after the TSA came back: %d, %v, %v", idx, head, err)
	}
	if l.Ready() != nil {
		t.Errorf("Ready after sealing works again: %v", l.Ready())
	}
	if d := gauge(t, reg, "pec_proof_seal_delay_max_seconds"); d <= 0 || d > 5 {
		t.Errorf("longest seal delay %v s", d)
	}
	// Close seals what was appended before it.
	ids, err = l.Append(t.Context(), sampleRecord(3))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if idx, err := s.Lookup(t.Context(), ids[0]); err != nil || idx != 2 {
		t.Errorf("after Close: Lookup = %d, %v; want 2", idx, err)
	}
}

// TestLogSealsAfterCrash: records durable but not sealed when the node
// stopped are sealed by the next Open.
func TestLogSealsAfterCrash(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "proof.db")
	s := openBolt(t, path)
	// What a crashed node leaves: records appended, never sealed.
	if err := s.Append(t.Context(), []proof.StoredRecord{stored(t, 1), stored(t, 2)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openBolt(t, path)
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	defer l.Close()
	wctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, _, err := l.WaitSealed(wctx, "crashed-2"); err != nil {
		t.Fatalf("the unsealed records of a crash: %v", err)
	}
	if _, err := proof.Audit(t.Context(), s, e.auditOptions()); err != nil {
		t.Error(err)
	}
}

func stored(t testing.TB, i int) proof.StoredRecord {
	t.Helper()
	rec := sampleRecord(i)
	rec.ID = "crashed-" + string(rune('0'+i))
	rec.Time = time.Now()
	data, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return proof.StoredRecord{ID: rec.ID, Data: data}
}

func TestLogCallerIDs(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	defer l.Close()
	ctx := t.Context()
	rec := sampleRecord(1)
	rec.ID = "exchange-42.submission"
	ids, err := l.Append(ctx, rec)
	if err != nil || ids[0] != rec.ID {
		t.Fatalf("Append with an id: %v, %v", ids, err)
	}
	// Unsealed, then sealed: a duplicate either way.
	if _, err := l.Append(ctx, rec); !errors.Is(err, proof.ErrDuplicateID) {
		t.Errorf("Append of a held, unsealed id: %v, want ErrDuplicateID", err)
	}
	appendSealed(t, l, sampleRecord(9))
	if _, err := l.Append(ctx, rec); !errors.Is(err, proof.ErrDuplicateID) {
		t.Errorf("Append of a held, sealed id: %v, want ErrDuplicateID", err)
	}
	// A call is atomic: a duplicate refuses the others with it.
	fresh := sampleRecord(5)
	fresh.ID = "fresh"
	if _, err := l.Append(ctx, fresh, rec); !errors.Is(err, proof.ErrDuplicateID) {
		t.Errorf("Append of a new and a held id: %v, want ErrDuplicateID", err)
	}
	if _, err := s.Lookup(ctx, "fresh"); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("the new record of a refused call: %v, want ErrNotFound", err)
	}
	bad := sampleRecord(2)
	bad.Type = "Not A Type"
	if _, err := l.Append(ctx, bad); !errors.Is(err, evidence.ErrMalformedRecord) {
		t.Errorf("Append of an invalid record: %v, want ErrMalformedRecord", err)
	}
	// Concurrent duplicates: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			rec := sampleRecord(3)
			rec.ID = "same"
			if _, err := l.Append(ctx, rec); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, proof.ErrDuplicateID) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d appends of one id succeeded", wins)
	}
}

type switchTimestamper struct {
	mu   sync.Mutex
	down bool
	n    int
	ok   proof.Timestamper
}

func (s *switchTimestamper) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *switchTimestamper) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

func (s *switchTimestamper) Timestamp(ctx context.Context, d []byte) ([]byte, error) {
	s.mu.Lock()
	down := s.down
	s.n++
	s.mu.Unlock()
	if down {
		return nil, errors.New("TSA down")
	}
	return s.ok.Timestamp(ctx, d)
}

// TestLogSealsOncePerInterval: under a steady load, one checkpoint covers
// many records, at most one an interval (and one at once after idling).
func TestLogSealsOncePerInterval(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	ts := &switchTimestamper{ok: e.ts}
	l, err := proof.Open(t.Context(), s, e.signer, ts, proof.Config{SealInterval: 200 * time.Millisecond}, proof.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last string
	for i := 0; time.Since(start) < time.Second; i++ {
		ids, err := l.Append(t.Context(), sampleRecord(i))
		if err != nil {
			t.Fatal(err)
		}
		last = ids[0]
	}
	elapsed := time.Since(start)
	wctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, _, err := l.WaitSealed(wctx, last); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if n, most := ts.count(), int(elapsed/(200*time.Millisecond))+3; n > most {
		t.Errorf("%d checkpoints in %v at an interval of 200ms (want at most %d)", n, elapsed, most)
	}
}

func TestOpenRejectsAnotherKey(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	appendSealed(t, l, sampleRecord(1))
	l.Close()
	other := newEnv(t)
	if _, err := proof.Open(t.Context(), s, other.signer, other.ts, proof.Config{}, proof.Options{}); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("Open with another key: %v, want ErrNoteSignature", err)
	}
}

// metric is the one series of the metric named name in reg.
func metric(t testing.TB, reg *prometheus.Registry, name string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	return metric(t, reg, name).GetGauge().GetValue()
}

// freshSpy records the Fresh mark of every record appended to its store.
type freshSpy struct {
	*proof.BoltStore
	mu    sync.Mutex
	fresh map[string]bool
}

func (s *freshSpy) Append(ctx context.Context, recs []proof.StoredRecord) error {
	s.mu.Lock()
	for _, r := range recs {
		s.fresh[r.ID] = r.Fresh
	}
	s.mu.Unlock()
	return s.BoltStore.Append(ctx, recs)
}

// TestLogMarksItsOwnIDsFresh: the ids the log makes are appended Fresh
// (the store need not look them up), a caller's never.
func TestLogMarksItsOwnIDsFresh(t *testing.T) {
	e := newEnv(t)
	s := &freshSpy{BoltStore: openBolt(t, filepath.Join(t.TempDir(), "proof.db")), fresh: map[string]bool{}}
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	defer l.Close()
	ctx := t.Context()
	caller := sampleRecord(2)
	caller.ID = "caller-chosen"
	ids, err := l.Append(ctx, sampleRecord(1), caller, sampleRecord(3))
	if err != nil {
		t.Fatal(err)
	}
	more, err := l.Append(ctx, sampleRecord(4))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{ids[0]: true, "caller-chosen": false, ids[2]: true, more[0]: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	if diff := cmp.Diff(want, s.fresh); diff != "" {
		t.Errorf("Fresh marks (-want +got):\n%s", diff)
	}
}
