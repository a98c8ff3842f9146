package middleoffice

import (
	"errors"
	"os"
	"syscall"
)

// setDirect sets or clears O_DIRECT on f (fcntl F_SETFL, which Linux
// allows on an open file); false when it cannot.
func setDirect(f *os.File, on bool) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		if e != 0 {
			return
		}
		if on {
			flags |= syscall.O_DIRECT
		} else {
			flags &^= syscall.O_DIRECT
		}
		_, _, e = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFL, flags)
		ok = e == 0
	})
	return ok
}

// isDirect reports whether f has O_DIRECT (for the tests).
func isDirect(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var flags uintptr
	_ = rc.Control(func(fd uintptr) {
		flags, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	})
	return flags&syscall.O_DIRECT != 0
}

// directRefused: a write the file system refuses to do directly.
func directRefused(err error) bool { return errors.Is(err, syscall.EINVAL) }

// allocDirect maps n bytes of anonymous memory, page-aligned, outside the
// Go heap; nil when it cannot. They are never unmapped (see directFree).
func allocDirect(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil || len(b) != n {
		return nil
	}
	return b
}
