package proof_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pec/proof"
)

// exportSample appends a few linked records and exports the bundle of the
// last one.
func exportSample(t testing.TB, e *env) ([]byte, []string) {
	t.Helper()
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	t.Cleanup(func() { s.Close() })
	l := e.openLog(t, s, fastSeal)
	var rs []string
	for i := range 7 {
		rec := sampleRecord(i)
		if i > 0 {
			rec.Previous = []string{rs[len(rs)-1]}
		}
		if i == 6 {
			rec.Previous = append(rec.Previous, "not-in-this-log")
		}
		id, _ := appendSealed(t, l, rec)
		rs = append(rs, id)
	}
	l.Close()
	data, err := proof.Export(t.Context(), s, rs[3], proof.ExportOptions{LogChain: []*x509.Certificate{e.cert, e.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := proof.Export(t.Context(), s, rs[3], proof.ExportOptions{LogChain: []*x509.Certificate{e.cert, e.root.Cert}})
	if err != nil || string(again) != string(data) {
		t.Fatalf("a second export differs (%v)", err)
	}
	return data, rs
}

func TestBundleExportVerify(t *testing.T) {
	e := newEnv(t)
	data, rs := exportSample(t, e)
	b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots})
	if err != nil {
		t.Fatal(err)
	}
	// The record asked for, then those it follows.
	if len(b.Records) != 4 || b.Records[0].ID != rs[3] || b.Records[3].ID != rs[0] {
		t.Errorf("bundle records: %d, first %s", len(b.Records), b.Records[0].ID)
	}
	// The head that sealed the record (each record here its own): the
	// bundle never changes.
	if b.Manifest.TreeHead.Size != 4 {
		t.Errorf("tree head size %d, want 4 (the head that sealed record 3)", b.Manifest.TreeHead.Size)
	}
	// Another root: the certificates do not chain.
	other := newEnv(t)
	_, err = proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: other.roots})
	if be, ok := errors.AsType[*proof.BundleError](err); !ok || be.Check != "timestamp" {
		t.Errorf("with another root: %v, want the timestamp check to fail", err)
	}
	// A key certified under the same root but not as an evidence log's
	// (a partner's, say) cannot make valid bundles.
	plain, err := e.root.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "not a log"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}, e.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	id, _ := appendSealed(t, l, sampleRecord(1))
	l.Close()
	forged, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: []*x509.Certificate{plain, e.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = proof.VerifyBundle(forged, proof.BundleVerifyOptions{Roots: e.roots})
	if be, ok := errors.AsType[*proof.BundleError](err); !ok || be.Check != "certificates" {
		t.Errorf("a log key without the evidence-log EKU: %v, want the certificates check to fail", err)
	}
	if _, err := proof.VerifyBundle([]byte("not a zip"), proof.BundleVerifyOptions{Roots: e.roots}); !errors.Is(err, proof.ErrMalformedBundle) {
		t.Errorf("not a zip: %v, want ErrMalformedBundle", err)
	}
}

// TestBundleEveryByte changes each byte of a bundle in turn: verification
// must fail every time.
func TestBundleEveryByte(t *testing.T) {
	e := newEnv(t)
	data, _ := exportSample(t, e)
	opts := proof.BundleVerifyOptions{Roots: e.roots}
	checks := map[string]int{}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x20
		_, err := proof.VerifyBundle(bad, opts)
		if err == nil {
			t.Fatalf("byte %d changed: the bundle still verifies", i)
		}
		if be, ok := errors.AsType[*proof.BundleError](err); ok {
			checks[be.Check]++
		} else {
			checks["malformed"]++
		}
	}
	t.Logf("%d bytes, failed checks: %v", len(data), checks)
}

func TestBundleCorpus(t *testing.T) {
	// The committed fuzz corpus holds a real bundle; -update refreshes it.
	if !*update {
		t.Skip("run with -update to refresh testdata/fuzz/FuzzReadBundle")
	}
	e := newEnv(t)
	data, _ := exportSample(t, e)
	dir := filepath.Join("testdata", "fuzz", "FuzzReadBundle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "valid-bundle"), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func FuzzReadBundle(f *testing.F) {
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := proof.ReadBundle(in)
		if err != nil {
			_, typed := errors.AsType[*proof.BundleError](err)
			if !typed && !errors.Is(err, proof.ErrMalformedBundle) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if len(b.Records) == 0 || len(b.Records) != len(b.Manifest.Records) {
			t.Fatalf("a read bundle with %d records", len(b.Records))
		}
		// A bundle only read has nothing to show.
		if _, err := proof.Summarize(b); !errors.Is(err, proof.ErrNotVerified) {
			t.Fatalf("Summarize of an unverified bundle: %v", err)
		}
	})
}
