package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// session is one slot of the pool: a PKCS#11 session, opened on first use.
// Whoever took it from the pool's channel owns it, so its fields need no lock.
type session struct {
	h      pkcs11.SessionHandle
	epoch  uint64 // tokenState.epoch it was opened in
	modGen uint64 // module generation it was opened in
	open   bool
}

// pool is a buffered channel holding size session slots. Taking a slot is a
// channel receive, giving it back a send: no lock, and a caller waiting for a
// free session can give up with its context. Sessions are opened lazily, so
// an idle KeyStore holds only its anchor session.
type pool struct {
	ch chan *session
}

func newPool(size int) *pool {
	p := &pool{ch: make(chan *session, size)}
	for range size {
		p.ch <- new(session)
	}
	return p
}

func (p *pool) get(ctx context.Context) (*session, error) {
	select {
	case s, ok := <-p.ch:
		if !ok {
			return nil, errClosed
		}
		return s, nil
	default:
	}
	select {
	case s, ok := <-p.ch:
		if !ok {
			return nil, errClosed
		}
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("hsm: wait for a PKCS#11 session: %w", context.Cause(ctx))
	}
}

func (p *pool) put(s *session) { p.ch <- s }

// drain takes every slot back, waiting for the operations under way, and
// closes the channel: later gets fail with errClosed.
func (p *pool) drain() []*session {
	all := make([]*session, 0, cap(p.ch))
	for range cap(p.ch) {
		all = append(all, <-p.ch)
	}
	close(p.ch)
	return all
}

// fault is what a PKCS#11 error says about the state of the session, the
// login, the key handle, the token or the module; see the package doc.
type fault int

const (
	faultNone fault = iota
	faultSession
	faultLogin
	faultKey
	faultToken
	faultModule
)

func (f fault) String() string {
	return [...]string{"none", "session", "login", "key", "token", "module"}[f]
}

// errStale reports that the module was initialised again (by any KeyStore
// on it) since this KeyStore opened its sessions: their handles are void.
var errStale = errors.New("hsm: PKCS#11 module was re-initialised")

// keyGoneError reports that a key found on the token before is not found
// any more: the token (SoftHSM2's token directory, say) went away, or is
// coming back. SoftHSM2 sees a restored token only after C_Finalize and
// C_Initialize, so this is a module fault.
type keyGoneError struct{ label string }

func (e *keyGoneError) Error() string {
	return fmt.Sprintf("hsm: key %q, found on the token before, is not there any more", e.label)
}

func classify(err error) fault {
	if errors.Is(err, errStale) {
		return faultToken
	}
	if _, ok := errors.AsType[*keyGoneError](err); ok {
		return faultModule
	}
	rv, ok := errors.AsType[pkcs11.Error](err)
	if !ok {
		return faultNone
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_OPERATION_ACTIVE:
		return faultSession
	case pkcs11.CKR_USER_NOT_LOGGED_IN:
		return faultLogin
	case pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return faultKey
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return faultToken
	case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return faultModule
	}
	return faultNone
}

// view is the state an attempt ran against: a recovery compares it with the
// current state to know whether another caller recovered meanwhile.
type view struct{ epoch, modGen, logins uint64 }

// do runs fn on a pooled session, with the module's lock held for reading.
// If fn fails with a fault the package doc lists, do recovers and runs fn
// again. Retries are bounded: each recovery of a call must be more thorough
// than the one before (session, login, key, token, module), so a call
// recovers at most once from each kind and a fault that comes back after
// its recovery fails the call. One pulled and re-inserted token needs that
// cascade: the stale session fails first, then the login, lost with it.
// A call that fails with a fault, or while the token is unavailable, fails
// with an error that wraps ErrUnavailable. Every wait (for a session, for
// a recovery, for the module) ends with ctx.
//
// k, if not nil, is the key whose handle fn uses. fn must not keep the
// session: it goes back to the pool when fn returns.
func (s *tokenStore) do(ctx context.Context, k *Key, fn func(pkcs11.SessionHandle, *tokenState) error) error {
	last := faultNone
	for {
		seen, err := s.try(ctx, k, fn)
		if err == nil {
			return nil
		}
		f := classify(err)
		if f == faultNone {
			return err
		}
		if f <= last {
			return unavailable(err)
		}
		if rerr := s.recover(ctx, f, k, seen, err); rerr != nil {
			return unavailable(fmt.Errorf("%w; recovery from it failed: %w", err, rerr))
		}
		last = f
	}
}

// unavailable makes err, a fault that recovery did not repair, wrap
// ErrUnavailable.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func (s *tokenStore) try(ctx context.Context, k *Key, fn func(pkcs11.SessionHandle, *tokenState) error) (view, error) {
	if s.closed.Load() {
		return view{}, errClosed
	}
	// While the token is unavailable, calls fail at once: only the
	// recoverer's retries touch the module (no stampede, no log per call).
	if o := s.rec.down.Load(); o != nil {
		return view{}, o.err
	}
	if k != nil {
		if k.destroyed.Load() {
			return view{}, destroyedError(k.label)
		}
		if o := k.gone.Load(); o != nil {
			return view{}, o.err
		}
	}
	sess, err := s.pool.get(ctx)
	if err != nil {
		return view{}, err
	}
	defer s.pool.put(sess)
	if err := s.mod.rlock(ctx); err != nil {
		return view{}, err
	}
	s.met.sessionsInUse.Inc()
	seen, err := s.run(sess, fn)
	s.met.sessionsInUse.Dec()
	s.mod.runlock()
	return seen, err
}

// run is try's critical section; the caller holds mod.mu for reading.
func (s *tokenStore) run(sess *session, fn func(pkcs11.SessionHandle, *tokenState) error) (view, error) {
	st := s.state.Load()
	seen := view{epoch: st.epoch, modGen: s.mod.gen, logins: s.logins.Load()}
	if st.modGen != s.mod.gen {
		return seen, errStale
	}
	if sess.open && sess.epoch != st.epoch {
		// Abandoned, not closed: the token's removal or the module's
		// re-initialisation closed it, and its handle may since name a
		// live session that closing would break.
		sess.open = false
	}
	if !sess.open {
		// Read-only: operations never modify the token, and a bug can't
		// either; GenerateKey opens a read/write session of its own.
		h, err := s.p.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return seen, err
		}
		// A new session shares the anchor's login, unless the login was
		// lost with a pulled token: then private keys would look absent
		// (ErrKeyNotFound) instead of calling for a recovery.
		if info, err := s.p.GetSessionInfo(h); err != nil || info.State == pkcs11.CKS_RO_PUBLIC_SESSION {
			_ = s.p.CloseSession(h)
			if err == nil {
				err = pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
			}
			return seen, err
		}
		*sess = session{h: h, epoch: st.epoch, modGen: s.mod.gen, open: true}
	}
	err := fn(sess.h, st)
	if err != nil && classify(err) == faultSession {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_OPERATION_ACTIVE)) {
			// The session lives, stuck in an operation: closing it is the
			// only way to end that operation.
			_ = s.p.CloseSession(sess.h)
		}
		sess.open = false
	}
	return seen, err
}

// recover repairs what fault f broke. k, if not nil, is the key in use.
func (s *tokenStore) recover(ctx context.Context, f fault, k *Key, seen view, cause error) error {
	switch f {
	case faultSession:
		return s.checkAnchor(ctx, k, seen, cause)
	case faultKey:
		if k == nil {
			return nil // no cached handle to blame: the retry finds again
		}
		k.h.Store(nil)
	case faultLogin:
		return s.relogin(ctx, k, seen, cause)
	default:
		return s.awaitReset(ctx, f, k, seen, cause)
	}
	s.recovered(f, k, cause)
	return nil
}

// checkAnchor follows a session fault. run dropped the session, and the
// retry opens another; but when the token was pulled and put back, every
// session is stale and the login is gone. The anchor session tells: if it
// is gone too the token is reset at once, rather than each pooled session
// failing in turn; if it lives but has lost the login, log in again.
func (s *tokenStore) checkAnchor(ctx context.Context, k *Key, seen view, cause error) error {
	if err := s.mod.rlock(ctx); err != nil {
		return err
	}
	st := s.state.Load()
	err := errStale
	var info pkcs11.SessionInfo
	if st.modGen == s.mod.gen {
		info, err = s.p.GetSessionInfo(st.anchor)
	}
	s.mod.runlock()
	switch {
	case st.epoch != seen.epoch:
		return nil // reset meanwhile
	case err != nil && classify(err) != faultNone:
		return s.awaitReset(ctx, max(faultToken, classify(err)), k, seen, cause)
	case err == nil && info.State == pkcs11.CKS_RO_PUBLIC_SESSION:
		return s.relogin(ctx, k, seen, cause)
	}
	s.recovered(faultSession, k, cause)
	return nil
}

// relogin logs in again after CKR_USER_NOT_LOGGED_IN. Of the callers that
// saw the fault, the first logs in and the others find it done.
func (s *tokenStore) relogin(ctx context.Context, k *Key, seen view, cause error) error {
	if err := s.lockRepair(ctx); err != nil {
		return err
	}
	if s.logins.Load() != seen.logins || s.state.Load().epoch != seen.epoch {
		s.unlockRepair()
		return nil
	}
	if err := s.mod.rlock(ctx); err != nil {
		s.unlockRepair()
		return err
	}
	st := s.state.Load()
	err := errStale
	if st.modGen == s.mod.gen {
		_, err = login(s.p, st.anchor, s.pin)
	}
	s.mod.runlock()
	if err == nil {
		s.logins.Add(1)
		s.unlockRepair()
		s.recovered(faultLogin, k, cause)
		return nil
	}
	s.unlockRepair()
	if classify(err) != faultNone {
		// The anchor session, or more, is gone with the login: start
		// again from the token (or the module).
		return s.awaitReset(ctx, max(faultToken, classify(err)), k, seen, cause)
	}
	return loginError(s.sel, err)
}

// recovered counts and logs one recovery: once per fault, by whoever
// repaired it, never per retry.
func (s *tokenStore) recovered(f fault, k *Key, cause error) {
	s.met.recoveries.WithLabelValues(f.String()).Inc()
	label := ""
	if k != nil {
		label = k.label
	}
	s.log.Warn("hsm: recovered from a PKCS#11 fault", "recovery", f.String(), "key_label", label, "err", cause)
}
