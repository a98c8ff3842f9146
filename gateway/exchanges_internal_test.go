package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestProgressReader: an upload that stalls is cut after idleTransfer;
// one that moves is not, nor one that the node reads slowly (busy
// between two reads for longer than idleTransfer: a large payload's
// writes waiting for the disk behind the other uploads').
func TestProgressReader(t *testing.T) {
	// The deadline moves on at most once a second: a stall of idle is
	// cut, pieces every 0.6 idle are not.
	const idle = 2 * time.Second
	saved := idleTransfer
	idleTransfer = idle
	defer func() { idleTransfer = saved }()
	const size = 4 << 20 // more than the connection's buffers hold
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &progressReader{r: r.Body, rc: http.NewResponseController(w)} // as submit makes it
		body.extend()
		head := make([]byte, 5)
		if _, err := io.ReadFull(body, head); err != nil {
			http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		if r.URL.Query().Has("busy") {
			time.Sleep(idle + idle/2) // the node, elsewhere
		}
		rest, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		w.Write(append(head, rest...)[:5])
	}))
	defer srv.Close()
	post := func(path string, body io.Reader) (int, string) {
		resp, err := http.Post(srv.URL+path, "application/octet-stream", body)
		if err != nil {
			return 0, err.Error()
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(got)
	}

	t.Run("the node busy between two reads", func(t *testing.T) {
		// "hello" alone first, so that the read after the busy time
		// waits on the connection, not on a buffer.
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("hello"))
			time.Sleep(idle / 4)
			pw.Write(make([]byte, size))
			pw.Close()
		}()
		if code, got := post("/?busy", pr); code != 200 || got != "hello" {
			t.Errorf("%d %q; want 200 hello", code, got)
		}
	})
	t.Run("a body that moves slowly", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for range 4 { // 4 × 0.6 idle: longer than idle in all
				pw.Write([]byte("slow "))
				time.Sleep(idle * 6 / 10)
			}
			pw.Close()
		}()
		if code, got := post("/", pr); code != 200 || got != "slow " {
			t.Errorf("%d %q; want 200 slow", code, got)
		}
	})
	t.Run("a body that stalls", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("stall"))
			time.Sleep(2 * idle)
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}()
		if code, got := post("/", pr); code == 200 {
			t.Errorf("a stalled upload was read in full: %q", got)
		}
	})
}

// TestDeadlinesThroughTheChain: behind the route's instrumentation, as
// submissions and downloads are served, the handler reaches the
// connection's deadlines, and a transfer longer than the server's
// ReadTimeout and WriteTimeout goes through while it moves.
func TestDeadlinesThroughTheChain(t *testing.T) {
	const idle = 2 * time.Second
	saved := idleTransfer
	idleTransfer = idle
	defer func() { idleTransfer = saved }()
	m := newMetrics(prometheus.NewRegistry(), "api")
	srv := httptest.NewUnstartedServer(m.instrument("/v1/exchanges", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
			http.Error(w, "deadline: "+err.Error(), http.StatusInternalServerError)
			return
		}
		body := &progressReader{r: r.Body, rc: http.NewResponseController(w)}
		body.extend()
		data, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, "read: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		w.Write(data[:5])
	})))
	// The listener's timeouts, shorter than the transfer.
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = idle, idle
	srv.Start()
	defer srv.Close()
	pr, pw := io.Pipe()
	go func() {
		for range 4 { // 4 × 0.6 idle: longer than the timeouts
			pw.Write([]byte("moves"))
			time.Sleep(idle * 6 / 10)
		}
		pw.Close()
	}()
	resp, err := http.Post(srv.URL, "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "moves" {
		t.Errorf("%d %q; want 200 moves", resp.StatusCode, got)
	}
}
