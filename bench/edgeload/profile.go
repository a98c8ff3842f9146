package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// stepProfile takes the profiles of one step (-profile DIR): the node's
// CPU profile over the measured time and its allocations (from the ops
// listener's /debug/pprof/, which PEC_DEBUG_PPROF=1 turns on) and its
// /metrics after the step, and the
// load generator's own CPU profile over the same time, so that the cost of
// the client on the shared cores is seen too.
type stepProfile struct {
	dir, name string
	base      string
	done      chan struct{}
	local     *os.File
}

// opsBase is the ops listener's root URL.
func (n *node) opsBase() string { return strings.TrimSuffix(n.metricsURL, "/metrics") }

func startProfile(ctx context.Context, dir, name, base string, warmup, d time.Duration) *stepProfile {
	p := &stepProfile{dir: dir, name: name, base: base, done: make(chan struct{})}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "edgeload: profile:", err)
		return nil
	}
	secs := max(1, int(d.Seconds()))
	go func() {
		defer close(p.done)
		select {
		case <-time.After(warmup):
		case <-ctx.Done():
			return
		}
		if f, err := os.Create(filepath.Join(dir, name+".edgeload.cpu.pprof")); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				p.local = f
			} else {
				f.Close()
			}
		}
		p.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), name+".node.cpu.pprof")
		if p.local != nil {
			pprof.StopCPUProfile()
			p.local.Close()
		}
	}()
	return p
}

// finish waits for the CPU profiles and fetches the node's allocations.
func (p *stepProfile) finish() {
	<-p.done
	p.fetch(context.Background(), "/debug/pprof/allocs", p.name+".node.allocs.pprof")
	p.fetch(context.Background(), "/metrics", p.name+".node.metrics.txt")
	fmt.Fprintf(os.Stderr, "edgeload: profiles and metrics in %s/%s.*\n", p.dir, p.name)
}

func (p *stepProfile) fetch(ctx context.Context, path, file string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeload: profile:", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "edgeload: profile %s: HTTP %s (is PEC_DEBUG_PPROF honoured by this pec?)\n", path, resp.Status)
		return
	}
	f, err := os.Create(filepath.Join(p.dir, file))
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeload: profile:", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}
