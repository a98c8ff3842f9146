package middleoffice

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The delivery backlog: the accepted exchanges waiting for their first
// seal and delivery. A node that acknowledges faster than its queue
// delivers (at 128 clients the HTTP handlers take most of the CPU) would
// let it grow without bound, and with it the delay between a receipt and
// the recipient's inbox; so Submit refuses new submissions once
// ExchangeConfig.MaxBacklog exchanges wait (overload answered with 503
// and Retry-After, not an unbounded queue). The refusal comes before the
// dossier is read, encrypted or recorded: it costs the node nearly
// nothing, and the queue workers get the CPU back to catch up.

// DefaultMaxBacklog is ExchangeConfig.MaxBacklog's default: about 2 s of
// delivery of 10 KiB dossiers on a 2-core node (1,855/s in a 30 s step at
// 128 clients), 8 s at the rate of a node whose queue lagged (488/s);
// below the at-rest cache of data keys (maxHeldKeys), so that a delivery
// finds its exchange's key in memory.
const DefaultMaxBacklog = 4000

// backlogRetryAfter is the Retry-After of a refusal for the backlog.
const backlogRetryAfter = time.Second

// BacklogStore is an ExchangeStore that counts its delivery backlog.
// Both stores of this package implement it; with a store that does not,
// submissions are not bounded.
type BacklogStore interface {
	// Backlog returns the number of process jobs never attempted: the
	// accepted exchanges not yet sealed and delivered (an exchange whose
	// push failed waits for its recipient and does not count). The count
	// may be some 100 ms old.
	Backlog(ctx context.Context) (int, error)
}

var (
	_ BacklogStore = (*BoltExchangeStore)(nil)
	_ BacklogStore = (*PGExchangeStore)(nil)
	_ BacklogStore = (*AtRest)(nil)
)

// BacklogError is a submission refused because the delivery backlog is
// at its bound: nothing was read, recorded or acknowledged; the sender
// tries again after RetryAfter.
type BacklogError struct {
	Backlog, Max int
	RetryAfter   time.Duration
}

func (e *BacklogError) Error() string {
	return fmt.Sprintf("middleoffice: %d accepted exchanges wait for delivery (exchange.max_backlog: %d): try again later", e.Backlog, e.Max)
}

// admit refuses a submission while the backlog is at its bound. Past
// half of it, a submission first waits (backlogWait at most) for the
// queue to deliver one exchange: the submissions are then taken at the
// rate the queue delivers, their handlers leave the CPU to the queue
// workers meanwhile, and the backlog stays below the bound — rather than
// reaching it, where every client waits a whole Retry-After second and
// the node runs below its capacity (1.26 of 2 cores in a 30 s step at
// 128 clients). A store that cannot count (an error) does not refuse: the
// submission meets the store's failure, if it lasts, where it writes.
func (x *Exchanges) admit(ctx context.Context) error {
	if x.cfg.MaxBacklog < 0 {
		return nil
	}
	bs, ok := x.store.(BacklogStore)
	if !ok {
		return nil
	}
	n, err := bs.Backlog(ctx)
	if err != nil {
		return nil
	}
	if n >= x.cfg.MaxBacklog/2 && n < x.cfg.MaxBacklog {
		t := time.NewTimer(backlogWait)
		select {
		case <-x.freed:
		case <-t.C: // delivered by another node, or not yet: taken all the same
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
		if n, err = bs.Backlog(ctx); err != nil {
			return nil
		}
	}
	if n >= x.cfg.MaxBacklog {
		return &BacklogError{Backlog: n, Max: x.cfg.MaxBacklog, RetryAfter: backlogRetryAfter}
	}
	return nil
}

// backlogWait bounds the wait of a submission past half the bound.
const backlogWait = 250 * time.Millisecond

// freedTokens bounds the tokens of deliveries nobody waited for: a burst
// of submissions after a calm passes that many at once.
const freedTokens = 64

// delivered1 gives a token to one submission waiting in admit.
func (x *Exchanges) delivered1() {
	select {
	case x.freed <- struct{}{}:
	default:
	}
}

// backlogCount caches a count that costs a query (PostgreSQL's), read
// again at most every backlogEvery, by one caller at a time: the others
// take the last value meanwhile.
type backlogCount struct {
	mu      sync.Mutex
	at      time.Time
	n       int
	loading bool
}

const backlogEvery = 100 * time.Millisecond

func (c *backlogCount) get(ctx context.Context, load func(context.Context) (int, error)) (int, error) {
	c.mu.Lock()
	if c.loading || time.Since(c.at) < backlogEvery {
		n := c.n
		c.mu.Unlock()
		return n, nil
	}
	c.loading = true
	c.mu.Unlock()
	n, err := load(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loading = false
	if err != nil {
		return c.n, err
	}
	c.n, c.at = n, time.Now()
	return n, nil
}

// Backlog implements BacklogStore (a count of the jobs table, cached for
// backlogEvery).
func (s *PGExchangeStore) Backlog(ctx context.Context) (int, error) {
	return s.backlog.get(ctx, func(ctx context.Context) (int, error) {
		ctx, cancel := pgOpContext(ctx)
		defer cancel()
		var n int
		err := s.pool.QueryRow(ctx, "SELECT count(*) FROM exchange_jobs WHERE kind = $1 AND attempts = 0", JobProcess).Scan(&n)
		return n, storeError("backlog", err)
	})
}

// errNoBacklog: the store under an AtRest does not count its backlog.
var errNoBacklog = errors.New("middleoffice: the exchange store does not count its backlog")

// Backlog implements BacklogStore: the backlog of the store it encrypts
// for (errNoBacklog when that one does not count it: no bound).
func (a *AtRest) Backlog(ctx context.Context) (int, error) {
	if bs, ok := a.inner.(BacklogStore); ok {
		return bs.Backlog(ctx)
	}
	return 0, errNoBacklog
}
