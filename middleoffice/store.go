package middleoffice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"pec/internal/atomicfile"
	"pec/internal/filelock"
)

// Store keeps the partners added or changed through the API, so that they
// survive a restart. The directory calls it under its own lock, one change
// at a time.
//
// The embedded implementation is [FileStore]. [PGStore] is for nodes
// sharing a PostgreSQL: one row per partner, each Put guarded by a
// counter of the directory's changes (so that two nodes' concurrent
// changes cannot both win), and the other nodes told through
// LISTEN/NOTIFY that they must Load again ([Directory.Follow]); both pass
// the same tests (storeSuite).
type Store interface {
	// Load returns every stored partner, sorted by id.
	Load(ctx context.Context) ([]Partner, error)
	// Put stores p in place of the partner with its id; the change is
	// durable when it returns nil, and absent when it fails.
	Put(ctx context.Context, p Partner) error
	// Close releases the store.
	Close() error
}

// FileStore is the embedded Store: one JSON file, rewritten whole and
// atomically at each change (a temporary file, fsync, rename, fsync of the
// directory), with a lock file that keeps a second process out.
//
// Why not a bbolt file, as the evidence log has: the directory is small
// (a few kilobytes a partner) and changes a few times a day, while its
// file is read at each start and is what an operator inspects, diffs and
// backs up; a rename is atomic, so a crash leaves the old file or the new
// one, never a torn write. It is safe for concurrent use.
type FileStore struct {
	mu       sync.Mutex
	path     string
	lock     *os.File
	partners map[string]Partner
}

// fileFormat is the file's content.
type fileFormat struct {
	Version  int       `json:"version"`
	Partners []Partner `json:"partners"`
}

const fileVersion = 1

// ErrStoreCorrupt: the store's file is not what FileStore writes.
var ErrStoreCorrupt = errors.New("middleoffice: directory store is not readable")

// OpenFile opens (or creates, at the first change) the store at path,
// taking the lock path+".lock".
func OpenFile(path string) (*FileStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := filelock.Lock(lock, "directory store"); err != nil {
		lock.Close()
		return nil, err
	}
	s := &FileStore{path: path, lock: lock, partners: map[string]Partner{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		lock.Close()
		return nil, err
	}
	var f fileFormat
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.Version != fileVersion {
		lock.Close()
		if err == nil {
			err = fmt.Errorf("version %d, want %d", f.Version, fileVersion)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrStoreCorrupt, path, err)
	}
	for _, p := range f.Partners {
		if _, dup := s.partners[p.ID]; dup || p.ID == "" {
			lock.Close()
			return nil, fmt.Errorf("%w: %s: partner %q twice or without id", ErrStoreCorrupt, path, p.ID)
		}
		s.partners[p.ID] = p
	}
	return s, nil
}

// Load implements Store.
func (s *FileStore) Load(context.Context) ([]Partner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Partner, 0, len(s.partners))
	for _, id := range slices.Sorted(maps.Keys(s.partners)) {
		out = append(out, s.partners[id].clone())
	}
	return out, nil
}

// Put implements Store.
func (s *FileStore) Put(_ context.Context, p Partner) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return errors.New("middleoffice: directory store closed")
	}
	next := maps.Clone(s.partners)
	next[p.ID] = p.clone()
	f := fileFormat{Version: fileVersion}
	for _, id := range slices.Sorted(maps.Keys(next)) {
		f.Partners = append(f.Partners, next[id])
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("middleoffice: directory store: %w", err)
	}
	s.partners = next
	return nil
}

// Close implements Store.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}
