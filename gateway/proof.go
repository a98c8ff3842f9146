package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"pec/evidence"
	"pec/middleoffice"
	"pec/proof"
)

// ProofReader serves GET /v1/proofs/{id}: the proof bundle of an evidence
// record. The policy decides who reads what (Options.Policy): a partner
// reads the proofs of its own exchanges only (records naming its
// certificate as an actor); an auditor reads all. Every read is
// recorded in the log (proof.read) before the bundle is sent, and the id
// of that evidence is in the PEC-Evidence-ID header.
//
// A record is acknowledged once durable and sealed within the log's seal
// interval: the proof of a record not sealed yet waits for its checkpoint,
// up to the interval and a second; a record still unsealed then (sealing
// fails: the TSA or the HSM is down) is 503 with Retry-After.
type ProofReader struct {
	Log *proof.Log
	// Export: the certificates every bundle carries, and the validator
	// that gathers their revocation data (ExportOptions.Validator).
	Export proof.ExportOptions
}

func registerProofs(v1 *http.ServeMux, m *metrics, pol *middleoffice.Policy, opts Options) {
	if opts.Proofs == nil || opts.Proofs.Log == nil {
		return
	}
	v1.Handle("GET /v1/proofs/{id}", m.instrument("/v1/proofs/{id}", &proofEndpoint{r: opts.Proofs, pol: pol, opts: opts}))
}

type proofEndpoint struct {
	r    *ProofReader
	pol  *middleoffice.Policy
	opts Options
}

func (e *proofEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	log := e.opts.logger()
	id := r.PathValue("id")
	pr := principal(e.pol, r)
	auditor := e.pol.Authorize(pr, middleoffice.ActionReadAllProofs, middleoffice.Resource{}) == nil
	store := e.r.Log.Store()
	// The same answer for "no such record" and "not yours": a partner
	// learns nothing of others' evidence.
	notFound := func() { writeProblem(w, http.StatusNotFound, "no proof "+strconv.Quote(id)+" for this client") }
	wctx, cancel := context.WithTimeout(ctx, e.r.Log.SealInterval()+time.Second)
	idx, _, err := e.r.Log.WaitSealed(wctx, id)
	cancel()
	if errors.Is(err, proof.ErrNotFound) {
		notFound()
		return
	}
	if errors.Is(err, proof.ErrNotSealed) && ctx.Err() == nil {
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the evidence is recorded but not sealed yet: try again")
		return
	}
	if err != nil {
		// The store failed (a lost database connection, a damaged file):
		// logged, and the client told to come back.
		log.ErrorContext(ctx, "proof: lookup", "err", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the evidence log is not available: try again")
		return
	}
	stored, err := store.Record(ctx, idx)
	if err != nil {
		log.ErrorContext(ctx, "proof: read record", "err", err)
		writeProblem(w, http.StatusInternalServerError, "the evidence log is not available")
		return
	}
	rec, err := evidence.UnmarshalRecord(stored.Data)
	if err != nil {
		log.ErrorContext(ctx, "proof: stored record", "index", idx, "err", err)
		writeProblem(w, http.StatusInternalServerError, "the evidence log is not available")
		return
	}
	if !auditor && e.pol.Authorize(pr, middleoffice.ActionReadProof, middleoffice.Resource{Record: rec}) != nil {
		notFound()
		return
	}
	role := "partner"
	if auditor {
		role = "auditor"
	}
	read, err := e.r.Log.Append(ctx, &evidence.Record{
		Type:     evidence.ProofRead,
		Subject:  id,
		Actors:   []evidence.Actor{pr.Actor(role)},
		Previous: []string{id},
	})
	if err != nil {
		log.ErrorContext(ctx, "proof: record the read", "err", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the read of this proof cannot be recorded: try again")
		return
	}
	bundle, err := proof.Export(ctx, store, id, e.r.Export)
	if err != nil {
		log.ErrorContext(ctx, "proof: export", "err", err)
		writeProblem(w, http.StatusInternalServerError, "the proof bundle cannot be made")
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.zip"`)
	w.Header().Set("PEC-Evidence-ID", read[0])
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bundle)
}
