package proof

import (
	"context"
	"errors"

	"github.com/transparency-dev/merkle/compact"
)

// Store keeps the log: records, Merkle tree nodes and tree heads. A log
// writes to its store through one sequencer at a time; the store checks
// that each batch extends what it holds.
//
// Every method is safe for concurrent use. Missing data is ErrNotFound.
type Store interface {
	// Commit writes one sealed batch atomically and durably: when it
	// returns nil, the records, nodes and head survive a crash. It fails
	// with ErrConflict, writing nothing, when b.Start is not the number
	// of records held (another sequencer wrote first), and with
	// ErrDuplicateID when a record's id is already held.
	Commit(ctx context.Context, b *Batch) error
	// Latest is the last tree head; ErrNotFound for an empty log.
	Latest(ctx context.Context) (*Head, error)
	// HeadAt is the tree head of the given size.
	HeadAt(ctx context.Context, size uint64) (*Head, error)
	// HeadCovering is the first tree head that includes the record at
	// index: the smallest size above index.
	HeadCovering(ctx context.Context, index uint64) (*Head, error)
	// Heads calls fn for every tree head, smallest first, until fn fails.
	Heads(ctx context.Context, fn func(*Head) error) error
	// Record is the record at index, as encoded.
	Record(ctx context.Context, index uint64) (*StoredRecord, error)
	// Lookup is the index of the record with this id.
	Lookup(ctx context.Context, id string) (uint64, error)
	// Records calls fn for the records from index start on, in order,
	// until fn fails. The record must not be retained after fn returns.
	Records(ctx context.Context, start uint64, fn func(index uint64, r *StoredRecord) error) error
	// Nodes are the hashes of the given perfect subtrees, in order.
	Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error)
	// Close releases the store.
	Close() error
}

// StoredRecord is a record as kept: its id and its canonical encoding.
type StoredRecord struct {
	ID   string
	Data []byte
}

// Head is a sealed tree head.
type Head struct {
	Size       uint64
	Root       []byte // RFC 9162 root hash
	Checkpoint []byte // the signed note of the checkpoint
	Token      []byte // RFC 3161 TimeStampToken on SHA-256 of Checkpoint
}

// Node is a perfect subtree's hash (level 0: a leaf hash).
type Node struct {
	ID   compact.NodeID
	Hash []byte
}

// Batch is what one Commit writes.
type Batch struct {
	Start   uint64 // the log's size before the batch
	Records []StoredRecord
	Nodes   []Node // the perfect subtrees completed by the batch
	Head    Head   // of size Start+len(Records)
}

// Store errors.
var (
	ErrNotFound = errors.New("proof: not found")
	ErrConflict = errors.New("proof: the batch does not extend the stored log")
)
