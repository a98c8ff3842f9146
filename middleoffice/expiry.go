package middleoffice

import (
	"context"
	"errors"
	"strconv"
	"time"

	"pec/evidence"
)

// Expiry: an exchange delivered (to the pull inbox or by webhook) and
// neither acknowledged nor refused within ExchangeConfig.ExpireAfter
// expires: delivery.expired, StateExpired, out of the inbox, no longer
// fetched or answered (ErrExpired), its sender notified. Retrieving it
// does not stop the clock: only an answer does. Each delivery enqueues
// its JobExpire, due ExpireAfter later; an answer removes it.

func expireJobID(exchange string) string { return exchange + "-" + JobExpire }

// expireJobs are the jobs that expire ex, delivered at now: none when
// exchanges never expire.
func (x *Exchanges) expireJobs(ex *Exchange, now time.Time) []*Job {
	if x.cfg.ExpireAfter < 0 {
		return nil
	}
	return []*Job{{ID: expireJobID(ex.ID), Kind: JobExpire, Exchange: ex.ID, NotBefore: now.Add(x.cfg.ExpireAfter)}}
}

// expire does a JobExpire: the exchange expired if it is still in its
// recipient's inbox ExpireAfter (as configured now) after its delivery.
func (x *Exchanges) expire(ctx context.Context, job *Job) error {
	ex, err := x.settled(ctx, job.Exchange)
	if errors.Is(err, ErrExchangeNotFound) {
		return x.store.Done(ctx, job.ID)
	} else if err != nil {
		return err
	}
	if !ex.State.InInbox() || x.cfg.ExpireAfter < 0 {
		return x.store.Done(ctx, job.ID)
	}
	now := x.now().UTC()
	delivered, _ := ex.event(evidence.Delivered)
	if due := delivered.Time.Add(x.cfg.ExpireAfter); now.Before(due) {
		// ExpireAfter was made longer since the delivery.
		return x.store.Release(ctx, job, due, "")
	}
	rec := &evidence.Record{
		ID:       evidence.NewID(now),
		Type:     evidence.Expired,
		Time:     now,
		Subject:  ex.ID,
		Actors:   []evidence.Actor{evidence.ActorFromCertificate("platform", x.signer.Certificate()), recipientActor(ex)},
		Previous: previous(ex, evidence.Delivered),
		Attributes: []evidence.Attribute{
			{Key: "expire_after", Value: x.cfg.ExpireAfter.String()},
			{Key: "recipient", Value: ex.Recipient},
			{Key: "retrieved", Value: strconv.FormatBool(ex.State == StateRetrieved)},
		},
	}
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	err = x.runStep(ctx, &Step{
		Exchange: ex.ID,
		Prepared: now,
		Record:   data,
		Event:    Event{Type: evidence.Expired, EvidenceID: rec.ID, Time: now},
		From:     []State{StateDelivered, StateRetrieved},
		To:       StateExpired,
		Enqueue:  x.notifyJobs(ex, rec.ID, now),
		Finish:   job.ID,
	})
	if errors.Is(err, ErrStateChanged) {
		return x.store.Done(ctx, job.ID) // answered meanwhile
	}
	if err == nil {
		x.log.InfoContext(ctx, "exchange: expired unanswered", "exchange_id", ex.ID, "partner", ex.Recipient, "evidence_id", rec.ID)
	}
	return err
}
