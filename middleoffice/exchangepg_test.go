package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pec/evidence"
	"pec/internal/pgtest"
	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
)

func openPGExchanges(t testing.TB, url string) *middleoffice.PGExchangeStore {
	t.Helper()
	s, err := middleoffice.OpenPGExchanges(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPGExchangeStore(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	urls := map[middleoffice.ExchangeStore]string{}
	exchangetest.RunStore(t, exchangetest.Factory{
		New: func(t *testing.T) middleoffice.ExchangeStore {
			url := pgtest.NewSchema(t)
			s := openPGExchanges(t, url)
			mu.Lock()
			urls[s] = url
			mu.Unlock()
			return s
		},
		Reopen: func(t *testing.T, s middleoffice.ExchangeStore) middleoffice.ExchangeStore {
			mu.Lock()
			defer mu.Unlock()
			return openPGExchanges(t, urls[s])
		},
	})
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

// TestPGExchangeTwoNodes: two stores on one database (two nodes), eight
// workers each, claim and do 200 jobs at once, each doing its job as the
// queue does (the delivery step commits and finishes the job), some
// giving theirs back once to be retried: every job is done once, none
// twice, and the queue ends empty.
func TestPGExchangeTwoNodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	a, b := openPGExchanges(t, url), openPGExchanges(t, url)
	defer a.Close()
	defer b.Close()
	const n = 200
	for i := range n {
		ex := exchangetest.NewExchange(fmt.Sprintf("x%03d", i), "a", "b", "")
		st := exchangetest.CreateStep(ex)
		if err := a.Prepare(ctx, st); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(ctx, ex.ID, st.Event.EvidenceID); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	done := map[string]string{}
	var released atomic.Int64
	var wg sync.WaitGroup
	for node, s := range map[string]*middleoffice.PGExchangeStore{"a": a, "b": b} {
		for w := range 8 {
			wg.Go(func() {
				for {
					j, err := s.Claim(ctx, t0.Add(time.Hour), time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					if j == nil {
						return
					}
					if w == 0 && j.Attempts == 0 {
						// Give it back once: due again at once, for anyone.
						if err := s.Release(ctx, j, t0, "retry"); err != nil {
							t.Error(err)
						}
						released.Add(1)
						continue
					}
					st := exchangetest.Step(j.Exchange, j.Exchange+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
					st.Finish = j.ID
					if err := s.Prepare(ctx, st); err != nil {
						t.Errorf("node %s: job %s: %v (done by %s)", node, j.ID, err, done[j.ID])
						return
					}
					if err := s.Commit(ctx, st.Exchange, st.Event.EvidenceID); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if by, dup := done[j.ID]; dup {
						t.Errorf("job %s done twice: by %s and %s", j.ID, by, node)
					}
					done[j.ID] = node
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(done) != n {
		t.Errorf("%d jobs done, want %d", len(done), n)
	}
	if jobs, err := a.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("the queue after the run: %d jobs, %v", len(jobs), err)
	}
	by := map[string]int{}
	for _, node := range done {
		by[node]++
	}
	for i := range n {
		ex, err := b.Exchange(ctx, fmt.Sprintf("x%03d", i))
		if err != nil || ex.State != middleoffice.StateDelivered || len(ex.Events) != 2 {
			t.Fatalf("x%03d: %+v, %v", i, ex, err)
		}
	}
	t.Logf("jobs done by node: %v; %d given back and done again", by, released.Load())
}

// TestPGExchangeConcurrentSteps: the steps of the nodes racing on one
// exchange: one Prepare wins, the others get ErrStepPending; a Commit
// and a recovery's Commit of the same step apply it once; creations
// racing for one idempotency key: one exchange, the others told its id.
func TestPGExchangeConcurrentSteps(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	stores := []*middleoffice.PGExchangeStore{openPGExchanges(t, url), openPGExchanges(t, url), openPGExchanges(t, url)}
	for _, s := range stores {
		defer s.Close()
	}
	for round := range 20 {
		id := fmt.Sprintf("k%02d", round)
		errs := make([]error, 6)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				errs[i] = stores[i%3].Prepare(ctx, exchangetest.CreateStep(exchangetest.NewExchange(fmt.Sprintf("%s-%d", id, i), "a", "b", id)))
			})
		}
		wg.Wait()
		winner := ""
		for i, err := range errs {
			if err == nil {
				if winner != "" {
					t.Fatalf("round %d: two creations with one key: %s and %d", round, winner, i)
				}
				winner = fmt.Sprintf("%s-%d", id, i)
			}
		}
		for i, err := range errs {
			if err == nil {
				continue
			}
			if kt, ok := errors.AsType[*middleoffice.KeyTakenError](err); !ok || kt.Exchange != winner {
				t.Fatalf("round %d: creation %d: %v, want *KeyTakenError naming %s", round, i, err, winner)
			}
		}
		// Two commits of the winner's step at once: one event.
		for i := range 2 {
			wg.Go(func() {
				if err := stores[i].Commit(ctx, winner, winner+"-accepted"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ex, err := stores[2].Exchange(ctx, winner); err != nil || len(ex.Events) != 1 || ex.State != middleoffice.StateAccepted {
			t.Fatalf("round %d: %+v, %v", round, ex, err)
		}
		// Steps of one exchange racing: one prepared.
		var won atomic.Int64
		for i := range 6 {
			wg.Go(func() {
				st := exchangetest.Step(winner, fmt.Sprintf("%s-d%d", winner, i), evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
				switch err := stores[i%3].Prepare(ctx, st); {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, middleoffice.ErrStepPending):
					t.Errorf("a racing step: %v, want ErrStepPending", err)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("round %d: %d racing steps prepared, want 1", round, won.Load())
		}
	}
}

// pgAdmin connects to the cluster as its superuser.
func pgAdmin(t *testing.T) *pgx.Conn {
	t.Helper()
	c := pgtest.Start(t)
	conn, err := pgx.Connect(t.Context(), c.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// blocker holds row locks in a transaction of its own, so that a call of
// the store waits in the middle of its transaction; kill then ends the
// backend of that call, as a lost connection does.
type blocker struct {
	t     *testing.T
	tx    pgx.Tx
	pid   uint32
	admin *pgx.Conn
}

func newBlocker(t *testing.T, url, lock string, args ...any) *blocker {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), lock, args...); err != nil {
		t.Fatal(err)
	}
	return &blocker{t: t, tx: tx, pid: conn.PgConn().PID(), admin: pgAdmin(t)}
}

// kill waits until a backend waits for the blocker's locks, terminates
// it, and returns once it is gone.
func (b *blocker) kill() {
	t := b.t
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var pid int32
	for {
		err := b.admin.QueryRow(t.Context(), "SELECT pid FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)) LIMIT 1", int32(b.pid)).Scan(&pid)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) || time.Now().After(deadline) {
			t.Fatalf("no call of the store waits for the test's lock: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var ok bool
	if err := b.admin.QueryRow(t.Context(), "SELECT pg_terminate_backend($1, 5000)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
}

func (b *blocker) release() {
	if err := b.tx.Rollback(context.Background()); err != nil {
		b.t.Fatal(err)
	}
}

// TestPGExchangeConnectionLost: the connection of a call is lost in the
// middle of its transaction, after some of its writes (the backend
// terminated while it waits for a lock the test holds): the call fails,
// nothing of it is applied, and the same call succeeds on the next try,
// on a new connection of the pool.
func TestPGExchangeConnectionLost(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	s := openPGExchanges(t, url)
	defer s.Close()
	for _, tc := range []struct {
		name string
		// setup returns the lock the test holds and the call that waits.
		setup func(t *testing.T, id string) (lock string, call func() error)
		check func(t *testing.T, id string)
	}{
		{
			// Commit: the exchange updated and its event written, then it
			// waits to remove the job it finishes.
			name: "commit",
			setup: func(t *testing.T, id string) (string, func() error) {
				mustDo(t, s, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "")))
				st := exchangetest.Step(id, id+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
				st.Finish = id + "-process"
				if err := s.Prepare(ctx, st); err != nil {
					t.Fatal(err)
				}
				return "SELECT 1 FROM exchange_jobs WHERE id = '" + id + "-process' FOR UPDATE", func() error {
					return s.Commit(ctx, id, id+"-delivered")
				}
			},
			check: func(t *testing.T, id string) {
				ex, err := s.Exchange(ctx, id)
				if err != nil || ex.State != middleoffice.StateAccepted || len(ex.Events) != 1 {
					t.Fatalf("after the lost commit: %+v, %v; want accepted, 1 event", ex, err)
				}
				if st, err := s.Prepared(ctx, id); err != nil || st.Event.EvidenceID != id+"-delivered" {
					t.Fatalf("the step after the lost commit: %+v, %v", st, err)
				}
			},
		},
		{
			// Prepare of a creation: the exchange inserted, then it waits
			// on the idempotency key another transaction inserts.
			name: "prepare",
			setup: func(t *testing.T, id string) (string, func() error) {
				return "INSERT INTO exchange_idempotency (sender, key, exchange) VALUES ('a', 'key-" + id + "', 'other')", func() error {
					return s.Prepare(ctx, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "key-"+id)))
				}
			},
			check: func(t *testing.T, id string) {
				if _, err := s.Exchange(ctx, id); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
					t.Fatalf("after the lost prepare: %v, want ErrExchangeNotFound", err)
				}
			},
		},
		{
			// Abort of a creation: the outbox entry removed, then it waits
			// to remove the key.
			name: "abort",
			setup: func(t *testing.T, id string) (string, func() error) {
				if err := s.Prepare(ctx, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "key-"+id))); err != nil {
					t.Fatal(err)
				}
				return "SELECT 1 FROM exchange_idempotency WHERE key = 'key-" + id + "' FOR UPDATE", func() error {
					return s.Abort(ctx, id, id+"-accepted")
				}
			},
			check: func(t *testing.T, id string) {
				if st, err := s.Prepared(ctx, id); err != nil || st.Create == nil {
					t.Fatalf("after the lost abort: %+v, %v; want the creation prepared", st, err)
				}
				if got, err := s.ByIdempotencyKey(ctx, "a", "key-"+id); err != nil || got != id {
					t.Fatalf("the key after the lost abort: %q, %v", got, err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "lost-" + tc.name
			lock, call := tc.setup(t, id)
			b := newBlocker(t, url, lock)
			errc := make(chan error, 1)
			go func() { errc <- call() }()
			b.kill()
			err := <-errc
			if err == nil {
				t.Fatal("the call whose connection was lost succeeded")
			}
			t.Logf("the call whose connection was lost: %v", err)
			b.release()
			tc.check(t, id)
			if err := call(); err != nil {
				t.Fatalf("the same call again: %v", err)
			}
		})
	}
}

// TestPGExchangePayloadConnectionLost: the connection is lost while a
// chunk is written: the writer fails, and once aborted leaves nothing;
// the store writes the next payload.
func TestPGExchangePayloadConnectionLost(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	s := openPGExchanges(t, url)
	defer s.Close()
	w, err := s.CreatePayload(ctx, "x1", "document-0.p7m")
	if err != nil {
		t.Fatal(err)
	}
	b := newBlocker(t, url, "SELECT 1 FROM exchange_payloads WHERE exchange = 'x1' FOR UPDATE")
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 3<<20))
		errc <- err
	}()
	b.kill()
	if err := <-errc; err == nil {
		t.Fatal("a write whose connection was lost succeeded")
	}
	b.release()
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after a failed write succeeded")
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenPayload(ctx, "x1", "document-0.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Fatalf("the payload of the failed writer: %v, want ErrPayloadNotFound", err)
	}
	var left int
	if err := pgAdmin(t).QueryRow(ctx, "SELECT count(*) FROM "+schemaOf(t, url)+".exchange_payload_chunks").Scan(&left); err != nil || left != 0 {
		t.Fatalf("chunks left by the aborted writer: %d, %v", left, err)
	}
	writePayload(t, s, "x1", "document-0.p7m", bytes.Repeat([]byte{7}, 100))
}

func schemaOf(t *testing.T, url string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RuntimeParams["search_path"]
}

func writePayload(t *testing.T, s middleoffice.ExchangeStore, exchange, name string, data []byte) {
	t.Helper()
	w, err := s.CreatePayload(t.Context(), exchange, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// patternReader gives n bytes of a pattern that has no period of a
// chunk's length, in odd-sized reads.
type oddPattern struct{ off, n int64 }

func (r *oddPattern) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off, 77777)]
	for i := range p {
		x := uint64(r.off + int64(i))
		p[i] = byte(x*2654435761>>13) ^ byte(x>>20)
	}
	r.off += int64(len(p))
	return len(p), nil
}

// TestPGExchangePayloadStreams: a payload of several chunks (and a few
// bytes more), written in odd pieces and read back as a stream and at
// offsets around the chunk boundaries, with a bounded heap throughout: the
// writer holds one chunk, the reader two.
func TestPGExchangePayloadStreams(t *testing.T) {
	ctx := t.Context()
	s := openPGExchanges(t, pgtest.NewSchema(t))
	defer s.Close()
	const size = 40<<20 + 12345
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	w, err := s.CreatePayload(ctx, "big", "document-0.p7m")
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, want), &oddPattern{n: size}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPayload(ctx, "big", "document-0.p7m")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Size() != size {
		t.Fatalf("Size = %d, want %d", p.Size(), size)
	}
	got := sha256.New()
	if n, err := io.Copy(got, p); err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("read back %d bytes, %v; digest equal: %v", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	close(stop)
	<-sampled
	// Offsets across boundaries, compared with the pattern.
	ref := func(off, n int64) []byte {
		b := make([]byte, n)
		r := &oddPattern{off: off, n: off + n}
		io.ReadFull(r, b)
		return b
	}
	for _, c := range []struct{ off, n int64 }{
		{0, 10}, {1<<20 - 3, 6}, {1 << 20, 1}, {2<<20 - 1, 1<<20 + 2}, {5<<20 + 17, 3 << 20}, {size - 5, 5}, {size - 1, 1},
	} {
		b := make([]byte, c.n)
		if n, err := p.ReadAt(b, c.off); err != nil || int64(n) != c.n || !bytes.Equal(b, ref(c.off, c.n)) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; content equal: %v", c.n, c.off, n, err, bytes.Equal(b, ref(c.off, c.n)))
		}
	}
	b := make([]byte, 10)
	if n, err := p.ReadAt(b, size-4); n != 4 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v; want 4, EOF", n, err)
	}
	if n, err := p.ReadAt(b, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	// Parallel ReadAt calls (io.ReaderAt allows them).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			off := int64(i) * 5 << 20
			b := make([]byte, 300000)
			if _, err := p.ReadAt(b, off); err != nil || !bytes.Equal(b, ref(off, int64(len(b)))) {
				t.Errorf("parallel ReadAt at %d: %v", off, err)
			}
		})
	}
	wg.Wait()
	// Bounded, not proportional to the payload: pgx's connection buffers
	// and the garbage of the chunks read count too.
	if grew := int64(peak.Load()) - int64(base); grew > 24<<20 {
		t.Errorf("the heap grew by %d MiB while %d MiB streamed through the store", grew>>20, size>>20)
	} else {
		t.Logf("heap growth while %d MiB streamed: %.1f MiB at most", size>>20, float64(grew)/(1<<20))
	}
}

// TestPGExchangePayloadRaces: a payload replaced or removed under its
// reader, or removed under its writer, fails them with ErrPayloadNotFound
// instead of mixing versions.
func TestPGExchangePayloadRaces(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openPGExchanges(t, pgtest.NewSchema(t))
	defer s.Close()
	writePayload(t, s, "x1", "a", bytes.Repeat([]byte{1}, 3<<20))
	p, err := s.OpenPayload(ctx, "x1", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := make([]byte, 1<<20)
	if _, err := io.ReadFull(p, b); err != nil {
		t.Fatal(err)
	}
	writePayload(t, s, "x1", "a", bytes.Repeat([]byte{2}, 3<<20))
	if _, err := io.ReadFull(p, b); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("reading a replaced payload: %v, want ErrPayloadNotFound", err)
	}
	w, err := s.CreatePayload(ctx, "x1", "b")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("some"))
	if err := s.RemovePayloads(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("committing a removed payload: %v, want ErrPayloadNotFound", err)
	}
	if _, err := s.OpenPayload(ctx, "x1", "a"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("a removed payload opens: %v", err)
	}
	// An empty payload is a payload.
	writePayload(t, s, "x2", "empty", nil)
	if p, err := s.OpenPayload(ctx, "x2", "empty"); err != nil || p.Size() != 0 {
		t.Errorf("an empty payload: %v", err)
	} else if n, err := p.Read(b); n != 0 || err != io.EOF {
		t.Errorf("reading an empty payload: %d, %v", n, err)
	}
}

// TestPGExchangeSchema: nodes starting at once on an empty database
// create the tables once; tables of a newer version are refused, with
// ErrSchemaNewer.
func TestPGExchangeSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := middleoffice.OpenPGExchanges(t.Context(), url)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versions int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM exchange_schema").Scan(&versions); err != nil || versions != 1 {
		t.Fatalf("exchange_schema: %d rows, %v", versions, err)
	}
	// Tables of version 1 (before the backlog's index) are upgraded.
	if _, err := conn.Exec(t.Context(), "DROP INDEX exchange_jobs_backlog; UPDATE exchange_schema SET version = 1"); err != nil {
		t.Fatal(err)
	}
	s, err := middleoffice.OpenPGExchanges(t.Context(), url)
	if err != nil {
		t.Fatalf("upgrading tables of version 1: %v", err)
	}
	s.Close()
	var version int
	var indexed bool
	if err := conn.QueryRow(t.Context(), "SELECT max(version), EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'exchange_jobs_backlog') FROM exchange_schema").Scan(&version, &indexed); err != nil || version != 2 || !indexed {
		t.Fatalf("after the upgrade: version %d, the backlog's index %v, %v", version, indexed, err)
	}
	if _, err := conn.Exec(t.Context(), "UPDATE exchange_schema SET version = 99"); err != nil {
		t.Fatal(err)
	}
	if _, err := middleoffice.OpenPGExchanges(t.Context(), url); !errors.Is(err, middleoffice.ErrSchemaNewer) {
		t.Errorf("opening tables of version 99: %v, want ErrSchemaNewer", err)
	}
	if _, err := middleoffice.OpenPGExchanges(t.Context(), "host=/nonexistent port=1 user=x connect_timeout=1"); err == nil {
		t.Error("opening an unreachable database succeeded")
	}
}

func mustDo(t *testing.T, s middleoffice.ExchangeStore, st *middleoffice.Step) {
	t.Helper()
	if err := s.Prepare(t.Context(), st); err != nil {
		t.Fatalf("Prepare %s: %v", st.Event.EvidenceID, err)
	}
	if err := s.Commit(t.Context(), st.Exchange, st.Event.EvidenceID); err != nil {
		t.Fatalf("Commit %s: %v", st.Event.EvidenceID, err)
	}
}

// TestPGExchangeStepRacesCommit: a step prepared while another step of
// the exchange commits sees the state after that commit (or the step
// still pending), never the state before it with the outbox already
// empty: here the step applies only to the state the commit leaves, so
// it must never be prepared.
func TestPGExchangeStepRacesCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	a, b := openPGExchanges(t, url), openPGExchanges(t, url)
	defer a.Close()
	defer b.Close()
	accepted := []middleoffice.State{middleoffice.StateAccepted}
	for round := range 150 {
		id := fmt.Sprintf("r%03d", round)
		mustDo(t, a, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "")))
		if err := a.Prepare(ctx, exchangetest.Step(id, id+"-delivered", evidence.Delivered, accepted, middleoffice.StateDelivered)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := a.Commit(ctx, id, id+"-delivered"); err != nil {
				t.Error(err)
			}
		})
		var prepared atomic.Int64
		for i := range 3 {
			wg.Go(func() {
				for range 5 {
					err := b.Prepare(ctx, exchangetest.Step(id, fmt.Sprintf("%s-late%d", id, i), evidence.Acknowledged, accepted, middleoffice.StateRefused))
					switch {
					case err == nil:
						prepared.Add(1)
						return
					case errors.Is(err, middleoffice.ErrStateChanged):
						return
					case !errors.Is(err, middleoffice.ErrStepPending):
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if prepared.Load() != 0 {
			st, _ := b.Prepared(ctx, id)
			t.Fatalf("round %d: a step from accepted was prepared after the exchange was delivered: %+v", round, st)
		}
	}
}

// TestPGExchangeLateRelease: a worker whose lease passed, and whose job
// another worker claimed since, gives it back late: the other keeps it.
func TestPGExchangeLateRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	a, b := openPGExchanges(t, url), openPGExchanges(t, url)
	defer a.Close()
	defer b.Close()
	mustDo(t, a, exchangetest.CreateStep(exchangetest.NewExchange("x1", "a", "b", "")))
	first, err := a.Claim(ctx, t0, time.Minute)
	if err != nil || first == nil {
		t.Fatal(first, err)
	}
	second, err := b.Claim(ctx, t0.Add(2*time.Minute), time.Hour)
	if err != nil || second == nil || second.ID != first.ID {
		t.Fatalf("claim after the lease: %+v, %v", second, err)
	}
	if err := a.Release(ctx, first, t0, "late"); err != nil {
		t.Fatal(err)
	}
	if j, err := a.Claim(ctx, t0.Add(3*time.Minute), time.Minute); j != nil || err != nil {
		t.Fatalf("the job given back by the worker that lost it: claimed again (%+v, %v) while another holds it", j, err)
	}
	if err := b.Release(ctx, second, t0, "retry"); err != nil {
		t.Fatal(err)
	}
	if j, err := a.Claim(ctx, t0.Add(3*time.Minute), time.Minute); err != nil || j == nil || j.Attempts != 1 || j.LastError != "retry" {
		t.Fatalf("given back by its holder: %+v, %v; want due, 1 attempt", j, err)
	}
}

// TestPGExchangePayloadCorrupt: a chunk of the wrong length (the tables
// changed by hand, a bad restore) is an error, not a panic or bytes of
// another offset.
func TestPGExchangePayloadCorrupt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	s := openPGExchanges(t, url)
	defer s.Close()
	writePayload(t, s, "x1", "a", bytes.Repeat([]byte{1}, 2<<20+10))
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		"UPDATE exchange_payload_chunks SET data = substring(data FROM 1 FOR 100) WHERE seq = 1",
		"DELETE FROM exchange_payload_chunks WHERE seq = 2",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
		p, err := s.OpenPayload(ctx, "x1", "a")
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1000)
		if _, err := p.ReadAt(b, 2<<20-500); err == nil {
			t.Errorf("after %q: ReadAt across the damaged chunk succeeded", q)
		}
		if _, err := io.Copy(io.Discard, p); err == nil {
			t.Errorf("after %q: reading the payload succeeded", q)
		}
		p.Close()
	}
}

// BenchmarkPGExchangeStep: one exchange created (Prepare and Commit, two
// transactions) from 8 goroutines, on the test cluster (fsync on).
func BenchmarkPGExchangeStep(b *testing.B) {
	s := openPGExchanges(b, pgtest.NewSchema(b))
	defer s.Close()
	var n atomic.Int64
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ex := exchangetest.NewExchange(fmt.Sprintf("b%d", n.Add(1)), "a", "b", "")
			st := exchangetest.CreateStep(ex)
			if err := s.Prepare(context.Background(), st); err != nil {
				b.Error(err)
				return
			}
			if err := s.Commit(context.Background(), ex.ID, st.Event.EvidenceID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPGExchangePayload: a 16 MiB payload written and read back.
func BenchmarkPGExchangePayload(b *testing.B) {
	s := openPGExchanges(b, pgtest.NewSchema(b))
	defer s.Close()
	const size = 16 << 20
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("p%d", i)
		w, err := s.CreatePayload(b.Context(), "x1", name)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, &oddPattern{n: size}); err != nil {
			b.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
		p, err := s.OpenPayload(b.Context(), "x1", name)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, p); err != nil || n != size {
			b.Fatal(n, err)
		}
		p.Close()
	}
}

// TestPGExchangeDeadHolder: the jobs a node holds when it dies come back
// within a second, long before their lease passes, whether its process
// ended (its store closed without giving them back) or the database lost
// its lock connection (terminated); the jobs of a live node stay its own,
// and a late Release by the node whose job was given back leaves the new
// holder's hold alone.
func TestPGExchangeDeadHolder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	live := openPGExchanges(t, url)
	defer live.Close()
	now := t0.Add(time.Minute)
	const lease = time.Hour
	// held creates exchange id with live, and dead claims its job.
	held := func(t *testing.T, dead middleoffice.ExchangeStore, id string) *middleoffice.Job {
		t.Helper()
		mustDo(t, live, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "")))
		j, err := dead.Claim(ctx, now, lease)
		if err != nil || j == nil || j.Exchange != id {
			t.Fatalf("Claim = %+v, %v", j, err)
		}
		return j
	}
	// reclaimed waits for live to take id again: within a second and a
	// half of its holder's death (two reaps), at the same time now.
	reclaimed := func(t *testing.T, id string) *middleoffice.Job {
		t.Helper()
		deadline := time.Now().Add(1500 * time.Millisecond)
		for {
			j, err := live.Claim(ctx, now, lease)
			if err != nil {
				t.Fatal(err)
			}
			if j != nil {
				if j.ID != id {
					t.Fatalf("claimed %s, want the dead holder's %s", j.ID, id)
				}
				return j
			}
			if time.Now().After(deadline) {
				t.Fatalf("the dead holder's job %s not given back within 1.5s", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	t.Run("closed", func(t *testing.T) {
		dead := openPGExchanges(t, url)
		j := held(t, dead, "c1")
		dead.Close() // as a process that dies: nothing given back
		reclaimed(t, j.ID)
	})
	t.Run("lock connection lost", func(t *testing.T) {
		dead := openPGExchanges(t, url)
		defer dead.Close()
		j := held(t, dead, "l1")
		held(t, dead, "l2")
		// A live node's jobs stay its own, reap after reap.
		time.Sleep(time.Second)
		if j, err := live.Claim(ctx, now, lease); j != nil || err != nil {
			t.Fatalf("a live holder's job claimed: %+v, %v", j, err)
		}
		admin := pgAdmin(t)
		var holder int32
		if err := admin.QueryRow(ctx, "SELECT holder FROM "+schemaOf(t, url)+".exchange_jobs WHERE id = $1", j.ID).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		var ok bool
		err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND objid::int8 = $1`, int64(holder)).Scan(&ok)
		if err != nil || !ok {
			t.Fatalf("terminate the holder's lock connection: %v, %v", ok, err)
		}
		got := reclaimed(t, j.ID)
		reclaimed(t, "l2-process")
		// The node that lost them gives one back late: the new hold stays.
		if err := dead.Release(ctx, j, now, "late"); err != nil {
			t.Fatal(err)
		}
		jobs, err := live.Jobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range jobs {
			if x.ID == got.ID && (!x.HeldUntil.Equal(got.HeldUntil) || x.Attempts != 0) {
				t.Errorf("after the late release: %+v, want held by the new holder, no attempt counted", x)
			}
		}
		// The node that lost its lock connection takes it again: what it
		// claims next stays its own.
		held(t, dead, "l3")
		time.Sleep(time.Second)
		if j, err := live.Claim(ctx, now, lease); j != nil || err != nil {
			t.Fatalf("a job of the node that took its lock again claimed: %+v, %v", j, err)
		}
	})
}
