package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"pec/evidence"
	"pec/hsm"
)

// temporary reports whether err is a failure that passes by itself — the
// HSM's token is away, the evidence log's store is unreachable — which
// the edges answer with 503 and Retry-After (RFC 3161: systemFailure),
// not 500.
func temporary(err error) bool {
	return errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, evidence.ErrUnavailable)
}

// failureLog logs our own failures once, then at most once an interval
// with the number left out, so that an outage under load writes a few
// lines, not one a request (the packages below log the outage itself).
type failureLog struct {
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	last    time.Time
	dropped int
}

func newFailureLog(log *slog.Logger) *failureLog {
	return &failureLog{log: log, interval: 10 * time.Second}
}

// error logs msg with err, unless one was logged less than the interval
// ago.
func (f *failureLog) error(ctx context.Context, msg string, err error) {
	f.mu.Lock()
	now := time.Now()
	if !f.last.IsZero() && now.Sub(f.last) < f.interval {
		f.dropped++
		f.mu.Unlock()
		return
	}
	dropped := f.dropped
	f.last, f.dropped = now, 0
	f.mu.Unlock()
	if dropped > 0 {
		f.log.ErrorContext(ctx, msg, "err", err, "similar_failures_not_logged", dropped)
		return
	}
	f.log.ErrorContext(ctx, msg, "err", err)
}
