package middleoffice

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ExchangeSnapshot is a consistent copy of a [BoltExchangeStore] taken
// while it serves, for a backup: the bbolt file as one read transaction
// sees it, and the payload files of the exchanges that file holds. A
// payload is renamed into place (and synced) before the step that names
// it commits, so every payload the file's exchanges name exists when the
// snapshot is taken; payload files are never changed once in place, so
// copying them later copies what the snapshot saw, unless the exchange's
// payloads were removed meanwhile (see [ExchangeSnapshot.Payloads]).
//
// The read transaction stays open until Close: bbolt does not reuse the
// pages it sees meanwhile, and a write that must grow the file's mapping
// past its initial 1 GiB waits for it. Close it promptly.
type ExchangeSnapshot struct {
	tx       *bolt.Tx
	payloads []PayloadFile
}

// PayloadFile is a payload file of a snapshot.
type PayloadFile struct {
	Exchange, Name string
	Path           string // where it is on disk
}

// Snapshot takes a consistent copy of the store.
func (s *BoltExchangeStore) Snapshot() (*ExchangeSnapshot, error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: exchange store: snapshot: %w", err)
	}
	sn := &ExchangeSnapshot{tx: tx}
	entries, err := os.ReadDir(s.payloads)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		tx.Rollback()
		return nil, fmt.Errorf("middleoffice: exchange store: snapshot: %w", err)
	}
	exchanges := tx.Bucket(bucketExchanges)
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !validExchangeID(id) || exchanges == nil || exchanges.Get([]byte(id)) == nil {
			continue // not an exchange of the snapshot (created after it)
		}
		files, err := os.ReadDir(filepath.Join(s.payloads, id))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("middleoffice: exchange store: snapshot: %w", err)
		}
		for _, f := range files {
			name := f.Name()
			if !f.Type().IsRegular() || strings.HasPrefix(name, ".") || !payloadNameSyntax.MatchString(name) {
				continue // a payload being written (CreatePayload's temporary name)
			}
			sn.payloads = append(sn.payloads, PayloadFile{Exchange: id, Name: name, Path: filepath.Join(s.payloads, id, name)})
		}
	}
	return sn, nil
}

// DBSize is the size in bytes of the file WriteDB writes.
func (sn *ExchangeSnapshot) DBSize() int64 { return sn.tx.Size() }

// WriteDB writes the bbolt file of the snapshot (exchanges.db): DBSize
// bytes.
func (sn *ExchangeSnapshot) WriteDB(w io.Writer) (int64, error) {
	n, err := sn.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("middleoffice: exchange store: snapshot: %w", err)
	}
	return n, nil
}

// Exchanges is the number of exchanges the snapshot holds.
func (sn *ExchangeSnapshot) Exchanges() int {
	if b := sn.tx.Bucket(bucketExchanges); b != nil {
		return b.Stats().KeyN
	}
	return 0
}

// Payloads are the payload files of the snapshot's exchanges, to be
// copied to payloads/EXCHANGE/NAME beside exchanges.db. A file that is
// gone when it is read was removed with its exchange's payloads after the
// snapshot (an expired or shredded dossier): the restored exchange lacks
// it, as the node's own store does by then.
func (sn *ExchangeSnapshot) Payloads() []PayloadFile { return sn.payloads }

// Close ends the snapshot's read transaction.
func (sn *ExchangeSnapshot) Close() error { return sn.tx.Rollback() }
