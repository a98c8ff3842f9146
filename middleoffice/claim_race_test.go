package middleoffice_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/middleoffice"
	"pec/signing"
)

type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

// TestOneSealPerExchange: with many workers and concurrent submissions,
// each exchange is sealed once — a job enqueued by a step and claimed
// before that step's Commit returned was released by it, and claimed
// again by a second worker (955 platform signatures for 400 exchanges
// before the fix, 800 after: a receipt and a seal each).
func TestOneSealPerExchange(t *testing.T) {
	var cs *countingSigner
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{Workers: 64, PollInterval: 20 * time.Millisecond, MaxBacklog: -1}, func(e *exchangeEnv, _ []middleoffice.PartnerConfig) {
		key := mustKey(t)
		cert, err := e.ca.IssueDocumentSigner(key.Public(), "PEC platform", "PEC test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cs = &countingSigner{Signer: key}
		if e.platform, err = signing.NewSigner(cs, []*x509.Certificate{cert, e.ca.Cert}, signing.SignerOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	e.restart()
	ctx := t.Context()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.x.Run(runCtx) }()
	a := e.partners["a"].principal
	const n = 400
	var wg sync.WaitGroup
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				doc := newDocument("d.pdf", []byte("%PDF "+strconv.Itoa(i)))
				if _, err := e.x.Submit(ctx, a, manifest("b", doc), sources(doc)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bl, _ := e.store.(middleoffice.BacklogStore).Backlog(ctx)
		jobs, _ := e.store.Jobs(ctx)
		proc := 0
		for _, j := range jobs {
			if j.Kind == middleoffice.JobProcess {
				proc++
			}
		}
		if proc == 0 || time.Now().After(deadline) {
			if proc != 0 || bl != 0 {
				t.Fatalf("not delivered in time: backlog %d, process jobs %d", bl, proc)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	<-done
	if got := cs.n.Load(); got != 2*n {
		t.Errorf("%d platform signatures for %d exchanges, want %d: a receipt and a seal each", got, n, 2*n)
	}
}
