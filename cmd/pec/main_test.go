package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		// A pec process that a test starts and kills (crash_test.go).
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	testscript.Main(pgMain{m}, map[string]func(){ // pgMain: pgstores_test.go
		"pec": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI contract: testdata/*.txtar, one script each, with
// the real binary, real SoftHSM2 tokens and OpenSSL as the independent peer.
func TestScripts(t *testing.T) {
	for tool, pkg := range map[string]string{"openssl": "openssl", "pdfsig": "poppler-utils", "certutil": "libnss3-tools"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by the CLI scripts: apt-get install %s", tool, pkg)
		}
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			// Free loopback ports for the services of `pec serve`.
			for _, name := range []string{"TSA_PORT", "API_PORT", "OPS_PORT", "TSA2_PORT", "OPS2_PORT", "PG_PORT"} {
				port, err := freePort()
				if err != nil {
					return err
				}
				env.Setenv(name, strconv.Itoa(port))
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":    cmdExits,
			"waitfor":  cmdWaitFor,
			"perm":     cmdPerm,
			"httpget":  cmdHTTPGet,
			"httppost": cmdHTTPPost,
			"replace":  cmdReplace,
			"pg":       cmdPG,
			"tsaload":  cmdTSALoad,
			"sleep":    cmdSleep,
			"hup":      cmdHUP, // keys_test.go
		},
	})
}

// exits N command [args...]: the command must exit with status N.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// waitfor URL: poll until URL answers 200 (at most 60 s).
func cmdWaitFor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfor URL")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(args[0])
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfor %s: no 200 within 60s (last error: %v)", args[0], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// perm MODE FILE: the file's permission bits are MODE (octal).
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: perm MODE FILE")
	}
	want, err := strconv.ParseUint(args[0], 8, 32)
	if err != nil {
		ts.Fatalf("perm: %v", err)
	}
	fi, err := os.Stat(ts.MkAbs(args[1]))
	ts.Check(err)
	got := uint64(fi.Mode().Perm())
	if (got == want) == neg {
		ts.Fatalf("%s has mode %s, want %s%#o", args[1], fmt.Sprintf("%#o", got), map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// httpget URL: GET URL (200 expected); the body becomes stdout.
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: httpget URL")
	}
	resp, err := http.Get(args[0])
	ts.Check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	ts.Check(err)
	if resp.StatusCode != http.StatusOK {
		ts.Fatalf("GET %s: %s", args[0], resp.Status)
	}
	_, _ = ts.Stdout().Write(body)
}

// httppost URL CONTENT-TYPE FILE OUT: POST FILE, save the body (200 expected) to OUT.
func cmdHTTPPost(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: httppost URL CONTENT-TYPE FILE OUT")
	}
	f, err := os.Open(ts.MkAbs(args[2]))
	ts.Check(err)
	defer f.Close()
	resp, err := http.Post(args[0], args[1], f)
	ts.Check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	ts.Check(err)
	if resp.StatusCode != http.StatusOK {
		ts.Fatalf("POST %s: %s", args[0], resp.Status)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[3]), body, 0o644))
}

// replace FILE OLD NEW OUT: write FILE to OUT with the first OLD replaced
// by NEW (a tampered copy of a signed file).
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: replace FILE OLD NEW OUT")
	}
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	if !bytes.Contains(data, []byte(args[1])) {
		ts.Fatalf("replace: %q not in %s", args[1], args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[3]), bytes.Replace(data, []byte(args[1]), []byte(args[2]), 1), 0o644))
}

// sleep DURATION: wait, while the background commands run.
func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sleep DURATION")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}

// pg start|restart|stop: a throw-away PostgreSQL 15 cluster in a
// temporary directory ($PG_DIR; not under $WORK, which user postgres
// cannot enter) with initdb and pg_ctl, run as user postgres when the
// tests run as root (initdb refuses root), on a unix socket; start sets
// $PEC_PG_URL. restart stops it (-m fast: clients are disconnected) and
// starts it again after half a second. Stopped at the end of the script.
func cmdPG(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: pg start|restart|stop")
	}
	const bin = "/usr/lib/postgresql/15/bin"
	dir := ts.Getenv("PG_DIR")
	if args[0] == "start" {
		d, err := os.MkdirTemp("", "pec-pg-")
		ts.Check(err)
		ts.Defer(func() { os.RemoveAll(d) })
		ts.Setenv("PG_DIR", d)
		dir = d
	}
	data := filepath.Join(dir, "data")
	run := func(args ...string) {
		if os.Geteuid() == 0 {
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			ts.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	ctl := func(args ...string) { run(append([]string{filepath.Join(bin, "pg_ctl"), "-D", data}, args...)...) }
	start := func() {
		opts := fmt.Sprintf("-k %s -p %s -c listen_addresses= -c fsync=on", dir, ts.Getenv("PG_PORT"))
		ctl("-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start")
	}
	switch args[0] {
	case "start":
		if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
			ts.Fatalf("PostgreSQL 15 is needed by this script: apt-get install postgresql-15")
		}
		if os.Geteuid() == 0 {
			u, err := user.Lookup("postgres")
			ts.Check(err)
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			ts.Check(os.Chown(dir, uid, gid))
		}
		run(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
		start()
		ts.Defer(func() { ctl("-m", "immediate", "stop") })
		ts.Setenv("PEC_PG_URL", fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", dir, ts.Getenv("PG_PORT")))
	case "restart":
		ctl("-m", "fast", "-w", "stop")
		time.Sleep(500 * time.Millisecond)
		start()
	case "stop":
		ctl("-m", "fast", "-w", "stop")
	default:
		ts.Fatalf("usage: pg start|restart|stop")
	}
}

// tsaLoad is the load of one script: clients of the nodes' TSAs and
// watchers of their /readyz.
type tsaLoad struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	ids   []string // PEC-Evidence-ID of every token received
	stats map[string]*nodeStats
	fault []string
}

type nodeStats struct {
	ok, unavailable, refused, notReady int
}

var tsaLoads sync.Map // *testscript.TestScript → *tsaLoad

// tsaload start BASE-URL... | tsaload stop IDS-FILE: 4 clients per node
// post RFC 3161 requests to BASE-URL/tsa one after another, as clients that
// obey 503 + Retry-After, while /readyz is polled every 10 ms. A node that
// is down (connection refused) is retried. stop writes the evidence id of
// every token received to IDS-FILE and prints, per node, the tokens
// received, the answers 503 (each with Retry-After and an RFC 3161
// systemFailure), the refused connections and the /readyz 503 seen. Any
// other answer fails the script.
func cmdTSALoad(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: tsaload start BASE-URL... | tsaload stop IDS-FILE")
	}
	switch args[0] {
	case "start":
		req, err := os.ReadFile(ts.MkAbs("req.tsq"))
		ts.Check(err)
		ld := &tsaLoad{stop: make(chan struct{}), stats: map[string]*nodeStats{}}
		tsaLoads.Store(ts, ld)
		client := &http.Client{Timeout: 10 * time.Second}
		for _, base := range args[1:] {
			st := &nodeStats{}
			ld.stats[base] = st
			for range 4 {
				ld.wg.Go(func() { ld.client(client, base, req, st) })
			}
			ld.wg.Go(func() { ld.watch(client, base, st) })
		}
	case "stop":
		v, ok := tsaLoads.LoadAndDelete(ts)
		if !ok {
			ts.Fatalf("tsaload stop: no load started")
		}
		ld := v.(*tsaLoad)
		close(ld.stop)
		ld.wg.Wait()
		ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(strings.Join(ld.ids, "\n")+"\n"), 0o644))
		for base, st := range ld.stats {
			fmt.Fprintf(ts.Stdout(), "%s: %d tokens, %d unavailable, %d refused, %d not ready\n", base, st.ok, st.unavailable, st.refused, st.notReady)
		}
		if len(ld.fault) > 0 {
			ts.Fatalf("tsaload: %d wrong answers, the first: %s", len(ld.fault), ld.fault[0])
		}
	default:
		ts.Fatalf("usage: tsaload start BASE-URL... | tsaload stop IDS-FILE")
	}
}

func (ld *tsaLoad) client(client *http.Client, base string, req []byte, st *nodeStats) {
	for {
		select {
		case <-ld.stop:
			return
		default:
		}
		resp, err := client.Post(base+"/tsa", "application/timestamp-query", bytes.NewReader(req))
		if err != nil {
			ld.mu.Lock()
			st.refused++
			ld.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ld.mu.Lock()
		switch {
		case err != nil:
			st.refused++ // the node died during the answer
		case resp.StatusCode == http.StatusOK && resp.Header.Get("PEC-Evidence-ID") != "":
			st.ok++
			ld.ids = append(ld.ids, resp.Header.Get("PEC-Evidence-ID"))
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" &&
			resp.Header.Get("Content-Type") == "application/timestamp-reply" && bytes.HasSuffix(body, []byte{0x03, 0x05, 0x06, 0x00, 0x00, 0x00, 0x40}):
			// PKIStatus rejection (2) whose failInfo, last, is systemFailure
			// (bit 25): BIT STRING 03 05 06 00 00 00 40.
			st.unavailable++
		default:
			ld.fault = append(ld.fault, fmt.Sprintf("%s: %s, Retry-After %q, %d bytes", base, resp.Status, resp.Header.Get("Retry-After"), len(body)))
		}
		ld.mu.Unlock()
		if resp.StatusCode == http.StatusServiceUnavailable {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (ld *tsaLoad) watch(client *http.Client, base string, st *nodeStats) {
	for {
		select {
		case <-ld.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			ld.mu.Lock()
			st.notReady++
			ld.mu.Unlock()
		}
	}
}
