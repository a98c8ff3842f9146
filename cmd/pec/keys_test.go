package main

import (
	"bufio"
	"bytes"

	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// hup ARG METRICS-URL: send SIGHUP to the `pec serve` that this test
// started (a child of the test process) with ARG among its arguments, as
// an operator's kill -HUP does, then wait (30 s at most) until the node's
// /metrics counts one more reload (pec_keys_reloads_total), and fail if it
// counts a failed one. testscript's kill knows INT and KILL only.
func cmdHUP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: hup ARG METRICS-URL")
	}
	before := reloads(ts, args[1])
	pids := childServes(ts, args[0])
	if len(pids) != 1 {
		ts.Fatalf("hup: %d pec serve children with argument %q", len(pids), args[0])
	}
	ts.Check(syscall.Kill(pids[0], syscall.SIGHUP))
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := reloads(ts, args[1])
		if now["failed"] > before["failed"] {
			ts.Fatalf("hup: the reload failed (see the node's log)")
		}
		if now["ok"] > before["ok"] {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("hup: no reload within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reloads reads pec_keys_reloads_total by result from a /metrics page.
func reloads(ts *testscript.TestScript, url string) map[string]float64 {
	resp, err := http.Get(url)
	ts.Check(err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `pec_keys_reloads_total{result="`)
		if !ok {
			continue
		}
		result, value, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(value, 64)
		ts.Check(err)
		out[result] = v
	}
	return out
}

// childServes are the pids of this process's children running `pec serve`
// with arg among their arguments.
func childServes(ts *testscript.TestScript, arg string) []int {
	entries, err := os.ReadDir("/proc")
	ts.Check(err)
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, the last ')' ends it.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if slices.Contains(argv, "serve") && slices.Contains(argv, arg) {
			pids = append(pids, pid)
		}
	}
	return pids
}
