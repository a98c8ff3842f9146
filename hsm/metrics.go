package hsm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the key store's Prometheus collectors. Without a registry they
// are built but not registered, so the hot path never checks for nil.
type metrics struct {
	signSeconds   *prometheus.HistogramVec // key_label
	errors        *prometheus.CounterVec   // op: sign, decrypt
	recoveries    *prometheus.CounterVec   // kind: session, login, key, token, module
	sessionsInUse prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		signSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pec_hsm_sign_seconds",
			Help: "Time to make one signature, by key label (successful signatures only).",
			// From a software ECDSA signature (tens of µs) to an RSA-3072
			// signature on a busy network HSM.
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"key_label"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_hsm_errors_total",
			Help: "Key operations that failed, after any recovery, by operation.",
		}, []string{"op"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_hsm_recoveries_total",
			Help: "Recoveries from PKCS#11 faults, by kind: session, login, key, token, module.",
		}, []string{"kind"}),
		sessionsInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_hsm_sessions_in_use",
			Help: "PKCS#11 sessions running an operation now, across key stores.",
		}),
	}
	if reg == nil {
		return m
	}
	m.signSeconds = registerOrReuse(reg, m.signSeconds)
	m.errors = registerOrReuse(reg, m.errors)
	m.recoveries = registerOrReuse(reg, m.recoveries)
	m.sessionsInUse = registerOrReuse(reg, m.sessionsInUse)
	return m
}

// registerOrReuse registers c, or returns the collector already registered
// under the same description: two key stores opened on one registry (a
// test, a restart of a component) share the collectors instead of panicking.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
