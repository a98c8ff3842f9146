package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// open opens cfg and closes it at the end of the test.
func open(t testing.TB, cfg hsm.Config, opts hsm.Options) hsm.KeyStore {
	t.Helper()
	ks, err := hsm.Open(t.Context(), cfg, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

// uniqueLabel keeps key labels apart on the shared token, and across
// -count=N runs of one binary.
func uniqueLabel(t testing.TB, base string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%x", base, b)
}

// stores are the two kinds of KeyStore, which must behave the same.
func stores(t *testing.T) map[string]hsm.Config {
	return map[string]hsm.Config{
		"softhsm2": shared,
		"software": {KeyDir: t.TempDir()},
	}
}

var keyTypes = []hsm.KeyType{hsm.RSA2048, hsm.RSA3072, hsm.ECP256, hsm.ECP384}

var hashes = []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}

func digest(h crypto.Hash, msg string) []byte {
	hh := h.New()
	hh.Write([]byte(msg))
	return hh.Sum(nil)
}

// verify checks sig with the standard library only.
func verify(pub crypto.PublicKey, d, sig []byte, opts crypto.SignerOpts) error {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if _, ok := opts.(*rsa.PSSOptions); ok {
			// EqualsHash, not Auto: the salt must be as long as the hash.
			return rsa.VerifyPSS(pub, opts.HashFunc(), d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.VerifyPKCS1v15(pub, opts.HashFunc(), d, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, d, sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("unexpected public key %T", pub)
}

func TestSign(t *testing.T) {
	t.Parallel()
	for name, cfg := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := open(t, cfg, hsm.Options{})
			for _, kt := range keyTypes {
				t.Run(kt.String(), func(t *testing.T) {
					t.Parallel()
					signer, err := ks.GenerateKey(t.Context(), uniqueLabel(t, "sign"), kt)
					if err != nil {
						t.Fatal(err)
					}
					type scheme struct {
						name string
						opts crypto.SignerOpts
					}
					var schemes []scheme
					for _, h := range hashes {
						if _, ok := signer.Public().(*rsa.PublicKey); ok {
							schemes = append(schemes,
								scheme{"PKCS1v15-" + h.String(), h},
								scheme{"PSS-EqualsHash-" + h.String(), &rsa.PSSOptions{Hash: h, SaltLength: rsa.PSSSaltLengthEqualsHash}},
								scheme{"PSS-Auto-" + h.String(), &rsa.PSSOptions{Hash: h, SaltLength: rsa.PSSSaltLengthAuto}})
						} else {
							schemes = append(schemes, scheme{"ECDSA-" + h.String(), h})
						}
					}
					if _, ok := signer.Public().(*rsa.PublicKey); ok {
						schemes = append(schemes, scheme{"PKCS1v15-SHA-1", crypto.SHA1},
							scheme{"PSS-32-SHA-256", &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 32}})
					}
					for _, s := range schemes {
						t.Run(s.name, func(t *testing.T) {
							d := digest(s.opts.HashFunc(), "tele-dossier "+s.name)
							sig, err := signer.Sign(nil, d, s.opts) // rand is ignored, or defaulted
							if err != nil {
								t.Fatal(err)
							}
							if err := verify(signer.Public(), d, sig, s.opts); err != nil {
								t.Fatal(err)
							}
							if err := verify(signer.Public(), digest(s.opts.HashFunc(), "another"), sig, s.opts); err == nil {
								t.Fatal("signature verifies for another message")
							}
						})
					}
					t.Run("wrong digest length", func(t *testing.T) {
						_, err := signer.Sign(rand.Reader, make([]byte, 20), crypto.SHA256)
						if err == nil || !strings.Contains(err.Error(), "digest is 20 bytes") {
							t.Fatalf("Sign with a 20-byte digest for SHA-256: %v", err)
						}
					})
				})
			}
		})
	}
}

func TestDecrypt(t *testing.T) {
	t.Parallel()
	for name, cfg := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := open(t, cfg, hsm.Options{})
			label := uniqueLabel(t, "decrypt")
			if _, err := ks.GenerateKey(t.Context(), label, hsm.RSA2048); err != nil {
				t.Fatal(err)
			}
			dec, err := ks.Decrypter(t.Context(), label)
			if err != nil {
				t.Fatal(err)
			}
			pub := dec.Public().(*rsa.PublicKey)
			msg := []byte("a 32-byte content-encryption key")
			oaep := func(h crypto.Hash, label []byte) func() ([]byte, crypto.DecrypterOpts, error) {
				return func() ([]byte, crypto.DecrypterOpts, error) {
					ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, msg, label)
					return ct, &rsa.OAEPOptions{Hash: h, Label: label}, err
				}
			}
			for _, c := range []struct {
				name    string
				encrypt func() ([]byte, crypto.DecrypterOpts, error)
			}{
				{"OAEP-SHA256", oaep(crypto.SHA256, nil)},
				{"OAEP-SHA256-label", oaep(crypto.SHA256, []byte("pec exchange 42"))},
				{"OAEP-SHA384", oaep(crypto.SHA384, nil)},
				{"OAEP-SHA1", oaep(crypto.SHA1, nil)},
				{"OAEP-SHA1-label", oaep(crypto.SHA1, []byte("l"))},
				{"PKCS1v15-nil-opts", func() ([]byte, crypto.DecrypterOpts, error) {
					ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
					return ct, nil, err
				}},
				{"PKCS1v15", func() ([]byte, crypto.DecrypterOpts, error) {
					ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
					return ct, &rsa.PKCS1v15DecryptOptions{}, err
				}},
				{"PKCS1v15-session-key", func() ([]byte, crypto.DecrypterOpts, error) {
					ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
					return ct, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: len(msg)}, err
				}},
			} {
				t.Run(c.name, func(t *testing.T) {
					ct, opts, err := c.encrypt()
					if err != nil {
						t.Fatal(err)
					}
					pt, err := dec.Decrypt(rand.Reader, ct, opts)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(pt, msg) {
						t.Fatalf("decrypted %q, want %q", pt, msg)
					}
					// A damaged ciphertext: rsa.ErrDecryption, except that
					// a session key comes back random, without error.
					ct[len(ct)/2] ^= 1
					pt, err = dec.Decrypt(rand.Reader, ct, opts)
					if o, ok := opts.(*rsa.PKCS1v15DecryptOptions); ok && o.SessionKeyLen > 0 {
						if err != nil || len(pt) != o.SessionKeyLen || bytes.Equal(pt, msg) {
							t.Fatalf("damaged ciphertext, session key: %x, %v; want a random key, no error", pt, err)
						}
						return
					}
					if !errors.Is(err, rsa.ErrDecryption) {
						t.Fatalf("damaged ciphertext: %x, %v; want rsa.ErrDecryption", pt, err)
					}
				})
			}
			t.Run("wrong OAEP label", func(t *testing.T) {
				ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, msg, []byte("one"))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := dec.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: []byte("two")}); !errors.Is(err, rsa.ErrDecryption) {
					t.Fatalf("got %v, want rsa.ErrDecryption", err)
				}
			})
			t.Run("OAEP-SHA1-MGF-SHA256", func(t *testing.T) {
				ct, err := rsa.EncryptOAEPWithOptions(rand.Reader, pub, msg, &rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA256})
				if err != nil {
					t.Fatal(err)
				}
				pt, err := dec.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA256})
				if err != nil || !bytes.Equal(pt, msg) {
					t.Fatalf("got %q, %v", pt, err)
				}
			})
			t.Run("EC key", func(t *testing.T) {
				ec := uniqueLabel(t, "ec")
				if _, err := ks.GenerateKey(t.Context(), ec, hsm.ECP256); err != nil {
					t.Fatal(err)
				}
				if _, err := ks.Decrypter(t.Context(), ec); err == nil {
					t.Fatal("Decrypter on an EC key: no error")
				}
			})
		})
	}
}

func TestKeyNotFoundAndExists(t *testing.T) {
	t.Parallel()
	for name, cfg := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := open(t, cfg, hsm.Options{})
			if _, err := ks.Signer(t.Context(), "no-such-key"); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("Signer(no-such-key): %v, want ErrKeyNotFound", err)
			}
			if _, err := ks.Decrypter(t.Context(), "no-such-key"); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("Decrypter(no-such-key): %v, want ErrKeyNotFound", err)
			}
			label := uniqueLabel(t, "exists")
			if _, err := ks.GenerateKey(t.Context(), label, hsm.ECP256); err != nil {
				t.Fatal(err)
			}
			if _, err := ks.GenerateKey(t.Context(), label, hsm.RSA2048); !errors.Is(err, hsm.ErrKeyExists) {
				t.Errorf("GenerateKey on an existing label: %v, want ErrKeyExists", err)
			}
			if _, err := ks.GenerateKey(t.Context(), uniqueLabel(t, "bad-type"), hsm.KeyType(99)); err == nil {
				t.Error("GenerateKey(KeyType(99)): no error")
			}
		})
	}
}

// TestReopen: keys survive Close and are found again by label, with the
// token selected by label or by serial.
func TestReopen(t *testing.T) {
	t.Parallel()
	token := softhsmtest.NewToken(t, "reopen")
	byLabel, bySerial := token, token
	byLabel.TokenSerial = ""
	bySerial.TokenLabel = ""
	for name, cfg := range map[string]hsm.Config{
		"token by label":  byLabel,
		"token by serial": bySerial,
		"software":        {KeyDir: t.TempDir()},
	} {
		t.Run(name, func(t *testing.T) {
			label := uniqueLabel(t, "reopen")
			ks, err := hsm.Open(t.Context(), cfg, hsm.Options{})
			if err != nil {
				t.Fatal(err)
			}
			signer, err := ks.GenerateKey(t.Context(), label, hsm.ECP256)
			if err != nil {
				t.Fatal(err)
			}
			pub := signer.Public().(*ecdsa.PublicKey)
			if err := ks.Close(); err != nil {
				t.Fatal(err)
			}
			if err := ks.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := signer.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256); err == nil {
				t.Fatal("Sign after Close: no error")
			}

			ks = open(t, cfg, hsm.Options{})
			again, err := ks.Signer(t.Context(), label)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(again.Public()) {
				t.Fatal("the key found again has another public key")
			}
			d := digest(crypto.SHA256, "after reopening")
			sig, err := again.Sign(nil, d, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(pub, d, sig) {
				t.Fatal("signature after reopening does not verify")
			}
		})
	}
}

// TestTwoStoresOneToken: two KeyStores on one token of one module, in one
// process, share the module and the login; closing one leaves the other
// working.
func TestTwoStoresOneToken(t *testing.T) {
	t.Parallel()
	cfg := softhsmtest.NewToken(t, "two")
	reg := prometheus.NewRegistry()
	a := open(t, cfg, hsm.Options{Registry: reg})
	b := open(t, cfg, hsm.Options{Registry: reg}) // the same collectors: no panic
	label := uniqueLabel(t, "two")
	if _, err := a.GenerateKey(t.Context(), label, hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	kb, err := b.Signer(t.Context(), label)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	d := digest(crypto.SHA256, "b still signs")
	sig, err := kb.Sign(nil, d, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(kb.Public().(*ecdsa.PublicKey), d, sig) {
		t.Fatal("signature does not verify")
	}
	if n := testutil.CollectAndCount(reg, "pec_hsm_sign_seconds"); n != 1 {
		t.Errorf("pec_hsm_sign_seconds has %d series, want 1", n)
	}
}

func TestPIN(t *testing.T) {
	// Not parallel: t.Setenv.
	cfg := softhsmtest.NewToken(t, "pin")
	pin := softhsmtest.PIN(t, cfg)

	t.Run("from file", func(t *testing.T) {
		open(t, cfg, hsm.Options{}).Close()
	})
	t.Run("from env", func(t *testing.T) {
		t.Setenv("PEC_TEST_HSM_PIN", pin)
		c := cfg
		c.PINFile, c.PINEnv = "", "PEC_TEST_HSM_PIN"
		open(t, c, hsm.Options{}).Close()
	})
	t.Run("env unset", func(t *testing.T) {
		c := cfg
		c.PINFile, c.PINEnv = "", "PEC_TEST_HSM_PIN_UNSET"
		_, err := hsm.Open(t.Context(), c, hsm.Options{})
		if err == nil || !strings.Contains(err.Error(), "PEC_TEST_HSM_PIN_UNSET is not set") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("file with CRLF", func(t *testing.T) {
		c := cfg
		c.PINFile = filepath.Join(t.TempDir(), "pin")
		if err := os.WriteFile(c.PINFile, []byte(pin+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		open(t, c, hsm.Options{}).Close()
	})
	t.Run("missing file", func(t *testing.T) {
		c := cfg
		c.PINFile = filepath.Join(t.TempDir(), "absent")
		if _, err := hsm.Open(t.Context(), c, hsm.Options{}); err == nil || !strings.Contains(err.Error(), "pin_file") {
			t.Fatalf("got %v", err)
		}
	})
}

// TestWrongPIN needs a token nobody is logged in to: the login state is
// shared by the whole process.
func TestWrongPIN(t *testing.T) {
	t.Parallel()
	cfg := softhsmtest.NewToken(t, "wrong-pin")
	const wrong = "not-the-pin-7319"
	cfg.PINFile = filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(cfg.PINFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := hsm.Open(t.Context(), cfg, hsm.Options{})
	if err == nil {
		t.Fatal("Open with a wrong PIN: no error")
	}
	if !strings.Contains(err.Error(), "wrong PIN") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("error %q: want it to say wrong PIN, without the PIN", err)
	}
}

func TestTokenNotFound(t *testing.T) {
	t.Parallel()
	cfg := shared
	cfg.TokenLabel, cfg.TokenSerial = "no-such-token", ""
	_, err := hsm.Open(t.Context(), cfg, hsm.Options{})
	if err == nil || !strings.Contains(err.Error(), `no token "no-such-token"`) {
		t.Fatalf("got %v", err)
	}
	cfg.Module = filepath.Join(t.TempDir(), "libmissing.so")
	if _, err := hsm.Open(t.Context(), cfg, hsm.Options{}); err == nil {
		t.Fatal("Open with a missing module: no error")
	}
}

func TestInitTokenDuplicateLabel(t *testing.T) {
	t.Parallel()
	_, err := hsm.InitToken(softhsmtest.Module, shared.TokenLabel, "so-pin-1234", "user-pin-1234")
	if err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("InitToken with the label of an existing token: %v", err)
	}
	if _, err := hsm.InitToken(softhsmtest.Module, strings.Repeat("x", 33), "so-pin-1234", "user-pin-1234"); err == nil {
		t.Fatal("InitToken with a 33-byte label: no error")
	}
}

// TestConcurrentSign: 16 goroutines share a pool of 4 sessions (run it with
// -race).
func TestConcurrentSign(t *testing.T) {
	t.Parallel()
	cfg := softhsmtest.NewToken(t, "concurrent")
	cfg.Sessions = 4
	reg := prometheus.NewRegistry()
	ks := open(t, cfg, hsm.Options{Registry: reg})
	var signers []crypto.Signer
	for _, kt := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048} {
		s, err := ks.GenerateKey(t.Context(), uniqueLabel(t, "concurrent"), kt)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	const goroutines, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			signer := signers[g%len(signers)]
			for i := range each {
				d := digest(crypto.SHA256, fmt.Sprint(g, i))
				sig, err := signer.Sign(nil, d, crypto.SHA256)
				if err == nil {
					err = verify(signer.Public(), d, sig, crypto.SHA256)
				}
				if err != nil {
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
	if got := gauge(t, reg, "pec_hsm_sessions_in_use"); got != 0 {
		t.Errorf("pec_hsm_sessions_in_use = %v after the signatures, want 0", got)
	}
	if got := histogramCount(t, reg, "pec_hsm_sign_seconds"); got != goroutines*each {
		t.Errorf("pec_hsm_sign_seconds counts %d signatures, want %d", got, goroutines*each)
	}
}

// TestSessionWaitHonoursContext: with every session busy, a caller gives up
// when its context ends.
func TestSessionWaitHonoursContext(t *testing.T) {
	t.Parallel()
	cfg := softhsmtest.NewToken(t, "wait")
	cfg.Sessions = 1
	faults := new(hsm.Faults)
	ks, err := hsm.OpenWithFaults(t.Context(), cfg, hsm.Options{}, faults)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	signer, err := ks.GenerateKey(t.Context(), "busy", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := faults.Hold("Sign")
	defer release()
	done := make(chan error, 1)
	go func() {
		_, err := signer.Sign(nil, digest(crypto.SHA256, "slow"), crypto.SHA256)
		done <- err
	}()
	<-entered // the only session is busy
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := ks.Signer(ctx, "other"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Signer while the pool is busy: %v, want context.DeadlineExceeded", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += int(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}
