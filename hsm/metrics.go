package hsm

import (
	"github.com/prometheus/client_golang/prometheus"

	"pec/internal/promreg"
)

// metrics are the key store's Prometheus collectors. Without a registry they
// are built but not registered, so the hot path never checks for nil.
type metrics struct {
	signSeconds   *prometheus.HistogramVec // key_label
	errors        *prometheus.CounterVec   // op: sign, decrypt
	recoveries    *prometheus.CounterVec   // kind: session, login, key, token, module
	reinits       *prometheus.CounterVec   // result: ok, error
	available     *prometheus.GaugeVec     // token
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
		reinits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_hsm_reinit_total",
			Help: "Re-initialisations of the PKCS#11 module (C_Finalize, C_Initialize) by a recovery, by result: ok, error.",
		}, []string{"result"}),
		available: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pec_hsm_available",
			Help: "1 while the token (as configured: label or serial) is available, 0 while calls fail with hsm.ErrUnavailable.",
		}, []string{"token"}),
		sessionsInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_hsm_sessions_in_use",
			Help: "PKCS#11 sessions running an operation now, across key stores.",
		}),
	}
	if reg == nil {
		return m
	}
	m.signSeconds = promreg.Register(reg, m.signSeconds)
	m.errors = promreg.Register(reg, m.errors)
	m.recoveries = promreg.Register(reg, m.recoveries)
	m.reinits = promreg.Register(reg, m.reinits)
	m.available = promreg.Register(reg, m.available)
	m.sessionsInUse = promreg.Register(reg, m.sessionsInUse)
	return m
}
