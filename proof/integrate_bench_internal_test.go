package proof

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"pec/evidence"
)

// BenchmarkIntegrate measures BoltStore.Integrate alone (an in-process
// diagnosis of the seal's bbolt write): batches of 4096 timestamp-sized
// records appended, then integrated with their tree nodes as
// Log.integrate builds them; ns/record (wall time, the fsyncs included)
// and cpu-ns/integrated (the process's CPU during Integrate alone).
//
//	go test ./proof -run '^$' -bench Integrate -benchtime 20x
func BenchmarkIntegrate(b *testing.B) {
	ctx := context.Background()
	s, err := OpenBolt(filepath.Join(b.TempDir(), "proof.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const per = 4096
	rng := rangeFactory.NewEmptyRange(0)
	var prev *Tree
	now := time.Now()
	rec := evidence.Record{Type: evidence.TimestampIssued, Subject: "tsa-serial-0123456789abcdef",
		Digests:    []evidence.Digest{{Name: "imprint", Algorithm: "sha256", Value: make([]byte, 32)}, {Name: "token", Algorithm: "sha256", Value: make([]byte, 32)}},
		Attributes: []evidence.Attribute{{Key: "policy", Value: "1.2.3.4"}, {Key: "serial", Value: "0123456789abcdef"}},
		Actors:     []evidence.Actor{{Role: "tsa", Subject: "CN=PEC dev TSA,O=PEC", Fingerprint: [32]byte{1}}}}
	var cpu time.Duration // of the process, during Integrate
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		recs := make([]StoredRecord, per)
		for j := range recs {
			now = now.Add(time.Microsecond)
			r := rec
			r.ID, r.Time = evidence.NewID(now), now
			data, err := r.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			recs[j] = StoredRecord{ID: r.ID, Data: data, Fresh: true}
		}
		if err := s.Append(ctx, recs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		batch := &Batch{Start: rng.End(), Records: recs, Nodes: make([]Node, 0, 2*per+8)}
		for _, r := range recs {
			if err := rng.Append(LeafHash(r.Data), func(id compact.NodeID, hash []byte) {
				batch.Nodes = append(batch.Nodes, Node{ID: id, Hash: hash})
			}); err != nil {
				b.Fatal(err)
			}
		}
		root, err := rng.GetRootHash(nil)
		if err != nil {
			b.Fatal(err)
		}
		batch.Tree = Tree{Size: rng.End(), Root: root}
		cpu0 := processCPU()
		if err := s.Integrate(ctx, prev, batch); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - cpu0
		b.StopTimer()
		if err := s.PutHead(ctx, &Head{Size: batch.Tree.Size, Root: root, Checkpoint: []byte("c"), Token: []byte("t")}); err != nil {
			b.Fatal(err)
		}
		prev = &batch.Tree
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/record")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*per), "cpu-ns/integrated")
}

// processCPU is the CPU time of the process so far (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
