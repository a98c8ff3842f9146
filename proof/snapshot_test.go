package proof_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"pec/proof"
	"pec/proof/wal"
)

// writeSnapshot writes sn as a store in dir: the file and its write-ahead
// log, as a restore does.
func writeSnapshot(t testing.TB, sn *proof.BoltSnapshot, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "proof.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := sn.WriteDB(f)
	if err != nil || n != sn.DBSize() {
		t.Fatalf("WriteDB: %d bytes of %d, %v", n, sn.DBSize(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	seg, err := sn.WAL()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(proof.WALDir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proof.WALDir(path), wal.SegmentName(proof.WALSegment)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSnapshotUnderLoad takes snapshots of a store while writers append
// and the sequencer seals: each snapshot, written out and opened, holds
// every record acknowledged before the snapshot was asked for (sealed or
// still unsealed), seals them when opened for writing, and audits.
func TestSnapshotUnderLoad(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{SealInterval: 15 * time.Millisecond})
	defer l.Close()

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ids, err := l.Append(t.Context(), sampleRecord(w*100000+i))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				acked = append(acked, ids...)
				mu.Unlock()
			}
		})
	}
	const snapshots = 6
	type taken struct {
		path   string
		before []string
		sn     *proof.BoltSnapshot
	}
	var all []taken
	for i := range snapshots {
		time.Sleep(time.Duration(20+13*i) * time.Millisecond)
		mu.Lock()
		before := append([]string(nil), acked...)
		mu.Unlock()
		sn, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		// Written out while the load goes on: the transaction's view
		// stays what it was.
		time.Sleep(5 * time.Millisecond)
		path := writeSnapshot(t, sn, t.TempDir())
		all = append(all, taken{path, before, sn})
	}
	close(stop)
	wg.Wait()
	for _, tk := range all {
		if err := tk.sn.Close(); err != nil {
			t.Fatal(err)
		}
	}

	sawUnsealed := false
	for i, tk := range all {
		r, err := proof.OpenBolt(tk.path, proof.BoltOptions{})
		if err != nil {
			t.Fatalf("snapshot %d: %v", i, err)
		}
		unsealed, _ := r.Unsealed(t.Context(), proof.MaxUnsealed)
		sawUnsealed = sawUnsealed || len(unsealed) > 0
		for _, id := range tk.before {
			if _, err := r.Lookup(t.Context(), id); err != nil && !errors.Is(err, proof.ErrNotSealed) {
				t.Fatalf("snapshot %d: record %s, acknowledged before it, is missing: %v", i, id, err)
			}
		}
		// Opened as a node would: what was unsealed is sealed.
		rl := e.openLog(t, r, fastSeal)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		for _, id := range tk.before {
			if _, _, err := rl.WaitSealed(ctx, id); err != nil {
				t.Fatalf("snapshot %d: record %s not sealed after the restore: %v", i, id, err)
			}
		}
		cancel()
		rl.Close()
		rep, err := proof.Audit(t.Context(), r, e.auditOptions())
		if err != nil {
			t.Fatalf("snapshot %d: audit: %v", i, err)
		}
		t.Logf("snapshot %d: %d acknowledged before it; restored %d records (%d of them unsealed in the snapshot)", i, len(tk.before), rep.Records, len(unsealed))
		r.Close()
	}
	if !sawUnsealed {
		t.Log("no snapshot caught unsealed records (the load sealed too fast)")
	}
}

// A snapshot of an empty store, and of a store opened read-only, open.
func TestSnapshotEmptyAndReadOnly(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "proof.db")
	s := openBolt(t, path)
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if size, root := sn.Head(); size != 0 || root != nil || sn.Unsealed() != 0 {
		t.Errorf("empty store: head %d %x, %d unsealed", size, root, sn.Unsealed())
	}
	restored := writeSnapshot(t, sn, t.TempDir())
	sn.Close()
	r, err := proof.OpenBolt(restored, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Latest(t.Context()); !errors.Is(err, proof.ErrNotFound) {
		t.Errorf("empty snapshot: Latest: %v", err)
	}
	r.Close()

	// Records sealed, then more appended and left unsealed by a log that
	// stops (its store closed under it, as a crash would).
	l := e.openLog(t, s, fastSeal)
	appendSealed(t, l, sampleRecord(1))
	l.Close()
	if err := s.Append(t.Context(), []proof.StoredRecord{storedRecord(t, 2)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := proof.OpenBolt(path, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	sn, err = ro.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if size, _ := sn.Head(); size != 1 || sn.Unsealed() != 1 || sn.Records() != 1 {
		t.Fatalf("head of size %d, %d records, %d unsealed; want 1, 1, 1", size, sn.Records(), sn.Unsealed())
	}
	restored = writeSnapshot(t, sn, t.TempDir())
	r2, err := proof.OpenBolt(restored, proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rep, err := proof.Audit(t.Context(), r2, e.auditOptions())
	if err != nil || rep.Records != 1 || rep.Unsealed != 1 {
		t.Fatalf("audit: %+v, %v", rep, err)
	}
}

func storedRecord(t testing.TB, i int) proof.StoredRecord {
	t.Helper()
	rec := sampleRecord(i)
	rec.ID = "snapshot-test-" + time.Now().Format("150405.000000000")
	rec.Time = time.Now().UTC()
	data, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return proof.StoredRecord{ID: rec.ID, Data: data}
}
