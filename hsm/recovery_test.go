package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// faulty opens a fresh token through the fault injector, with one P-256 key.
func faulty(t *testing.T) (hsm.KeyStore, *hsm.Faults, crypto.Signer, *prometheus.Registry) {
	t.Helper()
	cfg := softhsmtest.NewToken(t, "faults")
	faults := new(hsm.Faults)
	reg := prometheus.NewRegistry()
	ks, err := hsm.OpenWithFaults(t.Context(), cfg, hsm.Options{Registry: reg}, faults)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	signer, err := ks.GenerateKey(t.Context(), "recover", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	mustSign(t, signer) // a session and the key handle are cached
	return ks, faults, signer, reg
}

func mustSign(t *testing.T, signer crypto.Signer) {
	t.Helper()
	d := digest(crypto.SHA256, "after the fault")
	sig, err := signer.Sign(nil, d, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(signer.Public().(*ecdsa.PublicKey), d, sig) {
		t.Fatal("signature does not verify")
	}
}

func recoveries(reg *prometheus.Registry, kind string) float64 {
	c, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range c {
		if mf.GetName() != "pec_hsm_recoveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRecovery: after each fault the next Sign succeeds on the same
// KeyStore, with one recovery counted.
//
// Not parallel: the module fault re-initialises the module that every
// test of this binary shares.
func TestRecovery(t *testing.T) {
	for _, c := range []struct {
		name   string
		method string
		rv     uint
		kind   string
	}{
		{"session closed", "Sign", pkcs11.CKR_SESSION_CLOSED, "session"},
		{"session handle invalid", "SignInit", pkcs11.CKR_SESSION_HANDLE_INVALID, "session"},
		{"operation active", "SignInit", pkcs11.CKR_OPERATION_ACTIVE, "session"},
		{"user not logged in", "SignInit", pkcs11.CKR_USER_NOT_LOGGED_IN, "login"},
		{"key handle invalid", "SignInit", pkcs11.CKR_KEY_HANDLE_INVALID, "key"},
		{"token not present", "SignInit", pkcs11.CKR_TOKEN_NOT_PRESENT, "token"},
		{"device removed", "Sign", pkcs11.CKR_DEVICE_REMOVED, "token"},
		{"slot ID invalid", "SignInit", pkcs11.CKR_SLOT_ID_INVALID, "token"},
		{"device error", "Sign", pkcs11.CKR_DEVICE_ERROR, "module"},
		{"general error", "SignInit", pkcs11.CKR_GENERAL_ERROR, "module"},
		{"not initialized", "SignInit", pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, "module"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, faults, signer, reg := faulty(t)
			faults.FailCall(c.method, 1, c.rv)
			gen := hsm.ModuleGeneration(softhsmtest.Module)
			mustSign(t, signer)
			if got := recoveries(reg, c.kind); got != 1 {
				t.Errorf("pec_hsm_recoveries_total{kind=%q} = %v, want 1", c.kind, got)
			}
			reinit := hsm.ModuleGeneration(softhsmtest.Module) != gen
			if reinit != (c.kind == "module") {
				t.Errorf("module re-initialised: %v, want %v", reinit, c.kind == "module")
			}
			mustSign(t, signer)
		})
	}
}

// TestOneRecoveryPerCall: a fault again after the recovery fails the call;
// the next call recovers and succeeds.
func TestOneRecoveryPerCall(t *testing.T) {
	t.Parallel()
	_, faults, signer, reg := faulty(t)
	faults.FailCall("SignInit", 1, pkcs11.CKR_SESSION_CLOSED)
	faults.FailCall("SignInit", 2, pkcs11.CKR_SESSION_CLOSED)
	if _, err := signer.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256); !errors.Is(err, pkcs11.Error(pkcs11.CKR_SESSION_CLOSED)) || !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("two faults in one call: %v, want CKR_SESSION_CLOSED and ErrUnavailable", err)
	}
	mustSign(t, signer)
	if got := recoveries(reg, "session"); got != 1 {
		t.Errorf("pec_hsm_recoveries_total{kind=session} = %v, want 1", got)
	}
}

// TestTokenRemovedAndReinserted: while the token is away, signatures fail
// with ErrUnavailable and Ready says so; once it is back, the retries find
// it and the next signature succeeds on the same KeyStore and Signer.
//
// Not parallel: the retries re-initialise the module every test shares.
func TestTokenRemovedAndReinserted(t *testing.T) {
	ks, faults, signer, reg := faulty(t)
	faults.SetTokenAbsent(true)
	_, err := signer.Sign(nil, digest(crypto.SHA256, "away"), crypto.SHA256)
	if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "CKR_TOKEN_NOT_PRESENT") || !strings.Contains(err.Error(), "no token") {
		t.Fatalf("Sign with the token away: %v", err)
	}
	if _, err := ks.Signer(t.Context(), "other"); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Signer with the token away: %v, want ErrUnavailable", err)
	}
	if err := ks.Ready(); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Ready with the token away: %v, want ErrUnavailable", err)
	}
	faults.SetTokenAbsent(false)
	waitFor(t, 4*time.Second, "signature", func() bool {
		_, err := signer.Sign(nil, digest(crypto.SHA256, "back"), crypto.SHA256)
		return err == nil
	})
	mustSign(t, signer)
	mustDo(t, ks.Ready())
	// One recovery: by the retry that found the token again (cheaply, or
	// after a re-initialisation of the module).
	if got := recoveries(reg, "token") + recoveries(reg, "module"); got != 1 {
		t.Errorf("pec_hsm_recoveries_total{kind=token|module} = %v, want 1", got)
	}
	again, err := ks.Signer(t.Context(), "recover")
	if err != nil {
		t.Fatal(err)
	}
	mustSign(t, again)
}

// TestRecoveryUnderLoad: a module fault in the middle of 16 signing
// goroutines costs no signature, and the module is re-initialised once.
func TestRecoveryUnderLoad(t *testing.T) {
	ks, faults, signer, reg := faulty(t)
	rsaKey, err := ks.GenerateKey(t.Context(), "recover-rsa", hsm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	faults.FailCall("Sign", 40, pkcs11.CKR_DEVICE_ERROR)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			s := signer
			if g%2 == 1 {
				s = rsaKey
			}
			for range 20 {
				if _, err := s.Sign(nil, digest(crypto.SHA256, "load"), crypto.SHA256); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// One recovery: those who met its effects (stale sessions) waited for
	// it, or found it done, instead of recovering again.
	if got := recoveries(reg, "module"); got != 1 {
		t.Errorf("pec_hsm_recoveries_total{kind=module} = %v, want 1", got)
	}
	if got := recoveries(reg, "token"); got != 0 {
		t.Errorf("pec_hsm_recoveries_total{kind=token} = %v, want 0", got)
	}
	if got := testutil.ToFloat64(reinitCounter(reg)); got != 1 {
		t.Errorf("pec_hsm_reinit_total{result=ok} = %v, want 1", got)
	}
}

func reinitCounter(reg *prometheus.Registry) prometheus.Collector {
	return gaugeOf{reg: reg, name: "pec_hsm_reinit_total", label: "result", value: "ok"}
}

// TestDecryptFailureIsNoFault: SoftHSM2 answers a bad ciphertext with
// CKR_GENERAL_ERROR, which must not pass for a module fault: no recovery,
// no re-initialisation.
func TestDecryptFailureIsNoFault(t *testing.T) {
	ks, _, _, reg := faulty(t)
	if _, err := ks.GenerateKey(t.Context(), "dec", hsm.RSA2048); err != nil {
		t.Fatal(err)
	}
	dec, err := ks.Decrypter(t.Context(), "dec")
	if err != nil {
		t.Fatal(err)
	}
	gen := hsm.ModuleGeneration(softhsmtest.Module)
	bad := make([]byte, 256)
	rand.Read(bad[1:])
	for _, opts := range []crypto.DecrypterOpts{nil, &rsa.OAEPOptions{Hash: crypto.SHA1}, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: []byte("x")}} {
		if _, err := dec.Decrypt(rand.Reader, bad, opts); !errors.Is(err, rsa.ErrDecryption) {
			t.Errorf("Decrypt(%T) of garbage: %v, want rsa.ErrDecryption", opts, err)
		}
	}
	if got := hsm.ModuleGeneration(softhsmtest.Module); got != gen {
		t.Errorf("module generation %d → %d: a bad ciphertext re-initialised the module", gen, got)
	}
	if n := testutil.CollectAndCount(reg, "pec_hsm_recoveries_total"); n != 0 {
		t.Errorf("%d recoveries after bad ciphertexts, want 0", n)
	}
}

// TestModuleReinitSeenByOthers: when one KeyStore re-initialises the module,
// another KeyStore on it (another token) notices at its next call and
// recovers too, without using a stale handle.
func TestModuleReinitSeenByOthers(t *testing.T) {
	_, faults, signer, _ := faulty(t)
	reg := prometheus.NewRegistry()
	other := open(t, softhsmtest.NewToken(t, "other"), hsm.Options{Registry: reg})
	otherKey, err := other.GenerateKey(t.Context(), "other", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	mustSign(t, otherKey)
	gen := hsm.ModuleGeneration(softhsmtest.Module)
	faults.FailCall("Sign", 1, pkcs11.CKR_DEVICE_ERROR)
	mustSign(t, signer)
	if hsm.ModuleGeneration(softhsmtest.Module) == gen {
		t.Fatal("the module was not re-initialised")
	}
	mustSign(t, otherKey)
	if got := recoveries(reg, "token"); got != 1 {
		t.Errorf("the other KeyStore: pec_hsm_recoveries_total{kind=token} = %v, want 1", got)
	}
}

// TestRecoveryLogs: a recovery is logged once, with its kind, and nothing
// logged ever holds the PIN.
//
// Not parallel: a token that is not present may make the recovery
// re-initialise the module, which every test of this binary shares.
func TestRecoveryLogs(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "logs")
	var buf syncBuffer
	faults := new(hsm.Faults)
	ks, err := hsm.OpenWithFaults(t.Context(), cfg, hsm.Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))}, faults)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	signer, err := ks.GenerateKey(t.Context(), "logged", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	faults.FailCall("SignInit", 1, pkcs11.CKR_TOKEN_NOT_PRESENT)
	mustSign(t, signer)
	mustSign(t, signer)
	logs := buf.String()
	if n := strings.Count(logs, "recovered from a PKCS#11 fault"); n != 1 || !strings.Contains(logs, "recovery=token") {
		t.Errorf("want one token recovery logged, got:\n%s", logs)
	}
	if pin := softhsmtest.PIN(t, cfg); strings.Contains(logs, pin) {
		t.Errorf("the PIN is in the logs:\n%s", logs)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
