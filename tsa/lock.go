package tsa

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockWait is how long lockFile retries a lock held elsewhere. A lock
// belongs to an open file description, which a fork shares until the child
// execs: a file closed here may stay locked for the instant another
// goroutine takes to start a process. A second pec on the same data holds
// it for good and is refused once this time has passed.
const lockWait = 2 * time.Second

// lockFile takes an exclusive flock on f, so that no other process writes
// the same serial file or journal.
func lockFile(f *os.File, what string) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("tsa: %s %s: lock: %w", what, f.Name(), err)
		case time.Now().After(deadline):
			return fmt.Errorf("tsa: %s %s is in use by another process", what, f.Name())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
