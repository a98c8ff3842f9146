package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/gateway/api"
	"pec/internal/pgtest"
	"pec/middleoffice"
	"pec/proof"
)

// TestExchangePGNodes is the exchange on two `pec serve` nodes sharing one
// PostgreSQL (the evidence log, the exchanges and their queue, the
// directory), one of them killed with SIGKILL in the middle of 300
// submissions from partner-a to partner-b and started again. Submissions
// are spread over both nodes, each with its idempotency key; one that
// fails is sent again, with its key, to the other node. In the end every
// acknowledged submission is in the recipient's inbox exactly once, read
// from either node, delivered once, its acceptance and its delivery in
// the shared log. Then a partner added through the administration API on
// one node authenticates on the other within a second.
func TestExchangePGNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pec serve three times")
	}
	url := pgtest.NewSchema(t)
	t.Setenv("PEC_PG_URL", url) // the nodes' environment (startNode)
	root := t.TempDir()
	node1, node2 := filepath.Join(root, "node1"), filepath.Join(root, "node2")
	var stderr bytes.Buffer
	if code := run([]string{"init", "--dir", node1, "--software-keys"}, nil, io.Discard, &stderr); code != exitOK {
		t.Fatalf("pec init: exit %d: %s", code, stderr.String())
	}
	// A client certificate no partner claims yet: partner-c.
	if code := run([]string{"ca", "issue", "--dir", node1, "partner-c"}, nil, io.Discard, &stderr); code != exitOK {
		t.Fatalf("pec ca issue: exit %d: %s", code, stderr.String())
	}
	// Everything in the database; node2 has the same keys and
	// certificates, a TSA serial space of its own, its own data
	// directory.
	editConfig(t, filepath.Join(node1, "pec.yaml"),
		`postgres_url_env: ""`, `postgres_url_env: PEC_PG_URL`,
		"  # store: embedded ", "  store: postgres # ",
		"  file: data/directory.json ", `  file: "" # `,
		"  # store: file ", "  store: postgres # ")
	if out, err := exec.Command("cp", "-a", node1, node2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	// The at-rest keys (one per retention period and month, made on first
	// use) are the nodes' common keys: one key store, as one HSM token.
	editConfig(t, filepath.Join(node2, "pec.yaml"), "node_id: 0", "node_id: 1", "key_dir: keys", "key_dir: "+filepath.Join(node1, "keys"))
	configs := []string{filepath.Join(node1, "pec.yaml"), filepath.Join(node2, "pec.yaml")}
	clients := filepath.Join(node1, "pki", "clients")
	roots := []string{filepath.Join(node1, "pki", "root-ca.pem")}
	connect := func(n *testNode, name string) *api.Client {
		c, err := apiClient("https://"+n.api, filepath.Join(clients, name+".pem"), filepath.Join(clients, name+".key"), roots, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	var mu sync.Mutex // guards nodes, senders, up and acked
	nodes := []*testNode{startPGNode(t, configs[0]), startPGNode(t, configs[1])}
	senders := []*api.Client{connect(nodes[0], "partner-a"), connect(nodes[1], "partner-a")}
	up := []bool{true, true}
	const total, killAt = 300, 100
	acked := map[string]*api.Submission{}
	attempts := map[int]int{} // node index -> submissions sent to it
	failed, replayed := 0, 0  // tries that failed; answers of a retry that named the first exchange
	killed, restarted := make(chan struct{}), make(chan struct{})

	next := make(chan int)
	go func() {
		defer close(next)
		for i := range total {
			if i == 2*killAt {
				<-restarted // the rest spread over both nodes again
			}
			next <- i
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				key := fmt.Sprintf("pg-%04d", i)
				for try := 0; ; try++ {
					if try == 40 {
						t.Errorf("submission %s: not acknowledged after %d tries", key, try)
						break
					}
					mu.Lock()
					k := (i + try) % 2 // each try on the other node
					if !up[k] {
						k = 1 - k
					}
					c := senders[k]
					attempts[k]++
					mu.Unlock()
					s, err := submitOne(c, i, key)
					if err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						time.Sleep(50 * time.Millisecond)
						continue
					}
					mu.Lock()
					if s.Replayed {
						replayed++
					}
					if prev, ok := acked[key]; ok && prev.Exchange != s.Exchange {
						t.Errorf("key %s: exchange %s, then %s", key, prev.Exchange, s.Exchange)
					}
					acked[key] = s
					if len(acked) == killAt {
						nodes[1].kill(t) // in the middle: requests in flight on it
						up[1] = false
						close(killed)
					}
					mu.Unlock()
					break
				}
			}
		})
	}
	<-killed
	nodes[1].wait()
	time.Sleep(500 * time.Millisecond)
	n := startPGNode(t, configs[1])
	c := connect(n, "partner-a")
	mu.Lock()
	nodes[1], senders[1], up[1] = n, c, true
	mu.Unlock()
	close(restarted)
	wg.Wait()
	t.Logf("%d acknowledged; sent %d times to node 1, %d times to node 2 (killed after %d, restarted); %d tries failed, %d retries answered with the first exchange",
		len(acked), attempts[0], attempts[1], killAt, failed, replayed)
	if len(acked) != total {
		t.Fatalf("%d of %d submissions acknowledged", len(acked), total)
	}

	// Everything acknowledged is delivered, once, whichever node reads.
	inboxes := make([][]middleoffice.Exchange, 2)
	for k, node := range nodes {
		b := connect(node, "partner-b")
		deadline := time.Now().Add(60 * time.Second)
		for {
			inboxes[k] = readInbox(t, b)
			if len(inboxes[k]) >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if len(inboxes[0]) != len(inboxes[1]) {
		t.Errorf("the inbox holds %d exchanges on node 1, %d on node 2", len(inboxes[0]), len(inboxes[1]))
	}
	byID := map[string]int{}
	delivery := map[string]string{} // exchange -> its delivery evidence
	for _, ex := range inboxes[0] {
		byID[ex.ID]++
		for _, e := range ex.Events {
			if e.Type == "delivery.delivered" {
				if delivery[ex.ID] != "" {
					t.Errorf("exchange %s delivered twice: %s and %s", ex.ID, delivery[ex.ID], e.EvidenceID)
				}
				delivery[ex.ID] = e.EvidenceID
			}
		}
		if delivery[ex.ID] == "" {
			t.Errorf("exchange %s in the inbox, not delivered", ex.ID)
		}
	}
	for key, s := range acked {
		if byID[s.Exchange] != 1 {
			t.Errorf("acknowledged submission %s (exchange %s) is %d times in the recipient's inbox", key, s.Exchange, byID[s.Exchange])
		}
	}
	if len(inboxes[0]) != total {
		t.Errorf("%d exchanges in the inbox, %d acknowledged submissions", len(inboxes[0]), total)
	}
	if t.Failed() {
		for k, node := range nodes {
			log := node.stderr.String()
			t.Logf("node %d's log, its end:\n%s", k+1, log[max(0, len(log)-4096):])
		}
	}

	// A partner added on node 1 authenticates on node 2 within a second.
	admin := connect(nodes[0], "admin")
	before, err := whoami(nodes[1], clients, roots, "partner-c")
	if err != nil || before.Partner != "" {
		t.Fatalf("partner-c before it is added: %+v, %v", before, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := admin.AddPartner(ctx, middleoffice.Partner{
		ID: "partner-c", Name: "Partner C administration", Roles: []middleoffice.Role{middleoffice.RolePartner},
		Certificates: []middleoffice.CertificateRule{{Subject: "CN=partner-c,O=PEC development", Issuer: "CN=PEC development root CA,O=PEC development"}},
		Channel:      middleoffice.Channel{Type: middleoffice.ChannelPull},
	}); err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	for {
		id, err := whoami(nodes[1], clients, roots, "partner-c")
		if err == nil && id.Partner == "partner-c" {
			t.Logf("partner-c added on node 1, authenticated on node 2 %v later", time.Since(added).Round(time.Millisecond))
			break
		}
		if time.Since(added) > time.Second {
			t.Fatalf("partner-c not authenticated on node 2 a second after it was added on node 1: %+v, %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	nodes[0].terminate(t)
	nodes[1].terminate(t)
	s, err := proof.OpenPG(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for key, sub := range acked {
		if _, err := s.Lookup(t.Context(), sub.EvidenceID); err != nil {
			t.Errorf("submission %s: its acceptance %s is not in the log: %v", key, sub.EvidenceID, err)
		}
		if d := delivery[sub.Exchange]; d != "" {
			if _, err := s.Lookup(t.Context(), d); err != nil {
				t.Errorf("exchange %s: its delivery %s is not in the log: %v", sub.Exchange, d, err)
			}
		}
	}
}

// startPGNode is startNode, and waits for the API listener too: it
// starts after the tsa listener, whose /readyz startNode waits for.
func startPGNode(t *testing.T, config string) *testNode {
	t.Helper()
	n := startNode(t, config)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.api, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API of pec serve does not listen: %v\n%s", err, n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// editConfig replaces in a pec.yaml each old string (once, and it must be
// there) by its new one: pairs old, new, ...
func editConfig(t *testing.T, path string, pairs ...string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s: no %q", path, pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// readInbox reads the whole inbox, page after page.
func readInbox(t *testing.T, c *api.Client) []middleoffice.Exchange {
	t.Helper()
	var out []middleoffice.Exchange
	after := ""
	for {
		page, err := c.Inbox(t.Context(), after, middleoffice.MaxInboxPage)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Exchanges...)
		if page.Next == "" {
			return out
		}
		after = page.Next
	}
}

// whoami asks node who the client name is, on a connection of its own.
func whoami(n *testNode, clients string, roots []string, name string) (*api.Identity, error) {
	c, err := apiClient("https://"+n.api, filepath.Join(clients, name+".pem"), filepath.Join(clients, name+".key"), roots, 5*time.Second)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Whoami(ctx)
}
