package wal_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"pec/proof/wal"
)

func readAll(t testing.TB, dir string, opts wal.Options) (*wal.Log, []string, error) {
	t.Helper()
	var got []string
	l, err := wal.Open(dir, opts, func(_ wal.Pos, data []byte) error {
		got = append(got, string(data))
		return nil
	})
	return l, got, err
}

func write(t testing.TB, l *wal.Log, recs ...string) uint64 {
	t.Helper()
	var b [][]byte
	for _, r := range recs {
		b = append(b, []byte(r))
	}
	seg, err := l.Write(b)
	if err != nil {
		t.Fatal(err)
	}
	return seg
}

func reopen(t *testing.T, dir string, want []string) *wal.Log {
	t.Helper()
	l, got, err := readAll(t, dir, wal.Options{Chunk: 4096, SegmentSize: 1 << 16})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read back %q, want %q", got, want)
	}
	return l
}

func TestWriteReopen(t *testing.T) {
	dir := t.TempDir()
	l := reopen(t, dir, nil)
	write(t, l, "one", "two")
	write(t, l, "three")
	write(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = reopen(t, dir, []string{"one", "two", "three"})
	write(t, l, "four")
	l.Close()
	reopen(t, dir, []string{"one", "two", "three", "four"}).Close()
}

func TestSecondWriterRefused(t *testing.T) {
	dir := t.TempDir()
	l := reopen(t, dir, nil)
	defer l.Close()
	if _, _, err := readAll(t, dir, wal.Options{}); err == nil {
		t.Fatal("a second writer opened the log")
	}
	ro, _, err := readAll(t, dir, wal.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a reader: %v", err)
	}
	ro.Close()
}

func TestRotateAndRemove(t *testing.T) {
	dir := t.TempDir()
	l := reopen(t, dir, nil)
	var want []string
	var segs []uint64
	for i := range 200 {
		r := fmt.Sprintf("record-%03d-%0500d", i, i)
		want = append(want, r)
		segs = append(segs, write(t, l, r))
	}
	if len(l.Segments()) < 2 {
		t.Fatalf("200 records of 500 bytes in segments of 64 KiB: %d segments", len(l.Segments()))
	}
	l.Close()
	l = reopen(t, dir, want)
	cut := segs[len(segs)-1]
	if err := l.RemoveBefore(cut); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var kept []string
	for i, s := range segs {
		if s >= cut {
			kept = append(kept, want[i])
		}
	}
	reopen(t, dir, kept).Close()
}

// segment is the path of the only segment of dir.
func segment(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(m) != 1 {
		t.Fatalf("segments %v, %v", m, err)
	}
	return m[0]
}

// TestTornTail: a crash in the middle of the last write leaves part of a
// frame; it was never acknowledged and is cut off, whatever its bytes.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte, last int) // last: the offset of the last frame
	}{
		{"header only", func(b []byte, last int) { clear(b[last+8:]) }},
		{"half the payload", func(b []byte, last int) { clear(b[last+20:]) }},
		{"a byte of the payload", func(b []byte, last int) { b[last+15] ^= 1 }},
		{"garbage length", func(b []byte, last int) { b[last+4] = 0xff }},
		{"magic only", func(b []byte, last int) { clear(b[last+2:]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := reopen(t, dir, nil)
			write(t, l, "kept-1")
			write(t, l, "kept-2")
			path := segment(t, dir)
			before, _ := os.ReadFile(path)
			last := len(before) - countZeros(before)
			write(t, l, "torn-record-with-some-length")
			l.Close()
			b, _ := os.ReadFile(path)
			tc.damage(b, last)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			l = reopen(t, dir, []string{"kept-1", "kept-2"})
			write(t, l, "after")
			l.Close()
			reopen(t, dir, []string{"kept-1", "kept-2", "after"}).Close()
		})
	}
}

func countZeros(b []byte) int {
	n := 0
	for i := len(b) - 1; i >= 0 && b[i] == 0; i-- {
		n++
	}
	return n
}

// TestCorruption: damage that no crash makes is a named error, never a
// silent loss of acknowledged records.
func TestCorruption(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte)
	}{
		{"a byte of the first frame", func(b []byte) { b[16+13] ^= 0x40 }},
		{"the first frame's checksum", func(b []byte) { b[16+9] ^= 1 }},
		{"the segment header", func(b []byte) { b[3] = 'X' }},
		{"the segment number", func(b []byte) { b[15] ^= 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := reopen(t, dir, nil)
			write(t, l, "first")
			write(t, l, "second")
			l.Close()
			path := segment(t, dir)
			b, _ := os.ReadFile(path)
			tc.damage(b)
			os.WriteFile(path, b, 0o600)
			for _, ro := range []bool{false, true} {
				_, got, err := readAll(t, dir, wal.Options{ReadOnly: ro})
				if !errors.Is(err, wal.ErrCorrupt) {
					t.Errorf("read-only %v: Open = %q, %v; want ErrCorrupt", ro, got, err)
				}
			}
		})
	}
}

func TestTruncatedSegment(t *testing.T) {
	dir := t.TempDir()
	l := reopen(t, dir, nil)
	write(t, l, "first")
	write(t, l, "second-record")
	l.Close()
	path := segment(t, dir)
	b, _ := os.ReadFile(path)
	end := len(b) - countZeros(b)
	for _, size := range []int{0, 5, 16, 20, end - 3, end} {
		os.WriteFile(path, b[:size], 0o600)
		l, got, err := readAll(t, dir, wal.Options{})
		if err != nil {
			t.Errorf("truncated to %d: %v", size, err)
			continue
		}
		if len(got) > 2 {
			t.Errorf("truncated to %d: %q", size, got)
		}
		write(t, l, "more")
		l.Close()
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	l := reopen(&testing.T{}, dir, nil)
	write(f, l, "a", "bb")
	write(f, l, "ccc")
	l.Close()
	m, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	seed, _ := os.ReadFile(m[0])
	f.Add(seed[:200])
	f.Add([]byte("PECWAL01\x00\x00\x00\x00\x00\x00\x00\x01PWF1\x00\x00\x00\x05"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "0000000000000001.wal"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{true, false} {
			l, _, err := readAll(t, dir, wal.Options{ReadOnly: ro, Chunk: 4096})
			if err != nil {
				if !errors.Is(err, wal.ErrCorrupt) {
					t.Fatalf("not ErrCorrupt: %v", err)
				}
				return
			}
			if !ro {
				write(t, l, "x")
			}
			l.Close()
		}
	})
}
