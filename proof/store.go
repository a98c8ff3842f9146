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
// A record goes through three steps. [Store.Append] makes it durable — the
// only write on an operation's hot path, one per group of concurrent
// appends — and it waits, unsealed, for the sequencer. [Store.Integrate]
// then makes the oldest unsealed records the next leaves of the tree, with
// the tree's new nodes and its new size and root, in one atomic write: the
// tree of that size is fixed from then on, and is the store's pending
// tree until [Store.PutHead] adds its signed head (checkpoint and RFC 3161
// token). A checkpoint is signed only over a tree that the store holds
// (integrate first, sign after, as Tessera does), so that a sequencer that
// dies after signing leaves no signed checkpoint that the log contradicts:
// whoever seals next finds the pending tree and signs exactly it. One size
// has one root, ever; a tree may be signed more than once (the same size
// and root), but only one signed head of it is stored. Several nodes may
// append to one shared store at once; one sequencer at a time integrates
// (see [Leader]).
//
// A record is sealed once a stored signed head covers it. Every method is
// safe for concurrent use. Missing data is ErrNotFound; a record that is
// durable but not yet sealed (unsealed, or in the pending tree) is
// ErrNotSealed where a leaf index is asked for.
type Store interface {
	// Append writes recs durably and atomically: when it returns nil they
	// survive a crash, and they are the newest unsealed records. It fails
	// with evidence.ErrDuplicateID, writing nothing, when the store
	// already holds (sealed or not) a record with one of their ids; the
	// ids of Fresh records need not be looked up. It does not keep recs
	// (the slice) after it returns.
	Append(ctx context.Context, recs []StoredRecord) error
	// Unsealed returns up to max of the records appended and not yet
	// integrated, oldest first: the order in which they will be
	// integrated.
	Unsealed(ctx context.Context, max int) ([]StoredRecord, error)
	// Integrate writes b atomically and durably: b.Records, which must be
	// the oldest unsealed records in the order Unsealed gave them, become
	// the leaves b.Start... of the tree, with b.Nodes, and b.Tree becomes
	// the store's pending tree. It fails with ErrConflict, writing
	// nothing, when the store's newest tree is not prev (same size and
	// root; nil: the empty log), when that tree is pending (not signed
	// yet: it is signed before the tree grows), or when b.Records are not
	// the oldest unsealed records: another sequencer integrated first.
	Integrate(ctx context.Context, prev *Tree, b *Batch) error
	// Pending is the store's pending tree: integrated, its signed head
	// not stored yet. ErrNotFound when there is none (every tree has its
	// head).
	Pending(ctx context.Context) (*Tree, error)
	// PutHead writes h, the signed head of the store's pending tree,
	// atomically and durably. It fails with ErrConflict, writing nothing,
	// when the store's pending tree is not of h's size and root: the
	// store already holds a head of that size (another sequencer signed
	// the same tree and wrote it first, or this very head was written and
	// the answer lost), or holds no tree of that size and root (never two
	// roots for one size).
	PutHead(ctx context.Context, h *Head) error
	// Trees calls fn for every integrated tree (each signed head's, then
	// the pending one), smallest first, until fn fails.
	Trees(ctx context.Context, fn func(*Tree) error) error
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
	// Nodes are the hashes of the given perfect subtrees, in order: of
	// the sealed records and of the pending tree.
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
	// Close; Integrate on a handle that does not lead fails with
	// ErrConflict. (PutHead needs no lease: it can only add the head of
	// the tree that the store fixed.)
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

// Tree is a tree of the log: its size and RFC 9162 root hash.
type Tree struct {
	Size uint64
	Root []byte
}

// Head is a signed tree head.
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

// Tree is the tree h signs.
func (h *Head) Tree() *Tree { return &Tree{Size: h.Size, Root: h.Root} }

// Node is a perfect subtree's hash (level 0: a leaf hash).
type Node struct {
	ID   compact.NodeID
	Hash []byte
}

// Batch is what one Integrate writes.
type Batch struct {
	Start   uint64 // the log's size before the batch
	Records []StoredRecord
	Nodes   []Node // the perfect subtrees completed by the batch
	Tree    Tree   // of size Start+len(Records)
}

// Store errors.
var (
	ErrNotFound  = errors.New("proof: not found")
	ErrNotSealed = errors.New("proof: the evidence is durable but not sealed yet")
	ErrConflict  = errors.New("proof: the write does not extend the stored log")
	// ErrDuplicateID is evidence.ErrDuplicateID, for the callers of a Store.
	ErrDuplicateID = evidence.ErrDuplicateID
)
