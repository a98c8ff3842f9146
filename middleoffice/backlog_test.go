package middleoffice_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/middleoffice"
)

// TestBacklogBound: with the queue stopped (a stalled delivery), the
// submissions past exchange.max_backlog are refused with a *BacklogError
// before anything is read or recorded; the bound holds across a
// restart; once the queue runs, every acknowledged exchange is delivered
// and submissions are taken again.
func TestBacklogBound(t *testing.T) {
	const bound = 3
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{Workers: 2, PollInterval: 20 * time.Millisecond, MaxBacklog: bound})
	appends := &countingAppender{}
	e.wrap = func(s middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
		appends.Appender = ev
		return s, appends
	}
	e.restart()
	ctx := t.Context()
	a := e.partners["a"].principal
	submit := func(i int) (*middleoffice.Submission, error) {
		doc := newDocument("d.pdf", []byte("%PDF dossier "+strconv.Itoa(i)))
		return e.x.Submit(ctx, a, manifest("b", doc), sources(doc))
	}
	var accepted []string
	for i := range bound {
		s, err := submit(i)
		if err != nil {
			t.Fatalf("submission %d under the bound: %v", i, err)
		}
		accepted = append(accepted, s.Exchange)
	}
	if n := appends.n.Load(); n != bound {
		t.Fatalf("%d records for %d submissions", n, bound)
	}
	refused := func(when string) {
		t.Helper()
		read := false
		doc := newDocument("d.pdf", []byte("%PDF refused"))
		src := middleoffice.DocumentSourceFunc(func(ctx context.Context, i int, d middleoffice.Document) (r io.Reader, err error) {
			read = true
			return sources(doc).Document(ctx, i, d)
		})
		_, err := e.x.Submit(ctx, a, manifest("b", doc), src)
		be, ok := errors.AsType[*middleoffice.BacklogError](err)
		if !ok || be.Backlog < bound || be.Max != bound || be.RetryAfter <= 0 {
			t.Fatalf("submission %s: %v (%#v), want a *BacklogError at %d", when, err, be, bound)
		}
		if read {
			t.Errorf("submission %s: its documents were read", when)
		}
	}
	refused("at the bound")
	if n := appends.n.Load(); n != bound {
		t.Errorf("the refusal was recorded: %d records for %d submissions", n, bound)
	}
	e.restart()
	refused("at the bound, after a restart")

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.x.Run(runCtx) }()
	defer func() { stop(); <-done }()
	waitInbox(t, e, len(accepted))
	s, err := submit(bound)
	if err != nil {
		t.Fatalf("submission once the queue caught up: %v", err)
	}
	accepted = append(accepted, s.Exchange)
	waitInbox(t, e, len(accepted))
	for _, id := range accepted {
		if ex, err := e.x.Status(ctx, a, id); err != nil || ex.State != middleoffice.StateDelivered {
			t.Errorf("exchange %s: %v, %v; want delivered", id, ex, err)
		}
	}
}

// TestBacklogUnbounded: a negative max_backlog takes every submission.
func TestBacklogUnbounded(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{MaxBacklog: -1})
	a := e.partners["a"].principal
	for i := range 5 {
		doc := newDocument("d.pdf", []byte("%PDF "+strconv.Itoa(i)))
		if _, err := e.x.Submit(t.Context(), a, manifest("b", doc), sources(doc)); err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
	}
}

// waitInbox waits for b's inbox to hold n exchanges.
func waitInbox(t *testing.T, e *exchangeEnv, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := e.x.Inbox(t.Context(), e.partners["b"].principal, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d exchanges in the inbox, want %d", len(list), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingAppender counts the records appended through it.
type countingAppender struct {
	evidence.Appender
	n atomic.Int64
}

func (c *countingAppender) Append(ctx context.Context, recs ...*evidence.Record) ([]string, error) {
	c.n.Add(int64(len(recs)))
	return c.Appender.Append(ctx, recs...)
}

// TestBacklogSoftWait: past half the bound, a submission waits for a
// delivery (250 ms at most, then it is taken); a delivery lets one go at
// once; a client that goes away while it waits gets its context's error,
// and nothing is recorded.
func TestBacklogSoftWait(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{Workers: 1, PollInterval: 20 * time.Millisecond, MaxBacklog: 4})
	ctx := t.Context()
	a := e.partners["a"].principal
	submit := func(ctx context.Context, i int) (time.Duration, error) {
		doc := newDocument("d.pdf", []byte("%PDF soft "+strconv.Itoa(i)))
		start := time.Now()
		_, err := e.x.Submit(ctx, a, manifest("b", doc), sources(doc))
		return time.Since(start), err
	}
	for i := range 2 {
		if d, err := submit(ctx, i); err != nil || d > 200*time.Millisecond {
			t.Fatalf("submission %d under half the bound: %v after %v", i, err, d)
		}
	}
	// 2 wait: half the bound. No queue runs: the wait ends by its bound.
	if d, err := submit(ctx, 2); err != nil || d < 240*time.Millisecond {
		t.Fatalf("submission past half the bound, no delivery: %v after %v; want taken after 250 ms", err, d)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := submit(cctx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a client gone while it waits: %v", err)
	}
	// The queue delivers: each delivery lets a waiting submission go.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.x.Run(runCtx) }()
	defer func() { stop(); <-done }()
	waitInbox(t, e, 3)
	for i := 4; i < 8; i++ {
		if d, err := submit(ctx, i); err != nil || d > 240*time.Millisecond {
			t.Errorf("submission %d with the queue running: %v after %v", i, err, d)
		}
	}
	waitInbox(t, e, 7)
}
