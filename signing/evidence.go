package signing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Evidence is the record of one signature operation: who, which profile,
// which digests, when. It holds digests only, never documents. The proof
// log will turn it into a leaf of the Merkle log.
type Evidence struct {
	ID           string    `json:"id"`    // of the operation, returned to the client
	Event        string    `json:"event"` // EventSigned or EventRefused
	Time         time.Time `json:"time"`
	Client       string    `json:"client"`                  // subject of the client certificate, or "local operator"
	ClientSHA256 string    `json:"client_sha256,omitempty"` // fingerprint of the client certificate
	Profile      string    `json:"profile"`
	Format       Format    `json:"format,omitempty"`
	Hash         string    `json:"hash,omitempty"`              // of Digests
	Digests      []string  `json:"digests,omitempty"`           // hex: the documents' (or the digests given)
	Signatures   []string  `json:"signatures_sha256,omitempty"` // hex SHA-256 of each signature (or signed PDF) returned
	Reason       string    `json:"reason,omitempty"`            // why a request was refused
}

// Evidence events.
const (
	EventSigned  = "signature-created"
	EventRefused = "signature-refused"
)

// EvidenceRecorder keeps the evidence of signature operations.
type EvidenceRecorder interface {
	// Record returns once the record is durable: a signature is released
	// only after it is recorded. It is safe for concurrent use and does not
	// retain e.
	Record(ctx context.Context, e *Evidence) error
}

// MemoryEvidence keeps records in memory, for tests. It is safe for
// concurrent use.
type MemoryEvidence struct {
	mu      sync.Mutex
	records []Evidence
}

var _ EvidenceRecorder = (*MemoryEvidence)(nil)

// Record implements EvidenceRecorder.
func (m *MemoryEvidence) Record(_ context.Context, e *Evidence) error {
	c := *e
	c.Digests, c.Signatures = slices.Clone(e.Digests), slices.Clone(e.Signatures)
	m.mu.Lock()
	m.records = append(m.records, c)
	m.mu.Unlock()
	return nil
}

// Records returns a copy of the records so far.
func (m *MemoryEvidence) Records() []Evidence {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.records)
}

// EvidenceJournal appends records as JSON lines to a file, fsynced before
// Record returns; concurrent records share one fsync (group commit). The
// file is opened in append mode and not locked: `pec sign --config` and
// `pec serve` may record to it at once, each line written whole by one
// write. It is safe for concurrent use.
type EvidenceJournal struct {
	path string
	f    *os.File

	mu      sync.Mutex // guards pending, seq
	pending []byte
	seq     uint64 // records handed in

	flushMu sync.Mutex // one writer at a time; guards synced, err
	synced  uint64     // records durable
	err     error      // sticky
}

var _ EvidenceRecorder = (*EvidenceJournal)(nil)

// OpenEvidenceJournal opens path for appending, creating it (mode 0600)
// and its directory if missing.
func OpenEvidenceJournal(path string) (*EvidenceJournal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("signing: evidence journal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("signing: evidence journal: %w", err)
	}
	return &EvidenceJournal{path: path, f: f}, nil
}

// Record implements EvidenceRecorder.
func (j *EvidenceJournal) Record(ctx context.Context, e *Evidence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("signing: evidence: %w", err)
	}
	j.mu.Lock()
	j.pending = append(append(j.pending, line...), '\n')
	j.seq++
	mine := j.seq
	j.mu.Unlock()

	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	if j.err != nil {
		return fmt.Errorf("signing: evidence journal %s failed earlier: %w", j.path, j.err)
	}
	if j.synced >= mine {
		return nil // a writer before us took our line along
	}
	j.mu.Lock()
	batch, upto := j.pending, j.seq
	j.pending = nil
	j.mu.Unlock()
	if j.f == nil {
		return errors.New("signing: evidence journal closed")
	}
	if _, err := j.f.Write(batch); err != nil {
		j.err = err
		return fmt.Errorf("signing: evidence journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		j.err = err
		return fmt.Errorf("signing: evidence journal %s: %w", j.path, err)
	}
	j.synced = upto
	return nil
}

// Close closes the file; later records fail.
func (j *EvidenceJournal) Close() error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
