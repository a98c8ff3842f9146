package middleoffice

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestPipeWriter: what is written comes out in order, whatever the sizes
// of the writes (larger and smaller than a buffer); a failure of the
// writer behind is returned by a later Write or by Close, and Close
// returns only once the goroutine is done.
func TestPipeWriter(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"nothing", nil},
		{"one byte", []int{1}},
		{"one buffer", []int{pipeBuffer}},
		{"larger than all the buffers at once", []int{pipeBuffers*pipeBuffer + 17}},
		{"random", func() []int {
			var s []int
			for range 300 {
				s = append(s, rng.IntN(3*pipeBuffer))
			}
			return s
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want, got bytes.Buffer
			p := newPipeWriter(&got)
			for i, n := range tc.sizes {
				b := make([]byte, n)
				for j := range b {
					b[j] = byte(i + j*31)
				}
				want.Write(b)
				if k, err := p.Write(b); k != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
				}
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Errorf("%d bytes out, %d in, or not in order", got.Len(), want.Len())
			}
			if err := p.Close(); err != nil {
				t.Errorf("a second Close: %v", err)
			}
			if _, err := p.Write([]byte("x")); err == nil {
				t.Error("a Write after Close succeeded")
			}
		})
	}

	t.Run("the writer fails", func(t *testing.T) {
		full := errors.New("no space left on device")
		w := &failingWriter{after: 3 * pipeBuffer, err: full}
		p := newPipeWriter(w)
		b := make([]byte, pipeBuffer)
		var werr error
		for range 100 {
			if _, werr = p.Write(b); werr != nil {
				break
			}
		}
		cerr := p.Close()
		if !errors.Is(cerr, full) || (werr != nil && !errors.Is(werr, full)) {
			t.Errorf("Write: %v, Close: %v; want %v", werr, cerr, full)
		}
		if w.written > 3*pipeBuffer {
			t.Errorf("%d bytes written after the failure", w.written-3*pipeBuffer)
		}
	})
}

type failingWriter struct {
	after, written int
	err            error
	failed         bool
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.failed {
		return 0, errors.New("written to after a failure")
	}
	if f.written+len(p) > f.after {
		f.failed = true
		return 0, f.err
	}
	f.written += len(p)
	return len(p), nil
}

var _ io.WriteCloser = (*pipeWriter)(nil)

// pieceWriter keeps what it is given and the size of each piece, and
// changes the piece after (as the envelope's encryption in place does).
type pieceWriter struct {
	got    bytes.Buffer
	pieces []int
}

func (w *pieceWriter) Write(p []byte) (int, error) {
	w.got.Write(p)
	w.pieces = append(w.pieces, len(p))
	clear(p)
	return len(p), nil
}

// TestPipeReadFrom: ReadFrom hands the reader's bytes over in order, in
// whole buffers but the last, however short the reads (a multipart part
// gives 4 KiB at most); a reader's failure is returned, and so is the
// writer's, which stops the reading.
func TestPipeReadFrom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, pipeBuffer, pipeBuffer + 1, 7*pipeBuffer + 333} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i*7 + i>>16)
		}
		w := &pieceWriter{}
		p := newPipeWriter(w)
		r := &shortReader{r: bytes.NewReader(want), rng: rng}
		if k, err := p.ReadFrom(r); k != int64(n) || err != nil {
			t.Fatalf("%d bytes: ReadFrom = %d, %v", n, k, err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.got.Bytes(), want) {
			t.Errorf("%d bytes: %d out, or not in order", n, w.got.Len())
		}
		for i, k := range w.pieces {
			if k != pipeBuffer && i != len(w.pieces)-1 {
				t.Errorf("%d bytes: piece %d of %d holds %d bytes", n, i, len(w.pieces), k)
			}
		}
	}

	t.Run("the reader fails", func(t *testing.T) {
		p := newPipeWriter(&pieceWriter{})
		broken := errors.New("connection reset")
		_, err := p.ReadFrom(io.MultiReader(bytes.NewReader(make([]byte, 3*pipeBuffer/2)), &errAfter{err: broken}))
		if !errors.Is(err, broken) {
			t.Errorf("ReadFrom: %v; want %v", err, broken)
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Run("the writer fails", func(t *testing.T) {
		full := errors.New("no space left on device")
		p := newPipeWriter(&failingWriter{after: 2 * pipeBuffer, err: full})
		src := &countingReader{}
		_, rerr := p.ReadFrom(io.LimitReader(src, 1<<30))
		cerr := p.Close()
		if !errors.Is(rerr, full) || !errors.Is(cerr, full) {
			t.Errorf("ReadFrom: %v, Close: %v; want %v", rerr, cerr, full)
		}
		if src.n > 16*pipeBuffer {
			t.Errorf("%d bytes read after the writer failed at %d", src.n, 2*pipeBuffer)
		}
	})
}

type shortReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (s *shortReader) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), 1+s.rng.IntN(4096))])
}

type errAfter struct{ err error }

func (e *errAfter) Read([]byte) (int, error) { return 0, e.err }

type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) { c.n += len(p); return len(p), nil }
