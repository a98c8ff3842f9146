package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the CPU time used so far by the node, by edgeload and by the
// whole machine (Linux /proc; zero elsewhere), to tell where a step's
// cores went: µs of CPU per request in the node and in the load
// generator, and how busy the machine was (other engineers' work
// included).
type cpuSample struct {
	at          time.Time
	node, self  time.Duration // user + system
	busy, total float64       // machine: busy and all clock ticks
	// The node's durable writes of evidence records, and their records
	// (pec_proof_write_records): how well the group commit groups.
	writes, records float64
}

// clockTick is USER_HZ, 100 on every Linux the project runs on.
const clockTick = 10 * time.Millisecond

func takeCPUSample(pid int, metricsURL string) cpuSample {
	s := cpuSample{at: time.Now(), node: procCPU(strconv.Itoa(pid)), self: procCPU("self")}
	s.writes, _ = scrapeGauge(metricsURL, "pec_proof_write_records_count")
	s.records, _ = scrapeGauge(metricsURL, "pec_proof_write_records_sum")
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			n, _ := strconv.ParseFloat(v, 64)
			s.total += n
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
	}
	return s
}

// procCPU is utime + stime of /proc/PID/stat (parseStatCPU).
func procCPU(pid string) time.Duration {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	v, err := parseStatCPU(data)
	if err != nil {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}

// cpuUse is what the node and edgeload used between a and b for n
// requests.
type cpuUse struct {
	nodePerReq, selfPerReq time.Duration
	machineBusy            float64 // 0..1
	recordsPerWrite        float64 // 0: no write
}

func cpuBetween(a, b cpuSample, n float64) (cpuUse, bool) {
	if n <= 0 || b.total <= a.total || b.node == 0 {
		return cpuUse{}, false
	}
	return cpuUse{
		nodePerReq:  time.Duration(float64(b.node-a.node) / n),
		selfPerReq:  time.Duration(float64(b.self-a.self) / n),
		machineBusy: (b.busy - a.busy) / (b.total - a.total),
		recordsPerWrite: func() float64 {
			if b.writes > a.writes {
				return (b.records - a.records) / (b.writes - a.writes)
			}
			return 0
		}(),
	}, true
}

func (u cpuUse) String() string {
	s := fmt.Sprintf("CPU per request: node %s, edgeload %s; machine %.0f%% busy", fmtDuration(u.nodePerReq), fmtDuration(u.selfPerReq), 100*u.machineBusy)
	if u.recordsPerWrite > 0 {
		s += fmt.Sprintf("; %.1f evidence records per durable write", u.recordsPerWrite)
	}
	return s
}

// Settling: a node just started may still be busy with work of its own
// start, which is no request's cost: `pec serve` with the dev
// configuration makes the exchange's at-rest RSA-3072 keys in the
// background (middleoffice.AtRest.PrepareKEKs; a random prime search, 0.1
// to 2 s of CPU and more). Measured in the first steps, that work added 0
// to 6 µs to the node's CPU a token at 64 clients, depending on how long
// the search took and how much of it the 1-client step absorbed: the
// bimodal 55 or 61-64 µs of 2026-12-01.
const (
	settleTick    = 100 * time.Millisecond
	settleQuiet   = 5                    // ticks in a row
	settleIdleCPU = 5 * time.Millisecond // at most this much CPU in a tick (5% of a core)
	settleMax     = 60 * time.Second
)

// waitSettled waits until the node has used at most settleIdleCPU of CPU
// in each of settleQuiet ticks in a row, for settleMax at most; it
// returns how long it waited and the CPU the node used meanwhile.
func waitSettled(pid int, done <-chan struct{}) (waited, used time.Duration, settled bool) {
	p := strconv.Itoa(pid)
	start, first := time.Now(), procCPU(p)
	prev, quiet := first, 0
	t := time.NewTicker(settleTick)
	defer t.Stop()
	for quiet < settleQuiet {
		if time.Since(start) > settleMax {
			return time.Since(start), prev - first, false
		}
		select {
		case <-t.C:
		case <-done:
			return time.Since(start), prev - first, false
		}
		cur := procCPU(p)
		if cur-prev <= settleIdleCPU {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
	return time.Since(start), prev - first, true
}
