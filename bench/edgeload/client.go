package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// conn is one client's HTTP/1.1 connection to the node: keep-alive, one
// request at a time, its buffers reused from one request to the next.
//
// It is a load generator's client, not a general one: net/http's client
// costs about 25 µs of CPU per request on the development machine (a
// goroutine each for reading and writing, a channel hand-off each way, a
// Request, a Response, header maps), which the node, sharing the two cores,
// loses; this one writes a request with one system call and reads the
// answer with as few as the kernel allows. A real client sits on another
// machine. It speaks what the node answers: a status line, headers, and
// a body of Content-Length bytes or chunked (RFC 9112 sections 4, 6 and
// 7.1); "Connection: close" closes the connection after the answer.
type conn struct {
	addr, host string      // host:port to dial, Host header
	tls        *tls.Config // nil: plain HTTP
	timeout    time.Duration

	c        net.Conn
	br       *bufio.Reader
	deadline time.Time // set on c
	req      []byte
	body     []byte
}

// newConn returns a client of the node at rawURL's host (http or https).
func newConn(rawURL string, tlsCfg *tls.Config) (*conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme == "https" && tlsCfg != nil:
		tlsCfg = tlsCfg.Clone()
		tlsCfg.ServerName = u.Hostname()
	case u.Scheme == "http" && tlsCfg == nil:
	default:
		return nil, fmt.Errorf("edgeload: %s: scheme %q with TLS %v", rawURL, u.Scheme, tlsCfg != nil)
	}
	return &conn{addr: u.Host, host: u.Host, tls: tlsCfg, timeout: 30 * time.Second}, nil
}

// response is an answer: its body is the connection's buffer, valid
// until the next request.
type response struct {
	status     int
	body       []byte
	evidenceID string // the PEC-Evidence-ID header
}

// post sends one POST of body to path and reads the answer.
func (c *conn) post(ctx context.Context, path, contentType string, body []byte) (response, error) {
	if err := ctx.Err(); err != nil {
		return response{}, err
	}
	if c.c == nil {
		if err := c.dial(ctx); err != nil {
			return response{}, err
		}
	}
	// A deadline bounds a node that stops answering; it is moved only
	// now and then (each move is a timer update in the runtime).
	if now := time.Now(); c.deadline.Sub(now) < c.timeout-time.Second {
		c.deadline = now.Add(c.timeout)
		c.c.SetDeadline(c.deadline)
	}
	r := c.req[:0]
	r = append(r, "POST "...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, c.host...)
	r = append(r, "\r\nContent-Type: "...)
	r = append(r, contentType...)
	r = append(r, "\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, body...)
	c.req = r
	if _, err := c.c.Write(r); err != nil {
		c.close()
		return response{}, fmt.Errorf("edgeload: write request: %w", err)
	}
	resp, keep, err := readResponse(c.br, c.body[:0])
	if err != nil {
		c.close()
		return response{}, err
	}
	c.body = resp.body[:0]
	if !keep {
		c.close()
	}
	return resp, nil
}

func (c *conn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: c.timeout}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		hctx, cancel := context.WithTimeout(ctx, c.timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return fmt.Errorf("edgeload: TLS handshake: %w", err)
		}
		nc = tc
	}
	c.c, c.deadline = nc, time.Time{}
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 16<<10)
	} else {
		c.br.Reset(nc)
	}
	return nil
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// Limits of what readResponse accepts from the node.
const (
	maxHeaderLines = 100
	maxBody        = 16 << 20
)

var errMalformed = errors.New("edgeload: malformed HTTP response")

// readResponse reads one HTTP/1.1 response from br, its body appended to
// buf. keep says whether the connection may carry another request. 1xx
// answers are skipped. Anything it cannot read is an error wrapping
// errMalformed (or the reader's error), never a panic.
func readResponse(br *bufio.Reader, buf []byte) (resp response, keep bool, err error) {
	for {
		resp, keep, err = readOne(br, buf)
		if err != nil || resp.status >= 200 {
			return resp, keep, err
		}
	}
}

func readOne(br *bufio.Reader, buf []byte) (response, bool, error) {
	line, err := readLine(br)
	if err != nil {
		return response{}, false, err
	}
	// HTTP/1.1 SP 3DIGIT SP reason
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return response{}, false, fmt.Errorf("%w: status line %q", errMalformed, trim(line))
	}
	status := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return response{}, false, fmt.Errorf("%w: status line %q", errMalformed, trim(line))
		}
		status = status*10 + int(d-'0')
	}
	if status < 100 {
		return response{}, false, fmt.Errorf("%w: status %d", errMalformed, status)
	}
	resp := response{status: status}
	keep := line[7] == '1' // HTTP/1.0: close unless told otherwise; we never are
	length, chunked := int64(-1), false
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return response{}, false, fmt.Errorf("%w: more than %d header lines", errMalformed, maxHeaderLines)
		}
		line, err := readLine(br)
		if err != nil {
			return response{}, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return response{}, false, fmt.Errorf("%w: header line %q", errMalformed, trim(line))
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			v, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || v < 0 || (length >= 0 && v != length) {
				return response{}, false, fmt.Errorf("%w: Content-Length %q", errMalformed, trim(value))
			}
			length = v
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if !bytes.EqualFold(value, []byte("chunked")) {
				return response{}, false, fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, trim(value))
			}
			chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		case bytes.EqualFold(name, []byte("PEC-Evidence-ID")):
			resp.evidenceID = string(value)
		}
	}
	switch {
	case status < 200 || status == 204 || status == 304:
		resp.body = buf[:0]
		return resp, keep, nil
	case chunked:
		resp.body, err = readChunked(br, buf[:0])
	case length >= 0:
		if length > maxBody {
			return response{}, false, fmt.Errorf("%w: a body of %d bytes", errMalformed, length)
		}
		resp.body, err = readN(br, buf[:0], int(length))
	default:
		// No length: the body runs to the end of the connection.
		resp.body, err = readAll(br, buf[:0])
		keep = false
	}
	if err != nil {
		return response{}, false, err
	}
	return resp, keep, nil
}

// readLine reads a line ending in CRLF (or LF) without it. It is valid
// until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("%w: a line longer than %d bytes", errMalformed, br.Size())
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("edgeload: read response: %w", err)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func readN(br *bufio.Reader, buf []byte, n int) ([]byte, error) {
	if len(buf)+n > maxBody {
		return nil, fmt.Errorf("%w: a body over %d bytes", errMalformed, maxBody)
	}
	buf = grow(buf, n)
	start := len(buf)
	buf = buf[:start+n]
	if _, err := io.ReadFull(br, buf[start:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("edgeload: read body: %w", err)
	}
	return buf, nil
}

func readAll(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		buf = grow(buf, 4096)
		n, err := br.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > maxBody {
			return nil, fmt.Errorf("%w: a body over %d bytes", errMalformed, maxBody)
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("edgeload: read body: %w", err)
		}
	}
}

// readChunked reads a chunked body (RFC 9112 section 7.1): chunk sizes in
// hex, extensions and trailers ignored.
func readChunked(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: chunk size %q", errMalformed, trim(line))
		}
		if size == 0 {
			for n := 0; ; n++ { // trailers, up to the empty line
				if n == maxHeaderLines {
					return nil, fmt.Errorf("%w: more than %d trailer lines", errMalformed, maxHeaderLines)
				}
				line, err := readLine(br)
				if err != nil {
					return nil, err
				}
				if len(line) == 0 {
					return buf, nil
				}
			}
		}
		if size > maxBody {
			return nil, fmt.Errorf("%w: a chunk of %d bytes", errMalformed, size)
		}
		if buf, err = readN(br, buf, int(size)); err != nil {
			return nil, err
		}
		if line, err := readLine(br); err != nil {
			return nil, err
		} else if len(line) != 0 {
			return nil, fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
		}
	}
}

func grow(buf []byte, n int) []byte {
	if cap(buf)-len(buf) < n {
		buf = append(buf[:cap(buf)], make([]byte, n)...)[:len(buf)]
	}
	return buf
}

// trim shortens what an error quotes.
func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
