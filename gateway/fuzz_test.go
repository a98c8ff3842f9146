package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"pec/gateway/api"
	"pec/middleoffice"
)

// fuzzBoundary is the boundary of the fuzzed submission bodies.
const fuzzBoundary = "fuzzboundary"

// FuzzSubmission sends any body, as multipart/form-data or
// multipart/mixed and with any Idempotency-Key, to POST /v1/exchanges of
// a real node (in process, partner a): never a panic, never a 5xx; the
// answer is a submission (201, or 200 for a replay) or a typed problem,
// and every refusal names the submission.rejected record that proves it.
func FuzzSubmission(f *testing.F) {
	n := newExchangeNode(f, nodeOptions{noServer: true, cfg: middleoffice.ExchangeConfig{MaxDocumentSize: 1 << 20, MaxDossierSize: 2 << 20}})
	f.Fuzz(func(t *testing.T, mixed bool, key string, body []byte) {
		mt := api.MediaMultipartForm
		if mixed {
			mt = api.MediaMultipartMixed
		}
		hdr := contentType(mt + "; boundary=" + fuzzBoundary)
		if key != "" {
			hdr.Set(api.IdempotencyHeader, key)
		}
		resp, data := n.do(t, "a", "POST", "/v1/exchanges", hdr, bytes.NewReader(body))
		switch resp.StatusCode {
		case http.StatusCreated, http.StatusOK:
			var s api.Submission
			if err := json.Unmarshal(data, &s); err != nil || s.Exchange == "" || s.EvidenceID == "" || len(s.Receipt) == 0 || s.Replayed != (resp.StatusCode == http.StatusOK) {
				t.Fatalf("%s: %s", resp.Status, data)
			}
		default:
			p := wantTypedProblem(t, resp.StatusCode, resp.Header, data, "")
			if resp.StatusCode >= 500 {
				t.Fatalf("our failure for a sender's body: %s", data)
			}
			if p.EvidenceID == "" || p.Exchange == "" {
				t.Fatalf("a refusal without its evidence: %s", data)
			}
		}
	})
}
