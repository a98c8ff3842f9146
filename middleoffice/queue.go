package middleoffice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"pec/evidence"
)

// jobLease is how long a worker holds a job: past it, another node (or,
// on the embedded store, the next start) takes it again.
const jobLease = 5 * time.Minute

// jobTimeout bounds one attempt of a job (a TSA or an HSM that hangs),
// well within its lease.
const jobTimeout = time.Minute

// sealName is the payload of an exchange's seal.
const sealName = "seal.p7m"

// Run drives the work queue until ctx ends: it first finishes every step
// left prepared (a crash between a record and its commit), then runs
// cfg.Workers workers that seal and deliver accepted exchanges, woken by
// each submission and every PollInterval, and finishes, each interval,
// steps prepared longer than StepTimeout ago (a caller that died). When
// ctx ends, jobs in flight finish their step or are handed back to the
// queue; Run returns once every worker stopped.
func (x *Exchanges) Run(ctx context.Context) error {
	if _, err := x.Recover(ctx, x.now().Add(time.Hour)); err != nil && ctx.Err() == nil {
		x.log.ErrorContext(ctx, "exchange: recovery of prepared steps", "err", err)
	}
	var wg sync.WaitGroup
	for range x.cfg.Workers {
		wg.Go(func() { x.worker(ctx) })
	}
	wg.Go(func() {
		tick := time.NewTicker(x.cfg.PollInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := x.Recover(ctx, x.now().Add(-x.cfg.StepTimeout)); err != nil && ctx.Err() == nil {
					x.log.ErrorContext(ctx, "exchange: recovery of prepared steps", "err", err)
				}
			}
		}
	})
	wg.Wait()
	return nil
}

func (x *Exchanges) worker(ctx context.Context) {
	tick := time.NewTicker(x.cfg.PollInterval)
	defer tick.Stop()
	for {
		for ctx.Err() == nil {
			did, err := x.Work(ctx)
			if err != nil && ctx.Err() == nil && !did {
				x.log.ErrorContext(ctx, "exchange: work queue", "err", err)
			}
			if !did {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		case <-tick.C:
		}
	}
}

// Recover finishes the steps prepared before t: their records appended
// (the log keeps one copy), the steps committed. It returns how many were
// finished.
func (x *Exchanges) Recover(ctx context.Context, before time.Time) (int, error) {
	steps, err := x.store.PreparedBefore(ctx, before, 1000)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, st := range steps {
		if err := x.finish(ctx, st); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		x.log.InfoContext(ctx, "exchange: finished a prepared step", "exchange_id", st.Exchange, "event", string(st.Event.Type), "evidence_id", st.Event.EvidenceID)
		if st.Enqueue != nil {
			x.wake()
		}
	}
	return n, errors.Join(errs...)
}

// Work claims one due job and does it; it reports whether there was one.
// A failed job is handed back with a delay (RetryDelay doubled at each
// attempt, up to MaxRetryDelay, with jitter) and its error returned.
func (x *Exchanges) Work(ctx context.Context) (bool, error) {
	job, err := x.store.Claim(ctx, x.now(), jobLease)
	if err != nil || job == nil {
		return false, err
	}
	jctx, cancel := context.WithTimeout(ctx, jobTimeout)
	err = x.process(jctx, job)
	cancel()
	if err == nil {
		x.metrics.jobs.WithLabelValues("done").Inc()
		return true, nil
	}
	x.metrics.jobs.WithLabelValues("failed").Inc()
	delay := x.cfg.RetryDelay << min(job.Attempts, 20)
	if delay <= 0 || delay > x.cfg.MaxRetryDelay {
		delay = x.cfg.MaxRetryDelay
	}
	delay += rand.N(delay/5 + 1)
	if rerr := x.store.Release(context.WithoutCancel(ctx), job, x.now().Add(delay), err.Error()); rerr != nil {
		err = errors.Join(err, rerr)
	}
	x.log.WarnContext(ctx, "exchange: job failed, retried later", "exchange_id", job.Exchange, "job", job.Kind, "attempts", job.Attempts+1, "retry_in", delay, "err", err)
	return true, err
}

// process does one job.
func (x *Exchanges) process(ctx context.Context, job *Job) error {
	if job.Kind != JobProcess {
		return fmt.Errorf("middleoffice: job %s: unknown kind %q", job.ID, job.Kind)
	}
	ex, err := x.settled(ctx, job.Exchange)
	if err != nil {
		return err
	}
	if ex.State != StateAccepted {
		return nil // its step was the prepared one just finished: the commit took the job away
	}
	return x.deliver(ctx, ex, job)
}

// deliver seals an accepted exchange and puts it in the recipient's
// inbox: the seal is the platform's CAdES signature with the sealed
// manifest attached; delivery.delivered names its digest.
//
// The pull inbox is the one channel so far: a recipient whose channel is
// webhook or mail finds its exchanges there too, until those channels
// push them.
func (x *Exchanges) deliver(ctx context.Context, ex *Exchange, job *Job) error {
	now := x.now().UTC()
	m := ex.Manifest
	m.IdempotencyKey = ""
	content, err := json.Marshal(SealedManifest{
		Exchange:           ex.ID,
		Sender:             ex.Sender,
		SenderSubject:      ex.SenderSubject,
		SenderCertificate:  ex.SenderCertificate,
		SubmittedAt:        ex.SubmittedAt,
		SubmissionEvidence: ex.SubmissionEvidence,
		Manifest:           m,
	})
	if err != nil {
		return err
	}
	sig, err := x.signer.Sign(ctx, content, false)
	if err != nil {
		return fmt.Errorf("middleoffice: seal exchange %s: %w", ex.ID, err)
	}
	// Written before the step is prepared, so that its record names the
	// seal that is on disk; a crash before the step leaves a seal that
	// the next attempt replaces.
	w, err := x.store.CreatePayload(ctx, ex.ID, sealName)
	if err != nil {
		return err
	}
	if _, err := w.Write(sig.DER); err != nil {
		w.Abort()
		return err
	}
	if err := w.Commit(); err != nil {
		return err
	}
	sealSum := sha256.Sum256(sig.DER)
	contentSum := sha256.Sum256(content)
	rec := &evidence.Record{
		ID:      evidence.NewID(now),
		Type:    evidence.Delivered,
		Time:    now,
		Subject: ex.ID,
		Actors:  []evidence.Actor{evidence.ActorFromCertificate("platform", x.signer.Certificate()), recipientActor(ex)},
		Digests: []evidence.Digest{
			{Name: "seal", Algorithm: "sha256", Value: sealSum[:]},
			{Name: "sealed-manifest", Algorithm: "sha256", Value: contentSum[:]},
		},
		Previous:   []string{ex.SubmissionEvidence},
		Attributes: []evidence.Attribute{{Key: "channel", Value: ChannelPull}, {Key: "recipient", Value: ex.Recipient}},
	}
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	err = x.runStep(ctx, &Step{
		Exchange: ex.ID,
		Prepared: now,
		Record:   data,
		Event:    Event{Type: evidence.Delivered, EvidenceID: rec.ID, Time: now},
		From:     []State{StateAccepted},
		To:       StateDelivered,
		Seal:     &PayloadInfo{Name: sealName, Size: int64(len(sig.DER)), SHA256: hex.EncodeToString(sealSum[:])},
		Finish:   job.ID,
	})
	if errors.Is(err, ErrStateChanged) {
		return nil // delivered by another worker meanwhile
	}
	if err == nil {
		x.log.InfoContext(ctx, "exchange: delivered", "exchange_id", ex.ID, "partner", ex.Recipient, "evidence_id", rec.ID)
	}
	return err
}

// recipientActor names the recipient by the encryption certificate its
// documents were encrypted for.
func recipientActor(ex *Exchange) evidence.Actor {
	a := evidence.Actor{Role: "recipient", Subject: ex.RecipientSubject}
	if b, err := hex.DecodeString(ex.RecipientCertificate); err == nil && len(b) == len(a.Fingerprint) {
		copy(a.Fingerprint[:], b)
	}
	return a
}
