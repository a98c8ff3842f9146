package proof

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/transparency-dev/merkle/compact"
	bolt "go.etcd.io/bbolt"
)

// BoltStore is the embedded store: one bbolt file (a B+tree with
// copy-on-write pages; a commit is two fsyncs, data then meta page, so a
// crash leaves the last committed state). Open it with [OpenBolt].
type BoltStore struct {
	db *bolt.DB
}

var _ Store = (*BoltStore)(nil)

// The buckets and their keys (big-endian integers, so that byte order is
// log order):
//
//	records  index (8 bytes)                  -> record encoding
//	ids      evidence id                      -> index (8 bytes)
//	nodes    level (1 byte) || index (8 bytes) -> hash
//	heads    size (8 bytes)                   -> root(32) || len(note) u32 || note || token
var (
	bucketRecords = []byte("records")
	bucketIDs     = []byte("ids")
	bucketNodes   = []byte("nodes")
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

// OpenBolt opens the embedded store in file path, creating it unless
// read-only.
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
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         timeout,
		ReadOnly:        opts.ReadOnly,
		NoFreelistSync:  true, // rebuilt at open; saves a write per commit
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // remapping blocks the sequencer
	})
	if err != nil {
		return nil, fmt.Errorf("proof: open store %s: %w", path, err)
	}
	if opts.ReadOnly {
		return &BoltStore{db: db}, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketIDs, bucketNodes, bucketHeads} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("proof: open store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// DB is the underlying database, for tests that damage it on purpose.
func (s *BoltStore) DB() *bolt.DB { return s.db }

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func nodeKey(id compact.NodeID) []byte {
	k := make([]byte, 9)
	k[0] = byte(id.Level)
	binary.BigEndian.PutUint64(k[1:], id.Index)
	return k
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

// Commit implements Store.
func (s *BoltStore) Commit(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.Head.Size != b.Start+uint64(len(b.Records)) || len(b.Head.Root) != 32 {
		return fmt.Errorf("proof: store: batch at %d with %d records has a head of size %d", b.Start, len(b.Records), b.Head.Size)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if size := lastIndex(recs); size != b.Start {
			return fmt.Errorf("%w: it starts at %d, the log holds %d records", ErrConflict, b.Start, size)
		}
		recs.FillPercent = 1 // append-only: full pages
		ids := tx.Bucket(bucketIDs)
		ids.FillPercent = 0.9 // ids are mostly time-ordered
		nodes := tx.Bucket(bucketNodes)
		nodes.FillPercent = 0.95
		heads := tx.Bucket(bucketHeads)
		heads.FillPercent = 1
		for i, r := range b.Records {
			idx := b.Start + uint64(i)
			if ids.Get([]byte(r.ID)) != nil {
				return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
			}
			if err := recs.Put(u64(idx), r.Data); err != nil {
				return err
			}
			if err := ids.Put([]byte(r.ID), u64(idx)); err != nil {
				return err
			}
		}
		for _, n := range b.Nodes {
			if err := nodes.Put(nodeKey(n.ID), n.Hash); err != nil {
				return err
			}
		}
		return heads.Put(u64(b.Head.Size), encodeHead(&b.Head))
	})
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
	err = s.db.View(func(tx *bolt.Tx) error {
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
	err = s.db.View(func(tx *bolt.Tx) error {
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
	err = s.db.View(func(tx *bolt.Tx) error {
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
	return s.db.View(func(tx *bolt.Tx) error {
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

// Record implements Store.
func (s *BoltStore) Record(ctx context.Context, index uint64) (r *StoredRecord, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(u64(index))
		if v == nil {
			return fmt.Errorf("%w: record %d", ErrNotFound, index)
		}
		r = &StoredRecord{ID: recordID(v), Data: bytes.Clone(v)}
		return nil
	})
	return r, err
}

// Lookup implements Store.
func (s *BoltStore) Lookup(ctx context.Context, id string) (idx uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIDs).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: evidence %q", ErrNotFound, id)
		}
		if len(v) != 8 {
			return fmt.Errorf("proof: store: index of %q is %d bytes", id, len(v))
		}
		idx = binary.BigEndian.Uint64(v)
		return nil
	})
	return idx, err
}

// Records implements Store.
func (s *BoltStore) Records(ctx context.Context, start uint64, fn func(uint64, *StoredRecord) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		var r StoredRecord
		for k, v := c.Seek(u64(start)); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) != 8 {
				return fmt.Errorf("proof: store: record key %x", k)
			}
			r.ID, r.Data = recordID(v), v
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
	err := s.db.View(func(tx *bolt.Tx) error {
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

// recordID reads the id of an encoded record without decoding the rest;
// "" when the bytes are not a record.
func recordID(data []byte) string {
	h := len(recordMagic) + 1
	if len(data) < h+4 {
		return ""
	}
	n := binary.BigEndian.Uint32(data[h:])
	if uint64(n) > uint64(len(data)-h-4) || n > 128 {
		return ""
	}
	return string(data[h+4 : h+4+int(n)])
}
