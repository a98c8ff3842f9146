package gateway

import (
	"net/http"

	"pec/gateway/api"
	"pec/middleoffice"
)

// GET /v1/proofs/{id}: the proof bundle of an evidence record, from
// middleoffice.Proofs.Bundle, which decides who reads what (a partner the
// proofs of its own exchanges, an auditor all), records the read
// (proof.read) before the bundle is sent, and waits for the record's seal;
// the id of the read's evidence is in the PEC-Evidence-ID header. Not
// sealed in time is 503 not-sealed with Retry-After; no such record and
// not the client's are the same 404 unknown-proof.
func registerProofs(v1 *http.ServeMux, m *metrics, e *edge, pol *middleoffice.Policy, proofs *middleoffice.Proofs) {
	op := operation{name: "proof", outcome: "no proof was sent"}
	v1.Handle("GET /v1/proofs/{id}", m.instrument("/v1/proofs/{id}", e.handle(op, func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		b, err := proofs.Bundle(r.Context(), principal(pol, r), id)
		if err != nil {
			return err
		}
		writeBundle(w, id, b)
		return nil
	})))
}

// GET /v1/exchanges/{id}/proof: one proof bundle of every step of an
// exchange (middleoffice.Proofs.ExchangeBundle), for its sender and, once
// delivered, its recipient; the read is recorded first.
func registerExchangeProof(v1 *http.ServeMux, m *metrics, e *edge, pol *middleoffice.Policy, proofs *middleoffice.Proofs, x *middleoffice.Exchanges) {
	op := operation{name: "exchange: proof", outcome: "no proof was sent"}
	v1.Handle("GET /v1/exchanges/{id}/proof", m.instrument("/v1/exchanges/{id}/proof", e.handle(op, func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		b, err := proofs.ExchangeBundle(r.Context(), principal(pol, r), x, id)
		if err != nil {
			return err
		}
		writeBundle(w, id, b)
		return nil
	})))
}

func writeBundle(w http.ResponseWriter, name string, b *middleoffice.ProofBundle) {
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.zip"`)
	w.Header().Set(api.EvidenceHeader, b.ReadID)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Data)
}
