package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockDataDir: one holder at a time; the refusal names the data
// directory and the holder's pid (here: this process, whose second open
// file description is refused like another process); nodeStopped sees the
// holder; the pid goes when the lock does.
func TestLockDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := nodeStopped(dir, "x"); err != nil {
		t.Fatalf("no lock file yet: %v", err)
	}
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	nr, ok := errors.AsType[*NodeRunningError](err)
	if !ok || nr.PID != os.Getpid() || nr.Dir != dir {
		t.Fatalf("second lock: %v (want the pid %d)", err, os.Getpid())
	}
	if want := "a pec node is already running on " + dir + " (pid "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q", err)
	}
	err = nodeStopped(dir, "stop it")
	if nr, ok := errors.AsType[*NodeRunningError](err); !ok || nr.PID != os.Getpid() || !strings.HasSuffix(err.Error(), ": stop it") {
		t.Errorf("nodeStopped while locked: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, lockFile)); err != nil || len(data) != 0 {
		t.Errorf("lock file after unlock: %q, %v", data, err)
	}
	if err := nodeStopped(dir, "x"); err != nil {
		t.Errorf("nodeStopped after unlock: %v", err)
	}
	unlock, err = lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock again: %v", err)
	}
	unlock()
}

// TestLockDataDirPID: an unknown or damaged pid is left out, not invented.
func TestLockDataDirPID(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"", "x\n", "-4\n", "0\n", strings.Repeat("9", 40)} {
		path := filepath.Join(t.TempDir(), lockFile)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if pid := readPID(path); pid != 0 {
			t.Errorf("readPID(%q) = %d", content, pid)
		}
	}
	if msg := (&NodeRunningError{Dir: "d"}).Error(); msg != "a pec node is already running on d: stop it first, or give this node its own data_dir" {
		t.Errorf("message with no pid: %q", msg)
	}
}

// TestListenError: each reason a listener fails says what to do.
func TestListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	cases := []struct{ addr, want string }{
		{addr, "listen api on " + addr + ": the address is in use (another pec serve? change listen.api or pass --listen api=HOST:PORT)"},
		// TEST-NET-1 (RFC 5737) is no address of this machine.
		{"192.0.2.1:0", "listen api on 192.0.2.1:0: no such address on this machine (a local address, 127.0.0.1 or 0.0.0.0? change listen.api or pass --listen api=HOST:PORT)"},
		{"127.0.0.1:99999", "listen api on 127.0.0.1:99999: listen tcp: address 99999: invalid port (change listen.api or pass --listen api=HOST:PORT)"},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct{ addr, want string }{"127.0.0.1:1", "listen api on 127.0.0.1:1: permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE: choose another port? change listen.api or pass --listen api=HOST:PORT)"})
	}
	for _, tc := range cases {
		l, err := net.Listen("tcp", tc.addr)
		if err == nil {
			l.Close()
			t.Errorf("%s: listened", tc.addr)
			continue
		}
		if got := listenError("api", tc.addr, err).Error(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.addr, got, tc.want)
		}
	}
}
