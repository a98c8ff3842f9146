package gateway_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/internal/cms"
	"pec/middleoffice"
)

// TestSubmissionRefusals: every way a submission's body can be wrong is
// refused with its problem type and status, and — past the media type,
// which is not read — recorded as submission.rejected with its reason,
// naming the sender, with nothing of the exchange kept.
func TestSubmissionRefusals(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{cfg: middleoffice.ExchangeConfig{MaxDocumentSize: 1 << 20}})
	one, two := []byte("%PDF-1.7 first document"), []byte("%PDF-1.7 the second, a little longer")
	d1, d2 := newDoc("one.pdf", one), newDoc("two.pdf", two)
	valid := mustJSON(t, manifestTo("b", d1))
	sha := d1
	sha.SHA256 = "not hex"
	keyed := manifestTo("b", d1)
	keyed.IdempotencyKey = "key-in-manifest"
	big := newDoc("big.pdf", nil)
	big.Size = 2 << 20
	wrongDigest := d1
	wrongDigest.SHA256 = strings.Repeat("0", 64)
	typed := manifestTo("b", d1)
	typed.Procedure = "other"

	form := func(parts ...bodyPart) func() (string, []byte) {
		return func() (string, []byte) { return multipartBody(t, api.MediaMultipartForm, parts...) }
	}
	sub := func(m any, docs ...[]byte) func() (string, []byte) {
		return func() (string, []byte) { return submission(t, m, docs...) }
	}
	raw := func(ct, body string) func() (string, []byte) {
		return func() (string, []byte) { return ct, []byte(body) }
	}
	truncated := func() (string, []byte) {
		ct, body := submission(t, manifestTo("b", d1), one)
		return ct, body[:bytes.LastIndex(body, one)+len(one)/2] // in the middle of the document, no closing boundary
	}

	for _, tc := range []struct {
		name   string
		from   string
		body   func() (string, []byte)
		header http.Header
		want   api.ProblemType
		reason middleoffice.Reason // "": not recorded
		field  string              // an errors[].pointer the problem names
	}{
		{name: "JSON, not multipart", body: raw(api.MediaJSON, string(valid)), want: api.TypeUnsupportedMediaType},
		{name: "no content type", body: raw("", "x"), want: api.TypeUnsupportedMediaType},
		{name: "multipart without a boundary", body: raw(api.MediaMultipartForm, "x"), want: api.TypeUnsupportedMediaType},
		{name: "another multipart", body: raw("multipart/related; boundary=B", "--B--\r\n"), want: api.TypeUnsupportedMediaType},
		{name: "no part at all", body: raw(api.MediaMultipartForm+"; boundary=B", "--B--\r\n"), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "empty body", body: raw(api.MediaMultipartForm+"; boundary=B", ""), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "not multipart inside", body: raw(api.MediaMultipartForm+"; boundary=B", "just some text"), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "first part is a document", body: form(formPart(api.DocumentPart, "one.pdf", "application/pdf", one), formPart(api.ManifestPart, "", api.MediaJSON, valid)), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "manifest part cut", body: raw(api.MediaMultipartForm+"; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{\"recipient\":"), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "manifest not JSON", body: sub([]byte("{\"recipient\": \"b\",")), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "manifest with an unknown field", body: sub([]byte(`{"recipient":"b","procedure":"dossier","documents":[],"extra":1}`)), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "manifest then data", body: sub(append(bytes.Clone(valid), []byte(" {}")...), one), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "manifest field refused", body: sub(manifestTo("b", sha), one), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest, field: "/documents/0/sha256"},
		{name: "manifest larger than its bound", body: sub(append([]byte(`{"subject":"`), bytes.Repeat([]byte("x"), middleoffice.MaxManifestSize)...)), want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest},
		{name: "Idempotency-Key header not the manifest's", body: sub(keyed, one), header: http.Header{api.IdempotencyHeader: {"another-key"}}, want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest, field: "/idempotency_key"},
		{name: "Idempotency-Key header not a key", body: sub(manifestTo("b", d1), one), header: http.Header{api.IdempotencyHeader: {"with space"}}, want: api.TypeInvalidManifest, reason: middleoffice.ReasonInvalidManifest, field: "/idempotency_key"},
		{name: "no document part", body: sub(manifestTo("b", d1)), want: api.TypeIncompleteSubmission, reason: middleoffice.ReasonIncomplete},
		{name: "fewer document parts than declared", body: sub(manifestTo("b", d1, d2), one), want: api.TypeIncompleteSubmission, reason: middleoffice.ReasonIncomplete},
		{name: "more parts than declared", body: sub(manifestTo("b", d1), one, two), want: api.TypeIncompleteSubmission, reason: middleoffice.ReasonIncomplete},
		{name: "a part that is not a document", body: form(formPart(api.ManifestPart, "", api.MediaJSON, valid), formPart("attachment", "one.pdf", "", one)), want: api.TypeIncompleteSubmission, reason: middleoffice.ReasonIncomplete},
		{name: "body ends in a document", body: truncated, want: api.TypeIncompleteSubmission, reason: middleoffice.ReasonIncomplete},
		{name: "document longer than declared", body: sub(manifestTo("b", d1), append(bytes.Clone(one), '!')), want: api.TypeSizeMismatch, reason: middleoffice.ReasonSizeMismatch},
		{name: "document shorter than declared", body: sub(manifestTo("b", d1), one[:len(one)-1]), want: api.TypeSizeMismatch, reason: middleoffice.ReasonSizeMismatch},
		{name: "first of two documents longer", body: sub(manifestTo("b", d1, d2), append(bytes.Clone(one), '!'), two), want: api.TypeSizeMismatch, reason: middleoffice.ReasonSizeMismatch},
		{name: "last of two documents shorter", body: sub(manifestTo("b", d1, d2), one, two[:3]), want: api.TypeSizeMismatch, reason: middleoffice.ReasonSizeMismatch},
		{name: "documents swapped", body: sub(manifestTo("b", d1, d2), two, one), want: api.TypeSizeMismatch, reason: middleoffice.ReasonSizeMismatch},
		{name: "digest mismatch", body: sub(manifestTo("b", wrongDigest), one), want: api.TypeDigestMismatch, reason: middleoffice.ReasonDigestMismatch},
		{name: "same size, other bytes", body: sub(manifestTo("b", d1), bytes.ToUpper(one)), want: api.TypeDigestMismatch, reason: middleoffice.ReasonDigestMismatch},
		{name: "over the node's document size", body: sub(manifestTo("b", big)), want: api.TypePayloadTooLarge, reason: middleoffice.ReasonTooLarge},
		{name: "no routing rule", from: "c", body: sub(manifestTo("b", d1), one), want: api.TypeNotAllowed, reason: middleoffice.ReasonForbidden},
		{name: "not this procedure", body: sub(typed, one), want: api.TypeNotAllowed, reason: middleoffice.ReasonForbidden},
		{name: "unknown recipient", body: sub(manifestTo("nobody", d1), one), want: api.TypeNotAllowed, reason: middleoffice.ReasonForbidden},
		{name: "disabled recipient", body: sub(manifestTo("e", d1), one), want: api.TypeNotAllowed, reason: middleoffice.ReasonForbidden},
		{name: "a certificate no partner claims", from: "stranger", body: sub(manifestTo("b", d1), one), want: api.TypeNotAllowed, reason: middleoffice.ReasonForbidden},
		{name: "recipient without an encryption certificate", body: sub(manifestTo("d", d1), one), want: api.TypeRecipientUnreachable, reason: middleoffice.ReasonUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := tc.from
			if from == "" {
				from = "a"
			}
			ct, body := tc.body()
			before := len(n.records(t, evidence.SubmissionRejected))
			resp, data := n.post(t, from, ct, body, tc.header)
			p := problem(t, resp, data, tc.want)
			if tc.reason == "" {
				if p.EvidenceID != "" || len(n.records(t, evidence.SubmissionRejected)) != before {
					t.Errorf("%s recorded: %+v", tc.want.Reason(), p)
				}
				return
			}
			rec := n.wantRefusal(t, p, from, tc.reason)
			if attr(rec, "detail") != p.Detail {
				t.Errorf("the record's detail %q, the problem's %q", attr(rec, "detail"), p.Detail)
			}
			if tc.field != "" && !slices.ContainsFunc(p.Errors, func(f api.FieldError) bool { return f.Pointer == tc.field }) {
				t.Errorf("errors %+v do not name %s", p.Errors, tc.field)
			}
		})
	}

	// Nothing of any of them reaches anyone.
	n.deliver()
	for _, id := range []string{"b", "d", "e"} {
		if list, err := n.x.Inbox(t.Context(), n.policy.Directory().Resolve(n.partners[id].cert), "", 0); err != nil || len(list) != 0 {
			t.Errorf("%s's inbox: %d exchanges, %v", id, len(list), err)
		}
	}
	if left := n.payloads(t); len(left) != 0 {
		t.Errorf("payloads of refused submissions kept: %v", left)
	}
}

// TestSubmissionShapes: a submission as multipart/form-data (the parts
// named) and as multipart/mixed (the parts in order, names ignored), with
// several documents; the receipt is the CMS of the submission.accepted
// record, and the exchange is its sender's alone until delivered.
func TestSubmissionShapes(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	one, two := []byte("%PDF-1.7 one"), bytes.Repeat([]byte("deux "), 5000)
	m := manifestTo("b", newDoc("one.pdf", one), newDoc("deux.txt", two))
	m.Documents[1].MediaType = "text/plain; charset=utf-8"

	s1 := n.accepted(t, "a", m, one, two)
	ct, body := multipartBody(t, api.MediaMultipartMixed,
		mixedPart(api.MediaJSON, mustJSON(t, m)), mixedPart("application/pdf", one), mixedPart("text/plain", two))
	resp, data := n.post(t, "a", ct, body, nil)
	s2 := n.wantAccepted(t, resp, data)
	if s1.Exchange == s2.Exchange {
		t.Fatal("two submissions without a key: one exchange")
	}
	// The typed client of the CLI.
	s3, err := n.api("a").Submit(t.Context(), m, "", []api.Upload{{Name: "one.pdf", Content: bytes.NewReader(one)}, {Name: "deux.txt", Content: bytes.NewReader(two)}})
	if err != nil {
		t.Fatal(err)
	}

	for _, s := range []api.Submission{s1, s2, *s3} {
		sd, err := cms.ParseSignedData(s.Receipt)
		if err != nil || !sd.Attached {
			t.Fatalf("receipt: %v", err)
		}
		rec, err := evidence.UnmarshalRecord(sd.Content)
		if err != nil || rec.ID != s.EvidenceID || rec.Type != evidence.SubmissionAccepted || rec.Subject != s.Exchange || attr(rec, "documents") != "2" {
			t.Errorf("the receipt's record: %+v, %v", rec, err)
		}
		// The sender reads it, its receipt too; the recipient not yet.
		resp, data := n.do(t, "a", "GET", "/v1/exchanges/"+s.Exchange, nil, nil)
		var ex middleoffice.Exchange
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &ex) != nil || ex.State != middleoffice.StateAccepted || len(ex.Events) != 1 {
			t.Errorf("status: %s %s", resp.Status, data)
		}
		resp, data = n.do(t, "a", "GET", "/v1/exchanges/"+s.Exchange+"/receipt", nil, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(data, s.Receipt) || resp.Header.Get("Content-Type") != api.MediaCMSSigned {
			t.Errorf("receipt: %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		// To its recipient it is on its way: 503 not-sealed, try again
		// (the CLI's fetch and ack wait for it).
		for _, path := range []string{"", "/receipt", "/seal", "/delivery", "/documents/0"} {
			resp, data := n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+path, nil, nil)
			problem(t, resp, data, api.TypeNotSealed)
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("%s: no Retry-After", path)
			}
		}
		// To anyone else it does not exist.
		resp, data = n.do(t, "c", "GET", "/v1/exchanges/"+s.Exchange, nil, nil)
		problem(t, resp, data, api.TypeUnknownExchange)
	}
}

// TestIdempotencyKey: a retried submission with the same key (header, or
// the manifest's) answers 200 with the first exchange and receipt without
// reading its documents — sent wrong here, they would be refused — and
// records nothing; the key with another manifest is 409, recorded; each
// sender has its own keys.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	doc := []byte("%PDF-1.7 a dossier sent twice")
	m := manifestTo("b", newDoc("dossier.pdf", doc))
	key := http.Header{api.IdempotencyHeader: {"a-2026-0042"}}

	ct, body := submission(t, m, doc)
	resp, data := n.post(t, "a", ct, body, key)
	first := n.wantAccepted(t, resp, data)
	accepted := len(n.records(t, evidence.SubmissionAccepted))

	replay := func(name string, hdr http.Header, mm middleoffice.Manifest, docs ...[]byte) {
		t.Run(name, func(t *testing.T) {
			ct, body := submission(t, mm, docs...)
			resp, data := n.post(t, "a", ct, body, hdr)
			var s api.Submission
			if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &s) != nil {
				t.Fatalf("replay: %s %s", resp.Status, data)
			}
			if !s.Replayed || s.Exchange != first.Exchange || s.EvidenceID != first.EvidenceID || !bytes.Equal(s.Receipt, first.Receipt) || resp.Header.Get(api.EvidenceHeader) != first.EvidenceID {
				t.Errorf("replay %+v, want the first submission %+v", s, first)
			}
		})
	}
	replay("the same body", key, m, doc)
	replay("documents not read: wrong bytes", key, m, bytes.ToUpper(doc))
	replay("documents not read: none", key, m)
	inManifest := m
	inManifest.IdempotencyKey = "a-2026-0042"
	replay("the key in the manifest", nil, inManifest, doc)
	replay("in the manifest and the header", key, inManifest)
	if got := len(n.records(t, evidence.SubmissionAccepted)); got != accepted {
		t.Errorf("replays recorded %d submission.accepted", got-accepted)
	}

	t.Run("another manifest", func(t *testing.T) {
		other := m
		other.Reference = "REF-2"
		ct, body := submission(t, other, doc)
		resp, data := n.post(t, "a", ct, body, key)
		p := problem(t, resp, data, api.TypeIdempotencyConflict)
		n.wantRefusal(t, p, "a", middleoffice.ReasonIdempotencyConflict)
		if !strings.Contains(p.Detail, first.Exchange) {
			t.Errorf("detail %q does not name the exchange of the key", p.Detail)
		}
	})
	t.Run("another sender, the same key", func(t *testing.T) {
		mb := manifestTo("a", newDoc("dossier.pdf", doc))
		ct, body := submission(t, mb, doc)
		resp, data := n.post(t, "b", ct, body, key)
		if s := n.wantAccepted(t, resp, data); s.Exchange == first.Exchange {
			t.Error("b's key names a's exchange")
		}
	})
	// Delivered once.
	n.deliver()
	list, err := n.api("b").Inbox(t.Context(), "", 0)
	if err != nil || len(list.Exchanges) != 1 || list.Exchanges[0].ID != first.Exchange {
		t.Fatalf("b's inbox: %+v, %v", list, err)
	}
}

// TestSubmissionClientCut: a client whose body ends inside a document is
// refused as incomplete (recorded); one whose connection is cut there
// gets no answer, and nothing of its submission is kept or delivered.
func TestSubmissionClientCut(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	doc := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	m := manifestTo("b", newDoc("cut.pdf", doc))

	send := func(cut func(*io.PipeWriter)) (*http.Response, []byte, error) {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			w, err := mw.CreatePart(formPart(api.ManifestPart, "", api.MediaJSON, nil).header)
			if err == nil {
				_, err = w.Write(mustJSON(t, m))
			}
			if err == nil {
				w, err = mw.CreateFormFile(api.DocumentPart, "cut.pdf")
			}
			if err == nil {
				_, err = w.Write(doc[:len(doc)/2])
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			cut(pw)
		}()
		return n.try("a", "POST", "/v1/exchanges", contentType(mw.FormDataContentType()), pr)
	}

	t.Run("body ends", func(t *testing.T) {
		resp, data, err := send(func(pw *io.PipeWriter) { pw.Close() })
		if err != nil {
			t.Fatal(err)
		}
		p := problem(t, resp, data, api.TypeIncompleteSubmission)
		n.wantRefusal(t, p, "a", middleoffice.ReasonIncomplete)
	})
	t.Run("connection cut", func(t *testing.T) {
		rejected := len(n.records(t, evidence.SubmissionRejected))
		resp, data, err := send(func(pw *io.PipeWriter) { pw.CloseWithError(errors.New("the sender's process died")) })
		if err == nil {
			t.Fatalf("an answer to a cut connection: %s %s", resp.Status, data)
		}
		// The server sees the cut as its client gone: the payload written
		// so far is removed once the handler returns.
		deadline := time.Now().Add(10 * time.Second)
		for len(n.payloads(t)) != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if left := n.payloads(t); len(left) != 0 {
			t.Errorf("payloads of the cut submission kept: %v", left)
		}
		if got := len(n.records(t, evidence.SubmissionRejected)); got != rejected {
			t.Errorf("%d refusals recorded for a client that went away", got-rejected)
		}
	})
	n.deliver()
	if list, err := n.api("b").Inbox(t.Context(), "", 0); err != nil || len(list.Exchanges) != 0 {
		t.Errorf("b's inbox: %+v, %v", list, err)
	}
	if got := len(n.records(t, evidence.SubmissionAccepted)); got != 0 {
		t.Errorf("%d submissions accepted", got)
	}
}

// TestExchangeReads: the inbox and its pages, the status, receipt, seal,
// delivery and documents of an exchange, each to whom it is (anyone else
// gets the answer of an exchange that does not exist), the seal before it
// exists, documents by index and by byte range.
func TestExchangeReads(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	doc0 := bytes.Repeat([]byte("%PDF-1.7 page "), 3000)
	doc1 := []byte(`{"bulletin": 3}`)
	m := manifestTo("b", newDoc("extrait.pdf", doc0), newDoc("extrait.json", doc1))
	s := n.accepted(t, "a", m, doc0, doc1)

	// Before delivery: the seal is not there yet, for the sender; the
	// recipient sees nothing.
	resp, data := n.do(t, "a", "GET", "/v1/exchanges/"+s.Exchange+"/seal", nil, nil)
	problem(t, resp, data, api.TypeNotSealed)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("not-sealed without Retry-After")
	}
	if list, err := n.api("b").Inbox(t.Context(), "", 0); err != nil || len(list.Exchanges) != 0 {
		t.Fatalf("b's inbox before delivery: %+v, %v", list, err)
	}

	// Two more, to page through.
	s2 := n.accepted(t, "a", m, doc0, doc1)
	s3 := n.accepted(t, "a", m, doc0, doc1)
	n.deliver()

	t.Run("inbox", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  []string // exchange ids; nil: refused
			next  bool
		}{
			{"", []string{s.Exchange, s2.Exchange, s3.Exchange}, false},
			{"?limit=1", []string{s.Exchange}, true},
			{"?limit=2", []string{s.Exchange, s2.Exchange}, true},
			{"?limit=3", []string{s.Exchange, s2.Exchange, s3.Exchange}, true},
			{"?limit=1000", []string{s.Exchange, s2.Exchange, s3.Exchange}, false},
			{"?after=" + s.Exchange, []string{s2.Exchange, s3.Exchange}, false},
			{"?after=" + s2.Exchange + "&limit=1", []string{s3.Exchange}, true},
			{"?after=" + s3.Exchange, []string{}, false},
			{"?after=zzz", []string{}, false},
			{"?limit=0", nil, false},
			{"?limit=-1", nil, false},
			{"?limit=1001", nil, false},
			{"?limit=ten", nil, false},
			{"?limit=", []string{s.Exchange, s2.Exchange, s3.Exchange}, false},
			{"?limit=1.5", nil, false},
			{"?limit=99999999999999999999", nil, false},
		} {
			t.Run(tc.query, func(t *testing.T) {
				resp, data := n.do(t, "b", "GET", "/v1/inbox"+tc.query, nil, nil)
				if tc.want == nil {
					p := problem(t, resp, data, api.TypeInvalidRequest)
					if len(p.Errors) != 1 || p.Errors[0].Pointer != "/limit" {
						t.Errorf("errors %+v, want /limit", p.Errors)
					}
					return
				}
				var in api.Inbox
				if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &in) != nil {
					t.Fatalf("%s %s", resp.Status, data)
				}
				var ids []string
				for _, ex := range in.Exchanges {
					ids = append(ids, ex.ID)
					if ex.Manifest.IdempotencyKey != "" || ex.Receipt != nil || ex.Sender != "a" || ex.State != middleoffice.StateDelivered {
						t.Errorf("the recipient's view of %s: %+v", ex.ID, ex)
					}
				}
				if !slices.Equal(ids, tc.want) && !(len(ids) == 0 && len(tc.want) == 0) {
					t.Errorf("inbox %v, want %v", ids, tc.want)
				}
				if (in.Next != "") != tc.next || (tc.next && in.Next != ids[len(ids)-1]) {
					t.Errorf("next %q", in.Next)
				}
			})
		}
		// Nobody else's inbox holds them.
		for _, id := range []string{"a", "c", "stranger"} {
			if list, err := n.api(id).Inbox(t.Context(), "", 0); err != nil || len(list.Exchanges) != 0 {
				t.Errorf("%s's inbox: %+v, %v", id, list, err)
			}
		}
	})

	t.Run("another's exchange is none", func(t *testing.T) {
		// The answer for an exchange of another partner is the answer
		// for one that does not exist: the same type, status and detail
		// (but for the id).
		unknown := strings.Repeat("0", 32)
		for _, path := range []string{"", "/receipt", "/seal", "/delivery", "/documents/0"} {
			for _, who := range []string{"c", "stranger", "d"} {
				resp, data := n.do(t, who, "GET", "/v1/exchanges/"+s.Exchange+path, nil, nil)
				theirs := problem(t, resp, data, api.TypeUnknownExchange)
				resp, data = n.do(t, who, "GET", "/v1/exchanges/"+unknown+path, nil, nil)
				none := problem(t, resp, data, api.TypeUnknownExchange)
				if strings.ReplaceAll(theirs.Detail, s.Exchange, unknown) != none.Detail {
					t.Errorf("%s %s: %q, for none %q", who, path, theirs.Detail, none.Detail)
				}
			}
		}
		resp, data := n.do(t, "c", "POST", "/v1/exchanges/"+s.Exchange+"/ack", contentType(api.MediaJSON), strings.NewReader(`{"reject":"not mine"}`))
		problem(t, resp, data, api.TypeUnknownExchange)
		for _, id := range []string{"..", "x", strings.Repeat("f", 200), "%00"} {
			resp, data := n.do(t, "a", "GET", "/v1/exchanges/"+id, nil, nil)
			wantTypedProblem(t, resp.StatusCode, resp.Header, data, "")
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("exchange %q: %s", id, resp.Status)
			}
		}
		// The receipt is the sender's: the recipient does not get it.
		resp, data = n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+"/receipt", nil, nil)
		problem(t, resp, data, api.TypeUnknownExchange)
	})

	var sealed []byte
	t.Run("seal", func(t *testing.T) {
		for _, who := range []string{"a", "b"} {
			resp, data := n.do(t, who, "GET", "/v1/exchanges/"+s.Exchange+"/seal", nil, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaCMSSigned {
				t.Fatalf("%s: %s %s", who, resp.Status, data)
			}
			sd, err := cms.ParseSignedData(data)
			if err != nil || !sd.Attached {
				t.Fatalf("seal: %v", err)
			}
			var sm middleoffice.SealedManifest
			if err := json.Unmarshal(sd.Content, &sm); err != nil || sm.Exchange != s.Exchange || sm.Sender != "a" || sm.SubmissionEvidence != s.EvidenceID {
				t.Fatalf("sealed manifest %+v, %v", sm, err)
			}
			sealed = data
		}
	})

	events := func() int {
		ex, err := n.api("a").Exchange(t.Context(), s.Exchange)
		if err != nil {
			t.Fatal(err)
		}
		return len(ex.Events)
	}
	var envelopes [][]byte
	t.Run("delivery", func(t *testing.T) {
		before := events()
		resp, err := n.partners["b"].client.Get(n.url + "/v1/exchanges/" + s.Exchange + "/delivery")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusOK || err != nil || mt != api.MediaMultipartMixed {
			t.Fatalf("%s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		retrieved := resp.Header.Get(api.EvidenceHeader)
		mr := multipart.NewReader(resp.Body, params["boundary"])
		var names []string
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			if p.Header.Get("Content-Length") != fmt.Sprint(len(data)) {
				t.Errorf("part %s: Content-Length %s, %d bytes", p.FileName(), p.Header.Get("Content-Length"), len(data))
			}
			names = append(names, p.FileName())
			if len(names) == 1 {
				if !bytes.Equal(data, sealed) || p.Header.Get("Content-Type") != api.MediaCMSSigned {
					t.Error("the first part is not the seal")
				}
				continue
			}
			envelopes = append(envelopes, data)
		}
		if !slices.Equal(names, []string{"seal.p7m", "extrait.pdf.p7m", "extrait.json.p7m"}) {
			t.Fatalf("parts %v", names)
		}
		// The documents, decrypted with b's key, are those sent.
		for i, want := range [][]byte{doc0, doc1} {
			var plain bytes.Buffer
			if _, err := cms.DecryptTo(&plain, bytes.NewReader(envelopes[i]), int64(len(envelopes[i])), cms.RecipientKey{Cert: n.partners["b"].encCert, Key: n.partners["b"].encKey}, nil); err != nil || !bytes.Equal(plain.Bytes(), want) {
				t.Errorf("document %d: %v", i, err)
			}
		}
		rec := n.record(t, retrieved)
		if rec.Type != evidence.Retrieved || rec.Subject != s.Exchange || events() != before+1 {
			t.Errorf("delivery.retrieved %+v; %d events, before %d", rec, events(), before)
		}
	})

	t.Run("documents", func(t *testing.T) {
		before := events()
		for _, n2 := range []string{"2", "3", "-1", "x", "01", "+1", "1e0", "99999999999999999999"} {
			resp, data := n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+"/documents/"+n2, nil, nil)
			problem(t, resp, data, api.TypeNotFound)
		}
		// The sender does not fetch, whichever index.
		for _, n2 := range []string{"0", "5"} {
			resp, data := n.do(t, "a", "GET", "/v1/exchanges/"+s.Exchange+"/documents/"+n2, nil, nil)
			problem(t, resp, data, api.TypeUnknownExchange)
		}
		if got := events(); got != before {
			t.Errorf("requests for documents that are not there recorded %d events", got-before)
		}
		for i, env := range envelopes {
			resp, data := n.do(t, "b", "GET", fmt.Sprintf("/v1/exchanges/%s/documents/%d", s.Exchange, i), nil, nil)
			sum := sha256.Sum256(env)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(data, env) || resp.Header.Get("Content-Type") != api.MediaCMSEnveloped ||
				resp.Header.Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` || resp.Header.Get("Accept-Ranges") != "bytes" {
				t.Errorf("document %d: %s %v, %d bytes", i, resp.Status, resp.Header, len(data))
			}
			if rec := n.record(t, resp.Header.Get(api.EvidenceHeader)); rec.Type != evidence.Retrieved {
				t.Errorf("document %d: evidence %s", i, rec.Type)
			}
		}
		env := envelopes[0]
		for _, tc := range []struct {
			rng        string
			start, end int // of env, end exclusive
		}{
			{"bytes=0-99", 0, 100},
			{"bytes=100-", 100, len(env)},
			{"bytes=-50", len(env) - 50, len(env)},
			{fmt.Sprintf("bytes=%d-%d", len(env)/2, len(env)+1000), len(env) / 2, len(env)},
		} {
			resp, data := n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+"/documents/0", http.Header{"Range": {tc.rng}}, nil)
			want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, len(env))
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(data, env[tc.start:tc.end]) || resp.Header.Get("Content-Range") != want {
				t.Errorf("Range %s: %s, Content-Range %q (want %q), %d bytes", tc.rng, resp.Status, resp.Header.Get("Content-Range"), want, len(data))
			}
		}
		// Resuming with If-Range: the ETag of the envelope, or the whole.
		sum := sha256.Sum256(env)
		resp, data := n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+"/documents/0", http.Header{"Range": {"bytes=10-"}, "If-Range": {`"` + hex.EncodeToString(sum[:]) + `"`}}, nil)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(data, env[10:]) {
			t.Errorf("If-Range with the ETag: %s, %d bytes", resp.Status, len(data))
		}
		resp, data = n.do(t, "b", "GET", "/v1/exchanges/"+s.Exchange+"/documents/0", http.Header{"Range": {"bytes=10-"}, "If-Range": {`"another"`}}, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(data, env) {
			t.Errorf("If-Range with another ETag: %s, %d bytes", resp.Status, len(data))
		}
	})
}

// TestAcknowledgment: the recipient answers an exchange with its signed
// acknowledgment, as bare DER (application/pkcs7-mime) or in JSON, or
// refuses it with a reason; a retry of the same answer gets the same
// event; a different second answer is 409; an acknowledgment that is not
// one is 422; the exchange leaves the inbox.
func TestAcknowledgment(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	doc := []byte("%PDF-1.7 to acknowledge")
	m := manifestTo("b", newDoc("ack.pdf", doc))
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = n.accepted(t, "a", m, doc).Exchange
	}
	// Before delivery, there is nothing to acknowledge for b yet.
	resp, data := n.do(t, "b", "POST", "/v1/exchanges/"+ids[0]+"/ack", contentType(api.MediaJSON), strings.NewReader(`{"reject":"early"}`))
	problem(t, resp, data, api.TypeNotSealed)
	n.deliver()

	// b signs the sealed manifest (the content of the seal).
	signedAck := func(id string) []byte {
		seal, err := n.api("b").Seal(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := cms.ParseSignedData(seal)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := n.partners["b"].signer.Sign(t.Context(), sd.Content, false)
		if err != nil {
			t.Fatal(err)
		}
		return sig.DER
	}
	post := func(who, id, ct string, body []byte) (*http.Response, []byte) {
		return n.do(t, who, "POST", "/v1/exchanges/"+id+"/ack", contentType(ct), bytes.NewReader(body))
	}
	// ack posts an answer that must be taken: its event, recorded with
	// its outcome.
	ack := func(id, ct string, body []byte, outcome string) middleoffice.Event {
		t.Helper()
		resp, data := post("b", id, ct, body)
		var ev middleoffice.Event
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &ev) != nil {
			t.Fatalf("ack: %s %s", resp.Status, data)
		}
		if ev.Type != evidence.Acknowledged || ev.By != "b" || resp.Header.Get(api.EvidenceHeader) != ev.EvidenceID {
			t.Errorf("event %+v, %s %q", ev, api.EvidenceHeader, resp.Header.Get(api.EvidenceHeader))
		}
		if rec := n.record(t, ev.EvidenceID); attr(rec, "outcome") != outcome || rec.Subject != id {
			t.Errorf("record outcome %q about %s, want %q about %s", attr(rec, "outcome"), rec.Subject, outcome, id)
		}
		return ev
	}

	t.Run("refused acknowledgments", func(t *testing.T) {
		sealOf0, err := n.api("b").Seal(t.Context(), ids[0])
		if err != nil {
			t.Fatal(err)
		}
		other, err := n.partners["b"].signer.Sign(t.Context(), []byte(`{"not":"the manifest"}`), false)
		if err != nil {
			t.Fatal(err)
		}
		byA, err := n.partners["a"].signer.Sign(t.Context(), mustSealContent(t, sealOf0), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, ct string
			body     []byte
			want     api.ProblemType
		}{
			{"garbage DER", api.MediaCMS, []byte("merci beaucoup"), api.TypeInvalidAcknowledgment},
			{"empty DER", api.MediaCMSSigned, nil, api.TypeInvalidAcknowledgment},
			{"garbage in JSON", api.MediaJSON, mustJSON(t, api.AckRequest{Signed: []byte("merci")}), api.TypeInvalidAcknowledgment},
			{"nothing in JSON", api.MediaJSON, []byte(`{}`), api.TypeInvalidAcknowledgment},
			{"another content, signed by b", api.MediaCMS, other.DER, api.TypeInvalidAcknowledgment},
			{"signed by the sender", api.MediaCMS, byA.DER, api.TypeInvalidAcknowledgment},
			{"the seal itself", api.MediaCMS, sealOf0, api.TypeInvalidAcknowledgment},
			{"a reason with a control character", api.MediaJSON, []byte(`{"reject":"no\u0000"}`), api.TypeInvalidAcknowledgment},
			{"malformed JSON", api.MediaJSON, []byte(`{"reject":`), api.TypeMalformedRequest},
			{"unknown JSON field", api.MediaJSON, []byte(`{"accept":true}`), api.TypeMalformedRequest},
			{"text/plain", "text/plain", []byte("ok"), api.TypeUnsupportedMediaType},
			{"no content type", "", []byte("ok"), api.TypeUnsupportedMediaType},
			{"DER too large", api.MediaCMS, make([]byte, 3<<20), api.TypePayloadTooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, data := post("b", ids[0], tc.ct, tc.body)
				problem(t, resp, data, tc.want)
			})
		}
		// None of them changed the exchange.
		if ex, err := n.api("a").Exchange(t.Context(), ids[0]); err != nil || ex.State != middleoffice.StateDelivered {
			t.Errorf("after refused acknowledgments: %+v, %v", ex, err)
		}
	})

	t.Run("DER", func(t *testing.T) {
		der := signedAck(ids[0])
		ev := ack(ids[0], api.MediaCMSSigned, der, "acknowledged")
		// A retry of the same acknowledgment: the first event.
		if again := ack(ids[0], api.MediaCMS, der, "acknowledged"); again.EvidenceID != ev.EvidenceID {
			t.Errorf("the same acknowledgment again: %s, want the first event %s", again.EvidenceID, ev.EvidenceID)
		}
		// Another signature of the same content is another answer.
		resp, data := post("b", ids[0], api.MediaCMS, signedAck(ids[0]))
		problem(t, resp, data, api.TypeAlreadyAcknowledged)
		resp, data = post("b", ids[0], api.MediaJSON, []byte(`{"reject":"changed my mind"}`))
		problem(t, resp, data, api.TypeAlreadyAcknowledged)
	})
	t.Run("JSON", func(t *testing.T) {
		ack(ids[1], api.MediaJSON, mustJSON(t, api.AckRequest{Signed: signedAck(ids[1])}), "acknowledged")
		resp, data := post("b", ids[1], api.MediaJSON, mustJSON(t, api.AckRequest{Reject: "too late"}))
		problem(t, resp, data, api.TypeAlreadyAcknowledged)
	})
	t.Run("refusal", func(t *testing.T) {
		ev := ack(ids[2], api.MediaJSON, []byte(`{"reject":"pièce manquante"}`), "refused")
		if ev.Detail != "pièce manquante" {
			t.Errorf("detail %q", ev.Detail)
		}
		resp, data := post("b", ids[2], api.MediaCMS, signedAck(ids[2]))
		problem(t, resp, data, api.TypeAlreadyAcknowledged)
		ex, err := n.api("a").Exchange(t.Context(), ids[2])
		if err != nil || ex.State != middleoffice.StateRefused {
			t.Errorf("refused exchange: %+v, %v", ex, err)
		}
	})
	// The sender does not acknowledge its own dossier.
	resp, data = post("a", ids[0], api.MediaJSON, []byte(`{"reject":"mine"}`))
	problem(t, resp, data, api.TypeUnknownExchange)
	if list, err := n.api("b").Inbox(t.Context(), "", 0); err != nil || len(list.Exchanges) != 0 {
		t.Errorf("answered exchanges still in the inbox: %+v, %v", list, err)
	}
}

func mustSealContent(t testing.TB, seal []byte) []byte {
	t.Helper()
	sd, err := cms.ParseSignedData(seal)
	if err != nil {
		t.Fatal(err)
	}
	return sd.Content
}

// TestDisabledPartner: a disabled partner's certificate is refused on
// every exchange route, before anything is read or recorded.
func TestDisabledPartner(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{})
	doc := []byte("x")
	ct, body := submission(t, manifestTo("a", newDoc("x.pdf", doc)), doc)
	before := len(n.records(t, evidence.SubmissionRejected))
	for _, tc := range []struct {
		method, path string
		hdr          http.Header
		body         []byte
	}{
		{"POST", "/v1/exchanges", contentType(ct), body},
		{"GET", "/v1/inbox", nil, nil},
		{"GET", "/v1/exchanges/" + strings.Repeat("0", 32), nil, nil},
		{"GET", "/v1/exchanges/" + strings.Repeat("0", 32) + "/documents/0", nil, nil},
		{"POST", "/v1/exchanges/" + strings.Repeat("0", 32) + "/ack", contentType(api.MediaJSON), []byte(`{"reject":"x"}`)},
	} {
		resp, data := n.do(t, "e", tc.method, tc.path, tc.hdr, bytes.NewReader(tc.body))
		problem(t, resp, data, api.TypePartnerDisabled)
	}
	if got := len(n.records(t, evidence.SubmissionRejected)); got != before {
		t.Errorf("a disabled partner's submission recorded %d refusals", got-before)
	}
}

// patternReader gives n bytes of a repeating pattern, generated as read.
type patternReader struct {
	n, off int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = byte((r.off + int64(i)) * 7 % 251)
	}
	r.off += int64(len(p))
	return len(p), nil
}

func patternDoc(name string, size int64) middleoffice.Document {
	h := sha256.New()
	io.Copy(h, &patternReader{n: size})
	return middleoffice.Document{Name: name, MediaType: "application/octet-stream", SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}
}

// TestSubmissionStreams: a 64 MiB document, generated as it is sent,
// goes through the server (TLS, multipart, hashing, encryption, the
// store) without the server's heap growing by more than a fraction of it:
// the document is never whole in memory. Not parallel: the heap is the
// process's.
func TestSubmissionStreams(t *testing.T) {
	const size = 64 << 20
	n := newExchangeNode(t, nodeOptions{})
	d := patternDoc("big.bin", size)
	m := manifestTo("b", d)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	s, err := n.api("a").Submit(t.Context(), m, "", []api.Upload{{Name: "big.bin", Content: &patternReader{n: size}}})
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("64 MiB submitted in %v (%.0f MiB/s); heap in use %d MiB before, peak %d MiB (+%d MiB)",
		elapsed.Round(time.Millisecond), size/elapsed.Seconds()/(1<<20), base.HeapInuse>>20, peak.Load()>>20, growth>>20)
	if growth > 32<<20 {
		t.Errorf("the heap grew by %d MiB while a 64 MiB document streamed through", growth>>20)
	}
	rec := n.record(t, s.EvidenceID)
	if attr(rec, "documents") != "1" {
		t.Errorf("record %+v", rec)
	}
	for _, dg := range rec.Digests {
		if dg.Name == "document/0" && hex.EncodeToString(dg.Value) != d.SHA256 {
			t.Errorf("the record's document digest %x, want %s", dg.Value, d.SHA256)
		}
	}
}

// slowReader gives its bytes chunk by chunk, one every gap, and can
// stall once, for stall, after stallAfter bytes.
type slowReader struct {
	data       []byte
	chunk      int
	gap        time.Duration
	stallAfter int
	stall      time.Duration
	off        int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if r.stall > 0 && r.off >= r.stallAfter {
		time.Sleep(r.stall)
		r.stall = 0
	} else {
		time.Sleep(r.gap)
	}
	k := copy(p[:min(len(p), r.chunk)], r.data[r.off:])
	r.off += k
	return k, nil
}

// TestSlowUpload: the server's read and write timeouts are short (1s) and
// a transfer may stall for 2s at most; an upload that takes 4s but keeps
// moving is accepted (the deadlines move with it), one that stalls for
// longer than 2s is cut, and nothing of it is kept. Not parallel: it sets
// the gateway's stall bound.
func TestSlowUpload(t *testing.T) {
	t.Cleanup(gateway.SetIdleTransfer(2 * time.Second)) // after the server is closed: it reads the bound
	n := newExchangeNode(t, nodeOptions{server: func(s *http.Server) {
		s.ReadTimeout, s.WriteTimeout, s.ReadHeaderTimeout = time.Second, time.Second, time.Second
	}})
	doc := bytes.Repeat([]byte("slow but steady "), 4096) // 64 KiB
	m := manifestTo("b", newDoc("slow.pdf", doc))
	ct, body := submission(t, m, doc)
	gap := 50 * time.Millisecond
	chunk := len(body)/80 + 1 // 80 chunks: 4s

	t.Run("moving", func(t *testing.T) {
		start := time.Now()
		resp, data := n.do(t, "a", "POST", "/v1/exchanges", contentType(ct), &slowReader{data: body, chunk: chunk, gap: gap})
		took := time.Since(start)
		n.wantAccepted(t, resp, data)
		if took < 3*time.Second {
			t.Fatalf("the upload took %v: not longer than the timeouts", took)
		}
	})
	t.Run("stalled", func(t *testing.T) {
		before := n.payloads(t)
		resp, data, err := n.try("a", "POST", "/v1/exchanges", contentType(ct), &slowReader{data: body, chunk: chunk, gap: 5 * time.Millisecond, stallAfter: len(body) / 2, stall: 3 * time.Second})
		if err == nil {
			t.Fatalf("a stalled upload answered: %s %s", resp.Status, data)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(n.payloads(t)) != len(before) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := n.payloads(t); len(after) != len(before) {
			t.Errorf("payloads %v, before %v", after, before)
		}
	})
}
