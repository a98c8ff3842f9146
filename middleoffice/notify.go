package middleoffice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"pec/evidence"
)

// Notification is what a sender whose directory entry has a
// channel.notify_url is told of its exchanges: on delivery
// (delivery.delivered), acknowledgment and refusal
// (delivery.acknowledged), failure (delivery.failed: dead letter) and
// expiry (delivery.expired).
//
// The platform POSTs it as JSON to the notify_url over mutual TLS (the
// node's client certificate; the endpoint checked against the configured
// roots, as the webhook's), with the headers Idempotency-Key (the evidence
// id) and PEC-Event (the event type). A 2xx answer is the end of it;
// anything else is retried through the work queue with exponential
// backoff and jitter (Retry-After honoured) until
// exchange.dead_letter_after after the event, then dropped (logged and
// counted; the status API still has every event). Delivery is at least
// once and in no guaranteed order: a receiver keeps one notification per
// evidence id and orders them by time. The body is authenticated by the
// TLS connection; the event itself is proven by its evidence record,
// which the proof API gives the sender by EvidenceID.
type Notification struct {
	Exchange   string             `json:"exchange"`
	Event      evidence.EventType `json:"event"`
	EvidenceID string             `json:"evidence_id"`
	Time       time.Time          `json:"time"`
	// State is the exchange's state the event left it in: delivered,
	// acknowledged, refused, dead-letter or expired.
	State     State  `json:"state"`
	Recipient string `json:"recipient"`
	// Reference is the sender's own reference, from its manifest.
	Reference string `json:"reference,omitempty"`
	// Detail is a refusal's reason, a dead letter's last failure, or a
	// note on the delivery.
	Detail string `json:"detail,omitempty"`
}

// notifiedEvents are the events a sender is notified of.
var notifiedEvents = []evidence.EventType{evidence.Delivered, evidence.Acknowledged, evidence.DeliveryFailed, evidence.Expired}

// notifyJobs are the jobs that tell ex's sender of the event evidenceID:
// none when the sender has no notify_url.
func (x *Exchanges) notifyJobs(ex *Exchange, evidenceID string, now time.Time) []*Job {
	p, ok := x.policy.Directory().Partner(ex.Sender)
	if !ok || p.Channel.NotifyURL == "" {
		return nil
	}
	return []*Job{{ID: ex.ID + "-" + JobNotify + "-" + evidenceID, Kind: JobNotify, Exchange: ex.ID, Evidence: evidenceID, NotBefore: now}}
}

// notification is the Notification of event e of ex.
func notification(ex *Exchange, e Event) Notification {
	n := Notification{Exchange: ex.ID, Event: e.Type, EvidenceID: e.EvidenceID, Time: e.Time, Recipient: ex.Recipient, Reference: ex.Manifest.Reference, Detail: e.Detail}
	switch e.Type {
	case evidence.Delivered:
		n.State = StateDelivered
	case evidence.Acknowledged:
		n.State = StateAcknowledged
		if e.Detail != "" {
			n.State = StateRefused
		}
	case evidence.DeliveryFailed:
		n.State = StateDeadLetter
	case evidence.Expired:
		n.State = StateExpired
	}
	return n
}

// notify does a JobNotify: the notification posted to the sender's
// notify_url as it is now. A failure is returned for the queue to retry,
// until DeadLetterAfter after the event: then the notification is
// dropped.
func (x *Exchanges) notify(ctx context.Context, job *Job) error {
	ex, err := x.store.Exchange(ctx, job.Exchange)
	if errors.Is(err, ErrExchangeNotFound) {
		return x.store.Done(ctx, job.ID)
	} else if err != nil {
		return err
	}
	var ev *Event
	for i := range ex.Events {
		if ex.Events[i].EvidenceID == job.Evidence {
			ev = &ex.Events[i]
		}
	}
	sender, ok := x.policy.Directory().Partner(ex.Sender)
	if ev == nil || !ok || sender.Disabled || sender.Channel.NotifyURL == "" {
		return x.store.Done(ctx, job.ID) // nothing to tell, or no one to tell it to now
	}
	n := notification(ex, *ev)
	nctx, cancel := context.WithTimeout(ctx, x.cfg.PushTimeout)
	err = x.webhook.notify(nctx, sender.Channel.NotifyURL, n)
	cancel()
	if err == nil {
		x.metrics.notifications.WithLabelValues("sent").Inc()
		x.log.InfoContext(ctx, "exchange: sender notified", "exchange_id", ex.ID, "partner", ex.Sender, "event", string(n.Event), "evidence_id", n.EvidenceID)
		return x.store.Done(ctx, job.ID)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if x.now().Sub(ev.Time) >= x.cfg.DeadLetterAfter {
		x.metrics.notifications.WithLabelValues("dropped").Inc()
		x.log.ErrorContext(ctx, "exchange: notification dropped, its endpoint kept failing", "exchange_id", ex.ID, "partner", ex.Sender, "event", string(n.Event), "evidence_id", n.EvidenceID, "attempts", job.Attempts+1, "err", err)
		return x.store.Done(ctx, job.ID)
	}
	x.metrics.notifications.WithLabelValues("failed").Inc()
	return err
}

// notify posts n to url: nil on a 2xx, else a *PushError.
func (w *webhookChannel) notify(ctx context.Context, url string, n Notification) error {
	if w.client == nil {
		return errNoWebhookClient
	}
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &PushError{Reason: "the notify_url: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", n.EvidenceID)
	req.Header.Set("PEC-Event", string(n.Event))
	resp, err := w.client.Do(req)
	if err != nil {
		return &PushError{Reason: transportReason(err)}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerReason+1))
	_, err = parseAnswer(resp.StatusCode, resp.Header, answer, time.Now())
	return err
}
