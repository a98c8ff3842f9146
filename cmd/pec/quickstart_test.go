//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The quick start is a test.
//
// TestQuickstart runs the first section of README.md (up to its first "##"
// heading) as a new user would, from a fresh clone of the work tree:
//
//   - The first ```sh block is the two set-up commands, which run in their
//     test form. The first one, `go build -o pec ./cmd/pec && ./pec serve
//     --dev --dir ./pec-dev`, becomes ./pec (a link to this test binary,
//     which is pec under that name: TestMain) started in the background
//     with the serve command's own arguments; the test waits until it has
//     printed what the README's output block (the first ``` block without a
//     language) shows, line for line, and its listeners accept connections.
//     The second, ./scripts/test.sh, is what runs this test: recognized and
//     skipped. Any other set-up command fails the test, which must then
//     learn its test form.
//   - Every other ```sh block runs verbatim, in order, with bash -euo
//     pipefail, in the clone's root (each block on its own: shell variables
//     do not carry over), and must exit 0. A block after the line
//     `<!-- quickstart-test: the node is stopped here -->` runs once the
//     node has stopped on SIGINT (as Ctrl-C stops it), with exit status 0.
//     Blocks of other languages (```yaml, ```text, ...) are not run; a
//     ```bash, ```shell or ```console block is refused, to be written as
//     ```sh.
//   - Afterwards `git status` must be what it was before: the quick start
//     leaves nothing for git to add (pec-dev/, scratch/ and ./pec ignored).
//
// The README's addresses (127.0.0.1:8318, ...) are used as written, in a
// network namespace of the test's own, so that no other node on the machine
// can take the ports. Where the kernel refuses one, the test runs on the
// host's loopback and moves each listener to a free port (--listen NAME=,
// and the same address replaced in the blocks), and says so in its log.
func TestQuickstart(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := parseQuickstart(readme)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if err := qs.covers(); err != nil {
		t.Fatalf("README.md: %v", err)
	}
	for tool, pkg := range map[string]string{"git": "git", "bash": "bash", "openssl": "openssl", "curl": "curl", "pdfsig": "poppler-utils", "certutil": "libnss3-tools"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by the README's quick start: apt-get install %s", tool, pkg)
		}
	}
	switch os.Getenv(quickstartNetnsEnv) {
	case "":
		if !inNetns(t) {
			qs.moveToFreePorts(t)
			break
		}
		return
	case "1":
		if err := loopbackUp(); err != nil {
			t.Fatalf("network namespace: loopback up: %v", err)
		}
	default: // "host": as where the kernel refuses a namespace
		qs.moveToFreePorts(t)
	}
	qs.run(t, root)
}

// quickstartNetnsEnv is 1 in the run of this test inside its network
// namespace; "host" makes the test use the host's loopback with free
// ports, as it does where the kernel refuses it a namespace.
const quickstartNetnsEnv = "PEC_TEST_QUICKSTART_NETNS"

// stopMarker stops the node before the next block.
const stopMarker = "<!-- quickstart-test: the node is stopped here -->"

type quickstart struct {
	serve  []string // the serve command's arguments (after "pec")
	built  bool     // the set-up command builds ./pec: the blocks run it as ./pec
	output []string // what the README shows the node printing (non-empty lines)
	addrs  []listenAddr
	blocks []shBlock
}

type listenAddr struct{ name, hostPort string }

type shBlock struct {
	line       int // of the opening fence in README.md
	text       string
	stopBefore bool
}

var (
	fenceRE     = regexp.MustCompile("^```([A-Za-z0-9_+-]*)\\s*$")
	outputURLRE = regexp.MustCompile(`^\s+([a-z]+)\s+https?://([^/\s]+)/`)
	commentRE   = regexp.MustCompile(`\s+#.*$`)
	buildServe  = "go build -o pec ./cmd/pec && ./pec "
	runServe    = "go run ./cmd/pec "
	testCommand = "./scripts/test.sh"
)

// parseQuickstart reads the README's first section.
func parseQuickstart(readme []byte) (*quickstart, error) {
	qs := &quickstart{}
	var (
		inFence, isSh, stop, setupSeen, outputSeen bool
		lang                                       string
		start                                      int
		body                                       []string
	)
	lines := strings.Split(string(readme), "\n")
	for i, line := range lines {
		n := i + 1
		if !inFence && strings.HasPrefix(line, "## ") {
			break
		}
		m := fenceRE.FindStringSubmatch(line)
		switch {
		case !inFence && m != nil:
			inFence, lang, start, body = true, m[1], n, nil
			isSh = lang == "sh"
			switch lang {
			case "bash", "shell", "console", "shell-session", "zsh":
				return nil, fmt.Errorf("line %d: a ```%s block: write shell blocks as ```sh, which the quick-start test runs", n, lang)
			}
			if stop && !isSh {
				return nil, fmt.Errorf("line %d: %s must be followed by a ```sh block", n, stopMarker)
			}
		case !inFence && strings.HasPrefix(strings.TrimSpace(line), "<!-- quickstart-test:"):
			if strings.TrimSpace(line) != stopMarker {
				return nil, fmt.Errorf("line %d: unknown quick-start test marker %q (the one known: %s)", n, strings.TrimSpace(line), stopMarker)
			}
			stop = true
		case inFence && strings.TrimSpace(line) == "```":
			inFence = false
			text := strings.Join(body, "\n") + "\n"
			switch {
			case isSh && !setupSeen:
				if stop {
					return nil, fmt.Errorf("line %d: %s before the set-up commands", start, stopMarker)
				}
				setupSeen = true
				if err := qs.setup(start, text); err != nil {
					return nil, err
				}
			case isSh:
				qs.blocks = append(qs.blocks, shBlock{line: start, text: text, stopBefore: stop})
				stop = false
			case lang == "" && setupSeen && !outputSeen:
				outputSeen = true
				for _, l := range body {
					if strings.TrimSpace(l) == "" {
						continue
					}
					qs.output = append(qs.output, l)
					if m := outputURLRE.FindStringSubmatch(l); m != nil {
						qs.addrs = append(qs.addrs, listenAddr{m[1], m[2]})
					}
				}
			}
		case inFence:
			body = append(body, line)
		}
	}
	switch {
	case inFence:
		return nil, fmt.Errorf("line %d: the block opened here is not closed", start)
	case stop:
		return nil, fmt.Errorf("%s is not followed by a ```sh block", stopMarker)
	case !setupSeen:
		return nil, errors.New("the first section has no ```sh block of set-up commands")
	case len(qs.output) == 0:
		return nil, errors.New("the first section shows no output of the node (a ``` block after the set-up commands)")
	case len(qs.addrs) == 0:
		return nil, errors.New("the node's output in the README names no listener (\"  NAME URL\" lines)")
	}
	return qs, nil
}

// setup checks the first block: exactly two commands, one that runs the
// platform and one that runs every test, in forms the test knows.
func (qs *quickstart) setup(line int, text string) error {
	var cmds []string
	for l := range strings.Lines(text) {
		l = strings.TrimSpace(commentRE.ReplaceAllString(strings.TrimSpace(l), ""))
		if l != "" && !strings.HasPrefix(l, "#") {
			cmds = append(cmds, l)
		}
	}
	if len(cmds) != 2 {
		return fmt.Errorf("line %d: the set-up block has %d commands, want 2: one runs the platform, one runs all tests", line, len(cmds))
	}
	var rest string
	switch {
	case strings.HasPrefix(cmds[0], buildServe):
		rest, qs.built = strings.TrimPrefix(cmds[0], buildServe), true
	case strings.HasPrefix(cmds[0], runServe):
		rest = strings.TrimPrefix(cmds[0], runServe)
	default:
		return fmt.Errorf("line %d: the quick-start test has no test form of the set-up command %q (it knows %q and %q)", line, cmds[0], buildServe+"serve ...", runServe+"serve ...")
	}
	qs.serve = strings.Fields(rest)
	if strings.ContainsAny(rest, `'"$;&|<>()\`+"`") || len(qs.serve) == 0 || qs.serve[0] != "serve" || !slices.Contains(qs.serve, "--dev") {
		return fmt.Errorf("line %d: the quick-start test runs %q as a plain `pec serve --dev ...` and cannot: no shell syntax there", line, rest)
	}
	if cmds[1] != testCommand {
		return fmt.Errorf("line %d: the second set-up command is %q; the quick-start test knows %q (it is what runs the test)", line, cmds[1], testCommand)
	}
	return nil
}

// covers checks that the blocks still show what the quick start promises:
// a timestamp, a CAdES and a PAdES signature each checked by a tool nobody
// here wrote, pdfsig's verdict read, a proof exported and verified offline.
func (qs *quickstart) covers() error {
	var all strings.Builder
	for _, b := range qs.blocks {
		all.WriteString(b.text)
	}
	var missing []string
	for _, want := range []string{"openssl ts -verify", "openssl cms -verify", "pdfsig -nssdir", "Signature is Valid", "Certificate is Trusted", "pec proof export", "pec proof verify"} {
		if !strings.Contains(all.String(), want) {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the quick start's blocks no longer show %q", missing)
	}
	return nil
}

// moveToFreePorts replaces each listener address of the README by a free
// loopback port: in the serve command, the expected output and the blocks.
func (qs *quickstart) moveToFreePorts(t *testing.T) {
	var pairs []string
	for _, a := range qs.addrs {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		moved := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		qs.serve = append(qs.serve, "--listen", a.name+"="+moved)
		pairs = append(pairs, a.hostPort, moved)
	}
	t.Logf("no network namespace of our own: the README's listeners are moved to free ports (%q)", pairs)
	r := strings.NewReplacer(pairs...)
	for i := range qs.output {
		qs.output[i] = r.Replace(qs.output[i])
	}
	for i := range qs.addrs {
		qs.addrs[i].hostPort = r.Replace(qs.addrs[i].hostPort)
	}
	for i := range qs.blocks {
		qs.blocks[i].text = r.Replace(qs.blocks[i].text)
	}
}

func (qs *quickstart) run(t *testing.T, root string) {
	clone := freshClone(t, root)
	before := gitStatus(t, clone)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// This binary is pec when run under that name (TestMain).
	path, argv0 := exe, "pec"
	if qs.built {
		// The test form of `go build -o pec ./cmd/pec`.
		path, argv0 = "./pec", "./pec"
		if err := os.Symlink(exe, filepath.Join(clone, "pec")); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("set-up: %s %s (in the background); %s skipped: it runs this test", argv0, strings.Join(qs.serve, " "), testCommand)
	node := startQuickstartNode(t, clone, path, argv0, qs.serve)
	if err := node.waitFor(qs.output, 3*time.Minute); err != nil {
		t.Fatalf("the node does not print what the README shows: %v\nREADME:\n%s\nnode's stdout:\n%s\nnode's stderr:\n%s",
			err, strings.Join(qs.output, "\n"), node.stdout(), node.stderrText())
	}
	for _, a := range qs.addrs {
		c, err := net.DialTimeout("tcp", a.hostPort, 5*time.Second)
		if err != nil {
			t.Fatalf("the node printed its %s listener %s but does not accept connections there: %v", a.name, a.hostPort, err)
		}
		c.Close()
	}

	for _, b := range qs.blocks {
		if b.stopBefore && node.running() {
			if err := node.stop(time.Minute); err != nil {
				t.Fatalf("README.md:%d: stopping the node before this block: %v\nnode's stderr:\n%s", b.line, err, node.stderrText())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", b.text)
		cmd.Dir = clone
		cmd.WaitDelay = 5 * time.Second
		start := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("README.md:%d (%.1fs):\n%s%s", b.line, time.Since(start).Seconds(), indent(b.text, "  $ "), indent(string(out), "  "))
		if err != nil {
			t.Fatalf("README.md:%d: the block fails (%v):\n%s\noutput:\n%s\nnode's stderr (last lines):\n%s",
				b.line, err, b.text, out, lastLines(node.stderrText(), 20))
		}
	}
	if node.running() {
		if err := node.stop(time.Minute); err != nil {
			t.Fatalf("stopping the node after the quick start: %v", err)
		}
	}
	if after := gitStatus(t, clone); after != before {
		t.Errorf("the quick start leaves files for git to add (git status --porcelain):\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// repoRoot is the top of the work tree holding this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the quick-start test runs from a git checkout (git rev-parse: %v)", err)
	}
	return strings.TrimSpace(string(out))
}

// freshClone is a clone of root's repository at its HEAD, with root's work
// tree laid over it (tracked files as they are now, untracked files that
// git does not ignore): what a user gets by cloning once the work is
// committed.
func freshClone(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pec")
	git := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return string(out)
	}
	head := strings.TrimSpace(git("-C", root, "rev-parse", "HEAD"))
	git("clone", "--quiet", "--shared", "--no-checkout", root, dir)
	git("-C", dir, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", head)
	for name := range strings.SplitSeq(git("-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"), "\x00") {
		if name == "" {
			continue
		}
		if err := copyEntry(filepath.Join(root, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// copyEntry copies a file or symbolic link; a source that is gone (a file
// deleted in the work tree) is removed from the copy.
func copyEntry(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return os.RemoveAll(dst)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	_ = os.Remove(dst)
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if !fi.Mode().IsRegular() {
		return nil // a submodule's directory: not the quick start's business
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, fi.Mode().Perm())
}

func gitStatus(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=all").Output()
	if err != nil {
		t.Fatalf("git status: %v", err)
	}
	return string(out)
}

// qsNode is the node of the first set-up command, in the background.
type qsNode struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer // under mu
	done   chan struct{}
	err    error
}

func startQuickstartNode(t *testing.T, dir, path, argv0 string, args []string) *qsNode {
	t.Helper()
	n := &qsNode{done: make(chan struct{})}
	n.cmd = exec.Command(path, args...)
	n.cmd.Args[0] = argv0
	n.cmd.Dir = dir
	// Gone with the test, even when it is killed (a timeout).
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.cmd.Stderr = &lockedWriter{w: &n.stderr, mu: &n.mu}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n.mu.Lock()
			n.lines = append(n.lines, sc.Text())
			n.mu.Unlock()
		}
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		if n.running() {
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	})
	return n
}

// waitFor waits until the node has printed the want lines, in that order
// (other lines may come between): the first within timeout (the node's
// init makes its keys first), the others within 10 s of it (the node
// prints them together).
func (n *qsNode) waitFor(want []string, timeout time.Duration) error {
	deadline := time.After(timeout)
	var rest <-chan time.Time
	for {
		n.mu.Lock()
		matched := 0
		for _, l := range n.lines {
			if matched < len(want) && l == want[matched] {
				matched++
			}
		}
		n.mu.Unlock()
		if matched == len(want) {
			return nil
		}
		if matched > 0 && rest == nil {
			rest = time.After(10 * time.Second)
		}
		select {
		case <-n.done:
			return fmt.Errorf("the node exited (%v) before printing %q", n.err, want[matched])
		case <-deadline:
			return fmt.Errorf("no line %q within %s", want[matched], timeout)
		case <-rest:
			return fmt.Errorf("no line %q within 10s of %q", want[matched], want[0])
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *qsNode) running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// stop sends SIGINT, as Ctrl-C does, and wants exit status 0.
func (n *qsNode) stop(timeout time.Duration) error {
	if err := n.cmd.Process.Signal(os.Interrupt); err != nil {
		return err
	}
	select {
	case <-n.done:
		if n.err != nil {
			return fmt.Errorf("the node ended with %v", n.err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the node has not stopped %s after SIGINT", timeout)
	}
}

func (n *qsNode) stderrText() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stderr.String()
}

func (n *qsNode) stdout() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// inNetns runs this test again in a network namespace of its own (and, for
// a user other than root, a user namespace mapping it to root there, which
// may bring the loopback interface up). It reports false, having run
// nothing, when the kernel refuses the namespaces.
func inNetns(t *testing.T) bool {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-test.run=^TestQuickstart$", "-test.v", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), quickstartNetnsEnv+"=1")
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Logf("no network namespace (%v)", err)
		return false
	}
	err = cmd.Wait()
	t.Logf("in a network namespace of its own:\n%s", indent(out.String(), "  "))
	if err != nil {
		t.Fatalf("the quick start fails (%v): see above", err)
	}
	return true
}

// loopbackUp brings up lo, which a new network namespace has down.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	// struct ifreq: the name, then (in the union) the flags.
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	ifr.flags |= syscall.IFF_UP
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}

func indent(s, prefix string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		b.WriteString(prefix + l)
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestParseQuickstart: the README's first section is read as the quick
// start test expects, and each way of breaking that contract is refused
// with the line that breaks it.
func TestParseQuickstart(t *testing.T) {
	const setup = "```sh\n" +
		"go build -o pec ./cmd/pec && ./pec serve --dev --dir ./pec-dev   # run\n" +
		"./scripts/test.sh   # test\n" +
		"```\n"
	const output = "```\nPEC is serving (config pec-dev/pec.yaml):\n  tsa  http://127.0.0.1:8318/tsa\n```\n"
	const block = "```sh\necho one\n```\n"

	t.Run("README.md", func(t *testing.T) {
		readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		qs, err := parseQuickstart(readme)
		if err != nil {
			t.Fatal(err)
		}
		if err := qs.covers(); err != nil {
			t.Fatal(err)
		}
		if len(qs.addrs) < 2 || !qs.built || qs.serve[0] != "serve" {
			t.Errorf("listeners %v, built %v, serve %q", qs.addrs, qs.built, qs.serve)
		}
	})
	t.Run("valid", func(t *testing.T) {
		qs, err := parseQuickstart([]byte("# T\n" + setup + output + block + stopMarker + "\n```sh\necho two\n```\n```yaml\nnot: run\n```\n## Next\n```sh\nnot in the section\n```\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := []shBlock{{line: 10, text: "echo one\n"}, {line: 14, text: "echo two\n", stopBefore: true}}
		if !slices.Equal(qs.blocks, want) {
			t.Errorf("blocks %+v, want %+v", qs.blocks, want)
		}
		if got := strings.Join(qs.serve, " "); got != "serve --dev --dir ./pec-dev" || !qs.built {
			t.Errorf("serve %q built %v", got, qs.built)
		}
		if len(qs.addrs) != 1 || qs.addrs[0] != (listenAddr{"tsa", "127.0.0.1:8318"}) {
			t.Errorf("addrs %v", qs.addrs)
		}
		if err := qs.covers(); err == nil || !strings.Contains(err.Error(), "openssl ts -verify") {
			t.Errorf("covers: %v, want the missing checks named", err)
		}
	})
	t.Run("go run", func(t *testing.T) {
		qs, err := parseQuickstart([]byte("```sh\ngo run ./cmd/pec serve --dev --dir ./pec-dev\n./scripts/test.sh\n```\n" + output))
		if err != nil {
			t.Fatal(err)
		}
		if qs.built {
			t.Error("go run does not build ./pec")
		}
	})
	for _, tc := range []struct{ name, readme, want string }{
		{"no set-up", "# T\ntext\n", "no ```sh block of set-up commands"},
		{"three set-up commands", "```sh\ngo run ./cmd/pec serve --dev --dir d\n./scripts/test.sh\nmake\n```\n" + output, "has 3 commands, want 2"},
		{"one set-up command", "```sh\n./scripts/test.sh\n```\n" + output, "has 1 commands, want 2"},
		{"unknown set-up", "```sh\ndocker compose up\n./scripts/test.sh\n```\n" + output, `no test form of the set-up command "docker compose up"`},
		{"shell syntax in serve", "```sh\ngo run ./cmd/pec serve --dev --dir \"$D\"\n./scripts/test.sh\n```\n" + output, "no shell syntax there"},
		{"no --dev", "```sh\ngo run ./cmd/pec serve --config x.yaml\n./scripts/test.sh\n```\n" + output, "plain `pec serve --dev"},
		{"other test command", "```sh\ngo run ./cmd/pec serve --dev --dir d\ngo test ./...\n```\n" + output, `the second set-up command is "go test ./..."`},
		{"bash block", setup + output + "```bash\necho\n```\n", "line 9: a ```bash block"},
		{"console block", setup + output + "```console\n$ echo\n```\n", "a ```console block"},
		{"unclosed", setup + output + "```sh\necho\n", "line 9: the block opened here is not closed"},
		{"unknown marker", setup + output + "<!-- quickstart-test: skip -->\n" + block, "line 9: unknown quick-start test marker"},
		{"marker before text block", setup + output + stopMarker + "\n```\nout\n```\n", "must be followed by a ```sh block"},
		{"marker at the end", setup + output + block + stopMarker + "\n## Next\n", "is not followed by a ```sh block"},
		{"marker before set-up", stopMarker + "\n" + setup + output, "before the set-up commands"},
		{"no output", setup + block, "shows no output of the node"},
		{"output without listeners", setup + "```\nPEC is serving\n```\n", "names no listener"},
		{"set-up after the section", "# T\n## Next\n" + setup + output, "no ```sh block of set-up commands"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseQuickstart([]byte(tc.readme))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestSamplePDF: the PDF that pec init writes for the quick start is the
// same bytes each time, its cross-reference table points at its objects
// (ISO 32000-1 §7.5.4), and poppler reads it without a complaint (pdfsig
// signs and checks it in TestQuickstart and sign.txtar's kind of run).
func TestSamplePDF(t *testing.T) {
	pdf := samplePDF()
	if !bytes.Equal(pdf, samplePDF()) {
		t.Fatal("samplePDF differs between two calls")
	}
	if !bytes.HasPrefix(pdf, []byte("%PDF-1.7\n")) || !bytes.HasSuffix(pdf, []byte("%%EOF\n")) {
		t.Fatalf("not a PDF 1.7 file: %.20q ... %q", pdf, pdf[len(pdf)-8:])
	}
	m := regexp.MustCompile(`startxref\n(\d+)\n%%EOF\n$`).FindSubmatch(pdf)
	if m == nil {
		t.Fatal("no startxref")
	}
	xref, _ := strconv.Atoi(string(m[1]))
	if !bytes.HasPrefix(pdf[xref:], []byte("xref\n0 ")) {
		t.Fatalf("startxref %d does not point at the xref table: %.20q", xref, pdf[xref:])
	}
	entries := regexp.MustCompile(`(\d{10}) 00000 n \n`).FindAllSubmatch(pdf[xref:], -1)
	if len(entries) != 6 {
		t.Fatalf("%d objects in the xref table, want 6", len(entries))
	}
	for i, e := range entries {
		off, _ := strconv.Atoi(string(e[1]))
		if want := fmt.Sprintf("%d 0 obj\n", i+1); !bytes.HasPrefix(pdf[off:], []byte(want)) {
			t.Errorf("object %d: offset %d holds %.12q", i+1, off, pdf[off:])
		}
	}
	// The stream's /Length is its length.
	sm := regexp.MustCompile(`(?s)<< /Length (\d+) >>\nstream\n(.*?)endstream`).FindSubmatch(pdf)
	if sm == nil {
		t.Fatal("no content stream")
	}
	if n, _ := strconv.Atoi(string(sm[1])); n != len(sm[2]) {
		t.Errorf("/Length %d, stream of %d bytes", n, len(sm[2]))
	}

	path := filepath.Join(t.TempDir(), "doc.pdf")
	if err := os.WriteFile(path, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("pdftotext", path, "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	text, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("pdftotext (poppler-utils): %v\n%s", err, stderr.Bytes())
	}
	for line := range strings.Lines(sampleText) {
		if !bytes.Contains(text, []byte(strings.TrimSpace(line))) {
			t.Errorf("pdftotext does not find %q in:\n%s", strings.TrimSpace(line), text)
		}
	}
}

// TestInitWithoutCertutil: where certutil is not installed, pec init still
// makes the node and says how to make the NSS database pdfsig needs.
func TestInitWithoutCertutil(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no certutil, nor anything else
	dir := filepath.Join(t.TempDir(), "node")
	var out bytes.Buffer
	if err := initNode(t.Context(), initOptions{dir: dir, softwareKeys: true}, &out); err != nil {
		t.Fatal(err)
	}
	want := "NSS database for pdfsig: not made, certutil is missing (apt-get install libnss3-tools, then: certutil -N -d sql:" + dir + "/nssdb --empty-password && certutil -A -d sql:" + dir + "/nssdb -n 'PEC development root CA' -t CT,C,C -i " + dir + "/pki/root-ca.pem)"
	if !strings.Contains(out.String(), want) {
		t.Errorf("init printed:\n%s\nwant a line:\n%s", out.String(), want)
	}
	if _, err := os.Stat(filepath.Join(dir, "nssdb")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nssdb: %v, want none", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "samples", "doc.pdf")); err != nil {
		t.Error(err)
	}
}
