package gateway_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/tsa"
)

type pki struct {
	ca      *devpki.CA
	tsaCert *x509.Certificate
	tsaKey  crypto.Signer
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	now := time.Now()
	rootKey := mustKey(t)
	ca, err := devpki.NewRootCA(rootKey, "gateway test root", now)
	if err != nil {
		t.Fatal(err)
	}
	tsaKey := mustKey(t)
	cert, err := ca.IssueTSA(tsaKey.Public(), "gateway test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca, tsaCert: cert, tsaKey: tsaKey}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newAuthority(t testing.TB, p *pki, opts tsa.Options) *tsa.Authority {
	t.Helper()
	dir := t.TempDir()
	serials, err := tsa.OpenFileSerials(filepath.Join(dir, "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	cfg := tsa.Config{KeyLabel: "tsa", PolicyOID: "2.999.3161.1", Accuracy: time.Second, MaxRequestBytes: 1024}
	a, err := tsa.New(cfg, p.tsaKey, []*x509.Certificate{p.tsaCert, p.ca.Cert}, serials, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func request(t testing.TB, data string) []byte {
	t.Helper()
	sum := sha256.Sum256([]byte(data))
	r := timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: sum[:], Certificates: true}
	der, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// status decodes the PKIStatusInfo of a TimeStampResp (RFC 3161 section 2.4.2).
func status(t testing.TB, body []byte) (int, asn1.BitString) {
	t.Helper()
	var resp struct {
		Status struct {
			Status       int
			StatusString []asn1.RawValue `asn1:"optional"`
			FailInfo     asn1.BitString  `asn1:"optional"`
		}
		Token asn1.RawValue `asn1:"optional"`
	}
	if rest, err := asn1.Unmarshal(body, &resp); err != nil || len(rest) > 0 {
		t.Fatalf("not a TimeStampResp (%v, %d trailing bytes): %x", err, len(rest), body)
	}
	return resp.Status.Status, resp.Status.FailInfo
}

func TestTSAEndpoint(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(gateway.NewTSAHandler(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{Registry: reg, Gatherer: reg}))
	t.Cleanup(srv.Close)

	tests := tsaEndpointCases(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := tt.send(t, srv.Client(), srv.URL+"/tsa")
			tt.check(t, resp, body)
		})
	}
	if n := counterSum(t, reg, "pec_http_requests_total"); n < float64(len(tests)) {
		t.Errorf("pec_http_requests_total = %v, want ≥ %d", n, len(tests))
	}
}

// tsaCase is a request to the tsa route and the answer it must get: the
// handler's (TestTSAEndpoint) and the fast lane's listener's
// (TestTSALaneAnswersAsHandler) alike.
type tsaCase struct {
	name        string
	method      string
	contentType string
	body        []byte // nil: none
	chunked     bool   // sent without a length
	wantHTTP    int
	wantStatus  int  // PKIStatus: 0 granted, 2 rejection
	wantFail    int  // failInfo bit, when rejected; -1 none
	lane        bool // answered by the fast lane (a well-formed request it parses in full)
}

func tsaEndpointCases(t *testing.T) []tsaCase {
	good := request(t, "hello")
	return []tsaCase{
		{"granted", "POST", "application/timestamp-query", good, false, 200, 0, -1, true},
		{"content type with parameters", "POST", "application/timestamp-query; charset=binary", good, false, 200, 0, -1, false},
		{"GET", "GET", "", nil, false, 405, 2, 2, false},
		{"wrong content type", "POST", "application/json", good, false, 415, 2, 2, false},
		{"no content type", "POST", "", good, false, 415, 2, 2, false},
		{"content type in capitals", "POST", "Application/Timestamp-Query", good, false, 200, 0, -1, false},
		{"a longer content type", "POST", "application/timestamp-query-x", good, false, 415, 2, 2, false},
		{"a content type with a bad parameter", "POST", "application/timestamp-query; =", good, false, 415, 2, 2, false},
		{"empty body", "POST", "application/timestamp-query", []byte{}, false, 200, 2, 5, false},
		{"truncated", "POST", "application/timestamp-query", good[:len(good)-3], false, 200, 2, 5, true},
		{"trailing garbage", "POST", "application/timestamp-query", append(bytes.Clone(good), 0, 1, 2), false, 200, 2, 5, true},
		{"oversized", "POST", "application/timestamp-query", make([]byte, 4096), false, 413, 2, 2, false},
		{"chunked", "POST", "application/timestamp-query", good, true, 200, 0, -1, false},
		{"oversized, chunked", "POST", "application/timestamp-query", make([]byte, 4096), true, 413, 2, 2, false},
	}
}

// send posts the case's request to url and reads the whole answer.
func (tt tsaCase) send(t *testing.T, client *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if tt.body != nil {
		body = bytes.NewReader(tt.body)
		if tt.chunked {
			body = io.MultiReader(body) // no length: chunked
		}
	}
	req, err := http.NewRequest(tt.method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if tt.contentType != "" {
		req.Header.Set("Content-Type", tt.contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, data
}

// check compares the answer with the case's.
func (tt tsaCase) check(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != tt.wantHTTP {
		t.Errorf("HTTP %d, want %d", resp.StatusCode, tt.wantHTTP)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/timestamp-reply" {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.Header.Get("Date") == "" {
		t.Error("no Date")
	}
	st, fi := status(t, body)
	if st != tt.wantStatus {
		t.Fatalf("PKIStatus %d, want %d", st, tt.wantStatus)
	}
	if tt.wantFail >= 0 && fi.At(tt.wantFail) != 1 {
		t.Errorf("failInfo %x, want bit %d", fi.Bytes, tt.wantFail)
	}
	if st == 0 {
		if _, err := timestamp.ParseResponse(body); err != nil {
			t.Errorf("granted reply does not parse: %v", err)
		}
	}
}

// counterSum adds up every series of a counter family.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestPprof: the runtime's profiles are on the ops listener when asked
// for (PEC_DEBUG_PPROF=1 in pec serve), never by default, never on a
// partner-facing listener.
func TestPprof(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		opts := gateway.Options{Pprof: on}
		handlers := map[string]http.Handler{"ops": gateway.NewOpsHandler(opts), "tsa": gateway.NewTSAHandler(nil, 1024, opts), "api": gateway.NewAPIHandler(nil, 1024, opts)}
		for name, h := range handlers {
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/allocs", "/debug/pprof/goroutine?debug=1"} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				want := http.StatusNotFound
				if on && name == "ops" {
					want = http.StatusOK
				}
				if name == "api" && rec.Code == http.StatusUnauthorized {
					rec.Code = http.StatusNotFound // no client certificate: refused before routing
				}
				if rec.Code != want {
					t.Errorf("Pprof %v: %s %s: %d, want %d", on, name, path, rec.Code, want)
				}
			}
		}
	}
}

// TestReadyz: the ops listener's /readyz names every check and why it
// fails; the partner-facing listeners' /readyz says ready or not, nothing
// more; /metrics is on the ops listener only.
func TestReadyz(t *testing.T) {
	t.Parallel()
	failing := errors.New("clock offset 3s exceeds accuracy 1s")
	var fail bool
	reg := prometheus.NewRegistry()
	opts := gateway.Options{Registry: reg, Gatherer: reg, Ready: []gateway.ReadinessCheck{{Name: "tsa", Check: func() error {
		if fail {
			return failing
		}
		return nil
	}}}, Pprof: true}
	ops := gateway.NewOpsHandler(opts)
	partnerFacing := map[string]http.Handler{"tsa": gateway.NewTSAHandler(nil, 1024, opts), "api": gateway.NewAPIHandler(nil, 1024, opts)}
	get := func(h http.Handler, path string) (*httptest.ResponseRecorder, api.Readiness) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body api.Readiness
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: not JSON: %q", path, rec.Body.String())
		}
		return rec, body
	}
	for name, h := range map[string]http.Handler{"ops": ops, "tsa": partnerFacing["tsa"], "api": partnerFacing["api"]} {
		if rec, _ := get(h, "/healthz"); rec.Code != 200 {
			t.Errorf("%s: /healthz %d", name, rec.Code)
		}
		if rec, body := get(h, "/readyz"); rec.Code != 200 || body.Status != "ready" {
			t.Errorf("%s: /readyz %d %+v", name, rec.Code, body)
		}
	}
	if _, body := get(ops, "/readyz"); len(body.Checks) != 1 || body.Checks[0].Name != "tsa" || body.Checks[0].Status != "ok" {
		t.Errorf("ops /readyz: %+v", body)
	}
	fail = true
	rec, body := get(ops, "/readyz")
	if rec.Code != http.StatusServiceUnavailable || len(body.Checks) != 1 || body.Checks[0].Reason != failing.Error() {
		t.Errorf("ops /readyz while failing: %d %+v", rec.Code, body)
	}
	for name, h := range partnerFacing {
		rec, body := get(h, "/readyz")
		if rec.Code != http.StatusServiceUnavailable || body.Status != "not ready" || strings.Contains(rec.Body.String(), "clock") || strings.Contains(rec.Body.String(), "tsa") {
			t.Errorf("%s /readyz while failing: %d %s; want 503 without the details", name, rec.Code, rec.Body.String())
		}
	}

	rec = httptest.NewRecorder()
	ops.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "# TYPE") {
		t.Errorf("ops /metrics: %d %.200s", rec.Code, rec.Body.String())
	}
	for name, h := range partnerFacing {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "# TYPE") {
			t.Errorf("%s serves /metrics: %d %.200s", name, rec.Code, rec.Body.String())
		}
	}

	// Go's profiles, when asked for: on the ops listener only.
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		rec := httptest.NewRecorder()
		ops.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("ops %s: %d %.200s", path, rec.Code, rec.Body.String())
		}
		for name, h := range partnerFacing {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if rec.Code != http.StatusNotFound {
				t.Errorf("%s serves %s: %d %.200s", name, path, rec.Code, rec.Body.String())
			}
		}
	}
}

// TestAPIMutualTLS serves the API over real TLS on 127.0.0.1 and calls it
// with and without a client certificate.
func TestAPIMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	now := time.Now()
	serverKey := mustKey(t)
	serverCert, err := p.ca.IssueServer(serverKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	tlsCfg, err := gateway.ServerTLSConfig([]*x509.Certificate{serverCert, p.ca.Cert}, serverKey, roots)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{}))
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)

	clientKey := mustKey(t)
	clientCert, err := p.ca.IssueClient(clientKey.Public(), "partner-a", "Partner A", now)
	if err != nil {
		t.Fatal(err)
	}
	client := func(withCert bool) *http.Client {
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		if withCert {
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: clientKey}}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}

	t.Run("no client certificate", func(t *testing.T) {
		resp, err := client(false).Get(srv.URL + "/v1/whoami")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("served without a client certificate: %s", resp.Status)
		}
	})
	t.Run("whoami", func(t *testing.T) {
		resp, err := client(true).Get(srv.URL + "/v1/whoami")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var id api.Identity
		if err := json.NewDecoder(resp.Body).Decode(&id); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.Contains(id.Subject, "CN=partner-a") {
			t.Errorf("%s %+v", resp.Status, id)
		}
	})
	t.Run("timestamp", func(t *testing.T) {
		resp, err := client(true).Post(srv.URL+"/v1/timestamps", "application/timestamp-query", bytes.NewReader(request(t, "x")))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if st, _ := status(t, body); resp.StatusCode != 200 || st != 0 {
			t.Errorf("HTTP %d, PKIStatus %d", resp.StatusCode, st)
		}
	})
	t.Run("unknown route is a problem", func(t *testing.T) {
		resp, err := client(true).Get(srv.URL + "/v1/nosuch")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var pr api.Problem
		if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" || pr.Status != 404 || pr.Type != api.TypeNotFound {
			t.Errorf("%s %q %+v", resp.Status, resp.Header.Get("Content-Type"), pr)
		}
	})
	t.Run("wrong method is a problem", func(t *testing.T) {
		resp, err := client(true).Post(srv.URL+"/v1/whoami", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var pr api.Problem
		if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusMethodNotAllowed || pr.Type != api.TypeMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("%s Allow %q %+v", resp.Status, resp.Header.Get("Allow"), pr)
		}
	})
}

// TestTSAFailureIsNotLeaked: when the authority fails (HSM gone), the client
// gets systemFailure and HTTP 500 with no internal text.
func TestTSAFailureIsNotLeaked(t *testing.T) {
	t.Parallel()
	h := gateway.NewTSAHandler(failingResponder{}, 1024, gateway.Options{})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/tsa", bytes.NewReader(request(t, "x")))
	req.Header.Set("Content-Type", "application/timestamp-query")
	h.ServeHTTP(rec, req)
	if rec.Code != 500 {
		t.Errorf("HTTP %d", rec.Code)
	}
	st, fi := status(t, rec.Body.Bytes())
	if st != 2 || fi.At(25) != 1 {
		t.Errorf("PKIStatus %d failInfo %x, want rejection/systemFailure", st, fi.Bytes)
	}
	if bytes.Contains(rec.Body.Bytes(), []byte("pkcs11")) {
		t.Errorf("internal error text leaked: %q", rec.Body.Bytes())
	}
}

type failingResponder struct{}

func (failingResponder) RespondWith(context.Context, []byte, tsa.RespondOptions) ([]byte, string, error) {
	return nil, "", errors.New("hsm: pkcs11: CKR_DEVICE_ERROR")
}

type errResponder struct{ err error }

func (e errResponder) RespondWith(context.Context, []byte, tsa.RespondOptions) ([]byte, string, error) {
	return nil, "", e.err
}

// TestTSATemporaryFailure: an HSM whose token is away or an evidence log
// that cannot write answers 503 with Retry-After and systemFailure, and an
// outage under load logs a line or two, not one a request.
func TestTSATemporaryFailure(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		fmt.Errorf("tsa: sign token: %w", hsm.ErrUnavailable),
		fmt.Errorf("tsa: record token 1: %w", evidence.ErrUnavailable),
	} {
		var logs bytes.Buffer
		h := gateway.NewTSAHandler(errResponder{err}, 1024, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		for range 100 {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/tsa", bytes.NewReader(request(t, "x")))
			req.Header.Set("Content-Type", "application/timestamp-query")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("%v: HTTP %d, Retry-After %q; want 503 with Retry-After", err, rec.Code, rec.Header().Get("Retry-After"))
			}
			if st, fi := status(t, rec.Body.Bytes()); st != 2 || fi.At(25) != 1 {
				t.Fatalf("%v: PKIStatus %d failInfo %x, want rejection/systemFailure", err, st, fi.Bytes)
			}
		}
		if n := bytes.Count(logs.Bytes(), []byte("\n")); n < 1 || n > 2 {
			t.Errorf("%v: %d log lines for 100 failed requests, want 1 or 2:\n%s", err, n, logs.Bytes())
		}
	}
}
