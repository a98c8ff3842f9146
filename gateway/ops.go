package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadinessCheck names one condition of /readyz: Check returns nil when the
// node can serve that part (the TSA clock is in bounds, the HSM answers).
type ReadinessCheck struct {
	Name  string
	Check func() error
}

// registerOps adds the operator endpoints to mux: /healthz (the process
// answers), /readyz (every check passes; 503 with the failing checks
// otherwise, so a load balancer stops sending traffic) and /metrics.
func registerOps(mux *http.ServeMux, checks []ReadinessCheck, gatherer prometheus.Gatherer) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		type result struct {
			Name   string `json:"name"`
			Status string `json:"status"`
			Reason string `json:"reason,omitempty"`
		}
		body := struct {
			Status string   `json:"status"`
			Checks []result `json:"checks"`
		}{Status: "ready", Checks: []result{}}
		status := http.StatusOK
		for _, c := range checks {
			res := result{Name: c.Name, Status: "ok"}
			if err := c.Check(); err != nil {
				// Readiness reasons are operator-facing facts (clock offset,
				// unreachable source), never secrets.
				res.Status, res.Reason = "failing", err.Error()
				body.Status, status = "not ready", http.StatusServiceUnavailable
			}
			body.Checks = append(body.Checks, res)
		}
		writeJSON(w, status, body)
	})
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
}
