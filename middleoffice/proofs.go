package middleoffice

import (
	"context"
	"errors"
	"fmt"
	"time"

	"pec/evidence"
	"pec/proof"
)

// ErrNoProof: the evidence log holds no record of this id, or the policy
// does not let the principal read its proof. The two are one error, so
// that a partner learns nothing of the others' evidence.
var ErrNoProof = errors.New("middleoffice: no such proof for this principal")

// Proofs serves the proof bundles of the evidence log to the principals
// the policy lets read them: a partner the proofs of the records naming
// its certificate as an actor, an auditor all (ActionReadProof,
// ActionReadAllProofs). Every read is recorded (proof.read) before the
// bundle is returned. The gateway's GET /v1/proofs/{id} and the portals
// call the same Bundle. It is safe for concurrent use.
type Proofs struct {
	log    *proof.Log
	policy *Policy
	export proof.ExportOptions
}

// NewProofs serves the bundles of log; export is what every bundle
// carries (the log's certificates, the validator gathering their
// revocation data).
func NewProofs(log *proof.Log, pol *Policy, export proof.ExportOptions) *Proofs {
	return &Proofs{log: log, policy: pol, export: export}
}

// Log is the evidence log the bundles come from.
func (p *Proofs) Log() *proof.Log { return p.log }

// ProofBundle is a proof bundle and the id of the proof.read record of
// the read that returned it.
type ProofBundle struct {
	Data   []byte // the ZIP of proof.Export
	ReadID string
}

// Bundle returns the proof bundle of the record id for pr. A record is
// acknowledged once durable and sealed within the log's seal interval:
// the proof of a record not sealed yet waits for its checkpoint, up to the
// interval and a second.
//
// Errors: ErrNoProof (no such record, or not pr's); proof.ErrNotSealed
// when the record is still unsealed then (sealing fails: the TSA or the
// HSM is down); evidence.ErrUnavailable when the log cannot be read or
// the read cannot be recorded (nothing is returned unrecorded); ctx's
// error when it ends; anything else is the node's own failure.
func (p *Proofs) Bundle(ctx context.Context, pr *Principal, id string) (*ProofBundle, error) {
	auditor := p.policy.Authorize(pr, ActionReadAllProofs, Resource{}) == nil
	wctx, cancel := context.WithTimeout(ctx, p.log.SealInterval()+time.Second)
	idx, _, err := p.log.WaitSealed(wctx, id)
	cancel()
	switch {
	case errors.Is(err, proof.ErrNotFound):
		return nil, ErrNoProof
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, proof.ErrNotSealed):
		return nil, fmt.Errorf("middleoffice: proof of %s: %w", id, err)
	case err != nil:
		// The store failed (a lost database connection, a damaged file).
		return nil, fmt.Errorf("middleoffice: proof lookup: %w: %w", evidence.ErrUnavailable, err)
	}
	store := p.log.Store()
	stored, err := store.Record(ctx, idx)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: proof: read record %d: %w", idx, err)
	}
	rec, err := evidence.UnmarshalRecord(stored.Data)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: proof: stored record %d: %w", idx, err)
	}
	if !auditor && p.policy.Authorize(pr, ActionReadProof, Resource{Record: rec}) != nil {
		return nil, ErrNoProof
	}
	role := "partner"
	if auditor {
		role = "auditor"
	}
	read, err := p.log.Append(ctx, &evidence.Record{
		Type:     evidence.ProofRead,
		Subject:  id,
		Actors:   []evidence.Actor{pr.Actor(role)},
		Previous: []string{id},
	})
	if err != nil {
		if errors.Is(err, evidence.ErrUnavailable) {
			return nil, fmt.Errorf("middleoffice: record the proof read: %w", err)
		}
		return nil, fmt.Errorf("middleoffice: record the proof read: %w: %w", evidence.ErrUnavailable, err)
	}
	bundle, err := proof.Export(ctx, store, id, p.export)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: proof export: %w", err)
	}
	return &ProofBundle{Data: bundle, ReadID: read[0]}, nil
}

// ExchangeBundle returns one proof bundle of every step of exchange id —
// its submission, delivery, retrieval, acknowledgment, failures — to the
// exchange's sender or, once delivered, its recipient (the exchange
// service decides), and to auditors (ActionReadAllProofs); to anyone else
// it is ErrExchangeNotFound. The bundle's
// evidence is the exchange's latest step; it waits for that step's seal
// as Bundle does, and the read is recorded (proof.read) first.
func (p *Proofs) ExchangeBundle(ctx context.Context, pr *Principal, x *Exchanges, id string) (*ProofBundle, error) {
	auditor := p.policy.Authorize(pr, ActionReadAllProofs, Resource{}) == nil
	var ex *Exchange
	var err error
	if auditor && validExchangeID(id) {
		// An auditor reads every proof, those of any exchange too.
		ex, err = x.store.Exchange(ctx, id)
		if err == nil && ex.State == StatePending {
			err = ErrExchangeNotFound
		}
	} else {
		ex, err = x.Status(ctx, pr, id)
	}
	if err != nil {
		return nil, err
	}
	if len(ex.Events) == 0 {
		return nil, ErrExchangeNotFound
	}
	// The latest step first; then the others, failed attempts last (a
	// bundle holds 64 records at most).
	lastEv := ex.Events[len(ex.Events)-1]
	var steps, attempts []string
	for _, e := range ex.Events[:len(ex.Events)-1] {
		if e.Type == evidence.DeliveryAttemptFailed {
			attempts = append(attempts, e.EvidenceID)
		} else {
			steps = append(steps, e.EvidenceID)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, p.log.SealInterval()+time.Second)
	_, _, err = p.log.WaitSealed(wctx, lastEv.EvidenceID)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, proof.ErrNotSealed):
		return nil, fmt.Errorf("middleoffice: proof of exchange %s: %w", id, err)
	case err != nil:
		return nil, fmt.Errorf("middleoffice: proof lookup: %w: %w", evidence.ErrUnavailable, err)
	}
	role := "sender"
	switch {
	case auditor:
		role = "auditor"
	case ex.Sender != pr.ID():
		role = "recipient"
	}
	read, err := p.log.Append(ctx, &evidence.Record{
		Type:     evidence.ProofRead,
		Subject:  ex.ID,
		Actors:   []evidence.Actor{pr.Actor(role)},
		Previous: []string{lastEv.EvidenceID},
	})
	if err != nil {
		if errors.Is(err, evidence.ErrUnavailable) {
			return nil, fmt.Errorf("middleoffice: record the proof read: %w", err)
		}
		return nil, fmt.Errorf("middleoffice: record the proof read: %w: %w", evidence.ErrUnavailable, err)
	}
	opts := p.export
	opts.Related = append(steps, attempts...)
	bundle, err := proof.Export(ctx, p.log.Store(), lastEv.EvidenceID, opts)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: proof export: %w", err)
	}
	return &ProofBundle{Data: bundle, ReadID: read[0]}, nil
}
