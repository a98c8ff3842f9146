package middleoffice

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzWebhookAnswer: a webhook's answer (status, Content-Type,
// Retry-After, body) is a *PushAnswer for a 2xx and a *PushError for
// anything else, never a panic; the reason is one line of printable text
// of bounded length; a delay asked for is never negative; an
// acknowledgment is taken only from a 2xx of a CMS type.
func FuzzWebhookAnswer(f *testing.F) {
	f.Add(200, "", "", []byte(nil))
	f.Add(200, "application/pkcs7-mime; smime-type=signed-data", "", []byte{0x30, 0x80, 0x06, 0x09})
	f.Add(202, "Application/CMS", "", []byte("x"))
	f.Add(503, "text/plain", "120", []byte("maintenance\r\n"))
	f.Add(429, "", "Wed, 21 Oct 2015 07:28:00 GMT", []byte("slow down"))
	f.Add(302, "", "-1", []byte("\x00\xff\xfe"))
	f.Add(-1, "multipart/related; boundary=", "99999999999999999999", []byte(strings.Repeat("é", 300)))
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, contentType, retry string, body []byte) {
		if len(body) > maxAcknowledgment+1 {
			body = body[:maxAcknowledgment+1]
		}
		h := http.Header{}
		h.Set("Content-Type", contentType)
		h.Set("Retry-After", retry)
		ans, err := parseAnswer(status, h, body, now)
		if status >= 200 && status <= 299 {
			if err != nil || ans == nil || ans.Status != status {
				t.Fatalf("a %d: %+v, %v", status, ans, err)
			}
			if len(ans.Acknowledgment) > 0 && (len(ans.Acknowledgment) > maxAcknowledgment || !strings.Contains(strings.ToLower(contentType), "application/")) {
				t.Fatalf("an acknowledgment taken from %q, %d bytes", contentType, len(ans.Acknowledgment))
			}
			return
		}
		pe, ok := errors.AsType[*PushError](err)
		if ans != nil || !ok || pe.Status != status {
			t.Fatalf("a %d: %+v, %v; want a *PushError", status, ans, err)
		}
		if pe.RetryAfter < 0 || !utf8.ValidString(pe.Reason) || strings.ContainsAny(pe.Reason, "\r\n\x00") || len(pe.Reason) > 64+4*maxAnswerReason {
			t.Fatalf("PushError %+v", pe)
		}
	})
}

// TestRetryAfter: Retry-After in seconds or as an HTTP date (RFC 9110
// section 10.2.3); anything else asks for nothing.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"120":                           2 * time.Minute,
		" 5 ":                           5 * time.Second,
		"0":                             0,
		"Tue, 24 Nov 2026 09:10:00 GMT": 10 * time.Minute,
		"Tue, 24 Nov 2026 08:00:00 GMT": 0, // past
		"-5":                            0,
		"soon":                          0,
		"":                              0,
		"99999999999":                   0, // beyond 32 bits: not believed
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}
