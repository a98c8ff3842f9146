package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestConn drives the client against net/http's server, plain and over
// TLS: bodies of Content-Length and chunked, the evidence header, keep-alive
// and a server that closes the connection.
func TestConn(t *testing.T) {
	var conns atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-test" || r.ContentLength != int64(len(body)) {
			http.Error(w, "bad request "+r.Method+" "+r.Header.Get("Content-Type"), http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("PEC-Evidence-ID", "ev-"+string(body))
			w.Write(body)
		case "/big": // chunked: more than the server's buffer, no length
			w.(http.Flusher).Flush()
			for range 100 {
				w.Write(bytes.Repeat(body, 100))
			}
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write(body)
		case "/refuse":
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	})
	for _, mode := range []string{"http", "https"} {
		t.Run(mode, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(handler)
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			var c *conn
			var err error
			if mode == "https" {
				srv.StartTLS()
				c, err = newConn(srv.URL, srv.Client().Transport.(*http.Transport).TLSClientConfig)
			} else {
				srv.Start()
				c, err = newConn(srv.URL, nil)
			}
			defer srv.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			conns.Store(0)
			ctx := context.Background()
			for i, tc := range []struct {
				path, body string
				status     int
				want, id   string
			}{
				{"/echo", "abc", 200, "abc", "ev-abc"},
				{"/echo", "", 200, "", "ev-"},
				{"/big", "xyz", 200, strings.Repeat("xyz", 100*100), ""},
				{"/echo", "after chunks", 200, "after chunks", "ev-after chunks"},
				{"/refuse", "x", 503, "no\n", ""},
				{"/close", "bye", 200, "bye", ""},
				{"/echo", "again", 200, "again", "ev-again"},
			} {
				resp, err := c.post(ctx, tc.path, "application/x-test", []byte(tc.body))
				if err != nil {
					t.Fatalf("%d %s: %v", i, tc.path, err)
				}
				if resp.status != tc.status || string(resp.body) != tc.want || resp.evidenceID != tc.id {
					t.Fatalf("%d %s: status %d, body %.40q, id %q; want %d, %.40q, %q", i, tc.path, resp.status, resp.body, resp.evidenceID, tc.status, tc.want, tc.id)
				}
			}
			// One connection for everything up to /close, a second after.
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2 (keep-alive, then a new one after Connection: close)", n)
			}
		})
	}
}

// TestReadResponse: what the node could send wrong is an error, never a
// panic or a body of the wrong length.
func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		ok        bool
		body      string
		keep      bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", true, "abc", true},
		{"LF only", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", true, "x", true},
		{"no reason", "HTTP/1.1 204\r\n\r\n", true, "", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nTrailer: x\r\n\r\n", true, "abcd", true},
		{"100 continue first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true, "ok", true},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", true, "x", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", true, "x", false},
		{"to the end", "HTTP/1.1 200 OK\r\n\r\nall of it", true, "all of it", false},
		{"empty", "", false, "", false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", false, "", false},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", false, "", false},
		{"status too small", "HTTP/1.1 099 OK\r\n\r\n", false, "", false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false, "", false},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, "", false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", false, "", false},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false, "", false},
		{"header without colon", "HTTP/1.1 200 OK\r\nContent-Length 1\r\n\r\nx", false, "", false},
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, "", false},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, "", false},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", false, "", false},
		{"truncated headers", "HTTP/1.1 200 OK\r\nContent-Le", false, "", false},
		{"too many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", maxHeaderLines+1) + "\r\n", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, keep, err := readResponse(bufio.NewReader(strings.NewReader(tc.raw)), nil)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				return
			}
			if string(resp.body) != tc.body || keep != tc.keep {
				t.Errorf("body %q, keep %v; want %q, %v", resp.body, keep, tc.body, tc.keep)
			}
		})
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nPEC-Evidence-ID: e\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 x\r\n\r\nrest"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		resp, _, err := readResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			return
		}
		if resp.status < 200 || resp.status > 999 {
			t.Fatalf("status %d accepted", resp.status)
		}
		if len(resp.body) > len(raw) {
			t.Fatalf("a body of %d bytes from %d bytes", len(resp.body), len(raw))
		}
	})
}
