package tsa

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beevik/ntp"
	"github.com/prometheus/client_golang/prometheus"

	"pec/internal/promreg"
)

// ClockConfig is the tsa.clock section of pec.yaml: the time sources the
// clock guard checks the local clock against.
type ClockConfig struct {
	NTPServers     []string      `yaml:"ntp_servers"`     // host or host:port; none: the local clock is trusted
	CheckInterval  time.Duration `yaml:"check_interval"`  // 0: DefaultCheckInterval
	MaxUnreachable time.Duration `yaml:"max_unreachable"` // 0: DefaultMaxUnreachable
}

// Defaults of [ClockConfig].
const (
	DefaultCheckInterval  = 60 * time.Second
	DefaultMaxUnreachable = 5 * time.Minute
)

// ntpTimeout bounds one SNTP query.
const ntpTimeout = 2 * time.Second

// validate reports every invalid field by path: "tsa.clock.check_interval: ...".
func (c ClockConfig) validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.CheckInterval < 0 {
		fault("tsa.clock.check_interval: %v is negative", c.CheckInterval)
	}
	if c.MaxUnreachable < 0 {
		fault("tsa.clock.max_unreachable: %v is negative", c.MaxUnreachable)
	}
	for i, s := range c.NTPServers {
		if err := checkServerAddr(s); err != nil {
			fault("tsa.clock.ntp_servers[%d]: %v", i, err)
		} else if j := slices.Index(c.NTPServers[:i], s); j >= 0 {
			// A server counted twice weighs twice in the median.
			fault("tsa.clock.ntp_servers[%d]: %q repeats ntp_servers[%d]", i, s, j)
		}
	}
	return errors.Join(errs...)
}

// checkServerAddr accepts what the SNTP client does: "host", "host:port",
// an IPv6 address, "[ipv6]" or "[ipv6]:port".
func checkServerAddr(s string) error {
	if s == "" {
		return errors.New("empty server name")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q contains spaces or control characters", s)
	}
	host, port := s, ""
	switch {
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return fmt.Errorf("%q: missing ']'", s)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return fmt.Errorf("%q: unexpected %q after ']'", s, port)
			}
			port = port[1:]
			if port == "" {
				return fmt.Errorf("%q: empty port", s)
			}
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return fmt.Errorf("%q: %q is not an IPv6 address", s, host)
		}
	case strings.Count(s, ":") == 1:
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
		if port == "" {
			return fmt.Errorf("%q: empty port", s)
		}
	case strings.Count(s, ":") > 1:
		// An IPv6 address without a port (the port needs brackets).
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("%q is neither host:port nor an IPv6 address (write [address]:port)", s)
		}
		return nil
	}
	if host == "" {
		return fmt.Errorf("%q: empty host", s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
				return fmt.Errorf("%q: %q is not a host name", s, host)
			}
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not within 1-65535", s, port)
		}
	}
	return nil
}

// ClockOptions hold optional collaborators of a [ClockGuard]; the zero
// value queries the configured servers with SNTP.
type ClockOptions struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now; dates the last contact with a source
	// Query asks one server for the local clock's offset (add it to the
	// local time to get the server's) and the uncertainty of that offset.
	// nil: SNTP (RFC 4330) with a 2s timeout; uncertainty is the root
	// distance (RFC 5905 appendix A.5.5.2). It must return when ctx is done.
	Query func(ctx context.Context, server string) (offset, uncertainty time.Duration, err error)
}

// ClockGuard keeps the authority from issuing while its clock cannot be
// trusted to the declared accuracy, as ETSI EN 319 421 section 7.7.2
// requires: it checks the local clock against NTP servers every
// CheckInterval and reports, through [ClockGuard.Err], whether tokens may
// be issued.
//
// The local clock is out when the median offset of the servers that
// answered, plus its uncertainty, exceeds the accuracy; or when no server
// has answered for more than MaxUnreachable (until then a round without
// answers keeps the previous state); or before the first round with an
// answer. It is back in by itself at the next good round. With no server
// configured the local clock is trusted, and Err is always nil.
//
// State changes are logged (Info when in, Error when out), not every
// round. Metrics: pec_tsa_clock_in_sync (1 or 0), pec_tsa_clock_offset_seconds
// (the median offset of the last round with an answer) and
// pec_tsa_clock_checks_total{result="ok|offset|unreachable"}.
//
// A ClockGuard is safe for concurrent use.
type ClockGuard struct {
	servers        []string
	interval       time.Duration
	maxUnreachable time.Duration
	accuracy       time.Duration
	log            *slog.Logger
	now            func() time.Time
	query          func(ctx context.Context, server string) (time.Duration, time.Duration, error)
	metrics        *clockMetrics
	warnOnce       sync.Once

	state atomic.Pointer[clockState]

	mu          sync.Mutex // one round at a time; guards lastContact
	lastContact time.Time
}

var _ ClockStatus = (*ClockGuard)(nil)

type clockKind int

const (
	clockUnchecked clockKind = iota
	clockInSync
	clockOffset
	clockUnreachable
)

// clockState is what Err reports; a new one replaces it after each round
// that changes it.
type clockState struct {
	kind clockKind
	err  error
}

var errClockUnchecked = errors.New("tsa: clock not yet checked against a time source")

// NewClockGuard returns a guard of the local clock against the servers of
// cfg, for a declared accuracy. Until [ClockGuard.Run] or
// [ClockGuard.Check] has had an answer, Err reports the clock unchecked
// (unless no server is configured). cfg is assumed valid.
func NewClockGuard(cfg ClockConfig, accuracy time.Duration, opts ClockOptions) *ClockGuard {
	g := &ClockGuard{
		servers:        slices.Clone(cfg.NTPServers),
		interval:       cfg.CheckInterval,
		maxUnreachable: cfg.MaxUnreachable,
		accuracy:       accuracy,
		log:            opts.Logger,
		now:            opts.Now,
		query:          opts.Query,
		metrics:        newClockMetrics(opts.Registry),
	}
	if g.interval <= 0 {
		g.interval = DefaultCheckInterval
	}
	if g.maxUnreachable <= 0 {
		g.maxUnreachable = DefaultMaxUnreachable
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.query == nil {
		g.query = sntpQuery
	}
	// The time without contact counts from now: after MaxUnreachable with
	// no answer, the reason changes from "not yet checked" to "no time
	// source reached".
	g.lastContact = g.now()
	st := &clockState{kind: clockUnchecked, err: errClockUnchecked}
	if len(g.servers) == 0 {
		st = &clockState{kind: clockInSync}
	}
	g.state.Store(st)
	g.metrics.inSync.Set(boolGauge(st.err == nil))
	return g
}

// Err is nil while tokens may be issued; otherwise it says why not. It is
// a single atomic load.
func (g *ClockGuard) Err() error {
	return g.state.Load().err
}

// Run checks the clock now and then every CheckInterval until ctx is done.
// With no server configured it logs a warning and returns at once.
func (g *ClockGuard) Run(ctx context.Context) {
	if len(g.servers) == 0 {
		g.warnOnce.Do(func() {
			g.log.WarnContext(ctx, "tsa clock: no ntp_servers configured, the local clock is trusted unchecked (ETSI EN 319 421 section 7.7.2 wants it checked against UTC)")
		})
		g.setState(ctx, &clockState{kind: clockInSync})
		return
	}
	g.Check(ctx)
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.Check(ctx)
		}
	}
}

type clockSample struct {
	server      string
	offset, unc time.Duration
	err         error
}

// Check runs one round: it queries every server concurrently and updates
// the state. A round cut short by ctx changes nothing.
func (g *ClockGuard) Check(ctx context.Context) {
	if len(g.servers) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()

	samples := make([]clockSample, len(g.servers))
	var wg sync.WaitGroup
	for i, server := range g.servers {
		wg.Go(func() {
			off, unc, err := g.query(ctx, server)
			samples[i] = clockSample{server: server, offset: off, unc: max(unc, 0), err: err}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}

	var answered []clockSample
	var lastErr error
	for _, s := range samples {
		if s.err != nil {
			lastErr = fmt.Errorf("%s: %w", s.server, s.err)
			g.log.DebugContext(ctx, "tsa clock: time source did not answer", "server", s.server, "err", s.err)
			continue
		}
		answered = append(answered, s)
	}
	now := g.now()
	if len(answered) == 0 {
		g.metrics.checks.WithLabelValues("unreachable").Inc()
		if now.Sub(g.lastContact) > g.maxUnreachable {
			g.setState(ctx, &clockState{
				kind: clockUnreachable,
				err:  fmt.Errorf("tsa: no time source reached for %v", g.maxUnreachable),
			}, "last_err", lastErr)
		}
		return
	}
	g.lastContact = now
	off, unc := medianOffset(answered)
	g.metrics.offset.Set(off.Seconds())
	attrs := []any{"offset", off, "uncertainty", unc, "accuracy", g.accuracy, "answered", len(answered), "servers", len(g.servers)}
	if off.Abs()+unc > g.accuracy {
		g.metrics.checks.WithLabelValues("offset").Inc()
		g.setState(ctx, &clockState{
			kind: clockOffset,
			err: fmt.Errorf("tsa: clock offset %v (±%v) exceeds the declared accuracy %v",
				off.Round(time.Microsecond), unc.Round(time.Microsecond), g.accuracy),
		}, attrs...)
		return
	}
	g.metrics.checks.WithLabelValues("ok").Inc()
	g.setState(ctx, &clockState{kind: clockInSync}, attrs...)
}

// medianOffset is the median of the offsets (the mean of the middle two
// for an even count) with the uncertainty of the sample(s) it comes from.
func medianOffset(s []clockSample) (offset, uncertainty time.Duration) {
	slices.SortFunc(s, func(a, b clockSample) int { return cmp.Compare(a.offset, b.offset) })
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m].offset, s[m].unc
	}
	a, b := s[m-1], s[m]
	return a.offset + (b.offset-a.offset)/2, max(a.unc, b.unc)
}

// setState publishes st and logs when the kind of state changes. The
// error text may change without a log line (a different offset).
func (g *ClockGuard) setState(ctx context.Context, st *clockState, attrs ...any) {
	old := g.state.Swap(st)
	g.metrics.inSync.Set(boolGauge(st.err == nil))
	if old.kind == st.kind {
		return
	}
	if st.err == nil {
		g.log.InfoContext(ctx, "tsa clock: in sync, issuing allowed", attrs...)
		return
	}
	g.log.ErrorContext(ctx, "tsa clock: not trusted, issuing stopped", append([]any{"err", st.err}, attrs...)...)
}

// sntpQuery asks server for the time with SNTP (github.com/beevik/ntp).
func sntpQuery(ctx context.Context, server string) (offset, uncertainty time.Duration, err error) {
	type answer struct {
		r   *ntp.Response
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		r, err := ntp.QueryWithOptions(server, ntp.QueryOptions{Timeout: ntpTimeout})
		ch <- answer{r, err}
	}()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err() // the query ends by itself within ntpTimeout
	case a := <-ch:
		if a.err != nil {
			return 0, 0, a.err
		}
		// Validate refuses kiss-of-death, unsynchronized servers and
		// answers too dispersed to be used (RFC 5905).
		if err := a.r.Validate(); err != nil {
			return 0, 0, err
		}
		return a.r.ClockOffset, a.r.RootDistance, nil
	}
}

type clockMetrics struct {
	inSync prometheus.Gauge
	offset prometheus.Gauge
	checks *prometheus.CounterVec // result
}

func newClockMetrics(reg prometheus.Registerer) *clockMetrics {
	m := &clockMetrics{
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_tsa_clock_in_sync",
			Help: "1 while the clock guard allows issuing time-stamp tokens, 0 otherwise.",
		}),
		offset: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_tsa_clock_offset_seconds",
			Help: "Median offset of the local clock from the NTP servers that answered the last round (server minus local).",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_tsa_clock_checks_total",
			Help: "Rounds of clock checks, by result: ok, offset (beyond the declared accuracy), unreachable (no server answered).",
		}, []string{"result"}),
	}
	if reg != nil {
		m.inSync = promreg.Register(reg, m.inSync)
		m.offset = promreg.Register(reg, m.offset)
		m.checks = promreg.Register(reg, m.checks)
	}
	for _, r := range []string{"ok", "offset", "unreachable"} {
		m.checks.WithLabelValues(r)
	}
	return m
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
