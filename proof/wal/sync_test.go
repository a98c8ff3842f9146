package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests replace the two system calls of a durable Write (writeAt,
// fdatasync) to see their order and to make them fail. They change
// package variables: none of them runs in parallel.

// sysEvent is a system call of Write as the hooks saw it.
type sysEvent struct {
	op   string // "write" (returned), "sync" (entered), "synced" (returned nil)
	file string
	off  int64
	recs []string // for a write: the records of the frame written
}

// tracer records the writes and syncs of Write, in order.
type tracer struct {
	mu     sync.Mutex
	events []sysEvent
}

func (tr *tracer) add(e sysEvent) {
	tr.mu.Lock()
	tr.events = append(tr.events, e)
	tr.mu.Unlock()
}

func (tr *tracer) snapshot() []sysEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// frameRecords decodes the records of the frame at the start of b; nil if
// b is not one whole frame.
func frameRecords(b []byte) []string {
	payload, ok := frameAt(b)
	if !ok || len(b) != frameHeader+len(payload) {
		return nil
	}
	recs := []string{}
	for len(payload) >= 4 {
		n := binary.BigEndian.Uint32(payload)
		recs = append(recs, string(payload[4:4+n]))
		payload = payload[4+n:]
	}
	return recs
}

// hookSyscalls replaces writeAt and fdatasync for the rest of the test.
func hookSyscalls(t *testing.T, w func(*os.File, []byte, int64) (int, error), s func(*os.File) error) {
	t.Helper()
	realWrite, realSync := writeAt, fdatasync
	t.Cleanup(func() { writeAt, fdatasync = realWrite, realSync })
	if w != nil {
		writeAt = w
	}
	if s != nil {
		fdatasync = s
	}
}

func openTest(t *testing.T, dir string) (*Log, []string) {
	t.Helper()
	var got []string
	l, err := Open(dir, Options{Chunk: 4096, SegmentSize: 16 << 10}, func(_ Pos, data []byte) error {
		got = append(got, string(data))
		return nil
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l, got
}

func recordsOf(recs []string) [][]byte {
	b := make([][]byte, len(recs))
	for i, r := range recs {
		b[i] = []byte(r)
	}
	return b
}

// TestWriteReturnsAfterSync: Write returns only after the fdatasync of
// the file it wrote the frame of its records to, entered after that write
// and returned: never before the sync (an fdatasync removed, made before
// the write, or left running in the background), never with a sync of
// another file. Each Write is held inside its fdatasync for a while to
// see whether it returns meanwhile. The writes cross segment boundaries.
func TestWriteReturnsAfterSync(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	defer l.Close()
	tr := &tracer{}
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	realWrite, realSync := writeAt, fdatasync
	hookSyscalls(t,
		func(f *os.File, b []byte, off int64) (int, error) {
			n, err := realWrite(f, b, off)
			tr.add(sysEvent{op: "write", file: f.Name(), off: off, recs: frameRecords(b)})
			return n, err
		},
		func(f *os.File) error {
			tr.add(sysEvent{op: "sync", file: f.Name()})
			entered <- struct{}{}
			<-release
			err := realSync(f)
			if err == nil {
				tr.add(sysEvent{op: "synced", file: f.Name()})
			}
			return err
		})
	for i := range 40 {
		recs := []string{fmt.Sprintf("record-%d-%0900d", i, i)}
		if i%3 == 0 {
			recs = append(recs, fmt.Sprintf("record-%d-b", i), fmt.Sprintf("record-%d-c", i))
		}
		done := make(chan error, 1)
		go func() {
			_, err := l.Write(recordsOf(recs))
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("write %d returned (%v) before any fdatasync", i, err)
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("write %d: no fdatasync and no return in 10s", i)
		}
		// The sync is held: Write must not return meanwhile.
		select {
		case err := <-done:
			t.Fatalf("write %d returned (%v) while its fdatasync was running", i, err)
		case <-time.After(15 * time.Millisecond):
		}
		release <- struct{}{}
		if err := <-done; err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		// The frame of recs was written, then its file synced.
		ev := tr.snapshot()
		w := slices.IndexFunc(ev, func(e sysEvent) bool { return slices.Equal(e.recs, recs) })
		if w < 0 {
			t.Fatalf("write %d: no write of a frame holding exactly %q; saw %+v", i, recs[0][:12], ev)
		}
		if !slices.ContainsFunc(ev[w+1:], func(e sysEvent) bool { return e.op == "synced" && e.file == ev[w].file }) {
			t.Fatalf("write %d returned, but %s was not synced after its frame was written at %d: %+v", i, ev[w].file, ev[w].off, ev[w:])
		}
	}
	if len(l.Segments()) < 2 {
		t.Errorf("40 KB of records in segments of 16 KiB: %d segments, want several", len(l.Segments()))
	}
}

// TestWriteFaultsAreSticky: after a write or sync that fails, every later
// Write fails (what the segment holds past the last acknowledged frame is
// unknown) even once the disk works again; Open then reads the records
// acknowledged before the fault, and the log takes writes again.
func TestWriteFaultsAreSticky(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  syscall.Errno
		inject func(realWrite func(*os.File, []byte, int64) (int, error), realSync func(*os.File) error) (func(*os.File, []byte, int64) (int, error), func(*os.File) error)
		// mayKeep: the failed write's records may be read back (a sync
		// that failed after the bytes reached the file).
		mayKeep bool
	}{
		{
			name:  "disk full, nothing written",
			fault: syscall.ENOSPC,
			inject: func(w func(*os.File, []byte, int64) (int, error), s func(*os.File) error) (func(*os.File, []byte, int64) (int, error), func(*os.File) error) {
				return func(*os.File, []byte, int64) (int, error) { return 0, syscall.ENOSPC }, nil
			},
		},
		{
			name:  "torn write, half the frame",
			fault: syscall.EIO,
			inject: func(w func(*os.File, []byte, int64) (int, error), s func(*os.File) error) (func(*os.File, []byte, int64) (int, error), func(*os.File) error) {
				return func(f *os.File, b []byte, off int64) (int, error) {
					n, _ := w(f, b[:len(b)/2], off)
					return n, syscall.EIO
				}, nil
			},
		},
		{
			name:  "sync fails",
			fault: syscall.EIO,
			inject: func(w func(*os.File, []byte, int64) (int, error), s func(*os.File) error) (func(*os.File, []byte, int64) (int, error), func(*os.File) error) {
				return nil, func(*os.File) error { return fmt.Errorf("wal: sync: %w", syscall.EIO) }
			},
			mayKeep: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openTest(t, dir)
			acked := []string{"first", "second", "third"}
			for _, r := range acked {
				if _, err := l.Write(recordsOf([]string{r})); err != nil {
					t.Fatal(err)
				}
			}
			realWrite, realSync := writeAt, fdatasync
			var faulty bool
			var mu sync.Mutex
			w, s := tc.inject(realWrite, realSync)
			// The fault strikes once; later calls reach the disk.
			once := func() bool {
				mu.Lock()
				defer mu.Unlock()
				if faulty {
					return false
				}
				faulty = true
				return true
			}
			hookSyscalls(t,
				func(f *os.File, b []byte, off int64) (int, error) {
					if w != nil && once() {
						return w(f, b, off)
					}
					return realWrite(f, b, off)
				},
				func(f *os.File) error {
					if s != nil && once() {
						return s(f)
					}
					return realSync(f)
				})
			_, err := l.Write(recordsOf([]string{"failed-a", "failed-b"}))
			if !errors.Is(err, tc.fault) {
				t.Fatalf("the faulty write: %v, want %v", err, tc.fault)
			}
			for i := range 3 {
				_, err := l.Write(recordsOf([]string{fmt.Sprintf("later-%d", i)}))
				if err == nil {
					t.Fatalf("write %d after the fault succeeded: a failed write must stop the log until it is opened again", i)
				}
				if !errors.Is(err, tc.fault) {
					t.Errorf("write %d after the fault: %v, want the first fault (%v)", i, err, tc.fault)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, got := openTest(t, dir)
			switch {
			case slices.Equal(got, acked):
			case tc.mayKeep && slices.Equal(got, append(slices.Clone(acked), "failed-a", "failed-b")):
				t.Logf("the records of the failed sync are read back: they reached the file")
			default:
				t.Fatalf("read back %q after the fault, want %q", got, acked)
			}
			if _, err := l.Write(recordsOf([]string{"after"})); err != nil {
				t.Fatalf("a write after Open: %v", err)
			}
			l.Close()
			l, again := openTest(t, dir)
			l.Close()
			if want := append(got, "after"); !slices.Equal(again, want) {
				t.Fatalf("read back %q, want %q", again, want)
			}
		})
	}
}
