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
// the unsealed records leaves of the Merkle tree and writes them with the
// tree's nodes, size and root to the store ([Store.Integrate]); only then
// does it sign the checkpoint of that stored tree (c2sp.org/tlog-checkpoint
// in a signed note), have it time-stamped, write the head to the store
// ([Store.PutHead]), save the checkpoint outside the store
// (Config.CheckpointFile) and publish it ([Log.Latest]). A checkpoint is
// thus signed only over a tree the store holds for good: a sequencer that
// dies or fails between any two steps leaves the tree pending, and the
// next seal — of this node after a restart, or of another — signs that
// very tree (the same size and root), never another one of that size.
// After a crash, the next Open seals whatever was durable but not sealed.
// With a store shared by several nodes ([Leader]), every node appends and
// one at a time seals; the others follow its heads.
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
	rng      *compact.Range // the store's newest tree as this log knows it; nil: to be read
	tree     *Tree          // the tree rng is of; nil: the empty log
	treeHead *Head          // the newest stored head known; nil: none
	// pending is set while l.tree is integrated and its head not stored.
	pending *pendingSeal
	// signed is l.tree's head, signed and time-stamped, whose write
	// failed: written again as it is, never signed again over another
	// tree.
	signed *Head
	// unconfirmed is the batch of an Integrate whose answer was an error
	// other than a conflict: written or not, the store tells.
	unconfirmed *pendingSeal
	unsent      *Head // stored, not yet saved and published
	lastSeal    time.Time
	lastRead    time.Time // when the last seal read the unsealed records
	sealFailed  bool
	following   bool // another node led at the last step: wait for the tick

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

// pendingSeal is the seal of an integrated tree, until its head is
// stored.
type pendingSeal struct {
	tree    Tree
	records int       // the records the tree adds to the stored head's
	own     int       // of them, those counted in l.unsealed (integrated by this log)
	since   time.Time // when its oldest record became durable, at the latest; zero: unknown
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
	head, pend, rng, err := l.loadTree(ctx)
	if err != nil {
		return nil, err
	}
	l.rng, l.treeHead, l.head = rng, head, head
	l.setTree(head, pend)
	if head != nil && l.guard != "" {
		// The store may be one checkpoint ahead of the file (a crash
		// between the two writes): the file catches up.
		if err := SaveCheckpoint(l.guard, head.Checkpoint); err != nil {
			return nil, err
		}
	}
	if n, err := store.Unsealed(ctx, MaxUnsealed); err == nil && len(n) > 0 || pend != nil {
		l.unsealed.Store(int64(len(n)))
		l.appended <- struct{}{} // what a crash left unsealed (or unsigned) is sealed first
	}
	writerDone := make(chan struct{})
	go func() { l.write(); close(writerDone) }()
	go func() { l.sequence(writerDone); close(l.done) }()
	return l, nil
}

// loadTree reads the store's newest head and its pending tree (nil:
// none), checks the head's checkpoint signature, and that the stored tree
// has their roots: rng is the newest tree.
func (l *Log) loadTree(ctx context.Context) (head *Head, pend *Tree, rng *compact.Range, err error) {
	head, err = l.store.Latest(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		head = nil
	case err != nil:
		return nil, nil, nil, err
	default:
		cp, err := OpenCheckpoint(l.signer.Verifier(), "", head.Checkpoint)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("proof: the last tree head: %w", err)
		}
		if cp.Size != head.Size || !bytes.Equal(cp.Root, head.Root) {
			return nil, nil, nil, fmt.Errorf("proof: the last tree head (size %d) is not that of its checkpoint", head.Size)
		}
	}
	pend, err = l.store.Pending(ctx)
	if errors.Is(err, ErrNotFound) {
		pend = nil
	} else if err != nil {
		return nil, nil, nil, err
	}
	newest := pend
	if newest == nil && head != nil {
		newest = head.Tree()
	}
	if newest == nil {
		return nil, nil, rangeFactory.NewEmptyRange(0), nil
	}
	if head != nil && pend != nil {
		// The pending tree extends the head (and the stored nodes agree
		// with both roots).
		if pend.Size <= head.Size {
			return nil, nil, nil, fmt.Errorf("proof: the store's pending tree (size %d) is not above its last tree head (size %d)", pend.Size, head.Size)
		}
		p, err := ConsistencyProof(ctx, l.store, head.Size, pend.Size)
		if err == nil {
			err = VerifyConsistency(head.Size, pend.Size, p, head.Root, pend.Root)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("proof: the store's pending tree (size %d) does not extend its last tree head (size %d): %w", pend.Size, head.Size, err)
		}
	}
	rng, err = loadRange(ctx, l.store, newest.Size)
	if err != nil {
		return nil, nil, nil, err
	}
	root, err := rng.GetRootHash(nil)
	if err != nil || !bytes.Equal(root, newest.Root) {
		return nil, nil, nil, fmt.Errorf("proof: the stored tree does not match the store's tree of size %d", newest.Size)
	}
	return head, pend, rng, nil
}

// setTree makes the store's newest tree (pend, or head's) the one this
// log extends; a pending tree is the next to sign.
func (l *Log) setTree(head *Head, pend *Tree) {
	l.treeHead = head
	l.pending = nil
	switch {
	case pend != nil:
		l.tree = pend
		l.pending = &pendingSeal{tree: *pend, records: int(pend.Size - headSize(head))}
		if u := l.unconfirmed; u != nil && sameTree(&u.tree, pend) {
			l.pending = u // this log's batch was written after all
		}
	case head != nil:
		l.tree = head.Tree()
	default:
		l.tree = nil
	}
	l.unconfirmed = nil
}

func headSize(h *Head) uint64 {
	if h == nil {
		return 0
	}
	return h.Size
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
			l.step()
			return
		case <-l.appended:
			if l.following || time.Since(l.lastSeal) < l.interval && l.unsealed.Load() < sealBacklog/2 {
				continue // the tick seals it, within the interval
			}
		case <-tick.C:
		}
		l.step()
	}
}

// step seals everything unsealed (as leader), or follows the store's
// newest head.
func (l *Log) step() {
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
		more, err := l.sealOnce(ctx)
		if err != nil {
			l.sealFailure(err)
			return
		}
		l.sealWorks()
		if !more {
			return
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

// follow publishes the newest head another node sealed. A head this log
// signed and could not write is written first, or found superseded by
// another signature of its tree: the tree is the store's, whoever signs
// it.
func (l *Log) follow(ctx context.Context) {
	if l.signed != nil {
		if _, err := l.writeHead(ctx); err != nil {
			l.sealFailure(err)
			return
		}
	}
	// Reloaded if this log leads later.
	l.rng, l.tree, l.treeHead, l.pending, l.unconfirmed = nil, nil, nil, nil, nil
	head, err := l.store.Latest(ctx)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		l.sealFailure(err)
		return
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

// sealOnce takes the next step of sealing: a head to publish, to write
// again, a pending tree to sign, or up to maxSealRecords unsealed records
// to integrate and sign. more: there may be more to seal at once (a full
// batch, or a step that sealed what an earlier one left).
func (l *Log) sealOnce(ctx context.Context) (more bool, err error) {
	if l.unsent != nil {
		// Stored, the checkpoint file not yet written.
		if err := l.publish(l.unsent); err != nil {
			return false, err
		}
		l.unsent = nil
	}
	if l.signed != nil {
		_, err := l.writeHead(ctx)
		return err == nil, err
	}
	if err := l.syncTree(ctx); err != nil {
		return false, err
	}
	if l.pending != nil {
		// Integrated and not signed: by this log, before a failure, or by
		// a sequencer that died before it wrote the head.
		_, err := l.signPending(ctx)
		return err == nil, err
	}
	integrated, err := l.integrate(ctx)
	if err != nil || integrated == 0 {
		return false, err
	}
	if _, err := l.signPending(ctx); err != nil {
		return false, err
	}
	return integrated == maxSealRecords, nil
}

// integrate writes up to maxSealRecords unsealed records as the next
// leaves of the tree, with its nodes, size and root: they make the
// pending tree. It returns how many. Nothing is signed before the store
// said it holds the tree.
func (l *Log) integrate(ctx context.Context) (int, error) {
	prevRead := l.lastRead
	l.lastRead = time.Now()
	since := l.firstDurable.Swap(0)
	recs, err := l.store.Unsealed(ctx, maxSealRecords)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	rng, err := rangeFactory.NewRange(l.rng.Begin(), l.rng.End(), append([][]byte(nil), l.rng.Hashes()...))
	if err != nil {
		return 0, err
	}
	b := &Batch{Start: rng.End(), Records: recs, Nodes: make([]Node, 0, 2*len(recs)+8)}
	visit := func(id compact.NodeID, hash []byte) {
		b.Nodes = append(b.Nodes, Node{ID: id, Hash: hash})
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
	b.Tree = Tree{Size: rng.End(), Root: root}
	seal := &pendingSeal{tree: b.Tree, records: len(recs), own: len(recs), since: sealDelayStart(since, prevRead, l.leader != nil, recs[0].Data)}
	if l.leader != nil {
		seal.own = 0 // a shared store: noteSealed counts again
	}
	start := time.Now()
	err = l.store.Integrate(ctx, l.tree, b)
	l.metrics.commitSeal.Observe(time.Since(start).Seconds())
	if errors.Is(err, ErrConflict) {
		// Another sequencer integrated first: nothing was signed; the
		// store's tree is read again at the next step.
		l.rng, l.tree = nil, nil
		return 0, nil
	}
	if err != nil {
		// Written or not (a lost answer): the next step reads the
		// store's tree, and signs this batch's tree only if the store
		// holds it.
		l.rng, l.tree, l.unconfirmed = nil, nil, seal
		return 0, fmt.Errorf("proof: integrate records: %w", err)
	}
	l.rng, l.tree, l.pending = rng, &b.Tree, seal
	return len(recs), nil
}

// signPending signs the pending tree's checkpoint, has it time-stamped
// and writes the head. A failure to sign or time-stamp leaves the tree
// pending, to be signed again (the same size and root); a failed write
// keeps the signed head, to be written again.
func (l *Log) signPending(ctx context.Context) (int, error) {
	t := l.pending.tree
	start := time.Now()
	note, err := l.signer.Sign(Checkpoint{Origin: l.signer.Name(), Size: t.Size, Root: t.Root}.Text())
	if err != nil {
		return 0, fmt.Errorf("proof: sign checkpoint: %w", err)
	}
	digest := sha256.Sum256(note)
	token, err := l.ts.Timestamp(ctx, digest[:])
	if err != nil {
		return 0, fmt.Errorf("proof: time-stamp checkpoint: %w", err)
	}
	l.metrics.seal.Observe(time.Since(start).Seconds())
	l.signed = &Head{Size: t.Size, Root: t.Root, Checkpoint: note, Token: token}
	return l.writeHead(ctx)
}

// writeHead writes l.signed, the head of the pending tree, then publishes
// it. When the store holds a head of that tree already (another
// sequencer's signature of it, or this one whose answer was lost), that
// head is the one published.
func (l *Log) writeHead(ctx context.Context) (int, error) {
	h := l.signed
	err := l.store.PutHead(ctx, h)
	if errors.Is(err, ErrConflict) {
		stored, herr := l.store.HeadAt(ctx, h.Size)
		if herr != nil {
			// No head of that size, yet no tree of that root: the store
			// is not the one this log integrated into (rolled back?).
			l.signed, l.pending, l.rng, l.tree = nil, nil, nil, nil
			return 0, fmt.Errorf("proof: write tree head %d: %w (%w)", h.Size, err, herr)
		}
		if !bytes.Equal(stored.Root, h.Root) {
			l.signed, l.pending, l.rng, l.tree = nil, nil, nil, nil
			return 0, fmt.Errorf("%w: the store's head of size %d has root %x, this log signed the stored tree of root %x", ErrRollback, h.Size, stored.Root, h.Root)
		}
		if !bytes.Equal(stored.Checkpoint, h.Checkpoint) {
			l.metrics.unpublished.Inc()
			l.log.Info("proof: another sequencer wrote its signature of this tree first; this one is superseded (the same size and root)", "size", h.Size)
		}
		h, err = stored, nil
	}
	if err != nil {
		return 0, fmt.Errorf("proof: write tree head %d: %w", h.Size, err)
	}
	p := l.pending
	l.signed, l.pending = nil, nil
	if p == nil || !sameTree(&p.tree, h.Tree()) {
		p = &pendingSeal{}
	}
	if sameTree(l.tree, h.Tree()) {
		l.treeHead = h
	}
	l.lastSeal = time.Now()
	// What the publication reports (metrics, readiness) is true before
	// anyone learns of it.
	l.metrics.sealRecords.Observe(float64(p.records))
	if !p.since.IsZero() {
		delay := time.Since(p.since)
		l.metrics.sealDelay.Observe(delay.Seconds())
		l.metrics.maxDelay(delay)
	}
	l.sealWorks()
	l.noteSealed(p.own) // sealed in the store, published or not
	if err := l.publish(h); err != nil {
		l.unsent = h
		return 0, err
	}
	return p.records, nil
}

// syncTree makes l.rng the store's newest tree (its pending tree, or its
// newest head's): after another sequencer sealed, at the start of a lease,
// or after a failed write.
func (l *Log) syncTree(ctx context.Context) error {
	if l.rng != nil && l.leader == nil {
		return nil // the only sequencer: the tree is what it integrated
	}
	if l.rng != nil {
		head, err := l.store.Latest(ctx)
		if errors.Is(err, ErrNotFound) {
			head = nil
		} else if err != nil {
			return err
		}
		pend, err := l.store.Pending(ctx)
		if errors.Is(err, ErrNotFound) {
			pend = nil
		} else if err != nil {
			return err
		}
		newest := pend
		if newest == nil && head != nil {
			newest = head.Tree()
		}
		if sameTree(newest, l.tree) && sameHead(head, l.treeHead) {
			return nil
		}
	}
	h, pend, rng, err := l.loadTree(ctx)
	if err != nil {
		return err
	}
	if h != nil {
		if err := l.checkExtends(ctx, h); err != nil {
			return err
		}
	}
	l.rng = rng
	l.setTree(h, pend)
	l.metrics.resyncs.Inc()
	if h != nil && (l.Latest() == nil || l.Latest().Size < h.Size) {
		return l.publish(h)
	}
	return nil
}

func sameTree(a, b *Tree) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Size == b.Size && bytes.Equal(a.Root, b.Root)
}

func sameHead(a, b *Head) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Size == b.Size && bytes.Equal(a.Root, b.Root)
}

// publish saves head in the checkpoint file, then makes it the log's
// newest: a checkpoint is published only once saved. A head not newer than
// the published one is not published again.
func (l *Log) publish(head *Head) error {
	if cur := l.Latest(); cur != nil && cur.Size >= head.Size {
		return nil
	}
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
		seal:         prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_seconds", Help: "Time to sign and time-stamp a checkpoint.", Buckets: secs}),
		commitSeal:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_write_seconds", Help: "Time to integrate a batch (records, nodes, tree) in the store, before its checkpoint is signed.", Buckets: secs}),
		sealRecords:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_records", Help: "Records per checkpoint.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		sealDelay:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_delay_seconds", Help: "Time from the oldest record of a checkpoint to its publication.", Buckets: secs}),
		sealDelayMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_seal_delay_max_seconds", Help: "The longest seal delay since start."}),
		sealFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_seal_failures_total", Help: "Seal attempts that failed (records stay durable and unsealed)."}),
		backlogWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_backlog_waits_total", Help: "Writes that waited for the sequencer to seal the backlog."}),
		unsealed:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_unsealed_records", Help: "Records durable and waiting for a checkpoint."}),
		size:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "pec_proof_tree_size", Help: "Size of the newest published checkpoint."}),
		resyncs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_resyncs_total", Help: "Times the sequencer reloaded the tree that another node extended."}),
		unpublished:  prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_unpublished_checkpoints_total", Help: "Signed checkpoints superseded by another signature of the same tree (size and root) that another sequencer wrote first: never a fork."}),
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
