package proof

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"

	"pec/evidence"
	"pec/internal/promreg"
)

// Options hold optional collaborators; the zero value suits tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
}

// Errors of a Log.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("proof: log closed")
	// ErrUnavailable is evidence.ErrUnavailable: the log cannot take
	// records now (its store fails, or too many records wait to be
	// sealed); retry later.
	ErrUnavailable = evidence.ErrUnavailable
)

// MaxUnsealed bounds the records that may wait for a seal: past it, the
// sealing has been failing for a while and Append refuses with
// ErrUnavailable rather than queue without bound.
const MaxUnsealed = 1 << 20

// maxSealRecords bounds the records of one checkpoint: more wait for the
// next, sealed at once.
const maxSealRecords = 1 << 14

// sealBacklog is how many records may wait for a seal before the writer
// waits for the sequencer: under a load that outruns sealing (the
// sequencer writes a record's leaf, id and nodes; the writer only appends
// it), appends slow down to what is sealed, so that the seal delay stays
// bounded (about seal_interval plus the time to seal this many records)
// rather than growing with the backlog. Past sealStall, the append fails
// with ErrUnavailable: sealing is stuck, not slow.
const (
	sealBacklog = 2 * maxSealRecords
	sealStall   = 10 * time.Second
)

// Timestamper obtains RFC 3161 time-stamp tokens for the log's
// checkpoints.
type Timestamper interface {
	// Timestamp returns a TimeStampToken (the DER ContentInfo, RFC 3161
	// section 2.4.2) on a SHA-256 digest. It is safe for concurrent use.
	Timestamp(ctx context.Context, sha256Digest []byte) ([]byte, error)
}

// Log is the evidence log: an [evidence.Appender] over a [Store].
//
// Append makes records durable — one group-committed write for all the
// records appended meanwhile — and returns; that is all an operation waits
// for. The sequencer seals what waits: at most Config.SealInterval after
// the previous checkpoint (at once when the log was idle longer), it makes
// the unsealed records leaves of the Merkle tree, signs the new checkpoint
// (c2sp.org/tlog-checkpoint in a signed note), has it time-stamped, writes
// nodes and head to the store, saves the checkpoint outside the store
// (Config.CheckpointFile) and then publishes it ([Log.Latest]). After a
// crash, the next Open seals whatever was durable but not sealed. With a
// store shared by several nodes ([Leader]), every node appends and one at
// a time seals; the others follow its heads.
//
// It is safe for concurrent use. One Log per store handle.
type Log struct {
	store    Store
	leader   Leader // nil: this log always seals
	signer   *NoteSigner
	ts       Timestamper
	guard    string // the checkpoint file; "" none
	size     int
	wait     time.Duration
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	metrics  *logMetrics

	queue    chan *pending
	appended chan struct{} // cap 1: records were made durable
	stop     chan struct{}
	done     chan struct{}
	closeMu  sync.RWMutex
	closed   bool
	unsealed atomic.Int64 // records of this log durable and not known sealed
	// firstDurable is when the first record since the last seal's read
	// was acknowledged (UnixNano; 0: none yet): the seal delay's start.
	firstDurable atomic.Int64

	recsBuf []StoredRecord // owned by the writer goroutine: the records of one write

	// Owned by the sequencer goroutine.
	rng        *compact.Range // the tree of l.treeHead
	treeHead   *Head          // the head rng is the tree of; nil: empty
	unsent     *unpublished   // sealed in the store, not yet saved and published
	retry      *sealedBatch   // signed, its store write failed: written again, never re-signed
	lastSeal   time.Time
	lastRead   time.Time // when the last seal read the unsealed records
	sealFailed bool
	following  bool // another node led at the last step: wait for the tick

	mu       sync.RWMutex
	head     *Head         // the newest published head; nil: empty log
	sealedCh chan struct{} // closed and replaced at each publication
	err      error         // the last sealing failure, until a success
	wErr     error         // the last failed write of records, until one succeeds

	writeFailing atomic.Bool // wErr is set
}

type pending struct {
	recs     []StoredRecord
	callerID bool // some id was chosen by the caller: check it is new
	start    time.Time
	done     chan error
}

type sealedBatch struct {
	prev  *Head
	batch Batch
	rng   *compact.Range
	since time.Time // when its oldest record became durable, at the latest
}

type unpublished struct {
	head *Head
}

// Open starts a log over store, whose checkpoints signer signs (its name
// is the log's origin) and ts time-stamps. It checks the last tree head
// (its signature, the stored tree) and, with cfg.CheckpointFile, that the
// store was not rolled back (a *RollbackError). Close stops the log; it
// does not close the store.
func Open(ctx context.Context, store Store, signer *NoteSigner, ts Timestamper, cfg Config, opts Options) (*Log, error) {
	if store == nil || signer == nil || ts == nil {
		return nil, errors.New("proof: a store, a note signer and a timestamper are required")
	}
	l := &Log{
		store:    store,
		signer:   signer,
		ts:       ts,
		guard:    cfg.CheckpointFile,
		size:     cfg.BatchSize,
		wait:     cfg.BatchWait,
		interval: cfg.Interval(),
		now:      opts.Now,
		log:      opts.Logger,
		metrics:  newLogMetrics(opts.Registry),
		queue:    make(chan *pending, 4096),
		appended: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		sealedCh: make(chan struct{}),
	}
	l.leader, _ = store.(Leader)
	if l.size <= 0 {
		l.size = DefaultBatchSize
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.guard != "" {
		if _, err := CheckAgainstSaved(ctx, store, signer.Verifier(), l.guard); err != nil {
			return nil, err
		}
	}
	head, rng, err := l.loadTree(ctx)
	if err != nil {
		return nil, err
	}
	l.rng, l.treeHead, l.head = rng, head, head
	if head != nil && l.guard != "" {
		// The store may be one checkpoint ahead of the file (a crash
		// between the two writes): the file catches up.
		if err := SaveCheckpoint(l.guard, head.Checkpoint); err != nil {
			return nil, err
		}
	}
	if n, err := store.Unsealed(ctx, MaxUnsealed); err == nil && len(n) > 0 {
		l.unsealed.Store(int64(len(n)))
		l.appended <- struct{}{} // what a crash left unsealed is sealed first
	}
	writerDone := make(chan struct{})
	go func() { l.write(); close(writerDone) }()
	go func() { l.sequence(writerDone); close(l.done) }()
	return l, nil
}

// loadTree reads the store's newest head, checks its checkpoint's
// signature and that the stored tree has its root.
func (l *Log) loadTree(ctx context.Context) (*Head, *compact.Range, error) {
	head, err := l.store.Latest(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil, rangeFactory.NewEmptyRange(0), nil
	}
	if err != nil {
		return nil, nil, err
	}
	cp, err := OpenCheckpoint(l.signer.Verifier(), "", head.Checkpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("proof: the last tree head: %w", err)
	}
	if cp.Size != head.Size || !bytes.Equal(cp.Root, head.Root) {
		return nil, nil, fmt.Errorf("proof: the last tree head (size %d) is not that of its checkpoint", head.Size)
	}
	rng, err := loadRange(ctx, l.store, head.Size)
	if err != nil {
		return nil, nil, err
	}
	root, err := rng.GetRootHash(nil)
	if err != nil || !bytes.Equal(root, head.Root) {
		return nil, nil, fmt.Errorf("proof: the stored tree does not match the last tree head (size %d)", head.Size)
	}
	return head, rng, nil
}

// Latest is the newest published tree head; nil for an empty log.
func (l *Log) Latest() *Head {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.head
}

// Store is the log's store, for proofs and reads.
func (l *Log) Store() Store { return l.store }

// Verifier checks the signatures of the log's checkpoints.
func (l *Log) Verifier() *NoteVerifier { return l.signer.Verifier() }

// SealInterval is the longest wait for a seal.
func (l *Log) SealInterval() time.Duration { return l.interval }

// Ready reports whether the log takes and seals records: nil, or the last
// store failure (a lost database connection, a failing disk), until a
// write of records and a seal (or, following another node, a read of its
// heads) work again.
func (l *Log) Ready() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.err != nil {
		return l.err
	}
	return l.wErr
}

func (l *Log) setErr(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// Append implements evidence.Appender: it returns once recs are durable.
// An empty ID gets a fresh one (evidence.NewID), a zero Time the current
// time; recs themselves are not modified. A caller-chosen id already in
// the log fails the call with ErrDuplicateID; an invalid record wraps
// evidence.ErrMalformedRecord; ErrUnavailable says to retry later. When
// ctx ends while the records are being written, they may still be in the
// log.
func (l *Log) Append(ctx context.Context, recs ...*evidence.Record) ([]string, error) {
	start := time.Now()
	if len(recs) == 0 {
		return nil, nil
	}
	p := newPending(len(recs), start)
	ids := make([]string, len(recs))
	for i, rec := range recs {
		r := *rec
		if r.ID == "" {
			r.ID = evidence.NewID(l.now())
		} else {
			p.callerID = true
		}
		if r.Time.IsZero() {
			r.Time = l.now()
		}
		data, err := r.MarshalBinary()
		if err != nil {
			p.release()
			return nil, err
		}
		p.recs[i] = StoredRecord{ID: r.ID, Data: data, Fresh: rec.ID == ""}
		ids[i] = r.ID
	}
	if l.unsealed.Load() >= MaxUnsealed {
		p.release()
		l.metrics.failed.Add(float64(len(recs)))
		return nil, fmt.Errorf("%w: %d records wait to be sealed", ErrUnavailable, l.unsealed.Load())
	}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		p.release()
		return nil, ErrClosed
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		p.release()
		return nil, ctx.Err()
	}
	l.closeMu.RUnlock()
	select {
	case err := <-p.done:
		// The writer is done with p: it sends on done last.
		p.release()
		if err != nil {
			return nil, err
		}
		return ids, nil
	case <-ctx.Done():
		return nil, ctx.Err() // p stays with the writer
	}
}

// pendingPool recycles the pendings of the appends that got their answer
// (three allocations fewer on the hot path).
var pendingPool = sync.Pool{New: func() any { return &pending{done: make(chan error, 1)} }}

func newPending(n int, start time.Time) *pending {
	p := pendingPool.Get().(*pending)
	if cap(p.recs) < n {
		p.recs = make([]StoredRecord, n)
	}
	p.recs, p.start, p.callerID = p.recs[:n], start, false
	return p
}

// release returns p to the pool: only when no one else holds it (not
// queued, or its answer received), with its done channel empty.
func (p *pending) release() {
	clear(p.recs)
	if cap(p.recs) > 64 {
		p.recs = nil
	}
	pendingPool.Put(p)
}

// Close writes what was appended before it, seals it (when this log
// seals), then stops the log.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.closeMu.Unlock()
	<-l.done
	return nil
}

// write is the group commit: it takes what is queued, writes it with one
// Store.Append and acknowledges it.
func (l *Log) write() {
	batch := make([]*pending, 0, 64)
	for {
		batch = batch[:0]
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-l.stop:
			// Appends that entered the queue before Close are written.
			for {
				select {
				case p := <-l.queue:
					batch = append(batch, p)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				l.writeBatch(batch)
			}
			return
		}
		l.writeBatch(l.collect(batch))
	}
}

// collect fills a write: up to size records of what is queued, after
// yielding a few times so that the writers just acknowledged join it
// (under load every writer then shares one fdatasync), and with a wait,
// that long after the first record.
func (l *Log) collect(batch []*pending) []*pending {
	n := len(batch[0].recs)
	if l.wait > 0 {
		t := time.NewTimer(l.wait)
		defer t.Stop()
		for n < l.size {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
				n += len(p.recs)
				continue
			case <-t.C:
			case <-l.stop:
			}
			break
		}
	}
	for empty := 0; empty < 3 && n < l.size; {
		select {
		case p := <-l.queue:
			batch = append(batch, p)
			n += len(p.recs)
			empty = 0
		default:
			empty++
			runtime.Gosched()
		}
	}
	return batch
}

func (l *Log) writeBatch(batch []*pending) {
	ctx := context.Background()
	if err := l.waitBacklog(); err != nil {
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	start := time.Now()
	// Caller-chosen ids must be new: in this write and in the store.
	keep := batch[:0]
	var seen map[string]bool
	for _, p := range batch {
		if p.callerID {
			if seen == nil {
				seen = map[string]bool{}
			}
			if err := l.checkNew(ctx, p, seen); err != nil {
				p.done <- err
				continue
			}
		}
		keep = append(keep, p)
	}
	batch = keep
	if len(batch) == 0 {
		return
	}
	var recs []StoredRecord
	if len(batch) == 1 {
		recs = batch[0].recs
	} else {
		// The writer's own buffer: a Store does not keep the slice.
		recs = l.recsBuf[:0]
		for _, p := range batch {
			recs = append(recs, p.recs...)
		}
		if cap(recs) <= 4096 {
			l.recsBuf = recs
		}
		defer clear(recs)
	}
	err := l.store.Append(ctx, recs)
	if errors.Is(err, ErrDuplicateID) && len(batch) > 1 {
		// Another node appended one of these ids meanwhile: each caller
		// on its own, so that the others are not refused with it.
		for _, p := range batch {
			l.writeBatch([]*pending{p})
		}
		return
	}
	l.metrics.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		if !errors.Is(err, ErrDuplicateID) {
			// Logged once until a write works again.
			if !l.writeFailing.Swap(true) {
				l.log.Error("proof: records not written; appends fail until the store works again", "records", len(recs), "err", err)
			}
			l.mu.Lock()
			l.wErr = err
			l.mu.Unlock()
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		l.metrics.failed.Add(float64(len(recs)))
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	if l.writeFailing.Swap(false) {
		l.mu.Lock()
		l.wErr = nil
		l.mu.Unlock()
		l.log.Info("proof: records written again")
	}
	l.metrics.batch.Observe(float64(len(recs)))
	l.metrics.appends.Add(float64(len(recs)))
	l.unsealed.Add(int64(len(recs)))
	l.metrics.unsealed.Set(float64(l.unsealed.Load()))
	now := time.Now()
	l.firstDurable.CompareAndSwap(0, now.UnixNano())
	for _, p := range batch {
		l.metrics.ack.Observe(now.Sub(p.start).Seconds())
		p.done <- nil
	}
	select {
	case l.appended <- struct{}{}:
	default:
	}
}

// waitBacklog waits while sealBacklog records wait for a seal, for
// sealStall at most.
func (l *Log) waitBacklog() error {
	if l.leader != nil || l.unsealed.Load() < sealBacklog {
		return nil // a shared store: other nodes' records are not counted
	}
	l.metrics.backlogWaits.Inc()
	deadline := time.NewTimer(sealStall)
	defer deadline.Stop()
	for l.unsealed.Load() >= sealBacklog {
		select {
		case l.appended <- struct{}{}: // the sequencer seals at once
		default:
		}
		l.mu.RLock()
		ch := l.sealedCh
		l.mu.RUnlock()
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%w: %d records have waited for a seal for %s", ErrUnavailable, l.unsealed.Load(), sealStall)
		case <-l.done:
			return ErrClosed
		}
	}
	return nil
}

func (l *Log) checkNew(ctx context.Context, p *pending, seen map[string]bool) error {
	for _, r := range p.recs {
		if seen[r.ID] {
			return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
		}
		_, err := l.store.Lookup(ctx, r.ID)
		switch {
		case err == nil || errors.Is(err, ErrNotSealed):
			return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
		case !errors.Is(err, ErrNotFound):
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	for _, r := range p.recs {
		seen[r.ID] = true
	}
	return nil
}

// sequence seals: at once when records arrive after an idle interval,
// otherwise on each tick while records wait; a log that does not lead
// follows the leader's heads on each tick.
func (l *Log) sequence(writerDone <-chan struct{}) {
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			<-writerDone // what Close let through is durable: seal it
			l.step(true)
			return
		case <-l.appended:
			if l.following || time.Since(l.lastSeal) < l.interval && l.unsealed.Load() < sealBacklog/2 {
				continue // the tick seals it, within the interval
			}
		case <-tick.C:
		}
		l.step(false)
	}
}

// step seals everything unsealed (as leader), or follows the store's
// newest head.
func (l *Log) step(final bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.leader != nil {
		lead, err := l.leader.Lead(ctx)
		if err != nil {
			l.sealFailure(fmt.Errorf("proof: sealing lease: %w", err))
			return
		}
		l.following = !lead
		if !lead {
			l.follow(ctx)
			return
		}
	}
	for {
		n, err := l.sealOnce(ctx)
		if err != nil {
			l.sealFailure(err)
			return
		}
		l.sealWorks()
		if n < maxSealRecords {
			return
		}
		if final {
			continue
		}
	}
}

// sealWorks clears a sealing failure, and says so once.
func (l *Log) sealWorks() {
	if l.sealFailed {
		l.sealFailed = false
		l.setErr(nil)
		l.log.Info("proof: sealing again")
	}
}

// sealFailure is logged once until sealing works again.
func (l *Log) sealFailure(err error) {
	l.metrics.sealFailures.Inc()
	l.setErr(err)
	if !l.sealFailed {
		l.sealFailed = true
		l.log.Error("proof: sealing fails; records stay durable and unsealed until it works again", "err", err)
	}
}

// follow publishes the newest head another node sealed.
func (l *Log) follow(ctx context.Context) {
	head, err := l.store.Latest(ctx)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		l.sealFailure(err)
		return
	}
	if s := l.retry; s != nil && !sameHead(head, s.prev) {
		// The batch this log signed and could not write was written
		// after all (its answer lost), or another sequencer's head took
		// its place: it is settled, never to be written later over a
		// newer head.
		h, err := l.store.HeadAt(ctx, s.batch.Head.Size)
		if err != nil && !errors.Is(err, ErrNotFound) {
			l.sealFailure(err)
			return
		}
		l.retry = nil
		if err != nil || !bytes.Equal(h.Checkpoint, s.batch.Head.Checkpoint) {
			l.metrics.unpublished.Inc()
			l.log.Warn("proof: another sequencer sealed first; this signed checkpoint is dropped, never published", "size", s.batch.Head.Size)
		}
	}
	if cur := l.Latest(); cur != nil && cur.Size >= head.Size {
		if l.sealFailed {
			l.sealFailed = false
			l.setErr(nil)
		}
		return
	}
	if _, err := OpenCheckpoint(l.signer.Verifier(), "", head.Checkpoint); err != nil {
		l.sealFailure(fmt.Errorf("proof: the stored tree head %d: %w", head.Size, err))
		return
	}
	if err := l.checkExtends(ctx, head); err != nil {
		l.sealFailure(err)
		return
	}
	l.treeHead, l.rng = nil, nil // reloaded if this log leads later
	l.sealWorks()
	if err := l.publish(head); err != nil {
		l.sealFailure(err)
		return
	}
	l.noteSealed(0)
}

// checkExtends checks that head's tree extends the published one.
func (l *Log) checkExtends(ctx context.Context, head *Head) error {
	cur := l.Latest()
	if cur == nil {
		return nil
	}
	p, err := ConsistencyProof(ctx, l.store, cur.Size, head.Size)
	if err == nil {
		err = VerifyConsistency(cur.Size, head.Size, p, cur.Root, head.Root)
	}
	if err != nil {
		return fmt.Errorf("%w: the stored head of size %d does not extend the published one of size %d: %w", ErrRollback, head.Size, cur.Size, err)
	}
	return nil
}

// sealOnce seals up to maxSealRecords unsealed records; it returns how
// many.
func (l *Log) sealOnce(ctx context.Context) (int, error) {
	if l.unsent != nil {
		// Sealed in the store, the checkpoint file not yet written.
		if err := l.publish(l.unsent.head); err != nil {
			return 0, err
		}
		l.unsent = nil
	}
	if l.retry != nil {
		return l.commitRetry(ctx)
	}
	if err := l.syncTree(ctx); err != nil {
		return 0, err
	}
	prevRead := l.lastRead
	l.lastRead = time.Now()
	since := l.firstDurable.Swap(0)
	recs, err := l.store.Unsealed(ctx, maxSealRecords)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	start := time.Now()
	rng, err := rangeFactory.NewRange(l.rng.Begin(), l.rng.End(), append([][]byte(nil), l.rng.Hashes()...))
	if err != nil {
		return 0, err
	}
	s := &sealedBatch{prev: l.treeHead, rng: rng, since: sealDelayStart(since, prevRead, l.leader != nil, recs[0].Data)}
	s.batch.Start = rng.End()
	s.batch.Records = recs
	s.batch.Nodes = make([]Node, 0, 2*len(recs)+8)
	visit := func(id compact.NodeID, hash []byte) {
		s.batch.Nodes = append(s.batch.Nodes, Node{ID: id, Hash: hash})
	}
	for _, r := range recs {
		if err := rng.Append(LeafHash(r.Data), visit); err != nil {
			return 0, err
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return 0, err
	}
	note, err := l.signer.Sign(Checkpoint{Origin: l.signer.Name(), Size: rng.End(), Root: root}.Text())
	if err != nil {
		return 0, fmt.Errorf("proof: sign checkpoint: %w", err)
	}
	digest := sha256.Sum256(note)
	token, err := l.ts.Timestamp(ctx, digest[:])
	if err != nil {
		return 0, fmt.Errorf("proof: time-stamp checkpoint: %w", err)
	}
	s.batch.Head = Head{Size: rng.End(), Root: root, Checkpoint: note, Token: token}
	l.metrics.seal.Observe(time.Since(start).Seconds())
	l.retry = s
	return l.commitRetry(ctx)
}

// commitRetry writes the signed batch l.retry. A checkpoint once signed
// is written as it is or dropped when another sequencer's head took its
// place, never signed again over other records.
func (l *Log) commitRetry(ctx context.Context) (int, error) {
	s := l.retry
	start := time.Now()
	err := l.store.Seal(ctx, s.prev, &s.batch)
	l.metrics.commitSeal.Observe(time.Since(start).Seconds())
	if errors.Is(err, ErrConflict) {
		// Written meanwhile by this very batch (its answer was lost), or
		// by another sequencer.
		l.retry = nil
		if h, herr := l.store.HeadAt(ctx, s.batch.Head.Size); herr == nil && bytes.Equal(h.Checkpoint, s.batch.Head.Checkpoint) {
			err = nil
		} else {
			l.metrics.unpublished.Inc()
			l.log.Warn("proof: another sequencer sealed first; this signed checkpoint is dropped, never published", "size", s.batch.Head.Size, "err", err)
			l.treeHead, l.rng = nil, nil
			l.metrics.resyncs.Inc()
			return 0, nil
		}
	}
	if err != nil {
		return 0, fmt.Errorf("proof: write sealed batch: %w", err)
	}
	l.retry = nil
	head := s.batch.Head
	l.rng, l.treeHead = s.rng, &head
	l.lastSeal = time.Now()
	// What the publication reports (metrics, readiness) is true before
	// anyone learns of it.
	l.metrics.sealRecords.Observe(float64(len(s.batch.Records)))
	if !s.since.IsZero() {
		delay := time.Since(s.since)
		l.metrics.sealDelay.Observe(delay.Seconds())
		l.metrics.maxDelay(delay)
	}
	l.sealWorks()
	if err := l.publish(&head); err != nil {
		l.unsent = &unpublished{head: &head}
		return 0, err
	}
	l.noteSealed(len(s.batch.Records))
	return len(s.batch.Records), nil
}

// syncTree makes l.rng the tree of the store's newest head: after another
// sequencer sealed, or at the start of a lease.
func (l *Log) syncTree(ctx context.Context) error {
	if l.rng != nil && l.leader == nil {
		return nil // the only sequencer: the tree is what it sealed
	}
	head, err := l.store.Latest(ctx)
	if errors.Is(err, ErrNotFound) {
		head = nil
	} else if err != nil {
		return err
	}
	if l.rng != nil && sameHead(head, l.treeHead) {
		return nil
	}
	if head != nil {
		if err := l.checkExtends(ctx, head); err != nil {
			return err
		}
	}
	h, rng, err := l.loadTree(ctx)
	if err != nil {
		return err
	}
	l.treeHead, l.rng = h, rng
	l.metrics.resyncs.Inc()
	if h != nil && (l.Latest() == nil || l.Latest().Size < h.Size) {
		return l.publish(h)
	}
	return nil
}

func sameHead(a, b *Head) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Size == b.Size && bytes.Equal(a.Root, b.Root)
}

// publish saves head in the checkpoint file, then makes it the log's
// newest: a checkpoint is published only once saved.
func (l *Log) publish(head *Head) error {
	if l.guard != "" {
		if err := SaveCheckpoint(l.guard, head.Checkpoint); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.head = head
	close(l.sealedCh)
	l.sealedCh = make(chan struct{})
	l.mu.Unlock()
	l.metrics.size.Set(float64(head.Size))
	return nil
}

// noteSealed counts n of this log's records sealed; following another
// sequencer, it re-reads how many still wait.
func (l *Log) noteSealed(n int) {
	if l.leader == nil {
		l.unsealed.Add(-int64(n))
	} else if recs, err := l.store.Unsealed(context.Background(), MaxUnsealed); err == nil {
		l.unsealed.Store(int64(len(recs)))
	}
	l.metrics.unsealed.Set(float64(l.unsealed.Load()))
}

// sealDelayStart is when the oldest record of a seal became durable: the
// first acknowledgment since the previous seal read the unsealed records
// (firstNano). A shared store also seals other nodes' records, which this
// node did not acknowledge: there the record's own time counts, but never
// before the previous read (a record that says it is older was sealed then
// or is dated by its emitter), nor after the read that takes it.
func sealDelayStart(firstNano int64, prevRead time.Time, shared bool, oldest []byte) time.Time {
	var since time.Time
	if firstNano != 0 {
		since = time.Unix(0, firstNano)
	}
	if shared {
		if rt := recordTime(oldest); rt.After(prevRead) && (since.IsZero() || rt.Before(since)) {
			since = rt
		}
	}
	if since.IsZero() && !prevRead.IsZero() {
		since = prevRead
	}
	return since
}

// recordTime reads the time of an encoded record (see
// evidence.Record.MarshalBinary); the zero time if it cannot.
func recordTime(data []byte) time.Time {
	id := evidence.EncodedID(data)
	off := len("PEC-EV") + 1 + 4 + len(id)
	if id == "" || len(data) < off+4 {
		return time.Time{}
	}
	n := int(binary.BigEndian.Uint32(data[off:]))
	off += 4 + n
	if n > 64 || len(data) < off+8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(data[off:])))
}

// WaitSealed waits until the record with this id is sealed and published,
// and returns its leaf index and the newest published head; when ctx ends
// first, ErrNotSealed. A record the log does not hold is ErrNotFound.
func (l *Log) WaitSealed(ctx context.Context, id string) (uint64, *Head, error) {
	for {
		l.mu.RLock()
		ch, head := l.sealedCh, l.head
		l.mu.RUnlock()
		idx, err := l.store.Lookup(ctx, id)
		if err == nil && head != nil && idx < head.Size {
			return idx, head, nil
		}
		if errors.Is(err, ErrNotFound) {
			return 0, nil, err
		}
		// Not sealed yet, or a store failure that may pass (a lost
		// database connection): wait for the next publication, or a
		// moment, within ctx.
		retry := time.NewTimer(l.interval)
		select {
		case <-ch:
		case <-retry.C:
		case <-ctx.Done():
			retry.Stop()
			if err != nil && !errors.Is(err, ErrNotSealed) {
				return 0, nil, err
			}
			return 0, nil, fmt.Errorf("%w: evidence %q", ErrNotSealed, id)
		case <-l.done:
			retry.Stop()
			return 0, nil, ErrClosed
		}
		retry.Stop()
	}
}

type logMetrics struct {
	appends      prometheus.Counter
	failed       prometheus.Counter
	batch        prometheus.Observer
	commit       prometheus.Observer
	ack          prometheus.Observer
	seal         prometheus.Observer
	commitSeal   prometheus.Observer
	sealRecords  prometheus.Observer
	sealDelay    prometheus.Observer
	sealDelayMax prometheus.Gauge
	sealFailures prometheus.Counter
	backlogWaits prometheus.Counter
	unsealed     prometheus.Gauge
	size         prometheus.Gauge
	resyncs      prometheus.Counter
	unpublished  prometheus.Counter

	maxMu sync.Mutex
	max   time.Duration
}

func (m *logMetrics) maxDelay(d time.Duration) {
	m.maxMu.Lock()
	defer m.maxMu.Unlock()
	if d > m.max {
		m.max = d
		m.sealDelayMax.Set(d.Seconds())
	}
}

func newLogMetrics(reg prometheus.Registerer) *logMetrics {
	secs := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &logMetrics{
		appends:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_appends_total", Help: "Evidence records made durable and acknowledged."}),
		failed:       prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_append_failures_total", Help: "Evidence records refused or not written."}),
		batch:        prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_write_records", Help: "Records per durable write (group commit).", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		commit:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_write_seconds", Help: "Time of one durable write of records.", Buckets: secs}),
		ack:          prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_ack_seconds", Help: "Time from Append to its acknowledgment (durable).", Buckets: secs}),
		seal:         prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_seconds", Help: "Time to hash, sign and time-stamp a checkpoint.", Buckets: secs}),
		commitSeal:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_write_seconds", Help: "Time to write a sealed batch (records, nodes, head) to the store.", Buckets: secs}),
		sealRecords:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_records", Help: "Records per checkpoint.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		sealDelay:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_delay_seconds", Help: "Time from the oldest record of a checkpoint to its publication.", Buckets: secs}),
		sealDelayMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_seal_delay_max_seconds", Help: "The longest seal delay since start."}),
		sealFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_seal_failures_total", Help: "Seal attempts that failed (records stay durable and unsealed)."}),
		backlogWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_backlog_waits_total", Help: "Writes that waited for the sequencer to seal the backlog."}),
		unsealed:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_unsealed_records", Help: "Records durable and waiting for a checkpoint."}),
		size:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_tree_size", Help: "Size of the newest published checkpoint."}),
		resyncs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_resyncs_total", Help: "Times the sequencer reloaded the tree that another node extended."}),
		unpublished:  prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_unpublished_checkpoints_total", Help: "Signed checkpoints dropped because another sequencer sealed first (0 with a working lease)."}),
	}
	if reg != nil {
		m.appends = promreg.Register(reg, m.appends)
		m.failed = promreg.Register(reg, m.failed)
		m.batch = promreg.Register(reg, m.batch.(prometheus.Histogram))
		m.commit = promreg.Register(reg, m.commit.(prometheus.Histogram))
		m.ack = promreg.Register(reg, m.ack.(prometheus.Histogram))
		m.seal = promreg.Register(reg, m.seal.(prometheus.Histogram))
		m.commitSeal = promreg.Register(reg, m.commitSeal.(prometheus.Histogram))
		m.sealRecords = promreg.Register(reg, m.sealRecords.(prometheus.Histogram))
		m.sealDelay = promreg.Register(reg, m.sealDelay.(prometheus.Histogram))
		m.sealDelayMax = promreg.Register(reg, m.sealDelayMax)
		m.sealFailures = promreg.Register(reg, m.sealFailures)
		m.backlogWaits = promreg.Register(reg, m.backlogWaits)
		m.unsealed = promreg.Register(reg, m.unsealed)
		m.size = promreg.Register(reg, m.size)
		m.resyncs = promreg.Register(reg, m.resyncs)
		m.unpublished = promreg.Register(reg, m.unpublished)
	}
	return m
}
