package main

import (
	"testing"
	"time"

	"pec/evidence"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-03-01T09:30:00Z", time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC), true},
		{"2026-03-01T09:30:00.5+01:00", time.Date(2026, 3, 1, 8, 30, 0, 5e8, time.UTC), true},
		{"2026-03-01", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{"24h", now.Add(-24 * time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"0s", now, true},
		{"-1h", time.Time{}, false}, // the future is no "since"
		{"yesterday", time.Time{}, false},
		{"2026-13-01", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSince(tc.in, now)
			if (err == nil) != tc.ok || !got.Equal(tc.want) {
				t.Errorf("parseSince(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestRecordFilter(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	rec := &evidence.Record{
		ID: "ev-1", Type: evidence.TimestampIssued, Time: t0,
		Actors: []evidence.Actor{
			{Role: "tsa", Subject: "CN=PEC TSA"},
			{Role: "client", Subject: "CN=Comune di Test,O=Comune", Fingerprint: [32]byte{0xab, 0xcd, 0xef}},
		},
	}
	for _, tc := range []struct {
		name   string
		types  []string
		since  time.Time
		actor  string
		passes bool
	}{
		{"no filter", nil, time.Time{}, "", true},
		{"the type", []string{"timestamp.issued"}, time.Time{}, "", true},
		{"the family", []string{"timestamp"}, time.Time{}, "", true},
		{"the family, trailing dot", []string{"timestamp."}, time.Time{}, "", true},
		{"not a string prefix", []string{"timestamp.issue"}, time.Time{}, "", false},
		{"not a word prefix", []string{"time"}, time.Time{}, "", false},
		{"another type", []string{"proof.read"}, time.Time{}, "", false},
		{"one of several", []string{"proof.read", "timestamp"}, time.Time{}, "", true},
		{"since before", nil, t0.Add(-time.Second), "", true},
		{"since the very time", nil, t0, "", true},
		{"since after", nil, t0.Add(time.Nanosecond), "", false},
		{"actor subject, any case", nil, time.Time{}, "comune DI", true},
		{"second actor's fingerprint", nil, time.Time{}, "ABCDEF00", true},
		{"first actor", nil, time.Time{}, "PEC TSA", true},
		{"no such actor", nil, time.Time{}, "partner-a", false},
		{"role is not matched", nil, time.Time{}, "client", false},
		{"all filters at once", []string{"timestamp"}, t0, "abcdef", true},
		{"all but one", []string{"timestamp"}, t0, "nobody", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := recordFilter(tc.types, tc.since, tc.actor)(rec); got != tc.passes {
				t.Errorf("filter(types %q, since %v, actor %q) = %v, want %v", tc.types, tc.since, tc.actor, got, tc.passes)
			}
		})
	}
}

func TestActorCell(t *testing.T) {
	for _, tc := range []struct {
		name   string
		actors []evidence.Actor
		want   string
	}{
		{"none", nil, "-"},
		{"one", []evidence.Actor{{Role: "sender", Subject: "CN=A,O=B"}}, "CN=A,O=B (sender)"},
		{"several", []evidence.Actor{{Role: "sender", Subject: "CN=A"}, {Role: "recipient"}, {Role: "tsa"}}, "CN=A (sender) +2"},
		{"no subject", []evidence.Actor{{Role: "client", Fingerprint: [32]byte{0xde, 0xad, 0xbe, 0xef}}}, "sha256:deadbeef00000000 (client)"},
		{"an escape sequence", []evidence.Actor{{Role: "x", Subject: "CN=\x1b[2J"}}, `"CN=\x1b[2J" (x)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := actorCell(tc.actors); got != tc.want {
				t.Errorf("actorCell = %q, want %q", got, tc.want)
			}
		})
	}
}
