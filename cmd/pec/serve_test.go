package main

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServeStopsOnSIGTERM: `pec serve` finishes cleanly on SIGTERM (exit 0,
// listeners closed), as service managers stop it. The signal goes to this
// test process, whose serve has registered for it once /readyz answers.
func TestServeStopsOnSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	tsaPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	apiPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"serve", "--dev", "--dir", dir,
			"--listen", fmt.Sprintf("tsa=127.0.0.1:%d", tsaPort),
			"--listen", fmt.Sprintf("api=127.0.0.1:%d", apiPort), "--listen", "ops=127.0.0.1:0"}, nil, &stdout, &stderr)
	}()
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", tsaPort)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d before it was ready:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 60 s: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d after SIGTERM:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s of SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("no shutdown logged:\n%s", stderr.String())
	}
	if _, err := http.Get(ready); err == nil {
		t.Error("the tsa listener still answers after shutdown")
	}
}

// syncBuffer is a bytes.Buffer safe for the serve goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
