package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pec/internal/promreg"
)

func TestRegisterShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_test_total", Help: "test"})
	}
	a := promreg.Register(reg, newCounter())
	b := promreg.Register(reg, newCounter())
	a.Inc()
	b.Inc()
	if got := testutil.ToFloat64(a); got != 2 {
		t.Errorf("the second registration did not share the first collector: %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "pec_test_total"); err != nil || n != 1 {
		t.Errorf("gathered %d series (%v), want 1", n, err)
	}
	c := promreg.Register(nil, newCounter())
	c.Inc() // usable without a registry
}
