package middleoffice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"pec/evidence"
	"pec/internal/cms"
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
		if len(st.Enqueue) > 0 {
			x.wake()
		}
	}
	return n, errors.Join(errs...)
}

// Work claims one due job and does it; it reports whether there was one.
// A failed job is handed back with a delay (RetryDelay doubled at each
// attempt, up to MaxRetryDelay, with jitter; longer when the recipient
// asked for it with Retry-After) and its error returned.
func (x *Exchanges) Work(ctx context.Context) (bool, error) {
	// One attempt may push a large dossier: it is bounded by PushTimeout
	// on top of the time to seal, and held twice as long, so that no
	// other worker takes it while it runs.
	timeout := jobTimeout + x.cfg.PushTimeout
	job, err := x.store.Claim(ctx, x.now(), max(jobLease, 2*timeout))
	if err != nil || job == nil {
		return false, err
	}
	jctx, cancel := context.WithTimeout(ctx, timeout)
	err = x.process(jctx, job)
	cancel()
	if err == nil {
		x.metrics.jobs.WithLabelValues("done").Inc()
		if job.Kind == JobProcess {
			x.delivered1()
		}
		return true, nil
	}
	x.metrics.jobs.WithLabelValues("failed").Inc()
	delay := x.cfg.RetryDelay << min(job.Attempts, 20)
	if delay <= 0 || delay > x.cfg.MaxRetryDelay {
		delay = x.cfg.MaxRetryDelay
	}
	delay += rand.N(delay/5 + 1)
	if pe, ok := errors.AsType[*PushError](err); ok && pe.RetryAfter > delay {
		delay = min(pe.RetryAfter, x.cfg.MaxRetryDelay)
	}
	if rerr := x.store.Release(context.WithoutCancel(ctx), job, x.now().Add(delay), err.Error()); rerr != nil {
		err = errors.Join(err, rerr)
	}
	x.log.WarnContext(ctx, "exchange: job failed, retried later", "exchange_id", job.Exchange, "job", job.Kind, "attempts", job.Attempts+1, "retry_in", delay, "err", err)
	return true, err
}

// process does one job.
func (x *Exchanges) process(ctx context.Context, job *Job) error {
	switch job.Kind {
	case JobProcess:
	case JobNotify:
		return x.notify(ctx, job)
	case JobExpire:
		return x.expire(ctx, job)
	case JobShred:
		return x.shred(ctx, job)
	case JobDestroyKEK:
		return x.destroyKEK(ctx, job)
	default:
		return fmt.Errorf("middleoffice: job %s: unknown kind %q", job.ID, job.Kind)
	}
	ex, err := x.settled(ctx, job.Exchange)
	if errors.Is(err, ErrExchangeNotFound) {
		return x.store.Done(ctx, job.ID)
	} else if err != nil {
		return err
	}
	if ex.State != StateAccepted {
		// Its step was the prepared one just finished, whose commit took
		// the job away: nothing left to do.
		return x.store.Done(ctx, job.ID)
	}
	return x.deliver(ctx, ex, job)
}

// deliver seals an accepted exchange and delivers it through its
// recipient's channel: the seal is the platform's CAdES signature with
// the sealed manifest attached; delivery.delivered names its digest.
//
// Pull puts it in the recipient's inbox. Webhook pushes it (see
// [NewWebhookClient] for the contract); a failed push is recorded
// (delivery.attempt_failed) and retried by the queue, and after
// DeadLetterAfter of failures the exchange is dead letter
// (delivery.failed). A pushed exchange is in the recipient's inbox too
// once delivered, so that the recipient may fetch it again and answer it
// through the pull API. Mail pushes it through ExchangeOptions.Mail;
// without one, a recipient on mail finds its exchanges in the pull inbox,
// and the delivery's event and log say so.
func (x *Exchanges) deliver(ctx context.Context, ex *Exchange, job *Job) error {
	recipient, known := x.policy.Directory().Partner(ex.Recipient)
	var ch PushChannel
	channel, note := ChannelPull, ""
	switch {
	case !known:
	case recipient.Channel.Type == ChannelWebhook:
		ch, channel = x.webhook, ChannelWebhook
	case recipient.Channel.Type == ChannelMail && x.mail != nil:
		ch, channel = x.mail, ChannelMail
	case recipient.Channel.Type == ChannelMail:
		note = "the mail channel is not available on this node: delivered to the pull inbox"
		x.log.WarnContext(ctx, "exchange: the mail channel is not available, delivered to the pull inbox", "exchange_id", ex.ID, "partner", ex.Recipient)
	}
	seal, content, err := x.seal(ctx, ex, ch != nil)
	if err != nil {
		return err
	}
	if ch == nil {
		return x.delivered(ctx, ex, job, channel, seal, content, nil, note)
	}
	return x.push(ctx, ex, job, recipient, ch, channel, seal, content)
}

// sealedManifest is the content of ex's seal.
func sealedManifest(ex *Exchange) ([]byte, error) {
	m := ex.Manifest
	m.IdempotencyKey = ""
	return json.Marshal(SealedManifest{
		Exchange:           ex.ID,
		Sender:             ex.Sender,
		SenderSubject:      ex.SenderSubject,
		SenderCertificate:  ex.SenderCertificate,
		SubmittedAt:        ex.SubmittedAt,
		SubmissionEvidence: ex.SubmissionEvidence,
		Manifest:           m,
	})
}

// seal signs the sealed manifest of ex and writes the seal to the store;
// with reuse, a seal written by an earlier attempt over the same content
// is taken again (a push retried for a day is one seal, and the recipient
// gets the same bytes at each attempt).
func (x *Exchanges) seal(ctx context.Context, ex *Exchange, reuse bool) (seal, content []byte, err error) {
	content, err = sealedManifest(ex)
	if err != nil {
		return nil, nil, err
	}
	if reuse {
		if p, err := x.store.OpenPayload(ctx, ex.ID, sealName); err == nil {
			der, rerr := io.ReadAll(io.LimitReader(p, maxSeal))
			p.Close()
			if sd, perr := cms.ParseSignedData(der); rerr == nil && perr == nil && sd.Attached && bytes.Equal(sd.Content, content) {
				return der, content, nil
			}
		}
	}
	sig, err := x.signer.Sign(ctx, content, false)
	if err != nil {
		return nil, nil, fmt.Errorf("middleoffice: seal exchange %s: %w", ex.ID, err)
	}
	// Written before the step is prepared, so that its record names the
	// seal that is on disk; a crash before the step leaves a seal that
	// the next attempt replaces.
	w, err := x.store.CreatePayload(ctx, ex.ID, sealName)
	if err != nil {
		return nil, nil, err
	}
	if _, err := w.Write(sig.DER); err != nil {
		w.Abort()
		return nil, nil, err
	}
	if err := w.Commit(); err != nil {
		return nil, nil, err
	}
	return sig.DER, content, nil
}

// delivered commits the delivery of ex through channel: the exchange in
// StateDelivered (and its recipient's inbox), its process job finished,
// the sender's notification and the expiry enqueued. answer is the
// pushed channel's (nil: pull); note goes to the event's detail.
func (x *Exchanges) delivered(ctx context.Context, ex *Exchange, job *Job, channel string, seal, content []byte, answer *PushAnswer, note string) error {
	now := x.now().UTC()
	sealSum := sha256.Sum256(seal)
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
		Attributes: []evidence.Attribute{{Key: "channel", Value: channel}, {Key: "recipient", Value: ex.Recipient}},
	}
	if answer != nil {
		if answer.Endpoint != nil {
			rec.Actors = append(rec.Actors, evidence.ActorFromCertificate("endpoint", answer.Endpoint))
		}
		if answer.Status != 0 {
			rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "status", Value: strconv.Itoa(answer.Status)})
		}
		if n, _ := attempts(ex); n > 0 {
			rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "failed_attempts", Value: strconv.Itoa(n)})
			rec.Previous = append(rec.Previous, previous(ex, evidence.DeliveryAttemptFailed)...)
		}
	}
	if note != "" {
		note = truncate(note, maxReason)
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "note", Value: note})
	}
	rec.SortAttributes()
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	err = x.runStep(ctx, &Step{
		Exchange: ex.ID,
		Prepared: now,
		Record:   data,
		Event:    Event{Type: evidence.Delivered, EvidenceID: rec.ID, Time: now, Detail: note},
		From:     []State{StateAccepted},
		To:       StateDelivered,
		Seal:     &PayloadInfo{Name: sealName, Size: int64(len(seal)), SHA256: hex.EncodeToString(sealSum[:])},
		Enqueue:  slices.Concat(x.notifyJobs(ex, rec.ID, now), x.expireJobs(ex, now)),
		Finish:   job.ID,
	})
	if errors.Is(err, ErrStateChanged) {
		return nil // delivered by another worker meanwhile
	}
	if err == nil {
		x.metrics.deliveries.WithLabelValues(channel, "delivered").Inc()
		x.log.InfoContext(ctx, "exchange: delivered", "exchange_id", ex.ID, "partner", ex.Recipient, "channel", channel, "evidence_id", rec.ID)
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
