package proof_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"

	"pec/proof"
)

// The seal order: a checkpoint is signed only over a tree that the store
// holds durably (integrate, then sign, time-stamp, write the head,
// publish), so that a sequencer that dies or loses its connection at any
// point leaves no signed checkpoint that the log contradicts. Each test
// collects every checkpoint the log key signs (recordingKey, below the
// note signer) and ends with checkSigned.

// recordingKey is the log key with every signature it makes recorded: the
// SHA-256 of the note text it signs (crypto.Signer gets that digest). A
// checkpoint's text is its origin, size and root, so two signatures of
// one tree have one digest, and a digest names one (size, root).
type recordingKey struct {
	crypto.Signer
	before func(digest []byte) // nil: none; called before signing
	after  func(digest []byte) // nil: none; called once signed
	fail   func() error        // nil: none; a non-nil error fails the signature

	mu      sync.Mutex
	digests []string
}

func (k *recordingKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.before != nil {
		k.before(digest)
	}
	if k.fail != nil {
		if err := k.fail(); err != nil {
			return nil, err
		}
	}
	sig, err := k.Signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.digests = append(k.digests, hex.EncodeToString(digest))
	k.mu.Unlock()
	if k.after != nil {
		k.after(digest)
	}
	return sig, nil
}

func (k *recordingKey) signed() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.digests...)
}

func noteSigner(t testing.TB, k *recordingKey) *proof.NoteSigner {
	t.Helper()
	s, err := proof.NewNoteSigner(origin, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hookTS calls before and after around each time-stamp of a checkpoint.
type hookTS struct {
	ts            proof.Timestamper
	before, after func()       // nil: none
	fail          func() error // nil: none; a non-nil error fails the time-stamp
	n             atomic.Int32 // time-stamps obtained
}

func (h *hookTS) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	if h.before != nil {
		h.before()
	}
	if h.fail != nil {
		if err := h.fail(); err != nil {
			return nil, err
		}
	}
	tok, err := h.ts.Timestamp(ctx, digest)
	if err == nil {
		h.n.Add(1)
	}
	if err == nil && h.after != nil {
		h.after()
	}
	return tok, err
}

// checkSigned checks every checkpoint signed (digests of recordingKey)
// against the final log in s, every record of it sealed: each is the
// checkpoint of the log's tree at its size (same size ⇒ same root: no
// fork), and the store holds a signed head of that size (it was
// published, by this signature or by another of the same tree). It
// returns how many distinct trees were signed more than once.
func checkSigned(t *testing.T, s proof.Store, signed []string) (resigned int) {
	t.Helper()
	ctx := t.Context()
	tree := map[string]uint64{} // digest of the checkpoint text of each size → size
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	err := s.Records(ctx, 0, func(i uint64, r *proof.StoredRecord) error {
		if err := rng.Append(proof.LeafHash(r.Data), nil); err != nil {
			return err
		}
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return err
		}
		tree[textDigest(i+1, root)] = i + 1
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]bool{}
	err = s.Heads(ctx, func(h *proof.Head) error {
		if tree[textDigest(h.Size, h.Root)] != h.Size {
			t.Errorf("stored head %d: its root is not the root of the stored records", h.Size)
		}
		stored[h.Size] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	times := map[string]int{}
	for _, d := range signed {
		times[d]++
		if times[d] > 1 {
			continue
		}
		size, ok := tree[d]
		switch {
		case !ok:
			t.Errorf("signed checkpoint %s… is of no tree of the log: a fork (same size, another root, or records the log does not hold)", d[:12])
		case !stored[size]:
			t.Errorf("signed checkpoint of size %d (%s…) never published: the store holds no head of that size", size, d[:12])
		}
	}
	for _, n := range times {
		if n > 1 {
			resigned++
		}
	}
	t.Logf("%d signatures of %d trees (%d signed more than once); %d heads stored", len(signed), len(times), resigned, len(stored))
	return resigned
}

func textDigest(size uint64, root []byte) string {
	d := sha256.Sum256(proof.Checkpoint{Origin: origin, Size: size, Root: root}.Text())
	return hex.EncodeToString(d[:])
}

// TestSealCrashChild is the node of TestSealCrash: on the embedded store
// with its checkpoint file, it appends from 8 goroutines, printing each
// acknowledgment ("ack ID") and each checkpoint its key signs ("signed
// DIGEST"), and kills itself with SIGKILL at the fourth time it reaches
// the step PEC_PROOF_SEALCRASH_AT of a seal.
func TestSealCrashChild(t *testing.T) {
	dir, at := os.Getenv("PEC_PROOF_SEALCRASH_DIR"), os.Getenv("PEC_PROOF_SEALCRASH_AT")
	if dir == "" {
		t.Skip("run by TestSealCrash")
	}
	time.AfterFunc(crashChildLimit, func() {
		fmt.Fprintf(os.Stderr, "TestSealCrashChild: never reached %s\n", at)
		os.Exit(4)
	})
	e := loadEnv(t, dir)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	printf := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	var hits sync.Map // step → *atomic.Int32
	step := func(name string) {
		c, _ := hits.LoadOrStore(name, new(atomic.Int32))
		if name == at && c.(*atomic.Int32).Add(1) == 4 {
			printf("dying %s", name)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	key := &recordingKey{Signer: e.key, before: func([]byte) { step("sign") }, after: func(d []byte) { printf("signed %x", d) }}
	ts := &hookTS{ts: e.ts, before: func() { step("timestamp") }, after: func() { step("write") }}
	s := &stepStore{BoltStore: openBolt(t, filepath.Join(dir, "proof.db")), step: step}
	cfg := fastSeal
	cfg.CheckpointFile = filepath.Join(dir, "checkpoint")
	l, err := proof.Open(t.Context(), s, noteSigner(t, key), ts, cfg, proof.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ids, err := l.Append(t.Context(), sampleRecord(w*1_000_000+i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				printf("ack %s", ids[0])
			}
		})
	}
	wg.Wait()
}

// stepStore reaches the step that only the store sees: a head written,
// not yet saved in the checkpoint file and published.
type stepStore struct {
	*proof.BoltStore
	step func(string)
}

func (s *stepStore) PutHead(ctx context.Context, h *proof.Head) error {
	err := s.BoltStore.PutHead(ctx, h)
	if err == nil {
		s.step("publish")
	}
	return err
}

// TestSealCrash kills a node on the embedded store with SIGKILL at each
// step of a seal — its tree integrated and not signed ("sign"), the
// checkpoint signed and not time-stamped ("timestamp"), time-stamped and
// not written ("write"), written and not saved in the checkpoint file nor
// published ("publish") — under load; a new start seals every
// acknowledged record, the store audits against the checkpoint file, and
// every checkpoint the dead node signed is one of the log's tree heads.
func TestSealCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, at := range sealCrashSteps {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			newEnv(t).save(t, dir)
			acked, signed := runSealCrashChild(t, dir, at)
			e := loadEnv(t, dir)
			key := &recordingKey{Signer: e.key}
			s := openBolt(t, filepath.Join(dir, "proof.db"))
			defer s.Close()
			cfg := fastSeal
			cfg.CheckpointFile = filepath.Join(dir, "checkpoint")
			l, err := proof.Open(t.Context(), s, noteSigner(t, key), e.ts, cfg, proof.Options{})
			if err != nil {
				t.Fatalf("start after the crash: %v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			for _, id := range acked {
				if _, _, err := l.WaitSealed(ctx, id); err != nil {
					t.Fatalf("acknowledged %s: %v", id, err)
				}
			}
			l.Close()
			opts := e.auditOptions()
			opts.CheckpointFile = cfg.CheckpointFile
			if _, err := proof.Audit(t.Context(), s, opts); err != nil {
				t.Fatalf("audit: %v", err)
			}
			t.Logf("killed at %s after %d acknowledgments and %d signatures", at, len(acked), len(signed))
			checkSigned(t, s, append(signed, key.signed()...))
		})
	}
}

// sealCrashSteps are the steps of TestSealCrash.
var sealCrashSteps = []string{"sign", "timestamp", "write", "publish"}

// runSealCrashChild runs TestSealCrashChild until it kills itself at
// step at: the ids it acknowledged and the checkpoints it signed.
func runSealCrashChild(t *testing.T, dir, at string) (acked, signed []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), crashRoundLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSealCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PEC_PROOF_SEALCRASH_DIR="+dir, "PEC_PROOF_SEALCRASH_AT="+at, "TMPDIR="+dir)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	died := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "ack":
			acked = append(acked, f[1])
		case len(f) == 2 && f[0] == "signed":
			signed = append(signed, f[1])
		case len(f) == 2 && f[0] == "dying" && f[1] == at:
			died = true
		}
	}
	err = cmd.Wait()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || !died || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the node did not die at %s: %v (%v)", at, err, context.Cause(ctx))
	}
	return acked, signed
}

// sealNode is a node of the PostgreSQL seal-order tests: its log key
// records what it signs.
type sealNode struct {
	*pgNode
	key *recordingKey
}

// startSealNode starts a node on s, a wrapper of pgs (closed by stop),
// signing with key and time-stamping through ts.
func startSealNode(t *testing.T, e *env, s proof.Store, pgs *proof.PGStore, name string, key *recordingKey, ts proof.Timestamper) *sealNode {
	t.Helper()
	n := &sealNode{pgNode: &pgNode{name: name, store: pgs, key: key, reg: prometheus.NewRegistry()}, key: key}
	n.pgNode.ts = &countingTS{ts: ts}
	l, err := proof.Open(t.Context(), s, noteSigner(t, n.key), n.pgNode.ts, nodeSeal, proof.Options{Registry: n.reg})
	if err != nil {
		t.Fatal(err)
	}
	n.log = l
	t.Cleanup(n.stop)
	return n
}

// heldOffPG is a PGStore cut off from the database for a while (off):
// Lead answers false, as when the sealing connection cannot be opened
// again, and PutHead fails as on a lost connection (the pool's
// connections are cut too).
type heldOffPG struct {
	*proof.PGStore
	off      atomic.Bool
	puts     atomic.Int32 // PutHead calls refused while off
	afterPut func()       // nil: none; called after each head written
}

func (h *heldOffPG) Lead(ctx context.Context) (bool, error) {
	if h.off.Load() {
		return false, nil
	}
	return h.PGStore.Lead(ctx)
}

func (h *heldOffPG) PutHead(ctx context.Context, head *proof.Head) error {
	if h.off.Load() {
		h.puts.Add(1)
		return errors.New("test: the connection to the database is cut")
	}
	err := h.PGStore.PutHead(ctx, head)
	if err == nil && h.afterPut != nil {
		h.afterPut()
	}
	return err
}

// TestPGSealLeaderLost: two nodes under load; the sealing node a, at one
// step of a seal — its tree integrated and not signed ("sign"), signed
// and not time-stamped ("timestamp"), time-stamped and not written
// ("write"), written and not published ("publish") — either dies (its
// store closed: its connections end) or is cut off from the database (its
// sealing connection killed, no lead and no head written for a while), so
// that b takes over. b seals on; at the end every checkpoint a signed is a
// tree head of the log (checkNodes).
func TestPGSealLeaderLost(t *testing.T) {
	for _, step := range []string{"sign", "timestamp", "write", "publish"} {
		for _, dies := range []bool{true, false} {
			name := step + map[bool]string{true: "/leader dies", false: "/connection cut"}[dies]
			t.Run(name, func(t *testing.T) { testLeaderLost(t, step, dies) })
		}
	}
}

func testLeaderLost(t *testing.T, step string, dies bool) {
	e := newEnv(t)
	url := newPGDatabase(t)
	hs := &heldOffPG{PGStore: openPG(t, url)}
	var armed, fired atomic.Bool
	var a *sealNode
	fault := func(at string) {
		if at != step || !armed.Load() || fired.Swap(true) {
			return
		}
		if dies {
			a.dead.Store(true)
			hs.PGStore.Close()
			return
		}
		hs.off.Store(true)
		if err := cutSealer(); err != nil {
			t.Errorf("cutting a's sealing connection: %v", err)
		}
	}
	key := &recordingKey{Signer: e.key, before: func([]byte) { fault("sign") }}
	ts := &hookTS{ts: e.ts, before: func() { fault("timestamp") }, after: func() { fault("write") }}
	hs.afterPut = func() { fault("publish") }
	a = startSealNode(t, e, hs, hs.PGStore, "a", key, ts)
	ld := newLoad(t)
	ld.run(a.pgNode, 8)
	waitFor(t, 10*time.Second, "a signed no checkpoint", func() bool { return len(a.key.signed()) >= 2 })
	bs := openPG(t, url)
	b := startSealNode(t, e, bs, bs, "b", &recordingKey{Signer: e.key}, e.ts)
	ld.run(b.pgNode, 8)
	waitFor(t, 10*time.Second, "b acknowledged nothing", func() bool { return ld.acks("b") > 100 })
	armed.Store(true)
	waitFor(t, 10*time.Second, "a did not reach its fault", fired.Load)
	waitFor(t, 10*time.Second, "b did not take over", func() bool { return len(b.key.signed()) >= 2 })
	if !dies && step != "publish" && hs.puts.Load() == 0 {
		t.Error("a did not try to write its head while cut off")
	}
	hs.off.Store(false) // a may lead again
	base := ld.acks("b")
	waitFor(t, 10*time.Second, "b stopped acknowledging", func() bool { return ld.acks("b") > base+100 })
	acked := ld.stop()
	sealedBy(t, b.pgNode, acked)
	a.stop()
	b.stop()
	checkNodes(t, e, url, acked, append(a.key.signed(), b.key.signed()...))
}

// cutSealer ends the backend that holds the sealing lock (terminate, for
// a goroutine other than the test's).
func cutSealer() error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var ok bool
	err = conn.QueryRow(ctx, `SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND a.application_name = 'pec-proof-sealer'`).Scan(&ok)
	if err == nil && !ok {
		err = errors.New("pg_terminate_backend: false")
	}
	return err
}

// failOnce fails its first call with err, once armed.
type failOnce struct {
	armed, fired atomic.Bool
	err          error
}

func (f *failOnce) fail() error {
	if f.armed.Load() && !f.fired.Swap(true) {
		return f.err
	}
	return nil
}

// TestSealStepFaults: one failure at each step of a seal on the embedded
// store (the integration's write, with its answer lost or not; the
// signature; the time-stamp; the head's write; the checkpoint file): the
// log is not ready meanwhile, seals everything once the step works again,
// and every checkpoint signed is a stored head (a tree signed twice, when
// its time-stamp failed, is one tree: same size and root).
func TestSealStepFaults(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		step     string
		resigned int // trees signed twice
	}{
		{"integrate", 0},
		{"integrate, answer lost", 0},
		{"sign", 0},
		{"timestamp", 1},
		{"write", 0},
		{"write, answer lost", 0},
		{"publish", 0},
	} {
		t.Run(tc.step, func(t *testing.T) {
			s := newFaultStore(t)
			f := &failOnce{err: errDisk}
			key := &recordingKey{Signer: e.key}
			ts := &hookTS{ts: e.ts}
			dir := t.TempDir()
			cfg := fastSeal
			cfg.CheckpointFile = filepath.Join(dir, "sub", "checkpoint")
			switch tc.step {
			case "integrate", "integrate, answer lost":
				s.set(&s.integrate, func() (error, bool) { return f.fail(), tc.step != "integrate" })
			case "sign":
				key.fail = f.fail
			case "timestamp":
				ts.fail = f.fail
			case "write", "write, answer lost":
				s.set(&s.put, func() (error, bool) { return f.fail(), tc.step != "write" })
			}
			l, err := proof.Open(t.Context(), s, noteSigner(t, key), ts, cfg, proof.Options{Registry: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ids := appendIDs(t, l, s, "first", 5)
			waitAllSealed(t, l, ids)
			if tc.step == "publish" {
				// The checkpoint file cannot be written: its directory
				// is a file.
				if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f.armed.Store(true)
			more := appendIDs(t, l, s, "second", 20)
			waitUntil(t, "not ready after the fault", func() bool { return l.Ready() != nil || f.fired.Load() && tc.step != "publish" })
			if tc.step == "publish" {
				// The head is stored, not published: its records are
				// sealed only once the file is written.
				if h := l.Latest(); h != nil && h.Size > 5 {
					t.Errorf("published head %d, whose checkpoint file could not be written", h.Size)
				}
				if err := os.Remove(filepath.Join(dir, "sub")); err != nil {
					t.Fatal(err)
				}
			}
			waitAllSealed(t, l, append(ids, more...))
			waitUntil(t, "ready again", func() bool { return l.Ready() == nil })
			if !f.fired.Load() && tc.step != "publish" {
				t.Fatal("the fault did not fire")
			}
			l.Close()
			heads := auditHeads(t, e, s)
			if got := checkSigned(t, s, key.signed()); got != tc.resigned {
				t.Errorf("%d trees signed more than once, want %d", got, tc.resigned)
			}
			if n := int(ts.n.Load()); n != heads {
				t.Errorf("%d time-stamps for %d heads", n, heads)
			}
			saved, _, err := proof.ReadSavedCheckpoint(cfg.CheckpointFile, e.signer.Verifier())
			if latest, lerr := s.Latest(t.Context()); err != nil || lerr != nil || saved.Size != latest.Size {
				t.Errorf("the checkpoint file holds %v (%v), the store's newest head %v (%v)", saved, err, latest, lerr)
			}
		})
	}
}

// TestStoreUpgrade: a store written before the integrated trees were kept
// (PostgreSQL schema 2, or a bbolt file with no trees bucket) gets one
// tree for each head when opened for writing, audits, and seals on.
func TestStoreUpgrade(t *testing.T) {
	e := newEnv(t)
	seal := func(t *testing.T, s proof.Store, from, n int) {
		t.Helper()
		l := e.openLog(t, s, fastSeal)
		for i := range n {
			appendSealed(t, l, sampleRecord(from+i))
		}
		l.Close()
	}
	check := func(t *testing.T, s proof.Store, heads int) {
		t.Helper()
		rep, err := proof.Audit(t.Context(), s, e.auditOptions())
		if err != nil || int(rep.Heads) != heads {
			t.Fatalf("audit: %+v, %v; want %d heads", rep, err, heads)
		}
		trees := 0
		if err := s.Trees(t.Context(), func(*proof.Tree) error { trees++; return nil }); err != nil || trees != heads {
			t.Fatalf("%d trees (%v), want one for each of the %d heads", trees, err, heads)
		}
	}
	t.Run("postgres", func(t *testing.T) {
		url := newPGDatabase(t)
		s := openPG(t, url)
		seal(t, s, 0, 3)
		s.Close()
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		// Back to schema 2: no trees, heads tied to nothing.
		_, err = conn.Exec(t.Context(), `ALTER TABLE proof_heads DROP CONSTRAINT proof_heads_tree; DROP TABLE proof_trees;
			DELETE FROM proof_schema; INSERT INTO proof_schema (version) VALUES (2)`)
		conn.Close(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		s = openPG(t, url)
		defer s.Close()
		check(t, s, 3)
		seal(t, s, 3, 2)
		check(t, s, 5)
	})
	t.Run("bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proof.db")
		s := openBolt(t, path)
		seal(t, s, 0, 3)
		if err := s.DB().Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("trees")) }); err != nil {
			t.Fatal(err)
		}
		s.Close()
		ro, err := proof.OpenBolt(path, proof.BoltOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ro.Pending(t.Context()); !errors.Is(err, proof.ErrNotFound) {
			t.Errorf("Pending on a read-only store of before trees: %v, want ErrNotFound", err)
		}
		check(t, ro, 3) // pec proof audit, before any start of the new version
		ro.Close()
		s = openBolt(t, path)
		defer s.Close()
		check(t, s, 3)
		seal(t, s, 3, 2)
		check(t, s, 5)
	})
}
