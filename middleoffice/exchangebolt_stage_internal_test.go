package middleoffice

import (
	"bytes"
	"testing"
	"time"
)

// TestStagedPayloadsRelease: once written or dropped, a staged payload's
// bytes are not kept, though its entry waits in the queue behind a recent
// one; stale returns the old ones not written, oldest first.
func TestStagedPayloadsRelease(t *testing.T) {
	var s stagedPayloads
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	data := bytes.Repeat([]byte("d"), 1000)
	s.stage("recent", "a", data, t0.Add(time.Second)) // first: holds the queue
	for i, ex := range []string{"x1", "x2", "x3", "x4"} {
		if !s.stage(ex, "seal.p7m", data, t0.Add(time.Duration(i+2)*time.Second)) {
			t.Fatal("not staged")
		}
	}
	s.written(s.of("x1"))
	s.dropExchange("x2")
	s.drop("x3", "seal.p7m")
	if s.n != 2 || s.bytes != 2000 {
		t.Errorf("%d staged, %d bytes; want 2, 2000", s.n, s.bytes)
	}
	for _, p := range s.fifo {
		if p.written && p.data != nil {
			t.Errorf("%s: written or dropped, its %d bytes kept", p.exchange, len(p.data))
		}
	}
	old := s.stale(t0.Add(10 * time.Second))
	if len(old) != 2 || old[0].p.exchange != "recent" || old[1].p.exchange != "x4" || len(old[1].data) != 1000 {
		t.Fatalf("stale: %+v", old)
	}
	s.written(old)
	s.stale(t0.Add(10 * time.Second))
	if len(s.fifo) != 0 || s.n != 0 || s.bytes != 0 {
		t.Errorf("all written: %d queued, %d staged, %d bytes", len(s.fifo), s.n, s.bytes)
	}
}

// TestStagedQueueCompacts: the written payloads behind a stale one that
// waits for its transaction leave the queue at the next look, not once
// it is written; the order of the others stays.
func TestStagedQueueCompacts(t *testing.T) {
	var s stagedPayloads
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s.stage("stale", "a", []byte("s"), t0)
	for i := range 100 {
		ex := "x" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		s.stage(ex, "seal.p7m", []byte("d"), t0.Add(time.Millisecond))
		s.written(s.of(ex))
	}
	s.stage("recent", "b", []byte("r"), t0.Add(2*time.Second))
	s.stage("later", "c", []byte("l"), t0.Add(3*time.Second))
	old := s.stale(t0.Add(time.Second))
	if len(old) != 1 || old[0].p.exchange != "stale" {
		t.Fatalf("stale: %+v", old)
	}
	if len(s.fifo) != 3 || s.fifo[0].exchange != "stale" || s.fifo[1].exchange != "recent" || s.fifo[2].exchange != "later" {
		var names []string
		for _, p := range s.fifo {
			names = append(names, p.exchange)
		}
		t.Fatalf("the queue after a look: %d entries %q, want stale, recent, later", len(s.fifo), names)
	}
	s.written(old)
	if old := s.stale(t0.Add(time.Second)); len(old) != 0 || len(s.fifo) != 2 {
		t.Errorf("once written: %d stale, %d queued", len(old), len(s.fifo))
	}
}
