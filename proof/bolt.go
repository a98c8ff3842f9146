package proof

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	bolt "go.etcd.io/bbolt"

	"pec/evidence"
	"pec/proof/wal"
)

// BoltStore is the embedded store, in two files. A record is first made
// durable in a write-ahead log ([pec/proof/wal], one frame and one
// fdatasync for every group of concurrent appends: the hot path); an
// integration then writes the records, the tree's nodes and its size and
// root into one bbolt file (a B+tree with copy-on-write pages; a commit is
// two fsyncs, data then meta page), after which the log segments it
// emptied are deleted; the signed head follows in a commit of its own
// ([Store.PutHead]). At open, the records of the write-ahead log that
// bbolt does not hold are the unsealed ones. Open it with [OpenBolt].
type BoltStore struct {
	db  *bolt.DB
	wal *wal.Log // nil for a read-only store whose log was never written

	appendMu sync.Mutex // one Append at a time: the id checks and the write
	sealMu   sync.Mutex // one Integrate or PutHead at a time
	mu       sync.Mutex // guards pending, pendingIDs
	pending  []walRecord
	// pendingIDs are the ids of pending.
	pendingIDs map[string]struct{}
}

type walRecord struct {
	StoredRecord
	segment uint64
}

var _ Store = (*BoltStore)(nil)

// The buckets and their keys (big-endian integers, so that byte order is
// log order):
//
//	records  index (8 bytes)                  -> record encoding
//	ids      evidence id                      -> index (8 bytes)
//	nodes    level (1 byte) || index (8 bytes) -> hash
//	trees    size (8 bytes)                   -> root(32): every integrated tree
//	heads    size (8 bytes)                   -> root(32) || len(note) u32 || note || token
//
// A store written before the trees bucket existed gets it at its first
// writable open, one tree for each head.
var (
	bucketRecords = []byte("records")
	bucketIDs     = []byte("ids")
	bucketNodes   = []byte("nodes")
	bucketTrees   = []byte("trees")
	bucketHeads   = []byte("heads")
)

// BoltOptions tune OpenBolt; the zero value opens for writing.
type BoltOptions struct {
	// Timeout bounds the wait for the file lock (0: 5s): one writer at a
	// time, or any number of read-only openers.
	Timeout time.Duration
	// ReadOnly opens an existing store for reading (list, export, audit).
	ReadOnly bool
}

// WALDir is the directory of the write-ahead log of the store in path.
func WALDir(path string) string { return path + ".wal" }

// ErrCorruptStore: a store file is damaged (not a crash's torn write).
var ErrCorruptStore = errors.New("proof: store damaged")

// OpenBolt opens the embedded store in file path (and its write-ahead log
// in WALDir(path)), creating them unless read-only. A file that is not a
// store, truncated or damaged is ErrCorruptStore, never a crash.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("proof: open store: %w", err)
		}
	} else if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("proof: store: %w", err)
	}
	if err := checkBoltFile(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         timeout,
		ReadOnly:        opts.ReadOnly,
		NoFreelistSync:  true, // rebuilt at open; saves a write per commit
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // remapping blocks the sequencer
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("proof: store %s is in use by another process (a running pec serve?)", path)
		}
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrChecksum) {
			return nil, fmt.Errorf("%w: open %s: %w", ErrCorruptStore, path, err)
		}
		return nil, fmt.Errorf("proof: open store %s: %w", path, err)
	}
	s := &BoltStore{db: db, pendingIDs: map[string]struct{}{}}
	if !opts.ReadOnly {
		err = s.update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketRecords, bucketIDs, bucketNodes, bucketHeads} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			if tx.Bucket(bucketTrees) != nil {
				return nil
			}
			trees, err := tx.CreateBucket(bucketTrees)
			if err != nil {
				return err
			}
			c := tx.Bucket(bucketHeads).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 || len(v) < 32 {
					return fmt.Errorf("%w: tree head key %x", ErrCorruptStore, k)
				}
				if err := trees.Put(k, bytes.Clone(v[:32])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("proof: open store %s: %w", path, err)
		}
	}
	if err := s.openWAL(WALDir(path), opts.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openWAL reads the write-ahead log: its records that bbolt does not hold
// are the unsealed ones, in order.
func (s *BoltStore) openWAL(dir string, readOnly bool) error {
	return s.view(func(tx *bolt.Tx) error {
		ids := tx.Bucket(bucketIDs)
		l, err := wal.Open(dir, wal.Options{ReadOnly: readOnly}, func(pos wal.Pos, data []byte) error {
			id := evidence.EncodedID(data)
			if id == "" {
				return fmt.Errorf("%w: write-ahead log segment %d, frame at %d: not an evidence record", ErrCorruptStore, pos.Segment, pos.Offset)
			}
			if ids != nil && ids.Get([]byte(id)) != nil {
				return nil // sealed already
			}
			if _, dup := s.pendingIDs[id]; dup {
				return nil
			}
			s.pending = append(s.pending, walRecord{StoredRecord{ID: id, Data: bytes.Clone(data)}, pos.Segment})
			s.pendingIDs[id] = struct{}{}
			return nil
		})
		if errors.Is(err, wal.ErrCorrupt) {
			return fmt.Errorf("%w: %w", ErrCorruptStore, err)
		}
		if err != nil {
			return err
		}
		s.wal = l
		return nil
	})
}

// checkBoltFile refuses a file bbolt would crash on: bbolt maps the file
// and trusts its meta pages, so a truncated file ends in SIGBUS.
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proof: store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("proof: store: %w", err)
	}
	if fi.Size() == 0 {
		return nil // created, never written: bbolt initialises it
	}
	var meta [4096 * 2]byte
	n, _ := io.ReadFull(f, meta[:])
	// Two meta pages at the start, each: page header (16 bytes), then
	// magic, version, page size.
	const pageHeader = 16
	if n < pageHeader+12 {
		return fmt.Errorf("%w: %s: %d bytes, not a store", ErrCorruptStore, path, fi.Size())
	}
	if binary.LittleEndian.Uint32(meta[pageHeader:]) != 0xED0CDAED {
		return fmt.Errorf("%w: %s: not a bbolt file", ErrCorruptStore, path)
	}
	pageSize := int64(binary.LittleEndian.Uint32(meta[pageHeader+8:]))
	if pageSize < 512 || pageSize > 1<<16 || fi.Size()%pageSize != 0 || fi.Size() < 4*pageSize {
		return fmt.Errorf("%w: %s: %d bytes is not a whole number of %d-byte pages (truncated?)", ErrCorruptStore, path, fi.Size(), pageSize)
	}
	// Each meta page names the high-water mark of pages in use: a file
	// shorter than that was truncated.
	for i := int64(0); i < 2; i++ {
		page := make([]byte, 64)
		if _, err := f.ReadAt(page, i*pageSize); err != nil {
			return fmt.Errorf("%w: %s: meta page %d: %w", ErrCorruptStore, path, i, err)
		}
		// meta: magic u32, version u32, pageSize u32, flags u32, root
		// bucket (root pgid u64, sequence u64), freelist pgid u64, pgid
		// (high-water mark) u64, txid u64, checksum u64.
		m := page[pageHeader:]
		if binary.LittleEndian.Uint32(m) != 0xED0CDAED {
			continue // a damaged meta page: bbolt uses the other one
		}
		hwm := int64(binary.LittleEndian.Uint64(m[40:]))
		if hwm*pageSize > fi.Size() {
			return fmt.Errorf("%w: %s: %d bytes, but meta page %d uses %d pages of %d bytes (truncated?)", ErrCorruptStore, path, fi.Size(), i, hwm, pageSize)
		}
	}
	return nil
}

// view and update run a bbolt transaction and turn a panic of bbolt on a
// damaged page (it trusts what it maps) into ErrCorruptStore.
func (s *BoltStore) view(fn func(*bolt.Tx) error) (err error) {
	defer recoverCorrupt(s.db.Path(), &err)
	return s.db.View(fn)
}

func (s *BoltStore) update(fn func(*bolt.Tx) error) (err error) {
	defer recoverCorrupt(s.db.Path(), &err)
	return s.db.Update(fn)
}

func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s: %v", ErrCorruptStore, path, r)
	}
}

// Check walks every page of the store (bbolt's own consistency check):
// damage is a named error (ErrCorruptStore). Audit runs it; it reads the
// whole file.
func (s *BoltStore) Check() error {
	err := s.view(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
			if len(errs) == 5 {
				break
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorruptStore, s.db.Path(), err)
	}
	return nil
}

// DB is the underlying database, for tests that damage it on purpose.
func (s *BoltStore) DB() *bolt.DB { return s.db }

// Close implements Store.
func (s *BoltStore) Close() error {
	var err error
	if s.wal != nil {
		err = s.wal.Close()
	}
	return errors.Join(err, s.db.Close())
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func nodeKey(id compact.NodeID) []byte {
	k := make([]byte, 9)
	putNodeKey(k, id)
	return k
}

func putNodeKey(k []byte, id compact.NodeID) {
	k[0] = byte(id.Level)
	binary.BigEndian.PutUint64(k[1:], id.Index)
}

func encodeHead(h *Head) []byte {
	b := make([]byte, 0, 32+4+len(h.Checkpoint)+len(h.Token))
	b = append(b, h.Root...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.Checkpoint)))
	b = append(b, h.Checkpoint...)
	return append(b, h.Token...)
}

func decodeHead(size uint64, v []byte) (*Head, error) {
	if len(v) < 36 {
		return nil, fmt.Errorf("proof: store: tree head %d: truncated", size)
	}
	n := binary.BigEndian.Uint32(v[32:])
	if uint64(n) > uint64(len(v)-36) {
		return nil, fmt.Errorf("proof: store: tree head %d: bad note length", size)
	}
	return &Head{
		Size:       size,
		Root:       bytes.Clone(v[:32]),
		Checkpoint: bytes.Clone(v[36 : 36+n]),
		Token:      bytes.Clone(v[36+n:]),
	}, nil
}

// Append implements Store. The ids of Fresh records are not looked up
// among the pending and the sealed ones (a read transaction and a B+tree
// search per record, on the hot path).
func (s *BoltStore) Append(ctx context.Context, recs []StoredRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	if s.wal == nil {
		return errors.New("proof: store opened read-only")
	}
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	if err := s.checkNewIDs(recs); err != nil {
		return err
	}
	data := make([][]byte, len(recs))
	for i, r := range recs {
		if evidence.EncodedID(r.Data) != r.ID {
			return fmt.Errorf("proof: store: record %q: its encoding names another id", r.ID)
		}
		data[i] = r.Data
	}
	seg, err := s.wal.Write(data)
	if err != nil {
		return fmt.Errorf("proof: store: %w", err)
	}
	s.mu.Lock()
	for _, r := range recs {
		s.pending = append(s.pending, walRecord{StoredRecord{ID: r.ID, Data: r.Data}, seg})
		s.pendingIDs[r.ID] = struct{}{}
	}
	s.mu.Unlock()
	return nil
}

// checkNewIDs fails with ErrDuplicateID when an id of recs is twice in
// recs, pending or sealed; Fresh records are not looked up. The caller
// holds appendMu.
func (s *BoltStore) checkNewIDs(recs []StoredRecord) error {
	check := 0
	for _, r := range recs {
		if !r.Fresh {
			check++
		}
	}
	if check == 0 {
		return nil
	}
	seen := make(map[string]struct{}, len(recs))
	s.mu.Lock()
	for _, r := range recs {
		_, pending := s.pendingIDs[r.ID]
		_, twice := seen[r.ID]
		if !r.Fresh && (pending || twice) {
			s.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
		}
		seen[r.ID] = struct{}{}
	}
	s.mu.Unlock()
	// A record pending now stays pending or sealed; one that is neither
	// cannot be sealed meanwhile (only Append adds pending records).
	return s.view(func(tx *bolt.Tx) error {
		ids := tx.Bucket(bucketIDs)
		for _, r := range recs {
			if !r.Fresh && ids.Get([]byte(r.ID)) != nil {
				return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
			}
		}
		return nil
	})
}

// Unsealed implements Store.
func (s *BoltStore) Unsealed(ctx context.Context, max int) ([]StoredRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(max, len(s.pending))
	out := make([]StoredRecord, n)
	for i := range out {
		out[i] = s.pending[i].StoredRecord
	}
	return out, nil
}

// Integrate implements Store.
func (s *BoltStore) Integrate(ctx context.Context, prev *Tree, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkBatch(b); err != nil {
		return err
	}
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	s.mu.Lock()
	ok := len(b.Records) <= len(s.pending)
	for i := 0; ok && i < len(b.Records); i++ {
		ok = s.pending[i].ID == b.Records[i].ID && bytes.Equal(s.pending[i].Data, b.Records[i].Data)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: the batch's records are not the oldest unsealed ones", ErrConflict)
	}
	err := s.update(func(tx *bolt.Tx) error {
		trees, heads := tx.Bucket(bucketTrees), tx.Bucket(bucketHeads)
		k, v := trees.Cursor().Last()
		newest, err := decodeTree(k, v)
		if err != nil {
			return err
		}
		if err := extendsNewest(newest, k != nil && heads.Get(k) != nil, prev, b.Start); err != nil {
			return err
		}
		recs := tx.Bucket(bucketRecords)
		if size := lastIndex(recs); size != b.Start {
			return fmt.Errorf("%w: it starts at %d, the log holds %d records", ErrConflict, b.Start, size)
		}
		recs.FillPercent = 1 // append-only: full pages
		ids := tx.Bucket(bucketIDs)
		ids.FillPercent = 0.9 // ids are mostly time-ordered
		nodes := tx.Bucket(bucketNodes)
		nodes.FillPercent = 0.95
		trees.FillPercent = 1
		// The records are the oldest pending ones (checked above), and a
		// pending id is in no sealed record: Append checked it (or the log
		// made it: Fresh), OpenBolt skips what bbolt holds. No
		// lookup of each id here, then: a second B+tree search per record.
		//
		// bbolt keeps the keys and values it is given until the commit:
		// they are cut from one allocation per kind, not one per Put.
		idLen := 0
		for _, r := range b.Records {
			idLen += len(r.ID)
		}
		idx := make([]byte, 8*len(b.Records)) // record key, and value of its id
		idKeys := make([]byte, 0, idLen)
		for i, r := range b.Records {
			k := idx[8*i : 8*i+8 : 8*i+8]
			binary.BigEndian.PutUint64(k, b.Start+uint64(i))
			if err := recs.Put(k, r.Data); err != nil {
				return err
			}
			idKeys = append(idKeys, r.ID...)
			if err := ids.Put(idKeys[len(idKeys)-len(r.ID):len(idKeys):len(idKeys)], k); err != nil {
				return err
			}
		}
		nodeKeys := make([]byte, 9*len(b.Nodes))
		for i, n := range b.Nodes {
			k := nodeKeys[9*i : 9*i+9 : 9*i+9]
			putNodeKey(k, n.ID)
			if err := nodes.Put(k, n.Hash); err != nil {
				return err
			}
		}
		return trees.Put(u64(b.Tree.Size), bytes.Clone(b.Tree.Root))
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, r := range s.pending[:len(b.Records)] {
		delete(s.pendingIDs, r.ID)
	}
	s.pending = slices.Delete(s.pending, 0, len(b.Records))
	oldest := uint64(math.MaxUint64)
	if len(s.pending) > 0 {
		oldest = s.pending[0].segment
	}
	s.mu.Unlock()
	// The integrated records are in bbolt, synced: the log segments that
	// hold nothing else may go.
	if err := s.wal.RemoveBefore(oldest); err != nil {
		return fmt.Errorf("proof: store: integrated, but %w", err)
	}
	return nil
}

// checkBatch refuses a batch that is not well formed (a caller's bug, not
// a conflict).
func checkBatch(b *Batch) error {
	if len(b.Records) == 0 || b.Tree.Size != b.Start+uint64(len(b.Records)) || len(b.Tree.Root) != 32 {
		return fmt.Errorf("proof: store: batch at %d with %d records has a tree of size %d", b.Start, len(b.Records), b.Tree.Size)
	}
	return nil
}

// extendsNewest is the check of Integrate: the store's newest tree
// (signed: it has its head) is prev, and the batch starts at its end.
func extendsNewest(newest *Tree, signed bool, prev *Tree, start uint64) error {
	switch {
	case newest == nil && prev != nil:
		return fmt.Errorf("%w: the store holds no tree, the batch extends size %d", ErrConflict, prev.Size)
	case newest != nil && prev == nil:
		return fmt.Errorf("%w: the store holds a tree of size %d, the batch extends the empty log", ErrConflict, newest.Size)
	case newest != nil && (newest.Size != prev.Size || !bytes.Equal(newest.Root, prev.Root)):
		return fmt.Errorf("%w: the store's tree is size %d root %x, the batch extends size %d root %x", ErrConflict, newest.Size, newest.Root, prev.Size, prev.Root)
	case newest != nil && !signed:
		return fmt.Errorf("%w: the store's tree of size %d is not signed yet", ErrConflict, newest.Size)
	case prev != nil && prev.Size != start || prev == nil && start != 0:
		return fmt.Errorf("%w: the batch starts at %d", ErrConflict, start)
	}
	return nil
}

func decodeTree(k, v []byte) (*Tree, error) {
	if k == nil {
		return nil, nil
	}
	if len(k) != 8 || len(v) != 32 {
		return nil, fmt.Errorf("%w: tree %x: a root of %d bytes", ErrCorruptStore, k, len(v))
	}
	return &Tree{Size: binary.BigEndian.Uint64(k), Root: bytes.Clone(v)}, nil
}

// Pending implements Store.
func (s *BoltStore) Pending(ctx context.Context) (t *Tree, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		trees := tx.Bucket(bucketTrees)
		if trees == nil {
			return ErrNotFound // a store of before trees, opened read-only
		}
		k, v := trees.Cursor().Last()
		if k == nil || tx.Bucket(bucketHeads).Get(k) != nil {
			return ErrNotFound
		}
		t, err = decodeTree(k, v)
		return err
	})
	return t, err
}

// Trees implements Store.
func (s *BoltStore) Trees(ctx context.Context, fn func(*Tree) error) error {
	return s.view(func(tx *bolt.Tx) error {
		trees, short := tx.Bucket(bucketTrees), false
		if trees == nil {
			// A store of before trees, opened read-only: each head's.
			trees, short = tx.Bucket(bucketHeads), true
		}
		c := trees.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if short && len(v) >= 32 {
				v = v[:32]
			}
			t, err := decodeTree(k, v)
			if err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutHead implements Store.
func (s *BoltStore) PutHead(ctx context.Context, h *Head) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(h.Root) != 32 || len(h.Checkpoint) == 0 || len(h.Token) == 0 {
		return fmt.Errorf("proof: store: the head of size %d lacks its root, checkpoint or token", h.Size)
	}
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	return s.update(func(tx *bolt.Tx) error {
		heads := tx.Bucket(bucketHeads)
		root := tx.Bucket(bucketTrees).Get(u64(h.Size))
		switch {
		case root == nil:
			return fmt.Errorf("%w: the store holds no tree of size %d", ErrConflict, h.Size)
		case !bytes.Equal(root, h.Root):
			return fmt.Errorf("%w: the store's tree of size %d has root %x, the head %x", ErrConflict, h.Size, root, h.Root)
		case heads.Get(u64(h.Size)) != nil:
			return fmt.Errorf("%w: the store holds a head of size %d already", ErrConflict, h.Size)
		}
		heads.FillPercent = 1
		return heads.Put(u64(h.Size), encodeHead(h))
	})
}

// sealedSize is the size of the newest head: the records below it are
// sealed.
func sealedSize(tx *bolt.Tx) uint64 {
	k, _ := tx.Bucket(bucketHeads).Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// lastIndex is the number of records in the bucket.
func lastIndex(recs *bolt.Bucket) uint64 {
	k, _ := recs.Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k) + 1
}

// Latest implements Store.
func (s *BoltStore) Latest(ctx context.Context) (h *Head, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketHeads).Cursor().Last()
		if k == nil {
			return ErrNotFound
		}
		h, err = decodeHead(binary.BigEndian.Uint64(k), v)
		return err
	})
	return h, err
}

// HeadAt implements Store.
func (s *BoltStore) HeadAt(ctx context.Context, size uint64) (h *Head, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHeads).Get(u64(size))
		if v == nil {
			return fmt.Errorf("%w: tree head of size %d", ErrNotFound, size)
		}
		h, err = decodeHead(size, v)
		return err
	})
	return h, err
}

// HeadCovering implements Store.
func (s *BoltStore) HeadCovering(ctx context.Context, index uint64) (h *Head, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketHeads).Cursor().Seek(u64(index + 1))
		if k == nil {
			return fmt.Errorf("%w: no tree head covers record %d", ErrNotFound, index)
		}
		h, err = decodeHead(binary.BigEndian.Uint64(k), v)
		return err
	})
	return h, err
}

// Heads implements Store.
func (s *BoltStore) Heads(ctx context.Context, fn func(*Head) error) error {
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHeads).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) != 8 {
				return fmt.Errorf("proof: store: tree head key %x", k)
			}
			h, err := decodeHead(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			if err := fn(h); err != nil {
				return err
			}
		}
		return nil
	})
}

// Record implements Store: a sealed record, or one of the pending tree.
func (s *BoltStore) Record(ctx context.Context, index uint64) (r *StoredRecord, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(u64(index))
		if v == nil {
			return fmt.Errorf("%w: record %d", ErrNotFound, index)
		}
		r = &StoredRecord{ID: evidence.EncodedID(v), Data: bytes.Clone(v)}
		return nil
	})
	return r, err
}

// Lookup implements Store.
func (s *BoltStore) Lookup(ctx context.Context, id string) (idx uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIDs).Get([]byte(id))
		if v == nil {
			s.mu.Lock()
			_, pending := s.pendingIDs[id]
			s.mu.Unlock()
			if pending {
				return fmt.Errorf("%w: evidence %q", ErrNotSealed, id)
			}
			return fmt.Errorf("%w: evidence %q", ErrNotFound, id)
		}
		if len(v) != 8 {
			return fmt.Errorf("proof: store: index of %q is %d bytes", id, len(v))
		}
		idx = binary.BigEndian.Uint64(v)
		if idx >= sealedSize(tx) {
			return fmt.Errorf("%w: evidence %q", ErrNotSealed, id) // in the pending tree
		}
		return nil
	})
	return idx, err
}

// Records implements Store.
func (s *BoltStore) Records(ctx context.Context, start uint64, fn func(uint64, *StoredRecord) error) error {
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		end := sealedSize(tx)
		var r StoredRecord
		for k, v := c.Seek(u64(start)); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) != 8 {
				return fmt.Errorf("proof: store: record key %x", k)
			}
			if binary.BigEndian.Uint64(k) >= end {
				return nil // the pending tree's
			}
			r.ID, r.Data = evidence.EncodedID(v), v
			if err := fn(binary.BigEndian.Uint64(k), &r); err != nil {
				return err
			}
		}
		return nil
	})
}

// Nodes implements Store.
func (s *BoltStore) Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		for i, id := range ids {
			v := b.Get(nodeKey(id))
			if v == nil {
				return fmt.Errorf("%w: tree node (level %d, index %d)", ErrNotFound, id.Level, id.Index)
			}
			out[i] = bytes.Clone(v)
		}
		return nil
	})
	return out, err
}
