package middleoffice_test

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"
	"pec/internal/pgtest"
	"pec/middleoffice"
	"pec/signing"
)

// TestPGExchangesTwoNodes: the exchange service on two nodes sharing one
// PostgreSQL (and one evidence log), both submitting and running their
// queue workers; one node stops abruptly halfway. Every exchange is
// delivered once (one submission.accepted and one delivery.delivered
// record, whichever node worked on it), retries with one idempotency key
// on both nodes make one exchange, and an exchange submitted on one node
// is fetched and decrypted on the other; the queue ends with each
// exchange's expiry job only.
func TestPGExchangesTwoNodes(t *testing.T) {
	cfg := middleoffice.ExchangeConfig{Workers: 3, PollInterval: 20 * time.Millisecond}
	e := newExchangeEnv(t, cfg)
	ctx := t.Context()
	url := pgtest.NewSchema(t)
	e.wrap = func(s middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
		s.Close()
		return openPGExchanges(t, url), ev
	}
	e.restart()
	storeB := openPGExchanges(t, url)
	defer storeB.Close()
	verifier := &signing.Verifier{Chain: signing.X509Validator{Roots: e.roots()}, TSARoots: e.roots()}
	xb, err := middleoffice.NewExchanges(cfg, storeB, e.policy, e.log, e.platform, middleoffice.ExchangeOptions{AckVerifier: verifier, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*middleoffice.Exchanges{e.x, xb}
	runA, stopA := context.WithCancel(ctx)
	runB, stopB := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { e.x.Run(runA) })
	running.Go(func() { xb.Run(runB) })
	defer func() { stopA(); stopB(); running.Wait() }()

	a, b := e.partners["a"].principal, e.partners["b"]
	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i == n/2 {
				stopB() // node b stops: its jobs in flight finish or go back
			}
			x := nodes[i%2]
			if i >= n/2 {
				x = e.x
			}
			doc := newDocument("d.pdf", []byte("%PDF dossier "+strconv.Itoa(i/2)))
			m := manifest("b", doc)
			m.IdempotencyKey = "key-" + strconv.Itoa(i/2) // two submissions per key, one on each node
			s, err := x.Submit(ctx, a, m, sources(doc))
			if err != nil {
				t.Errorf("submission %d: %v", i, err)
				return
			}
			ids[i] = s.Exchange
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := xb.Inbox(ctx, b.principal, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == n/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d exchanges in the inbox, want %d", len(list), n/2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < n; i += 2 {
		if ids[i] != ids[i+1] {
			t.Errorf("one key, two exchanges: %s and %s", ids[i], ids[i+1])
		}
		var types []evidence.EventType
		for _, r := range e.records(ids[i]) {
			types = append(types, r.Type)
		}
		if !slices.Equal(types, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered}) {
			t.Errorf("exchange %s: records %v, want accepted and delivered once", ids[i], types)
		}
	}
	// Left: each delivered exchange's expiry, nothing else.
	jobs, err := storeB.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expiries := map[string]int{}
	for _, j := range jobs {
		if j.Kind != middleoffice.JobExpire || j.HeldUntil != (time.Time{}) {
			t.Errorf("job left: %+v", j)
		}
		expiries[j.Exchange]++
	}
	for i := 0; i < n; i += 2 {
		if expiries[ids[i]] != 1 {
			t.Errorf("exchange %s: %d expiry jobs, want 1", ids[i], expiries[ids[i]])
		}
	}
	// Submitted on node a, fetched through node b.
	d, err := xb.Fetch(ctx, b.principal, ids[n-2])
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plain, _, err := decryptAll(d.Documents[0].Envelope, b)
	if err != nil || !bytes.Equal(plain, []byte("%PDF dossier "+strconv.Itoa((n-2)/2))) {
		t.Errorf("decrypted on the other node: %q, %v", plain, err)
	}
}
