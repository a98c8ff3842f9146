package gateway

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"pec/gateway/api"
)

// ReadinessCheck names one condition of /readyz: Check returns nil when the
// node can serve that part (the TSA clock is in bounds, the HSM answers).
type ReadinessCheck struct {
	Name  string
	Check func() error
}

// readiness runs the checks: the answer with every check and its reason,
// and its status (503 when one fails, so that a load balancer stops
// sending traffic).
func readiness(checks []ReadinessCheck) (api.Readiness, int) {
	body := api.Readiness{Status: "ready", Checks: []api.Check{}}
	status := http.StatusOK
	for _, c := range checks {
		res := api.Check{Name: c.Name, Status: "ok"}
		if err := c.Check(); err != nil {
			// Readiness reasons are operator-facing facts (clock offset,
			// unreachable source), never secrets; they are served on the
			// ops listener only.
			res.Status, res.Reason = "failing", err.Error()
			body.Status, status = "not ready", http.StatusServiceUnavailable
		}
		body.Checks = append(body.Checks, res)
	}
	return body, status
}

// registerProbes adds the probes of a partner-facing listener: /healthz
// (the process answers) and a plain /readyz (the status alone: which check
// fails, and why, is for the ops listener).
func registerProbes(mux *http.ServeMux, checks []ReadinessCheck) {
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		body, status := readiness(checks)
		writeJSON(w, status, api.Readiness{Status: body.Status})
	})
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// NewOpsHandler serves the ops listener: /healthz, /readyz with every
// check and its reason, /metrics from opts.Gatherer and, with opts.Pprof,
// the runtime's profiles under /debug/pprof/ (CPU, heap, goroutines,
// execution trace: off unless asked for, PEC_DEBUG_PPROF=1 for pec serve,
// which bench/edgeload sets to see where a loaded node spends its time). It has no
// in-flight bound, so that operators see a node that refuses partners
// for overload.
func NewOpsHandler(opts Options) http.Handler {
	mux := http.NewServeMux()
	registerBackup(mux, opts) // POST /backup, GET /proof/snapshot
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		body, status := readiness(opts.Ready)
		writeJSON(w, status, body)
	})
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	if opts.Pprof {
		// A CPU profile or trace runs for ?seconds=N (default 30), within
		// the listener's write timeout.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return problemRoutes(mux)
}
