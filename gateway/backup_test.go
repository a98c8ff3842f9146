package gateway_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"pec/gateway"
)

// backupFunc adapts a function to gateway.Backuper: the routes' answers
// to each outcome of a backup (cmd/pec's nodeBackup is tested with the
// real stores in cmd/pec/testdata/backup.txtar).
type backupFunc func(ctx context.Context, w io.Writer, req gateway.BackupRequest) (gateway.BackupResult, error)

func (f backupFunc) Backup(ctx context.Context, w io.Writer, req gateway.BackupRequest) (gateway.BackupResult, error) {
	return f(ctx, w, req)
}

func TestBackupRoutes(t *testing.T) {
	for _, c := range []struct {
		name, method, path string
		backup             backupFunc
		status             int
		body               string
		trailers           map[string]string
	}{
		{
			name: "a backup", method: "POST", path: "/backup",
			backup: func(_ context.Context, w io.Writer, req gateway.BackupRequest) (gateway.BackupResult, error) {
				if req.EvidenceOnly || !strings.HasPrefix(req.Client, "127.0.0.1:") {
					return gateway.BackupResult{}, errors.New("wrong request")
				}
				io.WriteString(w, "archive")
				return gateway.BackupResult{EvidenceID: "e1", ManifestSHA256: "ab"}, nil
			},
			status: 200, body: "archive",
			trailers: map[string]string{gateway.TrailerBackupEvidence: "e1", gateway.TrailerBackupSHA256: "ab", gateway.TrailerBackupError: ""},
		},
		{
			name: "a snapshot of the evidence log", method: "GET", path: "/proof/snapshot",
			backup: func(_ context.Context, w io.Writer, req gateway.BackupRequest) (gateway.BackupResult, error) {
				if !req.EvidenceOnly {
					return gateway.BackupResult{}, errors.New("wrong request")
				}
				io.WriteString(w, "log")
				return gateway.BackupResult{ManifestSHA256: "cd"}, nil
			},
			status: 200, body: "log",
			trailers: map[string]string{gateway.TrailerBackupSHA256: "cd", gateway.TrailerBackupEvidence: ""},
		},
		{
			name: "busy", method: "POST", path: "/backup",
			backup: func(context.Context, io.Writer, gateway.BackupRequest) (gateway.BackupResult, error) {
				return gateway.BackupResult{}, gateway.ErrBackupBusy
			},
			status: 503, body: "a backup is under way",
		},
		{
			name: "no evidence log in files", method: "GET", path: "/proof/snapshot",
			backup: func(context.Context, io.Writer, gateway.BackupRequest) (gateway.BackupResult, error) {
				return gateway.BackupResult{}, gateway.ErrNoBackup
			},
			status: 503, body: "no evidence log",
		},
		{
			name: "failed before streaming: no internal text", method: "POST", path: "/backup",
			backup: func(context.Context, io.Writer, gateway.BackupRequest) (gateway.BackupResult, error) {
				return gateway.BackupResult{}, errors.New("secret internal detail")
			},
			status: 500, body: "the backup failed",
		},
		{
			name: "failed while streaming: the error trailer", method: "POST", path: "/backup",
			backup: func(_ context.Context, w io.Writer, _ gateway.BackupRequest) (gateway.BackupResult, error) {
				io.WriteString(w, "half an arch")
				return gateway.BackupResult{}, errors.New("disk error")
			},
			status: 200, body: "half an arch",
			trailers: map[string]string{gateway.TrailerBackupError: "the backup failed: see the node's log", gateway.TrailerBackupSHA256: ""},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(gateway.NewOpsHandler(gateway.Options{Backup: c.backup}))
			defer srv.Close()
			req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.body) {
				t.Fatalf("%d %q; want %d with %q", resp.StatusCode, body, c.status, c.body)
			}
			if strings.Contains(string(body), "secret") {
				t.Errorf("internal text in the answer: %q", body)
			}
			for k, want := range c.trailers {
				if got := resp.Trailer.Get(k); got != want {
					t.Errorf("trailer %s: %q, want %q", k, got, want)
				}
			}
		})
	}
	// Without a Backuper, no backup routes.
	srv := httptest.NewServer(gateway.NewOpsHandler(gateway.Options{}))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/backup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /backup with no Backuper: %d", resp.StatusCode)
	}
}
