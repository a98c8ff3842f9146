package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"

	"pec/evidence"
	"pec/gateway"
	"pec/hsm"
	"pec/tsa"
)

// laneServer serves s on a loopback port with the timeouts of `pec serve`
// (shorter where given) and returns its address; the server is shut down
// at the end of the test.
func laneServer(t *testing.T, s *gateway.TSAServer, srv *http.Server, tlsCfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if srv == nil {
		srv = &http.Server{}
	}
	srv.Handler = s.Handler()
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 10 * time.Second
	}
	if srv.IdleTimeout == 0 {
		srv.IdleTimeout = 2 * time.Minute
	}
	if srv.WriteTimeout == 0 {
		srv.WriteTimeout = 30 * time.Second
	}
	addr := ln.Addr().String()
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(srv, ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return addr
}

// laneRequest is an RFC 3161 request as the lane takes it, with extra
// header lines.
func laneRequest(body []byte, extra ...string) []byte {
	var b bytes.Buffer
	b.WriteString("POST /tsa HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/timestamp-query\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// readReply reads one response from br and checks that it is a
// TimeStampResp; it returns the response, its body and PKIStatus.
func readReply(t *testing.T, br *bufio.Reader) (*http.Response, []byte, int) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/timestamp-reply" {
		t.Fatalf("HTTP %d, Content-Type %q: %q", resp.StatusCode, ct, body)
	}
	st, _ := status(t, body)
	return resp, body, st
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// TestTSALaneAnswersAsHandler: every case of TestTSAEndpoint, sent
// through Go's client to the listener with its fast lane, gets the answer
// the handler alone gives; the granted ones are the lane's, the others
// net/http's.
func TestTSALaneAnswersAsHandler(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	s := gateway.NewTSAServer(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{Registry: reg})
	addr := laneServer(t, s, nil, nil)
	tests := tsaEndpointCases(t)
	// A connection each (Connection: close): a connection handed on to
	// net/http stays net/http's.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := gateway.LaneAnswered(s)
			resp, body := tt.send(t, client, "http://"+addr+"/tsa")
			tt.check(t, resp, body)
			if lane := gateway.LaneAnswered(s) > before; lane != tt.lane {
				t.Errorf("answered by the lane: %v, want %v", lane, tt.lane)
			}
		})
	}
	// The lane's answers are counted with the handler's.
	if n := counterSum(t, reg, "pec_http_requests_total"); n != float64(len(tests)) {
		t.Errorf("pec_http_requests_total = %v, want %d", n, len(tests))
	}
}

// TestTSALaneConnection: what the lane does with the bytes of one
// connection — pipelined requests, a request in pieces, Connection: close,
// requests it leaves to net/http in the middle of a connection — and that
// every request gets its answer, in order.
func TestTSALaneConnection(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := gateway.NewTSAServer(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{})
	addr := laneServer(t, s, nil, nil)
	good := request(t, "pipelined")

	t.Run("pipelined", func(t *testing.T) {
		c, br := dial(t, addr)
		before := gateway.LaneAnswered(s)
		if _, err := c.Write(bytes.Repeat(laneRequest(good), 3)); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if resp, _, st := readReply(t, br); resp.StatusCode != 200 || st != 0 {
				t.Fatalf("answer %d: HTTP %d, PKIStatus %d", i, resp.StatusCode, st)
			}
		}
		if n := gateway.LaneAnswered(s) - before; n != 3 {
			t.Errorf("the lane answered %d of 3", n)
		}
	})

	t.Run("in pieces", func(t *testing.T) {
		c, br := dial(t, addr)
		req := laneRequest(good)
		for _, cut := range [][2]int{{0, 1}, {1, 10}, {10, 30}, {30, len(req) - 5}, {len(req) - 5, len(req)}} {
			if _, err := c.Write(req[cut[0]:cut[1]]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp, _, st := readReply(t, br); resp.StatusCode != 200 || st != 0 {
			t.Fatalf("HTTP %d, PKIStatus %d", resp.StatusCode, st)
		}
	})

	t.Run("Connection: close", func(t *testing.T) {
		c, br := dial(t, addr)
		if _, err := c.Write(laneRequest(good, "Connection: close")); err != nil {
			t.Fatal(err)
		}
		resp, _, st := readReply(t, br)
		if resp.StatusCode != 200 || st != 0 || !resp.Close {
			t.Fatalf("HTTP %d, PKIStatus %d, Connection %q", resp.StatusCode, st, resp.Header.Get("Connection"))
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := br.ReadByte(); err != io.EOF {
			t.Errorf("read %v, %v after Connection: close; want EOF", n, err)
		}
	})

	// Each request that the lane does not take, then one it would take: the
	// second is net/http's too (the connection is), and both are answered.
	handedOn := []struct {
		name, req string
		want      int
	}{
		{"GET /healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200},
		{"GET /tsa", "GET /tsa HTTP/1.1\r\nHost: x\r\n\r\n", 405},
		{"HTTP/1.0", "POST /tsa HTTP/1.0\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: " + fmt.Sprint(len(good)) + "\r\nConnection: keep-alive\r\n\r\n" + string(good), 200},
		{"chunked", "POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(good), good), 200},
		{"Expect", string(laneRequest(good, "Expect: 100-continue")), 200},
		{"two Content-Lengths", "POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"no Host", "POST /tsa HTTP/1.1\r\nContent-Type: application/timestamp-query\r\nContent-Length: " + fmt.Sprint(len(good)) + "\r\n\r\n" + string(good), 400},
		{"a header too large for the lane", string(laneRequest(good, "X-Padding: "+strings.Repeat("p", 5000))), 200},
		{"a query", strings.Replace(string(laneRequest(good)), "/tsa", "/tsa?x=1", 1), 200},
	}
	for _, tt := range handedOn {
		t.Run("handed on: "+tt.name, func(t *testing.T) {
			c, br := dial(t, addr)
			before := gateway.LaneAnswered(s)
			if _, err := c.Write([]byte(tt.req)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode == http.StatusContinue {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tt.want)
			}
			if resp.Close {
				return // net/http closes after a 400
			}
			if _, err := c.Write(laneRequest(good)); err != nil {
				t.Fatal(err)
			}
			if resp, _, st := readReply(t, br); resp.StatusCode != 200 || st != 0 {
				t.Fatalf("the next request: HTTP %d, PKIStatus %d", resp.StatusCode, st)
			}
			if n := gateway.LaneAnswered(s) - before; n != 0 {
				t.Errorf("the lane answered %d requests of a connection it handed on", n)
			}
		})
	}

	t.Run("lane, then handed on", func(t *testing.T) {
		c, br := dial(t, addr)
		before := gateway.LaneAnswered(s)
		batch := append(laneRequest(good), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"...)
		batch = append(batch, laneRequest(good)...)
		if _, err := c.Write(batch); err != nil {
			t.Fatal(err)
		}
		if resp, _, st := readReply(t, br); resp.StatusCode != 200 || st != 0 {
			t.Fatalf("first: HTTP %d, PKIStatus %d", resp.StatusCode, st)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		health, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /healthz: HTTP %d %q", resp.StatusCode, health)
		}
		if resp, _, st := readReply(t, br); resp.StatusCode != 200 || st != 0 {
			t.Fatalf("third: HTTP %d, PKIStatus %d", resp.StatusCode, st)
		}
		if n := gateway.LaneAnswered(s) - before; n != 1 {
			t.Errorf("the lane answered %d, want the first only", n)
		}
	})
}

// idResponder answers every request with a fixed granted-looking reply and
// an evidence id, or blocks until release is closed.
type idResponder struct {
	reply   []byte
	id      string
	started chan struct{}
	release chan struct{}
}

func (r *idResponder) RespondWith(ctx context.Context, _ []byte, opts tsa.RespondOptions) ([]byte, string, error) {
	if opts.Client != nil {
		return nil, "", errors.New("a client over plain HTTP")
	}
	if r.release != nil {
		r.started <- struct{}{}
		<-r.release
	}
	return r.reply, r.id, nil
}

// TestTSALaneEvidenceAndFailures: the evidence id in PEC-Evidence-ID; our
// own failures answered as the handler answers them (500 without detail,
// 503 with Retry-After when temporary), logged once.
func TestTSALaneEvidenceAndFailures(t *testing.T) {
	t.Parallel()
	reply := tsa.Reject(tsa.FailBadRequest, "a fixed reply")
	s := gateway.NewTSAServer(&idResponder{reply: reply, id: "ev-test-1"}, 1024, gateway.Options{})
	addr := laneServer(t, s, nil, nil)
	c, br := dial(t, addr)
	c.Write(laneRequest(request(t, "x")))
	resp, body, _ := readReply(t, br)
	if got := resp.Header.Get("Pec-Evidence-Id"); got != "ev-test-1" || !bytes.Equal(body, reply) {
		t.Errorf("PEC-Evidence-ID %q, body %x; want ev-test-1 and the authority's reply", got, body)
	}

	for _, tt := range []struct {
		err   error
		want  int
		retry bool
	}{
		{errors.New("hsm: pkcs11: CKR_DEVICE_ERROR"), 500, false},
		{fmt.Errorf("tsa: sign token: %w", hsm.ErrUnavailable), 503, true},
		{fmt.Errorf("tsa: record token 1: %w", evidence.ErrUnavailable), 503, true},
	} {
		var logs syncBuffer
		s := gateway.NewTSAServer(errResponder{tt.err}, 1024, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		addr := laneServer(t, s, nil, nil)
		c, br := dial(t, addr)
		for range 20 {
			c.Write(laneRequest(request(t, "x")))
			resp, body, st := readReply(t, br)
			if resp.StatusCode != tt.want || (resp.Header.Get("Retry-After") != "") != tt.retry {
				t.Fatalf("%v: HTTP %d, Retry-After %q", tt.err, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if _, fi := status(t, body); st != 2 || fi.At(25) != 1 {
				t.Fatalf("%v: PKIStatus %d failInfo %x, want systemFailure", tt.err, st, fi.Bytes)
			}
			if bytes.Contains(body, []byte("pkcs11")) || bytes.Contains(body, []byte("record token")) {
				t.Fatalf("internal error text leaked: %q", body)
			}
		}
		if n := logs.lines(); n != 1 {
			t.Errorf("%v: %d log lines for 20 failures, want 1", tt.err, n)
		}
		if gateway.LaneAnswered(s) != 20 {
			t.Errorf("%v: the lane answered %d of 20", tt.err, gateway.LaneAnswered(s))
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) lines() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Count(b.b.Bytes(), []byte("\n"))
}

// TestTSALaneInFlightBound: the lane and net/http share the listener's
// in-flight bound: with max_in_flight 1 and a request under way, one more
// is refused at once with 503, Retry-After and systemFailure, on the lane
// and off it.
func TestTSALaneInFlightBound(t *testing.T) {
	t.Parallel()
	r := &idResponder{reply: tsa.Reject(tsa.FailBadRequest, "done"), started: make(chan struct{}), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	s := gateway.NewTSAServer(r, 1024, gateway.Options{MaxInFlight: 1, Registry: reg})
	addr := laneServer(t, s, nil, nil)
	good := request(t, "x")

	held, heldBr := dial(t, addr)
	held.Write(laneRequest(good))
	<-r.started // the one slot is taken

	for name, req := range map[string][]byte{
		"lane":     laneRequest(good),
		"net/http": []byte("POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(good), good)),
	} {
		c, br := dial(t, addr)
		c.Write(req)
		resp, body, st := readReply(t, br)
		if _, fi := status(t, body); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || st != 2 || fi.At(25) != 1 {
			t.Errorf("%s: HTTP %d, Retry-After %q, PKIStatus %d, failInfo %x; want 503, Retry-After, systemFailure", name, resp.StatusCode, resp.Header.Get("Retry-After"), st, fi.Bytes)
		}
	}
	if n := counterSum(t, reg, "pec_http_overloaded_total"); n != 2 {
		t.Errorf("pec_http_overloaded_total = %v, want 2", n)
	}
	close(r.release)
	if resp, _, _ := readReply(t, heldBr); resp.StatusCode != 200 {
		t.Errorf("the request under way: HTTP %d", resp.StatusCode)
	}
	// Its slot is free again: the next ones are served, one at a time.
	go func() {
		for range r.started {
		}
	}()
	for i := range 3 {
		held.Write(laneRequest(good))
		if resp, _, _ := readReply(t, heldBr); resp.StatusCode != 200 {
			t.Fatalf("request %d after: HTTP %d", i, resp.StatusCode)
		}
	}
}

// TestTSALaneTimeouts: an idle connection is closed after IdleTimeout, a
// request that stops half-way after ReadHeaderTimeout; a connection that
// keeps sending requests is not closed by the idle timeout of its first
// wait (the deadline moves with it).
func TestTSALaneTimeouts(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := gateway.NewTSAServer(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{})
	addr := laneServer(t, s, &http.Server{IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond}, nil)
	good := request(t, "x")
	closedWithin := func(t *testing.T, br *bufio.Reader, c net.Conn, d time.Duration) {
		t.Helper()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("read: %v, want EOF (the server closing)", err)
		}
		if took := time.Since(start); took > d {
			t.Errorf("closed after %s, want within %s", took, d)
		}
	}
	t.Run("idle", func(t *testing.T) {
		c, br := dial(t, addr)
		c.Write(laneRequest(good))
		readReply(t, br)
		closedWithin(t, br, c, 2*time.Second)
	})
	t.Run("half a request", func(t *testing.T) {
		c, br := dial(t, addr)
		req := laneRequest(good)
		c.Write(req[:30])
		closedWithin(t, br, c, 2*time.Second)
	})
	t.Run("busy", func(t *testing.T) {
		c, br := dial(t, addr)
		for start := time.Now(); time.Since(start) < time.Second; {
			if _, err := c.Write(laneRequest(good)); err != nil {
				t.Fatal(err)
			}
			readReply(t, br)
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestTSALaneShutdown: Shutdown closes idle connections at once, lets a
// request under way finish with its answer, then returns.
func TestTSALaneShutdown(t *testing.T) {
	t.Parallel()
	r := &idResponder{reply: tsa.Reject(tsa.FailBadRequest, "done"), started: make(chan struct{}), release: make(chan struct{})}
	s := gateway.NewTSAServer(r, 1024, gateway.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	srv := &http.Server{Handler: s.Handler(), IdleTimeout: time.Minute}
	go func() { served <- s.Serve(srv, ln) }()
	addr := ln.Addr().String()

	idle, idleBr := dial(t, addr)
	busy, busyBr := dial(t, addr)
	busy.Write(laneRequest(request(t, "x")))
	<-r.started
	// A connection handed on to net/http, idle too.
	other, otherBr := dial(t, addr)
	other.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	if resp, err := http.ReadResponse(otherBr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(50 * time.Millisecond) // the idle one waits for its first request

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	for name, br := range map[string]*bufio.Reader{"idle lane connection": idleBr, "idle net/http connection": otherBr} {
		conn := map[string]net.Conn{"idle lane connection": idle, "idle net/http connection": other}[name]
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s: %v, want EOF: closed by Shutdown", name, err)
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was under way", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(r.release)
	if resp, _, _ := readReply(t, busyBr); resp.StatusCode != 200 {
		t.Errorf("the request under way: HTTP %d", resp.StatusCode)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Shutdown")
	}
}

// TestTSALaneTLS: over TLS, every connection is net/http's (the handshake,
// r.TLS): the requests are answered, none by the lane.
func TestTSALaneTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	now := time.Now()
	key := mustKey(t)
	cert, err := p.ca.IssueServer(key.Public(), nil, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	s := gateway.NewTSAServer(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{})
	addr := laneServer(t, s, nil, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}})
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(client.CloseIdleConnections)
	for range 3 {
		resp, err := client.Post("https://"+addr+"/tsa", "application/timestamp-query", bytes.NewReader(request(t, "tls")))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if st, _ := status(t, body); resp.StatusCode != 200 || st != 0 {
			t.Fatalf("HTTP %d, PKIStatus %d", resp.StatusCode, st)
		}
	}
	if n := gateway.LaneAnswered(s); n != 0 {
		t.Errorf("the lane answered %d TLS requests", n)
	}
}

// FuzzLaneHead: any request head that the lane takes is read by net/http
// the same way — POST /tsa, the same Content-Length, Content-Type and
// Connection, a valid Host and valid header fields (what net/http's
// server checks beyond ReadRequest) — so that no request means one thing
// to the lane and another to the server behind it. The lane never panics.
func FuzzLaneHead(f *testing.F) {
	for _, seed := range []string{
		"POST /tsa HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/timestamp-query\r\nContent-Length: 59\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nhost: [::1]:80\r\ncontent-type: application/timestamp-query\r\ncontent-length: 1\r\nconnection: Close\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type:application/timestamp-query\r\nContent-Length:\t7 \r\nUser-Agent: a\tb\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n folded\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 07\r\nX: \x00\r\n\r\n",
		"POST /tsa HTTP/1.1\r\nHost: x\nContent-Length: 7\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		n, closeAfter, ok := gateway.ParseLaneHead(head, 1024)
		if !ok {
			return
		}
		if n < 1 || n > 1024 {
			t.Fatalf("took Content-Length %d, outside 1-1024", n)
		}
		req, err := http.ReadRequest(bufio.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader(make([]byte, n)))))
		if err != nil {
			t.Fatalf("the lane takes a head net/http refuses (%v): %q", err, head)
		}
		switch {
		case req.Method != "POST" || req.URL.Path != "/tsa" || req.URL.RawQuery != "" || req.ProtoMajor != 1 || req.ProtoMinor != 1:
			t.Fatalf("net/http reads %s %s HTTP/%d.%d: %q", req.Method, req.URL, req.ProtoMajor, req.ProtoMinor, head)
		case req.ContentLength != int64(n) || len(req.TransferEncoding) > 0:
			t.Fatalf("net/http reads Content-Length %d, Transfer-Encoding %q; the lane %d: %q", req.ContentLength, req.TransferEncoding, n, head)
		case req.Header.Get("Content-Type") != "application/timestamp-query" || len(req.Header.Values("Content-Type")) != 1:
			t.Fatalf("net/http reads Content-Type %q: %q", req.Header.Values("Content-Type"), head)
		case req.Close != closeAfter:
			t.Fatalf("net/http reads Close %v, the lane %v: %q", req.Close, closeAfter, head)
		case req.Host == "" || !httpguts.ValidHostHeader(req.Host):
			t.Fatalf("net/http's server refuses Host %q: %q", req.Host, head)
		case req.Header.Get("Expect") != "" || req.Header.Get("Upgrade") != "":
			t.Fatalf("Expect or Upgrade taken: %q", head)
		}
		for k, vv := range req.Header {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("net/http's server refuses header name %q: %q", k, head)
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("net/http's server refuses the value %q of %s: %q", v, k, head)
				}
			}
		}
	})
}

// TestParseLaneHead: the heads the lane takes and those it leaves to
// net/http, each for one reason.
func TestParseLaneHead(t *testing.T) {
	t.Parallel()
	const (
		line = "POST /tsa HTTP/1.1\r\n"
		std  = "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n"
	)
	for _, tt := range []struct {
		name, head string
		n          int
		close, ok  bool
	}{
		{"taken", line + std + "\r\n", 7, false, true},
		{"other headers", line + "User-Agent: x\r\nAccept: */*\r\n" + std + "\r\n", 7, false, true},
		{"names in any case, OWS", line + "HOST:x\r\ncontent-type:\tapplication/timestamp-query \r\ncontent-LENGTH: 07\r\n\r\n", 7, false, true},
		{"Connection: close", line + std + "Connection: CLOSE\r\n\r\n", 7, true, true},
		{"Connection: keep-alive", line + std + "Connection: keep-alive\r\n\r\n", 7, false, true},
		{"the body limit", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 1024\r\n\r\n", 1024, false, true},
		{"over the body limit", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 1025\r\n\r\n", 0, false, false},
		{"Content-Length 0", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 0\r\n\r\n", 0, false, false},
		{"Content-Length +7", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: +7\r\n\r\n", 0, false, false},
		{"Content-Length 7, 7", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7, 7\r\n\r\n", 0, false, false},
		{"a huge Content-Length", line + "Host: x\r\nContent-Type: application/timestamp-query\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, false, false},
		{"two Content-Lengths", line + std + "Content-Length: 7\r\n\r\n", 0, false, false},
		{"no Content-Length", line + "Host: x\r\nContent-Type: application/timestamp-query\r\n\r\n", 0, false, false},
		{"no Host", line + "Content-Type: application/timestamp-query\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"two Hosts", line + std + "Host: y\r\n\r\n", 0, false, false},
		{"an empty Host", line + "Host:\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"a Host with a space", line + "Host: a b\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"a Host with a slash", line + "Host: a/b\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"no Content-Type", line + "Host: x\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"Content-Type with parameters", line + "Host: x\r\nContent-Type: application/timestamp-query; a=b\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"two Content-Types", line + std + "Content-Type: application/timestamp-query\r\n\r\n", 0, false, false},
		{"Transfer-Encoding", line + std + "Transfer-Encoding: chunked\r\n\r\n", 0, false, false},
		{"Expect", line + std + "Expect: 100-continue\r\n\r\n", 0, false, false},
		{"Upgrade", line + std + "Upgrade: h2c\r\n\r\n", 0, false, false},
		{"TE", line + std + "TE: trailers\r\n\r\n", 0, false, false},
		{"Trailer", line + std + "Trailer: X\r\n\r\n", 0, false, false},
		{"Connection: upgrade", line + std + "Connection: upgrade\r\n\r\n", 0, false, false},
		{"Connection: keep-alive, close", line + std + "Connection: keep-alive, close\r\n\r\n", 0, false, false},
		{"obs-fold", line + std + "X: a\r\n b\r\n\r\n", 0, false, false},
		{"a space before the colon", line + std + "X : a\r\n\r\n", 0, false, false},
		{"no colon", line + std + "X\r\n\r\n", 0, false, false},
		{"an empty name", line + std + ": a\r\n\r\n", 0, false, false},
		{"a bare LF", line + "Host: x\nX: y\r\nContent-Type: application/timestamp-query\r\nContent-Length: 7\r\n\r\n", 0, false, false},
		{"a bare CR", line + std + "X: a\rb\r\n\r\n", 0, false, false},
		{"a NUL", line + std + "X: a\x00b\r\n\r\n", 0, false, false},
		{"a DEL", line + std + "X: a\x7fb\r\n\r\n", 0, false, false},
		{"HTTP/1.0", "POST /tsa HTTP/1.0\r\n" + std + "\r\n", 0, false, false},
		{"another path", "POST /tsa/ HTTP/1.1\r\n" + std + "\r\n", 0, false, false},
		{"a query", "POST /tsa?x HTTP/1.1\r\n" + std + "\r\n", 0, false, false},
		{"lower-case method", "post /tsa HTTP/1.1\r\n" + std + "\r\n", 0, false, false},
		{"absolute form", "POST http://x/tsa HTTP/1.1\r\n" + std + "\r\n", 0, false, false},
		{"no empty line", line + std, 0, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, closeAfter, ok := gateway.ParseLaneHead([]byte(tt.head), 1024)
			if ok != tt.ok || ok && (n != tt.n || closeAfter != tt.close) {
				t.Errorf("n %d, close %v, ok %v; want %d, %v, %v", n, closeAfter, ok, tt.n, tt.close, tt.ok)
			}
		})
	}
}

// TestTSALaneHTTPShutdown: the http.Server's own Shutdown stops the lane
// too: Serve returns, the listener is closed, an idle lane connection too.
func TestTSALaneHTTPShutdown(t *testing.T) {
	t.Parallel()
	s := gateway.NewTSAServer(&idResponder{reply: tsa.Reject(tsa.FailBadRequest, "x")}, 1024, gateway.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler()}
	served := make(chan error, 1)
	go func() { served <- s.Serve(srv, ln) }()
	c, br := dial(t, ln.Addr().String())
	c.Write(laneRequest(request(t, "x")))
	readReply(t, br)
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running after the http.Server's Shutdown")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the idle lane connection: %v, want EOF", err)
	}
}
