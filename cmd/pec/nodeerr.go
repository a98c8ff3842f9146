package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"pec/hsm"
	"pec/internal/filelock"
)

// lockFile is the lock of a node's data directory, held by pec serve for
// its lifetime; it holds the pid of its holder.
const lockFile = "pec.lock"

// NodeRunningError is a data directory that another pec serve is using.
type NodeRunningError struct {
	Dir    string
	PID    int    // 0: not known (the other node had not written it yet)
	Advice string // what to do; "": stop it, or use another data_dir
}

func (e *NodeRunningError) Error() string {
	pid := ""
	if e.PID > 0 {
		pid = fmt.Sprintf(" (pid %d)", e.PID)
	}
	advice := cmpOr(e.Advice, "stop it first, or give this node its own data_dir")
	return fmt.Sprintf("a pec node is already running on %s%s: %s", e.Dir, pid, advice)
}

// nodeStopped returns a *NodeRunningError, with advice, when a pec serve
// holds the lock of data directory dir: the commands that open a stopped
// node's stores and files ask it first, so that they name the node rather
// than the first file they find locked.
func nodeStopped(dir, advice string) error {
	path := filepath.Join(dir, lockFile)
	f, err := os.Open(path)
	if err != nil {
		return nil // no lock file: no node ever served here
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return &NodeRunningError{Dir: dir, PID: readPID(path), Advice: advice}
	}
	return nil // closing f releases the shared lock
}

// lockDataDir takes the lock of the data directory dir (DIR/pec.lock, an
// flock that the kernel releases when the process ends, however it ends)
// and writes the pid into it: one node per data directory. The other locks
// (serial file, journal, stores) stay; this one comes first, before any key
// or store is opened, and names the node that holds it.
func lockDataDir(dir string) (unlock func() error, err error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data_dir: lock %s: %w", path, err)
	}
	if err := filelock.Lock(f, "data directory"); err != nil {
		f.Close()
		if errors.Is(err, filelock.ErrInUse) {
			return nil, &NodeRunningError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir: write the pid into %s: %w", path, err)
	}
	return func() error {
		_ = f.Truncate(0) // no pid left behind for a node that is gone
		return f.Close()
	}, nil
}

// readPID reads the pid that a node wrote into its lock file; 0 if none.
func readPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil || len(data) > 32 {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// listenError says why service name cannot listen on addr, and what to do.
func listenError(name, addr string, err error) error {
	var what string
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		what = "the address is in use (another pec serve?"
	case errors.Is(err, syscall.EACCES):
		what = "permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE: choose another port?"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		what = "no such address on this machine (a local address, 127.0.0.1 or 0.0.0.0?"
	default:
		var dns *net.DNSError
		if errors.As(err, &dns) {
			what = fmt.Sprintf("host %q not found (an IP address or a local host name?", dns.Name)
		} else {
			return fmt.Errorf("listen %s on %s: %w (change listen.%s or pass --listen %s=HOST:PORT)", name, addr, err, name, name)
		}
	}
	return fmt.Errorf("listen %s on %s: %s change listen.%s or pass --listen %s=HOST:PORT)", name, addr, what, name, name)
}

// keyError says that the key named by field (tsa.key_label, ...) cannot be
// had, and what to do when it is not on the token.
func keyError(field, label string, err error) error {
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return fmt.Errorf("%s %q: no such key in the HSM (check the label; pec init makes the keys of a development node, the HSM's own tool those of a production token): %w", field, label, err)
	}
	return fmt.Errorf("%s %q: %w", field, label, err)
}
