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
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		// A pec process that a test starts and kills (crash_test.go).
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	testscript.Main(m, map[string]func(){
		"pec": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI contract: testdata/*.txtar, one script each, with
// the real binary, real SoftHSM2 tokens and OpenSSL as the independent peer.
func TestScripts(t *testing.T) {
	for tool, pkg := range map[string]string{"openssl": "openssl", "pdfsig": "poppler-utils"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by the CLI scripts: apt-get install %s", tool, pkg)
		}
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			// Free loopback ports for the services of `pec serve`.
			for _, name := range []string{"TSA_PORT", "API_PORT"} {
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
