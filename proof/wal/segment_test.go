package wal_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"pec/proof/wal"
)

// EncodeSegment writes the bytes that Log.Write writes: a segment of one
// Write of the same records is the encoded one, followed by zeros.
func TestEncodeSegmentIsWhatWriteWrites(t *testing.T) {
	for _, recs := range [][]string{
		{"one"},
		{"one", "two", "three"},
		{"", "x", string(bytes.Repeat([]byte{0xff}, 5000))},
	} {
		dir := t.TempDir()
		l := reopen(t, dir, nil)
		write(t, l, recs...)
		l.Close()
		onDisk, err := os.ReadFile(filepath.Join(dir, wal.SegmentName(1)))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := wal.EncodeSegment(1, byteRecords(recs))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(onDisk, enc) || bytes.ContainsFunc(onDisk[len(enc):], func(r rune) bool { return r != 0 }) {
			t.Errorf("%q: the encoded segment (%d bytes) is not the written one (%d bytes, zero-filled)", recs, len(enc), len(onDisk))
		}
	}
}

// An encoded segment, put in a log directory, opens (read-only and for
// writing) with its records, and takes more.
func TestEncodeSegmentOpens(t *testing.T) {
	for name, recs := range map[string][]string{
		"empty":   nil,
		"records": {"a", "bb", "ccc"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			enc, err := wal.EncodeSegment(7, byteRecords(recs))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, wal.SegmentName(7)), enc, 0o600); err != nil {
				t.Fatal(err)
			}
			l, got, err := readAll(t, dir, wal.Options{ReadOnly: true})
			if err != nil || !slices.Equal(got, recs) {
				t.Fatalf("read-only: %q, %v; want %q", got, err, recs)
			}
			l.Close()
			l = reopen(t, dir, recs)
			if seg := write(t, l, "after"); seg != 7 {
				t.Errorf("written to segment %d, want 7", seg)
			}
			l.Close()
			reopen(t, dir, append(slices.Clone(recs), "after")).Close()
		})
	}
}

// More than one frame's worth of records: several frames, read back in
// order.
func TestEncodeSegmentSplitsFrames(t *testing.T) {
	if testing.Short() {
		t.Skip("encodes 68 MiB")
	}
	big := make([][]byte, 17) // 17 × 4 MiB > MaxFrame
	for i := range big {
		big[i] = bytes.Repeat([]byte{byte('a' + i)}, wal.MaxRecord)
	}
	enc, err := wal.EncodeSegment(1, big)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, wal.SegmentName(1)), enc, 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	l, err := wal.Open(dir, wal.Options{ReadOnly: true}, func(_ wal.Pos, data []byte) error {
		if !bytes.Equal(data, big[n]) {
			t.Errorf("record %d differs", n)
		}
		n++
		return nil
	})
	if err != nil || n != len(big) {
		t.Fatalf("read %d records, %v", n, err)
	}
	l.Close()
	if _, err := wal.EncodeSegment(1, [][]byte{make([]byte, wal.MaxRecord+1)}); err == nil {
		t.Error("a record over MaxRecord was encoded")
	}
}

func byteRecords(recs []string) [][]byte {
	var b [][]byte
	for _, r := range recs {
		b = append(b, []byte(r))
	}
	return b
}
