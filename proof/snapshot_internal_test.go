package proof

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"pec/evidence"
)

// An Integrate that commits while Snapshot runs — between its read
// transaction's start and its copy of the unsealed records — must not
// make the integrated records fall out of both: Snapshot holds the
// sealing lock across the two steps, so the Integrate waits.
func TestSnapshotIntegrateBetweenSteps(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "proof.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var recs []StoredRecord
	for i := range 3 {
		rec := &evidence.Record{Type: evidence.AdminAction, Time: time.Now().UTC(), Subject: fmt.Sprint("r", i), ID: fmt.Sprintf("snapshot-race-%d", i)}
		data, err := rec.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, StoredRecord{ID: rec.ID, Data: data})
	}
	if err := s.Append(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	b := &Batch{Start: 0, Records: recs}
	rng := rangeFactory.NewEmptyRange(0)
	for _, r := range recs {
		if err := rng.Append(LeafHash(r.Data), func(id compact.NodeID, h []byte) { b.Nodes = append(b.Nodes, Node{ID: id, Hash: h}) }); err != nil {
			t.Fatal(err)
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Tree = Tree{Size: 3, Root: root}

	integrated := make(chan error, 1)
	snapshotBegun = func() {
		go func() { integrated <- s.Integrate(t.Context(), nil, b) }()
		select {
		case err := <-integrated:
			integrated <- err // committed in between: what the lock prevents
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer func() { snapshotBegun = func() {} }()
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if err := <-integrated; err != nil {
		t.Fatal(err)
	}
	if got := sn.Records() + uint64(sn.Unsealed()); got != 3 {
		t.Fatalf("the snapshot holds %d records (%d in its file, %d unsealed), want 3", got, sn.Records(), sn.Unsealed())
	}
}
