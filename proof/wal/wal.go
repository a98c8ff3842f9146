// Package wal is a write-ahead log of byte records in segment files: the
// durable first step of the embedded evidence store. A [Log.Write] puts a
// group of records in one checksummed frame with one write and one
// fdatasync; [Open] reads every frame back after a crash, cutting off a
// frame torn by the crash (it was never acknowledged) and refusing, with
// [ErrCorrupt], damage anywhere else.
//
// # Format
//
// A segment is the file DIR/NNNNNNNNNNNNNNNN.wal (16 hex digits, ascending):
// a 16-byte header, "PECWAL01" then the segment number (big-endian
// uint64), then frames, then zeros up to the file's allocated size. A
// frame is
//
//	magic "PWF1" (4 bytes) | payload length n (uint32) | CRC-32C of the
//	length and the payload (uint32) | payload (n bytes)
//
// and its payload is a sequence of records, each a uint32 length and its
// bytes. All integers are big-endian. The file is kept zero-filled ahead of
// the data (written and synced off the writer's path), so that a write
// overwrites allocated blocks and fdatasync has no metadata to flush.
//
// A log directory has one writer, which holds an exclusive flock on
// DIR/LOCK; readers (ReadOnly) take none.
package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"pec/internal/filelock"
)

const (
	segmentMagic = "PECWAL01"
	headerSize   = 16
	frameMagic   = "PWF1"
	frameHeader  = 12
	// MaxRecord bounds one record, MaxFrame one frame's payload.
	MaxRecord = 4 << 20
	MaxFrame  = 64 << 20
)

// Errors.
var (
	// ErrCorrupt: a segment is damaged where a crash cannot have damaged
	// it (a bad frame followed by good ones, a bad header, a bad record
	// inside a checksummed frame): acknowledged records may be lost.
	ErrCorrupt = errors.New("wal: corrupt segment")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("wal: closed")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune Open; the zero value opens for writing with 64 MiB
// segments.
type Options struct {
	ReadOnly    bool
	SegmentSize int64 // a segment is closed once it holds this much; 0: 64 MiB
	Chunk       int64 // how far ahead of the data a segment is zero-filled; 0: 8 MiB
}

// Pos is where a record was read or written.
type Pos struct {
	Segment uint64
	Offset  int64 // of its frame
}

// Log appends frames to the newest segment. Write is for one goroutine at
// a time; RemoveBefore and Close may be called from any.
type Log struct {
	dir     string
	opts    Options
	lock    *os.File
	mu      sync.Mutex // guards segs, cur, closed, err
	segs    []uint64   // segment numbers on disk, ascending
	cur     *segment   // the segment written; nil when read-only
	closed  bool
	err     error // sticky write failure
	buf     []byte
	allocWG sync.WaitGroup
}

type segment struct {
	num  uint64
	f    *os.File
	end  int64 // where the next frame goes
	size int64 // allocated (zero-filled) size

	allocMu   sync.Mutex
	allocated int64 // zero-filled and synced up to here
	extending bool
}

func segmentName(n uint64) string { return fmt.Sprintf("%016x.wal", n) }

// Open opens the log in dir (creating it unless read-only) and calls fn for
// every record, oldest first; fn must not retain data. A torn frame at the
// end of the newest segment is cut off; other damage is ErrCorrupt.
func Open(dir string, opts Options, fn func(pos Pos, data []byte) error) (*Log, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 8 << 20
	}
	l := &Log{dir: dir, opts: opts}
	if opts.ReadOnly {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return l, nil // nothing written yet
		}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("wal: %w", err)
		}
		lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("wal: %w", err)
		}
		if err := filelock.Lock(lock, "wal: evidence log"); err != nil {
			lock.Close()
			return nil, err
		}
		l.lock = lock
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		l.closeLock()
		return nil, fmt.Errorf("wal: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".wal") || len(name) != 20 {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ".wal"), 16, 64)
		if err != nil {
			continue
		}
		l.segs = append(l.segs, n)
	}
	slices.Sort(l.segs)
	for i, n := range l.segs {
		last := i == len(l.segs)-1
		end, size, err := l.read(n, last, fn)
		if err != nil {
			l.closeLock()
			return nil, err
		}
		if last && !opts.ReadOnly {
			f, err := os.OpenFile(filepath.Join(dir, segmentName(n)), os.O_RDWR, 0)
			if err != nil {
				l.closeLock()
				return nil, fmt.Errorf("wal: %w", err)
			}
			l.cur = &segment{num: n, f: f, end: end, size: size, allocated: size}
		}
	}
	if !opts.ReadOnly && l.cur == nil {
		if err := l.newSegment(1); err != nil {
			l.closeLock()
			return nil, err
		}
	}
	return l, nil
}

func (l *Log) closeLock() {
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
}

// read reads segment n; it returns where its data ends and its size. When
// the last segment has a torn frame, writable logs zero it out.
func (l *Log) read(n uint64, last bool, fn func(Pos, []byte) error) (end, size int64, err error) {
	path := filepath.Join(l.dir, segmentName(n))
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("wal: %w", err)
	}
	corrupt := func(off int64, what string) error {
		return fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, path, off, what)
	}
	if len(data) < headerSize || string(data[:8]) != segmentMagic || binary.BigEndian.Uint64(data[8:16]) != n {
		if last && len(data) < headerSize {
			// Created, not yet written: a crash during creation.
			return headerSize, int64(len(data)), l.repair(path, func(f *os.File) error {
				_, err := f.WriteAt(header(n), 0)
				return err
			})
		}
		return 0, 0, corrupt(0, "bad segment header")
	}
	off := int64(headerSize)
	for {
		rest := data[off:]
		if len(rest) < frameHeader || allZero(rest[:frameHeader]) {
			// The end of the data: zeros, or too short to hold a frame.
			if !allZero(rest) {
				if last {
					return off, int64(len(data)), l.repair(path, func(f *os.File) error { return writeZeros(f, off, int64(len(data))) })
				}
				return 0, 0, corrupt(off, "bytes after the last frame")
			}
			return off, int64(len(data)), nil
		}
		payload, ok := frameAt(rest)
		if !ok {
			// A torn frame can only be the last write of the newest
			// segment, with nothing valid after it.
			if !last {
				return 0, 0, corrupt(off, "bad frame")
			}
			if next := findFrame(rest[1:]); next >= 0 {
				return 0, 0, corrupt(off, fmt.Sprintf("bad frame followed by a good one at offset %d", off+1+int64(next)))
			}
			return off, int64(len(data)), l.repair(path, func(f *os.File) error { return writeZeros(f, off, int64(len(data))) })
		}
		for p := payload; len(p) > 0; {
			if len(p) < 4 {
				return 0, 0, corrupt(off, "truncated record in a checksummed frame")
			}
			rn := binary.BigEndian.Uint32(p)
			if rn > MaxRecord || int64(rn) > int64(len(p)-4) {
				return 0, 0, corrupt(off, "bad record length in a checksummed frame")
			}
			if err := fn(Pos{Segment: n, Offset: off}, p[4:4+rn]); err != nil {
				return 0, 0, err
			}
			p = p[4+rn:]
		}
		off += frameHeader + int64(len(payload))
	}
}

// frameAt returns the payload of the frame at the start of b.
func frameAt(b []byte) ([]byte, bool) {
	if len(b) < frameHeader || string(b[:4]) != frameMagic {
		return nil, false
	}
	n := binary.BigEndian.Uint32(b[4:8])
	if n > MaxFrame || int64(n) > int64(len(b)-frameHeader) {
		return nil, false
	}
	sum := crc32.Update(crc32.Checksum(b[4:8], castagnoli), castagnoli, b[frameHeader:frameHeader+int(n)])
	if sum != binary.BigEndian.Uint32(b[8:12]) {
		return nil, false
	}
	return b[frameHeader : frameHeader+int(n)], true
}

// findFrame is the offset of the first valid frame in b, or -1.
func findFrame(b []byte) int {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(frameMagic))
		if j < 0 {
			return -1
		}
		if _, ok := frameAt(b[i+j:]); ok {
			return i + j
		}
		i += j + 1
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// repair fixes what a crash left in the newest segment (a torn tail is
// zeroed, so that later frames never follow garbage; a header is
// rewritten), durably; a read-only log leaves the file as it is.
func (l *Log) repair(path string, fix func(*os.File) error) error {
	if l.opts.ReadOnly {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	defer f.Close()
	if err := fix(f); err != nil {
		return fmt.Errorf("wal: repair %s: %w", path, err)
	}
	return fdatasync(f)
}

func header(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(segmentMagic), n)
}

var zeros = make([]byte, 1<<20)

func writeZeros(f *os.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		off += n
	}
	return nil
}

// writeAt and fdatasync are the two system calls that make a frame
// durable: variables, so that the tests of this package can see their
// order and make them fail (sync_test.go).
var (
	writeAt   = (*os.File).WriteAt
	fdatasync = func(f *os.File) error {
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("wal: sync %s: %w", f.Name(), err)
		}
		return nil
	}
)

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", dir, err)
	}
	return nil
}

// newSegment creates segment n, zero-filled to one chunk and synced, and
// makes it current. The caller holds l.mu or is Open.
func (l *Log) newSegment(n uint64) error {
	path := filepath.Join(l.dir, segmentName(n))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if _, err := f.WriteAt(header(n), 0); err == nil {
		err = writeZeros(f, headerSize, l.opts.Chunk)
	}
	if err == nil {
		err = f.Sync() // the size is metadata: a full sync, once
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("wal: new segment: %w", err)
	}
	if l.cur != nil {
		l.allocWG.Wait()
		l.cur.f.Close()
	}
	l.cur = &segment{num: n, f: f, end: headerSize, size: l.opts.Chunk, allocated: l.opts.Chunk}
	l.segs = append(l.segs, n)
	return nil
}

// Write appends records as one frame, durably: when it returns nil they
// survive a crash. It returns the segment that holds them. After a failed
// write or sync the log refuses every further Write: what the segment's
// end holds is unknown until it is opened again.
func (l *Log) Write(records [][]byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return 0, ErrClosed
	case l.err != nil:
		return 0, fmt.Errorf("wal: failed earlier: %w", l.err)
	case l.cur == nil:
		return 0, errors.New("wal: opened read-only")
	}
	n := 0
	for _, r := range records {
		if len(r) > MaxRecord {
			return 0, fmt.Errorf("wal: a record of %d bytes is over %d", len(r), MaxRecord)
		}
		n += 4 + len(r)
	}
	if n > MaxFrame {
		return 0, fmt.Errorf("wal: a frame of %d bytes is over %d", n, MaxFrame)
	}
	if l.cur.end > headerSize && l.cur.end+frameHeader+int64(n) > l.opts.SegmentSize {
		if err := l.newSegment(l.cur.num + 1); err != nil {
			return 0, err
		}
	}
	buf := l.buf[:0]
	buf = append(buf, frameMagic...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	buf = append(buf, 0, 0, 0, 0)
	for _, r := range records {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(r)))
		buf = append(buf, r...)
	}
	sum := crc32.Update(crc32.Checksum(buf[4:8], castagnoli), castagnoli, buf[frameHeader:])
	binary.BigEndian.PutUint32(buf[8:12], sum)
	if cap(buf) <= 4<<20 {
		l.buf = buf
	}
	seg := l.cur
	if err := l.ensureAllocated(seg, seg.end+int64(len(buf))); err != nil {
		l.err = err
		return 0, err
	}
	if _, err := writeAt(seg.f, buf, seg.end); err != nil {
		l.err = err
		return 0, fmt.Errorf("wal: write: %w", err)
	}
	if err := fdatasync(seg.f); err != nil {
		l.err = err
		return 0, err
	}
	seg.end += int64(len(buf))
	l.extendAhead(seg)
	return seg.num, nil
}

// ensureAllocated makes sure that the segment is zero-filled up to need
// before the writer writes there: the background extension never writes
// where data already is.
func (l *Log) ensureAllocated(seg *segment, need int64) error {
	seg.allocMu.Lock()
	ok := need <= seg.allocated
	seg.allocMu.Unlock()
	if ok {
		return nil
	}
	l.allocWG.Wait()
	seg.allocMu.Lock()
	defer seg.allocMu.Unlock()
	if need <= seg.allocated {
		return nil
	}
	to := need + l.opts.Chunk
	if err := writeZeros(seg.f, seg.allocated, to); err != nil {
		return err
	}
	if err := seg.f.Sync(); err != nil {
		return fmt.Errorf("wal: sync: %w", err)
	}
	seg.allocated = to
	return nil
}

// extendAhead zero-fills the segment a chunk further, in the background,
// when its data comes within half a chunk of the allocated end.
func (l *Log) extendAhead(seg *segment) {
	seg.allocMu.Lock()
	defer seg.allocMu.Unlock()
	if seg.extending || seg.end+l.opts.Chunk/2 < seg.allocated || seg.allocated >= l.opts.SegmentSize+l.opts.Chunk {
		return
	}
	seg.extending = true
	from, to := seg.allocated, seg.allocated+l.opts.Chunk
	l.allocWG.Go(func() {
		err := writeZeros(seg.f, from, to)
		if err == nil {
			err = seg.f.Sync()
		}
		seg.allocMu.Lock()
		defer seg.allocMu.Unlock()
		seg.extending = false
		if err == nil {
			seg.allocated = to
		}
	})
}

// Segments are the segment numbers on disk, ascending.
func (l *Log) Segments() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.segs)
}

// RemoveBefore deletes the segments numbered below n, never the one being
// written: their records are kept elsewhere now.
func (l *Log) RemoveBefore(n uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	n = min(n, l.cur.num)
	keep := l.segs[:0]
	var errs []error
	removed := false
	for _, s := range l.segs {
		if s >= n {
			keep = append(keep, s)
			continue
		}
		if err := os.Remove(filepath.Join(l.dir, segmentName(s))); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			keep = append(keep, s)
			continue
		}
		removed = true
	}
	l.segs = keep
	if removed {
		errs = append(errs, syncDir(l.dir))
	}
	return errors.Join(errs...)
}

// Close stops the log. The zeros after the data stay: the next Open
// writes after the data.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.allocWG.Wait()
	var err error
	if l.cur != nil {
		err = l.cur.f.Close()
	}
	l.closeLock()
	return err
}

var _ io.Closer = (*Log)(nil)
