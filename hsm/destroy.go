package hsm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/miekg/pkcs11"
)

// destroyedError is what a key handed out fails with once destroyed.
func destroyedError(label string) error {
	return fmt.Errorf("%w: %q was destroyed", ErrKeyNotFound, label)
}

// DestroyKey implements KeyStore: both halves of the key pair, in a
// read/write session (token objects cannot be destroyed in a read-only
// one: CKR_SESSION_READ_ONLY).
func (s *tokenStore) DestroyKey(ctx context.Context, label string) error {
	if s.closed.Load() {
		return errClosed
	}
	// Against a GenerateKey of the same label under way.
	s.genMu.Lock()
	defer s.genMu.Unlock()
	destroyed := false // by an attempt that a fault cut short afterwards (CloseSession)
	err := s.do(ctx, nil, func(sh pkcs11.SessionHandle, st *tokenState) error {
		priv, pub, err := findKeyPair(s.p, sh, label, nil)
		if errors.Is(err, ErrKeyNotFound) {
			if destroyed {
				return nil
			}
			// As in key: a token that is going finds nothing either.
			if _, terr := s.p.GetTokenInfo(st.slot); classify(terr) != faultNone {
				return fmt.Errorf("hsm: read the token's information: %w", terr)
			}
		}
		if err != nil {
			return err
		}
		rw, err := s.p.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer s.p.CloseSession(rw)
		s.wrote.Store(true) // before and after: a lookup meanwhile may take it
		err = s.p.DestroyObject(rw, priv)
		s.wrote.Store(true)
		if err != nil {
			return err
		}
		destroyed = true
		s.destroyCopy(label, st)
		if pub != 0 {
			// The public half reveals nothing: a failure is only logged,
			// and the destruction not tried again for it.
			if err := s.p.DestroyObject(rw, pub); err != nil {
				s.log.WarnContext(ctx, "hsm: destroy key: the public key object is left", "key_label", label, "err", err)
			}
		}
		return nil
	})
	if destroyed {
		// The private key is gone whatever became of the public half.
		s.forget(label)
	}
	if errors.Is(err, ErrKeyNotFound) {
		return fmt.Errorf("%w: %q", ErrKeyNotFound, label)
	}
	if err != nil {
		return fmt.Errorf("hsm: destroy key %q: %w", label, err)
	}
	s.log.Info("hsm: key destroyed", "key_label", label)
	return nil
}

// forget marks the key handed out for label destroyed and drops it from
// the keys that recoveries find again.
func (s *tokenStore) forget(label string) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if k := s.keys[label]; k != nil {
		k.destroyed.Store(true)
		delete(s.keys, label)
	}
}

// DestroyKey implements KeyStore: the key file is overwritten with zeros,
// synced and removed, and its directory synced.
func (s *softStore) DestroyKey(ctx context.Context, label string) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := validLabel(label); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.path(label)
	if err := overwrite(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrKeyNotFound, label)
		}
		return fmt.Errorf("hsm: destroy key %q: %w", label, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("hsm: destroy key %q: %w", label, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if k := s.keys[label]; k != nil {
		k.destroyed.Store(true)
		delete(s.keys, label)
	}
	s.log.Info("hsm: key destroyed", "key_label", label)
	return nil
}

// overwrite writes zeros over the file at path, in place, and syncs it.
func overwrite(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, fi.Size()), 0); err != nil {
		return err
	}
	return f.Sync()
}

// destroyCopy destroys the session copy of the key handed out for label,
// if it has one in the token's current epoch: the token object gone, no
// copy of it may sign on. The key is marked destroyed right after, so no
// new copy is made. The caller holds the module's lock for reading.
func (s *tokenStore) destroyCopy(label string, st *tokenState) {
	s.keysMu.Lock()
	k := s.keys[label]
	s.keysMu.Unlock()
	if k == nil {
		return
	}
	k.destroyed.Store(true) // no copy made from now on
	if h := k.h.Load(); h != nil && h.epoch == st.epoch && h.copy != 0 {
		if err := s.p.DestroyObject(st.anchor, h.copy); err != nil && classify(err) == faultNone {
			s.log.Warn("hsm: destroy key: its session copy is left until the session closes", "key_label", label, "err", err)
		}
		k.h.Store(&keyHandle{epoch: h.epoch, obj: h.obj})
	}
}
