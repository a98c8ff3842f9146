package proof_test

import (
	"path/filepath"
	"testing"

	"pec/proof"
	"pec/proof/prooftest"
)

func TestBoltStoreConformance(t *testing.T) {
	prooftest.RunStore(t, func(t *testing.T) proof.Store {
		s, err := proof.OpenBolt(filepath.Join(t.TempDir(), "proof.db"), proof.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestBoltStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proof.db")
	s, err := proof.OpenBolt(path, proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := prooftest.NewBuilder("x")
	batch := b.Next(t, 4)
	if err := s.Commit(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = proof.OpenBolt(path, proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := s.Latest(t.Context())
	if err != nil || h.Size != 4 {
		t.Fatalf("after reopen: %v, %v", h, err)
	}
	if err := s.Commit(t.Context(), b.Next(t, 1)); err != nil {
		t.Fatal(err)
	}
}
