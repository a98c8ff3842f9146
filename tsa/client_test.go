package tsa_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/digitorus/timestamp"

	"pec/tsa"
)

// osslServer is a TSA over HTTP whose replies OpenSSL makes: each request
// body goes to `openssl ts -reply` with conf, after tamper (if not nil) has
// changed the query, so that the reply answers another request.
func osslServer(t *testing.T, s *osslTSA, conf string, tamper func(*timestamp.Request)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/timestamp-query" {
			t.Errorf("%s with content type %q, want a POST of application/timestamp-query", r.Method, r.Header.Get("Content-Type"))
		}
		query, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		if tamper != nil {
			req, err := timestamp.ParseRequest(query)
			if err != nil {
				t.Errorf("the client's request: %v", err)
				return
			}
			tamper(req)
			if query, err = req.Marshal(); err != nil {
				t.Error(err)
				return
			}
		}
		resp, err := s.reply(query, conf)
		if err != nil {
			t.Error(err)
			http.Error(w, "openssl failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/timestamp-reply")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// cannedServer answers every request with the same status, type and body.
func cannedServer(t *testing.T, status int, contentType string, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestClientRequest: tokens requested from OpenSSL's TSA answer the
// request and verify.
func TestClientRequest(t *testing.T) {
	t.Parallel()
	s := newOSSLTSA(t, osslOpts{})
	srv := osslServer(t, s, s.config(t), nil)
	for _, tc := range []struct {
		name string
		hash crypto.Hash
		opts tsa.RequestOptions
	}{
		{"sha256/nonce/cert", crypto.SHA256, tsa.RequestOptions{}},
		{"sha512/no nonce/no cert", crypto.SHA512, tsa.RequestOptions{NoNonce: true, NoCert: true}},
		{"sha384/policy", crypto.SHA384, tsa.RequestOptions{Policy: "1.2.3.4.5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			digest := digestOf(tc.hash, stampedData)
			c := &tsa.Client{URL: srv.URL}
			res, err := c.Request(t.Context(), tc.hash, digest, tc.opts)
			if err != nil {
				t.Fatalf("Request: %v", err)
			}
			tok := res.Token
			if tok.Hash != tc.hash || !bytes.Equal(tok.Imprint, digest) {
				t.Errorf("imprint %v %x, want the request's", tok.Hash, tok.Imprint)
			}
			if (tok.Nonce == nil) != tc.opts.NoNonce {
				t.Errorf("Nonce = %v with NoNonce %v", tok.Nonce, tc.opts.NoNonce)
			}
			if (len(tok.Certificates) == 0) != tc.opts.NoCert {
				t.Errorf("%d certificates with NoCert %v", len(tok.Certificates), tc.opts.NoCert)
			}
			want := "1.2.3.4.1" // the TSA's default
			if tc.opts.Policy != "" {
				want = tc.opts.Policy
			}
			if tok.Policy.String() != want {
				t.Errorf("Policy = %v, want %v", tok.Policy, want)
			}
			vtok, err := tsa.Verify(res.Response, digest, tc.hash, tsa.VerifyOptions{Roots: s.roots(), Certificates: []*x509.Certificate{s.cert}})
			if err != nil {
				t.Fatalf("Verify(Response): %v", err)
			}
			if vtok.Serial.Cmp(tok.Serial) != 0 {
				t.Errorf("Verify read serial %v, Request %v", vtok.Serial, tok.Serial)
			}
		})
	}
}

// TestClientEvidenceID: the PEC-Evidence-ID header of the answer is the
// result's EvidenceID when it is an evidence id, and nothing otherwise.
func TestClientEvidenceID(t *testing.T) {
	t.Parallel()
	s := newOSSLTSA(t, osslOpts{})
	conf := s.config(t)
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name   string
		header []string // values sent
		want   string
	}{
		{"a PEC node's id", []string{"0190f3c2a1b2c3d4e5f60718293a4b5c"}, "0190f3c2a1b2c3d4e5f60718293a4b5c"},
		{"every allowed character", []string{"Az09._:-"}, "Az09._:-"},
		{"128 characters", []string{long[:128]}, long[:128]},
		{"no header (another TSA)", nil, ""},
		{"empty", []string{""}, ""},
		{"129 characters", []string{long}, ""},
		{"a space", []string{"abc def"}, ""},
		{"shell characters", []string{"abc;rm$(x)"}, ""},
		{"a path", []string{"../../etc/passwd"}, ""},
		{"non-ASCII", []string{"évidence"}, ""},
		{"two values", []string{"abc", "def"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				query, err := io.ReadAll(r.Body)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := s.reply(query, conf)
				if err != nil {
					t.Error(err)
					http.Error(w, "openssl failed", http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/timestamp-reply")
				for _, v := range tc.header {
					w.Header().Add(tsa.EvidenceIDHeader, v)
				}
				w.Write(resp)
			}))
			defer srv.Close()
			c := &tsa.Client{URL: srv.URL}
			res, err := c.Request(t.Context(), crypto.SHA256, digestOf(crypto.SHA256, stampedData), tsa.RequestOptions{})
			if err != nil {
				t.Fatalf("Request: %v", err)
			}
			if res.EvidenceID != tc.want {
				t.Errorf("EvidenceID = %q, want %q", res.EvidenceID, tc.want)
			}
		})
	}
}

// TestClientRequestFails: refusals, HTTP faults and replies that answer
// another request are errors, each of its kind.
func TestClientRequestFails(t *testing.T) {
	t.Parallel()
	s := newOSSLTSA(t, osslOpts{})
	conf := s.config(t)
	noNonce := tsa.RequestOptions{NoNonce: true}
	// A reply made in advance answers only a request without nonce.
	resp, _ := s.stamp(t, stampedData, conf, "-sha256", "-cert", "-no_nonce")
	rejectBadData, err := timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadDataFormat)
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := timestamp.CreateErrorResponse(timestamp.Waiting, timestamp.TimeNotAvailable)
	if err != nil {
		t.Fatal(err)
	}
	const reply = "application/timestamp-reply"

	type want struct {
		err    error        // errors.Is
		reject tsa.FailInfo // a *RejectError with this failInfo, if err is nil
		status int          // its PKIStatus
		text   string       // in the message
	}
	for _, tc := range []struct {
		name string
		srv  func(t *testing.T) *httptest.Server
		opts tsa.RequestOptions
		want want
	}{
		{name: "HTTP 500", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusInternalServerError, "text/plain", []byte("oops"))
		}, want: want{text: "500 Internal Server Error"}},
		{name: "HTTP 503 with a rejection", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusServiceUnavailable, reply, waiting)
		}, want: want{reject: tsa.FailTimeNotAvailable, status: tsa.StatusWaiting}},
		{name: "wrong content type", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, "application/octet-stream", resp)
		}, opts: noNonce, want: want{text: "content type"}},
		{name: "content type with parameters", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, reply+"; charset=binary", rejectBadData)
		}, want: want{reject: tsa.FailBadDataFormat, status: tsa.StatusRejection}},
		{name: "rejection (digitorus)", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, reply, rejectBadData)
		}, want: want{reject: tsa.FailBadDataFormat, status: tsa.StatusRejection}},
		{name: "unaccepted policy (openssl)", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, nil)
		}, opts: tsa.RequestOptions{Policy: "1.2.3.4.99"}, want: want{reject: tsa.FailUnacceptedPolicy, status: tsa.StatusRejection}},
		{name: "nonce differs", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) { r.Nonce = new(big.Int).Add(r.Nonce, big.NewInt(1)) })
		}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "nonce missing", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) { r.Nonce = nil })
		}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "imprint differs", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) { r.HashedMessage[0] ^= 1 })
		}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "imprint hash differs", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) {
				r.HashAlgorithm, r.HashedMessage = crypto.SHA512, digestOf(crypto.SHA512, stampedData)
			})
		}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "policy differs", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) { r.TSAPolicyOID = nil })
		}, opts: tsa.RequestOptions{Policy: "1.2.3.4.5"}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "certificate missing", srv: func(t *testing.T) *httptest.Server {
			return osslServer(t, s, conf, func(r *timestamp.Request) { r.Certificates = false })
		}, want: want{err: tsa.ErrResponseMismatch}},
		{name: "damaged token", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, reply, flip(resp, len(resp)-5))
		}, opts: noNonce, want: want{err: tsa.ErrBadSignature}},
		{name: "not DER", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, reply, []byte("<html>"))
		}, want: want{err: tsa.ErrMalformed}},
		{name: "too large", srv: func(t *testing.T) *httptest.Server {
			return cannedServer(t, http.StatusOK, reply, make([]byte, 2<<20))
		}, want: want{text: "larger than"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &tsa.Client{URL: tc.srv(t).URL}
			res, err := c.Request(t.Context(), crypto.SHA256, digestOf(crypto.SHA256, stampedData), tc.opts)
			if err == nil {
				t.Fatalf("Request succeeded: %+v", res.Token)
			}
			t.Log(err)
			rej, isReject := errors.AsType[*tsa.RejectError](err)
			switch w := tc.want; {
			case w.err != nil:
				if !errors.Is(err, w.err) {
					t.Errorf("error %v, want %v", err, w.err)
				}
			case w.text != "":
				if isReject || !strings.Contains(err.Error(), w.text) {
					t.Errorf("error %v, want one about %q", err, w.text)
				}
			default:
				if !isReject || rej.FailInfo != w.reject || rej.Status != w.status {
					t.Errorf("error %v, want a *RejectError with status %d, %v", err, w.status, w.reject)
				}
			}
		})
	}
}

// TestClientRequestBadInput: the client refuses what it cannot send.
func TestClientRequestBadInput(t *testing.T) {
	t.Parallel()
	srv := cannedServer(t, http.StatusInternalServerError, "text/plain", nil)
	c := &tsa.Client{URL: srv.URL}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		hash   crypto.Hash
		digest []byte
		opts   tsa.RequestOptions
		want   error
	}{
		{"SHA-1", t.Context(), crypto.SHA1, digestOf(crypto.SHA1, stampedData), tsa.RequestOptions{}, tsa.ErrUnsupportedAlgorithm},
		{"short digest", t.Context(), crypto.SHA256, make([]byte, 20), tsa.RequestOptions{}, nil},
		{"bad policy", t.Context(), crypto.SHA256, make([]byte, 32), tsa.RequestOptions{Policy: "1.2.x"}, nil},
		{"canceled", canceled, crypto.SHA256, make([]byte, 32), tsa.RequestOptions{}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Request(tc.ctx, tc.hash, tc.digest, tc.opts)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Request: %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}
