package proof_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pec/proof"
	"pec/proof/prooftest"
)

// A throw-away PostgreSQL cluster for the tests: PEC_TEST_POSTGRES_URL if
// set, otherwise initdb and pg_ctl of /usr/lib/postgresql/15 on a
// temporary directory and a unix socket, run as user postgres when the
// tests run as root (initdb refuses root). Started on first use, stopped
// by TestMain.
var pg struct {
	once sync.Once
	url  string
	err  error
	stop func()
	// restart stops the cluster (-m fast: clients are disconnected) and
	// starts it again after down; nil for PEC_TEST_POSTGRES_URL.
	restart func(down time.Duration) error
	n       atomic.Int64
}

const pgBin = "/usr/lib/postgresql/15/bin"

func TestMain(m *testing.M) {
	code := m.Run()
	if pg.stop != nil {
		pg.stop()
	}
	os.Exit(code)
}

func startPostgres() (string, func(), error) {
	if url := os.Getenv("PEC_TEST_POSTGRES_URL"); url != "" {
		return url, nil, nil
	}
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		return "", nil, fmt.Errorf("PostgreSQL 15 is not installed (apt-get install postgresql-15) and PEC_TEST_POSTGRES_URL is not set: %w", err)
	}
	dir, err := os.MkdirTemp("", "pec-pg-")
	if err != nil {
		return "", nil, err
	}
	var wrap []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", nil, err
		}
		wrap = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		args = append(wrap, args...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %w\n%s", args, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(pgBin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return "", nil, err
	}
	opts := fmt.Sprintf("-k %s -p %d -c listen_addresses= -c fsync=on -c max_connections=200", dir, port)
	start := func() error {
		return run(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start")
	}
	if err := start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	pg.restart = func(down time.Duration) error {
		if err := run(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"); err != nil {
			return err
		}
		time.Sleep(down)
		return start()
	}
	stop := func() {
		_ = run(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	}
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", dir, port), stop, nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// newPGDatabase returns the connection string of a new, empty schema
// (cheaper than a database: CREATE DATABASE copies a template).
func newPGDatabase(t testing.TB) string {
	t.Helper()
	pg.once.Do(func() { pg.url, pg.stop, pg.err = startPostgres() })
	if pg.err != nil {
		t.Fatal(pg.err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("pec_proof_%d_%d", os.Getpid(), pg.n.Add(1))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A database given by PEC_TEST_POSTGRES_URL is left as found.
		if c, err := pgx.Connect(ctx, pg.url); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			c.Close(ctx)
		}
	})
	cfg, err := pgx.ParseConfig(pg.url)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable search_path=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database, name)
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
