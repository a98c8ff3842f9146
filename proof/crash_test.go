package proof_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/proof"
)

// TestCrashChild is the writer killed by TestKill9DuringBurst: it appends
// from 32 goroutines and prints every acknowledgment.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("PEC_PROOF_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestKill9DuringBurst")
	}
	// Never outlive the parent for long: it kills this process within a
	// second of starting it. (Without a parent, the next print fails with
	// SIGPIPE.)
	time.AfterFunc(crashChildLimit, func() {
		fmt.Fprintf(os.Stderr, "TestCrashChild: not killed within %s\n", crashChildLimit)
		os.Exit(4)
	})
	e := loadEnv(t, dir)
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	cfg := fastSeal
	cfg.CheckpointFile = filepath.Join(dir, "checkpoint")
	l := e.openLog(t, s, cfg)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ids, err := l.Append(t.Context(), sampleRecord(w*1_000_000+i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				// Printed after the acknowledgment, flushed at once: what
				// the parent reads was acknowledged.
				fmt.Fprintf(out, "ack %s\n", ids[0])
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestKill9DuringBurst kills a writing process with SIGKILL in the middle
// of a burst of appends, ten times over the same store: after each, every
// record acknowledged so far is in the store (sealed, or durable and
// sealed by the next start), the store audits, and once a log is opened
// again every acknowledged record is sealed with a valid inclusion proof.
func TestKill9DuringBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	e := newEnv(t)
	e.save(t, dir)
	acked := map[string]bool{}
	for round := range 10 {
		n := crashOnce(t, dir, acked, 300+round*97)
		s := openBolt(t, filepath.Join(dir, "proof.db"))
		rep, err := proof.Audit(t.Context(), s, proof.AuditOptions{Verifier: e.signer.Verifier(), TSARoots: e.roots, CheckpointFile: filepath.Join(dir, "checkpoint")})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for id := range acked {
			if _, err := s.Lookup(t.Context(), id); err != nil && !errors.Is(err, proof.ErrNotSealed) {
				t.Fatalf("round %d: acknowledged %s: %v", round, id, err)
			}
		}
		s.Close()
		t.Logf("round %d: killed after %d acknowledgments; %d sealed records in %d heads, %d unsealed", round, n, rep.Records, rep.Heads, rep.Unsealed)
	}
	// The next start seals what the crashes left.
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	defer s.Close()
	cfg := fastSeal
	cfg.CheckpointFile = filepath.Join(dir, "checkpoint")
	l := loadEnv(t, dir).openLog(t, s, cfg)
	ctx := t.Context()
	var latest *proof.Head
	for id := range acked {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, head, err := l.WaitSealed(wctx, id)
		cancel()
		if err != nil {
			t.Fatalf("acknowledged %s: %v", id, err)
		}
		latest = head
	}
	l.Close()
	if _, err := proof.Audit(ctx, s, proof.AuditOptions{Verifier: e.signer.Verifier(), TSARoots: e.roots, CheckpointFile: cfg.CheckpointFile}); err != nil {
		t.Fatal(err)
	}
	for id := range acked {
		idx, err := s.Lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Record(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		p, err := proof.InclusionProof(ctx, s, idx, latest.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rec.Data, idx, latest.Size, p, latest.Root); err != nil {
			t.Fatalf("inclusion of %s: %v", id, err)
		}
	}
	t.Logf("%d acknowledged records over 10 crashes, all sealed and proven", len(acked))
}

// crashChildLimit bounds a writer's life, crashRoundLimit a round of the
// parent: a writer that hangs or stops printing is killed, and the test
// fails, within it.
const (
	crashChildLimit = 2 * time.Minute
	crashRoundLimit = time.Minute
)

// crashOnce runs the writer and kills it after n acknowledgments, adding
// them to acked. The writer is killed, and waited for, whatever happens:
// at the round's deadline, and when the test fails.
func crashOnce(t *testing.T, dir string, acked map[string]bool, n int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), crashRoundLimit)
	if d, ok := t.Deadline(); ok && time.Until(d) < crashRoundLimit+10*time.Second {
		// Before go test's own timeout, which ends the process
		// without running cleanups.
		ctx, cancel = context.WithDeadline(t.Context(), d.Add(-10*time.Second))
	}
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	// TMPDIR: the killed child cannot remove its temporary files.
	cmd.Env = append(os.Environ(), "PEC_PROOF_CRASH_DIR="+dir, "TMPDIR="+dir)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second // Wait returns even if the pipe stays open
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		// On every way out (t.Fatal included): kill, then reap.
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	sc := bufio.NewScanner(stdout)
	got, killed := 0, false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] != "ack" {
			continue
		}
		acked[f[1]] = true
		got++
		if got == n && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	waited = true
	if !killed {
		t.Fatalf("the writer stopped after %d acknowledgments (%v)", got, context.Cause(ctx))
	}
	return got
}
