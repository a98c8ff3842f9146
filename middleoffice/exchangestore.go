package middleoffice

import (
	"context"
	"errors"
	"io"
	"time"
)

// ExchangeStore keeps the exchanges, their events, the work queue, the
// idempotency keys, the outbox of steps whose evidence is being recorded,
// and the exchanges' payload files.
//
// # The outbox
//
// Every change of an exchange is a [Step] that names its evidence record.
// A step is first prepared (Prepare: written to the outbox, with the
// encoded record, in one transaction; for a new exchange, with the
// exchange in StatePending and its idempotency key), then its record is
// appended to the evidence log, then it is committed (Commit: in one
// transaction, the state change, the event with the evidence id, the
// queue changes, and the removal from the outbox). An exchange has at
// most one prepared step. After a crash, a prepared step is finished by
// appending its stored record again — the log refuses the id if the
// record is already there, which counts as success — and committing it;
// so a step never commits without its evidence, and evidence whose step
// is not committed yet is committed at the next recovery.
//
// Implementations: [BoltExchangeStore] (embedded, one node) and
// [PGExchangeStore] (several nodes sharing one PostgreSQL: Prepare and
// Commit one transaction each, Claim a SELECT ... FOR UPDATE SKIP
// LOCKED, payloads in chunks of 1 MiB); both pass the same suite
// (middleoffice/exchangetest).
//
// Methods are safe for concurrent use.
type ExchangeStore interface {
	// Prepare writes s to the outbox. With s.Create, it creates the
	// exchange (its State must be StatePending) and its sender's
	// idempotency key, if any: ErrExchangeExists if the id is taken, a
	// *KeyTakenError if the key is. Otherwise the exchange must exist
	// (ErrExchangeNotFound) in one of the states s.From (ErrStateChanged).
	// ErrStepPending: the exchange has a prepared step already.
	Prepare(ctx context.Context, s *Step) error
	// Commit applies the prepared step of the exchange whose evidence is
	// evidenceID and removes it from the outbox, in one transaction. A
	// step already committed is not applied again (nil); one neither
	// prepared nor committed is ErrStepNotFound.
	Commit(ctx context.Context, exchange, evidenceID string) error
	// Abort removes the prepared step of the exchange whose evidence is
	// evidenceID, when its record is known not to be in the log; a
	// created exchange goes with it, and its idempotency key. A step
	// committed meanwhile is ErrStepCommitted; one neither prepared nor
	// committed is ErrStepNotFound.
	Abort(ctx context.Context, exchange, evidenceID string) error
	// Prepared returns the prepared step of an exchange (ErrStepNotFound
	// if none).
	Prepared(ctx context.Context, exchange string) (*Step, error)
	// PreparedBefore returns the steps prepared before t, oldest first,
	// at most limit.
	PreparedBefore(ctx context.Context, t time.Time, limit int) ([]*Step, error)

	// Exchange returns the exchange id (ErrExchangeNotFound).
	Exchange(ctx context.Context, id string) (*Exchange, error)
	// ByIdempotencyKey returns the exchange that sender submitted with
	// key (ErrExchangeNotFound).
	ByIdempotencyKey(ctx context.Context, sender, key string) (string, error)
	// Inbox returns the exchanges of recipient whose state is InInbox, in
	// the order of their ids, after the id after (""; from the start), at
	// most limit.
	Inbox(ctx context.Context, recipient, after string, limit int) ([]*Exchange, error)

	// Claim takes the first due job (NotBefore at or before now) that no
	// one holds, and holds it until now+lease: nil, nil when none is due.
	Claim(ctx context.Context, now time.Time, lease time.Duration) (*Job, error)
	// Release gives a held job back, due at notBefore, its attempt
	// counted and lastErr kept; a job committed away meanwhile is nil.
	Release(ctx context.Context, job *Job, notBefore time.Time, lastErr string) error
	// Done removes a job that is done without a step of its own (a
	// notification sent, a job with nothing left to do); a job removed
	// already is nil.
	Done(ctx context.Context, jobID string) error
	// Jobs returns every job of the queue, for operators and tests.
	Jobs(ctx context.Context) ([]*Job, error)

	// CreatePayload starts the payload file name of an exchange (names:
	// lowercase letters, digits, '.', '-'); it replaces one of that name
	// only when committed. The writer must be committed or aborted.
	CreatePayload(ctx context.Context, exchange, name string) (PayloadWriter, error)
	// OpenPayload opens a committed payload (ErrPayloadNotFound).
	OpenPayload(ctx context.Context, exchange, name string) (Payload, error)
	// RemovePayloads removes every payload of an exchange.
	RemovePayloads(ctx context.Context, exchange string) error

	// Close releases the store.
	Close() error
}

// Step is one change of an exchange and the evidence record that proves
// it: the unit of the outbox (see [ExchangeStore]).
type Step struct {
	Exchange string    `json:"exchange"`
	Prepared time.Time `json:"prepared"`
	// Record is the encoded evidence record; its id is Event.EvidenceID.
	Record []byte `json:"record"`
	// Event is added to the exchange's events.
	Event Event `json:"event"`
	// Create is the exchange a submission creates, in StatePending; the
	// commit makes it To.
	Create *Exchange `json:"create,omitempty"`
	// Created is set, instead of Create, in an outbox entry that leaves
	// the exchange it creates to the store's exchanges (the embedded
	// store's); the steps the store returns have Create.
	Created bool `json:"created,omitempty"`
	// From are the states the step applies to (not with Create); To the
	// state after it ("": unchanged).
	From []State `json:"from,omitempty"`
	To   State   `json:"to,omitempty"`
	// Seal and Acknowledgment, when set, are recorded in the exchange.
	Seal           *PayloadInfo `json:"seal,omitempty"`
	Acknowledgment *PayloadInfo `json:"acknowledgment,omitempty"`
	// Enqueue are jobs the commit adds (one of the same id replaces it);
	// Finish the id of a job it removes ("": none; a job not there is no
	// error).
	Enqueue []*Job `json:"enqueue,omitempty"`
	Finish  string `json:"finish,omitempty"`
}

// Job is an entry of the work queue.
type Job struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"` // JobProcess, JobNotify, JobExpire
	Exchange string `json:"exchange"`
	// Evidence is the evidence id of the event a JobNotify tells the
	// sender of.
	Evidence  string    `json:"evidence,omitempty"`
	NotBefore time.Time `json:"not_before"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	// HeldUntil is set while a worker holds the job.
	HeldUntil time.Time `json:"held_until,omitzero"`
}

// The kinds of jobs.
const (
	// JobProcess seals an accepted exchange and delivers it through its
	// recipient's channel (id: the exchange id + "-process").
	JobProcess = "process"
	// JobNotify tells the sender of an exchange of one of its events, by
	// a POST to the sender's notify_url (id: the exchange id + "-notify-"
	// + the event's evidence id).
	JobNotify = "notify"
	// JobExpire expires a delivered exchange that its recipient has not
	// answered, when it is due (id: the exchange id + "-expire").
	JobExpire = "expire"
)

// KeyTakenError: the sender's idempotency key names an exchange already.
type KeyTakenError struct{ Exchange string }

func (e *KeyTakenError) Error() string {
	return "middleoffice: the idempotency key names exchange " + e.Exchange
}

// Errors of an ExchangeStore.
var (
	ErrExchangeExists  = errors.New("middleoffice: exchange id taken")
	ErrStateChanged    = errors.New("middleoffice: the exchange is not in a state the step applies to")
	ErrStepPending     = errors.New("middleoffice: the exchange has a step waiting for its evidence")
	ErrStepNotFound    = errors.New("middleoffice: no such step")
	ErrStepCommitted   = errors.New("middleoffice: the step is committed")
	ErrPayloadNotFound = errors.New("middleoffice: no such payload")
)

// PayloadWriter writes a payload file. Commit makes it durable (written,
// fsynced, in place) and returns once it is — or, for a small payload of
// the embedded store, once it is staged to be written in the transaction
// of its exchange's next Prepare: durable before any step prepared after
// it, which is what names a payload (see [BoltExchangeStore]). Abort
// discards it.
type PayloadWriter interface {
	io.Writer
	Commit() error
	Abort() error
}

// Payload is a committed payload file, read as a stream or at offsets
// (cms.DecryptTo reads an envelope twice). Close it.
type Payload interface {
	io.Reader
	io.ReaderAt
	io.Closer
	Size() int64
}
