package main

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
)

func TestParseGauge(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       float64
		found      bool
	}{
		{"absent", "# HELP go_goroutines x\ngo_goroutines 12\n", 0, false},
		{"plain", "# TYPE pec_proof_seal_delay_max_seconds gauge\npec_proof_seal_delay_max_seconds 0.25\n", 0.25, true},
		{"labels, the largest", "pec_proof_seal_delay_max_seconds{store=\"a\"} 0.5\npec_proof_seal_delay_max_seconds{store=\"b\"} 1.5\n", 1.5, true},
		{"with a timestamp", "pec_proof_seal_delay_max_seconds 2e-3 1700000000000\n", 0.002, true},
		{"a longer name is another metric", "pec_proof_seal_delay_max_seconds_total 9\n", 0, false},
		{"a longer name with labels", "pec_proof_seal_delay_max_seconds_count{a=\"b\"} 9\n", 0, false},
		{"comments are not values", "# pec_proof_seal_delay_max_seconds 9\n", 0, false},
		{"NaN and garbage skipped", "pec_proof_seal_delay_max_seconds NaN\npec_proof_seal_delay_max_seconds x\npec_proof_seal_delay_max_seconds{a=\"b\"}\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found := parseGauge(strings.NewReader(tc.text), sealDelayMetric)
			if got != tc.want || found != tc.found {
				t.Errorf("parseGauge = %v, %v; want %v, %v", got, found, tc.want, tc.found)
			}
		})
	}
}

func FuzzParseGauge(f *testing.F) {
	f.Add("pec_proof_seal_delay_max_seconds{a=\"}\"} 1\n")
	f.Add("pec_proof_seal_delay_max_seconds 0.5\n")
	f.Fuzz(func(t *testing.T, text string) {
		v, found := parseGauge(strings.NewReader(text), sealDelayMetric)
		if !found && v != 0 {
			t.Errorf("not found, yet value %v", v)
		}
		if found && !strings.Contains(text, sealDelayMetric) {
			t.Errorf("found %v in a text without the metric", v)
		}
	})
}

// TestTSARequests checks that the patched template is a TimeStampReq that
// the library reads back with the imprint and nonce that were patched in.
func TestTSARequests(t *testing.T) {
	s, err := newTSAScenario("http://127.0.0.1:1/tsa")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		req := bytes.Clone(s.template)
		digest := req[s.digestOffset : s.digestOffset+32]
		nonce := req[s.nonceOffset : s.nonceOffset+nonceLen]
		for j := range digest {
			digest[j] = byte(i * j)
		}
		for j := range nonce {
			nonce[j] = byte(255 - i - j)
		}
		nonce[0] = nonce[0]&0x7f | 0x01
		got, err := timestamp.ParseRequest(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got.HashAlgorithm != crypto.SHA256 || !bytes.Equal(got.HashedMessage, digest) ||
			got.Nonce.Cmp(new(big.Int).SetBytes(nonce)) != 0 || !got.Certificates {
			t.Fatalf("request %d reads back as %+v", i, got)
		}
	}
}

func TestCheckGranted(t *testing.T) {
	token := asn1.RawValue{FullBytes: []byte{0x30, 0x00}}
	status := func(n int) asn1.RawValue {
		der, _ := asn1.Marshal(struct{ Status int }{n})
		return asn1.RawValue{FullBytes: der}
	}
	granted, _ := asn1.Marshal(struct{ Status, Token asn1.RawValue }{status(0), token})
	withMods, _ := asn1.Marshal(struct{ Status, Token asn1.RawValue }{status(1), token})
	rejected, _ := asn1.Marshal(struct{ Status asn1.RawValue }{status(2)})
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"granted", granted, true},
		{"granted with modifications", withMods, true},
		{"rejection", rejected, false},
		{"rejection with a token", must(asn1.Marshal(struct{ Status, Token asn1.RawValue }{status(2), token})), false},
		{"waiting", must(asn1.Marshal(struct{ Status, Token asn1.RawValue }{status(3), token})), false},
		{"granted without a token", must(asn1.Marshal(struct{ Status asn1.RawValue }{status(0)})), false},
		{"not DER", []byte("<html>"), false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkGranted(tc.body); (err == nil) != tc.ok {
				t.Errorf("checkGranted = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestFormats(t *testing.T) {
	for d, want := range map[time.Duration]string{
		219 * time.Microsecond:   "219 µs",
		1362 * time.Microsecond:  "1.36 ms",
		22300 * time.Microsecond: "22.3 ms",
		1500 * time.Millisecond:  "1.50 s",
		12 * time.Second:         "12.00 s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 28601: "28,601", 1234567: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
	if got := strconv.Quote(percent(1, 0)); got != `"n/a"` {
		t.Errorf("percent of nothing = %s", got)
	}
}
