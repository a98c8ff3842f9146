package certvalidation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"runtime"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
	"pec/internal/interop"
)

// benchEnv is a chain of three (root, issuing CA, leaf) whose leaf names an
// `openssl ocsp` responder on loopback and whose CA is covered by the
// root's CRL (from `openssl ca -gencrl`, served over HTTP).
type benchEnv struct {
	*revEnv
	leaf      *x509.Certificate
	responder *interop.OCSPResponder
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	e := newRevEnv(b)
	be := &benchEnv{revEnv: e}
	be.leaf = e.leaf(b, "bench leaf", true, false)
	be.responder = e.interCA.StartOCSP(b, interop.OCSPOptions{Port: e.ocspPort, NextUpdate: 60})
	return be
}

func (be *benchEnv) opts() certvalidation.Options {
	return certvalidation.Options{
		Purpose:       certvalidation.PurposeClientAuth,
		Intermediates: []*x509.Certificate{be.inter.Cert},
		Revocation:    certvalidation.RevocationRequire,
	}
}

// rawVerify is the cost of one ECDSA P-256 verification, the crypto a
// validation of this chain cannot do without (twice: two signatures).
func rawVerify(b *testing.B) time.Duration {
	k := certtest.Key(b)
	sum := sha256.Sum256([]byte("x"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		b.Fatal(err)
	}
	const n = 2000
	start := time.Now()
	for range n {
		ecdsa.VerifyASN1(&k.PublicKey, sum[:], sig)
	}
	return time.Since(start) / n
}

// BenchmarkValidateWarm: a chain of three, the leaf's OCSP response and
// the CA's CRL cached, the result cache off: every iteration runs the
// whole path validation and revocation decision.
func BenchmarkValidateWarm(b *testing.B) {
	be := newBenchEnv(b)
	v := be.validator(b, certvalidation.Config{Cache: certvalidation.CacheConfig{Results: -1}}, nil)
	ctx := context.Background()
	if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
		b.Fatal(err)
	}
	raw := rawVerify(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
	b.ReportMetric(float64(per)/float64(2*raw), "of-2-raw-verify")
}

// BenchmarkValidateCached: the same, the result cache on (the gateway's
// case: the same client certificate at every request).
func BenchmarkValidateCached(b *testing.B) {
	be := newBenchEnv(b)
	v := be.validator(b, certvalidation.Config{Cache: certvalidation.CacheConfig{Results: 1000}}, nil)
	ctx := context.Background()
	if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
}

// BenchmarkValidateCold: every iteration a new Validator, caches empty:
// the OCSP request to the loopback responder and the CRL fetch included.
func BenchmarkValidateCold(b *testing.B) {
	be := newBenchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v := be.validator(b, certvalidation.Config{}, nil)
		if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheMemory measures the heap one cached entry holds: an OCSP
// response (with the results cache off), then a validation result.
func BenchmarkCacheMemory(b *testing.B) {
	be := newBenchEnv(b)
	const n = 300
	leaves := make([]*x509.Certificate, n)
	for i := range leaves {
		leaves[i] = be.revEnv.leaf(b, fmt.Sprintf("leaf %d", i), true, false)
	}
	be.responder.Stop()
	be.responder = be.interCA.StartOCSP(b, interop.OCSPOptions{Port: be.ocspPort, NextUpdate: 60})
	ctx := context.Background()
	measure := func(results int) float64 {
		v := be.validator(b, certvalidation.Config{Cache: certvalidation.CacheConfig{Results: results, OCSP: 10 * n}}, nil)
		// The CA's CRL and the signatures of the chain once, outside.
		if _, err := v.Validate(ctx, be.leaf, be.opts()); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, l := range leaves {
			// A certificate parsed afresh, as each TLS handshake does: what
			// the cache keeps of it counts.
			c, err := x509.ParseCertificate(l.Raw)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.Validate(ctx, c, be.opts()); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(v)
		return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	}
	var ocspOnly, both float64
	for b.Loop() {
		ocspOnly = measure(-1)
		both = measure(10 * n)
	}
	b.ReportMetric(ocspOnly, "B/ocsp-entry")
	b.ReportMetric(both-ocspOnly, "B/result-entry")
}
