// Package atomicfile replaces a file whole or not at all, durably: the
// state files a node must not lose or find half-written after a crash
// (the saved checkpoint, a monitor's state, the directory).
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path with mode perm: a temporary file in the
// same directory, written and synced, renamed over path, and the directory
// synced so that the rename itself survives a crash. Readers see the old
// contents or the new ones, never a mix.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
