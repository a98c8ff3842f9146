package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/tsa"
)

// The fast lane of the tsa listener.
//
// RFC 3161 over HTTP is one small POST answered by one small reply, many
// thousands a second. net/http costs some 12-15 µs of CPU for each (a
// context, a header map parsed and one cloned, a background read goroutine
// started and stopped again, two or three deadline changes, a couple of
// kilobytes of garbage): a quarter of a token's cost beside its 23 µs
// ECDSA signature. The lane reads the requests of each connection itself
// and answers those it recognises in full — a well-formed
//
//	POST /tsa HTTP/1.1
//	Host, Content-Length (1 to the body limit), Content-Type: application/timestamp-query
//
// whose head and body fit its 4 KiB buffer, without Transfer-Encoding,
// Expect, Upgrade or a Connection other than keep-alive or close — with
// the endpoint's own answers (tsaEndpoint), counted in the same metrics
// and under the same in-flight bound. At the first request it does not
// take, it hands the connection, with the bytes it read and did not
// answer, to the net/http server, which serves it from then on exactly as
// it serves every other connection: every other route, every refusal
// (405, 413, 415, a malformed request) and TLS connections are net/http's.
// The lane only ever answers a request it parsed strictly, and a request
// is either answered by the lane or seen whole by net/http (the
// differential fuzz target FuzzLaneHead checks that net/http reads each
// head the lane takes the same way).
//
// Deadlines follow the http.Server's: IdleTimeout between requests,
// ReadHeaderTimeout once a request is under way but not complete, and
// WriteTimeout for the answer. They are moved at most once a second of
// the connection's life rather than two or three times a request (a
// deadline is then up to a tenth of its timeout, and a second at most,
// longer than configured).

// laneBuffer is the size of a connection's read buffer; a request that
// does not fit goes to net/http.
const laneBuffer = 4096

// TSAServer is the tsa listener: NewTSAHandler's routes, served by an
// http.Server, and the fast lane for RFC 3161 requests (above). Serve it
// with Serve; stop it with Shutdown.
type TSAServer struct {
	handler    http.Handler // NewTSAHandler's
	endpoint   *tsaEndpoint
	slots      chan struct{} // the in-flight bound, shared with handler; nil: none
	overloaded prometheus.Counter
	observe    prometheus.Observer
	granted    prometheus.Counter // pec_http_requests_total{listener=tsa,route=/tsa,code=200}
	requests   *prometheus.CounterVec
	date       atomic.Pointer[httpDate]
	answered   atomic.Int64 // requests the lane answered (tests)

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	handoff  *handoffListener
	conns    map[*laneConn]struct{}
	shutdown atomic.Bool   // set under mu
	drained  chan struct{} // closed when shut down and no lane connection is left
}

// NewTSAServer is the tsa listener of NewTSAHandler with its fast lane.
func NewTSAServer(authority TSAResponder, maxBody int64, opts Options) *TSAServer {
	e := newEdge(opts)
	mux := http.NewServeMux()
	m := newMetrics(opts.Registry, "tsa")
	ep := &tsaEndpoint{authority: authority, maxBody: maxBody, log: e.log, failures: e.failures}
	mux.Handle("/tsa", m.instrument("/tsa", ep))
	registerTlog(mux, m, e, opts.log(), opts.logCerts())
	registerProbes(mux, opts.Ready)
	slots := inFlightSlots(opts.MaxInFlight)
	return &TSAServer{
		handler:    limitSlots(problemRoutes(mux), slots, m),
		endpoint:   ep,
		slots:      slots,
		overloaded: m.overloaded.WithLabelValues(m.listener),
		observe:    m.seconds.WithLabelValues(m.listener, "/tsa"),
		granted:    m.requests.WithLabelValues(m.listener, "/tsa", "200"),
		requests:   m.requests,
		conns:      map[*laneConn]struct{}{},
		drained:    make(chan struct{}),
	}
}

// Handler serves every request of the listener (what the lane hands on
// too): give it, or a handler that wraps it, to the http.Server of Serve.
func (s *TSAServer) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln and serves them, the requests the lane
// does not take with srv, whose Handler is s.Handler() or wraps it and
// whose timeouts bound the lane's connections too. It returns
// http.ErrServerClosed after Shutdown, or the listener's error.
func (s *TSAServer) Serve(srv *http.Server, ln net.Listener) error {
	s.mu.Lock()
	if s.srv != nil || s.shutdown.Load() {
		s.mu.Unlock()
		return errors.New("gateway: TSAServer serves once")
	}
	s.srv, s.ln = srv, ln
	s.handoff = &handoffListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	s.mu.Unlock()
	// srv.Shutdown alone stops the lane too (without waiting for its
	// connections: Shutdown does).
	srv.RegisterOnShutdown(s.stopAccepting)
	go func() {
		// Returns once Shutdown closed the hand-off listener.
		_ = srv.Serve(s.handoff)
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isShutdown() {
				return http.ErrServerClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// As net/http: a transient failure (out of file
				// descriptors) waits and tries again.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.handoff.Close()
			return err
		}
		delay = 0
		lc := &laneConn{Conn: c}
		if !s.track(lc) {
			c.Close()
			return http.ErrServerClosed
		}
		go s.serveConn(lc)
	}
}

// Shutdown stops the listener as http.Server.Shutdown does: no new
// connection, idle ones closed, requests under way answered; it waits for
// them until ctx ends.
func (s *TSAServer) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	var err error
	if srv != nil {
		err = srv.Shutdown(ctx) // closes the hand-off listener
	}
	select {
	case <-s.drained:
		return err
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// stopAccepting begins the shutdown: no new connection, the idle ones
// closed.
func (s *TSAServer) stopAccepting() {
	s.mu.Lock()
	first := !s.shutdown.Swap(true)
	ln := s.ln
	for c := range s.conns {
		if c.idle.Load() {
			c.Close()
		}
	}
	if first && len(s.conns) == 0 {
		close(s.drained)
	}
	s.mu.Unlock()
	if first && ln != nil {
		ln.Close()
	}
}

func (s *TSAServer) isShutdown() bool { return s.shutdown.Load() }

func (s *TSAServer) track(c *laneConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *TSAServer) untrack(c *laneConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.shutdown.Load() && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// setIdle marks c waiting for a request (or not); false: the server is
// shutting down, and c must close instead of waiting. Without a lock: c
// stores idle then loads shutdown, Shutdown stores shutdown then loads
// idle, so that one of the two sees the other and c is closed.
func (s *TSAServer) setIdle(c *laneConn, idle bool) bool {
	c.idle.Store(idle)
	return !s.shutdown.Load()
}

// laneConn is a connection the lane serves.
type laneConn struct {
	net.Conn
	idle atomic.Bool // waiting for a request

	readDeadline, writeDeadline time.Time // as set on Conn
	token                       []byte    // the authority's buffer for the next response (tsa.RespondOptions.Buf)
}

// refresh sets the deadline of timeout d from now, *cur, with set, unless
// *cur is that already within a tenth of d, a second at most: under load,
// a deadline is moved about once a second, not at each request.
func refresh(cur *time.Time, now time.Time, d time.Duration, set func(time.Time) error) {
	t := now.Add(d)
	tol := min(d/10, time.Second)
	if diff := t.Sub(*cur); diff > tol || diff < -tol {
		*cur = t
		_ = set(t)
	}
}

func (s *TSAServer) serveConn(c *laneConn) {
	defer s.untrack(c)
	if _, ok := c.Conn.(*tls.Conn); ok {
		s.handOver(c.Conn, nil) // net/http's: the handshake, r.TLS, ALPN
		return
	}
	srv := s.srv
	br := bufio.NewReaderSize(c.Conn, laneBuffer)
	var out []byte
	for {
		if br.Buffered() == 0 {
			if !s.setIdle(c, true) {
				c.Close()
				return
			}
			if d := idleTimeout(srv); d > 0 {
				refresh(&c.readDeadline, time.Now(), d, c.SetReadDeadline)
			}
			_, err := br.Peek(1)
			if !s.setIdle(c, false) || err != nil {
				c.Close()
				return
			}
		}
		head, n, closeAfter, err := s.readRequest(c, br)
		if err != nil {
			c.Close()
			return
		}
		if head == 0 {
			s.handOver(c.Conn, br)
			return
		}
		buf, _ := br.Peek(head + n)
		now := time.Now()
		if srv.WriteTimeout > 0 {
			refresh(&c.writeDeadline, now, srv.WriteTimeout, c.SetWriteDeadline)
		}
		out = s.answer(c, out[:0], now, buf[head:], closeAfter)
		_, err = c.Write(out)
		if cap(out) > 1<<16 {
			out = nil
		}
		if err != nil || closeAfter {
			c.Close()
			return
		}
		_, _ = br.Discard(head + n)
	}
}

// readRequest reads the head and body of the request at the start of
// br's buffer, without consuming them: head is the length of the head
// and n that of the body. head == 0: a request that the lane does not
// take (the bytes stay buffered, for net/http). err: the connection
// failed or timed out before the request was complete.
func (s *TSAServer) readRequest(c *laneConn, br *bufio.Reader) (head, n int, closeAfter bool, err error) {
	deadlineSet := false
	more := func() error {
		if br.Buffered() == br.Size() {
			return errLaneFull
		}
		if !deadlineSet {
			deadlineSet = true
			if d := readHeaderTimeout(s.srv); d > 0 {
				refresh(&c.readDeadline, time.Now(), d, c.SetReadDeadline)
			}
		}
		_, err := br.Peek(br.Buffered() + 1)
		return err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if !hasLanePrefix(buf) {
			return 0, 0, false, nil
		}
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head = i + 4
			break
		}
		if err := more(); errors.Is(err, errLaneFull) {
			return 0, 0, false, nil
		} else if err != nil {
			return 0, 0, false, err
		}
	}
	buf, _ := br.Peek(head)
	n, closeAfter, ok := parseLaneHead(buf, s.endpoint.maxBody)
	if !ok || head+n > br.Size() {
		return 0, 0, false, nil
	}
	for br.Buffered() < head+n {
		if err := more(); err != nil {
			return 0, 0, false, err
		}
	}
	return head, n, closeAfter, nil
}

var errLaneFull = errors.New("gateway: request larger than the lane's buffer")

// hasLanePrefix: buf is, or may become, a request the lane takes.
func hasLanePrefix(buf []byte) bool {
	const line = "POST /tsa HTTP/1.1\r\n"
	if len(buf) < len(line) {
		return bytes.HasPrefix([]byte(line), buf)
	}
	return string(buf[:len(line)]) == line
}

// handOver gives c to net/http with the bytes br holds, which it reads
// first; the lane's deadlines are cleared (net/http sets its own).
func (s *TSAServer) handOver(c net.Conn, br *bufio.Reader) {
	if br != nil {
		_ = c.SetDeadline(time.Time{})
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			c = &replayConn{Conn: c, pending: bytes.Clone(b)}
		}
	}
	if !s.handoff.give(c) {
		c.Close()
	}
}

// answer appends to out the HTTP response to the TimeStampReq body: what
// tsaEndpoint answers, counted as it counts (metrics.instrument) and under
// the listener's in-flight bound (limitSlots).
func (s *TSAServer) answer(c *laneConn, out []byte, now time.Time, body []byte, closeAfter bool) []byte {
	date := s.httpDate(now)
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		default:
			s.overloaded.Inc()
			s.answered.Add(1)
			return appendLaneReply(out, http.StatusServiceUnavailable, overloadedReply, "", true, closeAfter, date)
		}
	}
	ctx := context.Background()
	if c.token == nil {
		c.token = make([]byte, 0, 2048)
	}
	resp, id, err := s.endpoint.authority.RespondWith(ctx, body, tsa.RespondOptions{Buf: c.token[:0]})
	if cap(resp) > cap(c.token) && cap(resp) <= 1<<16 {
		c.token = resp[:0] // larger tokens (with certificates): keep the larger buffer
	}
	status, retry := http.StatusOK, false
	if err != nil {
		status = http.StatusInternalServerError
		if temporary(err) {
			status, retry = http.StatusServiceUnavailable, true
		}
		s.endpoint.failures.error(ctx, "tsa: respond", err)
		resp, id = internalFailureReply, ""
	}
	out = appendLaneReply(out, status, resp, id, retry, closeAfter, date)
	s.answered.Add(1)
	s.observe.Observe(time.Since(now).Seconds())
	if status == http.StatusOK {
		s.granted.Inc()
	} else {
		s.requests.WithLabelValues("tsa", "/tsa", strconv.Itoa(status)).Inc()
	}
	return out
}

var (
	overloadedReply      = tsa.Reject(tsa.FailSystemFailure, "overloaded: try again")
	internalFailureReply = tsa.Reject(tsa.FailSystemFailure, "internal failure")
)

// appendLaneReply appends a whole HTTP/1.1 response with body to out:
// the headers tsaEndpoint sets, and the Date net/http adds.
func appendLaneReply(out []byte, status int, body []byte, evidenceID string, retryAfter, closeAfter bool, date []byte) []byte {
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\nContent-Type: "+timestampReply+"\r\n"...)
	if evidenceID != "" {
		out = append(out, "Pec-Evidence-Id: "...)
		for i := 0; i < len(evidenceID); i++ {
			b := evidenceID[i]
			if b < ' ' || b == 0x7f {
				b = ' ' // as net/http does with a header value's CR and LF
			}
			out = append(out, b)
		}
		out = append(out, "\r\n"...)
	}
	if retryAfter {
		out = append(out, "Retry-After: 1\r\n"...)
	}
	out = append(out, "Date: "...)
	out = append(out, date...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	if closeAfter {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

// httpDate is a Date header value and the second it names.
type httpDate struct {
	sec   int64
	value []byte
}

// httpDate is the Date of now (RFC 9110 section 6.6.1), formatted once a
// second.
func (s *TSAServer) httpDate(now time.Time) []byte {
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.sec == sec {
		return d.value
	}
	d := &httpDate{sec: sec, value: now.UTC().AppendFormat(nil, http.TimeFormat)}
	s.date.Store(d)
	return d.value
}

func idleTimeout(srv *http.Server) time.Duration {
	if srv.IdleTimeout != 0 {
		return srv.IdleTimeout
	}
	return srv.ReadTimeout
}

func readHeaderTimeout(srv *http.Server) time.Duration {
	if srv.ReadHeaderTimeout > 0 {
		return srv.ReadHeaderTimeout
	}
	return srv.ReadTimeout
}

// parseLaneHead reads a request head (up to and with its empty line) that
// starts "POST /tsa HTTP/1.1": n is its Content-Length and closeAfter
// whether it asks to close the connection. ok is false for a head the lane
// leaves to net/http: a header line that is not strictly "name: value"
// (RFC 9110 section 5: a token, a colon, a value without control
// characters), no Host or more than one, a Host with characters outside
// those of a host name, IP literal and port, a Content-Length that is
// missing, repeated, 0 or above maxBody, a Content-Type other than
// exactly application/timestamp-query, Transfer-Encoding, Expect,
// Upgrade, or a Connection other than close or keep-alive.
func parseLaneHead(head []byte, maxBody int64) (n int, closeAfter bool, ok bool) {
	const line = "POST /tsa HTTP/1.1\r\n"
	if !bytes.HasPrefix(head, []byte(line)) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return 0, false, false
	}
	rest := head[len(line) : len(head)-2] // header lines, each ending in CRLF
	hosts, lengths, types := 0, 0, 0
	for len(rest) > 0 {
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			return 0, false, false
		}
		field := rest[:i]
		rest = rest[i+2:]
		colon := bytes.IndexByte(field, ':')
		if colon <= 0 {
			return 0, false, false
		}
		name, value := field[:colon], trimOWS(field[colon+1:])
		for _, b := range name {
			if !isTokenByte(b) {
				return 0, false, false
			}
		}
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return 0, false, false
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			if len(value) == 0 {
				return 0, false, false
			}
			for _, b := range value {
				if !isHostByte(b) {
					return 0, false, false
				}
			}
		case bytes.EqualFold(name, []byte("Content-Length")):
			lengths++
			if len(value) == 0 || len(value) > 10 {
				return 0, false, false
			}
			v := 0
			for _, b := range value {
				if b < '0' || b > '9' {
					return 0, false, false
				}
				v = 10*v + int(b-'0')
			}
			if v == 0 || int64(v) > maxBody {
				return 0, false, false
			}
			n = v
		case bytes.EqualFold(name, []byte("Content-Type")):
			types++
			if string(value) != timestampQuery {
				return 0, false, false
			}
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				closeAfter = true
			case bytes.EqualFold(value, []byte("keep-alive")):
			default:
				return 0, false, false
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")),
			bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")),
			bytes.EqualFold(name, []byte("Trailer")),
			bytes.EqualFold(name, []byte("TE")):
			return 0, false, false
		}
	}
	if hosts != 1 || lengths != 1 || types != 1 {
		return 0, false, false
	}
	return n, closeAfter, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isTokenByte: b may be in a header name (RFC 9110 section 5.6.2).
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0
}

// isHostByte: b may be in the lane's Host values: a host name, an IPv4 or
// bracketed IPv6 literal, a port.
func isHostByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return b == '.' || b == '-' || b == ':' || b == '[' || b == ']' || b == '_'
}

// handoffListener is the listener of the net/http server: the connections
// the lane hands on.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to the server; false once it is closed.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// replayConn reads pending before the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection, as it does on a
// *net.TCPConn.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
