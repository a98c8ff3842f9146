package middleoffice

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// memPayload is a PayloadWriter into memory, and the Payload read back.
type memPayload struct {
	bytes.Buffer
	committed, aborted bool
}

func (m *memPayload) Commit() error { m.committed = true; return nil }
func (m *memPayload) Abort() error  { m.aborted = true; return nil }

var fuzzKey = bytes.Repeat([]byte{0x42}, 32)

const (
	fuzzExchange = "x1"
	fuzzName     = "document-0.p7m"
)

// seal is plain encrypted at rest under key for exchange x1's name.
func sealAtRest(t testing.TB, key, plain []byte, name string) []byte {
	t.Helper()
	m := new(memPayload)
	w, err := newSegmentWriter(m, key, fuzzExchange, name)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes, across segment boundaries.
	for rest := plain; len(rest) > 0; {
		n := min(len(rest), 1+rand.IntN(3*segmentSize/2))
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(); err != nil || !m.committed {
		t.Fatalf("Commit: %v", err)
	}
	return m.Bytes()
}

func openAtRest(data, key []byte, exchange, name string) (*segmentReader, error) {
	return openSegments(bytes.NewReader(data), int64(len(data)), key, exchange, name)
}

func readAllAtRest(data, key []byte, exchange, name string) ([]byte, error) {
	r, err := openAtRest(data, key, exchange, name)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(r)
	if err == nil && int64(len(out)) != r.Size() {
		return nil, fmt.Errorf("read %d bytes, Size %d", len(out), r.Size())
	}
	return out, err
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>16)
	}
	return b
}

// TestAtRestRoundTrip: payloads of every size around the segment size
// read back whole, and at random offsets, the same; the file holds no
// run of the plaintext.
func TestAtRestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 100, segmentSize - 1, segmentSize, segmentSize + 1, 2 * segmentSize, 3*segmentSize + 12345} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := pattern(n)
			data := sealAtRest(t, fuzzKey, plain, fuzzName)
			if want := atRestHeader + n + segmentTag*max(1, (n+segmentSize-1)/segmentSize); len(data) != want {
				t.Errorf("%d bytes at rest, want %d", len(data), want)
			}
			if n >= 32 && bytes.Contains(data, plain[n/2:n/2+16]) {
				t.Error("the file holds plaintext")
			}
			got, err := readAllAtRest(data, fuzzKey, fuzzExchange, fuzzName)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("read back %d bytes, %v", len(got), err)
			}
			r, _ := openAtRest(data, fuzzKey, fuzzExchange, fuzzName)
			for range 200 {
				off := rand.Int64N(int64(n) + 10)
				buf := make([]byte, rand.IntN(2*segmentSize+3))
				k, err := r.ReadAt(buf, off)
				want := plain[min(off, int64(n)):min(off+int64(len(buf)), int64(n))]
				if k != len(want) || !bytes.Equal(buf[:k], want) {
					t.Fatalf("ReadAt(%d bytes, %d) = %d, %v", len(buf), off, k, err)
				}
				if (k < len(buf)) != (err == io.EOF) {
					t.Fatalf("ReadAt(%d bytes, %d) = %d, %v: io.EOF exactly when short", len(buf), off, k, err)
				}
			}
		})
	}
}

// TestAtRestConcurrentReadAt: ReadAt is safe for concurrent use, with a
// sequential Read beside (the race detector watches).
func TestAtRestConcurrentReadAt(t *testing.T) {
	t.Parallel()
	plain := pattern(5*segmentSize + 7)
	data := sealAtRest(t, fuzzKey, plain, fuzzName)
	r, err := openAtRest(data, fuzzKey, fuzzExchange, fuzzName)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 1000)
			for i := range 100 {
				off := int64((g*100+i)*4099) % int64(len(plain)-len(buf))
				if _, err := r.ReadAt(buf, off); err != nil || !bytes.Equal(buf, plain[off:off+int64(len(buf))]) {
					t.Errorf("ReadAt(%d): %v", off, err)
					return
				}
			}
		})
	}
	got, err := io.ReadAll(r)
	wg.Wait()
	if err != nil || !bytes.Equal(got, plain) {
		t.Errorf("Read beside: %d bytes, %v", len(got), err)
	}
}

// TestAtRestTamper: every change to a file at rest is ErrPayloadDamaged,
// at open or at the read of the segment changed: a flipped bit anywhere,
// a cut anywhere (at segment boundaries too), segments swapped or
// dropped, bytes appended, the file of another name or exchange, another
// key.
func TestAtRestTamper(t *testing.T) {
	t.Parallel()
	plain := pattern(3*segmentSize + 500)
	data := sealAtRest(t, fuzzKey, plain, fuzzName)
	seg := func(i int) []byte {
		off := atRestHeader + i*segmentFull
		return data[off:min(off+segmentFull, len(data))]
	}
	cases := map[string]func() ([]byte, []byte, string, string){}
	for _, at := range []int{0, 7, 8, 23, atRestHeader, atRestHeader + 100, atRestHeader + segmentFull - 1, atRestHeader + 2*segmentFull + 3, len(data) - 1} {
		cases[fmt.Sprintf("flip byte %d", at)] = func() ([]byte, []byte, string, string) {
			d := bytes.Clone(data)
			d[at] ^= 0x20
			return d, fuzzKey, fuzzExchange, fuzzName
		}
	}
	for _, n := range []int{0, 5, atRestHeader, atRestHeader + 15, atRestHeader + segmentFull, atRestHeader + segmentFull + 16, atRestHeader + 2*segmentFull, atRestHeader + 3*segmentFull, len(data) - 1} {
		cases[fmt.Sprintf("cut at %d", n)] = func() ([]byte, []byte, string, string) {
			return bytes.Clone(data[:n]), fuzzKey, fuzzExchange, fuzzName
		}
	}
	cases["segments 0 and 1 swapped"] = func() ([]byte, []byte, string, string) {
		d := append(bytes.Clone(data[:atRestHeader]), seg(1)...)
		d = append(d, seg(0)...)
		d = append(d, seg(2)...)
		return append(d, seg(3)...), fuzzKey, fuzzExchange, fuzzName
	}
	cases["segment 1 dropped"] = func() ([]byte, []byte, string, string) {
		d := append(bytes.Clone(data[:atRestHeader]), seg(0)...)
		d = append(d, seg(2)...)
		return append(d, seg(3)...), fuzzKey, fuzzExchange, fuzzName
	}
	cases["the last segment first"] = func() ([]byte, []byte, string, string) {
		d := append(bytes.Clone(data[:atRestHeader]), seg(3)...)
		return d, fuzzKey, fuzzExchange, fuzzName
	}
	cases["a byte appended"] = func() ([]byte, []byte, string, string) {
		return append(bytes.Clone(data), 0), fuzzKey, fuzzExchange, fuzzName
	}
	cases["an empty segment appended"] = func() ([]byte, []byte, string, string) {
		d := sealAtRest(t, fuzzKey, pattern(segmentSize), fuzzName)
		return append(d, make([]byte, segmentTag)...), fuzzKey, fuzzExchange, fuzzName
	}
	cases["another payload's name"] = func() ([]byte, []byte, string, string) {
		return data, fuzzKey, fuzzExchange, "seal.p7m"
	}
	cases["another exchange's"] = func() ([]byte, []byte, string, string) {
		return data, fuzzKey, "x2", fuzzName
	}
	cases["another key"] = func() ([]byte, []byte, string, string) {
		return data, bytes.Repeat([]byte{0x43}, 32), fuzzExchange, fuzzName
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			d, key, exchange, pname := mk()
			got, err := readAllAtRest(d, key, exchange, pname)
			if !errors.Is(err, ErrPayloadDamaged) {
				t.Errorf("read %d bytes, %v; want ErrPayloadDamaged", len(got), err)
			}
		})
	}
	// The pristine file, for contrast.
	if got, err := readAllAtRest(data, fuzzKey, fuzzExchange, fuzzName); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the file itself: %v", err)
	}
}

var writeCorpus = flag.Bool("write-atrest-corpus", false, "write testdata/fuzz/FuzzAtRestOpen anew")

// TestAtRestCorpus writes, with -write-atrest-corpus, the seed corpus of
// FuzzAtRestOpen: valid files under fuzzKey (random salts: the bytes
// differ at each run), and damaged ones.
func TestAtRestCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("without -write-atrest-corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzAtRestOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	two := sealAtRest(t, fuzzKey, pattern(segmentSize+10), fuzzName)
	for name, data := range map[string][]byte{
		"empty-payload":  sealAtRest(t, fuzzKey, nil, fuzzName),
		"short":          sealAtRest(t, fuzzKey, []byte("envelope"), fuzzName),
		"two-segments":   two,
		"cut-at-segment": two[:atRestHeader+segmentFull],
		"header-only":    two[:atRestHeader],
		"bad-magic":      append([]byte("PEC-AR2\n"), two[8:64]...),
		"nothing":        {},
	} {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzAtRestOpen: any bytes opened as a payload at rest are
// ErrPayloadDamaged or a plaintext of exactly Size bytes, the same
// through Read and ReadAt; never a panic.
func FuzzAtRestOpen(f *testing.F) {
	f.Add(sealAtRest(f, fuzzKey, []byte("seed"), fuzzName))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := openAtRest(data, fuzzKey, fuzzExchange, fuzzName)
		if err != nil {
			if !errors.Is(err, ErrPayloadDamaged) {
				t.Fatalf("open: %v, not ErrPayloadDamaged", err)
			}
			return
		}
		all, err := io.ReadAll(r)
		if err != nil {
			if !errors.Is(err, ErrPayloadDamaged) {
				t.Fatalf("read: %v, not ErrPayloadDamaged", err)
			}
			return
		}
		if int64(len(all)) != r.Size() {
			t.Fatalf("read %d bytes, Size %d", len(all), r.Size())
		}
		at := make([]byte, len(all))
		if n, err := r.ReadAt(at, 0); n != len(all) || (err != nil && err != io.EOF) || !bytes.Equal(at, all) {
			t.Fatalf("ReadAt: %d, %v", n, err)
		}
	})
}

// FuzzAtRestRoundTrip: what is written reads back; and the file changed
// at one place (a byte flipped, or cut short) never reads back — it is
// ErrPayloadDamaged.
func FuzzAtRestRoundTrip(f *testing.F) {
	f.Add([]byte("envelope"), uint32(0), byte(0), false)
	f.Add(pattern(segmentSize+1), uint32(atRestHeader+segmentFull), byte(0), true)
	f.Add(pattern(segmentSize), uint32(30), byte(1), false)
	f.Fuzz(func(t *testing.T, plain []byte, at uint32, flip byte, cut bool) {
		data := sealAtRest(t, fuzzKey, plain, fuzzName)
		got, err := readAllAtRest(data, fuzzKey, fuzzExchange, fuzzName)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip: %d bytes of %d, %v", len(got), len(plain), err)
		}
		i := int(at % uint32(len(data)))
		switch {
		case cut:
			data = data[:i]
		case flip != 0:
			data[i] ^= flip
		default:
			return
		}
		if got, err := readAllAtRest(data, fuzzKey, fuzzExchange, fuzzName); !errors.Is(err, ErrPayloadDamaged) {
			t.Fatalf("changed at %d (cut %v, flip %#x): read %d bytes, %v", i, cut, flip, len(got), err)
		}
	})
}

// discardPayload is a PayloadWriter that keeps nothing.
type discardPayload struct{ n int64 }

func (d *discardPayload) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }
func (d *discardPayload) Commit() error               { return nil }
func (d *discardPayload) Abort() error                { return nil }

// BenchmarkAtRest: the layer at rest, writing and reading, in process
// (a diagnosis, not a user's figure), beside one AES-256-GCM pass over
// the same bytes: of-raw-gcm is the ratio of the raw pass's time to ours.
func BenchmarkAtRest(b *testing.B) {
	const size = 16 << 20
	plain := pattern(size)
	raw := func() time.Duration {
		aead, _ := segmentAEAD(fuzzKey, make([]byte, atRestSaltLen), fuzzExchange, fuzzName)
		var nonce [12]byte
		out := make([]byte, 0, segmentFull)
		start := time.Now()
		for off := 0; off < size; off += segmentSize {
			out = aead.Seal(out[:0], nonce[:], plain[off:off+segmentSize], nil)
		}
		return time.Since(start)
	}
	b.Run("write", func(b *testing.B) {
		b.SetBytes(size)
		var ours time.Duration
		for b.Loop() {
			start := time.Now()
			w, _ := newSegmentWriter(&discardPayload{}, fuzzKey, fuzzExchange, fuzzName)
			w.Write(plain)
			if err := w.Commit(); err != nil {
				b.Fatal(err)
			}
			ours += time.Since(start)
		}
		b.ReportMetric(float64(raw())*float64(b.N)/float64(ours), "of-raw-gcm")
	})
	b.Run("read", func(b *testing.B) {
		data := sealAtRest(b, fuzzKey, plain, fuzzName)
		b.SetBytes(size)
		buf := make([]byte, 32<<10)
		var ours time.Duration
		for b.Loop() {
			start := time.Now()
			r, err := openAtRest(data, fuzzKey, fuzzExchange, fuzzName)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
				b.Fatal(err)
			}
			ours += time.Since(start)
		}
		b.ReportMetric(float64(raw())*float64(b.N)/float64(ours), "of-raw-gcm")
	})
}
