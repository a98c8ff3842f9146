package hsm_test

import (
	"crypto"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// benchConcurrency is the number of signing goroutines of the parallel
// benchmarks, whatever GOMAXPROCS.
const benchConcurrency = 8

// BenchmarkSign compares a signature through the KeyStore (session pool,
// recovery bookkeeping, metrics, ECDSA DER encoding) with the raw limit:
// C_SignInit + C_Sign on one session per goroutine, on the same SoftHSM2
// token and key, at benchConcurrency goroutines. The ratio sub-benchmarks
// report keystore-of-raw, the KeyStore's rate as a fraction of the raw rate
// (the goal is 0.9 or more); serial and parallel give each side alone.
func BenchmarkSign(b *testing.B) {
	cfg, err := softhsmtest.CreateToken("bench", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ks := open(b, cfg, hsm.Options{}) // the default pool size
	raw := rawSoftHSM(b, cfg.TokenLabel)
	parallelism := (benchConcurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	digest := sha256.Sum256([]byte("a signed tree head"))

	for _, c := range []struct {
		name string
		kt   hsm.KeyType
	}{{"P256", hsm.ECP256}, {"RSA2048", hsm.RSA2048}} {
		label := uniqueLabel(b, "bench-"+c.name)
		signer, err := ks.GenerateKey(b.Context(), label, c.kt)
		if err != nil {
			b.Fatal(err)
		}
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
		msg := digest[:]
		if c.kt == hsm.RSA2048 {
			mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
			prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
			msg = append(prefix, digest[:]...)
		}

		b.Run(c.name+"/keystore/serial", func(b *testing.B) {
			for b.Loop() {
				if _, err := signer.Sign(nil, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/keystore/parallel", func(b *testing.B) {
			b.SetParallelism(parallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := signer.Sign(nil, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		// The ratio alternates short rounds of both, at benchConcurrency
		// goroutines each, so that other load on the machine weighs on
		// both alike.
		b.Run(c.name+"/ratio", func(b *testing.B) {
			sessions := make([]rawSession, benchConcurrency)
			for i := range sessions {
				sh, key, err := raw.session(label)
				if err != nil {
					b.Fatal(err)
				}
				defer raw.ctx.CloseSession(sh)
				sessions[i] = rawSession{sh, key}
			}
			rawSign := func(g int) error {
				if err := raw.ctx.SignInit(sessions[g].sh, mech, sessions[g].key); err != nil {
					return err
				}
				_, err := raw.ctx.Sign(sessions[g].sh, msg)
				return err
			}
			keystoreSign := func(int) error {
				_, err := signer.Sign(nil, digest[:], crypto.SHA256)
				return err
			}
			const rounds = 20
			per := max(b.N/rounds, benchConcurrency)
			var keystoreT, rawT time.Duration
			b.ResetTimer()
			for i := range rounds {
				if i%2 == 0 { // either may go first: no order bias
					rawT += concurrently(b, per, rawSign)
					keystoreT += concurrently(b, per, keystoreSign)
				} else {
					keystoreT += concurrently(b, per, keystoreSign)
					rawT += concurrently(b, per, rawSign)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(keystoreT.Nanoseconds())/float64(rounds*per), "ns/op")
			b.ReportMetric(float64(rawT.Nanoseconds())/float64(rounds*per), "raw-ns/op")
			b.ReportMetric(float64(rawT)/float64(keystoreT), "keystore-of-raw")
		})
		b.Run(c.name+"/raw/parallel", func(b *testing.B) {
			b.SetParallelism(parallelism)
			b.RunParallel(func(pb *testing.PB) {
				sh, key, err := raw.session(label)
				if err != nil {
					b.Error(err)
					return
				}
				defer raw.ctx.CloseSession(sh)
				for pb.Next() {
					if err := raw.ctx.SignInit(sh, mech, key); err != nil {
						b.Error(err)
						return
					}
					if _, err := raw.ctx.Sign(sh, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// concurrently makes n calls of fn over benchConcurrency goroutines (fn
// gets the goroutine's number) and returns the time they took.
func concurrently(b *testing.B, n int, fn func(g int) error) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for g := range benchConcurrency {
		wg.Go(func() {
			for range n / benchConcurrency {
				if err := fn(g); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

type rawSession struct {
	sh  pkcs11.SessionHandle
	key pkcs11.ObjectHandle
}

// rawToken is the module called directly, bypassing the KeyStore.
type rawToken struct {
	ctx  *pkcs11.Ctx
	slot uint
}

// rawSoftHSM is the token's module called directly, bypassing package hsm.
func rawSoftHSM(b *testing.B, label string) *rawToken {
	ctx, slot := softhsmtest.RawSlot(b, label)
	return &rawToken{ctx: ctx, slot: slot}
}

// session opens a session (logged in: the KeyStore is) and finds the key.
func (r *rawToken) session(label string) (pkcs11.SessionHandle, pkcs11.ObjectHandle, error) {
	sh, err := r.ctx.OpenSession(r.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return 0, 0, err
	}
	if err := r.ctx.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		return 0, 0, err
	}
	objs, _, err := r.ctx.FindObjects(sh, 1)
	r.ctx.FindObjectsFinal(sh)
	if err != nil || len(objs) != 1 {
		return 0, 0, fmt.Errorf("find key %q: %d objects, %v", label, len(objs), err)
	}
	return sh, objs[0], nil
}
