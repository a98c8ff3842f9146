// Package lifecycle starts and stops the long-running parts of a node —
// its listeners, the evidence log's sequencer, the exchange's queue
// workers, the clock guard, the development CA — as components under one
// lifecycle: started in order, stopped in the reverse order, each given
// the time it needs to finish what it is doing (a listener its requests
// under way, a queue worker its job, or handing it back), and a component
// that fails stops the node rather than leaving it half alive.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Component is one long-running part of a node.
type Component interface {
	// Name names it in logs and errors: "api listener", "exchange queue".
	Name() string
	// Start starts it and returns once it runs; its work goes on in
	// goroutines of its own until Stop. A failure to start is returned.
	Start(ctx context.Context) error
	// Stop asks it to finish and returns once it has, or when ctx ends
	// (its error then).
	Stop(ctx context.Context) error
}

// Runner is a component whose work is one function that runs until its
// context ends: Start calls Run in a goroutine, Stop cancels its context
// and waits for Run to return. A Run that returns an error before it is
// stopped is a failure of the component (Group.Failed).
type Runner struct {
	ComponentName string
	Run           func(ctx context.Context) error

	cancel context.CancelFunc
	done   chan struct{}
	err    error
	failed func(error)
}

// Name implements Component.
func (r *Runner) Name() string { return r.ComponentName }

// Start implements Component.
func (r *Runner) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		r.err = r.Run(ctx)
		if ctx.Err() == nil && r.failed != nil {
			if r.err == nil {
				r.err = errors.New("stopped by itself")
			}
			r.failed(r.err)
		}
	}()
	return nil
}

// Stop implements Component.
func (r *Runner) Stop(ctx context.Context) error {
	r.cancel()
	select {
	case <-r.done:
		if errors.Is(r.err, context.Canceled) {
			return nil
		}
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Func is a component of two functions.
type Func struct {
	ComponentName string
	OnStart       func(ctx context.Context) error
	OnStop        func(ctx context.Context) error
}

// Name implements Component.
func (f Func) Name() string { return f.ComponentName }

// Start implements Component.
func (f Func) Start(ctx context.Context) error {
	if f.OnStart == nil {
		return nil
	}
	return f.OnStart(ctx)
}

// Stop implements Component.
func (f Func) Stop(ctx context.Context) error {
	if f.OnStop == nil {
		return nil
	}
	return f.OnStop(ctx)
}

// Group is the components of a node, started in the order they are
// added and stopped in the reverse order.
type Group struct {
	log     *slog.Logger
	mu      sync.Mutex
	started []Component
	fail    chan error
	once    sync.Once
}

// New is an empty group logging to log (nil: nowhere).
func New(log *slog.Logger) *Group {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Group{log: log, fail: make(chan error, 1)}
}

// Start starts c; if it fails, c is not part of the group (the caller
// stops the group).
func (g *Group) Start(ctx context.Context, c Component) error {
	if r, ok := c.(*Runner); ok {
		r.failed = func(err error) { g.Fail(fmt.Errorf("%s: %w", c.Name(), err)) }
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", c.Name(), err)
	}
	g.mu.Lock()
	g.started = append(g.started, c)
	g.mu.Unlock()
	g.log.Debug("lifecycle: started", "component", c.Name())
	return nil
}

// Fail reports a component's failure: the first one is what Failed
// delivers.
func (g *Group) Fail(err error) {
	select {
	case g.fail <- err:
	default:
	}
}

// Failed delivers the first failure of a component.
func (g *Group) Failed() <-chan error { return g.fail }

// Stop stops the components in the reverse order of their start, each
// within what is left of ctx, and returns their errors. Stopping twice
// stops once.
func (g *Group) Stop(ctx context.Context) error {
	var errs []error
	g.once.Do(func() {
		g.mu.Lock()
		started := g.started
		g.mu.Unlock()
		for i := len(started) - 1; i >= 0; i-- {
			c := started[i]
			begin := time.Now()
			if err := c.Stop(ctx); err != nil {
				g.log.Warn("lifecycle: stopped with an error", "component", c.Name(), "err", err, "took", time.Since(begin))
				errs = append(errs, fmt.Errorf("stop %s: %w", c.Name(), err))
				continue
			}
			g.log.Debug("lifecycle: stopped", "component", c.Name(), "took", time.Since(begin))
		}
	})
	return errors.Join(errs...)
}
