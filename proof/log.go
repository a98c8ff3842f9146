package proof

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"
	mproof "github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"pec/internal/promreg"
)

// Config is the proof section of pec.yaml.
type Config struct {
	File string `yaml:"file"` // the embedded store (relative paths: to pec.yaml's directory)
	// PostgresURLEnv names the environment variable holding the URL of a
	// PostgreSQL database shared by several nodes; set, it replaces File.
	// The URL holds a password: never in pec.yaml itself.
	PostgresURLEnv string        `yaml:"postgres_url_env"`
	Origin         string        `yaml:"origin"`     // the log's name, in its checkpoints and as the note key name
	KeyLabel       string        `yaml:"key_label"`  // the tree-head key in hsm (ECDSA P-256); never a PIN
	CertFile       string        `yaml:"cert_file"`  // its certificate, then its chain (PEM)
	BatchSize      int           `yaml:"batch_size"` // records per batch at most; 0: 4096
	BatchWait      time.Duration `yaml:"batch_wait"` // how long a batch waits for more records; 0: no wait
	// Auditors read every proof through the API: client certificates
	// named by their SHA-256 fingerprint (hex) or their subject (RFC
	// 4514, as crypto/x509 prints it). Other clients read the proofs of
	// the records that name them.
	Auditors []string `yaml:"auditors"`
}

// Configured reports whether the section is present at all: a node may
// keep no evidence log.
func (c Config) Configured() bool {
	return c.File != "" || c.PostgresURLEnv != "" || c.Origin != "" || c.KeyLabel != "" || c.CertFile != "" ||
		c.BatchSize != 0 || c.BatchWait != 0 || len(c.Auditors) > 0
}

// IsAuditor reports whether cert is one of c.Auditors.
func (c Config) IsAuditor(cert *x509.Certificate) bool {
	fp := sha256.Sum256(cert.Raw)
	hexFP := hex.EncodeToString(fp[:])
	subject := cert.Subject.String()
	for _, a := range c.Auditors {
		if strings.EqualFold(a, hexFP) || a == subject {
			return true
		}
	}
	return false
}

// DefaultBatchSize bounds a batch when the config does not.
const DefaultBatchSize = 4096

// Validate reports every invalid field by path: "proof.origin: ...".
func (c Config) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.File == "" && c.PostgresURLEnv == "" {
		fault("proof.file: required (or proof.postgres_url_env)")
	}
	if !validKeyName(c.Origin) {
		fault("proof.origin: %q: a name with no space or + (a schema-less URL such as pec.example.org/proof)", c.Origin)
	}
	if c.KeyLabel == "" {
		fault("proof.key_label: required")
	}
	if c.CertFile == "" {
		fault("proof.cert_file: required")
	}
	if c.BatchSize < 0 || c.BatchSize > 1<<20 {
		fault("proof.batch_size: %d is not within 0-1048576", c.BatchSize)
	}
	for i, a := range c.Auditors {
		if a == "" {
			fault("proof.auditors[%d]: empty", i)
		}
	}
	if c.BatchWait < 0 || c.BatchWait > time.Second {
		fault("proof.batch_wait: %s is not within 0-1s", c.BatchWait)
	}
	return errors.Join(errs...)
}

// Options hold optional collaborators; the zero value suits tests.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
	Now      func() time.Time      // nil: time.Now
}

// Receipt says where an appended record is.
type Receipt struct {
	ID       string // the evidence id
	Index    uint64 // the record's leaf index
	TreeSize uint64 // the size of the tree head that sealed its batch
}

// Errors of Append.
var (
	// ErrDuplicateID: a record with this id is already in the log.
	ErrDuplicateID = errors.New("proof: evidence id already in the log")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("proof: log closed")
	// ErrLogFailed: a batch could not be written after later batches
	// were sealed over it; the log takes no more records until reopened.
	ErrLogFailed = errors.New("proof: log failed")
)

var hasher = rfc6962.DefaultHasher

var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// LeafHash is the RFC 9162 leaf hash of an encoded record:
// SHA-256(0x00 || record).
func LeafHash(encoded []byte) []byte { return hasher.HashLeaf(encoded) }

// Log appends evidence records to a store in batches (group commit) and
// seals every batch with a signed checkpoint and an RFC 3161 token on it.
// It is safe for concurrent use. One Log at a time may write to a store.
type Log struct {
	store   Store
	signer  *NoteSigner
	ts      Timestamper
	size    int
	wait    time.Duration
	now     func() time.Time
	log     *slog.Logger
	metrics *logMetrics

	queue    chan *pending
	commitCh chan *sealed
	idle     chan struct{} // holds a token while the committer waits for work
	kick     chan struct{} // wakes the sequencer for records to seal again
	stale    atomic.Bool   // another sequencer extended the stored tree
	retryMu  sync.Mutex
	retry    []*pending // records whose batch lost the race, to seal again
	stop     chan struct{}
	done     chan struct{}
	closeMu  sync.RWMutex
	closed   bool

	// Owned by the sequencer goroutine.
	rng     *compact.Range
	lastIDs map[string]bool // caller-chosen ids of the batch being committed

	mu   sync.RWMutex
	head *Head // the last durable head; nil for an empty log
	err  error // set once a commit failed
}

type pending struct {
	rec      StoredRecord
	leaf     []byte
	callerID bool
	start    time.Time
	done     chan result
}

type result struct {
	r   Receipt
	err error
}

type sealed struct {
	batch   Batch
	waiters []*pending
	rng     *compact.Range
}

// Open starts a log over store, whose batches signer seals (its name is
// the log's origin) and ts stamps. It reads the last tree head and checks
// it against the stored tree. Close stops the log; it does not close the
// store.
func Open(ctx context.Context, store Store, signer *NoteSigner, ts Timestamper, cfg Config, opts Options) (*Log, error) {
	if store == nil || signer == nil || ts == nil {
		return nil, errors.New("proof: a store, a note signer and a timestamper are required")
	}
	l := &Log{
		store:    store,
		signer:   signer,
		ts:       ts,
		size:     cfg.BatchSize,
		wait:     cfg.BatchWait,
		now:      opts.Now,
		log:      opts.Logger,
		metrics:  newLogMetrics(opts.Registry),
		queue:    make(chan *pending, 4096),
		commitCh: make(chan *sealed),
		idle:     make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if l.size <= 0 {
		l.size = DefaultBatchSize
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	head, err := store.Latest(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		l.rng = rangeFactory.NewEmptyRange(0)
	case err != nil:
		return nil, err
	default:
		cp, err := OpenCheckpoint(signer.Verifier(), "", head.Checkpoint)
		if err != nil {
			return nil, fmt.Errorf("proof: the last tree head: %w", err)
		}
		if cp.Size != head.Size || !bytes.Equal(cp.Root, head.Root) {
			return nil, fmt.Errorf("proof: the last tree head (size %d) is not that of its checkpoint", head.Size)
		}
		rng, err := loadRange(ctx, store, head.Size)
		if err != nil {
			return nil, err
		}
		root, err := rng.GetRootHash(nil)
		if err != nil || !bytes.Equal(root, head.Root) {
			return nil, fmt.Errorf("proof: the stored tree does not match the last tree head (size %d)", head.Size)
		}
		l.rng, l.head = rng, head
	}
	l.idle <- struct{}{}
	committerDone := make(chan struct{})
	go func() { l.commit(); close(committerDone) }()
	go func() { l.sequence(); close(l.commitCh); <-committerDone; close(l.done) }()
	return l, nil
}

// loadRange reads the compact range of the tree of size: the roots of its
// perfect subtrees, O(log size) nodes.
func loadRange(ctx context.Context, store Store, size uint64) (*compact.Range, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes, err := store.Nodes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("proof: load tree of size %d: %w", size, err)
	}
	return rangeFactory.NewRange(0, size, hashes)
}

// Latest is the last durable tree head; nil for an empty log.
func (l *Log) Latest() *Head {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.head
}

// Store is the log's store, for proofs and reads.
func (l *Log) Store() Store { return l.store }

// Append adds rec to the log and returns once the batch holding it is
// durable and sealed. An empty rec.ID gets a fresh one (NewID), a zero
// rec.Time the current time; rec itself is not modified. A chosen id
// already in the log is ErrDuplicateID; an invalid record wraps
// ErrMalformedRecord. When ctx ends while the batch is being written, the
// record may still be in the log.
func (l *Log) Append(ctx context.Context, rec *Record) (Receipt, error) {
	start := time.Now()
	r := *rec
	callerID := r.ID != ""
	if !callerID {
		r.ID = NewID(l.now())
	}
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	data, err := r.MarshalBinary()
	if err != nil {
		return Receipt{}, err
	}
	p := &pending{rec: StoredRecord{ID: r.ID, Data: data}, leaf: LeafHash(data), callerID: callerID, start: start, done: make(chan result, 1)}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return Receipt{}, ErrClosed
	}
	if err := l.failed(); err != nil {
		l.closeMu.RUnlock()
		return Receipt{}, err
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return Receipt{}, ctx.Err()
	}
	l.closeMu.RUnlock()
	select {
	case res := <-p.done:
		if res.err == nil {
			noteEvidenceID(ctx, res.r.ID)
		}
		return res.r, res.err
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	}
}

func (l *Log) failed() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.err
}

// Close seals and writes what was appended before it, then stops the log.
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

// sequence collects batches and seals them, handing each to the committer.
func (l *Log) sequence() {
	batch := make([]*pending, 0, l.size)
	for {
		batch = batch[:0]
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-l.kick:
			// Records to seal again: collect what else is queued.
		case <-l.stop:
			// Appends that entered the queue before Close are sealed.
			for {
				select {
				case p := <-l.queue:
					batch = append(batch, p)
					if len(batch) == l.size {
						l.seal(batch, false)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			if len(batch) > 0 || l.stale.Load() {
				l.seal(batch, false)
			}
			return
		}
		var idle bool
		batch, idle = l.collect(batch)
		l.seal(batch, idle)
	}
}

// collect fills a batch. It closes at size records; otherwise once the
// committer is idle and, with a wait, wait after the first record. So
// under load a batch is everything that arrived while the previous one was
// being written — group commit with no added latency — and wait only
// trades latency for fewer, larger batches under light load. It reports
// whether it took the committer's idle token.
func (l *Log) collect(batch []*pending) ([]*pending, bool) {
	var timeout <-chan time.Time
	waited := l.wait <= 0
	if !waited {
		t := time.NewTimer(l.wait)
		defer t.Stop()
		timeout = t.C
	}
	idle := false
	idleCh := l.idle
	for len(batch) < l.size {
		if idle && waited {
			// Let the writers just acknowledged come back first: yield
			// until the queue stays empty, so that under load all of
			// them share one batch rather than alternating between two.
			for empty := 0; empty < 3 && len(batch) < l.size; {
				select {
				case p := <-l.queue:
					batch = append(batch, p)
					empty = 0
				default:
					empty++
					runtime.Gosched()
				}
			}
			return batch, true
		}
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-idleCh:
			idle, idleCh = true, nil
		case <-timeout:
			waited, timeout = true, nil
		case <-l.stop:
			return batch, idle
		}
	}
	return batch, idle
}

// seal computes the new tree, signs its checkpoint and stamps it; the
// committer writes it. A failure here fails this batch only: the tree is
// left as it was. When another sequencer wrote first (a shared store),
// the batch is sealed again on the stored tree, with the batches that
// lost the race.
func (l *Log) seal(batch []*pending, idle bool) {
	ctx := context.WithValue(context.Background(), sealingKey{}, true)
	handed := false
	defer func() {
		if idle && !handed {
			l.idle <- struct{}{} // give the token back
		}
	}()
	for {
		if err := l.failed(); err != nil {
			for _, p := range append(l.takeRetries(), batch...) {
				p.done <- result{err: err}
			}
			return
		}
		if idle && l.stale.Load() {
			var err error
			if batch, err = l.resync(ctx, batch); err != nil {
				l.failBatch(batch, err)
				return
			}
		}
		batch, ids := l.dedupe(ctx, batch)
		if len(batch) == 0 {
			return
		}
		s, err := l.build(ctx, batch)
		if err != nil {
			l.failBatch(batch, err)
			return
		}
		if !idle {
			<-l.idle
			idle = true
			if l.stale.Load() {
				continue // sealed on a tree that another node extended
			}
		}
		l.rng = s.rng
		l.lastIDs = ids
		handed = true
		l.commitCh <- s
		return
	}
}

// dedupe refuses caller-chosen ids already used: in this batch, in the
// one being committed and in the store.
func (l *Log) dedupe(ctx context.Context, batch []*pending) ([]*pending, map[string]bool) {
	var ids map[string]bool
	keep := batch[:0]
	for _, p := range batch {
		if p.callerID {
			if ids == nil {
				ids = map[string]bool{}
			}
			_, err := l.store.Lookup(ctx, p.rec.ID)
			if ids[p.rec.ID] || l.lastIDs[p.rec.ID] || err == nil {
				p.done <- result{err: fmt.Errorf("%w: %q", ErrDuplicateID, p.rec.ID)}
				continue
			}
			ids[p.rec.ID] = true
		}
		keep = append(keep, p)
	}
	return keep, ids
}

// build seals batch on a copy of the current tree.
func (l *Log) build(ctx context.Context, batch []*pending) (*sealed, error) {
	start := time.Now()
	rng, err := rangeFactory.NewRange(l.rng.Begin(), l.rng.End(), append([][]byte(nil), l.rng.Hashes()...))
	if err != nil {
		return nil, err
	}
	s := &sealed{waiters: append([]*pending(nil), batch...), rng: rng}
	s.batch.Start = rng.End()
	s.batch.Records = make([]StoredRecord, len(batch))
	s.batch.Nodes = make([]Node, 0, 2*len(batch)+8)
	visit := func(id compact.NodeID, hash []byte) {
		s.batch.Nodes = append(s.batch.Nodes, Node{ID: id, Hash: hash})
	}
	for i, p := range batch {
		s.batch.Records[i] = p.rec
		if err := rng.Append(p.leaf, visit); err != nil {
			return nil, err
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	note, err := l.signer.Sign(Checkpoint{Origin: l.signer.Name(), Size: rng.End(), Root: root}.Text())
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(note)
	token, err := l.ts.Timestamp(ctx, digest[:])
	if err != nil {
		return nil, err
	}
	s.batch.Head = Head{Size: rng.End(), Root: root, Checkpoint: note, Token: token}
	l.metrics.seal.Observe(time.Since(start).Seconds())
	return s, nil
}

func (l *Log) takeRetries() []*pending {
	l.retryMu.Lock()
	defer l.retryMu.Unlock()
	r := l.retry
	l.retry = nil
	return r
}

// resync reloads the tree from the store, after another sequencer
// extended it, and puts the records that lost the race first.
func (l *Log) resync(ctx context.Context, batch []*pending) ([]*pending, error) {
	l.stale.Store(false)
	batch = append(l.takeRetries(), batch...)
	var size uint64
	head, err := l.store.Latest(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return batch, err
	default:
		if _, err := OpenCheckpoint(l.signer.Verifier(), "", head.Checkpoint); err != nil {
			return batch, fmt.Errorf("proof: the stored tree head %d: %w", head.Size, err)
		}
		size = head.Size
	}
	rng, err := loadRange(ctx, l.store, size)
	if err != nil {
		return batch, err
	}
	l.rng, l.lastIDs = rng, nil
	l.metrics.resyncs.Inc()
	return batch, nil
}

func (l *Log) failBatch(batch []*pending, err error) {
	l.log.Error("proof: batch not sealed", "records", len(batch), "err", err)
	l.metrics.failed.Add(float64(len(batch)))
	for _, p := range batch {
		p.done <- result{err: fmt.Errorf("proof: seal batch: %w", err)}
	}
}

// commit writes sealed batches in order and acknowledges their records.
func (l *Log) commit() {
	for s := range l.commitCh {
		err := l.failed()
		if err == nil {
			start := time.Now()
			err = l.store.Commit(context.Background(), &s.batch)
			l.metrics.commit.Observe(time.Since(start).Seconds())
			if errors.Is(err, ErrConflict) || errors.Is(err, ErrDuplicateID) {
				// Another sequencer wrote first: seal these again on
				// the stored tree.
				l.log.Info("proof: another node extended the log; sealing again", "start", s.batch.Start, "records", len(s.waiters), "err", err)
				l.retryMu.Lock()
				l.retry = append(l.retry, s.waiters...)
				l.retryMu.Unlock()
				l.stale.Store(true)
				select {
				case l.kick <- struct{}{}:
				default:
				}
				l.idle <- struct{}{}
				continue
			}
			if err != nil {
				// Later batches may already be sealed over this one:
				// the log must be reopened from the store.
				l.log.Error("proof: batch not written; the log stops", "start", s.batch.Start, "records", len(s.batch.Records), "err", err)
				err = fmt.Errorf("%w: %w", ErrLogFailed, err)
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
			}
		}
		if err != nil {
			l.metrics.failed.Add(float64(len(s.waiters)))
			for _, p := range s.waiters {
				p.done <- result{err: err}
			}
			l.idle <- struct{}{}
			continue
		}
		head := s.batch.Head
		l.mu.Lock()
		l.head = &head
		l.mu.Unlock()
		l.metrics.batch.Observe(float64(len(s.waiters)))
		l.metrics.appends.Add(float64(len(s.waiters)))
		now := time.Now()
		for i, p := range s.waiters {
			l.metrics.ack.Observe(now.Sub(p.start).Seconds())
			p.done <- result{r: Receipt{ID: p.rec.ID, Index: s.batch.Start + uint64(i), TreeSize: head.Size}}
		}
		l.idle <- struct{}{}
	}
	// Closed: what lost a race after the last batch is not in the log.
	for _, p := range l.takeRetries() {
		p.done <- result{err: ErrClosed}
	}
}

type sealingKey struct{}

// Sealing reports whether ctx is that of a log sealing a batch. A
// tsa.Recorder that turns issued tokens into evidence (TimestampRecorder)
// skips the tokens on the log's own checkpoints: they are in the tree
// heads already, and their records would wait for the very batch being
// sealed.
func Sealing(ctx context.Context) bool {
	v, _ := ctx.Value(sealingKey{}).(bool)
	return v
}

// InclusionProof is the RFC 9162 inclusion proof (section 2.1.3) of the
// record at index in the tree of the given size, from the stored nodes:
// O(log size) reads.
func InclusionProof(ctx context.Context, s Store, index, size uint64) ([][]byte, error) {
	nodes, err := mproof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("proof: inclusion proof: %w", err)
	}
	return rehash(ctx, s, nodes)
}

// ConsistencyProof is the RFC 9162 consistency proof (section 2.1.4)
// between the trees of size1 and size2, from the stored nodes.
func ConsistencyProof(ctx context.Context, s Store, size1, size2 uint64) ([][]byte, error) {
	if size1 == 0 || size1 == size2 {
		if size1 > size2 {
			return nil, fmt.Errorf("proof: consistency proof: size %d > %d", size1, size2)
		}
		return [][]byte{}, nil
	}
	nodes, err := mproof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("proof: consistency proof: %w", err)
	}
	return rehash(ctx, s, nodes)
}

func rehash(ctx context.Context, s Store, nodes mproof.Nodes) ([][]byte, error) {
	hashes, err := s.Nodes(ctx, nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

// VerifyInclusion checks an inclusion proof of the record encoding in a
// tree of the given size and root.
func VerifyInclusion(encoded []byte, index, size uint64, proof [][]byte, root []byte) error {
	return mproof.VerifyInclusion(hasher, index, size, LeafHash(encoded), proof, root)
}

// VerifyConsistency checks a consistency proof between two tree heads.
func VerifyConsistency(size1, size2 uint64, proof [][]byte, root1, root2 []byte) error {
	if size1 == 0 {
		if len(proof) != 0 {
			return errors.New("proof: a consistency proof from the empty tree is empty")
		}
		return nil
	}
	return mproof.VerifyConsistency(hasher, size1, size2, proof, root1, root2)
}

type logMetrics struct {
	appends prometheus.Counter
	failed  prometheus.Counter
	batch   prometheus.Observer
	seal    prometheus.Observer
	commit  prometheus.Observer
	ack     prometheus.Observer
	resyncs prometheus.Counter
}

func newLogMetrics(reg prometheus.Registerer) *logMetrics {
	appends := prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_appends_total", Help: "Evidence records appended and acknowledged."})
	failed := prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_append_failures_total", Help: "Evidence records whose batch could not be sealed or written."})
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_batch_records", Help: "Records per sealed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)})
	secs := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
	seal := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_seal_seconds", Help: "Time to hash, sign and time-stamp a batch.", Buckets: secs})
	commit := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_commit_seconds", Help: "Time to write a batch durably.", Buckets: secs})
	ack := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_proof_ack_seconds", Help: "Time from Append to its acknowledgment.", Buckets: secs})
	resyncs := prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_proof_resyncs_total", Help: "Times the sequencer reloaded the tree after another node extended the shared log."})
	if reg != nil {
		resyncs = promreg.Register(reg, resyncs)
		appends = promreg.Register(reg, appends)
		failed = promreg.Register(reg, failed)
		batch = promreg.Register(reg, batch)
		seal = promreg.Register(reg, seal)
		commit = promreg.Register(reg, commit)
		ack = promreg.Register(reg, ack)
	}
	return &logMetrics{appends: appends, failed: failed, batch: batch, seal: seal, commit: commit, ack: ack, resyncs: resyncs}
}
