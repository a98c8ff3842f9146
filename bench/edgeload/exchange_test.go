package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		name string
	}{
		{"10KiB", 10 << 10, "10KiB"},
		{"1MiB", 1 << 20, "1MiB"},
		{"100MiB", 100 << 20, "100MiB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"1536KiB", 1536 << 10, "1536KiB"},
		{"1000", 1000, "1000B"},
		{"0", 0, "0B"},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if n := sizeName(tc.want); n != tc.name {
			t.Errorf("sizeName(%d) = %q, want %q", tc.want, n, tc.name)
		}
	}
	for _, bad := range []string{"", "MiB", "-1KiB", "1.5MiB", "10 KiB", "1TiB", "99999999999GiB"} {
		if n, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, n)
		}
	}
}

// TestDocuments: the generated content has the declared size and digest,
// reads the same whatever the reads' sizes, and no two blocks of it (nor
// two documents) are the same.
func TestDocuments(t *testing.T) {
	docs, err := newDocuments(3*genBlock + 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 2 {
		t.Fatalf("%d documents", len(docs))
	}
	whole, _ := io.ReadAll(docs[0].reader())
	if int64(len(whole)) != docs[0].size {
		t.Fatalf("%d bytes, declared %d", len(whole), docs[0].size)
	}
	if sum := sha256.Sum256(whole); docs[0].sha256 != string(hexOf(sum[:])) {
		t.Error("the digest is not the content's")
	}
	var small bytes.Buffer
	r := docs[0].reader()
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		small.Write(buf[:n])
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(small.Bytes(), whole) {
		t.Error("read 7 bytes at a time, the content differs")
	}
	for i := 1; i < 3; i++ {
		if bytes.Equal(whole[:genBlock], whole[i*genBlock:(i+1)*genBlock]) {
			t.Errorf("block %d is block 0", i)
		}
	}
	other, _ := io.ReadAll(docs[1].reader())
	if bytes.Equal(other, whole) || docs[0].sha256 == docs[1].sha256 {
		t.Error("two documents are the same")
	}
	if big, _ := newDocuments(100 << 20); len(big) != 1 {
		t.Errorf("%d documents of 100 MiB, want one", len(big))
	}
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tpec\nVmPeak:\t  912345 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
	for field, want := range map[string]int64{"VmHWM": 50 << 20, "VmRSS": 40 << 20} {
		if got, err := parseStatus([]byte(status), field); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", field, got, err, want)
		}
	}
	for _, bad := range []string{"", "VmRSS:\n", "VmRSS:\t12 MB\n", "VmRSS:\t-5 kB\n", "VmRSS:\tx kB\n", "VmRSSS:\t5 kB\n"} {
		if v, err := parseStatus([]byte(bad), "VmRSS"); err == nil {
			t.Errorf("parseStatus(%q) = %d, want an error", bad, v)
		}
	}
	stat := "4242 (pec serve) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 12 0 100 0 0\n"
	if v, err := parseStatCPU([]byte(stat)); err != nil || v != 3.25 {
		t.Errorf("parseStatCPU = %v, %v; want 3.25 s", v, err)
	}
	for _, bad := range []string{"", "4242 pec S 1", "4242 (pec) S 1 2 3", "4242 (pec) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 75 0"} {
		if v, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) = %v, want an error", bad, v)
		}
	}
}

func TestParseAll(t *testing.T) {
	text := `# HELP pec_exchange_submissions_total x
# TYPE pec_exchange_submissions_total counter
pec_exchange_submissions_total{outcome="accepted"} 12
pec_exchange_submissions_total{outcome="rejected"} 3
pec_hsm_sign_seconds_sum{key_label="signing"} 0.5
pec_hsm_sign_seconds_sum{key_label="tsa"} 0.25
pec_hsm_sign_seconds_count{key_label="a b}"} 7
pec_proof_appends_total 40 1700000000000
garbage
pec_nan NaN
`
	m := parseAll(strings.NewReader(text))
	for k, want := range map[string]float64{
		metricAccepted:                   12,
		"pec_exchange_submissions_total": 15,
		metricSignSum:                    0.75,
		metricSignCount:                  7,
		metricAppends:                    40,
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if _, ok := m["pec_nan"]; ok {
		t.Error("NaN read as a value")
	}
	d := deltas(map[string]float64{metricAccepted: 10, metricSignCount: 20, metricSignSum: 1}, map[string]float64{metricAccepted: 20, metricSignCount: 60, metricSignSum: 3})
	if d.accepted != 10 || d.signs != 4 || d.signMean != 50 {
		t.Errorf("deltas = %+v", d)
	}
	if d := deltas(nil, nil); d.signs != 0 || d.signMean != 0 {
		t.Errorf("deltas of nothing = %+v", d)
	}
}

func FuzzParseAll(f *testing.F) {
	f.Add("a{b=\"}\"} 1\na 2\n")
	f.Add("# x\nm 0.5 17\n")
	f.Fuzz(func(t *testing.T, text string) {
		for k, v := range parseAll(strings.NewReader(text)) {
			if v != v {
				t.Errorf("%s: NaN", k)
			}
		}
	})
}

const tracesSample = `File: pec
Type: cpu
Time: 2026-12-01 12:00:00 UTC
Duration: 5s, Total samples = 100ms ( 2.00%)
-----------+-------------------------------------------------------
      40ms   crypto/internal/fips140/sha256.blockSHANI
             crypto/internal/fips140/sha256.(*Digest).Write
             pec/middleoffice.(*submission).receive
-----------+-------------------------------------------------------
      30ms   crypto/internal/fips140/aes/gcm.gcmAesDec
             crypto/tls.(*halfConn).decrypt
             crypto/tls.(*Conn).readRecord
-----------+-------------------------------------------------------
      20ms   internal/runtime/syscall/linux.Syscall6
             syscall.Fdatasync
             go.etcd.io/bbolt.fdatasync
-----------+-------------------------------------------------------
      10ms   main.unknown (inline)
-----------+-------------------------------------------------------
`

func TestClassifyTraces(t *testing.T) {
	sums, total := classifyTraces([]byte(tracesSample))
	if total != 100*time.Millisecond {
		t.Errorf("total %v, want 100ms", total)
	}
	want := map[string]time.Duration{
		categories[2].name: 40 * time.Millisecond, // hashing
		categories[1].name: 30 * time.Millisecond, // TLS, though its leaf is AES-GCM
		categories[4].name: 20 * time.Millisecond, // the store
		"other":            10 * time.Millisecond,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s: %v, want %v (all: %v)", k, sums[k], v, sums)
		}
	}
}

func FuzzClassifyTraces(f *testing.F) {
	f.Add(tracesSample)
	f.Add("-----------+\n      1ms   x\n")
	f.Fuzz(func(t *testing.T, text string) {
		sums, total := classifyTraces([]byte(text))
		var sum time.Duration
		for _, v := range sums {
			sum += v
		}
		if sum != total {
			t.Errorf("the categories sum to %v, the total is %v", sum, total)
		}
	})
}

func TestEditConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pec.yaml")
	os.WriteFile(path, []byte("exchange:\n  seal_profile: default           # comment\n  workers: 2\n"), 0o600)
	if err := setSealProfile(path, "cades-bb"); err != nil {
		t.Fatal(err)
	}
	if err := editConfig(path, workersLine, "16"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "exchange:\n  seal_profile: cades-bb           # comment\n  workers: 16\n"; string(got) != want {
		t.Errorf("pec.yaml:\n%s\nwant:\n%s", got, want)
	}
	os.WriteFile(path, []byte("signing:\n  x: 1\n"), 0o600)
	if err := setSealProfile(path, "cades-bb"); err == nil {
		t.Error("a file without the line: no error")
	}
}
