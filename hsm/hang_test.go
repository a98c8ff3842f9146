package hsm_test

import (
	"context"
	"crypto"
	"errors"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// hung opens a token through the fault injector with sessions sessions and
// hsm.wait = wait, and leaves one Sign hanging in the module until the
// returned release is called (at the latest at the end of the test).
func hung(t *testing.T, sessions int, wait time.Duration) (hsm.KeyStore, *hsm.Faults, crypto.Signer, <-chan error, func()) {
	t.Helper()
	cfg := softhsmtest.NewToken(t, "hang")
	cfg.Sessions, cfg.Wait = sessions, wait
	faults := new(hsm.Faults)
	ks, err := hsm.OpenWithFaults(t.Context(), cfg, hsm.Options{}, faults)
	mustDo(t, err)
	t.Cleanup(func() { ks.Close() })
	signer, err := ks.GenerateKey(t.Context(), "hang", hsm.ECP256)
	mustDo(t, err)
	mustSign(t, signer)
	entered, release := faults.Hold("Sign")
	t.Cleanup(release) // before Close, which waits for it
	done := make(chan error, 1)
	go func() {
		_, err := signer.Sign(nil, digest(crypto.SHA256, "hangs"), crypto.SHA256)
		done <- err
	}()
	<-entered
	return ks, faults, signer, done, release
}

// within runs f and fails the test if it takes longer than d.
func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	start := time.Now()
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		t.Logf("%s: %v after %v", what, err, time.Since(start).Round(time.Millisecond))
		return err
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %v", what, d)
		return nil
	}
}

func signErr(s crypto.Signer) error {
	_, err := s.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256)
	return err
}

// TestHungModuleSessionWait: with the only session stuck in a call that
// does not return, other callers stop waiting when their context ends,
// or, for Sign, which has none, after hsm.wait, with ErrUnavailable.
func TestHungModuleSessionWait(t *testing.T) {
	t.Parallel()
	ks, _, signer, done, release := hung(t, 1, 200*time.Millisecond)
	err := within(t, 2*time.Second, "Sign", func() error { return signErr(signer) })
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign with the only session hung: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	err = within(t, 2*time.Second, "SignContext", func() error {
		_, err := signer.(*hsm.Key).SignContext(ctx, digest(crypto.SHA256, "x"), crypto.SHA256)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("SignContext, cancelled: %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err = within(t, 2*time.Second, "Signer", func() error { _, err := ks.Signer(ctx, "other"); return err })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Signer with the only session hung: %v, want context.DeadlineExceeded", err)
	}
	release()
	mustDo(t, <-done)
	mustSign(t, signer)
}

// TestHungModuleRecovery: a module fault while a call hangs in the module
// cannot re-initialise it (C_Finalize must wait for the calls under way).
// Neither the caller that met the fault nor those that come after block
// beyond hsm.wait; the token is unavailable meanwhile, and once the call
// returns the retries re-initialise the module and signatures succeed.
//
// Not parallel: it re-initialises the module that every test shares.
func TestHungModuleRecovery(t *testing.T) {
	const wait = 300 * time.Millisecond
	ks, faults, signer, done, release := hung(t, 4, wait)
	faults.FailCall("Sign", 1, pkcs11.CKR_DEVICE_ERROR)
	gen := hsm.ModuleGeneration(softhsmtest.Module)
	first := make(chan error, 1)
	go func() { first <- signErr(signer) }()
	// Meanwhile the recovery waits for the hung call to drain, and holds
	// new calls back: they wait with their own context, not its bound.
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := signer.(*hsm.Key).SignContext(ctx, digest(crypto.SHA256, "x"), crypto.SHA256)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 200*time.Millisecond {
		t.Errorf("SignContext during the recovery: %v after %v, want context.DeadlineExceeded at once", err, time.Since(start))
	}
	err = within(t, 2*time.Second, "Sign meeting the device error", func() error { return <-first })
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign meeting the fault: %v, want ErrUnavailable", err)
	}
	// The recovery gives up after hsm.wait too, a little after the caller.
	waitFor(t, 2*time.Second, "the token unavailable", func() bool { return errors.Is(ks.Ready(), hsm.ErrUnavailable) })
	// Then calls fail at once, rather than each waiting its hsm.wait.
	start = time.Now()
	err = within(t, 2*time.Second, "Sign after it", func() error { return signErr(signer) })
	if !errors.Is(err, hsm.ErrUnavailable) || time.Since(start) > wait/2 {
		t.Errorf("Sign while the re-initialisation cannot happen: %v after %v, want ErrUnavailable at once", err, time.Since(start))
	}
	if hsm.ModuleGeneration(softhsmtest.Module) != gen {
		t.Error("the module was re-initialised under a call in it")
	}
	release()
	mustDo(t, <-done)
	waitFor(t, 4*time.Second, "signatures again", func() bool { return signErr(signer) == nil })
	if hsm.ModuleGeneration(softhsmtest.Module) == gen {
		t.Error("the module was not re-initialised after the device error")
	}
	mustDo(t, ks.Ready())
}
