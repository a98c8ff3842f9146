package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/gateway/api"
	"pec/proof"
	"pec/tsa"
)

// childEnv makes this test binary run `pec` (see TestMain).
const childEnv = "PEC_TEST_RUN_PEC"

// TestServeKill9UnderLoad kills `pec serve` with SIGKILL in the middle of a
// bounded load of time-stamp requests and signatures, ten times over the
// same node: after it restarts, every token and every signature a client
// received has its evidence in the log, sealed; no serial number was
// issued twice; and the store audits, the rollback guard included.
func TestServeKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pec serve twelve times")
	}
	dir := filepath.Join(t.TempDir(), "node")
	if code := run([]string{"init", "--dir", dir}, nil, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("pec init: exit %d", code)
	}
	config := filepath.Join(dir, "pec.yaml")
	clients := filepath.Join(dir, "pki", "clients")
	var mu sync.Mutex
	evidence := map[string]string{} // evidence id -> what the client received
	serials := map[string]bool{}
	for round := range 10 {
		node := startNode(t, config)
		client, err := apiClient("https://"+node.api, filepath.Join(clients, "partner-a.pem"), filepath.Join(clients, "partner-a.key"), []string{filepath.Join(dir, "pki", "root-ca.pem")}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		target := 150 + 40*round
		var wg sync.WaitGroup
		var got int
		stop := make(chan struct{})
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var id, what string
					var err error
					if w%4 == 3 {
						id, err = node.sign(client, fmt.Sprintf("round %d writer %d doc %d", round, w, i))
						what = "signature"
					} else {
						var serial string
						id, serial, err = node.timestamp()
						what = "token " + serial
						if err == nil {
							mu.Lock()
							if serials[serial] {
								t.Errorf("serial %s issued twice", serial)
							}
							serials[serial] = true
							mu.Unlock()
						}
					}
					if err != nil {
						return // the node was killed under this request
					}
					mu.Lock()
					evidence[id] = what
					got++
					if got == target {
						node.kill(t)
						close(stop)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		node.wait()
		t.Logf("round %d: killed after %d answers", round, got)
	}
	// A clean start seals what the kills left; a clean stop.
	node := startNode(t, config)
	node.terminate(t)

	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for id, what := range evidence {
		if _, err := s.Lookup(t.Context(), id); err != nil {
			t.Errorf("the evidence %s of a %s a client received: %v", id, what, err)
		}
	}
	unsealed, err := s.Unsealed(t.Context(), 1)
	s.Close()
	if err != nil || len(unsealed) != 0 {
		t.Errorf("records left unsealed after a clean stop: %d, %v", len(unsealed), err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"proof", "audit", "--config", config}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("pec proof audit: exit %d: %s", code, errOut.String())
	}
	t.Logf("%d answers over 10 kills, all in the log, sealed: %s", len(evidence), bytes.TrimSpace(out.Bytes()))
}

type testNode struct {
	cmd      *exec.Cmd
	tsa, api string
	done     chan struct{}
	stderr   syncBuffer
	killOnce sync.Once
}

// startNode runs `pec serve` as a child process and waits until it is
// ready.
func startNode(t *testing.T, config string) *testNode {
	t.Helper()
	tsaPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	apiPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{tsa: fmt.Sprintf("127.0.0.1:%d", tsaPort), api: fmt.Sprintf("127.0.0.1:%d", apiPort), done: make(chan struct{})}
	n.cmd = exec.Command(os.Args[0], "serve", "--config", config, "--listen", "tsa="+n.tsa, "--listen", "api="+n.api, "--listen", "ops=127.0.0.1:0")
	n.cmd.Env = append(os.Environ(), childEnv+"=1")
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { n.cmd.Process.Kill(); <-n.done })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + n.tsa + "/readyz")
		if err == nil {
			resp.Body.Close()
			// The api listener starts after the tsa one: ready when it
			// takes connections too.
			if c, derr := net.DialTimeout("tcp", n.api, time.Second); resp.StatusCode == http.StatusOK && derr == nil {
				c.Close()
				return n
			}
		}
		select {
		case <-n.done:
			t.Fatalf("pec serve exited before it was ready:\n%s", n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pec serve not ready within 30 s:\n%s", n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *testNode) kill(t *testing.T) {
	n.killOnce.Do(func() {
		if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Error(err)
		}
	})
}

func (n *testNode) wait() { <-n.done }

func (n *testNode) terminate(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		t.Fatal("pec serve did not stop on SIGTERM")
	}
	if !n.cmd.ProcessState.Success() {
		t.Fatalf("pec serve: %v:\n%s", n.cmd.ProcessState, n.stderr.String())
	}
}

var plainHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// timestamp asks the node's TSA for a token: its evidence id and serial.
func (n *testNode) timestamp() (id, serial string, err error) {
	digest := make([]byte, 32)
	rand.Read(digest)
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true}).Marshal()
	if err != nil {
		return "", "", err
	}
	resp, err := plainHTTP.Post("http://"+n.tsa+"/tsa", "application/timestamp-query", bytes.NewReader(req))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	tok, err := tsa.ParseToken(body)
	if err != nil {
		return "", "", err
	}
	id = resp.Header.Get("PEC-Evidence-ID")
	if id == "" {
		return "", "", errors.New("no PEC-Evidence-ID")
	}
	return id, tok.Serial.Text(16), nil
}

// sign asks for a CAdES signature through the API: its evidence id.
func (n *testNode) sign(c *api.Client, doc string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.Sign(ctx, api.SignatureRequest{Profile: "default", Document: []byte(doc), Detached: true})
	if err != nil {
		return "", err
	}
	if out.ID == "" {
		return "", errors.New("no evidence id")
	}
	return out.ID, nil
}
