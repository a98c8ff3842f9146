package proof_test

import (
	"path/filepath"
	"testing"

	"pec/proof"
	"pec/proof/prooftest"
)

func TestBoltStoreConformance(t *testing.T) {
	paths := map[proof.Store]string{}
	prooftest.RunStore(t, prooftest.Factory{
		New: func(t *testing.T) proof.Store {
			path := filepath.Join(t.TempDir(), "proof.db")
			s, err := proof.OpenBolt(path, proof.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			paths[s] = path
			return s
		},
		Reopen: func(t *testing.T, old proof.Store) proof.Store {
			s, err := proof.OpenBolt(paths[old], proof.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}
