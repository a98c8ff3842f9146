package tsa_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pec/tsa"
)

// The serial file read while its node uses it holds the node's mark, and
// a file restored from it never hands out a serial issued before.
func TestReadSerialFileWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serials")
	s, err := tsa.OpenFileSerials(path, 7)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for range 3 {
		n, err := s.NextSerial()
		if err != nil {
			t.Fatal(err)
		}
		last = n.Text(16)
	}
	st, err := tsa.ReadSerialFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != 7 || st.Mark == 0 {
		t.Fatalf("read %+v while open", st)
	}
	s.Close()

	restored := filepath.Join(t.TempDir(), "serials")
	if err := os.WriteFile(restored, tsa.EncodeSerialFile(st), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := tsa.OpenFileSerials(restored, 7)
	if err != nil {
		t.Fatalf("the restored serial file: %v", err)
	}
	defer r.Close()
	n, err := r.NextSerial()
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Text(16)) < len(last) || len(n.Text(16)) == len(last) && n.Text(16) <= last {
		t.Errorf("after the restore, serial %s; before the backup, %s", n.Text(16), last)
	}
}

func TestParseSerialFile(t *testing.T) {
	good := tsa.EncodeSerialFile(tsa.SerialState{Node: 3, Mark: 1 << 40})
	other := tsa.EncodeSerialFile(tsa.SerialState{Node: 4, Mark: 1 << 41})
	higherB := tsa.EncodeSerialFile(tsa.SerialState{Node: 3, Mark: 1<<40 + 65536})
	mixed := append([]byte(nil), good...)
	copy(mixed[4096:], higherB[4096:])
	tornA := append([]byte(nil), mixed...)
	tornA[10] ^= 1
	tornBoth := append([]byte(nil), tornA...)
	tornBoth[4096+10] ^= 1
	nodes := append([]byte(nil), good...)
	copy(nodes[4096:], other[4096:])
	for _, c := range []struct {
		name string
		data []byte
		want tsa.SerialState
		err  string
	}{
		{"both copies", good, tsa.SerialState{Node: 3, Mark: 1 << 40}, ""},
		{"the higher copy", mixed, tsa.SerialState{Node: 3, Mark: 1<<40 + 65536}, ""},
		{"a torn copy: the other", tornA, tsa.SerialState{Node: 3, Mark: 1<<40 + 65536}, ""},
		{"both torn", tornBoth, tsa.SerialState{}, "no valid copy"},
		{"two nodes", nodes, tsa.SerialState{}, "nodes 3 and 4"},
		{"short", good[:100], tsa.SerialState{}, "100 bytes"},
		{"empty", nil, tsa.SerialState{}, "0 bytes"},
		{"zeros", make([]byte, len(good)), tsa.SerialState{}, "no valid copy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := tsa.ParseSerialFile(c.data)
			if c.err != "" {
				if !errors.Is(err, tsa.ErrSerialFile) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want ErrSerialFile with %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("%+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

// FuzzParseSerialFile: no panic; a parsed state round-trips through
// EncodeSerialFile; a refusal is ErrSerialFile.
func FuzzParseSerialFile(f *testing.F) {
	f.Add(tsa.EncodeSerialFile(tsa.SerialState{Node: 1, Mark: 12345}))
	f.Add([]byte("PECS"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := tsa.ParseSerialFile(data)
		if err != nil {
			if !errors.Is(err, tsa.ErrSerialFile) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, err := tsa.ParseSerialFile(tsa.EncodeSerialFile(st))
		if err != nil || again != st {
			t.Fatalf("%+v re-encoded reads %+v, %v", st, again, err)
		}
	})
}

// JournalLength, while the journal is open (zeros ahead of its data) and
// after a torn line, is the end of its last complete line.
func TestJournalLength(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.jsonl")
	j := openJournal(t, path)
	for i := range 3 {
		if err := j.Record(t.Context(), issued(int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	n, err := tsa.JournalLength(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if fi, _ := os.Stat(path); fi.Size() <= n {
		t.Logf("no zeros ahead of the data (size %d)", fi.Size())
	}
	if bytes.Count(data[:n], []byte("\n")) != 3 || data[n-1] != '\n' {
		t.Fatalf("JournalLength %d does not end the third line: %q", n, data[:n])
	}
	copied := filepath.Join(t.TempDir(), "copy.jsonl")
	if err := os.WriteFile(copied, data[:n], 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readJournal(t, copied); len(got) != 3 {
		t.Fatalf("the copy reads %d entries, want 3", len(got))
	}
	j.Close()

	// A torn last line, and a line longer than the reader's buffer.
	long := strings.Repeat("x", 100<<10)
	for _, c := range []struct {
		name, data string
		want       int64
	}{
		{"torn", "{\"a\":1}\n{\"b\"", 8},
		{"zeros after a torn line", "{\"a\":1}\n{\"b\"\x00\x00", 8},
		{"long line", long + "\n" + "x", int64(len(long) + 1)},
		{"empty", "", 0},
		{"no newline", "abc", 0},
	} {
		p := filepath.Join(t.TempDir(), "j")
		os.WriteFile(p, []byte(c.data), 0o600)
		if got, err := tsa.JournalLength(p); err != nil || got != c.want {
			t.Errorf("%s: %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	if _, err := tsa.JournalLength(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing journal: %v", err)
	}
}
