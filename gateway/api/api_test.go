package api

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ base, want string }{
		{"https://127.0.0.1:8443", "https://127.0.0.1:8443/v1/whoami"},
		{"https://127.0.0.1:8443/", "https://127.0.0.1:8443/v1/whoami"},
		{"https://127.0.0.1:8443/v1", "https://127.0.0.1:8443/v1/whoami"},
		{"http://node.example:8318/", "http://node.example:8318/v1/whoami"},
	} {
		c, err := NewClient(tc.base, nil)
		if err != nil || c.URL("/v1/whoami") != tc.want {
			t.Errorf("NewClient(%q): %v, %v", tc.base, c, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8443", "ftp://x", "https://", "https://x/?a=1", "https://x/#f", "%zz"} {
		if _, err := NewClient(bad, nil); err == nil {
			t.Errorf("NewClient(%q) accepted", bad)
		}
	}
}

// TestAnswerError: the text scripts read ("403 Forbidden: the detail"),
// the exit status a CLI derives from it, Retry-After.
func TestAnswerError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		status  int
		header  http.Header
		body    string
		text    string
		typ     ProblemType
		mistake bool
		retry   time.Duration
	}{
		{"problem", 403, nil, `{"type":"urn:pec:problem:not-allowed","title":"The policy does not allow this","status":403,"detail":"partner administration needs the admin role"}`,
			"403 Forbidden: partner administration needs the admin role", TypeNotAllowed, false, 0},
		{"fields", 400, nil, `{"type":"urn:pec:problem:invalid-request","title":"A field of the request is invalid","status":400,"detail":"x","errors":[{"pointer":"/digest","detail":"not hexadecimal"}]}`,
			"400 Bad Request: x; /digest: not hexadecimal", TypeInvalidRequest, true, 0},
		{"no detail", 404, nil, `{"type":"urn:pec:problem:not-found","title":"No such resource","status":404}`, "404 Not Found: No such resource", TypeNotFound, true, 0},
		{"retry", 503, http.Header{"Retry-After": {"5"}}, `{"type":"urn:pec:problem:timestamp-unavailable","title":"t","status":503,"detail":"d"}`, "503 Service Unavailable: d", TypeTimestampUnavailable, false, 5 * time.Second},
		{"not a problem", 502, nil, "  bad gateway from a proxy\n", "502 Bad Gateway: bad gateway from a proxy", "", false, 0},
		{"empty", 401, nil, "", "401 Unauthorized", "", false, 0},
		{"JSON but no type", 409, nil, `{"detail":"x"}`, `409 Conflict: {"detail":"x"}`, "", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			e := answerError(&http.Response{StatusCode: tc.status, Header: h}, []byte(tc.body))
			if e.Error() != tc.text || e.Problem.Type != tc.typ || e.ClientMistake() != tc.mistake || e.RetryAfter != tc.retry {
				t.Errorf("%q type %q mistake %v retry %v; want %q %q %v %v", e.Error(), e.Problem.Type, e.ClientMistake(), e.RetryAfter, tc.text, tc.typ, tc.mistake, tc.retry)
			}
		})
	}
}

// FuzzAnswerError: whatever a node (or something in its place) answers,
// the client makes an *Error of it without panicking, its text starting
// with the status and bounded.
func FuzzAnswerError(f *testing.F) {
	f.Add(403, "", `{"type":"urn:pec:problem:not-allowed","title":"t","status":403,"detail":"d"}`)
	f.Add(400, "", `{"type":"urn:pec:problem:invalid-request","errors":[{"pointer":"/a","detail":"b"},{"detail":"c"}]}`)
	f.Add(503, "1", "not json")
	f.Add(500, "-3", `{"type":1}`)
	f.Fuzz(func(t *testing.T, status int, retry, body string) {
		if status < 400 || status > 599 {
			return
		}
		e := answerError(&http.Response{StatusCode: status, Header: http.Header{"Retry-After": {retry}}}, []byte(body))
		text := e.Error()
		if !strings.HasPrefix(text, strconv.Itoa(status)+" ") {
			t.Fatalf("text %q does not begin with the status %d", text, status)
		}
		if e.RetryAfter < 0 {
			t.Fatalf("negative Retry-After %v", e.RetryAfter)
		}
		if e.Problem.Type == "" && len(e.text) > 520 {
			t.Fatalf("unbounded text: %d bytes", len(e.text))
		}
	})
}
