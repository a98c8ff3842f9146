package proof

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"pec/proof/wal"
)

// BoltSnapshot is a consistent copy of a [BoltStore] taken while it
// serves, for a backup: the bbolt file as one read transaction sees it
// ([bolt.Tx.WriteTo]) and the records durable in the write-ahead log that
// this file does not hold yet. Every record whose Append returned before
// [BoltStore.Snapshot] was called is in one or the other; records
// appended meanwhile may be too. Written out as a file and a log segment
// ([BoltSnapshot.WriteDB], [BoltSnapshot.WAL]) and opened with
// [OpenBolt], it is the store at that point: its unsealed records are
// sealed by the next node that opens it for writing.
//
// The read transaction stays open until Close: bbolt does not reuse the
// pages it sees meanwhile, and a write that must grow the file's mapping
// past BoltStore's initial 1 GiB waits for it. Close it promptly.
type BoltSnapshot struct {
	tx       *bolt.Tx
	unsealed []StoredRecord
	size     uint64 // the newest head's size; 0: none
	root     []byte
	records  uint64 // integrated records (the pending tree's included)
}

// Snapshot takes a consistent copy of the store. It holds the store's
// sealing lock only for the instant it takes to begin a read transaction
// and copy the list of unsealed records: an Integrate either committed
// before (its records are in the transaction's file) or commits after
// (they are still among the unsealed records copied).
func (s *BoltStore) Snapshot() (*BoltSnapshot, error) {
	s.sealMu.Lock()
	tx, err := s.db.Begin(false)
	if err != nil {
		s.sealMu.Unlock()
		return nil, fmt.Errorf("proof: snapshot: %w", err)
	}
	snapshotBegun()
	s.mu.Lock()
	unsealed := make([]StoredRecord, len(s.pending))
	for i, r := range s.pending {
		unsealed[i] = r.StoredRecord // the data are never changed in place
	}
	s.mu.Unlock()
	s.sealMu.Unlock()
	sn := &BoltSnapshot{tx: tx, unsealed: unsealed}
	err = func() (err error) {
		defer recoverCorrupt(s.db.Path(), &err)
		if b := tx.Bucket(bucketHeads); b != nil {
			if k, v := b.Cursor().Last(); len(k) == 8 && len(v) >= 32 {
				sn.size, sn.root = binary.BigEndian.Uint64(k), bytes.Clone(v[:32])
			}
		}
		if b := tx.Bucket(bucketRecords); b != nil {
			sn.records = lastIndex(b)
		}
		return nil
	}()
	if err != nil {
		tx.Rollback()
		return nil, err
	}
	return sn, nil
}

// snapshotBegun runs between the two steps of Snapshot: a seam for the
// test that an Integrate cannot fall between them (snapshot_internal_test.go).
var snapshotBegun = func() {}

// DBSize is the size in bytes of the file WriteDB writes.
func (sn *BoltSnapshot) DBSize() int64 { return sn.tx.Size() }

// WriteDB writes the bbolt file of the snapshot: DBSize bytes.
func (sn *BoltSnapshot) WriteDB(w io.Writer) (int64, error) {
	n, err := sn.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("proof: snapshot: %w", err)
	}
	return n, nil
}

// WALSegment is the number of the segment that WAL encodes: the first of
// a fresh log.
const WALSegment = 1

// WAL is a write-ahead log segment (number WALSegment, to be put in
// WALDir of the file WriteDB wrote, as [wal.SegmentName] names it)
// holding the snapshot's unsealed records, oldest first.
func (sn *BoltSnapshot) WAL() ([]byte, error) {
	data := make([][]byte, len(sn.unsealed))
	for i, r := range sn.unsealed {
		data[i] = r.Data
	}
	seg, err := wal.EncodeSegment(WALSegment, data)
	if err != nil {
		return nil, fmt.Errorf("proof: snapshot: %w", err)
	}
	return seg, nil
}

// WALFile is the file name of the segment WAL encodes, in WALDir.
func (sn *BoltSnapshot) WALFile() string { return wal.SegmentName(WALSegment) }

// Head is the size and root of the snapshot's newest signed tree head
// (0, nil: none).
func (sn *BoltSnapshot) Head() (uint64, []byte) { return sn.size, sn.root }

// Records is the number of records the snapshot's file holds (those of a
// pending tree included); Unsealed those of its write-ahead log.
func (sn *BoltSnapshot) Records() uint64 { return sn.records }

// Unsealed is the number of the snapshot's records not yet integrated.
func (sn *BoltSnapshot) Unsealed() int { return len(sn.unsealed) }

// Close ends the snapshot's read transaction.
func (sn *BoltSnapshot) Close() error { return sn.tx.Rollback() }
