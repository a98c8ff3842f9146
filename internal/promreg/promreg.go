// Package promreg registers Prometheus collectors on an injected registry
// the way every PEC package needs: a second component of the same kind on
// the same registry (two key stores, two listeners) shares the collectors
// of the first instead of failing.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg and returns it, or returns the collector
// already registered with the same description. With a nil reg, c is
// returned unregistered: metrics are then counted and never exported.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
