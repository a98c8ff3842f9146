package lifecycle

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOrder: components start in order and stop in the reverse order,
// each Runner's context cancelled only at its own stop.
func TestOrder(t *testing.T) {
	var mu sync.Mutex
	var events []string
	note := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
	g := New(nil)
	for _, name := range []string{"clock", "queue", "listener"} {
		r := &Runner{ComponentName: name, Run: func(ctx context.Context) error {
			note("run " + name)
			<-ctx.Done()
			note("end " + name)
			return ctx.Err()
		}}
		if err := g.Start(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if err := g.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(t.Context()); err != nil {
		t.Fatal("a second Stop:", err)
	}
	got := strings.Join(events[3:], ",")
	if got != "end listener,end queue,end clock" {
		t.Errorf("stop order %s", got)
	}
}

// TestFailure: a Runner that returns before it is stopped is the group's
// failure; one that fails to start is not part of the group.
func TestFailure(t *testing.T) {
	g := New(nil)
	boom := errors.New("boom")
	stopped := false
	if err := g.Start(t.Context(), Func{ComponentName: "first", OnStop: func(context.Context) error { stopped = true; return nil }}); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context(), &Runner{ComponentName: "worker", Run: func(context.Context) error { return boom }}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.Failed():
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "worker") {
			t.Errorf("failure %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no failure reported")
	}
	if err := g.Start(t.Context(), Func{ComponentName: "broken", OnStart: func(context.Context) error { return boom }}); err == nil || !strings.Contains(err.Error(), "start broken") {
		t.Errorf("start error %v", err)
	}
	if err := g.Stop(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Stop = %v, want the worker's error", err)
	}
	if !stopped {
		t.Error("first not stopped")
	}
}

// TestStopDeadline: a component that does not finish in time is given
// up with the context's error, and the others are stopped all the same.
func TestStopDeadline(t *testing.T) {
	g := New(nil)
	released := make(chan struct{})
	defer close(released)
	var others int
	g.Start(t.Context(), Func{ComponentName: "a", OnStop: func(context.Context) error { others++; return nil }})
	g.Start(t.Context(), &Runner{ComponentName: "stuck", Run: func(context.Context) error { <-released; return nil }})
	g.Start(t.Context(), Func{ComponentName: "b", OnStop: func(context.Context) error { others++; return nil }})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := g.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("Stop = %v", err)
	}
	if others != 2 {
		t.Errorf("%d other components stopped, want 2", others)
	}
}
