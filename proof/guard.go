package proof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"pec/internal/atomicfile"
)

// The rollback guard: the newest checkpoint a node sealed or saw is also
// kept in a file of its own, outside the store, written and synced before
// the checkpoint is published (as the TSA's serial file is before a serial
// is used). A store that is behind it or disagrees with it — an older copy
// put back, a bbolt meta page rolled back, a database restored — is refused
// at start and by audit, so that the node never signs a second checkpoint
// of a size it already signed, with another root.

// ErrRollback is wrapped by every *RollbackError.
var ErrRollback = errors.New("proof: the store was rolled back or forked")

// RollbackError says how the store disagrees with the saved checkpoint.
type RollbackError struct {
	File                 string // the checkpoint file
	SavedSize, StoreSize uint64
	SavedRoot, StoreRoot []byte // StoreRoot nil: the store holds no head
	Reason               string
}

func (e *RollbackError) Error() string {
	store := "the store holds no tree head"
	if e.StoreRoot != nil {
		store = fmt.Sprintf("the store's newest tree head has size %d (root %x)", e.StoreSize, e.StoreRoot)
	}
	return fmt.Sprintf("proof: %s: %s, but %s holds a checkpoint of size %d (root %x): %s",
		e.Reason, store, e.File, e.SavedSize, e.SavedRoot, "restore the newest copy of the store, or accept this one explicitly (pec proof accept-store)")
}

func (e *RollbackError) Unwrap() error { return ErrRollback }

// ReadSavedCheckpoint reads the checkpoint file at path and checks its
// signature with v: nil, nil when there is none.
func ReadSavedCheckpoint(path string, v *NoteVerifier) (*Checkpoint, []byte, error) {
	note, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("proof: checkpoint file: %w", err)
	}
	cp, err := OpenCheckpoint(v, "", note)
	if err != nil {
		return nil, nil, fmt.Errorf("proof: checkpoint file %s: %w", path, err)
	}
	return &cp, note, nil
}

// SaveCheckpoint writes note to path atomically and durably
// (atomicfile.WriteFile), creating its directory if needed.
func SaveCheckpoint(path string, note []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("proof: checkpoint file: %w", err)
	}
	if err := atomicfile.WriteFile(path, note, 0o600); err != nil {
		return fmt.Errorf("proof: checkpoint file: %w", err)
	}
	return nil
}

// CheckAgainstSaved checks that store holds the tree of the checkpoint
// saved in path, or a tree that extends it: a *RollbackError otherwise.
// With no saved checkpoint it checks nothing. It returns the saved
// checkpoint.
func CheckAgainstSaved(ctx context.Context, store Store, v *NoteVerifier, path string) (*Checkpoint, error) {
	saved, _, err := ReadSavedCheckpoint(path, v)
	if err != nil || saved == nil || saved.Size == 0 {
		return saved, err
	}
	rerr := &RollbackError{File: path, SavedSize: saved.Size, SavedRoot: saved.Root}
	latest, err := store.Latest(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		rerr.Reason = "the store is empty"
		return saved, rerr
	case err != nil:
		return saved, err
	}
	rerr.StoreSize, rerr.StoreRoot = latest.Size, latest.Root
	switch {
	case latest.Size < saved.Size:
		rerr.Reason = "the store is behind the node's newest checkpoint"
		return saved, rerr
	case latest.Size == saved.Size:
		if !bytes.Equal(latest.Root, saved.Root) {
			rerr.Reason = "the store's tree forks from the node's newest checkpoint"
			return saved, rerr
		}
		return saved, nil
	}
	h, err := store.HeadAt(ctx, saved.Size)
	if errors.Is(err, ErrNotFound) || (err == nil && !bytes.Equal(h.Root, saved.Root)) {
		rerr.Reason = fmt.Sprintf("the store's tree at size %d is not the node's newest checkpoint", saved.Size)
		return saved, rerr
	}
	if err != nil {
		return saved, err
	}
	p, err := ConsistencyProof(ctx, store, saved.Size, latest.Size)
	if err == nil {
		err = VerifyConsistency(saved.Size, latest.Size, p, saved.Root, latest.Root)
	}
	if err != nil {
		rerr.Reason = fmt.Sprintf("the store's tree does not extend the node's newest checkpoint (%v)", err)
		return saved, rerr
	}
	return saved, nil
}
