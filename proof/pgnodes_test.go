package proof_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"pec/proof"
	"pec/tsa"
)

// The multi-node tests: several Logs (in this process, or a child process
// killed with SIGKILL) on one throw-away PostgreSQL, under load, through
// the failures a shared database brings: the sealing node dies, its
// connection is killed, the database restarts. Each ends with the same
// checks (checkNodes): every acknowledged record sealed, one tree that
// audits, and every checkpoint signed (by any node, dead or alive) a
// published tree head of the log: same size, same root.

// nodeSeal: long enough that a node which lost its connection (not its
// life) retakes the sealing lock before another node may (3 intervals),
// also under the race detector on a loaded machine.
var nodeSeal = proof.Config{SealInterval: 100 * time.Millisecond}

// countingTS counts the checkpoint tokens a node obtains.
type countingTS struct {
	ts     proof.Timestamper
	mu     sync.Mutex
	signed []string // hex SHA-256 of the signed notes
	last   time.Time
}

func (c *countingTS) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	tok, err := c.ts.Timestamp(ctx, digest)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.signed = append(c.signed, hex.EncodeToString(digest))
	c.last = time.Now()
	c.mu.Unlock()
	return tok, nil
}

func (c *countingTS) count() (int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.signed), c.last
}

func (c *countingTS) digests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.signed...)
}

// pgNode is a node in this process: a store handle and its Log.
type pgNode struct {
	name  string
	store *proof.PGStore
	log   *proof.Log
	key   *recordingKey // the log key, recording what it signs
	ts    *countingTS
	reg   *prometheus.Registry
	dead  atomic.Bool // stopped: its writers stop on their next error
	once  sync.Once
}

func startNode(t *testing.T, e *env, url, name string) *pgNode {
	t.Helper()
	n := &pgNode{name: name, store: openPG(t, url), key: &recordingKey{Signer: e.key}, ts: &countingTS{ts: e.ts}, reg: prometheus.NewRegistry()}
	l, err := proof.Open(t.Context(), n.store, noteSigner(t, n.key), n.ts, nodeSeal, proof.Options{Registry: n.reg})
	if err != nil {
		t.Fatal(err)
	}
	n.log = l
	t.Cleanup(n.stop)
	return n
}

// stop closes the log, then the store: a clean stop.
func (n *pgNode) stop() {
	n.once.Do(func() {
		n.dead.Store(true)
		n.log.Close()
		n.store.Close()
	})
}

// kill closes the store under the running log, as a node that dies: its
// sealing connection ends (the database releases the lock) and nothing
// more reaches the database from it.
func (n *pgNode) kill() {
	n.once.Do(func() {
		n.dead.Store(true)
		n.store.Close()
		n.log.Close()
	})
}

// load appends from writers goroutines per node, as clients that obey
// 503 + Retry-After: ErrUnavailable is counted and retried after a
// pause, any other error fails the test.
type load struct {
	t           *testing.T
	stopCh      chan struct{}
	wg          sync.WaitGroup
	mu          sync.Mutex
	acked       map[string]string // id → node
	perNode     map[string]int
	unavailable atomic.Int64
}

func newLoad(t *testing.T) *load {
	return &load{t: t, stopCh: make(chan struct{}), acked: map[string]string{}, perNode: map[string]int{}}
}

func (ld *load) run(n *pgNode, writers int) {
	for w := range writers {
		ld.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-ld.stopCh:
					return
				default:
				}
				ids, err := n.log.Append(context.Background(), sampleRecord(w*100_000+i))
				switch {
				case err == nil:
					ld.ack(n.name, ids[0])
				case n.dead.Load():
					return
				case errors.Is(err, proof.ErrUnavailable):
					ld.unavailable.Add(1)
					time.Sleep(20 * time.Millisecond)
				default:
					ld.t.Errorf("node %s: Append: %v (want success or ErrUnavailable)", n.name, err)
					return
				}
			}
		})
	}
}

func (ld *load) ack(node, id string) {
	ld.mu.Lock()
	ld.acked[id] = node
	ld.perNode[node]++
	ld.mu.Unlock()
}

func (ld *load) acks(node string) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.perNode[node]
}

func (ld *load) stop() map[string]string {
	close(ld.stopCh)
	ld.wg.Wait()
	return ld.acked
}

// waitFor polls cond every 5 ms until it holds or d passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// leaderOf is the node that signed last (only the leader signs).
func leaderOf(nodes ...*pgNode) *pgNode {
	var lead *pgNode
	var at time.Time
	for _, n := range nodes {
		if c, last := n.ts.count(); c > 0 && last.After(at) {
			lead, at = n, last
		}
	}
	return lead
}

// sealedBy waits until every acknowledged record is sealed, as seen by
// the live node n.
func sealedBy(t *testing.T, n *pgNode, acked map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for id := range acked {
		if _, _, err := n.log.WaitSealed(ctx, id); err != nil {
			t.Fatalf("acknowledged %s (node %s) not sealed: %v", id, acked[id], err)
		}
	}
}

// checkNodes are the end checks, on a new store handle, once every node
// stopped: every acknowledged record sealed; the store audits (tree heads
// consistent one with the next: one tree); every checkpoint signed (the
// digests of recordingKey) is the checkpoint of a stored head (checkSigned)
// and every stored head was signed by a node of the test.
func checkNodes(t *testing.T, e *env, url string, acked map[string]string, signed []string) {
	t.Helper()
	ctx := t.Context()
	s := openPG(t, url)
	defer s.Close()
	rep, err := proof.Audit(ctx, s, e.auditOptions())
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if rep.Unsealed != 0 || rep.Pending != 0 {
		t.Errorf("%d records left unsealed, %d in a pending tree", rep.Unsealed, rep.Pending)
	}
	for id, node := range acked {
		if _, err := s.Lookup(ctx, id); err != nil {
			t.Fatalf("acknowledged %s (node %s): %v", id, node, err)
		}
	}
	seen := map[string]bool{}
	for _, d := range signed {
		seen[d] = true
	}
	err = s.Heads(ctx, func(h *proof.Head) error {
		if !seen[textDigest(h.Size, h.Root)] {
			t.Errorf("stored head %d was not signed by any node of the test", h.Size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSigned(t, s, signed)
	t.Logf("%d acknowledged records, %d sealed in %d heads", len(acked), rep.Records, rep.Heads)
}

func unpublished(t *testing.T, nodes ...*pgNode) float64 {
	var sum float64
	for _, n := range nodes {
		sum += metric(t, n.reg, "pec_proof_unpublished_checkpoints_total").GetCounter().GetValue()
	}
	return sum
}

func allSigned(nodes ...*pgNode) []string {
	var all []string
	for _, n := range nodes {
		all = append(all, n.key.signed()...)
	}
	return all
}

// TestPGFailoverLeaderDies: two nodes under load; the one that seals dies
// (its store closed under it, so its sealing connection ends); the other
// takes over within a few seal intervals and seals everything, its own
// records and those the dead node acknowledged.
func TestPGFailoverLeaderDies(t *testing.T) {
	e := newEnv(t)
	url := newPGDatabase(t)
	a, b := startNode(t, e, url, "a"), startNode(t, e, url, "b")
	ld := newLoad(t)
	ld.run(a, 8)
	ld.run(b, 8)
	waitFor(t, 10*time.Second, "no checkpoint signed under load", func() bool {
		n, _ := a.ts.count()
		m, _ := b.ts.count()
		return n+m >= 5
	})
	lead := leaderOf(a, b)
	other := a
	if lead == a {
		other = b
	}
	before, _ := other.ts.count()
	lead.kill()
	took := waitFor(t, 5*time.Second, "the other node did not take over", func() bool {
		n, _ := other.ts.count()
		return n > before
	})
	// The survivor goes on taking and sealing records.
	base := ld.acks(other.name)
	waitFor(t, 5*time.Second, "the survivor stopped acknowledging", func() bool { return ld.acks(other.name) > base+100 })
	acked := ld.stop()
	sealedBy(t, other, acked)
	if err := other.log.Ready(); err != nil {
		t.Errorf("survivor not ready: %v", err)
	}
	if took > 10*nodeSeal.SealInterval+time.Second {
		t.Errorf("takeover took %s, seal interval %s", took, nodeSeal.SealInterval)
	}
	other.stop()
	// A checkpoint the dead node signed and could not write is of a tree
	// the store holds: the survivor signed it too.
	checkNodes(t, e, url, acked, allSigned(a, b))
	t.Logf("node %s died; node %s signed its first checkpoint %s later", lead.name, other.name, took)
}

// sealerPID is the backend that holds the sealing lock (the sealing
// connections name themselves pec-proof-sealer).
func sealerPID(t *testing.T) int32 {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid int32
	err = conn.QueryRow(ctx, `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND a.application_name = 'pec-proof-sealer'`).Scan(&pid)
	if err != nil {
		t.Fatalf("the sealing backend: %v", err)
	}
	return pid
}

func terminate(t *testing.T, pid int32) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	// With a timeout, pg_terminate_backend waits until the backend has
	// exited: its session locks are released when it returns.
	if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
}

// TestPGSealerConnectionKilled kills the sealing connection's backend
// five times under load, at varying points of the seal cycle, then every
// backend of the nodes (pools and sealing connections) twice: sealing and
// appending go on each time within a few intervals, and no checkpoint is
// signed that is not published (a tree integrated before the connection
// died is signed by whoever leads next; a head signed is written as it
// is).
func TestPGSealerConnectionKilled(t *testing.T) {
	e := newEnv(t)
	url := newPGDatabase(t)
	a, b := startNode(t, e, url, "a"), startNode(t, e, url, "b")
	ld := newLoad(t)
	ld.run(a, 8)
	ld.run(b, 8)
	for round := range 7 {
		n0, _ := a.ts.count()
		m0, _ := b.ts.count()
		waitFor(t, 10*time.Second, "no checkpoint signed", func() bool {
			n, _ := a.ts.count()
			m, _ := b.ts.count()
			return n+m >= n0+m0+2
		})
		time.Sleep(time.Duration(round%5) * nodeSeal.SealInterval / 5)
		what := "the sealing backend"
		if round < 5 {
			terminate(t, sealerPID(t))
		} else {
			what = fmt.Sprintf("%d backends", terminateAll(t))
		}
		n1, _ := a.ts.count()
		m1, _ := b.ts.count()
		acksA, acksB := ld.acks("a"), ld.acks("b")
		took := waitFor(t, 5*time.Second, "sealing did not resume", func() bool {
			n, _ := a.ts.count()
			m, _ := b.ts.count()
			return n+m > n1+m1 && ld.acks("a") > acksA && ld.acks("b") > acksB
		})
		t.Logf("round %d: sealing and appending again %s after killing %s", round, took, what)
	}
	acked := ld.stop()
	sealedBy(t, a, acked)
	a.stop()
	b.stop()
	checkNodes(t, e, url, acked, allSigned(a, b))
	t.Logf("signatures superseded by another of the same tree: %v", unpublished(t, a, b))
}

// terminateAll kills every client backend but its own: the nodes'
// pools and sealing connections.
func terminateAll(t *testing.T) int {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPGReadyIdle: two idle nodes through a database restart: Ready
// reports the outage on both (the sequencer's calls fail), and is nil
// again on both once the database is back, with no record to write and
// no new head to follow.
func TestPGReadyIdle(t *testing.T) {
	e := newEnv(t)
	url := newPGDatabase(t)
	if pg.restart == nil {
		t.Skip("PEC_TEST_POSTGRES_URL: a database this test cannot restart")
	}
	a, b := startNode(t, e, url, "a"), startNode(t, e, url, "b")
	appendSealed(t, a.log, sampleRecord(1))
	waitFor(t, 5*time.Second, "a node did not publish the first head", func() bool { return a.log.Latest() != nil && b.log.Latest() != nil })
	var notReady [2]atomic.Bool
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			for i, n := range []*pgNode{a, b} {
				if n.log.Ready() != nil {
					notReady[i].Store(true)
				}
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	if err := pg.restart(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	back := waitFor(t, 5*time.Second, "a node is not ready after the database is back", func() bool {
		return a.log.Ready() == nil && b.log.Ready() == nil
	})
	close(done)
	wg.Wait()
	for i, n := range []*pgNode{a, b} {
		if !notReady[i].Load() {
			t.Errorf("node %s: Ready was nil throughout the outage", n.name)
		}
	}
	appendSealed(t, b.log, sampleRecord(2))
	t.Logf("both ready %s after the database was back", back.Round(time.Millisecond))
}

// TestPGDatabaseRestart restarts the database under load on two nodes:
// meanwhile appends fail with ErrUnavailable and Ready reports the
// failure; then both nodes take and seal records again by themselves,
// nothing acknowledged is lost, one tree, nothing signed unpublished.
func TestPGDatabaseRestart(t *testing.T) {
	e := newEnv(t)
	url := newPGDatabase(t)
	if pg.restart == nil {
		t.Skip("PEC_TEST_POSTGRES_URL: a database this test cannot restart")
	}
	a, b := startNode(t, e, url, "a"), startNode(t, e, url, "b")
	ld := newLoad(t)
	ld.run(a, 8)
	ld.run(b, 8)
	waitFor(t, 10*time.Second, "no records sealed", func() bool { return a.log.Latest() != nil && b.log.Latest() != nil })
	// Watch Ready during the restart.
	var notReady [2]atomic.Bool
	watch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			for i, n := range []*pgNode{a, b} {
				if n.log.Ready() != nil {
					notReady[i].Store(true)
				}
			}
			select {
			case <-watch:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	down := time.Now()
	if err := pg.restart(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	baseA, baseB := ld.acks("a"), ld.acks("b")
	back := waitFor(t, 10*time.Second, "the nodes did not serve again", func() bool {
		return a.log.Ready() == nil && b.log.Ready() == nil && ld.acks("a") > baseA+50 && ld.acks("b") > baseB+50
	})
	close(watch)
	wg.Wait()
	for i, n := range []*pgNode{a, b} {
		if !notReady[i].Load() {
			t.Errorf("node %s: Ready was nil throughout the restart", n.name)
		}
	}
	if ld.unavailable.Load() == 0 {
		t.Errorf("no append failed with ErrUnavailable during the restart")
	}
	acked := ld.stop()
	sealedBy(t, a, acked)
	sealedBy(t, b, acked)
	// A restart takes the sealing lock from the old leader with its
	// connection: if the old leader's reconnection outlasts the other
	// node's three free intervals (a loaded machine), the other takes
	// over and signs the tree the old leader integrated: the old leader's
	// signature of it, if it made one, is superseded (counted), never
	// contradicted.
	a.stop()
	b.stop()
	checkNodes(t, e, url, acked, allSigned(a, b))
	t.Logf("signatures superseded by another of the same tree: %v", unpublished(t, a, b))
	t.Logf("database down %s; both nodes serving %s after it was back; %d appends refused with ErrUnavailable meanwhile", up.Sub(down).Round(time.Millisecond), back.Round(time.Millisecond), ld.unavailable.Load())
}

// TestPGNodeChild is the node process of TestPGNodeKilledAndDatabaseRestarted:
// a Log on PEC_PG_NODE_URL appending from 8 goroutines, printing each
// acknowledgment ("ack ID") and each checkpoint its key signs ("signed
// DIGEST", the SHA-256 of the checkpoint text), until its standard input
// ends (then it stops cleanly) or it is killed. Once the file "die" is in
// PEC_PG_NODE_DIR, it kills itself with SIGKILL at its next checkpoint,
// signed and time-stamped, before it writes it.
func TestPGNodeChild(t *testing.T) {
	dir, url := os.Getenv("PEC_PG_NODE_DIR"), os.Getenv("PEC_PG_NODE_URL")
	if dir == "" {
		t.Skip("run by TestPGNodeKilledAndDatabaseRestarted")
	}
	e := loadEnv(t, dir)
	// Serials of a node of its own, unique beside the parent's TSA.
	serials, err := tsa.OpenFileSerials(filepath.Join(dir, "serials-child"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer serials.Close()
	auth, err := tsa.New(tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second, Ordering: true}, e.tsaKey, []*x509.Certificate{e.tsaCert, e.root.Cert}, serials, tsa.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	println := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	// Printed once signed, before the log time-stamps and writes it: a
	// checkpoint the parent reads was signed.
	key := &recordingKey{Signer: e.key, after: func(d []byte) { println("signed %x", d) }}
	ts := &hookTS{ts: proof.AuthorityTimestamper{Authority: auth}, after: func() {
		if _, err := os.Stat(filepath.Join(dir, "die")); err == nil {
			println("dying")
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}}
	s, err := proof.OpenPG(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	l, err := proof.Open(t.Context(), s, noteSigner(t, key), ts, nodeSeal, proof.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ids, err := l.Append(context.Background(), sampleRecord(w*100_000+i))
				switch {
				case err == nil:
					// Printed after the acknowledgment: what the parent
					// reads was acknowledged.
					println("ack %s", ids[0])
				case errors.Is(err, proof.ErrUnavailable):
					println("unavailable")
					time.Sleep(20 * time.Millisecond)
				default:
					println("error %v", err)
					os.Exit(3)
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	s.Close()
	println("closed")
}

// child is a node process run by TestPGNodeKilledAndDatabaseRestarted.
type child struct {
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	done        chan struct{}
	mu          sync.Mutex
	acked       []string
	signed      []string
	unavailable int
	closed      bool
}

func startChild(t *testing.T, dir, url string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPGNodeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PEC_PG_NODE_DIR="+dir, "PEC_PG_NODE_URL="+url, "TMPDIR="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-c.done })
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			c.mu.Lock()
			switch {
			case len(f) == 2 && f[0] == "ack":
				c.acked = append(c.acked, f[1])
			case len(f) == 2 && f[0] == "signed":
				c.signed = append(c.signed, f[1])
			case len(f) == 1 && f[0] == "unavailable":
				c.unavailable++
			case len(f) == 1 && f[0] == "closed":
				c.closed = true
			case len(f) > 0 && f[0] == "error":
				t.Errorf("node process: %s", sc.Text())
			}
			c.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	return c
}

func (c *child) counts() (acked, signed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked), len(c.signed)
}

// TestPGNodeKilledAndDatabaseRestarted is the scenario of issue 8: two
// nodes on one PostgreSQL under load, the sealing one a process killed
// with SIGKILL; the other takes over. The node is started again, then the
// database restarts under load on both; both serve again by themselves.
// In the end: nothing acknowledged is lost, one tree, and every
// checkpoint signed is published — but for one, at most, that the killed
// process signed and had no time to write.
func TestPGNodeKilledAndDatabaseRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	e := newEnv(t)
	url := newPGDatabase(t)
	if pg.restart == nil {
		t.Skip("PEC_TEST_POSTGRES_URL: a database this test cannot restart")
	}
	dir := t.TempDir()
	e.save(t, dir)

	// 1. The node process starts first: it seals.
	first := startChild(t, dir, url)
	waitFor(t, 20*time.Second, "the node process signed no checkpoint", func() bool { _, s := first.counts(); return s >= 3 })
	b := startNode(t, e, url, "b")
	ld := newLoad(t)
	ld.run(b, 8)
	waitFor(t, 10*time.Second, "node b acknowledged nothing", func() bool { return ld.acks("b") > 200 })
	if n, _ := b.ts.count(); n != 0 {
		t.Fatalf("node b signed %d checkpoints while the node process led", n)
	}

	// 2. SIGKILL between a checkpoint's time-stamp and its write; b
	// takes over (and signs the tree the dead node integrated).
	if err := os.WriteFile(filepath.Join(dir, "die"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the node process did not kill itself at its next checkpoint")
	}
	if ws, ok := first.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the node process ended with %v, not SIGKILL", first.cmd.ProcessState)
	}
	if err := os.Remove(filepath.Join(dir, "die")); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 5*time.Second, "node b did not take over", func() bool { n, _ := b.ts.count(); return n > 0 })
	t.Logf("node process killed after %d acknowledgments and %d checkpoints; b sealing %s later", len(first.acked), len(first.signed), took)
	acked := map[string]string{}
	for _, id := range first.acked {
		acked[id] = "killed process"
	}
	sealedBy(t, b, acked)

	// 3. The node comes back; the database restarts under load.
	second := startChild(t, dir, url)
	waitFor(t, 20*time.Second, "the new node process acknowledged nothing", func() bool { a, _ := second.counts(); return a > 200 })
	if err := pg.restart(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	a0, _ := second.counts()
	b0 := ld.acks("b")
	back := waitFor(t, 15*time.Second, "the nodes did not serve again after the restart", func() bool {
		a, _ := second.counts()
		return a > a0+100 && ld.acks("b") > b0+100 && b.log.Ready() == nil
	})
	t.Logf("both nodes serving %s after the database was back", back)

	// 4. Clean stop of both; the checks.
	if err := second.stdin.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the node process did not stop")
	}
	if !second.closed {
		t.Fatal("the node process did not close its log")
	}
	for id, node := range ld.stop() {
		acked[id] = node
	}
	for _, id := range second.acked {
		acked[id] = "node process"
	}
	sealedBy(t, b, acked)
	b.stop()
	signed := append(append(append([]string(nil), first.signed...), second.signed...), b.key.signed()...)
	checkNodes(t, e, url, acked, signed)
	t.Logf("appends refused with ErrUnavailable during the restart: node process %d, b %d", second.unavailable, ld.unavailable.Load())
}

// faultyPG injects what a real connection loss does at a point the tests
// cannot hit on purpose: a head write whose commit succeeds and whose
// answer is lost (1), or a head write that fails unwritten (2). After it,
// the handle does not lead (as when another node takes the lock) until
// lead is set again.
type faultyPG struct {
	*proof.PGStore
	fault  atomic.Int32
	noLead atomic.Bool
}

func (f *faultyPG) PutHead(ctx context.Context, h *proof.Head) error {
	switch f.fault.Swap(0) {
	case 1:
		if err := f.PGStore.PutHead(ctx, h); err != nil {
			return err
		}
		f.noLead.Store(true)
		return errors.New("test: the connection was lost after the commit")
	case 2:
		f.noLead.Store(true)
		return errors.New("test: the connection was lost before the commit")
	}
	return f.PGStore.PutHead(ctx, h)
}

func (f *faultyPG) Lead(ctx context.Context) (bool, error) {
	if f.noLead.Load() {
		return false, nil
	}
	return f.PGStore.Lead(ctx)
}

// TestPGStaleSignedBatch: a node signs a tree, loses its connection as it
// writes the head, and another node seals after it before it leads again.
// Its signed head is then settled when it follows — written (it is of the
// tree the store holds) or found superseded by the other node's signature
// of that tree — and never written later over a newer head; its
// published head never goes back.
func TestPGStaleSignedBatch(t *testing.T) {
	for _, tc := range []struct {
		fault int32
		name  string
	}{{1, "written, answer lost"}, {2, "not written"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			url := newPGDatabase(t)
			fs := &faultyPG{PGStore: openPG(t, url)}
			defer fs.Close()
			lkey := &recordingKey{Signer: e.key}
			lreg := prometheus.NewRegistry()
			l, err := proof.Open(t.Context(), fs, noteSigner(t, lkey), e.ts, nodeSeal, proof.Options{Registry: lreg})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			appendSealed(t, l, sampleRecord(0)) // l leads
			b := startNode(t, e, url, "b")
			// l's published head never goes back.
			var back atomic.Bool
			done := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				var last uint64
				for {
					if h := l.Latest(); h != nil {
						if h.Size < last {
							back.Store(true)
						}
						last = h.Size
					}
					select {
					case <-done:
						return
					case <-time.After(time.Millisecond):
					}
				}
			})
			fs.fault.Store(tc.fault)
			ids, err := l.Append(t.Context(), sampleRecord(1))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the fault did not fire", func() bool { return fs.noLead.Load() })
			terminate(t, sealerPID(t)) // l's lock goes with its connection
			// b takes over and seals after l's tree.
			bid, _ := appendSealed(t, b.log, sampleRecord(2))
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if _, _, err := l.WaitSealed(ctx, bid); err != nil {
				t.Fatalf("l does not follow b's head: %v", err)
			}
			// l leads again once b is gone.
			b.stop()
			fs.noLead.Store(false)
			appendSealed(t, l, sampleRecord(3))
			close(done)
			wg.Wait()
			if back.Load() {
				t.Error("l published a head older than one it had published")
			}
			l.Close()
			t.Logf("l's signatures superseded by b's: %v", counter(t, lreg, "pec_proof_unpublished_checkpoints_total"))
			acked := map[string]string{ids[0]: "l", bid: "b"}
			checkNodes(t, e, url, acked, append(lkey.signed(), b.key.signed()...))
		})
	}
}

// BenchmarkAppendPGNodes compares one node with two on one PostgreSQL
// (the throw-away local cluster, or PEC_TEST_POSTGRES_URL), in process:
// each node a store handle and a Log at the default seal interval with a
// real TSA (software key), its writers appending one record after
// another. Reported: appends/s of all nodes together, the p50 and p99
// time to acknowledgment, the longest seal delay, and checkpoints that
// were signed and not published (0). A diagnosis: the nodes, the
// database and the load share the machine's cores.
//
//	go test ./proof -run '^$' -bench AppendPGNodes -benchtime 40000x
func BenchmarkAppendPGNodes(b *testing.B) {
	for _, c := range []struct{ nodes, writers int }{{1, 64}, {2, 32}, {2, 64}} {
		b.Run(fmt.Sprintf("nodes=%d/writers=%d", c.nodes, c.writers), func(b *testing.B) {
			e := newEnv(b)
			url := newPGDatabase(b)
			type node struct {
				s   *proof.PGStore
				l   *proof.Log
				ts  *countingTS
				reg *prometheus.Registry
			}
			var nodes []node
			for range c.nodes {
				n := node{s: openPG(b, url), ts: &countingTS{ts: e.ts}, reg: prometheus.NewRegistry()}
				l, err := proof.Open(b.Context(), n.s, e.signer, n.ts, proof.Config{}, proof.Options{Registry: n.reg})
				if err != nil {
					b.Fatal(err)
				}
				n.l = l
				nodes = append(nodes, n)
			}
			lat := make([][]time.Duration, c.nodes*c.writers)
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, n := range nodes {
				for w := range c.writers {
					wg.Go(func() {
						k := i*c.writers + w
						for {
							j := next.Add(1)
							if j > int64(b.N) {
								return
							}
							t0 := time.Now()
							if _, err := n.l.Append(context.Background(), sampleRecord(int(j))); err != nil {
								b.Error(err)
								return
							}
							lat[k] = append(lat[k], time.Since(t0))
						}
					})
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			var maxDelay, unpublished, sealWrite, seals, sealRecs float64
			var signed []string
			for _, n := range nodes {
				n.l.Close()
				maxDelay = max(maxDelay, gauge(b, n.reg, "pec_proof_seal_delay_max_seconds"))
				unpublished += metric(b, n.reg, "pec_proof_unpublished_checkpoints_total").GetCounter().GetValue()
				signed = append(signed, n.ts.digests()...) // one token per signature of a tree
				h := metric(b, n.reg, "pec_proof_seal_write_seconds").GetHistogram()
				sealWrite += h.GetSampleSum()
				seals += float64(h.GetSampleCount())
				sealRecs += metric(b, n.reg, "pec_proof_seal_records").GetHistogram().GetSampleSum()
			}
			heads := 0
			if err := nodes[0].s.Heads(context.Background(), func(*proof.Head) error { heads++; return nil }); err != nil {
				b.Fatal(err)
			}
			for _, n := range nodes {
				n.s.Close()
			}
			if len(signed) != heads {
				b.Errorf("%d checkpoints signed, %d published", len(signed), heads)
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "appends/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(maxDelay*1000, "max-seal-delay-ms")
			b.ReportMetric(unpublished, "unpublished")
			b.ReportMetric(sealRecs/max(seals, 1), "records/seal")
			b.ReportMetric(sealWrite/max(seals, 1)*1000, "seal-write-ms")
		})
	}
}
