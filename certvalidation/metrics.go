package certvalidation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/internal/promreg"
)

type metrics struct {
	validations *prometheus.CounterVec   // purpose, result
	seconds     prometheus.Histogram     // validations that were not cache hits
	fetches     *prometheus.CounterVec   // kind, result
	fetchTime   *prometheus.HistogramVec // kind
	cache       *prometheus.CounterVec   // cache, result
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_certvalidation_validations_total",
			Help: "Certificate validations, by purpose and result (valid, or the reason it was invalid).",
		}, []string{"purpose", "result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pec_certvalidation_validate_seconds",
			Help:    "Time to validate a certificate when the result was not cached.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_certvalidation_fetches_total",
			Help: "HTTP fetches of revocation data and certificates, by kind (crl, ocsp, aia) and result (ok, error).",
		}, []string{"kind", "result"}),
		fetchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pec_certvalidation_fetch_seconds",
			Help:    "Time of one HTTP fetch, by kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_certvalidation_cache_total",
			Help: "Cache lookups, by cache (results, ocsp, crl) and result (hit, miss).",
		}, []string{"cache", "result"}),
	}
	m.validations = promreg.Register(reg, m.validations)
	m.seconds = promreg.Register(reg, m.seconds)
	m.fetches = promreg.Register(reg, m.fetches)
	m.fetchTime = promreg.Register(reg, m.fetchTime)
	m.cache = promreg.Register(reg, m.cache)
	return m
}

func (m *metrics) fetched(kind string, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.fetches.WithLabelValues(kind, result).Inc()
	m.fetchTime.WithLabelValues(kind).Observe(d.Seconds())
}

func (m *metrics) lookup(cache string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cache.WithLabelValues(cache, result).Inc()
}
