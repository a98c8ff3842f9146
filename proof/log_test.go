package proof_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"pec/proof"
)

func TestLogAppendProveAudit(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "proof.db")
	s := openBolt(t, path)
	l := e.openLog(t, s, proof.Config{BatchSize: 16})
	ctx := t.Context()

	const writers, each = 8, 25
	receipts := make([][]proof.Receipt, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r, err := l.Append(ctx, sampleRecord(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				receipts[w] = append(receipts[w], r)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	latest := l.Latest()
	if latest == nil || latest.Size != writers*each {
		t.Fatalf("latest head %v, want size %d", latest, writers*each)
	}
	seen := map[uint64]bool{}
	for _, rs := range receipts {
		for _, r := range rs {
			if seen[r.Index] {
				t.Fatalf("index %d acknowledged twice", r.Index)
			}
			seen[r.Index] = true
			idx, err := s.Lookup(ctx, r.ID)
			if err != nil || idx != r.Index {
				t.Fatalf("Lookup(%s) = %d, %v; want %d", r.ID, idx, err, r.Index)
			}
			h, err := s.HeadAt(ctx, r.TreeSize)
			if err != nil {
				t.Fatalf("the head of receipt %+v: %v", r, err)
			}
			rec, err := s.Record(ctx, r.Index)
			if err != nil {
				t.Fatal(err)
			}
			p, err := proof.InclusionProof(ctx, s, r.Index, latest.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rec.Data, r.Index, latest.Size, p, latest.Root); err != nil {
				t.Fatalf("inclusion of %d in the latest head: %v", r.Index, err)
			}
			p, err = proof.InclusionProof(ctx, s, r.Index, h.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rec.Data, r.Index, h.Size, p, h.Root); err != nil {
				t.Fatalf("inclusion of %d in its batch's head: %v", r.Index, err)
			}
		}
	}
	rep, err := proof.Audit(ctx, s, e.auditOptions())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != writers*each || rep.Heads < 2 {
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
	l = e.openLog(t, s, proof.Config{BatchWait: time.Millisecond})
	defer l.Close()
	r, err := l.Append(ctx, sampleRecord(1000))
	if err != nil {
		t.Fatal(err)
	}
	if r.Index != writers*each || r.TreeSize != writers*each+1 {
		t.Errorf("receipt after reopen: %+v", r)
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

func TestLogCallerIDs(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{})
	defer l.Close()
	ctx := t.Context()
	rec := sampleRecord(1)
	rec.ID = "exchange-42.submission"
	r, err := l.Append(ctx, rec)
	if err != nil || r.ID != rec.ID {
		t.Fatalf("Append with an id: %+v, %v", r, err)
	}
	if _, err := l.Append(ctx, rec); !errors.Is(err, proof.ErrDuplicateID) {
		t.Errorf("Append of a held id: %v, want ErrDuplicateID", err)
	}
	bad := sampleRecord(2)
	bad.Type = "Not A Type"
	if _, err := l.Append(ctx, bad); !errors.Is(err, proof.ErrMalformedRecord) {
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

func TestLogTimestampFailureFailsTheBatchOnly(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	ts := &switchTimestamper{ok: e.ts}
	l, err := proof.Open(t.Context(), s, e.signer, ts, proof.Config{}, proof.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := t.Context()
	if _, err := l.Append(ctx, sampleRecord(1)); err != nil {
		t.Fatal(err)
	}
	ts.set(true)
	if _, err := l.Append(ctx, sampleRecord(2)); err == nil {
		t.Fatal("Append with the TSA down succeeded")
	}
	ts.set(false)
	r, err := l.Append(ctx, sampleRecord(3))
	if err != nil || r.Index != 1 {
		t.Fatalf("Append after the TSA came back: %+v, %v (want index 1)", r, err)
	}
	if _, err := proof.Audit(ctx, s, e.auditOptions()); err != nil {
		t.Error(err)
	}
}

type switchTimestamper struct {
	mu   sync.Mutex
	down bool
	ok   proof.Timestamper
}

func (s *switchTimestamper) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *switchTimestamper) Timestamp(ctx context.Context, d []byte) ([]byte, error) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errors.New("TSA down")
	}
	return s.ok.Timestamp(ctx, d)
}

func TestOpenRejectsAnotherKey(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{})
	if _, err := l.Append(t.Context(), sampleRecord(1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	other := newEnv(t)
	if _, err := proof.Open(t.Context(), s, other.signer, other.ts, proof.Config{}, proof.Options{}); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("Open with another key: %v, want ErrNoteSignature", err)
	}
}

func TestEvidenceIDsInContext(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{})
	defer l.Close()
	ctx, ids := proof.WithEvidenceIDs(t.Context())
	r1, err := l.Append(ctx, sampleRecord(1))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Append(ctx, sampleRecord(2))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids.IDs(); len(got) != 2 || got[0] != r1.ID || got[1] != r2.ID {
		t.Errorf("ids %v, want [%s %s]", got, r1.ID, r2.ID)
	}
}
