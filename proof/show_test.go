package proof_test

import (
	"archive/zip"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/evidence"
	"pec/proof"
)

// showRecords are the records of the golden bundle: an exchange of three
// steps, the last answering one record outside the log, with a value that
// would move a terminal's cursor if printed raw.
func showRecords() []*evidence.Record {
	t0 := time.Date(2026, 3, 2, 9, 15, 0, 123456789, time.UTC)
	d := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	return []*evidence.Record{{
		ID:      "ev-0001",
		Type:    evidence.SubmissionAccepted,
		Time:    t0,
		Subject: "dossier-42",
		Actors: []evidence.Actor{
			{Role: "sender", Subject: "CN=Comune di Test,O=Comune di Test", Fingerprint: [32]byte{0xaa, 1}},
			{Role: "recipient", Subject: "CN=Prefettura,O=Ministero", Fingerprint: [32]byte{0xbb, 2}},
		},
		Digests: []evidence.Digest{
			{Name: "dossier", Algorithm: "sha256", Value: d(32, 0x11)},
			{Name: "attachment/1", Algorithm: "sha512", Value: d(64, 0x22)},
		},
		Attributes: []evidence.Attribute{{Key: "channel", Value: "pull"}, {Key: "procedure", Value: "casellario"}},
	}, {
		ID:       "ev-0002",
		Type:     evidence.Delivered,
		Time:     t0.Add(90 * time.Second),
		Subject:  "dossier-42",
		Actors:   []evidence.Actor{{Role: "recipient", Subject: "CN=Prefettura,O=Ministero", Fingerprint: [32]byte{0xbb, 2}}},
		Previous: []string{"ev-0001"},
	}, {
		ID:         "ev-0003",
		Type:       evidence.Acknowledged,
		Time:       t0.Add(26 * time.Hour),
		Subject:    "dossier-42",
		Actors:     []evidence.Actor{{Role: "recipient", Subject: "CN=Prefettura,O=Ministero", Fingerprint: [32]byte{0xbb, 2}}},
		Digests:    []evidence.Digest{{Name: "acknowledgment", Algorithm: "sha256", Value: d(32, 0x33)}},
		Previous:   []string{"ev-0002", "mail-elsewhere-7"},
		Attributes: []evidence.Attribute{{Key: "note", Value: "received\n\x1b[2Jok"}},
	}}
}

// exportShow appends the showRecords in batches of one and exports the
// bundle of the last.
func exportShow(t testing.TB, e *env) []byte {
	t.Helper()
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	t.Cleanup(func() { s.Close() })
	l := e.openLog(t, s, proof.Config{BatchSize: 1})
	for _, r := range showRecords() {
		if _, err := l.Append(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	data, err := proof.Export(t.Context(), s, "ev-0003", proof.ExportOptions{LogChain: []*x509.Certificate{e.cert, e.root.Cert}, TSAChain: []*x509.Certificate{e.tsaCert, e.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func loadRoots(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s: no certificate", file)
	}
	return pool
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", file, diff)
	}
}

// TestShowGolden shows a committed bundle of format 2: the text and JSON
// are pinned, and the bundle itself pins the format (its readable copies
// and entry times must still be what Export writes).
func TestShowGolden(t *testing.T) {
	dir := filepath.Join("testdata", "show")
	if *update {
		e := newEnv(t)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bundle.zip"), exportShow(t, e), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "root.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.root.Cert.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "bundle.zip"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: loadRoots(t, filepath.Join(dir, "root.pem"))})
	if err != nil {
		t.Fatal(err)
	}
	s, err := proof.Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join(dir, "show.txt"), text.Bytes())
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join(dir, "show.json"), append(js, '\n'))

	// What the summary says comes from the records appended.
	recs := showRecords()
	if s.Format != proof.BundleFormat || s.Evidence != "ev-0003" || len(s.Records) != 3 {
		t.Fatalf("summary: format %s, evidence %s, %d records", s.Format, s.Evidence, len(s.Records))
	}
	for i, r := range s.Records {
		want := recs[2-i]
		if r.ID != want.ID || !r.Time.Equal(want.Time) || r.Type != want.Type || r.Index != uint64(2-i) {
			t.Errorf("record %d: %s %s %s index %d, want %s %s %s", i, r.ID, r.Type, r.Time, r.Index, want.ID, want.Type, want.Time)
		}
	}
	if s.Checkpoint.Size != 3 || s.Checkpoint.Signer.Subject != "CN=PEC proof log,O=PEC test" || s.Timestamp.Signer.Subject != "CN=proof test TSA,O=PEC development" {
		t.Errorf("checkpoint %+v, timestamp %+v", s.Checkpoint, s.Timestamp)
	}
	if got := s.Timestamp.Signer.Chain; len(got) != 1 || got[0] != "CN=proof test root,O=PEC development" {
		t.Errorf("the TSA's chain: %q, want the root", got)
	}
	// A value with control characters is quoted, never printed raw.
	if strings.Contains(text.String(), "\x1b") || !strings.Contains(text.String(), `"received\n\x1b[2Jok"`) {
		t.Errorf("the attribute with an escape sequence is not quoted:\n%s", text.String())
	}
}

// TestShowV1 reads a bundle of format 1, exported before bundles had dated
// entries and readable copies: it still verifies and shows.
func TestShowV1(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "bundle-v1.zip"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: loadRoots(t, filepath.Join("testdata", "bundle-v1-root.pem"))})
	if err != nil {
		t.Fatalf("a bundle of format 1: %v", err)
	}
	s, err := proof.Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != proof.BundleFormatV1 || len(s.Records) != 4 || s.Records[0].Type != evidence.SubmissionAccepted {
		t.Errorf("summary of the v1 bundle: %s, %d records", s.Format, len(s.Records))
	}
	// Every byte still counts in format 1.
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		if _, err := proof.VerifyBundle(bad, proof.BundleVerifyOptions{Roots: loadRoots(t, filepath.Join("testdata", "bundle-v1-root.pem"))}); err == nil {
			t.Fatalf("v1 bundle, byte %d changed: still verifies", i)
		}
	}
}

// TestShowUnverified: nothing of a bundle is shown unless it verified.
func TestShowUnverified(t *testing.T) {
	e := newEnv(t)
	data := exportShow(t, e)
	read, err := proof.ReadBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Summarize(read); !errors.Is(err, proof.ErrNotVerified) {
		t.Errorf("a bundle only read: %v, want ErrNotVerified", err)
	}
	other := newEnv(t)
	b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: other.roots})
	if err == nil {
		t.Fatal("verified with another root")
	}
	if _, err := proof.Summarize(b); !errors.Is(err, proof.ErrNotVerified) {
		t.Errorf("a bundle that failed a check: %v, want ErrNotVerified", err)
	}
	fs := proof.FailedSummary(err)
	if fs.Valid || fs.Check != "timestamp" || fs.Error == "" || fs.Records != nil || fs.Checkpoint != nil {
		t.Errorf("failed summary %+v", fs)
	}
	js, _ := json.Marshal(fs)
	if !strings.HasPrefix(string(js), `{"valid":false,"check":"timestamp","error":"proof: bundle: timestamp: `) || strings.Contains(string(js), "records") {
		t.Errorf("failed summary in JSON: %s", js)
	}
	if fs := proof.FailedSummary(proof.ErrMalformedBundle); fs.Check != "bundle" {
		t.Errorf("malformed: check %q", fs.Check)
	}
}

// bundleFiles lists a bundle's entries.
func bundleFiles(t testing.TB, data []byte) []*zip.File {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return zr.File
}

func readEntry(t testing.TB, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBundleReadableCopies: each record has a JSON copy that says what
// the binary record says; entries carry the records' times.
func TestBundleReadableCopies(t *testing.T) {
	e := newEnv(t)
	data := exportShow(t, e)
	recs := map[string]*evidence.Record{}
	for _, r := range showRecords() {
		recs[r.ID] = r
	}
	evidenceTime := recs["ev-0003"].Time.Truncate(time.Second)
	copies := 0
	for _, f := range bundleFiles(t, data) {
		want := evidenceTime
		if name, ok := strings.CutPrefix(f.Name, "records/"); ok {
			content := readEntry(t, f)
			var r *evidence.Record
			if strings.HasSuffix(name, ".json") {
				copies++
				var c struct {
					Note, ID, Type, Time, Subject string
					Actors                        []struct{ Role, Subject, Fingerprint string }
					Previous                      []string
					Attributes                    map[string]string
				}
				if err := json.Unmarshal(content, &c); err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				r = recs[c.ID]
				if r == nil || c.Type != string(r.Type) || c.Time != r.Time.Format(time.RFC3339Nano) || c.Subject != r.Subject ||
					len(c.Actors) != len(r.Actors) || c.Actors[0].Subject != r.Actors[0].Subject || len(c.Previous) != len(r.Previous) ||
					!strings.Contains(c.Note, strings.TrimSuffix(f.Name, ".json")+".bin") {
					t.Errorf("%s does not say what the record says:\n%s", f.Name, content)
				}
			} else {
				dec, err := evidence.UnmarshalRecord(content)
				if err != nil {
					t.Fatal(err)
				}
				r = recs[dec.ID]
			}
			want = r.Time.Truncate(time.Second)
		}
		if !f.Modified.Equal(want) {
			t.Errorf("%s: dated %s, want %s", f.Name, f.Modified, want)
		}
	}
	if copies != 3 {
		t.Errorf("%d readable copies, want 3", copies)
	}
}

// TestBundleReadableCopyTampered: a readable copy that says something
// else than its record makes the bundle fail the "bundle" check, however
// it is changed; so what show prints (from the binary record) and the copy
// never disagree in a bundle that verifies.
func TestBundleReadableCopyTampered(t *testing.T) {
	e := newEnv(t)
	data := exportShow(t, e)
	opts := proof.BundleVerifyOptions{Roots: e.roots}
	if _, err := proof.VerifyBundle(data, opts); err != nil {
		t.Fatal(err)
	}
	edits := map[string]func([]byte) []byte{
		"another sender":    func(c []byte) []byte { return bytes.Replace(c, []byte("Prefettura"), []byte("Prefettira"), 1) },
		"another time":      func(c []byte) []byte { return bytes.Replace(c, []byte("2026-03-0"), []byte("2025-03-0"), 1) },
		"re-indented":       func(c []byte) []byte { return bytes.ReplaceAll(c, []byte("\n  "), []byte("\n ")) },
		"a field added":     func(c []byte) []byte { return bytes.Replace(c, []byte("{"), []byte(`{"valid_until": "never",`), 1) },
		"emptied":           func(c []byte) []byte { return []byte{} },
		"the newline taken": func(c []byte) []byte { return bytes.TrimSuffix(c, []byte("\n")) },
	}
	for what, edit := range edits {
		t.Run(what, func(t *testing.T) {
			bad := rezip(t, data, func(name string, c []byte) []byte {
				if name == "records/2.json" {
					return edit(c)
				}
				return c
			})
			_, err := proof.VerifyBundle(bad, opts)
			wantCheck(t, what, err, "bundle")
		})
	}
	// The copy dropped (and the manifest left naming it), or the whole
	// bundle rebuilt as format 1 around format-2 content: both refused.
	dropped := rezip(t, data, func(name string, c []byte) []byte {
		if strings.HasSuffix(name, ".json") && strings.HasPrefix(name, "records/") {
			return nil
		}
		return c
	})
	if _, err := proof.VerifyBundle(dropped, opts); err == nil {
		t.Error("the readable copies dropped: the bundle still verifies")
	}
	asV1 := rezipManifest(t, data, func(name string, c []byte) []byte { return c }, func(m *proof.Manifest) { m.Format = proof.BundleFormatV1 })
	if _, err := proof.VerifyBundle(asV1, opts); err == nil {
		t.Error("format 2 content labelled format 1: the bundle still verifies")
	}
	// Rebuilt unchanged, the bundle verifies: the edits above are what fails.
	if _, err := proof.VerifyBundle(rezip(t, data, func(_ string, c []byte) []byte { return c }), opts); err != nil {
		t.Errorf("rebuilt unchanged: %v", err)
	}
}

// TestBundleOldRecordTime: a record dated before ZIP's epoch (1980) gets
// the earliest ZIP time, and the bundle still verifies.
func TestBundleOldRecordTime(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	rec := sampleRecord(1)
	rec.Time = time.Date(1975, 6, 1, 0, 0, 0, 0, time.UTC)
	id, _ := appendSealed(t, l, rec)
	l.Close()
	data, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: []*x509.Certificate{e.cert, e.root.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots}); err != nil {
		t.Fatal(err)
	}
	for _, f := range bundleFiles(t, data) {
		if !f.Modified.Equal(time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%s dated %s, want 1980-01-01", f.Name, f.Modified)
		}
	}
}
