package tsa_test

import (
	"bufio"
	"encoding/binary"
	"hash/crc32"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/tsa"
)

// openSerials opens a serial file and closes it at the end of the test.
func openSerials(t testing.TB, path string, node int) *tsa.FileSerials {
	t.Helper()
	s, err := tsa.OpenFileSerials(path, node)
	if err != nil {
		t.Fatalf("OpenFileSerials(%s, %d): %v", path, node, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// draw takes n serials and checks their shape: positive, at most 80 bits,
// the node ID in the bits above 64.
func draw(t testing.TB, s tsa.SerialSource, node, n int) []*big.Int {
	t.Helper()
	out := make([]*big.Int, n)
	for i := range out {
		v, err := s.NextSerial()
		if err != nil {
			t.Fatalf("NextSerial: %v", err)
		}
		if v.Sign() <= 0 || v.BitLen() > 80 {
			t.Fatalf("serial %x: want positive and at most 80 bits", v)
		}
		if got := new(big.Int).Rsh(v, 64).Int64(); got != int64(node) {
			t.Fatalf("serial %x: node bits %d, want %d", v, got, node)
		}
		out[i] = v
	}
	return out
}

func maxSerial(s []*big.Int) *big.Int {
	return slices.MaxFunc(s, (*big.Int).Cmp)
}

func TestFileSerialsConcurrentUnique(t *testing.T) {
	t.Parallel()
	const goroutines, each = 16, 100_000
	s := openSerials(t, filepath.Join(t.TempDir(), "serials"), 0)
	got := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			out := make([]uint64, 0, each)
			for range each {
				v, err := s.NextSerial()
				if err != nil {
					t.Errorf("NextSerial: %v", err)
					return
				}
				if !v.IsUint64() || v.Sign() <= 0 {
					t.Errorf("serial %x of node 0: want a positive 64-bit value", v)
					return
				}
				out = append(out, v.Uint64())
			}
			got[g] = out
		})
	}
	wg.Wait()
	all := slices.Concat(got...)
	if len(all) != goroutines*each {
		t.Fatalf("got %d serials, want %d", len(all), goroutines*each)
	}
	slices.Sort(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Fatalf("serial %x handed out twice", all[i])
		}
	}
}

func TestFileSerialsRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "serials")
	var before *big.Int
	// More than a block per run, so that the stored mark, not only the
	// clock, carries the counter over.
	for run := range 3 {
		s, err := tsa.OpenFileSerials(path, 9)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		got := draw(t, s, 9, tsa.SerialBlock+1000)
		if before != nil {
			if lo := slices.MinFunc(got, (*big.Int).Cmp); lo.Cmp(before) <= 0 {
				t.Fatalf("run %d: serial %x is not above %x, the highest of the runs before", run, lo, before)
			}
		}
		before = maxSerial(got)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.NextSerial(); err == nil {
			t.Fatal("NextSerial after Close: no error")
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

// TestFileSerialsCrash kills a process that holds the file (SIGKILL, no
// Close) and checks that the next process only draws higher serials.
func TestFileSerialsCrash(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "serials")
	var before *big.Int
	for run := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileSerialsCrashChild$")
		cmd.Env = append(os.Environ(), "PEC_TEST_SERIAL_FILE="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("run %d: child: %v", run, err)
		}
		loText, hiText, ok := strings.Cut(strings.TrimSpace(line), " ")
		lo, ok1 := new(big.Int).SetString(loText, 16)
		hi, ok2 := new(big.Int).SetString(hiText, 16)
		if !ok || !ok1 || !ok2 {
			t.Fatalf("child printed %q", line)
		}
		if before != nil && lo.Cmp(before) <= 0 {
			t.Fatalf("run %d: serial %x is not above %x, drawn before the crash", run, lo, before)
		}
		before = hi

		// While the child holds the file, nobody else may use it.
		if s, err := tsa.OpenFileSerials(path, 5); err == nil {
			s.Close()
			t.Error("second open of a file in use: no error")
		} else if !strings.Contains(err.Error(), "in use") {
			t.Errorf("second open of a file in use: %v", err)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}
	s := openSerials(t, path, 5)
	if got := draw(t, s, 5, 10); slices.MinFunc(got, (*big.Int).Cmp).Cmp(before) <= 0 {
		t.Fatalf("after the crash: serial %x is not above %x", got[0], before)
	}
}

// TestFileSerialsCrashChild is the process TestFileSerialsCrash kills: it
// draws serials, prints the lowest and highest, and waits to be killed. Run
// on its own it does nothing.
func TestFileSerialsCrashChild(t *testing.T) {
	path := os.Getenv("PEC_TEST_SERIAL_FILE")
	if path == "" {
		return
	}
	s, err := tsa.OpenFileSerials(path, 5)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	got := draw(t, s, 5, tsa.SerialBlock+10)
	os.Stdout.WriteString(slices.MinFunc(got, (*big.Int).Cmp).Text(16) + " " + maxSerial(got).Text(16) + "\n")
	time.Sleep(time.Minute) // killed before this ends
	os.Exit(1)
}

func TestFileSerialsNodesNeverCollide(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Opened at the same instant, both counters start from the same clock
	// reading: only the node bits keep them apart.
	a := openSerials(t, filepath.Join(dir, "a"), 1)
	b := openSerials(t, filepath.Join(dir, "b"), 2)
	seen := make(map[string]bool)
	for _, s := range [][]*big.Int{draw(t, a, 1, 50_000), draw(t, b, 2, 50_000)} {
		for _, v := range s {
			k := string(v.Bytes())
			if seen[k] {
				t.Fatalf("serial %x drawn twice", v)
			}
			seen[k] = true
		}
	}
	c := openSerials(t, filepath.Join(dir, "c"), 65535)
	draw(t, c, 65535, 10) // the highest node ID still fits in 80 bits
}

func TestFileSerialsNodeID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "serials")
	s := openSerials(t, path, 3)
	s.Close()
	_, err := tsa.OpenFileSerials(path, 4)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "node 3") {
		t.Errorf("open with node 4 a file of node 3: %v, want an error naming the path and node 3", err)
	}
	for _, node := range []int{-1, 65536} {
		if s, err := tsa.OpenFileSerials(filepath.Join(dir, "other"), node); err == nil {
			s.Close()
			t.Errorf("node %d: no error", node)
		}
	}
	openSerials(t, path, 3) // the right node still opens it
}

func TestFileSerialsCorruptFile(t *testing.T) {
	t.Parallel()
	// A valid file as OpenFileSerials leaves it.
	valid := func(t *testing.T) (path string, data []byte) {
		path = filepath.Join(t.TempDir(), "serials")
		s := openSerials(t, path, 1)
		draw(t, s, 1, 10)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return path, data
	}
	tests := []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"short", func(b []byte) []byte { return b[:100] }},
		{"longer", func(b []byte) []byte { return append(b, 0) }},
		{"not a serial file", func(b []byte) []byte { return []byte(strings.Repeat("x", len(b))) }},
		{"both copies damaged", func(b []byte) []byte { b[9] ^= 1; b[4096+9] ^= 1; return b }},
		{"copies of different nodes", func(b []byte) []byte {
			// Rewrite the second copy, checksum and all, for node 2.
			binary.BigEndian.PutUint16(b[4096+6:], 2)
			binary.BigEndian.PutUint32(b[4096+20:], crc32c(b[4096:4096+20]))
			return b
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, data := valid(t)
			bad := tt.damage(slices.Clone(data))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := tsa.OpenFileSerials(path, 1)
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, _ := os.ReadFile(path)
			if !slices.Equal(after, bad) {
				t.Error("the corrupt file was changed")
			}
		})
	}
}

// TestFileSerialsTornWrite damages the copy a reservation would overwrite
// next (the one with the lower mark), as a crash during that write would:
// the other copy holds the mark, and serials stay above every one drawn.
func TestFileSerialsTornWrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "serials")
	s := openSerials(t, path, 1)
	before := maxSerial(draw(t, s, 1, 2*tsa.SerialBlock))
	s.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The layout is documented in serial.go: two 24-byte copies at 0 and
	// 4096, the mark at bytes 8-15 of each.
	older := 0
	if binary.BigEndian.Uint64(data[8:16]) > binary.BigEndian.Uint64(data[4096+8:4096+16]) {
		older = 4096
	}
	for i := older; i < older+24; i++ {
		data[i] = 0xa5
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openSerials(t, path, 1)
	if got := draw(t, s, 1, 1)[0]; got.Cmp(before) <= 0 {
		t.Fatalf("serial %x after a torn write is not above %x", got, before)
	}
}

// TestFileSerialsLostFile: even without its file, a node starts from the
// clock (microseconds), above the serials it drew a moment before.
func TestFileSerialsLostFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "serials")
	s := openSerials(t, path, 1)
	before := maxSerial(draw(t, s, 1, 100))
	s.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	s = openSerials(t, path, 1)
	if got := draw(t, s, 1, 1)[0]; got.Cmp(before) <= 0 {
		t.Fatalf("serial %x with a new file is not above %x", got, before)
	}
}

func TestFileSerialsCreatesPrivateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "tsa", "serials")
	openSerials(t, path, 0)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	// No temporary file is left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the serial file", len(entries))
	}
}

func BenchmarkNextSerial(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s := openSerials(b, filepath.Join(b.TempDir(), "serials"), 1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.NextSerial(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := openSerials(b, filepath.Join(b.TempDir(), "serials"), 1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.NextSerial(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// crc32c is the checksum of a serial-file record.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
