package middleoffice

import (
	"errors"
	"fmt"
	"os"
)

// A large payload file is written with direct I/O where the system has
// it (O_DIRECT on Linux, payloadfile_linux.go): the bytes go from the
// writer's buffer to the disk without a copy into the page cache, which
// costs the node about a sixth of the CPU of a buffered write and of the
// writeback after it (2 MiB writes: 0.07 against 0.4 ns a byte on the
// 2-core machine of the README's benchmark), and a 1 GiB dossier does not
// fill the page cache with dirty pages. Durability is unchanged: Commit
// still fsyncs the file (its size and extents), renames it into place
// and fsyncs its directory; direct I/O only means the data is on the
// disk sooner.
//
// Direct I/O wants the buffer's address, the file offset and the length
// to be multiples of the device's logical block: the writer fills aligned
// buffers of directBuffer bytes and writes each whole, one while it fills
// the other; the last, shorter one is padded with zeros to the block and
// the file cut back to its size (ftruncate) before the fsync. A file
// system that refuses direct I/O (at open or at the first write) gets
// buffered writes, as before.

const (
	// directAlign is the alignment of direct I/O: 4096 covers logical
	// blocks of 512 and 4096 bytes.
	directAlign = 4096
	// directBuffer is the size of one write: at 2 MiB the system call's
	// cost is lost in the copy (256 KiB writes cost 3.5 times as much CPU).
	directBuffer = 2 << 20
	// directBuffers bounds the node's direct I/O buffers (48 MiB): a
	// large payload being written takes two while half of them are free
	// (one written while the other fills), else one (written in turn),
	// else none, and then writes through the page cache.
	directBuffers = 24
)

var (
	// directTokens holds one token per buffer that may be handed out.
	directTokens = func() chan struct{} {
		c := make(chan struct{}, directBuffers)
		for range directBuffers {
			c <- struct{}{}
		}
		return c
	}()
	// directFree holds the buffers made and given back. They are mapped
	// outside the Go heap (allocDirect), so that they do not raise the
	// garbage collector's goal (GOGC 400: five times the live heap), and
	// kept for the next payloads: directBuffers at most are ever made.
	directFree = make(chan []byte, directBuffers)
)

// takeDirectBuffer returns an aligned buffer of directBuffer bytes, or
// nil when the node has handed out directBuffers already.
func takeDirectBuffer() []byte {
	select {
	case <-directTokens:
	default:
		return nil
	}
	select {
	case b := <-directFree:
		return b[:0]
	default:
	}
	b := allocDirect(directBuffer)
	if b == nil {
		directTokens <- struct{}{}
		return nil
	}
	return b[:0]
}

func putDirectBuffer(b []byte) {
	if b == nil {
		return
	}
	directFree <- b[:0]
	directTokens <- struct{}{}
}

// directFile writes a new file, from offset 0, with direct I/O. It is for
// one goroutine (plus its own, which writes the buffer filled before).
type directFile struct {
	f        *os.File
	bufs     [2][]byte // 1 or 2 buffers; bufs[cur] is filling
	cur      int
	off      int64      // file offset of bufs[cur][0]
	inflight chan error // the write of the other buffer; nil: none
	err      error
	done     bool
}

// newDirectFile switches f, a new empty file, to direct I/O; nil when the
// system or the file system cannot, or when no buffer is free.
func newDirectFile(f *os.File) *directFile {
	b := takeDirectBuffer()
	if b == nil {
		return nil
	}
	if !setDirect(f, true) {
		putDirectBuffer(b)
		return nil
	}
	d := &directFile{f: f}
	d.bufs[0] = b
	if len(directTokens) >= directBuffers/2 {
		d.bufs[1] = takeDirectBuffer() // nil: one buffer, written in turn
	}
	return d
}

// Write copies p into the buffers, writing each as it fills. After a
// failure every call returns it.
func (d *directFile) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, errors.New("middleoffice: direct file finished already")
	}
	n := 0
	for len(p) > 0 {
		b := d.bufs[d.cur]
		c := copy(b[len(b):cap(b)], p)
		d.bufs[d.cur] = b[:len(b)+c]
		p, n = p[c:], n+c
		if len(d.bufs[d.cur]) == directBuffer {
			if err := d.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush writes the buffer being filled (a whole one) and moves to the
// other, once the write of the other is done.
func (d *directFile) flush() error {
	if err := d.wait(); err != nil {
		return err
	}
	b, off := d.bufs[d.cur], d.off
	d.off += int64(len(b))
	if d.bufs[1] == nil {
		// One buffer: written before it is filled again.
		if err := writeFull(d.f, b, off); err != nil {
			d.err = err
			return err
		}
		d.bufs[0] = b[:0]
		return nil
	}
	ch := make(chan error, 1)
	d.inflight = ch
	go func() { ch <- writeFull(d.f, b, off) }()
	d.cur = 1 - d.cur
	d.bufs[d.cur] = d.bufs[d.cur][:0]
	return nil
}

// wait waits for the write in flight.
func (d *directFile) wait() error {
	if d.inflight == nil {
		return nil
	}
	err := <-d.inflight
	d.inflight = nil
	if err != nil && d.err == nil {
		d.err = err
	}
	return d.err
}

// finish writes what is buffered, zeros up to the block, and cuts the
// file back to size bytes, the bytes written. The file is not synced.
// The buffers go back to the node's pool.
func (d *directFile) finish(size int64) error {
	if d.done {
		return errors.New("middleoffice: direct file finished already")
	}
	defer d.release()
	if err := d.wait(); err != nil {
		return err
	}
	if b := d.bufs[d.cur]; len(b) > 0 {
		padded := (len(b) + directAlign - 1) / directAlign * directAlign
		tail := b[:padded]
		clear(tail[len(b):])
		if err := writeFull(d.f, tail, d.off); err != nil {
			d.err = err
			return err
		}
	}
	if err := d.f.Truncate(size); err != nil {
		d.err = fmt.Errorf("middleoffice: payload: %w", err)
		return d.err
	}
	return nil
}

// release gives the buffers back, once no write uses them.
func (d *directFile) release() {
	if d.done {
		return
	}
	d.done = true
	if d.inflight != nil {
		<-d.inflight
		d.inflight = nil
	}
	putDirectBuffer(d.bufs[0])
	putDirectBuffer(d.bufs[1])
	d.bufs = [2][]byte{}
}

// writeFull writes b at off, retrying short writes. A file system that
// refuses a direct write (EINVAL: it cannot do it after all) has it, and
// every later one, written through the page cache instead.
func writeFull(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := f.WriteAt(b, off)
		if err != nil {
			if directRefused(err) && setDirect(f, false) {
				continue
			}
			return fmt.Errorf("middleoffice: payload: %w", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
