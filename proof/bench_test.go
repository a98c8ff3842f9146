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

	"pec/proof"
	"pec/proof/prooftest"
	"pec/tsa"
)

// BenchmarkAppend measures durable appends on the embedded store with a
// real TSA (software key) sealing every batch: appends/s, the p50 and p99
// time to acknowledgment and the mean batch size.
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
			l := e.openLog(b, s, proof.Config{})
			defer l.Close()
			ctx := b.Context()
			lat := make([][]time.Duration, writers)
			var next atomic.Int64
			recs := make([]*proof.Record, 1024)
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
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			heads := 0
			s.Heads(ctx, func(*proof.Head) error { heads++; return nil })
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "appends/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(len(all))/float64(max(heads, 1)), "records/batch")
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
		if err := s.Commit(b.Context(), builder.Next(b, n)); err != nil {
			b.Fatal(err)
		}
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
// log: every token waits until its timestamp.issued record is durable.
// Compare tokens/s with BenchmarkTimestampNoEvidence, the same TSA alone.
func BenchmarkTimestampEvidence(b *testing.B) { benchTimestamp(b, true) }

// BenchmarkTimestampNoEvidence: the reference for BenchmarkTimestampEvidence.
func BenchmarkTimestampNoEvidence(b *testing.B) { benchTimestamp(b, false) }

func benchTimestamp(b *testing.B, evidence bool) {
	e := newEnv(b)
	s := openBolt(b, filepath.Join(b.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(b, s, proof.Config{})
	defer l.Close()
	var rec tsa.Recorder
	if evidence {
		rec = proof.TimestampRecorder{Log: l}
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(b.TempDir(), "serials"), 2)
	if err != nil {
		b.Fatal(err)
	}
	defer serials.Close()
	a, err := tsa.New(tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: time.Second}, e.tsaKey, []*x509.Certificate{e.tsaCert, e.root.Cert}, serials, tsa.Options{Recorder: rec})
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
