package hsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Retries while the token is unavailable: the first soon (a token put back
// at once), then doubling up to retryMax, so that a token put back is in
// use again within retryMax plus one attempt. Variables for the tests.
var (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

// Readiness probes the token at most once per probeInterval (a load
// balancer polls /readyz every few seconds, several may), each probe bounded
// by probeTimeout.
const (
	probeInterval = time.Second
	probeTimeout  = 2 * time.Second
)

// recoverer is the part of a tokenStore that recovers the token and the
// module. One attempt runs at a time, in a goroutine of its own, so that
// every caller waiting for it can give up with its context; callers that
// meet the same fault wait for that attempt rather than starting another.
// If the attempt fails the token is unavailable (down): calls fail at once
// with ErrUnavailable, and a retry loop, the only one to touch the module
// meanwhile, tries again with backoff until the token is back.
type recoverer struct {
	life   context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the attempts and the retry loop

	mu       sync.Mutex
	attempt  *attempt // under way, or nil
	retrying bool     // the retry loop runs
	pending  fault    // the most thorough fault that the retries must recover from
	down     atomic.Pointer[outage]

	probeMu  sync.Mutex
	probedAt time.Time // guarded by probeMu; of the last probe that found the token

	available prometheus.Gauge
}

// attempt is one recovery: its waiters read err once done is closed.
type attempt struct {
	done  chan struct{}
	err   error
	fault fault // what it recovers from
	key   *Key  // the key in use when the fault came, for the log
	cause error
}

// outage is a token, or a key, that is unavailable; err wraps
// ErrUnavailable and says since when and why.
type outage struct {
	since time.Time
	err   error
}

func (r *recoverer) init(token string, met *metrics) {
	r.life, r.cancel = context.WithCancel(context.Background())
	r.available = met.available.WithLabelValues(token)
}

// opened marks the metric of a key store that opened: available.
func (r *recoverer) opened() { r.available.Set(1) }

// stop ends the retries and waits for the recovery under way. The caller
// has marked the key store closed: the lock orders stop after any
// awaitReset that did not see it, so none starts an attempt after Wait.
func (r *recoverer) stop() {
	r.mu.Lock()
	r.mu.Unlock() //nolint:staticcheck // an empty critical section, on purpose
	r.cancel()
	r.wg.Wait()
}

// closed marks the metric of a closed key store: not available.
func (r *recoverer) closed() { r.available.Set(0) }

// awaitReset recovers from fault f (faultToken or faultModule), seen by a
// caller in view seen: it starts an attempt, or joins the one under way,
// and waits for it with ctx. While the token is down it fails at once.
func (s *tokenStore) awaitReset(ctx context.Context, f fault, k *Key, seen view, cause error) error {
	r := &s.rec
	r.mu.Lock()
	if s.state.Load().epoch != seen.epoch {
		r.mu.Unlock()
		return nil // recovered meanwhile
	}
	if o := r.down.Load(); o != nil {
		r.mu.Unlock()
		return o.err
	}
	a := r.attempt
	if a == nil {
		if s.closed.Load() {
			r.mu.Unlock()
			return errClosed
		}
		a = &attempt{done: make(chan struct{}), fault: f, key: k, cause: cause}
		r.attempt = a
		r.wg.Go(func() { s.runAttempt(a, seen) })
	}
	r.mu.Unlock()
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return fmt.Errorf("hsm: wait for the recovery of %s: %w", s.sel, context.Cause(ctx))
	}
}

// runAttempt runs attempt a, records its outcome and wakes its waiters.
// An attempt is bounded by Config.Wait: a call that never returns (a hung
// module) keeps the re-initialisation from draining the calls under way,
// and the token is then unavailable until it does return.
func (s *tokenStore) runAttempt(a *attempt, seen view) {
	ctx, cancel := context.WithTimeout(s.rec.life, s.wait)
	kind, missing, err := s.reset(ctx, a.fault, seen)
	cancel()
	r := &s.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempt = nil
	switch {
	case s.closed.Load():
		a.err = errClosed
		close(a.done)
		return
	case err != nil:
		a.err = s.markDown(err)
		r.pending = max(r.pending, a.fault)
	case kind == faultNone:
		// Another recovery came first and recorded its outcome.
	default:
		r.pending = faultNone
		if !s.markUp(kind) {
			s.recovered(kind, a.key, a.cause)
		}
		s.markKeys(missing)
	}
	if err != nil || len(missing) > 0 {
		s.startRetries()
	}
	close(a.done)
}

// startRetries starts the retry loop unless it runs. The caller holds
// rec.mu.
func (s *tokenStore) startRetries() {
	r := &s.rec
	if r.retrying || s.closed.Load() {
		return
	}
	r.retrying = true
	r.wg.Go(s.retry)
}

// retry tries again, with backoff, until the token and every key handed
// out are back, or the key store closes.
func (s *tokenStore) retry() {
	r := &s.rec
	wait := retryMin
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-r.life.Done():
			return
		}
		wait = min(2*wait, retryMax)
		timer.Reset(wait)
		r.mu.Lock()
		if r.down.Load() == nil && !s.keysGone() {
			r.retrying = false
			r.mu.Unlock()
			return
		}
		if a := r.attempt; a != nil {
			r.mu.Unlock()
			select {
			case <-a.done:
			case <-r.life.Done():
				return
			}
			continue
		}
		// At least a token recovery, which re-initialises the module if
		// the token or a key is not found without; a module fault (a
		// device error) calls for the re-initialisation in any case.
		a := &attempt{done: make(chan struct{}), fault: max(faultToken, r.pending)}
		r.attempt = a
		r.mu.Unlock()
		// forceReinit: whatever the generation, the module is
		// re-initialised if the cheap attempt does not find everything.
		s.runAttempt(a, view{epoch: s.state.Load().epoch, modGen: forceReinit})
	}
}

// forceReinit as a view's module generation tells reset to re-initialise
// the module whatever its generation, if it must.
const forceReinit = ^uint64(0)

// reset finds the token again, after re-initialising the module if f is
// faultModule or if the token, or one of the keys handed out, is not found
// without it. It opens a new anchor session, logs in, finds the keys again
// and publishes the new state: pool sessions and key handles of the old
// epoch are replaced on their next use. It returns the kind of recovery
// made (faultNone: another one did it since seen) and the keys still
// missing.
func (s *tokenStore) reset(ctx context.Context, f fault, seen view) (kind fault, missing []*Key, err error) {
	if err := s.lockRepair(ctx); err != nil {
		return f, nil, err
	}
	defer s.unlockRepair()
	if s.closed.Load() {
		return f, nil, errClosed
	}
	if s.state.Load().epoch != seen.epoch {
		return faultNone, nil, nil // recovered meanwhile
	}
	epoch := seen.epoch + 1
	gen, initialized, err := s.mod.generation(ctx)
	if err != nil {
		return f, nil, err
	}
	if seen.modGen == forceReinit {
		seen.modGen = gen // re-initialise whoever did last
	}
	if f < faultModule && initialized {
		st, found, missing, err := s.reconnect(ctx, epoch)
		if err == nil && len(missing) == 0 {
			s.publish(st, found)
			return f, nil, nil
		}
		if err == nil {
			s.closeAnchor(ctx, st)
		}
		// Not found again without the module's re-initialisation: SoftHSM2
		// reads its token directory in C_Initialize only.
		seen.modGen = gen
	}
	did, err := s.mod.reinitialize(ctx, seen.modGen)
	if did {
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.met.reinits.WithLabelValues(result).Inc()
	}
	if err != nil {
		return faultModule, nil, err
	}
	st, found, missing, err := s.reconnect(ctx, epoch)
	if err != nil {
		return faultModule, nil, err
	}
	s.publish(st, found)
	return faultModule, missing, nil
}

// reconnect connects to the token and finds every key handed out again, on
// the new anchor session. found has their new handles; missing, the keys
// that are not there.
func (s *tokenStore) reconnect(ctx context.Context, epoch uint64) (st *tokenState, found map[*Key]*keyHandle, missing []*Key, err error) {
	if err := s.mod.rlock(ctx); err != nil {
		return nil, nil, nil, err
	}
	defer s.mod.runlock()
	st, err = s.connect(epoch)
	if err != nil {
		return nil, nil, nil, err
	}
	found = make(map[*Key]*keyHandle)
	for _, k := range s.handedOut() {
		obj, err := findPrivateKey(s.p, st.anchor, k.label, k.id)
		switch {
		case errors.Is(err, ErrKeyNotFound):
			missing = append(missing, k)
		case err != nil:
			_ = s.p.CloseSession(st.anchor)
			return nil, nil, nil, fmt.Errorf("hsm: find key %q again: %w", k.label, err)
		default:
			found[k] = &keyHandle{epoch: epoch, obj: obj}
		}
	}
	return st, found, missing, nil
}

// closeAnchor closes the anchor session of a state that is not published.
func (s *tokenStore) closeAnchor(ctx context.Context, st *tokenState) {
	if s.mod.rlock(ctx) != nil {
		return
	}
	if st.modGen == s.mod.gen {
		_ = s.p.CloseSession(st.anchor)
	}
	s.mod.runlock()
}

// publish makes st the token state, with the handles of the keys found.
// The caller holds s.repair.
func (s *tokenStore) publish(st *tokenState, found map[*Key]*keyHandle) {
	for k, h := range found {
		k.h.Store(h)
	}
	s.state.Store(st)
}

func (s *tokenStore) handedOut() []*Key {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	keys := make([]*Key, 0, len(s.keys))
	for _, k := range s.keys {
		keys = append(keys, k)
	}
	return keys
}

// markDown records that the token is unavailable because of cause, and
// returns the error calls fail with. Only the change from up to down is
// logged. The caller holds rec.mu.
func (s *tokenStore) markDown(cause error) error {
	r := &s.rec
	since := time.Now()
	if o := r.down.Load(); o != nil {
		since = o.since
	} else {
		s.log.Error("hsm: token unavailable; calls fail with hsm.ErrUnavailable until it is back, retried in the background", "err", cause)
		r.available.Set(0)
	}
	o := &outage{since: since, err: fmt.Errorf("%w: %s, since %s: %w", ErrUnavailable, s.sel, since.UTC().Format(time.RFC3339), cause)}
	r.down.Store(o)
	return o.err
}

// markUp records that the token is available after a recovery of kind, and
// tells whether it was down. The caller holds rec.mu.
func (s *tokenStore) markUp(kind fault) bool {
	r := &s.rec
	o := r.down.Swap(nil)
	if o == nil {
		return false
	}
	s.met.recoveries.WithLabelValues(kind.String()).Inc()
	r.available.Set(1)
	s.log.Warn("hsm: token available again", "recovery", kind.String(), "down_for", time.Since(o.since).Round(time.Millisecond).String())
	return true
}

// markKeys records which keys handed out are missing from a token that is
// otherwise back, logging each change. The caller holds rec.mu.
func (s *tokenStore) markKeys(missing []*Key) {
	for _, k := range s.handedOut() {
		gone := slices.Contains(missing, k)
		o := k.gone.Load()
		switch {
		case gone && o == nil:
			since := time.Now()
			k.gone.Store(&outage{since: since, err: fmt.Errorf("%w: key %q is not on %s, since %s",
				ErrUnavailable, k.label, s.sel, since.UTC().Format(time.RFC3339))})
			s.log.Error("hsm: key unavailable: not on the token; retried in the background", "key_label", k.label)
		case !gone && o != nil:
			k.gone.Store(nil)
			s.log.Warn("hsm: key available again", "key_label", k.label, "down_for", time.Since(o.since).Round(time.Millisecond).String())
		}
	}
}

func (s *tokenStore) keysGone() bool {
	return slices.ContainsFunc(s.handedOut(), func(k *Key) bool { return k.gone.Load() != nil })
}

// Ready reports whether the token and every key handed out are available:
// an error wrapping ErrUnavailable, naming the token or the keys, if not.
// It asks the token itself at most once a second, so that a token gone
// while no call uses it shows too; the probe starts the recovery.
func (s *tokenStore) Ready() error {
	if s.closed.Load() {
		return errClosed
	}
	if err := s.unavailable(); err != nil {
		return err
	}
	r := &s.rec
	r.probeMu.Lock()
	defer r.probeMu.Unlock()
	if time.Since(r.probedAt) < probeInterval {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if err := s.probe(ctx); err != nil {
		// Not cached: the recovery it started has marked the token
		// unavailable, which the next call reports without a probe.
		return err
	}
	r.probedAt = time.Now()
	return s.unavailable()
}

// unavailable returns the outage of the token or of its keys, if any.
func (s *tokenStore) unavailable() error {
	if o := s.rec.down.Load(); o != nil {
		return o.err
	}
	var labels []string
	var since time.Time
	for _, k := range s.handedOut() {
		if o := k.gone.Load(); o != nil {
			labels = append(labels, fmt.Sprintf("%q", k.label))
			if since.IsZero() || o.since.Before(since) {
				since = o.since
			}
		}
	}
	if len(labels) == 0 {
		return nil
	}
	slices.Sort(labels)
	return fmt.Errorf("%w: keys %s are not on %s, since %s", ErrUnavailable, strings.Join(labels, ", "), s.sel, since.UTC().Format(time.RFC3339))
}

// probe asks the token for its information: SoftHSM2 answers
// CKR_GENERAL_ERROR once its token directory is gone or unreadable.
func (s *tokenStore) probe(ctx context.Context) error {
	if err := s.mod.rlock(ctx); err != nil {
		return unavailable(err)
	}
	st := s.state.Load()
	seen := view{epoch: st.epoch, modGen: s.mod.gen, logins: s.logins.Load()}
	err := errStale
	if st.modGen == s.mod.gen {
		_, err = s.p.GetTokenInfo(st.slot)
	}
	s.mod.runlock()
	if err == nil {
		return nil
	}
	if rerr := s.awaitReset(ctx, max(faultToken, classify(err)), nil, seen, err); rerr != nil {
		return unavailable(rerr)
	}
	return nil
}
