package tsa_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/tsa"
)

func openJournal(t testing.TB, path string) *tsa.Journal {
	t.Helper()
	j, err := tsa.OpenJournal(path)
	if err != nil {
		t.Fatalf("OpenJournal(%s): %v", path, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// readJournal reads a whole journal file.
func readJournal(t testing.TB, path string) []tsa.JournalEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tsa.JournalEntry
	if err := tsa.ReadJournal(f, func(e tsa.JournalEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("ReadJournal: %v", err)
	}
	return out
}

var testPolicy = asn1.ObjectIdentifier{1, 2, 250, 1, 999, 1}

func issued(serial int64) *tsa.Issued {
	imprint := sha256.Sum256([]byte(fmt.Sprint("document ", serial)))
	return &tsa.Issued{
		Serial:      big.NewInt(serial),
		GenTime:     time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		Policy:      testPolicy,
		Hash:        crypto.SHA256,
		Imprint:     imprint[:],
		Nonce:       big.NewInt(serial * 7),
		TokenSHA256: sha256.Sum256([]byte(fmt.Sprint("token ", serial))),
	}
}

func TestJournalRoundTrip(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CET", 3600)
	sha384 := bytes.Repeat([]byte{0xab}, 48)
	big80, _ := new(big.Int).SetString("ffff0000000000000001", 16)
	in := []*tsa.Issued{
		{
			Serial: big.NewInt(0x1234), GenTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Policy: testPolicy,
			Hash: crypto.SHA256, Imprint: bytes.Repeat([]byte{1}, 32), Nonce: nil, TokenSHA256: [32]byte{0xff},
		},
		{
			Serial: big80, GenTime: time.Date(2026, 1, 2, 4, 4, 5, 120000000, paris), Policy: asn1.ObjectIdentifier{1, 2, 3},
			Hash: crypto.SHA384, Imprint: sha384, Nonce: new(big.Int).Lsh(big.NewInt(1), 200), TokenSHA256: [32]byte{1, 2, 3},
		},
		{
			Serial: big.NewInt(1), GenTime: time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC), Policy: testPolicy,
			Hash: crypto.SHA512, Imprint: make([]byte, 64), Nonce: big.NewInt(-5), TokenSHA256: [32]byte{},
		},
	}
	path := filepath.Join(t.TempDir(), "issued.jsonl")
	j := openJournal(t, path)
	for _, is := range in {
		if err := j.Record(t.Context(), is); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	want := make([]tsa.JournalEntry, len(in))
	for i, is := range in {
		want[i] = tsa.JournalEntry{
			Serial: is.Serial, GenTime: is.GenTime.UTC(), Policy: is.Policy.String(),
			Hash:    map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}[is.Hash],
			Imprint: is.Imprint, Nonce: is.Nonce, TokenSHA256: is.TokenSHA256[:],
		}
	}
	got := readJournal(t, path)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b *big.Int) bool {
		return a == nil && b == nil || a != nil && b != nil && a.Cmp(b) == 0
	})); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	// The line format is a contract with readers other than ReadJournal.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	wantLine := `{"serial":"1234","gen_time":"2026-01-02T03:04:05Z","policy":"1.2.250.1.999.1","hash":"sha256",` +
		`"imprint":"` + strings.Repeat("01", 32) + `","token_sha256":"ff` + strings.Repeat("00", 31) + `"}`
	if string(first) != wantLine {
		t.Errorf("first line:\n got %s\nwant %s", first, wantLine)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
}

func TestJournalConcurrent(t *testing.T) {
	t.Parallel()
	const writers, each = 64, 2000
	path := filepath.Join(t.TempDir(), "sub", "issued.jsonl")
	j := openJournal(t, path)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := j.Record(context.Background(), issued(int64(w*each+i))); err != nil {
					t.Errorf("Record: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	stats := j.Stats()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	seen := make([]int, writers*each)
	for _, e := range readJournal(t, path) {
		if !e.Serial.IsInt64() || e.Serial.Int64() >= int64(len(seen)) {
			t.Fatalf("unexpected serial %x", e.Serial)
		}
		n := e.Serial.Int64()
		seen[n]++
		if want := issued(n); !bytes.Equal(e.Imprint, want.Imprint) || e.Nonce.Cmp(want.Nonce) != 0 {
			t.Fatalf("serial %x: entry %+v does not match what was recorded", e.Serial, e)
		}
	}
	for n, c := range seen {
		if c != 1 {
			t.Fatalf("serial %x recorded %d times, want once", n, c)
		}
	}
	if stats.Records != writers*each {
		t.Errorf("Stats().Records = %d, want %d", stats.Records, writers*each)
	}
	if stats.Syncs == 0 || stats.Syncs >= stats.Records {
		t.Errorf("Stats().Syncs = %d for %d records: no group commit", stats.Syncs, stats.Records)
	}
	t.Logf("%d records in %d fsyncs (%.1f per fsync)", stats.Records, stats.Syncs, float64(stats.Records)/float64(stats.Syncs))
}

func TestJournalPartialLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		complete int    // records before the crash
		tail     string // what the crash left
	}{
		{"half a line", 3, `{"serial":"ab","gen_ti`},
		{"line without newline", 2, `{"serial":"ab","gen_time":"2026-01-02T03:04:05Z","policy":"1.2.3","hash":"sha256","imprint":"00","token_sha256":"` + strings.Repeat("00", 32) + `"}`},
		// The zero-filled tail of a journal that was not closed: not a
		// partial line, the data ends there.
		{"zeros of the preallocated tail", 1, "\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"half a line, then zeros", 1, `{"serial":"ab"` + "\x00\x00\x00\x00"},
		{"only a partial line", 0, `{"ser`},
		{"nothing to drop", 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "issued.jsonl")
			j := openJournal(t, path)
			for i := range tt.complete {
				if err := j.Record(t.Context(), issued(int64(i))); err != nil {
					t.Fatal(err)
				}
			}
			j.Close()
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tt.tail)
			f.Close()

			// ReadJournal reports the partial line, after the complete ones.
			n := 0
			f, _ = os.Open(path)
			err = tsa.ReadJournal(f, func(tsa.JournalEntry) error { n++; return nil })
			f.Close()
			partial := strings.TrimRight(tt.tail, "\x00")
			if n != tt.complete || (partial != "") != errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadJournal before repair: %d entries, %v", n, err)
			}

			j = openJournal(t, path)
			if got := j.Stats().Truncated; got != int64(len(partial)) {
				t.Errorf("Stats().Truncated = %d, want %d", got, len(partial))
			}
			if err := j.Record(t.Context(), issued(100)); err != nil {
				t.Fatal(err)
			}
			j.Close()
			got := readJournal(t, path)
			if len(got) != tt.complete+1 || got[len(got)-1].Serial.Int64() != 100 {
				t.Errorf("after reopening: %d entries, want %d ending with serial 100", len(got), tt.complete+1)
			}
		})
	}
}

func TestJournalClosed(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "issued.jsonl")
	j := openJournal(t, path)
	if err := j.Record(t.Context(), issued(1)); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Record(t.Context(), issued(2)); err == nil {
		t.Error("Record after Close: no error")
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := readJournal(t, path); len(got) != 1 {
		t.Errorf("%d entries, want 1", len(got))
	}
}

func TestJournalInUse(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "issued.jsonl")
	openJournal(t, path)
	if j, err := tsa.OpenJournal(path); err == nil {
		j.Close()
		t.Error("second OpenJournal of the same file: no error")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second OpenJournal: %v", err)
	}
}

func TestJournalRecordErrors(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "issued.jsonl")
	j := openJournal(t, path)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := j.Record(ctx, issued(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Record with a cancelled context: %v, want context.Canceled", err)
	}
	bad := map[string]func(*tsa.Issued){
		"no serial":      func(is *tsa.Issued) { is.Serial = nil },
		"negative":       func(is *tsa.Issued) { is.Serial = big.NewInt(-1) },
		"no policy":      func(is *tsa.Issued) { is.Policy = nil },
		"unknown hash":   func(is *tsa.Issued) { is.Hash = crypto.MD5 },
		"hash not given": func(is *tsa.Issued) { is.Hash = 0 },
	}
	for name, damage := range bad {
		is := issued(2)
		damage(is)
		if err := j.Record(t.Context(), is); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	j.Close()
	if got := readJournal(t, path); len(got) != 0 {
		t.Errorf("%d entries written, want none", len(got))
	}
}

func TestReadJournalErrors(t *testing.T) {
	t.Parallel()
	good := `{"serial":"1","gen_time":"2026-01-02T03:04:05Z","policy":"1.2.3","hash":"sha256","imprint":"00","token_sha256":"` + strings.Repeat("00", 32) + `"}`
	tests := map[string]string{
		"not json":        "hello",
		"bad serial":      strings.Replace(good, `"1"`, `"xyz"`, 1),
		"negative serial": strings.Replace(good, `"1"`, `"-1"`, 1),
		"bad time":        strings.Replace(good, "2026-01-02T03:04:05Z", "yesterday", 1),
		"bad policy":      strings.Replace(good, "1.2.3", "1.2.x", 1),
		"no hash":         strings.Replace(good, `"hash":"sha256",`, "", 1),
		"bad imprint":     strings.Replace(good, `"imprint":"00"`, `"imprint":"0g"`, 1),
		"short token":     strings.Replace(good, strings.Repeat("00", 32), "00", 1),
		"bad nonce":       strings.Replace(good, `"imprint"`, `"nonce":"zz","imprint"`, 1),
	}
	for name, line := range tests {
		t.Run(name, func(t *testing.T) {
			n := 0
			err := tsa.ReadJournal(strings.NewReader(good+"\n"+line+"\n"+good+"\n"), func(tsa.JournalEntry) error { n++; return nil })
			if err == nil || !strings.Contains(err.Error(), "line 2") {
				t.Errorf("ReadJournal: %v, want an error on line 2", err)
			}
			if n != 1 {
				t.Errorf("fn called %d times, want once (before the bad line)", n)
			}
		})
	}
	stop := errors.New("stop")
	if err := tsa.ReadJournal(strings.NewReader(good+"\n"+good+"\n"), func(tsa.JournalEntry) error { return stop }); err != stop {
		t.Errorf("ReadJournal returned %v, want fn's error as is", err)
	}
}

// BenchmarkJournalRecord records from one writer (each record waits for
// its own fsync: the disk's fsync latency) and from 64 (group commit).
func BenchmarkJournalRecord(b *testing.B) {
	report := func(b *testing.B, j *tsa.Journal) {
		stats := j.Stats()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		b.ReportMetric(float64(stats.Records)/float64(stats.Syncs), "records/fsync")
	}
	b.Run("writers=1", func(b *testing.B) {
		j := openJournal(b, filepath.Join(b.TempDir(), "issued.jsonl"))
		is := issued(0)
		b.ReportAllocs()
		for b.Loop() {
			is.Serial = new(big.Int).Add(is.Serial, big.NewInt(1))
			if err := j.Record(context.Background(), is); err != nil {
				b.Fatal(err)
			}
		}
		report(b, j)
	})
	b.Run("writers=64", func(b *testing.B) {
		j := openJournal(b, filepath.Join(b.TempDir(), "issued.jsonl"))
		var serial atomic.Int64
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((64 + procs - 1) / procs)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			is := issued(0)
			for pb.Next() {
				is.Serial = big.NewInt(serial.Add(1))
				if err := j.Record(context.Background(), is); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b, j)
	})
}
