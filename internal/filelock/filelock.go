// Package filelock takes exclusive flock(2) locks on the files that one
// process at a time may write: the TSA's serial file and journal, the
// evidence store's write-ahead log.
package filelock

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Wait is how long Lock retries a lock held elsewhere. A lock belongs to an
// open file description, which a fork shares until the child execs: a file
// closed here may stay locked for the instant another goroutine takes to
// start a process. A second pec on the same data holds it for good and is
// refused once this time has passed.
const Wait = 2 * time.Second

// ErrInUse: another process holds the lock.
var ErrInUse = errors.New("in use by another process (is a pec serve running on this data?)")

// Lock takes an exclusive flock on f, waiting up to Wait. The error names
// what f is ("serial file", "journal").
func Lock(f *os.File, what string) error {
	deadline := time.Now().Add(Wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("%s %s: lock: %w", what, f.Name(), err)
		case time.Now().After(deadline):
			return fmt.Errorf("%s %s: %w", what, f.Name(), ErrInUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
