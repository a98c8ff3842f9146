package tsa_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"pec/tsa"
)

func TestClockConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		clock tsa.ClockConfig
		want  []string // substrings of the error, each a fault; none: valid
	}{
		{"zero value", tsa.ClockConfig{}, nil},
		{"servers", tsa.ClockConfig{
			NTPServers: []string{"ntp.example.gouv.fr", "ntp2.example:123", "192.0.2.1", "192.0.2.2:1123",
				"2001:db8::1", "[2001:db8::2]", "[2001:db8::3]:123", "time_server.local"},
			CheckInterval: 30 * time.Second, MaxUnreachable: 10 * time.Minute,
		}, nil},
		{"negative durations", tsa.ClockConfig{CheckInterval: -time.Second, MaxUnreachable: -time.Minute},
			[]string{"tsa.clock.check_interval: -1s is negative", "tsa.clock.max_unreachable: -1m0s is negative"}},
		{"empty server", tsa.ClockConfig{NTPServers: []string{"ntp.example", ""}},
			[]string{"tsa.clock.ntp_servers[1]: empty server name"}},
		{"bad ports", tsa.ClockConfig{NTPServers: []string{"ntp.example:0", "ntp.example:65536", "ntp.example:ntp", "ntp.example:", "[2001:db8::1]:"}},
			[]string{"ntp_servers[0]: ", "ntp_servers[1]: ", "ntp_servers[2]: ", "ntp_servers[3]: ", "ntp_servers[4]: "}},
		{"bad hosts", tsa.ClockConfig{NTPServers: []string{":123", "ntp example", "ntp/example", "[ntp.example]:123", "[2001:db8::1", "1:2:3", "[2001:db8::1]x"}},
			[]string{"ntp_servers[0]: ", "ntp_servers[1]: ", "ntp_servers[2]: ", "ntp_servers[3]: ", "ntp_servers[4]: ", "ntp_servers[5]: ", "ntp_servers[6]: "}},
		{"repeated server", tsa.ClockConfig{NTPServers: []string{"a.example", "b.example", "a.example"}},
			[]string{`tsa.clock.ntp_servers[2]: "a.example" repeats ntp_servers[0]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig()
			cfg.Clock = tt.clock
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Validate reported %d faults, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if i < len(lines) && !strings.Contains(lines[i], w) {
					t.Errorf("fault %d: %q, want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}

// validConfig is a tsa section with no fault outside the clock.
func validConfig() tsa.Config {
	return tsa.Config{
		KeyLabel: "tsa", CertFile: "tsa.pem", PolicyOID: "1.2.3.4", Accuracy: time.Second,
		SerialFile: "serials", JournalFile: "issued.jsonl",
	}
}

// fakeSources answers the injected Query: per server, an offset and an
// uncertainty, or an error.
type fakeSources struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer
	queries atomic.Int64
}

type fakeAnswer struct {
	offset, unc time.Duration
	err         error
}

func (f *fakeSources) set(server string, a fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.answers == nil {
		f.answers = make(map[string]fakeAnswer)
	}
	f.answers[server] = a
}

func (f *fakeSources) query(ctx context.Context, server string) (time.Duration, time.Duration, error) {
	f.queries.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	a, ok := f.answers[server]
	if !ok {
		return 0, 0, errors.New("no answer")
	}
	return a.offset, a.unc, a.err
}

// logCounter counts the records logged at each level.
type logCounter struct {
	mu     sync.Mutex
	levels map[slog.Level]int
	msgs   []string
}

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.levels == nil {
		c.levels = make(map[slog.Level]int)
	}
	c.levels[r.Level]++
	c.msgs = append(c.msgs, r.Level.String()+" "+r.Message)
	return nil
}
func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCounter) WithGroup(string) slog.Handler      { return c }

func (c *logCounter) count(l slog.Level) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.levels[l]
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestClockGuardNoServers(t *testing.T) {
	t.Parallel()
	logs := &logCounter{}
	reg := prometheus.NewRegistry()
	g := tsa.NewClockGuard(tsa.ClockConfig{}, time.Second, tsa.ClockOptions{Logger: slog.New(logs), Registry: reg})
	if err := g.Err(); err != nil {
		t.Fatalf("Err before Run: %v", err)
	}
	done := make(chan struct{})
	go func() { g.Run(t.Context()); g.Run(t.Context()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run with no servers did not return")
	}
	if err := g.Err(); err != nil {
		t.Fatalf("Err: %v", err)
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings, want one (%v)", n, logs.msgs)
	}
	if v := metric(t, reg, "pec_tsa_clock_in_sync", ""); v != 1 {
		t.Errorf("pec_tsa_clock_in_sync = %v, want 1", v)
	}
}

// metric reads the value of a gauge or counter from reg; label, if
// given, is "name=value".
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName()+"="+l.GetValue() == label
			}) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

// TestClockGuardRounds drives Run in a synctest bubble: the rounds every
// CheckInterval, the median, the offset limit, MaxUnreachable, recovery.
func TestClockGuardRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSources{}
		logs := &logCounter{}
		reg := prometheus.NewRegistry()
		cfg := tsa.ClockConfig{
			NTPServers:    []string{"a", "b", "c"},
			CheckInterval: time.Minute, MaxUnreachable: 5 * time.Minute,
		}
		g := tsa.NewClockGuard(cfg, time.Second, tsa.ClockOptions{Logger: slog.New(logs), Registry: reg, Query: src.query})
		if got, want := errText(g.Err()), "tsa: clock not yet checked against a time source"; got != want {
			t.Fatalf("Err before the first round: %s, want %s", got, want)
		}
		if v := metric(t, reg, "pec_tsa_clock_in_sync", ""); v != 0 {
			t.Errorf("pec_tsa_clock_in_sync before the first round = %v, want 0", v)
		}

		// One server far off: the median ignores it.
		src.set("a", fakeAnswer{offset: 10 * time.Millisecond, unc: 5 * time.Millisecond})
		src.set("b", fakeAnswer{offset: 20 * time.Millisecond, unc: 5 * time.Millisecond})
		src.set("c", fakeAnswer{offset: 5 * time.Second, unc: 5 * time.Millisecond})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { g.Run(ctx); close(done) }()
		synctest.Wait()
		if err := g.Err(); err != nil {
			t.Fatalf("after the first round: %v", err)
		}
		if v := metric(t, reg, "pec_tsa_clock_offset_seconds", ""); v != 0.02 {
			t.Errorf("pec_tsa_clock_offset_seconds = %v, want 0.02", v)
		}

		// Median 1.5s: beyond the accuracy, from the next round on.
		src.set("a", fakeAnswer{offset: 1500 * time.Millisecond, unc: 20 * time.Millisecond})
		src.set("b", fakeAnswer{offset: 1400 * time.Millisecond, unc: 20 * time.Millisecond})
		synctest.Wait()
		if err := g.Err(); err != nil {
			t.Fatalf("before the next round: %v", err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got, want := errText(g.Err()), "tsa: clock offset 1.5s (±20ms) exceeds the declared accuracy 1s"; got != want {
			t.Fatalf("Err: %s, want %s", got, want)
		}
		// Within the accuracy, but not with its uncertainty.
		src.set("a", fakeAnswer{offset: -900 * time.Millisecond, unc: 150 * time.Millisecond})
		src.set("b", fakeAnswer{offset: -950 * time.Millisecond, unc: 150 * time.Millisecond})
		src.set("c", fakeAnswer{offset: -800 * time.Millisecond, unc: 150 * time.Millisecond})
		time.Sleep(time.Minute)
		synctest.Wait()
		if got, want := errText(g.Err()), "tsa: clock offset -900ms (±150ms) exceeds the declared accuracy 1s"; got != want {
			t.Fatalf("Err: %s, want %s", got, want)
		}

		// Back within: in sync at the next round.
		for _, s := range cfg.NTPServers {
			src.set(s, fakeAnswer{offset: time.Millisecond, unc: time.Millisecond})
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := g.Err(); err != nil {
			t.Fatalf("after recovery: %v", err)
		}

		// One server answering is enough.
		src.set("a", fakeAnswer{err: errors.New("timeout")})
		src.set("b", fakeAnswer{err: errors.New("timeout")})
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := g.Err(); err != nil {
			t.Fatalf("with one server answering: %v", err)
		}

		// None answers: the state holds for MaxUnreachable, then fails.
		src.set("c", fakeAnswer{err: errors.New("timeout")})
		lastContact := time.Now()
		for time.Since(lastContact) < 5*time.Minute {
			time.Sleep(time.Minute)
			synctest.Wait()
			if err := g.Err(); err != nil {
				t.Fatalf("%v after the last contact: %v", time.Since(lastContact), err)
			}
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got, want := errText(g.Err()), "tsa: no time source reached for 5m0s"; got != want {
			t.Fatalf("Err: %s, want %s", got, want)
		}
		if v := metric(t, reg, "pec_tsa_clock_in_sync", ""); v != 0 {
			t.Errorf("pec_tsa_clock_in_sync = %v, want 0", v)
		}

		// A source is back.
		src.set("b", fakeAnswer{offset: 2 * time.Millisecond, unc: time.Millisecond})
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := g.Err(); err != nil {
			t.Fatalf("after a source came back: %v", err)
		}
		if v := metric(t, reg, "pec_tsa_clock_in_sync", ""); v != 1 {
			t.Errorf("pec_tsa_clock_in_sync = %v, want 1", v)
		}

		cancel()
		<-done

		// Rounds: 1 first + 1 offset + 1 offset + 1 recovered + 1 with one
		// server + 6 unreachable + 1 back = 12.
		for result, want := range map[string]int{"ok": 4, "offset": 2, "unreachable": 6} {
			if got := int(metric(t, reg, "pec_tsa_clock_checks_total", "result="+result)); got != want {
				t.Errorf("checks_total{result=%q} = %d, want %d", result, got, want)
			}
		}
		// Logged: state changes only. In (first round), out (offset), in,
		// out (unreachable), in; the second offset round changed only the
		// reason.
		if got := logs.count(slog.LevelInfo); got != 3 {
			t.Errorf("%d Info records, want 3: %v", got, logs.msgs)
		}
		if got := logs.count(slog.LevelError); got != 2 {
			t.Errorf("%d Error records, want 2: %v", got, logs.msgs)
		}
	})
}

// TestClockGuardNeverReached: with no answer from the start, the clock is
// "not yet checked" and then, after MaxUnreachable, unreachable.
func TestClockGuardNeverReached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSources{}
		cfg := tsa.ClockConfig{NTPServers: []string{"a"}, CheckInterval: 30 * time.Second, MaxUnreachable: 2 * time.Minute}
		g := tsa.NewClockGuard(cfg, time.Second, tsa.ClockOptions{Query: src.query})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go g.Run(ctx)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got, want := errText(g.Err()), "tsa: clock not yet checked against a time source"; got != want {
			t.Fatalf("Err at MaxUnreachable: %s, want %s", got, want)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if got, want := errText(g.Err()), "tsa: no time source reached for 2m0s"; got != want {
			t.Fatalf("Err after MaxUnreachable: %s, want %s", got, want)
		}
		if n := src.queries.Load(); n != 6 {
			t.Errorf("%d queries, want 6 (one every 30s from 0 to 2m30s)", n)
		}
		cancel()
		synctest.Wait()
	})
}

// TestClockGuardCancelledRound: a round cut short by its context says
// nothing about the clock.
func TestClockGuardCancelledRound(t *testing.T) {
	t.Parallel()
	src := &fakeSources{}
	g := tsa.NewClockGuard(tsa.ClockConfig{NTPServers: []string{"a"}}, time.Second, tsa.ClockOptions{Query: src.query})
	src.set("a", fakeAnswer{})
	g.Check(t.Context())
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	src.set("a", fakeAnswer{offset: 5 * time.Second})
	g.Check(ctx)
	if err := g.Err(); err != nil {
		t.Fatalf("after a cancelled round: %v", err)
	}
}

// sntpServer is a minimal SNTP server (RFC 4330 section 5) on 127.0.0.1
// whose clock runs offset ahead of the local one.
type sntpServer struct {
	conn   net.PacketConn
	offset atomic.Int64 // time.Duration
	done   chan struct{}
}

func newSNTPServer(t *testing.T) *sntpServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sntpServer{conn: conn, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *sntpServer) addr() string { return s.conn.LocalAddr().String() }

func (s *sntpServer) close() {
	s.conn.Close()
	<-s.done
}

func (s *sntpServer) serve() {
	defer close(s.done)
	buf := make([]byte, 512)
	for {
		n, peer, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 48 || buf[0]&7 != 3 { // client mode only
			continue
		}
		now := time.Now().Add(time.Duration(s.offset.Load()))
		var resp [48]byte
		resp[0] = 0<<6 | buf[0]&0x38 | 4             // no leap warning, the client's version, server mode
		resp[1] = 1                                  // stratum 1: a primary server
		resp[2] = buf[2]                             // poll
		resp[3] = 0xec                               // precision 2^-20 s
		binary.BigEndian.PutUint32(resp[4:], 0)      // root delay
		binary.BigEndian.PutUint32(resp[8:], 0x10)   // root dispersion, 16/65536 s
		copy(resp[12:16], "TEST")                    // reference ID
		putNTPTime(resp[16:], now.Add(-time.Second)) // reference time
		copy(resp[24:32], buf[40:48])                // origin: the client's transmit time
		putNTPTime(resp[32:], now)                   // receive time
		putNTPTime(resp[40:], now)                   // transmit time
		s.conn.WriteTo(resp[:], peer)
	}
}

// putNTPTime writes t as an NTP timestamp: seconds since 1900 and a binary
// fraction.
func putNTPTime(b []byte, t time.Time) {
	const ntpEpochOffset = 2208988800 // seconds from 1900 to 1970
	binary.BigEndian.PutUint32(b[0:], uint32(t.Unix()+ntpEpochOffset))
	binary.BigEndian.PutUint32(b[4:], uint32((uint64(t.Nanosecond())<<32)/1e9))
}

// TestClockGuardSNTP exercises the default query (github.com/beevik/ntp)
// against a real SNTP server on UDP.
func TestClockGuardSNTP(t *testing.T) {
	t.Parallel()
	srv := newSNTPServer(t)
	var fake atomic.Int64 // the guard's Now, for MaxUnreachable
	fake.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, fake.Load()) }
	reg := prometheus.NewRegistry()
	cfg := tsa.ClockConfig{NTPServers: []string{srv.addr()}, MaxUnreachable: 5 * time.Minute}
	g := tsa.NewClockGuard(cfg, time.Second, tsa.ClockOptions{Registry: reg, Now: now})
	ctx := t.Context()

	g.Check(ctx)
	if err := g.Err(); err != nil {
		t.Fatalf("offset 0: %v", err)
	}
	if v := metric(t, reg, "pec_tsa_clock_offset_seconds", ""); v < -0.1 || v > 0.1 {
		t.Errorf("offset 0: pec_tsa_clock_offset_seconds = %v", v)
	}

	srv.offset.Store(int64(3 * time.Second))
	g.Check(ctx)
	if err := g.Err(); err == nil || !strings.Contains(err.Error(), "exceeds the declared accuracy 1s") ||
		!strings.HasPrefix(err.Error(), "tsa: clock offset ") {
		t.Fatalf("offset +3s: %v, want the offset beyond the accuracy", err)
	}
	if v := metric(t, reg, "pec_tsa_clock_offset_seconds", ""); v < 2.9 || v > 3.1 {
		t.Errorf("offset +3s: pec_tsa_clock_offset_seconds = %v", v)
	}

	srv.offset.Store(0)
	g.Check(ctx)
	if err := g.Err(); err != nil {
		t.Fatalf("offset back to 0: %v", err)
	}

	srv.close()
	fake.Add(int64(4 * time.Minute))
	g.Check(ctx)
	if err := g.Err(); err != nil {
		t.Fatalf("server gone for 4m: %v", err)
	}
	fake.Add(int64(2 * time.Minute))
	g.Check(ctx)
	if got, want := errText(g.Err()), "tsa: no time source reached for 5m0s"; got != want {
		t.Fatalf("server gone for 6m: %s, want %s", got, want)
	}
	for result, want := range map[string]int{"ok": 2, "offset": 1, "unreachable": 2} {
		if got := int(metric(t, reg, "pec_tsa_clock_checks_total", "result="+result)); got != want {
			t.Errorf("checks_total{result=%q} = %d, want %d", result, got, want)
		}
	}
}
