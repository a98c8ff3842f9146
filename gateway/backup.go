package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"pec/gateway/api"
)

// Backuper writes the backup archives of a node's stores; cmd/pec
// implements it over the stores it opened.
type Backuper interface {
	// Backup writes an archive to w: of every store (POST /backup), or of
	// the evidence log alone (req.EvidenceOnly: GET /proof/snapshot, for
	// the CLI's list, export and audit of a running node). A backup of
	// every store is itself recorded, once written: its result names the
	// record. It fails with ErrBackupBusy while another backup runs, and
	// with ErrNoBackup when the node holds nothing of what is asked in
	// its own files (an evidence log in PostgreSQL). Errors once w was
	// written to leave the archive without its manifest, which readers
	// refuse.
	Backup(ctx context.Context, w io.Writer, req BackupRequest) (BackupResult, error)
}

// BackupRequest says what a backup is for.
type BackupRequest struct {
	EvidenceOnly bool
	Client       string // who asked: the ops client's address, for the record
}

// BackupResult is what a backup made.
type BackupResult struct {
	EvidenceID     string // the admin.action record of the backup; "": none
	ManifestSHA256 string // hex
}

// Backup errors.
var (
	ErrBackupBusy = errors.New("gateway: a backup is under way")
	ErrNoBackup   = errors.New("gateway: nothing of this kind to back up on this node")
)

// The trailers of a backup's answer: the archive is streamed as it is
// made, so what is known only at its end comes after it.
const (
	TrailerBackupEvidence = "Pec-Evidence-Id"
	TrailerBackupSHA256   = "Pec-Backup-Sha256"
	TrailerBackupError    = "Pec-Backup-Error"
	// HeaderNodePID is the process id of the node that answers.
	HeaderNodePID = "Pec-Node-Pid"
)

// registerBackup adds the backup routes of the ops listener. They stream
// the node's stores — the evidence log, and with POST /backup the
// exchanges' encrypted dossiers — with no authentication of their own:
// the ops listener is for operators only, on a loopback or management
// address.
func registerBackup(mux *http.ServeMux, opts Options) {
	if opts.Backup == nil {
		return
	}
	log := opts.logger()
	serve := func(w http.ResponseWriter, r *http.Request, evidenceOnly bool) {
		// A backup takes as long as the stores are large: no write
		// deadline (the listener's would cut it off).
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		w.Header().Set("Content-Type", "application/x-tar")
		// Which process answers: the CLI checks it is the node that holds
		// the data directory's lock (pec.lock holds its pid), not another
		// node's ops listener at the configured address.
		w.Header().Set(HeaderNodePID, strconv.Itoa(os.Getpid()))
		w.Header().Set("Trailer", TrailerBackupEvidence+", "+TrailerBackupSHA256+", "+TrailerBackupError)
		cw := &countingWriter{w: w}
		res, err := opts.Backup.Backup(r.Context(), cw, BackupRequest{EvidenceOnly: evidenceOnly, Client: r.RemoteAddr})
		switch {
		case err != nil && cw.n == 0:
			w.Header().Del("Trailer")
			log.Error("backup", "evidence_only", evidenceOnly, "err", err)
			switch {
			case errors.Is(err, ErrBackupBusy):
				writeProblem(w, api.NewProblem(api.TypeUnavailable, "a backup is under way: try again once it is done"))
			case errors.Is(err, ErrNoBackup):
				writeProblem(w, api.NewProblem(api.TypeNoEvidenceLog, "this node keeps no evidence log in its own files"))
			default:
				writeProblem(w, api.NewProblem(api.TypeInternal, "the backup failed: see the node's log"))
			}
		case err != nil:
			log.Error("backup: failed while streaming", "evidence_only", evidenceOnly, "bytes", cw.n, "err", err)
			w.Header().Set(TrailerBackupError, "the backup failed: see the node's log")
		default:
			w.Header().Set(TrailerBackupSHA256, res.ManifestSHA256)
			if res.EvidenceID != "" {
				w.Header().Set(TrailerBackupEvidence, res.EvidenceID)
			}
			log.Info("backup", "evidence_only", evidenceOnly, "bytes", cw.n, "digest", res.ManifestSHA256, "evidence_id", res.EvidenceID)
		}
	}
	mux.HandleFunc("POST /backup", func(w http.ResponseWriter, r *http.Request) { serve(w, r, false) })
	mux.HandleFunc("GET /proof/snapshot", func(w http.ResponseWriter, r *http.Request) { serve(w, r, true) })
}

type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
