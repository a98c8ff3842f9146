package middleoffice_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"pec/evidence"
	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
)

// BenchmarkBoltExchangeFlow is a diagnosis of the embedded store's writes
// (a bbolt figure, not the platform's): clients submit exchanges as
// Submit does (a 10 KiB envelope, a data key, the creating step with a
// random idempotency key and a receipt) while workers deliver them a
// backlog behind (a seal, the delivery step finishing the process job
// and enqueueing the expiry); reported: the bytes of pages bbolt wrote
// per exchange, and its transactions.
func BenchmarkBoltExchangeFlow(b *testing.B) {
	for _, lag := range []int{200, 4000} {
		b.Run(fmt.Sprintf("lag=%d", lag), func(b *testing.B) {
			s, err := middleoffice.OpenBoltExchanges(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := b.Context()
			envelope, seal, receipt := random(10<<10), random(3<<10), random(3<<10)
			ids := make(chan string, lag+b.N)
			put := func(id, name string, data []byte) {
				w, err := s.CreatePayload(ctx, id, name)
				if err == nil {
					_, err = w.Write(data)
				}
				if err == nil {
					err = w.Commit()
				}
				if err != nil {
					b.Error(err)
				}
			}
			submit := func() {
				id := evidence.NewID(time.Now())
				put(id, "document-0.p7m", envelope)
				put(id, "data-key", envelope[:300])
				ex := exchangetest.NewExchange(id, "partner-a", "partner-b", hex.EncodeToString(random(16)))
				ex.Receipt = receipt
				st := exchangetest.CreateStep(ex)
				if err := s.Prepare(ctx, st); err != nil {
					b.Error(err)
					return
				}
				if err := s.Commit(ctx, id, st.Event.EvidenceID); err != nil {
					b.Error(err)
				}
				ids <- id
			}
			deliver := func(id string) {
				put(id, "seal.p7m", seal)
				st := exchangetest.Step(id, id+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
				st.Finish = id + "-process"
				st.Seal = &middleoffice.PayloadInfo{Name: "seal.p7m", Size: int64(len(seal)), SHA256: fmt.Sprintf("%064x", 3)}
				st.Enqueue = []*middleoffice.Job{{ID: id + "-expire", Kind: middleoffice.JobExpire, Exchange: id, NotBefore: time.Now().Add(720 * time.Hour)}}
				if err := s.Prepare(ctx, st); err != nil {
					b.Error(err)
					return
				}
				if err := s.Commit(ctx, id, st.Event.EvidenceID); err != nil {
					b.Error(err)
				}
			}
			var wg sync.WaitGroup
			run := func(clients, n int) {
				work := make(chan struct{}, n)
				for range n {
					work <- struct{}{}
				}
				close(work)
				for range clients {
					wg.Go(func() {
						for range work {
							submit()
						}
					})
				}
				wg.Wait()
			}
			run(64, lag) // the backlog
			db := middleoffice.BoltDB(s)
			st0 := db.Stats()
			alloc0, tx0 := st0.TxStats.GetPageAlloc(), middleoffice.WriteTransactions(s)
			b.ResetTimer()
			var dw sync.WaitGroup
			delivered := make(chan struct{}, b.N)
			for range 16 {
				dw.Go(func() {
					for range delivered {
						deliver(<-ids)
					}
				})
			}
			work := make(chan struct{}, b.N)
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			for range 64 {
				wg.Go(func() {
					for range work {
						submit()
						delivered <- struct{}{}
					}
				})
			}
			wg.Wait()
			close(delivered)
			dw.Wait()
			b.StopTimer()
			st1 := db.Stats()
			b.ReportMetric(float64(st1.TxStats.GetPageAlloc()-alloc0)/float64(b.N), "B-written/exchange")
			b.ReportMetric(float64(middleoffice.WriteTransactions(s)-tx0)/float64(b.N), "txs/exchange")
		})
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
