// Package evidence is the vocabulary of PEC's evidence: the record of one
// security-relevant event (who, what, digests of the payloads, when, what
// it answers), its canonical encoding, and the [Appender] through which
// every capability package hands records to the evidence log.
//
// The package depends on nothing of PEC's: tsa, signing, the middle office
// and secure mail emit records through an Appender and get the records'
// ids back as return values; package proof implements the Appender (its
// Log) and keeps the records as the leaves of a Merkle log (RFC 9162).
// No record travels through a context value.
package evidence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Appender takes records into the evidence log.
type Appender interface {
	// Append makes recs durable and returns their ids, in order: a record
	// with an empty ID gets a fresh one ([NewID]), a zero Time the current
	// time; the records themselves are not modified. When Append returns
	// nil, the records survive a crash and will be sealed into the log's
	// Merkle tree within the log's seal interval; an operation whose
	// evidence Append refused must not be released. A caller-chosen id
	// that the log already holds is refused ([ErrDuplicateID]) with the
	// whole call; an invalid record wraps [ErrMalformedRecord]. It is safe
	// for concurrent use.
	Append(ctx context.Context, recs ...*Record) ([]string, error)
}

// Errors of an Appender.
var (
	// ErrDuplicateID: a record with this id is already in the log.
	ErrDuplicateID = errors.New("evidence: evidence id already in the log")
	// ErrUnavailable: the log cannot take records now (its store is
	// unreachable); the caller may retry later. Edges answer it as a
	// temporary failure (HTTP 503 with Retry-After, RFC 3161
	// systemFailure).
	ErrUnavailable = errors.New("evidence: the evidence log is unavailable")
)

// Memory is an Appender that keeps records in memory, in order: for tests
// of the packages that emit evidence, which must not depend on the log.
// It is safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	records []Record
	ids     map[string]bool
	// Err, when set, is returned by Append, which then keeps nothing.
	Err error
}

// Append implements Appender, with the checks of the log: ids are
// assigned, times set, records validated, duplicates refused.
func (m *Memory) Append(_ context.Context, recs ...*Record) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	if m.ids == nil {
		m.ids = map[string]bool{}
	}
	out := make([]string, len(recs))
	kept := make([]Record, len(recs))
	for i, rec := range recs {
		r := *rec
		if r.ID == "" {
			r.ID = NewID(time.Now())
		}
		if r.Time.IsZero() {
			r.Time = time.Now()
		}
		data, err := r.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if m.ids[r.ID] {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
		}
		back, err := UnmarshalRecord(data) // a deep copy, as the log keeps it
		if err != nil {
			return nil, err
		}
		kept[i], out[i] = *back, r.ID
	}
	for _, r := range kept {
		m.ids[r.ID] = true
	}
	m.records = append(m.records, kept...)
	return out, nil
}

// Records are the records appended so far, in order.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.records)
}
