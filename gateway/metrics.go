package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/internal/promreg"
)

type metrics struct {
	requests *prometheus.CounterVec   // listener, route, code
	seconds  *prometheus.HistogramVec // listener, route
	// overloaded counts the requests refused for the in-flight bound.
	overloaded *prometheus.CounterVec // listener
	listener   string
}

// newMetrics registers the HTTP metrics of one listener. Several listeners
// share the collectors: a second registration reuses the first.
func newMetrics(reg prometheus.Registerer, listener string) *metrics {
	m := &metrics{
		listener: listener,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_http_requests_total",
			Help: "HTTP requests answered, by listener, route and status code.",
		}, []string{"listener", "route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pec_http_request_seconds",
			Help:    "Time to answer an HTTP request, by listener and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"listener", "route"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_http_overloaded_total",
			Help: "HTTP requests refused with 503 because the listener served its max_in_flight already.",
		}, []string{"listener"}),
	}
	if reg == nil {
		return m
	}
	m.requests = promreg.Register(reg, m.requests)
	m.seconds = promreg.Register(reg, m.seconds)
	m.overloaded = promreg.Register(reg, m.overloaded)
	return m
}

// instrument counts and times the requests of one route. Routes are fixed
// strings, so the label sets stay bounded.
func (m *metrics) instrument(route string, next http.Handler) http.Handler {
	observe := m.seconds.WithLabelValues(m.listener, route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		observe.Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(m.listener, route, strconv.Itoa(sw.status)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection: without it,
// the deadlines that an upload or a download moves on as it progresses
// were refused (ErrNotSupported) and the listener's 30 s request timeout
// cut every transfer longer than that.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
