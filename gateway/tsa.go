package gateway

import (
	"bytes"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"

	"pec/evidence"
	"pec/gateway/api"
	"pec/tsa"
)

// Media types of RFC 3161 section 3.4.
const (
	timestampQuery = api.MediaTimestampQuery
	timestampReply = api.MediaTimestampReply
)

// tsaEndpoint answers RFC 3161 over HTTP. Every answer is a TimeStampResp,
// including the ones for HTTP-level mistakes (wrong method, wrong content
// type, oversized body), so that any RFC 3161 client can read why it was
// refused; the HTTP status tells the same to clients that look only at it.
type tsaEndpoint struct {
	authority TSAResponder
	maxBody   int64
	log       *slog.Logger
	failures  *failureLog
}

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// tokenBuffers hold responses (tsa.RespondOptions.Buf) until written.
var tokenBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func (e *tsaEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.reject(w, http.StatusMethodNotAllowed, "use POST with "+timestampQuery)
		return
	}
	if !isTimestampQuery(r.Header.Get("Content-Type")) {
		e.reject(w, http.StatusUnsupportedMediaType, "content type must be "+timestampQuery)
		return
	}
	if r.ContentLength > e.maxBody {
		e.reject(w, http.StatusRequestEntityTooLarge, "request larger than "+strconv.FormatInt(e.maxBody, 10)+" bytes")
		return
	}

	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<16 {
			buf.Reset()
			bodyBuffers.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, e.maxBody)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			e.reject(w, http.StatusRequestEntityTooLarge, "request larger than "+strconv.FormatInt(e.maxBody, 10)+" bytes")
			return
		}
		e.reject(w, http.StatusBadRequest, "incomplete request body")
		return
	}

	// With an evidence log, the token is recorded as evidence: its id
	// goes back in PEC-Evidence-ID. On the API, the record names the
	// client, who may then read its proof.
	var opts tsa.RespondOptions
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		client := evidence.ActorFromCertificate("client", r.TLS.PeerCertificates[0])
		opts.Client = &client
	}
	tb := tokenBuffers.Get().(*[]byte)
	opts.Buf = (*tb)[:0]
	resp, id, err := e.authority.RespondWith(r.Context(), buf.Bytes(), opts)
	defer func() {
		// Written out (net/http copies it into its buffer): reused.
		if cap(resp) > cap(*tb) && cap(resp) <= 1<<16 {
			*tb = resp[:0]
		}
		tokenBuffers.Put(tb)
	}()
	if err != nil {
		// Our own failure (HSM, disk, evidence log): logged here, once;
		// the client gets systemFailure and no internal detail. A
		// temporary one says when to come back.
		status := http.StatusInternalServerError
		if temporary(err) {
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
		e.failures.error(r.Context(), "tsa: respond", err)
		writeReply(w, status, tsa.Reject(tsa.FailSystemFailure, "internal failure"))
		return
	}
	if id != "" {
		w.Header()["Pec-Evidence-Id"] = []string{id} // api.EvidenceHeader, canonical
	}
	writeReply(w, http.StatusOK, resp)
}

// isTimestampQuery: the media type is application/timestamp-query, with
// or without parameters. The exact string, what every client sends, is
// known without parsing (mime.ParseMediaType builds a map a request).
func isTimestampQuery(contentType string) bool {
	if contentType == timestampQuery {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == timestampQuery
}

func (e *tsaEndpoint) reject(w http.ResponseWriter, status int, text string) {
	writeReply(w, status, tsa.Reject(tsa.FailBadRequest, text))
}

// replyContentType is the Content-Type of every reply: one slice, never
// modified, for all of them (net/http only reads it).
var replyContentType = []string{timestampReply}

func writeReply(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = replyContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
