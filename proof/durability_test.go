package proof_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/proof"
)

// TestAckAfterStoreAppend: Log.Append returns only once the store's
// Append of its records has returned. The store is held inside Append;
// no caller, alone or in a group, may be answered meanwhile.
func TestAckAfterStoreAppend(t *testing.T) {
	e := newEnv(t)
	s := newFaultStore(t)
	l, _, _ := faultLog(t, e, s)
	for round, callers := range []int{1, 4, 16} {
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate, s.entered = gate, make(chan struct{}, 1)
		entered := s.entered
		s.mu.Unlock()
		type result struct {
			ids []string
			err error
		}
		results := make(chan result, callers)
		for i := range callers {
			go func() {
				ids, err := l.Append(t.Context(), sampleRecord(round*100+i))
				results <- result{ids, err}
			}()
		}
		select {
		case r := <-results:
			t.Fatalf("round %d: Append returned %v, %v before the store's Append was called", round, r.ids, r.err)
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the store's Append was not called in 10s", round)
		}
		select {
		case r := <-results:
			t.Fatalf("round %d: Append returned %v, %v while the store's Append had not returned", round, r.ids, r.err)
		case <-time.After(50 * time.Millisecond):
		}
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
		for range callers {
			r := <-results
			if r.err != nil {
				t.Fatalf("round %d: %v", round, r.err)
			}
			if !s.isDurable(r.ids...) {
				t.Fatalf("round %d: %v acknowledged, not durable in the store", round, r.ids)
			}
		}
	}
}

// TestAckOrderUnderLoad: concurrent writers share group commits; each is
// answered only once its own records are durable in the store.
func TestAckOrderUnderLoad(t *testing.T) {
	e := newEnv(t)
	s := newFaultStore(t)
	l, _, _ := faultLog(t, e, s)
	const writers, each = 16, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []string
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ids, err := l.Append(t.Context(), sampleRecord(w*each+i), sampleRecord(w*each+i+10000))
				if err != nil {
					t.Error(err)
					return
				}
				if !s.isDurable(ids...) {
					t.Errorf("%v acknowledged before the store's Append of them returned", ids)
					return
				}
				mu.Lock()
				all = append(all, ids...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitAllSealed(t, l, all)
	auditHeads(t, e, s)
}

// TestTracedChild is the writer that TestAckedOnlyAfterFdatasync runs
// under strace: the production embedded path (OpenBolt, proof.Open), 8
// goroutines appending, each acknowledgment printed with one write(2) to
// stdout once Append returned.
func TestTracedChild(t *testing.T) {
	dir := os.Getenv("PEC_PROOF_TRACE_DIR")
	if dir == "" {
		t.Skip("run by TestAckedOnlyAfterFdatasync")
	}
	// The parent kills strace at its deadline, which detaches this
	// process: it ends itself too.
	time.AfterFunc(2*time.Minute, func() {
		fmt.Fprintln(os.Stderr, "TestTracedChild: still running after 2 minutes")
		os.Exit(4)
	})
	e := loadEnv(t, dir)
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	l := e.openLog(t, s, fastSeal)
	var wg sync.WaitGroup
	for w := range tracedWriters {
		wg.Go(func() {
			for i := range tracedEach {
				rec := sampleRecord(w*tracedEach + i)
				rec.ID = fmt.Sprintf("trace-w%02d-%05d", w, i)
				if _, err := l.Append(t.Context(), rec); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				fmt.Fprintf(os.Stdout, "ack %s\n", rec.ID) // one write(2)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

const tracedWriters, tracedEach = 8, 40

// callResult is the end of a call in a strace line: ")", padding, "= "
// and the result.
var callResult = regexp.MustCompile(`\)\s*= (-?[0-9])`)

// tracedID is an id of TestTracedChild, as strace prints it in a buffer.
var tracedID = regexp.MustCompile(`trace-w[0-9]{2}-[0-9]{5}`)

// TestAckedOnlyAfterFdatasync traces the system calls of a real run of
// the embedded path (strace -f: pwrite64, fdatasync, write) and checks
// that no acknowledgment is written before an fdatasync of the
// write-ahead log's file descriptor, entered after the pwrite64 of the
// frame that holds the record, has returned 0. It sees a sync missing at
// any layer: the write-ahead log's Write, the store's Append, the log's
// acknowledgment.
func TestAckedOnlyAfterFdatasync(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatalf("strace is not installed (apt-get install strace): %v", err)
	}
	dir := t.TempDir()
	e := newEnv(t)
	e.save(t, dir)
	trace := filepath.Join(dir, "trace")
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, strace, "-f", "-qq", "--seccomp-bpf",
		"-e", "trace=pwrite64,fdatasync,write", "-e", "signal=none", "-s", "4194304", "-o", trace,
		os.Args[0], "-test.run=^TestTracedChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PEC_PROOF_TRACE_DIR="+dir, "TMPDIR="+dir)
	cmd.Stdout = stdout // a file: each acknowledgment is one blocking write
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("strace of the writer: %v (deadline: %v)", err, ctx.Err())
	}
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := checkTrace(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range v.violations[:min(len(v.violations), 10)] {
		t.Error(bad)
	}
	if len(v.violations) > 0 {
		t.Fatalf("%d of %d acknowledgments written before their record's fdatasync", len(v.violations), len(v.acked))
	}
	if len(v.acked) != tracedWriters*tracedEach || v.frames == 0 || v.syncs == 0 {
		t.Fatalf("the trace shows %d acknowledgments (want %d), %d frames written, %d fdatasyncs", len(v.acked), tracedWriters*tracedEach, v.frames, v.syncs)
	}
	// And the records are there, sealed by the child's Close.
	s := openBolt(t, filepath.Join(dir, "proof.db"))
	defer s.Close()
	for id := range v.acked {
		if _, err := s.Lookup(t.Context(), id); err != nil {
			t.Fatalf("acknowledged %s: %v", id, err)
		}
	}
	if _, err := proof.Audit(t.Context(), s, e.auditOptions()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledgments, %d frames, %d fdatasyncs of the write-ahead log: every acknowledgment after its sync", len(v.acked), v.frames, v.syncs)
}

type traceVerdict struct {
	acked        map[string]bool
	frames       int // pwrite64 of write-ahead log frames
	syncs        int // fdatasync of a file descriptor a frame was written to
	violations   []string
	lines, calls int
}

// checkTrace reads strace -f output. A system call is one line, or two
// when another thread's call came between ("<unfinished ...>", then
// "<... NAME resumed>"): strace stops a thread at each entry and exit
// and prints them in the order it saw them, so a call that returned
// before another began is printed before it.
func checkTrace(f *os.File) (*traceVerdict, error) {
	v := &traceVerdict{acked: map[string]bool{}}
	written := map[int]map[string]bool{} // fd -> ids pwritten, not yet covered by a sync
	durable := map[string]bool{}
	type open struct {
		name  string
		entry string
		cover []string // fdatasync: the ids written before it was entered
	}
	pending := map[string]*open{} // pid -> call entered, not yet returned
	entered := func(name, entry string) *open {
		o := &open{name: name, entry: entry}
		switch name {
		case "fdatasync":
			if fd, ok := firstArg(entry); ok {
				for id := range written[fd] {
					o.cover = append(o.cover, id)
				}
			}
		case "write":
			if fd, ok := firstArg(entry); ok && fd == 1 && strings.Contains(entry, `"ack `) {
				for _, id := range tracedID.FindAllString(entry, -1) {
					v.acked[id] = true
					if !durable[id] {
						v.violations = append(v.violations, fmt.Sprintf("acknowledgment of %s written before any fdatasync of its frame returned", id))
					}
				}
			}
		}
		return o
	}
	returned := func(o *open, result string) {
		v.calls++
		ret, err := strconv.ParseInt(strings.Fields(result + " x")[0], 10, 64)
		if err != nil || ret < 0 {
			return
		}
		fd, ok := firstArg(o.entry)
		if !ok {
			return
		}
		switch o.name {
		case "pwrite64":
			if !strings.HasPrefix(o.entry[strings.Index(o.entry, ",")+1:], ` "PWF1`) {
				return
			}
			v.frames++
			if written[fd] == nil {
				written[fd] = map[string]bool{}
			}
			for _, id := range tracedID.FindAllString(o.entry, -1) {
				written[fd][id] = true
			}
		case "fdatasync":
			if len(o.cover) > 0 {
				v.syncs++
			}
			for _, id := range o.cover {
				durable[id] = true
				delete(written[fd], id)
			}
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		v.lines++
		line := sc.Text()
		pid, rest, ok := strings.Cut(strings.TrimLeft(line, " "), " ")
		if !ok {
			continue
		}
		rest = strings.TrimLeft(rest, " ")
		if after, ok := strings.CutPrefix(rest, "<... "); ok {
			name, tail, _ := strings.Cut(after, " resumed>")
			o := pending[pid]
			delete(pending, pid)
			if o == nil || o.name != name {
				return nil, fmt.Errorf("trace line %d: %q resumes no call of %s", v.lines, line, pid)
			}
			m := callResult.FindAllStringSubmatchIndex(tail, -1)
			if m == nil {
				return nil, fmt.Errorf("trace line %d: %q: no result", v.lines, line)
			}
			returned(o, tail[m[len(m)-1][2]:])
			continue
		}
		name, _, ok := strings.Cut(rest, "(")
		if !ok || (name != "pwrite64" && name != "fdatasync" && name != "write") {
			continue
		}
		if entry, ok := strings.CutSuffix(rest, " <unfinished ...>"); ok {
			pending[pid] = entered(name, entry)
			continue
		}
		m := callResult.FindAllStringSubmatchIndex(rest, -1)
		if m == nil {
			return nil, fmt.Errorf("trace line %d: %q: no result", v.lines, line)
		}
		last := m[len(m)-1]
		returned(entered(name, rest[:last[0]]), rest[last[2]:])
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if v.calls == 0 {
		return nil, errors.New("the trace holds no system call")
	}
	return v, nil
}

// firstArg is the file descriptor of "name(fd, ...".
func firstArg(entry string) (int, bool) {
	_, args, ok := strings.Cut(entry, "(")
	if !ok {
		return 0, false
	}
	end := strings.IndexAny(args, ",)")
	if end < 0 {
		end = len(args)
	}
	fd, err := strconv.Atoi(strings.TrimSpace(args[:end]))
	return fd, err == nil
}
