// Package interop runs independent implementations (OpenSSL, and later gpg
// and swaks) from tests: they produce what PEC verifies, and verify what PEC
// produces. A missing tool fails the test, naming the apt package; it never
// skips, so a green run always means the interop checks ran.
package interop

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// Need fails t unless tool is on PATH, naming the apt package that installs
// it.
func Need(t testing.TB, tool, aptPackage string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s is required by this test but not found (%v): apt-get install %s", tool, err, aptPackage)
	}
}

// OpenSSL runs openssl with args and returns its standard output. On failure
// it logs the command and its standard error and fails t. It must be called
// from the test's goroutine; elsewhere (an HTTP handler) use [Run].
func OpenSSL(t testing.TB, args ...string) []byte {
	t.Helper()
	Need(t, "openssl", "openssl")
	out, err := Run("openssl", args...)
	if err != nil {
		t.Log(err)
		t.Fatalf("openssl %s failed", args[0])
	}
	return out
}

// Run runs a tool and returns its standard output. The error names the
// command and holds its standard error.
func Run(tool string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(tool, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("$ %s %s: %v\nstderr:\n%s", tool, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
