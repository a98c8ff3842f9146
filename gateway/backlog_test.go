package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"pec/evidence"
	"pec/gateway/api"
	"pec/middleoffice"
)

// TestSubmissionBacklog: with exchange.max_backlog exchanges waiting for
// delivery (the queue not run: a stalled delivery), a submission is
// answered 503 delivery-backlog with Retry-After, not recorded, and
// counted; once the queue delivered them, submissions are accepted again,
// and every exchange acknowledged before is in the recipient's inbox.
func TestSubmissionBacklog(t *testing.T) {
	t.Parallel()
	n := newExchangeNode(t, nodeOptions{cfg: middleoffice.ExchangeConfig{MaxBacklog: 2}})
	doc := []byte("%PDF-1.7 a dossier")
	m := manifestTo("b", newDoc("d.pdf", doc))
	var accepted []string
	for range 2 {
		accepted = append(accepted, n.accepted(t, "a", m, doc).Exchange)
	}
	for i := range 2 {
		ct, body := submission(t, m, doc)
		resp, data := n.post(t, "a", ct, body, nil)
		p := problem(t, resp, data, api.TypeDeliveryBacklog)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("refusal %d: %s, Retry-After %q", i, resp.Status, resp.Header.Get("Retry-After"))
		}
		if p.Exchange != "" || p.EvidenceID != "" || !strings.Contains(p.Detail, "2 accepted exchanges wait") {
			t.Errorf("refusal %d: %+v", i, p)
		}
	}
	if r := n.records(t, evidence.SubmissionRejected); len(r) != 0 {
		t.Errorf("%d submission.rejected records for the refusals", len(r))
	}
	if got := counter(t, n, "pec_exchange_submissions_total", "backlog"); got != 2 {
		t.Errorf("pec_exchange_submissions_total{outcome=backlog} = %v, want 2", got)
	}
	if got := counter(t, n, "pec_exchange_backlog", ""); got != 2 {
		t.Errorf("pec_exchange_backlog = %v, want 2", got)
	}

	n.deliver()
	if got := counter(t, n, "pec_exchange_backlog", ""); got != 0 {
		t.Errorf("pec_exchange_backlog once delivered = %v, want 0", got)
	}
	accepted = append(accepted, n.accepted(t, "a", m, doc).Exchange)
	n.deliver()
	inbox, err := n.api("b").Inbox(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range inbox.Exchanges {
		got[e.ID] = true
	}
	for _, id := range accepted {
		if !got[id] {
			t.Errorf("exchange %s acknowledged, not in the inbox (%d there)", id, len(inbox.Exchanges))
		}
	}
}

// counter reads a metric of the exchange service: the series whose
// outcome label is outcome ("": the metric has no label).
func counter(t *testing.T, n *exchangeNode, name, outcome string) float64 {
	t.Helper()
	mfs, err := n.xreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := outcome == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
