package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pec/internal/pgtest"
)

// TestNodeIDClaimed: two nodes on one PostgreSQL log with one tsa.node_id
// (a configuration copied without pec init --join) would issue tokens of
// the same serial numbers. The second is refused at its start (exit 1,
// naming the id and the node holding it) while the first runs; once the
// first is killed with -9, the second starts (PostgreSQL gave the id
// back with the connection); a node of another id runs beside it; and a
// node of another platform (another schema of the same database) with
// the same id is none of their business.
func TestNodeIDClaimed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pec serve")
	}
	url := pgtest.NewSchema(t)
	t.Setenv("PEC_PG_URL", url)
	root := t.TempDir()
	node1, copied, other, apart := filepath.Join(root, "node1"), filepath.Join(root, "copied"), filepath.Join(root, "other"), filepath.Join(root, "apart")
	var stderr bytes.Buffer
	if code := run([]string{"init", "--dir", node1, "--software-keys"}, nil, io.Discard, &stderr); code != exitOK {
		t.Fatalf("pec init: exit %d: %s", code, stderr.String())
	}
	editConfig(t, filepath.Join(node1, "pec.yaml"), `postgres_url_env: ""`, `postgres_url_env: PEC_PG_URL`)
	for _, dir := range []string{copied, other, apart} {
		if out, err := exec.Command("cp", "-a", node1, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
	}
	editConfig(t, filepath.Join(other, "pec.yaml"), "node_id: 0", "node_id: 7")

	first := startNode(t, filepath.Join(node1, "pec.yaml"))
	// The copy, node_id 0 too: refused.
	cmd := exec.Command(os.Args[0], "serve", "--config", filepath.Join(copied, "pec.yaml"),
		"--listen", "tsa=127.0.0.1:0", "--listen", "api=127.0.0.1:0", "--listen", "ops=127.0.0.1:0")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var out bytes.Buffer
	cmd.Stderr = &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the second node of node_id 0 runs beside the first:\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); err == nil || code != exitFailure {
		t.Fatalf("the second node of node_id 0: %v (exit %d), want exit 1:\n%s", err, code, out.String())
	}
	if msg := out.String(); !strings.Contains(msg, "tsa.node_id 0 is held by another running node") || !strings.Contains(msg, "pec-node-0") {
		t.Errorf("the refusal does not name the id and its holder:\n%s", msg)
	}
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
	// Another id beside it: fine.
	startNode(t, filepath.Join(other, "pec.yaml"))

	// Another platform in another schema, node_id 0: fine.
	t.Setenv("PEC_PG_URL", pgtest.NewSchema(t))
	elsewhere := startNode(t, filepath.Join(apart, "pec.yaml"))
	elsewhere.terminate(t)
	t.Setenv("PEC_PG_URL", url)

	// The first killed: the copy starts in its place.
	first.kill(t)
	first.wait()
	startNode(t, filepath.Join(copied, "pec.yaml"))
}
