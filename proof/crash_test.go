package proof_test

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"pec/internal/devpki"
	"pec/proof"
)

// TestCrashChild is the writer killed by TestKill9DuringBurst: it appends
// from 32 goroutines and prints every acknowledgment.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("PEC_PROOF_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestKill9DuringBurst")
	}
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(dir, "root.pem"), devpki.CertPEM(e.root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vkey"), []byte(e.signer.Verifier().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	l := e.openLog(t, s, proof.Config{})
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r, err := l.Append(t.Context(), sampleRecord(w*1_000_000+i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				// Printed after the acknowledgment, flushed at once: what
				// the parent reads was acknowledged.
				fmt.Fprintf(out, "ack %s %d %d\n", r.ID, r.Index, r.TreeSize)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestKill9DuringBurst kills a writing process with SIGKILL in the middle
// of a burst of appends: after it, every acknowledged record is in the
// store at its index with a valid inclusion proof, the tree head of its
// receipt is there, and the whole store audits.
func TestKill9DuringBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	// TMPDIR: the killed child cannot remove its temporary files.
	cmd.Env = append(os.Environ(), "PEC_PROOF_CRASH_DIR="+dir, "TMPDIR="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct{ index, size uint64 }
	acked := map[string]ack{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			continue
		}
		idx, _ := strconv.ParseUint(f[2], 10, 64)
		size, _ := strconv.ParseUint(f[3], 10, 64)
		acked[f[1]] = ack{idx, size}
		if len(acked) == 3000 && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("the writer stopped after %d acknowledgments", len(acked))
	}

	vkey, err := os.ReadFile(filepath.Join(dir, "vkey"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := proof.ParseNoteVerifier(string(vkey))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := devpki.LoadCertsPEM(filepath.Join(dir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	defer s.Close()
	ctx := t.Context()
	rep, err := proof.Audit(ctx, s, proof.AuditOptions{Verifier: v, TSARoots: pool})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := s.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, a := range acked {
		idx, err := s.Lookup(ctx, id)
		if err != nil || idx != a.index {
			t.Fatalf("acknowledged %s at %d: in the store at %d (%v)", id, a.index, idx, err)
		}
		if _, err := s.HeadAt(ctx, a.size); err != nil {
			t.Fatalf("the tree head %d of %s's receipt: %v", a.size, id, err)
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
	t.Logf("killed after %d acknowledgments; the store holds %d records in %d tree heads, all checked", len(acked), rep.Records, rep.Heads)
}
