package gateway

import (
	"net/http"

	"pec/gateway/api"
	"pec/tsa"
)

// limitInFlight serves at most max requests of next at once (0:
// DefaultMaxInFlight; negative: no bound). One more is answered at once
// with 503 and Retry-After — a problem of type overloaded, or on the
// time-stamp routes an RFC 3161 systemFailure — rather than queued: a
// queue without bound turns overload into latency for everyone and memory
// for the node (Tessera's ErrPushback). The probes are not counted.
func limitInFlight(next http.Handler, max int, m *metrics) http.Handler {
	return limitSlots(next, inFlightSlots(max), m)
}

// inFlightSlots is the semaphore of an in-flight bound of max (see
// limitInFlight); nil: no bound.
func inFlightSlots(max int) chan struct{} {
	if max == 0 {
		max = DefaultMaxInFlight
	}
	if max < 0 {
		return nil
	}
	return make(chan struct{}, max)
}

// limitSlots is limitInFlight with its semaphore, which the tsa
// listener's fast lane shares (tsalane.go); nil: no bound.
func limitSlots(next http.Handler, slots chan struct{}, m *metrics) http.Handler {
	if slots == nil {
		return next
	}
	overloaded := m.overloaded.WithLabelValues(m.listener)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			overloaded.Inc()
			w.Header().Set("Retry-After", "1")
			if r.URL.Path == "/tsa" || r.URL.Path == "/v1/timestamps" {
				writeReply(w, http.StatusServiceUnavailable, tsa.Reject(tsa.FailSystemFailure, "overloaded: try again"))
				return
			}
			writeProblem(w, api.NewProblem(api.TypeOverloaded, "the node serves as many requests as it can: try again"))
		}
	})
}
