package middleoffice

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// directContent is n bytes that differ at every block.
func directContent(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// writeDirect writes content to a new file of dir through a directFile,
// in writes of random sizes, and returns the file's bytes.
func writeDirect(t *testing.T, dir string, content []byte, rng *rand.Rand) (got []byte, direct bool, buffers int) {
	t.Helper()
	f, err := os.CreateTemp(dir, "direct")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := newDirectFile(f)
	if d == nil {
		t.Fatal("no direct file with every buffer free")
	}
	direct = isDirect(f)
	buffers = 1
	if d.bufs[1] != nil {
		buffers = 2
	}
	for p := content; len(p) > 0; {
		k := min(len(p), 1+rng.IntN(3*directBuffer/2))
		if n, err := d.Write(p[:k]); n != k || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", k, n, err)
		}
		p = p[k:]
	}
	if err := d.finish(int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return got, direct, buffers
}

// TestDirectFile: a file written with direct I/O holds exactly the bytes
// written, whatever their length around the block and the buffer sizes
// (the last buffer padded, then the file cut back), with two buffers or
// with one; the buffers all go back to the node's pool.
func TestDirectFile(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{1, directAlign - 1, directAlign, directAlign + 1, 65 << 10,
		directBuffer - 1, directBuffer, directBuffer + 1, 2 * directBuffer, 3*directBuffer + 12345}
	// Two buffers while half the node's are free; one when fewer are.
	for _, tc := range []struct{ held, buffers int }{{0, 2}, {directBuffers/2 - 1, 2}, {directBuffers / 2, 1}, {directBuffers - 1, 1}} {
		buffers := tc.buffers
		for _, n := range sizes {
			held := holdDirectBuffers(t, tc.held)
			content := directContent(n)
			got, direct, nbuf := writeDirect(t, dir, content, rng)
			if !bytes.Equal(got, content) {
				t.Errorf("%d buffers, %d bytes: the file holds %d bytes, not those written", buffers, n, len(got))
			}
			if nbuf != buffers {
				t.Errorf("%d of the node's buffers in use: the file took %d, want %d", tc.held, nbuf, buffers)
			}
			if n == sizes[0] {
				t.Logf("%d buffers: direct I/O %v on %s", buffers, direct, dir)
			}
			held()
		}
	}
	if free := len(directTokens); free != directBuffers {
		t.Errorf("%d of %d buffers free after the writes", free, directBuffers)
	}
}

// holdDirectBuffers takes n buffers' tokens from the pool until the
// returned function is called.
func holdDirectBuffers(t *testing.T, n int) func() {
	t.Helper()
	for range n {
		<-directTokens
	}
	return func() {
		for range n {
			directTokens <- struct{}{}
		}
	}
}

// TestDirectFileBounded: with every buffer of the node in use, a new
// payload file writes through the page cache (no direct file), and the
// payload is whole all the same.
func TestDirectFileBounded(t *testing.T) {
	held := holdDirectBuffers(t, directBuffers)
	defer held()
	f, err := os.CreateTemp(t.TempDir(), "direct")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d := newDirectFile(f); d != nil {
		t.Fatal("a direct file without a free buffer")
	}
	if isDirect(f) {
		t.Error("the file was left with O_DIRECT")
	}

	s := openTestBolt(t)
	content := directContent(3*directBuffer + 5)
	if got := roundTrip(t, s, content); !bytes.Equal(got, content) {
		t.Errorf("the payload written without direct I/O reads back %d bytes, not those written", len(got))
	}
}

// TestDirectRefused: a direct write that the kernel refuses (EINVAL: here
// a buffer out of alignment) is written through the page cache instead,
// and so is every later one.
func TestDirectRefused(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "direct")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !setDirect(f, true) {
		t.Logf("no direct I/O on this file system: the refusal is not exercised")
	}
	content := directContent(3*directAlign + 1)
	if err := writeFull(f, content[1:], 0); err != nil { // off by one byte: unaligned
		t.Fatal(err)
	}
	if isDirect(f) {
		t.Error("O_DIRECT kept after the kernel refused a write")
	}
	if got, _ := os.ReadFile(f.Name()); !bytes.Equal(got, content[1:]) {
		t.Errorf("the file holds %d bytes, not those written", len(got))
	}
}

// TestDirectFileFails: a failure of a write (the file closed under the
// writer) is returned by a later Write or by finish, never lost, and the
// buffers go back to the pool.
func TestDirectFileFails(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "direct")
	if err != nil {
		t.Fatal(err)
	}
	d := newDirectFile(f)
	if d == nil {
		t.Fatal("no direct file with every buffer free")
	}
	chunk := directContent(directBuffer)
	if _, err := d.Write(chunk); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var werr error
	for range 4 {
		if _, werr = d.Write(chunk); werr != nil {
			break
		}
	}
	ferr := d.finish(5 * directBuffer)
	if werr == nil && ferr == nil {
		t.Error("writes to a closed file succeeded")
	}
	if free := len(directTokens); free != directBuffers {
		t.Errorf("%d of %d buffers free after the failure", free, directBuffers)
	}
}

// TestLargePayloadDirect: the embedded store's large payloads (written
// with direct I/O where the file system takes it) read back whole at
// sizes around the buffer's, and an aborted one leaves no file.
func TestLargePayloadDirect(t *testing.T) {
	s := openTestBolt(t)
	for _, n := range []int{inlinePayloadMax + 1, directBuffer - 7, directBuffer + 4097, 2*directBuffer + 65552} {
		content := directContent(n)
		if got := roundTrip(t, s, content); !bytes.Equal(got, content) {
			t.Errorf("%d bytes: read back %d bytes, not those written", n, len(got))
		}
	}
	ctx := context.Background()
	w, err := s.CreatePayload(ctx, testExchangeID, "aborted.p7m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(directContent(directBuffer + 1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(s.payloads, testExchangeID, "*aborted*"))
	if len(left) > 0 {
		t.Errorf("an aborted payload left %v", left)
	}
	if free := len(directTokens); free != directBuffers {
		t.Errorf("%d of %d buffers free after the payloads", free, directBuffers)
	}
}

const testExchangeID = "x-20261201-direct"

func openTestBolt(t *testing.T) *BoltExchangeStore {
	t.Helper()
	s, err := OpenBoltExchanges(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var roundTrips int

// roundTrip writes content as a payload of s, commits it and reads it
// back.
func roundTrip(t *testing.T, s *BoltExchangeStore, content []byte) []byte {
	t.Helper()
	ctx := context.Background()
	roundTrips++
	name := "doc-" + string(rune('a'+roundTrips%26)) + ".p7m"
	w, err := s.CreatePayload(ctx, testExchangeID, name)
	if err != nil {
		t.Fatal(err)
	}
	for p := content; len(p) > 0; {
		k := min(len(p), 65552)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPayload(ctx, testExchangeID, name)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Size() != int64(len(content)) {
		t.Errorf("Size %d, %d written", p.Size(), len(content))
	}
	got, err := io.ReadAll(io.NewSectionReader(p, 0, p.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return got
}
