package proof_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pec/internal/pgtest"
	"pec/proof"
	"pec/proof/prooftest"
)

// pg is the throw-away PostgreSQL of internal/pgtest, as the tests of
// this package name it: url, a superuser's connection string (to kill
// backends, look at pg_locks); restart, nil for PEC_TEST_POSTGRES_URL.
// Set by the first newPGDatabase; the cluster is stopped by TestMain.
var pg struct {
	once    sync.Once
	url     string
	restart func(down time.Duration) error
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newPGDatabase returns the connection string of a new, empty schema
// (cheaper than a database: CREATE DATABASE copies a template).
func newPGDatabase(t testing.TB) string {
	t.Helper()
	c := pgtest.Start(t)
	pg.once.Do(func() {
		pg.url = c.URL
		if c.CanRestart() {
			pg.restart = c.Restart
		}
	})
	return c.NewSchema(t)
}

func openPG(t testing.TB, url string) *proof.PGStore {
	t.Helper()
	s, err := proof.OpenPG(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPGStoreConformance(t *testing.T) {
	urls := map[proof.Store]string{}
	prooftest.RunStore(t, prooftest.Factory{
		New: func(t *testing.T) proof.Store {
			url := newPGDatabase(t)
			s := openPG(t, url)
			urls[s] = url
			// Only the leader seals.
			if ok, err := s.Lead(t.Context()); err != nil || !ok {
				t.Fatalf("Lead on a fresh database: %v, %v", ok, err)
			}
			return s
		},
		Reopen: func(t *testing.T, old proof.Store) proof.Store {
			s := openPG(t, urls[old])
			if ok, err := s.Lead(t.Context()); err != nil || !ok {
				t.Fatalf("Lead after reopening: %v, %v", ok, err)
			}
			return s
		},
	})
}

// TestPGTwoNodes: two nodes (two stores, two logs) append to one
// PostgreSQL log at once: no record lost or duplicated, one consistent
// tree that audits.
func TestPGTwoNodes(t *testing.T) {
	e := newEnv(t)
	url := newPGDatabase(t)
	ctx := t.Context()
	const nodes, writers, each = 2, 8, 30
	var logs []*proof.Log
	for range nodes {
		s := openPG(t, url)
		defer s.Close()
		l := e.openLog(t, s, fastSeal)
		defer l.Close()
		logs = append(logs, l)
	}
	var mu sync.Mutex
	byIndex := map[uint64]string{}
	var wg sync.WaitGroup
	for n, l := range logs {
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					ids, err := l.Append(ctx, sampleRecord((n*writers+w)*each+i))
					if err != nil {
						t.Error(err)
						return
					}
					wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					idx, _, err := l.WaitSealed(wctx, ids[0])
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if prev, dup := byIndex[idx]; dup {
						t.Errorf("index %d given twice: %s and %s", idx, prev, ids[0])
					}
					byIndex[idx] = ids[0]
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	s := openPG(t, url)
	defer s.Close()
	rep, err := proof.Audit(ctx, s, e.auditOptions())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != nodes*writers*each || len(byIndex) != nodes*writers*each {
		t.Fatalf("%d records in the log, %d acknowledged, want %d", rep.Records, len(byIndex), nodes*writers*each)
	}
	for idx, id := range byIndex {
		got, err := s.Lookup(ctx, id)
		if err != nil || got != idx {
			t.Fatalf("acknowledged %s at %d, the log has it at %d (%v)", id, idx, got, err)
		}
	}
	t.Logf("%d records in %d tree heads", rep.Records, rep.Heads)
}

// TestPGSealingLock: the sealing lock through its failures, on the store
// alone. A lost sealing connection fails the calls that need the lock
// (Unsealed, read before the sequencer builds a batch; Integrate) without
// writing; the handle that held the lock takes it back at once on its next
// Lead and writes the batch it had; a handle that saw another hold the
// lock takes it only after finding it free on three consecutive calls; one
// that does not hold it cannot integrate, but may write the head of the
// tree the store holds (it cannot be another tree).
func TestPGSealingLock(t *testing.T) {
	url := newPGDatabase(t)
	ctx := t.Context()
	s1, s2 := openPG(t, url), openPG(t, url)
	defer s2.Close()
	lead := func(s *proof.PGStore, want bool) {
		t.Helper()
		got, err := s.Lead(ctx)
		if err != nil || got != want {
			t.Fatalf("Lead: %v, %v; want %v", got, err, want)
		}
	}
	lead(s1, true)
	lead(s2, false)
	b := prooftest.NewBuilder("lock")
	recs := b.Records(t, 5)
	if err := s2.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	prev, batch := b.Seal(t, recs)
	if err := s2.Integrate(ctx, prev, &batch.Batch); !errors.Is(err, proof.ErrConflict) {
		t.Fatalf("Integrate on the handle that does not lead: %v, want ErrConflict", err)
	}

	terminate(t, sealerPID(t))
	if _, err := s1.Unsealed(ctx, 10); err == nil {
		t.Fatal("Unsealed on the lost sealing connection: no error (the sequencer would sign without the lock)")
	}
	// The lock is free: s2, which saw s1 hold it, waits.
	lead(s2, false)
	lead(s1, true)
	if got, err := s1.Unsealed(ctx, 10); err != nil || len(got) != 5 {
		t.Fatalf("Unsealed after taking the lock back: %d records, %v", len(got), err)
	}
	terminate(t, sealerPID(t))
	if err := s1.Integrate(ctx, prev, &batch.Batch); err == nil || errors.Is(err, proof.ErrConflict) {
		t.Fatalf("Integrate on the lost sealing connection: %v, want an error other than ErrConflict (the batch is to be retried)", err)
	}
	if _, err := s1.Pending(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Fatalf("after the failed integration, Pending: %v, want ErrNotFound", err)
	}
	lead(s1, true)
	if err := s1.Integrate(ctx, prev, &batch.Batch); err != nil {
		t.Fatalf("the same batch after taking the lock back: %v", err)
	}
	if err := s2.PutHead(ctx, &batch.Head); err != nil {
		t.Fatalf("PutHead of the stored tree on the handle that does not lead: %v", err)
	}
	if h, err := s2.Latest(ctx); err != nil || h.Size != 5 {
		t.Fatalf("Latest: %v, %v", h, err)
	}

	// s1's node dies: s2 takes over on its third call with the lock free
	// (the backend of a closed connection lets its locks go a moment
	// after the close returns).
	lead(s2, false)
	s1.Close()
	waitLocksFree(t, url)
	lead(s2, false)
	lead(s2, false)
	lead(s2, true)
	recs = b.Records(t, 3)
	if err := s2.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	prev, batch = b.Seal(t, recs)
	prooftest.SealIn(t, s2, prev, batch)
	// A closed handle does not lead again.
	if ok, err := s1.Lead(ctx); ok || err == nil {
		t.Fatalf("Lead on a closed store: %v, %v", ok, err)
	}
}

// TestPGBackoff: while the database is down, the store does not try it on
// every call: calls fail at once during a back-off (50 ms doubling to
// 1 s), and the store works again by itself within about a second of the
// database's return.
func TestPGBackoff(t *testing.T) {
	url := newPGDatabase(t)
	if pg.restart == nil {
		t.Skip("PEC_TEST_POSTGRES_URL: a database this test cannot restart")
	}
	ctx := t.Context()
	s := openPG(t, url)
	defer s.Close()
	if _, err := s.Latest(ctx); !errors.Is(err, proof.ErrNotFound) {
		t.Fatal(err)
	}
	restarted := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		err := pg.restart(time.Second)
		restarted <- time.Now()
		errc <- err
	}()
	var refused, tried int
	var failedOnce bool
	var up, ok time.Time
	for ok.IsZero() {
		_, err := s.Latest(ctx)
		switch {
		case err == nil || errors.Is(err, proof.ErrNotFound):
			if failedOnce {
				ok = time.Now()
			}
		case strings.Contains(err.Error(), "unreachable (next attempt in"):
			refused++
		default:
			failedOnce = true
			tried++
		}
		select {
		case up = <-restarted:
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		default:
		}
		if !up.IsZero() && time.Since(up) > 5*time.Second {
			t.Fatalf("the store does not work 5 s after the database is back (%d calls tried, %d refused)", tried, refused)
		}
		time.Sleep(time.Millisecond)
	}
	if up.IsZero() {
		up = <-restarted
	}
	t.Logf("outage: %d calls reached for the database, %d refused at once; working %s after the database was back", tried, refused, ok.Sub(up).Round(time.Millisecond))
	// About 1.5 s down (stop, 1 s, start): 50+100+200+400+800 ms and
	// then each second; a few more for the pool's stale connections.
	if tried > 15 || refused < 10*tried {
		t.Errorf("%d calls reached for the database and %d were refused during the outage: no back-off", tried, refused)
	}
	if d := ok.Sub(up); d > 1500*time.Millisecond {
		t.Errorf("working again %s after the database was back, want within the 1 s back-off", d)
	}
}

// waitLocksFree waits until no session holds an advisory lock on the
// database of url (5 s at most).
func waitLocksFree(t *testing.T, url string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var held bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an advisory lock is still held 5 s after its session closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
