package tsa

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"pec/internal/filelock"
)

// SerialBlock is how many serial numbers [FileSerials] reserves with one
// durable write: at 10,000 tokens a second, one write every 6.5 seconds.
const SerialBlock = 1 << 16

// The serial file holds two copies of one record, at offsets 0 and
// serialSlotB, in different 4 KiB blocks so that a torn write can damage
// only the copy being written. A record is, big-endian:
//
//	0  4 bytes  magic "PECS"
//	4  1 byte   format version, 1
//	5  1 byte   zero
//	6  2 bytes  node ID
//	8  8 bytes  high-water mark: no counter at or above it was handed out
//	16 4 bytes  zero
//	20 4 bytes  CRC-32C of bytes 0-19
const (
	serialRecordLen = 24
	serialSlotB     = 4096
	serialFileLen   = serialSlotB + serialRecordLen
	serialVersion   = 1
)

var (
	serialMagic = [4]byte{'P', 'E', 'C', 'S'}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// FileSerials is a [SerialSource] whose numbers stay unique across restarts,
// crashes and nodes, keeping its state in one small file.
//
// A serial number is nodeID<<64 | counter: positive and at most 80 bits,
// well under the 160 bits RFC 3161 section 2.4.2 allows, so that nodes with
// distinct IDs (0-65535) never collide. The counter is reserved in blocks
// of [SerialBlock]: before the first number of a block is handed out, the
// block's end (the new high-water mark) is written to the file and fsynced.
// A crash thus loses at most the rest of a block, never reuses a number.
// On open the counter starts at the larger of the stored mark and the
// current time in microseconds since the Unix epoch, so that even a lost
// or restored-from-backup file does not, in practice, reuse serials.
//
// The mark is written in place, alternately into two checksummed copies
// kept in different disk blocks; the file is read as the higher valid copy,
// so a torn write yields the previous mark (whose block was never used),
// never a lower one. A file with no valid copy is refused, never reset.
// The file records its node ID: opening it with another ID is refused, and
// an exclusive lock (flock) keeps a second process from using it at the
// same time.
//
// NextSerial is safe for concurrent use: an atomic add, except for the
// caller that exhausts a block, which writes the next mark while the
// others that need a number wait for it.
type FileSerials struct {
	path string
	node uint64

	next  atomic.Uint64 // next counter value to try
	limit atomic.Uint64 // end of the durably reserved block; 0 once closed

	mu     sync.Mutex // one reserver at a time; guards what follows
	f      *os.File
	slot   int // the copy the next write goes to (0 or 1)
	closed bool
}

var _ SerialSource = (*FileSerials)(nil)

var errSerialsClosed = errors.New("tsa: serial source closed")

// OpenFileSerials opens the serial file at path, creating it (mode 0600)
// and its directory if missing, and reserves the first block. nodeID must
// be the one the file was created with.
func OpenFileSerials(path string, nodeID int) (*FileSerials, error) {
	if nodeID < 0 || nodeID > math.MaxUint16 {
		return nil, fmt.Errorf("tsa: serial file %s: node ID %d is not within 0-65535", path, nodeID)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("tsa: serial file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err = createSerialFile(path, uint16(nodeID)); err == nil {
			f, err = os.OpenFile(path, os.O_RDWR, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tsa: serial file: %w", err)
	}
	s, err := openSerials(f, path, uint16(nodeID))
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func openSerials(f *os.File, path string, node uint16) (*FileSerials, error) {
	if err := filelock.Lock(f, "tsa: serial file"); err != nil {
		return nil, err
	}
	var buf [serialFileLen + 1]byte
	n, err := io.ReadFull(f, buf[:])
	switch {
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("tsa: serial file %s: %w", path, err)
	case n > serialFileLen:
		return nil, fmt.Errorf("tsa: serial file %s is corrupt: longer than %d bytes", path, serialFileLen)
	case n < serialFileLen:
		return nil, fmt.Errorf("tsa: serial file %s is corrupt: %d bytes, want %d", path, n, serialFileLen)
	}
	nodeA, markA, okA := decodeSerialRecord(buf[:serialRecordLen])
	nodeB, markB, okB := decodeSerialRecord(buf[serialSlotB:serialFileLen])
	var stored uint16
	var mark uint64
	var slot int // write next over the copy that does not hold the mark
	switch {
	case okA && okB:
		if nodeA != nodeB {
			return nil, fmt.Errorf("tsa: serial file %s is corrupt: its copies name nodes %d and %d", path, nodeA, nodeB)
		}
		stored, mark = nodeA, max(markA, markB)
		if markA > markB {
			slot = 1
		}
	case okA:
		stored, mark, slot = nodeA, markA, 1
	case okB:
		stored, mark, slot = nodeB, markB, 0
	default:
		return nil, fmt.Errorf("tsa: serial file %s is corrupt: no valid record (not a serial file, or damaged; it must not be reset blindly: serials above its last mark may have been issued)", path)
	}
	if stored != node {
		return nil, fmt.Errorf("tsa: serial file %s belongs to node %d, not %d: two nodes must not share a serial file", path, stored, node)
	}
	s := &FileSerials{path: path, node: uint64(node), f: f, slot: slot}
	start := max(mark, uint64(max(time.Now().UnixMicro(), 1)))
	if err := s.reserveLocked(start); err != nil {
		return nil, err
	}
	s.next.Store(start)
	return s, nil
}

// createSerialFile makes the file appear atomically with a valid record
// (mark 0): a crash while creating it leaves either no file or a good one.
func createSerialFile(path string, node uint16) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	var buf [serialFileLen]byte
	encodeSerialRecord(buf[:serialRecordLen], node, 0)
	encodeSerialRecord(buf[serialSlotB:], node, 0)
	_, err = tmp.Write(buf[:])
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// A link, not a rename: if another process created the file meanwhile,
	// its file stays and we open that one.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(dir)
}

func encodeSerialRecord(b []byte, node uint16, mark uint64) {
	copy(b[0:4], serialMagic[:])
	b[4], b[5] = serialVersion, 0
	binary.BigEndian.PutUint16(b[6:8], node)
	binary.BigEndian.PutUint64(b[8:16], mark)
	clear(b[16:20])
	binary.BigEndian.PutUint32(b[20:24], crc32.Checksum(b[:20], castagnoli))
}

func decodeSerialRecord(b []byte) (node uint16, mark uint64, ok bool) {
	if [4]byte(b[0:4]) != serialMagic || b[4] != serialVersion ||
		binary.BigEndian.Uint32(b[20:24]) != crc32.Checksum(b[:20], castagnoli) {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[6:8]), binary.BigEndian.Uint64(b[8:16]), true
}

// NextSerial returns a new serial number. It does no I/O except when a
// block is exhausted; an error means the next block could not be reserved
// (or the source is closed) and no number was handed out.
func (s *FileSerials) NextSerial() (*big.Int, error) {
	for {
		// Load the limit before taking a number: a number below a limit
		// that was already durable is ours alone.
		limit := s.limit.Load()
		n := s.next.Add(1) - 1
		if n < limit {
			return s.serial(n), nil
		}
		ok, err := s.reserve(n)
		if err != nil {
			return nil, err
		}
		if ok {
			return s.serial(n), nil
		}
	}
}

func (s *FileSerials) serial(n uint64) *big.Int {
	var b [10]byte
	binary.BigEndian.PutUint16(b[0:2], uint16(s.node))
	binary.BigEndian.PutUint64(b[2:10], n)
	return new(big.Int).SetBytes(b[:])
}

// reserve makes n usable: it writes a mark above n unless another caller
// already has. It reports whether n may be handed out.
func (s *FileSerials) reserve(n uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errSerialsClosed
	}
	if n < s.limit.Load() {
		return true, nil
	}
	if n == math.MaxUint64 {
		// Not reachable in practice (2^64 microseconds is 584,000 years),
		// but the counter must never wrap.
		return false, fmt.Errorf("tsa: serial file %s: counter exhausted", s.path)
	}
	if err := s.reserveLocked(n); err != nil {
		return false, err
	}
	return true, nil
}

// reserveLocked durably writes the mark of a block starting at from and
// then publishes it. The caller holds s.mu (or is the constructor).
func (s *FileSerials) reserveLocked(from uint64) error {
	mark := from + SerialBlock
	if mark < from {
		mark = math.MaxUint64
	}
	var rec [serialRecordLen]byte
	encodeSerialRecord(rec[:], uint16(s.node), mark)
	off := int64(0)
	if s.slot == 1 {
		off = serialSlotB
	}
	if _, err := s.f.WriteAt(rec[:], off); err != nil {
		return fmt.Errorf("tsa: serial file %s: reserve block: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		// The copy written may or may not be on disk; the other one still
		// holds the previous mark, so a retry that writes this copy again
		// is safe.
		return fmt.Errorf("tsa: serial file %s: reserve block: %w", s.path, err)
	}
	s.slot ^= 1
	s.limit.Store(mark)
	return nil
}

// Close releases the file. NextSerial fails afterwards. Close is
// idempotent.
func (s *FileSerials) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.limit.Store(0)
	return s.f.Close() // releases the lock
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
