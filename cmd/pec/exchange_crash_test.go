package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/gateway/api"
	"pec/middleoffice"
	"pec/proof"
)

// TestExchangeKill9 kills `pec serve` with SIGKILL three times in the
// middle of 1,000 submissions of tele-dossiers from partner-a to
// partner-b. Each submission carries its idempotency key, and a client
// whose submission failed sends it again, with the same key, to the
// restarted node. In the end every acknowledged submission is in the
// recipient's inbox exactly once, delivered once, with its evidence in
// the log: a crash loses nothing acknowledged and duplicates nothing.
func TestExchangeKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pec serve five times")
	}
	dir := filepath.Join(t.TempDir(), "node")
	if code := run([]string{"init", "--dir", dir}, nil, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("pec init: exit %d", code)
	}
	config := filepath.Join(dir, "pec.yaml")
	clients := filepath.Join(dir, "pki", "clients")
	roots := []string{filepath.Join(dir, "pki", "root-ca.pem")}
	connect := func(n *testNode, name string) *api.Client {
		c, err := apiClient("https://"+n.api, filepath.Join(clients, name+".pem"), filepath.Join(clients, name+".key"), roots, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	const total = 1000
	var mu sync.Mutex
	acked := map[string]*api.Submission{} // idempotency key -> the answer
	pending := make([]int, total)
	for i := range pending {
		pending[i] = i
	}
	for round := 0; len(pending) > 0; round++ {
		if round > 8 {
			t.Fatalf("%d submissions still not acknowledged after %d rounds", len(pending), round)
		}
		node := startNode(t, config)
		c := connect(node, "partner-a")
		killAt := len(acked) + 300
		next := make(chan int, len(pending))
		for _, i := range pending {
			next <- i
		}
		close(next)
		var failed []int
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range next {
					key := fmt.Sprintf("crash-%04d", i)
					s, err := submitOne(c, i, key)
					mu.Lock()
					if err != nil {
						failed = append(failed, i)
						mu.Unlock()
						continue
					}
					if prev, ok := acked[key]; ok && prev.Exchange != s.Exchange {
						t.Errorf("key %s: exchange %s, then %s on a retry", key, prev.Exchange, s.Exchange)
					}
					acked[key] = s
					if round < 3 && len(acked) == killAt {
						node.kill(t)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if round < 3 {
			node.kill(t)
			node.wait()
		} else {
			node.terminate(t)
		}
		t.Logf("round %d: %d acknowledged so far, %d to send again", round, len(acked), len(failed))
		pending = failed
	}

	// The node restarted after the last kill: everything acknowledged is
	// delivered, once.
	node := startNode(t, config)
	b := connect(node, "partner-b")
	var inbox []middleoffice.Exchange
	deadline := time.Now().Add(60 * time.Second)
	for {
		inbox = inbox[:0]
		after := ""
		for {
			page, err := b.Inbox(t.Context(), after, middleoffice.MaxInboxPage)
			if err != nil {
				t.Fatal(err)
			}
			inbox = append(inbox, page.Exchanges...)
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		if len(inbox) >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	byID := map[string]int{}
	for _, ex := range inbox {
		byID[ex.ID]++
		delivered := 0
		for _, e := range ex.Events {
			if e.Type == "delivery.delivered" {
				delivered++
			}
		}
		if delivered != 1 {
			t.Errorf("exchange %s delivered %d times", ex.ID, delivered)
		}
	}
	for key, s := range acked {
		if byID[s.Exchange] != 1 {
			t.Errorf("acknowledged submission %s (exchange %s) is %d times in the recipient's inbox", key, s.Exchange, byID[s.Exchange])
		}
	}
	if len(inbox) != len(acked) || len(acked) != total {
		t.Errorf("%d exchanges in the inbox, %d acknowledged submissions, %d sent", len(inbox), len(acked), total)
	}
	node.terminate(t)

	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for key, sub := range acked {
		if _, err := s.Lookup(t.Context(), sub.EvidenceID); err != nil {
			t.Errorf("submission %s: its acceptance %s is not in the log: %v", key, sub.EvidenceID, err)
		}
	}
	t.Logf("%d submissions over 3 kills: each in the inbox once, delivered once, its evidence in the log", len(acked))
}

// submitOne submits dossier i (about 2 KiB) with its idempotency key.
func submitOne(c *api.Client, i int, key string) (*api.Submission, error) {
	doc := strings.Repeat(fmt.Sprintf("dossier %04d ", i), 160)
	sum := sha256.Sum256([]byte(doc))
	m := middleoffice.Manifest{
		Recipient: "partner-b", Procedure: "dossier", Subject: fmt.Sprintf("crash test %d", i),
		Documents: []middleoffice.Document{{Name: "dossier.txt", MediaType: "text/plain", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(doc))}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.Submit(ctx, m, key, []api.Upload{{Name: "dossier.txt", Content: strings.NewReader(doc)}})
}
