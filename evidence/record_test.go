package evidence_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/evidence"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func goldenRecord() *evidence.Record {
	return &evidence.Record{
		ID:      "0193a1b2c3d4e5f60718293a4b5c6d7e",
		Type:    evidence.Acknowledged,
		Time:    time.Date(2026, 11, 24, 9, 30, 0, 123456789, time.UTC),
		Subject: "exchange-2026-000042",
		Actors: []evidence.Actor{
			{Role: "recipient", Fingerprint: [32]byte{0xde, 0xad, 0xbe, 0xef}, Subject: "CN=Protocollo,O=Comune di Roma,C=IT"},
			{Role: "sender", Fingerprint: [32]byte{0xca, 0xfe}, Subject: "CN=Ufficio Tributi,O=Regione Lazio,C=IT"},
		},
		Digests: []evidence.Digest{
			{Name: "dossier", Algorithm: "sha256", Value: bytes.Repeat([]byte{0xab}, 32)},
			{Name: "acknowledgment", Algorithm: "sha384", Value: bytes.Repeat([]byte{0xcd}, 48)},
		},
		Previous:   []string{"0193a1b2c3d4e5f60718293a4b5c6d70", "0193a1b2c3d4e5f60718293a4b5c6d71"},
		Attributes: []evidence.Attribute{{Key: "channel", Value: "api"}, {Key: "status", Value: "accepted"}},
	}
}

// TestRecordGolden pins the canonical encoding: a change to these bytes
// breaks every proof already handed out. Refresh with -update only for a
// new RecordVersion.
func TestRecordGolden(t *testing.T) {
	rec := goldenRecord()
	data, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "record-v1.hex")
	dump := hex.Dump(data)
	if *update {
		if err := os.WriteFile(golden, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
		corpus := filepath.Join("testdata", "fuzz", "FuzzUnmarshalRecord")
		if err := os.MkdirAll(corpus, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(corpus, "golden-v1"), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), dump); diff != "" {
		t.Errorf("encoding differs from %s (-want +got):\n%s", golden, diff)
	}
	leafSum := sha256.Sum256(append([]byte{0}, data...)) // RFC 9162 section 2.1.1
	leaf := hex.EncodeToString(leafSum[:])
	leafFile := filepath.Join("testdata", "record-v1.leaf")
	if *update {
		if err := os.WriteFile(leafFile, []byte(leaf+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wl, err := os.ReadFile(leafFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(wl)) != leaf {
		t.Errorf("leaf hash %s, want %s", leaf, wl)
	}
	back, err := evidence.UnmarshalRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestRecordInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*evidence.Record)
	}{
		{"no id", func(r *evidence.Record) { r.ID = "" }},
		{"id with a slash", func(r *evidence.Record) { r.ID = "a/b" }},
		{"no type", func(r *evidence.Record) { r.Type = "" }},
		{"one-word type", func(r *evidence.Record) { r.Type = "submission" }},
		{"type ending in a dot", func(r *evidence.Record) { r.Type = "submission." }},
		{"type starting with a dot", func(r *evidence.Record) { r.Type = ".submission.accepted" }},
		{"type with an empty word", func(r *evidence.Record) { r.Type = "submission..accepted" }},
		{"type in capitals", func(r *evidence.Record) { r.Type = "Submission.accepted" }},
		{"type with a dash", func(r *evidence.Record) { r.Type = "submission.accept-ed" }},
		{"type over 64 bytes", func(r *evidence.Record) { r.Type = evidence.EventType("a." + strings.Repeat("b", 63)) }},
		{"no time", func(r *evidence.Record) { r.Time = time.Time{} }},
		{"short digest", func(r *evidence.Record) { r.Digests[0].Value = r.Digests[0].Value[:31] }},
		{"md5 digest", func(r *evidence.Record) { r.Digests[0].Algorithm = "md5" }},
		{"unsorted attributes", func(r *evidence.Record) { r.Attributes[0], r.Attributes[1] = r.Attributes[1], r.Attributes[0] }},
		{"duplicate attribute", func(r *evidence.Record) { r.Attributes[1].Key = r.Attributes[0].Key }},
		{"actor without role", func(r *evidence.Record) { r.Actors[0].Role = "" }},
		{"bad previous", func(r *evidence.Record) { r.Previous[0] = "" }},
		{"invalid UTF-8", func(r *evidence.Record) { r.Subject = "\xff" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := goldenRecord()
			tc.mutate(r)
			if _, err := r.MarshalBinary(); !errors.Is(err, evidence.ErrMalformedRecord) {
				t.Errorf("MarshalBinary: %v, want ErrMalformedRecord", err)
			}
		})
	}
}

// TestRecordInvalidNamesField: every string field that is not UTF-8 or
// too long is named in the error (the names are built only on a fault).
func TestRecordInvalidNamesField(t *testing.T) {
	long := strings.Repeat("x", 4097)
	for _, tc := range []struct {
		field  string
		mutate func(*evidence.Record, string)
	}{
		{"subject", func(r *evidence.Record, v string) { r.Subject = v }},
		{"actors[1].role", func(r *evidence.Record, v string) { r.Actors[1].Role = v }},
		{"actors[0].subject", func(r *evidence.Record, v string) { r.Actors[0].Subject = v }},
		{"digests[1].name", func(r *evidence.Record, v string) { r.Digests[1].Name = v }},
		{"attributes[0].key", func(r *evidence.Record, v string) { r.Attributes[0].Key = "a" + v }},
		{"attributes[1].value", func(r *evidence.Record, v string) { r.Attributes[1].Value = v }},
	} {
		for _, v := range []string{"\xff", long} {
			t.Run(fmt.Sprintf("%s %d bytes", tc.field, len(v)), func(t *testing.T) {
				r := goldenRecord()
				tc.mutate(r, v)
				err := r.Validate()
				if !errors.Is(err, evidence.ErrMalformedRecord) || !strings.Contains(err.Error(), tc.field+": not UTF-8 or over 4096 bytes") {
					t.Errorf("Validate: %v, want ErrMalformedRecord naming %s", err, tc.field)
				}
			})
		}
	}
	if err := goldenRecord().Validate(); err != nil {
		t.Errorf("the golden record: %v", err)
	}
	for _, typ := range []evidence.EventType{"a.b", "proof.read", "x_1.y2.z_", evidence.EventType("a." + strings.Repeat("b", 62))} {
		r := goldenRecord()
		r.Type = typ
		if err := r.Validate(); err != nil {
			t.Errorf("type %q: %v", typ, err)
		}
	}
}

func TestUnmarshalRecordRejects(t *testing.T) {
	data, err := goldenRecord().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	version := append([]byte(nil), data...)
	version[6] = 2
	for name, in := range map[string][]byte{
		"empty":     nil,
		"truncated": data[:len(data)-1],
		"trailing":  append(append([]byte(nil), data...), 0),
		"version 2": version,
		"magic":     append([]byte("PEC-EX"), data[6:]...),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := evidence.UnmarshalRecord(in); !errors.Is(err, evidence.ErrMalformedRecord) {
				t.Errorf("UnmarshalRecord: %v, want ErrMalformedRecord", err)
			}
		})
	}
}

func FuzzUnmarshalRecord(f *testing.F) {
	data, err := goldenRecord().MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("PEC-EV\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := evidence.UnmarshalRecord(in)
		if err != nil {
			if !errors.Is(err, evidence.ErrMalformedRecord) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes: one record, one
		// encoding.
		out, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
