package proof_test

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/proof"
	"pec/proof/prooftest"
	"pec/tsa"
)

// BenchmarkAppend measures durable appends on the embedded store (an
// in-process diagnosis; the figures users get are bench/edgeload's): N
// goroutines each appending one record after another, acknowledged once
// durable, while the sequencer seals with a real TSA (software key) at
// the default seal interval: appends/s, the p50 and p99 time to
// acknowledgment, records per durable write, and the longest seal delay.
//
//	go test ./proof -run '^$' -bench Append -benchtime 200000x
func BenchmarkAppend(b *testing.B) {
	benchAppend(b, func(b *testing.B) proof.Store {
		return openBolt(b, filepath.Join(b.TempDir(), "proof.db"))
	})
}

// BenchmarkAppendPG is BenchmarkAppend on the PostgreSQL store (a
// throw-away local cluster, or PEC_TEST_POSTGRES_URL).
func BenchmarkAppendPG(b *testing.B) {
	benchAppend(b, func(b *testing.B) proof.Store { return openPG(b, newPGDatabase(b)) })
}

func benchAppend(b *testing.B, open func(b *testing.B) proof.Store) {
	for _, writers := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			e := newEnv(b)
			s := open(b)
			defer s.Close()
			reg := prometheus.NewRegistry()
			l, err := proof.Open(b.Context(), s, e.signer, e.ts, proof.Config{}, proof.Options{Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			lat := make([][]time.Duration, writers)
			var next atomic.Int64
			recs := make([]*evidence.Record, 1024)
			for i := range recs {
				recs[i] = sampleRecord(i)
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						t0 := time.Now()
						if _, err := l.Append(ctx, recs[i%1024]); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			l.Close() // seals the rest
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			writes := float64(metric(b, reg, "pec_proof_write_records").GetHistogram().GetSampleCount())
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "appends/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(len(all))/max(writes, 1), "records/write")
			b.ReportMetric(gauge(b, reg, "pec_proof_seal_delay_max_seconds")*1000, "max-seal-delay-ms")
		})
	}
}

// BenchmarkProofs measures inclusion and consistency proofs in a large
// log (PEC_BENCH_LOG_SIZE records, default 1,000,000; the README's figure
// is for 10,000,000), read from the embedded store, and their
// verification, plus the verification of a bundle.
func BenchmarkProofs(b *testing.B) {
	size := 1_000_000
	if v := os.Getenv("PEC_BENCH_LOG_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	s := openBolt(b, filepath.Join(b.TempDir(), "proof.db"))
	defer s.Close()
	builder := prooftest.NewBuilder("bench")
	for done := 0; done < size; {
		n := min(65536, size-done)
		builder.Next(b, s, n)
		done += n
	}
	head, err := s.Latest(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.Run(fmt.Sprintf("inclusion/size=%d", size), func(b *testing.B) {
		i := uint64(0)
		for b.Loop() {
			i = (i + 7919) % head.Size
			if _, err := proof.InclusionProof(ctx, s, i, head.Size); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("verify-inclusion/size=%d", size), func(b *testing.B) {
		idx := head.Size / 3
		rec, err := s.Record(ctx, idx)
		if err != nil {
			b.Fatal(err)
		}
		p, err := proof.InclusionProof(ctx, s, idx, head.Size)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(p)), "hashes")
		for b.Loop() {
			if err := proof.VerifyInclusion(rec.Data, idx, head.Size, p, head.Root); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("consistency/size=%d", size), func(b *testing.B) {
		for b.Loop() {
			if _, err := proof.ConsistencyProof(ctx, s, head.Size/2+1, head.Size); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyBundle is `pec proof verify` without the file reading.
func BenchmarkVerifyBundle(b *testing.B) {
	e := newEnv(b)
	data, _ := exportSample(b, e)
	opts := proof.BundleVerifyOptions{Roots: e.roots}
	for b.Loop() {
		if _, err := proof.VerifyBundle(data, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTimestampEvidence is the TSA of `pec serve` with an evidence
// log: every token waits until its timestamp.issued record is durable (not
// sealed). Compare tokens/s with BenchmarkTimestampNoEvidence, the same
// TSA alone. In process: a diagnosis.
func BenchmarkTimestampEvidence(b *testing.B) { benchTimestamp(b, true) }

// BenchmarkTimestampNoEvidence: the reference for BenchmarkTimestampEvidence.
func BenchmarkTimestampNoEvidence(b *testing.B) { benchTimestamp(b, false) }

func benchTimestamp(b *testing.B, withEvidence bool) {
	e := newEnv(b)
	s := openBolt(b, filepath.Join(b.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(b, s, proof.Config{})
	defer l.Close()
	var ev evidence.Appender
	if withEvidence {
		ev = l
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(b.TempDir(), "serials"), 2)
	if err != nil {
		b.Fatal(err)
	}
	defer serials.Close()
	a, err := tsa.New(tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second}, e.tsaKey, []*x509.Certificate{e.tsaCert, e.root.Cert}, serials, tsa.Options{Evidence: ev})
	if err != nil {
		b.Fatal(err)
	}
	digest := make([]byte, 32)
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	const clients = 64
	lat := make([][]time.Duration, clients)
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := a.Respond(b.Context(), req); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "tokens/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
