package proof

import (
	"bytes"
	"context"
	"errors"

	"github.com/transparency-dev/merkle/compact"

	"pec/evidence"
)

// Store keeps the log: records, Merkle tree nodes and tree heads.
//
// A record goes through two steps. [Store.Append] makes it durable — the
// only write on an operation's hot path, one per group of concurrent
// appends — and it waits, unsealed, for the sequencer. [Store.Seal] then
// makes the oldest unsealed records the next leaves of the tree, with the
// tree's new nodes and its sealed head (signed checkpoint and RFC 3161
// token), in one atomic write. Several nodes may append to one shared
// store at once; one sequencer at a time seals (see [Leader]).
//
// Every method is safe for concurrent use. Missing data is ErrNotFound; a
// record that is durable but not yet sealed is ErrNotSealed where a leaf
// index is asked for.
type Store interface {
	// Append writes recs durably and atomically: when it returns nil they
	// survive a crash, and they are the newest unsealed records. It fails
	// with evidence.ErrDuplicateID, writing nothing, when the store
	// already holds (sealed or not) a record with one of their ids; the
	// ids of Fresh records need not be looked up. It does not keep recs
	// (the slice) after it returns.
	Append(ctx context.Context, recs []StoredRecord) error
	// Unsealed returns up to max of the records appended and not yet
	// sealed, oldest first: the order in which they will be sealed.
	Unsealed(ctx context.Context, max int) ([]StoredRecord, error)
	// Seal writes b atomically and durably: b.Records, which must be the
	// oldest unsealed records in the order Unsealed gave them, become the
	// leaves b.Start... of the tree, with b.Nodes and b.Head. It fails
	// with ErrConflict, writing nothing, when the store's latest head is
	// not prev (same size and root; nil: the empty log) or when b.Records
	// are not the oldest unsealed records: another sequencer sealed first.
	Seal(ctx context.Context, prev *Head, b *Batch) error
	// Latest is the last tree head; ErrNotFound for an empty log.
	Latest(ctx context.Context) (*Head, error)
	// HeadAt is the tree head of the given size.
	HeadAt(ctx context.Context, size uint64) (*Head, error)
	// HeadCovering is the first tree head that includes the record at
	// index: the smallest size above index.
	HeadCovering(ctx context.Context, index uint64) (*Head, error)
	// Heads calls fn for every tree head, smallest first, until fn fails.
	Heads(ctx context.Context, fn func(*Head) error) error
	// Record is the sealed record at index, as encoded.
	Record(ctx context.Context, index uint64) (*StoredRecord, error)
	// Lookup is the leaf index of the record with this id: ErrNotSealed
	// when the record is durable but not sealed yet, ErrNotFound when the
	// store does not hold it.
	Lookup(ctx context.Context, id string) (uint64, error)
	// Records calls fn for the sealed records from index start on, in
	// order, until fn fails. The record must not be retained after fn
	// returns.
	Records(ctx context.Context, start uint64, fn func(index uint64, r *StoredRecord) error) error
	// Nodes are the hashes of the given perfect subtrees, in order.
	Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error)
	// Close releases the store.
	Close() error
}

// Leader is implemented by stores that several nodes share: one sequencer
// at a time may seal. A store without it has one writer (its file lock
// says so) and that writer always seals.
type Leader interface {
	// Lead reports whether this store handle may seal now, taking the
	// sealing lease when it is free (a database lock or lease that the
	// store loses when its node dies, so another takes over within
	// seconds). A handle that leads keeps leading until an error or
	// Close; Seal on a handle that does not lead fails with ErrConflict.
	Lead(ctx context.Context) (bool, error)
}

// StoredRecord is a record as kept: its id and its canonical encoding.
type StoredRecord struct {
	ID   string
	Data []byte
	// Fresh says that the log made the id itself (evidence.NewID: the
	// time in milliseconds and 80 random bits; two are the same with a
	// chance of about 2^-80 for a pair made in one millisecond), so that
	// no record of any store has it: Append may take the record as new
	// without looking the id up. Only Append reads it; records a store
	// returns have it false.
	Fresh bool
}

// Head is a sealed tree head.
type Head struct {
	Size       uint64
	Root       []byte // RFC 9162 root hash
	Checkpoint []byte // the signed note of the checkpoint
	Token      []byte // RFC 3161 TimeStampToken on SHA-256 of Checkpoint
}

// Clone is a deep copy of h.
func (h *Head) Clone() *Head {
	return &Head{Size: h.Size, Root: bytes.Clone(h.Root), Checkpoint: bytes.Clone(h.Checkpoint), Token: bytes.Clone(h.Token)}
}

// Node is a perfect subtree's hash (level 0: a leaf hash).
type Node struct {
	ID   compact.NodeID
	Hash []byte
}

// Batch is what one Seal writes.
type Batch struct {
	Start   uint64 // the log's size before the batch
	Records []StoredRecord
	Nodes   []Node // the perfect subtrees completed by the batch
	Head    Head   // of size Start+len(Records)
}

// Store errors.
var (
	ErrNotFound  = errors.New("proof: not found")
	ErrNotSealed = errors.New("proof: the evidence is durable but not sealed yet")
	ErrConflict  = errors.New("proof: the batch does not extend the stored log")
	// ErrDuplicateID is evidence.ErrDuplicateID, for the callers of a Store.
	ErrDuplicateID = evidence.ErrDuplicateID
)
