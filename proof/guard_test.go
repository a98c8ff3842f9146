package proof_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pec/proof"
)

// guarded is a node's store with its checkpoint file, n records sealed.
type guarded struct {
	e          *env
	dir        string
	path, file string
}

func newGuarded(t *testing.T) *guarded {
	dir := t.TempDir()
	return &guarded{e: newEnv(t), dir: dir, path: filepath.Join(dir, "proof.db"), file: filepath.Join(dir, "proof-checkpoint")}
}

func (g *guarded) cfg() proof.Config {
	c := fastSeal
	c.CheckpointFile = g.file
	return c
}

// run opens the store and its log, seals n more records and closes both.
func (g *guarded) run(t *testing.T, tag string, n int) {
	t.Helper()
	s := openBolt(t, g.path)
	defer s.Close()
	l := g.e.openLog(t, s, g.cfg())
	for i := range n {
		rec := sampleRecord(i)
		rec.Subject = tag
		appendSealed(t, l, rec)
	}
	l.Close()
}

// open opens the store and its log as pec serve does.
func (g *guarded) open(t *testing.T) error {
	t.Helper()
	s, err := proof.OpenBolt(g.path, proof.BoltOptions{})
	if err != nil {
		return err
	}
	defer s.Close()
	l, err := proof.Open(t.Context(), s, g.e.signer, g.e.ts, g.cfg(), proof.Options{})
	if err == nil {
		l.Close()
	}
	return err
}

// audit audits the store as pec proof audit does.
func (g *guarded) audit(t *testing.T) error {
	t.Helper()
	s, err := proof.OpenBolt(g.path, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer s.Close()
	opts := g.e.auditOptions()
	opts.CheckpointFile = g.file
	_, err = proof.Audit(t.Context(), s, opts)
	return err
}

// wantRollback: both the start and the audit refuse, naming the sizes.
func (g *guarded) wantRollback(t *testing.T, reason string) {
	t.Helper()
	err := g.open(t)
	re, ok := errors.AsType[*proof.RollbackError](err)
	if !ok || !strings.Contains(re.Reason, reason) {
		t.Fatalf("open: %v, want a RollbackError (%s)", err, reason)
	}
	if !strings.Contains(err.Error(), "size") || !errors.Is(err, proof.ErrRollback) {
		t.Errorf("the refusal names no sizes: %v", err)
	}
	err = g.audit(t)
	if _, ok := errors.AsType[*proof.RollbackError](err); !ok {
		t.Errorf("audit: %v, want a RollbackError", err)
	}
}

func copyStore(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(proof.WALDir(to)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(proof.WALDir(to), os.DirFS(proof.WALDir(from))); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackOldCopy: an older copy of the whole store put back is
// refused at start and by audit; with its own (older) checkpoint file too,
// it would start, so the file must be kept apart from backups of the store.
func TestRollbackOldCopy(t *testing.T) {
	g := newGuarded(t)
	g.run(t, "first", 3)
	old := filepath.Join(t.TempDir(), "old.db")
	copyStore(t, g.path, old)
	g.run(t, "later", 4)
	if err := g.audit(t); err != nil {
		t.Fatalf("audit of the genuine store: %v", err)
	}
	copyStore(t, old, g.path)
	g.wantRollback(t, "behind")
}

// TestRollbackMetaPage: one byte flipped in the newest bbolt meta page
// makes bbolt fall back to the previous commit: refused, not served.
func TestRollbackMetaPage(t *testing.T) {
	g := newGuarded(t)
	g.run(t, "first", 2)
	g.run(t, "later", 3)
	data, err := os.ReadFile(g.path)
	if err != nil {
		t.Fatal(err)
	}
	// meta: page header (16), magic, version, page size, flags, root
	// (16), freelist, pgid, txid at 16+48, checksum at 16+56.
	pageSize := int(binary.LittleEndian.Uint32(data[16+8:]))
	newest := 0
	if binary.LittleEndian.Uint64(data[pageSize+16+48:]) > binary.LittleEndian.Uint64(data[16+48:]) {
		newest = pageSize
	}
	data[newest+16+56] ^= 0x01
	if err := os.WriteFile(g.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	g.wantRollback(t, "behind")
}

// TestForkSameSize: a store of the same size with other records (another
// history signed with the same key) is a fork.
func TestForkSameSize(t *testing.T) {
	g := newGuarded(t)
	g.run(t, "genuine", 3)
	saved, err := os.ReadFile(g.file)
	if err != nil {
		t.Fatal(err)
	}
	// Another history: a fresh store, the same key, other records.
	os.Remove(g.path)
	os.RemoveAll(proof.WALDir(g.path))
	os.Remove(g.file)
	g.run(t, "forged", 3)
	if err := os.WriteFile(g.file, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	g.wantRollback(t, "forks")
	// A store that went on from a forged history is refused too.
	os.Remove(g.file)
	g.run(t, "forged-more", 2)
	if err := os.WriteFile(g.file, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	g.wantRollback(t, "is not the node's newest checkpoint")
}

// TestTruncatedStore: a store file cut at any of several sizes is a named
// error at open, for serving and for audit, never a SIGBUS or a panic.
func TestTruncatedStore(t *testing.T) {
	g := newGuarded(t)
	g.run(t, "records", 20)
	data, err := os.ReadFile(g.path)
	if err != nil {
		t.Fatal(err)
	}
	page := int(binary.LittleEndian.Uint32(data[16+8:]))
	// The pages in use: the meta pages' high-water mark (bbolt grows the
	// file ahead; cutting only free pages off loses nothing).
	used := page * int(max(binary.LittleEndian.Uint64(data[16+40:]), binary.LittleEndian.Uint64(data[page+16+40:])))
	if used > len(data) || used < 4*page {
		t.Fatalf("%d bytes in use of %d", used, len(data))
	}
	for _, size := range []int{1, 100, page, page + 1, 2 * page, 3*page + 7, used / 2, used - page, used - 1} {
		if err := os.WriteFile(g.path, data[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		err := g.open(t)
		if !errors.Is(err, proof.ErrCorruptStore) {
			t.Errorf("truncated to %d of %d bytes in use: open: %v, want ErrCorruptStore", size, used, err)
		}
		if err := g.audit(t); !errors.Is(err, proof.ErrCorruptStore) {
			t.Errorf("truncated to %d of %d bytes in use: audit: %v, want ErrCorruptStore", size, used, err)
		}
	}
}

// TestCheckpointFileDamaged: a checkpoint file that does not verify is
// refused, not replaced.
func TestCheckpointFileDamaged(t *testing.T) {
	g := newGuarded(t)
	g.run(t, "records", 2)
	data, err := os.ReadFile(g.file)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/3] ^= 0x20
	if err := os.WriteFile(g.file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.open(t); err == nil || !strings.Contains(err.Error(), "checkpoint file") {
		t.Errorf("open with a damaged checkpoint file: %v", err)
	}
}
