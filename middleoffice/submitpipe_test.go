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
