package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"pec/gateway"
	"pec/gateway/api"
	"pec/tsa"
)

// wantTypedProblem checks an error answer: an RFC 9457 problem whose type
// is one of api's (so documented, see TestProblemTypesDocumented), whose
// status is its type's and the answer's, whose title is its type's, with
// Retry-After exactly when the type calls for it. want, when not empty, is
// the type expected. It returns the problem.
func wantTypedProblem(t testing.TB, status int, header http.Header, body []byte, want api.ProblemType) api.Problem {
	t.Helper()
	var p api.Problem
	if ct := header.Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(body, &p) != nil {
		t.Fatalf("HTTP %d %q, not a problem: %.300s", status, ct, body)
	}
	info, ok := p.Type.Info()
	switch {
	case !ok:
		t.Fatalf("problem type %q is not one of api's: %s", p.Type, body)
	case want != "" && p.Type != want:
		t.Fatalf("problem type %q, want %q: %s", p.Type, want, body)
	case p.Status != status || info.Status != status:
		t.Fatalf("HTTP %d, problem status %d, type %s's status %d: %s", status, p.Status, p.Type.Reason(), info.Status, body)
	case p.Title != info.Title:
		t.Fatalf("title %q, type %s's is %q", p.Title, p.Type.Reason(), info.Title)
	case info.RetryAfter != (header.Get("Retry-After") != ""):
		t.Fatalf("%s with Retry-After %q", p.Type.Reason(), header.Get("Retry-After"))
	}
	return p
}

// TestProblemTypesDocumented: openapi.yaml lists every problem type with
// its status and title, in the Problem schema's enum and in
// x-problem-types, and nothing more; each reason is one type.
func TestProblemTypesDocumented(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Types []struct {
			Type   string `yaml:"type"`
			Status int    `yaml:"status"`
			Title  string `yaml:"title"`
			When   string `yaml:"when"`
		} `yaml:"x-problem-types"`
		Components struct {
			Schemas struct {
				Problem struct {
					Properties struct {
						Type struct {
							Enum []string `yaml:"enum"`
						} `yaml:"type"`
					} `yaml:"properties"`
				} `yaml:"Problem"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	types := api.ProblemTypes()
	if len(types) < 20 {
		t.Fatalf("%d problem types", len(types))
	}
	var names []string
	seen := map[string]bool{}
	for _, pt := range types {
		names = append(names, string(pt.Type))
		if seen[pt.Type.Reason()] || !strings.HasPrefix(string(pt.Type), api.ProblemPrefix) || pt.Status < 400 || pt.Title == "" {
			t.Errorf("type %+v: duplicate, outside %s, not an error status or no title", pt, api.ProblemPrefix)
		}
		seen[pt.Type.Reason()] = true
		if pt.RetryAfter && pt.Status != http.StatusServiceUnavailable {
			t.Errorf("%s: Retry-After with status %d", pt.Type, pt.Status)
		}
	}
	if enum := doc.Components.Schemas.Problem.Properties.Type.Enum; !slices.Equal(enum, names) {
		t.Errorf("openapi.yaml Problem.type enum:\n%v\nwant (api.ProblemTypes):\n%v", enum, names)
	}
	if len(doc.Types) != len(types) {
		t.Fatalf("openapi.yaml x-problem-types has %d entries, api %d", len(doc.Types), len(types))
	}
	for i, d := range doc.Types {
		pt := types[i]
		if d.Type != string(pt.Type) || d.Status != pt.Status || d.Title != pt.Title || d.When == "" {
			t.Errorf("x-problem-types[%d] = %+v, want %s %d %q and when", i, d, pt.Type, pt.Status, pt.Title)
		}
	}
}

// TestRoutingProblems: every listener answers an unknown path with
// not-found and a wrong method with method-not-allowed and Allow; a /v1
// request without TLS is client-certificate-required.
func TestRoutingProblems(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	opts := gateway.Options{Registry: reg, Gatherer: reg}
	handlers := map[string]http.Handler{
		"tsa": gateway.NewTSAHandler(nil, 1024, opts),
		"api": gateway.NewAPIHandler(nil, 1024, opts),
		"ops": gateway.NewOpsHandler(opts),
	}
	for name, h := range handlers {
		for _, tc := range []struct {
			method, path string
			want         api.ProblemType
			allow        string
		}{
			{"GET", "/nosuch", api.TypeNotFound, ""},
			{"GET", "/healthz/more", api.TypeNotFound, ""},
			{"POST", "/healthz", api.TypeMethodNotAllowed, "GET, HEAD"},
			{"DELETE", "/readyz", api.TypeMethodNotAllowed, "GET, HEAD"},
		} {
			t.Run(name+" "+tc.method+" "+tc.path, func(t *testing.T) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
				wantTypedProblem(t, rec.Code, rec.Header(), rec.Body.Bytes(), tc.want)
				if got := rec.Header().Get("Allow"); got != tc.allow {
					t.Errorf("Allow %q, want %q", got, tc.allow)
				}
			})
		}
	}
	rec := httptest.NewRecorder()
	handlers["ops"].ServeHTTP(rec, httptest.NewRequest("POST", "/metrics", nil))
	wantTypedProblem(t, rec.Code, rec.Header(), rec.Body.Bytes(), api.TypeMethodNotAllowed)
	for _, path := range []string{"/v1/whoami", "/v1/nosuch", "/v1/partners"} {
		rec := httptest.NewRecorder()
		handlers["api"].ServeHTTP(rec, httptest.NewRequest("GET", path, nil)) // no TLS
		wantTypedProblem(t, rec.Code, rec.Header(), rec.Body.Bytes(), api.TypeClientCertificateRequired)
	}
	// The time-stamp routes answer a wrong method in RFC 3161's terms.
	for _, path := range []string{"/tsa"} {
		rec := httptest.NewRecorder()
		handlers["tsa"].ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if st, fi := status(t, rec.Body.Bytes()); rec.Code != http.StatusMethodNotAllowed || st != 2 || fi.At(2) != 1 {
			t.Errorf("GET %s: HTTP %d, PKIStatus %d failInfo %x; want 405 badRequest", path, rec.Code, st, fi.Bytes)
		}
	}
}

// blockingResponder holds every request until release is closed.
type blockingResponder struct {
	entered chan struct{}
	release chan struct{}
	inner   gateway.TSAResponder
}

func (b *blockingResponder) RespondWith(ctx context.Context, req []byte, opts tsa.RespondOptions) ([]byte, string, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.inner.RespondWith(ctx, req, opts)
}

// TestOverload: a listener serving its max_in_flight answers one more
// request at once with 503 and Retry-After — a TimeStampResp
// systemFailure on the time-stamp routes, an overloaded problem on the
// others — and counts it; the probes still answer; once the requests under
// way finish, it serves again.
func TestOverload(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	clientKey := mustKey(t)
	clientCert, err := p.ca.IssueClient(clientKey.Public(), "partner-a", "Partner A", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const max = 3
	for _, listener := range []string{"tsa", "api"} {
		t.Run(listener, func(t *testing.T) {
			b := &blockingResponder{entered: make(chan struct{}, 16), release: make(chan struct{}), inner: newAuthority(t, p, tsa.Options{})}
			var release sync.Once
			t.Cleanup(func() { release.Do(func() { close(b.release) }) })
			reg := prometheus.NewRegistry()
			opts := gateway.Options{Registry: reg, MaxInFlight: max}
			h, path := gateway.NewTSAHandler(b, 1024, opts), "/tsa"
			if listener == "api" {
				h, path = gateway.NewAPIHandler(b, 1024, opts), "/v1/timestamps"
			}
			serve := func(method, path string, body []byte) *httptest.ResponseRecorder {
				req := httptest.NewRequest(method, path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/timestamp-query")
				// As the TLS layer leaves a verified client.
				req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{clientCert}, VerifiedChains: [][]*x509.Certificate{{clientCert, p.ca.Cert}}}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			var wg sync.WaitGroup
			for range max {
				wg.Go(func() {
					if rec := serve("POST", path, request(t, "x")); rec.Code != http.StatusOK {
						t.Errorf("a request within the bound: HTTP %d", rec.Code)
					}
				})
			}
			for range max {
				select {
				case <-b.entered:
				case <-time.After(10 * time.Second):
					t.Fatal("the requests under way did not reach the responder")
				}
			}

			// Served at once, never queued: a request that waited for a
			// slot would hang here.
			beyond := make(chan *httptest.ResponseRecorder, 1)
			go func() { beyond <- serve("POST", path, request(t, "x")) }()
			var rec *httptest.ResponseRecorder
			select {
			case rec = <-beyond:
			case <-time.After(10 * time.Second):
				t.Fatal("the request beyond the bound was queued, not refused")
			}
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Content-Type") != "application/timestamp-reply" {
				t.Fatalf("request beyond the bound: HTTP %d, Retry-After %q, %q", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Content-Type"))
			}
			if st, fi := status(t, rec.Body.Bytes()); st != 2 || fi.At(25) != 1 {
				t.Errorf("PKIStatus %d failInfo %x, want rejection/systemFailure", st, fi.Bytes)
			}
			other := "/checkpoint"
			if listener == "api" {
				other = "/v1/whoami"
			}
			rec = serve("GET", other, nil)
			wantTypedProblem(t, rec.Code, rec.Header(), rec.Body.Bytes(), api.TypeOverloaded)
			for _, probe := range []string{"/healthz", "/readyz"} {
				if rec := serve("GET", probe, nil); rec.Code != http.StatusOK {
					t.Errorf("%s while overloaded: HTTP %d", probe, rec.Code)
				}
			}
			if n := counterSum(t, reg, "pec_http_overloaded_total"); n != 2 {
				t.Errorf("pec_http_overloaded_total %v, want 2", n)
			}

			release.Do(func() { close(b.release) })
			wg.Wait()
			if rec := serve("POST", path, request(t, "y")); rec.Code != http.StatusOK {
				t.Errorf("after the load: HTTP %d", rec.Code)
			}
		})
	}
}
