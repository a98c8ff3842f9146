package middleoffice

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltExchangeStore is the embedded ExchangeStore: one bbolt file,
// DATA_DIR/exchanges.db, whose every transaction is fsynced when it
// commits — the writes of concurrent callers are group-committed: a write
// that arrives while a transaction commits joins the next one, and each
// returns once the transaction holding it is durable. Payloads of up to
// 64 KiB (an envelope of a small document, a seal) are kept in that file
// too; larger ones are files under DATA_DIR/payloads/<id>/, written to a
// temporary name (with direct I/O where the file system takes it:
// payloadfile.go), fsynced, renamed into place and their directory
// fsynced before Commit returns. The bbolt file's lock keeps a
// second process out: the embedded store serves one node, so opening it
// gives back the jobs a previous process held when it stopped.
//
// # Fewer transactions, less decoding
//
// Each bbolt transaction costs two fdatasyncs, whose CPU time (in the
// kernel) dominates a node with one client; so the store writes little
// apart from the steps:
//   - A small payload's Commit stages it in memory, and the exchange's
//     next Prepare writes it in its own transaction: every caller writes
//     its payloads (documents' envelopes, the data key record, a seal, an
//     acknowledgment) just before the step that names them, and a payload
//     matters only once a step names it. Staged payloads are read as
//     committed ones; those no step takes within stagedMaxAge are written
//     with the next transaction, and Close writes the rest. A crash loses
//     only staged payloads that no step names (the submission was not
//     acknowledged, the seal is made again).
//   - Claim holds a job in memory only (the store gives back at its
//     opening every job held before): a read transaction finds it, and
//     Release, Done or the step that finishes it write.
//   - The outbox entry of a step that creates an exchange does not hold
//     the exchange a second time: it is read from the exchanges bucket.
//   - An exchange's receipt (a CMS SignedData of a few KiB, most of its
//     JSON) is stored once, in the receipts bucket, not in the JSON that
//     every step of the exchange rewrites; exchanges stored with it in
//     their JSON read as before.
//   - The exchanges and steps this process wrote last are kept decoded,
//     each with the bytes it was stored as: a transaction that reads the
//     same bytes back takes the decoded value instead of decoding them
//     again (the process is the file's only writer; the comparison makes
//     a stale or rolled-back entry harmless).
type BoltExchangeStore struct {
	db       *bolt.DB
	payloads string
	writes   groupCommit
	// inlineMax is the largest payload kept in the bbolt file
	// (inlinePayloadMax; tests that look at the payload files set 0).
	inlineMax int

	staged    stagedPayloads
	claims    heldJobs
	exchanges decodeCache[Exchange] // exchange id → as last written
	steps     decodeCache[Step]     // exchange id → its outbox entry as last written

	// backlog counts the process jobs never attempted (Backlog): counted
	// at the opening, then changed by each transaction that adds or
	// removes one, once it committed (tx.OnCommit).
	backlog atomic.Int64
}

var (
	bucketExchanges = []byte("exchanges")      // id → Exchange (JSON, without its receipt)
	bucketIdem      = []byte("idempotency")    // sender \0 key → id
	bucketInbox     = []byte("inbox")          // recipient \0 id → empty
	bucketOutbox    = []byte("outbox")         // exchange id → Step (JSON)
	bucketJobs      = []byte("jobs")           // due (8 bytes, UnixNano) || job id → Job (JSON)
	bucketJobIDs    = []byte("job-ids")        // job id → its key in jobs
	bucketPayloads  = []byte("payloads")       // exchange id \0 name → a payload of inlinePayloadMax bytes at most, written with its exchange's creation
	bucketLater     = []byte("payloads-later") // the same, for the payloads written later (payloadBucket)
	bucketReceipts  = []byte("receipts")       // exchange id → its Receipt, kept out of its JSON
)

// OpenBoltExchanges opens (or creates) the embedded exchange store of the
// data directory dir. It waits 5 s at most for the lock of another process.
func OpenBoltExchanges(dir string) (*BoltExchangeStore, error) {
	payloads := filepath.Join(dir, "payloads")
	if err := os.MkdirAll(payloads, 0o700); err != nil {
		return nil, fmt.Errorf("middleoffice: exchange store: %w", err)
	}
	path := filepath.Join(dir, "exchanges.db")
	// A mapping of 1 GiB from the start: growing it waits for every read
	// transaction, a backup's snapshot included (exchangesnapshot.go).
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: 1 << 30})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("middleoffice: exchange store %s is in use by another process (a running pec serve?)", path)
		}
		return nil, fmt.Errorf("middleoffice: open exchange store %s: %w", path, err)
	}
	s := &BoltExchangeStore{db: db, payloads: payloads, inlineMax: inlinePayloadMax}
	s.writes = groupCommit{db: db, before: s.flushStale}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketExchanges, bucketIdem, bucketInbox, bucketOutbox, bucketJobs, bucketJobIDs, bucketPayloads, bucketReceipts, bucketLater} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// The jobs the previous process held are due again.
		jobs := tx.Bucket(bucketJobs)
		var held []*Job
		var backlog int64
		err := jobs.ForEach(func(_, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if inBacklog(j.ID, j.Attempts) {
				backlog++
			}
			if !j.HeldUntil.IsZero() {
				held = append(held, &j)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, j := range held {
			j.HeldUntil = time.Time{}
			if err := putJob(tx, j, nil); err != nil {
				return err
			}
		}
		tx.OnCommit(func() { s.backlog.Store(backlog) })
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("middleoffice: open exchange store %s: %w", path, err)
	}
	return s, nil
}

// Close implements ExchangeStore: the staged payloads are written first.
func (s *BoltExchangeStore) Close() error {
	if all := s.staged.all(); len(all) > 0 {
		err := s.writes.update(func(tx *bolt.Tx) error { return putStaged(tx, all) })
		if err == nil {
			s.staged.written(all)
		}
		if err != nil {
			s.db.Close()
			return fmt.Errorf("middleoffice: exchange store: write the staged payloads: %w", err)
		}
	}
	return s.db.Close()
}

var exchangeIDSyntax = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// validExchangeID: exchange ids name directories, so only these.
func validExchangeID(id string) bool { return exchangeIDSyntax.MatchString(id) }

var payloadNameSyntax = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,63}$`)

func getExchange(tx *bolt.Tx, id string) (*Exchange, error) {
	v := tx.Bucket(bucketExchanges).Get([]byte(id))
	if v == nil {
		return nil, ErrExchangeNotFound
	}
	return decodeExchange(tx, id, v)
}

// decodeExchange decodes the stored exchange id, its receipt read back
// from the receipts bucket (an exchange stored before holds it in its
// JSON).
func decodeExchange(tx *bolt.Tx, id string, v []byte) (*Exchange, error) {
	var e Exchange
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("middleoffice: exchange store: exchange %s: %w", id, err)
	}
	if e.Receipt == nil {
		if r := tx.Bucket(bucketReceipts).Get([]byte(id)); r != nil {
			e.Receipt = bytes.Clone(r)
		}
	}
	return &e, nil
}

// exchangeIn is getExchange through the cache of decoded exchanges, for
// the store's own transactions: the caller may change the fields of the
// value returned and its Events (a copy), not what they point to.
func (s *BoltExchangeStore) exchangeIn(tx *bolt.Tx, id string) (*Exchange, error) {
	v := tx.Bucket(bucketExchanges).Get([]byte(id))
	if v == nil {
		return nil, ErrExchangeNotFound
	}
	if c := s.exchanges.get(id, v); c != nil {
		e := *c
		e.Events = slices.Clip(e.Events) // an append copies
		return &e, nil
	}
	e, err := decodeExchange(tx, id, v)
	if err != nil {
		return nil, err
	}
	s.exchanges.put(id, v, e)
	c := *e
	c.Events = slices.Clip(c.Events)
	return &c, nil
}

// putExchange writes e and keeps it decoded; e must not change after. Its
// receipt (a CMS SignedData of some KiB, which never changes) goes to the
// receipts bucket once, not into the JSON that every step rewrites.
func (s *BoltExchangeStore) putExchange(tx *bolt.Tx, e *Exchange) error {
	stored := e
	if len(e.Receipt) > 0 {
		rb := tx.Bucket(bucketReceipts)
		if have := rb.Get([]byte(e.ID)); !bytes.Equal(have, e.Receipt) {
			if err := rb.Put([]byte(e.ID), e.Receipt); err != nil {
				return err
			}
		}
		c := *e
		c.Receipt = nil
		stored = &c
	}
	data, err := json.Marshal(stored)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketExchanges).Put([]byte(e.ID), data); err != nil {
		return err
	}
	s.exchanges.put(e.ID, data, e)
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func idemKey(sender, key string) []byte { return []byte(sender + "\x00" + key) }
func inboxKey(recipient, id string) []byte {
	return []byte(recipient + "\x00" + id)
}

func jobKey(j *Job) []byte {
	due := j.NotBefore
	if j.HeldUntil.After(due) {
		due = j.HeldUntil
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(max(due.UnixNano(), 0))), j.ID...)
}

// inBacklog: a job of this id, attempted so many times, counts in the
// delivery backlog (Backlog): a process job never attempted.
func inBacklog(id string, attempts int) bool {
	return attempts == 0 && strings.HasSuffix(id, "-"+JobProcess)
}

// storedInBacklog reads whether the job stored as v counts in the
// backlog (only a process job's value is decoded).
func storedInBacklog(id string, v []byte) bool {
	if v == nil || !strings.HasSuffix(id, "-"+JobProcess) {
		return false
	}
	var j struct {
		Attempts int `json:"attempts"`
	}
	return json.Unmarshal(v, &j) == nil && j.Attempts == 0
}

// countOnCommit adds delta to backlog once tx committed (nil: no count).
func countOnCommit(tx *bolt.Tx, backlog *atomic.Int64, delta int64) {
	if backlog != nil && delta != 0 {
		tx.OnCommit(func() { backlog.Add(delta) })
	}
}

// putJob writes j under its due key, replacing its previous entry; the
// change of the backlog goes to backlog once tx commits (nil: none).
func putJob(tx *bolt.Tx, j *Job, backlog *atomic.Int64) error {
	jobs, ids := tx.Bucket(bucketJobs), tx.Bucket(bucketJobIDs)
	var delta int64
	if inBacklog(j.ID, j.Attempts) {
		delta++
	}
	if old := ids.Get([]byte(j.ID)); old != nil {
		if storedInBacklog(j.ID, jobs.Get(old)) {
			delta--
		}
		if err := jobs.Delete(bytes.Clone(old)); err != nil {
			return err
		}
	}
	k := jobKey(j)
	if err := putJSON(jobs, k, j); err != nil {
		return err
	}
	if err := ids.Put([]byte(j.ID), k); err != nil {
		return err
	}
	countOnCommit(tx, backlog, delta)
	return nil
}

func deleteJob(tx *bolt.Tx, id string, backlog *atomic.Int64) error {
	ids := tx.Bucket(bucketJobIDs)
	k := ids.Get([]byte(id))
	if k == nil {
		return nil
	}
	jobs := tx.Bucket(bucketJobs)
	was := storedInBacklog(id, jobs.Get(k))
	if err := jobs.Delete(bytes.Clone(k)); err != nil {
		return err
	}
	if err := ids.Delete([]byte(id)); err != nil {
		return err
	}
	if was {
		countOnCommit(tx, backlog, -1)
	}
	return nil
}

// Backlog implements BacklogStore: the process jobs never attempted, the
// accepted exchanges that wait for their first seal and delivery.
func (s *BoltExchangeStore) Backlog(context.Context) (int, error) {
	return int(s.backlog.Load()), nil
}

func hasEvent(e *Exchange, evidenceID string) bool {
	return slices.ContainsFunc(e.Events, func(ev Event) bool { return ev.EvidenceID == evidenceID })
}

func checkStep(st *Step) error {
	switch {
	case st == nil:
		return errors.New("middleoffice: no step")
	case !validExchangeID(st.Exchange):
		return fmt.Errorf("middleoffice: a step of exchange %q: not an exchange id", st.Exchange)
	case st.Event.EvidenceID == "" || len(st.Record) == 0:
		return errors.New("middleoffice: a step without its evidence")
	case st.Create != nil && (st.Create.ID != st.Exchange || st.Create.State != StatePending || st.To == ""):
		return errors.New("middleoffice: a created exchange is pending, with its step's id and a state to go to")
	case st.Create == nil && len(st.From) == 0:
		return errors.New("middleoffice: a step names the states it applies to")
	}
	return nil
}

// Prepare implements ExchangeStore.
func (s *BoltExchangeStore) Prepare(ctx context.Context, st *Step) error {
	if err := checkStep(st); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The entry as stored: a created exchange is not stored twice.
	entry := *st
	entry.Enqueue = make([]*Job, len(st.Enqueue))
	for i, j := range st.Enqueue {
		c := *j
		entry.Enqueue[i] = &c
	}
	if st.Create != nil {
		entry.Create, entry.Created = nil, true
	}
	data, err := json.Marshal(&entry)
	if err != nil {
		return err
	}
	var create *Exchange
	if st.Create != nil {
		c := *st.Create
		create = &c
	}
	staged := s.staged.of(st.Exchange)
	err = s.writes.update(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		if ob.Get([]byte(st.Exchange)) != nil {
			return ErrStepPending
		}
		if c := create; c != nil {
			if tx.Bucket(bucketExchanges).Get([]byte(c.ID)) != nil {
				return ErrExchangeExists
			}
			if key := c.Manifest.IdempotencyKey; key != "" {
				idem := tx.Bucket(bucketIdem)
				if v := idem.Get(idemKey(c.Sender, key)); v != nil {
					return &KeyTakenError{Exchange: string(v)}
				}
				if err := idem.Put(idemKey(c.Sender, key), []byte(c.ID)); err != nil {
					return err
				}
			}
			if err := s.putExchange(tx, c); err != nil {
				return err
			}
		} else {
			e, err := s.exchangeIn(tx, st.Exchange)
			if err != nil {
				return err
			}
			if !slices.Contains(st.From, e.State) {
				return fmt.Errorf("%w: it is %s", ErrStateChanged, e.State)
			}
		}
		if err := putStaged(tx, staged); err != nil {
			return err
		}
		if err := ob.Put([]byte(st.Exchange), data); err != nil {
			return err
		}
		s.steps.put(st.Exchange, data, &entry)
		return nil
	})
	if err == nil {
		s.staged.written(staged)
	}
	return err
}

// preparedStep reads the outbox entry of exchange for evidenceID: nil
// with ErrStepCommitted or ErrStepNotFound when it is not there. The step
// is not to be changed; its Create is not read (see Created).
func (s *BoltExchangeStore) preparedStep(tx *bolt.Tx, exchange, evidenceID string) (*Step, error) {
	v := tx.Bucket(bucketOutbox).Get([]byte(exchange))
	if v != nil {
		st := s.steps.get(exchange, v)
		if st == nil {
			st = new(Step)
			if err := json.Unmarshal(v, st); err != nil {
				return nil, fmt.Errorf("middleoffice: exchange store: outbox %s: %w", exchange, err)
			}
			s.steps.put(exchange, v, st)
		}
		if st.Event.EvidenceID == evidenceID {
			return st, nil
		}
	}
	if e, err := s.exchangeIn(tx, exchange); err == nil && hasEvent(e, evidenceID) {
		return nil, ErrStepCommitted
	}
	return nil, ErrStepNotFound
}

// decodeStep decodes an outbox entry; a step that created its exchange
// gets it back from the exchanges bucket (its Create).
func decodeStep(tx *bolt.Tx, v []byte) (*Step, error) {
	st := new(Step)
	if err := json.Unmarshal(v, st); err != nil {
		return nil, err
	}
	if st.Created && st.Create == nil {
		e, err := getExchange(tx, st.Exchange)
		if err != nil {
			return nil, fmt.Errorf("the exchange of the step: %w", err)
		}
		st.Create, st.Created = e, false
	}
	return st, nil
}

// Commit implements ExchangeStore.
func (s *BoltExchangeStore) Commit(ctx context.Context, exchange, evidenceID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var released []string
	var holds []time.Time
	err := s.writes.update(func(tx *bolt.Tx) error {
		st, err := s.preparedStep(tx, exchange, evidenceID)
		if err != nil {
			return err
		}
		released = released[:0]
		for _, q := range st.Enqueue {
			released = append(released, q.ID)
		}
		if st.Finish != "" {
			released = append(released, st.Finish)
		}
		// The holds as they are before this transaction commits: only
		// those are released after it. A job this step enqueues can be
		// claimed once the transaction is committed and before Commit
		// returns: releasing that new hold let a second worker claim the
		// job again (two seals of one exchange, one thrown away: some
		// 0.4 per exchange with 64 workers and 16 clients).
		holds = s.claims.holds(released)
		e, err := s.exchangeIn(tx, exchange)
		if err != nil {
			return err
		}
		wasInbox := e.State.InInbox()
		if st.To != "" {
			e.State = st.To
		}
		e.Events = append(e.Events, st.Event)
		e.UpdatedAt = st.Event.Time
		if st.Seal != nil {
			e.Seal = st.Seal
		}
		if st.Acknowledgment != nil {
			e.Acknowledgment = st.Acknowledgment
		}
		if err := s.putExchange(tx, e); err != nil {
			return err
		}
		if in := e.State.InInbox(); in != wasInbox {
			inbox := tx.Bucket(bucketInbox)
			if in {
				err = inbox.Put(inboxKey(e.Recipient, e.ID), nil)
			} else {
				err = inbox.Delete(inboxKey(e.Recipient, e.ID))
			}
			if err != nil {
				return err
			}
		}
		for _, q := range st.Enqueue {
			j := *q
			j.HeldUntil = time.Time{}
			if err := putJob(tx, &j, &s.backlog); err != nil {
				return err
			}
		}
		if st.Finish != "" {
			if err := deleteJob(tx, st.Finish, &s.backlog); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketOutbox).Delete([]byte(exchange))
	})
	s.steps.drop(exchange)
	if err == nil {
		s.claims.releaseHeld(released, holds)
	}
	if errors.Is(err, ErrStepCommitted) {
		return nil
	}
	return err
}

// Abort implements ExchangeStore.
func (s *BoltExchangeStore) Abort(ctx context.Context, exchange, evidenceID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.writes.update(func(tx *bolt.Tx) error {
		st, err := s.preparedStep(tx, exchange, evidenceID)
		if err != nil {
			return err
		}
		c := st.Create
		if st.Created && c == nil {
			if c, err = getExchange(tx, exchange); errors.Is(err, ErrExchangeNotFound) {
				c = &Exchange{ID: exchange} // gone already: the key with it
			} else if err != nil {
				return err
			}
		}
		if c != nil {
			if key := c.Manifest.IdempotencyKey; key != "" {
				idem := tx.Bucket(bucketIdem)
				if string(idem.Get(idemKey(c.Sender, key))) == c.ID {
					if err := idem.Delete(idemKey(c.Sender, key)); err != nil {
						return err
					}
				}
			}
			if err := tx.Bucket(bucketExchanges).Delete([]byte(c.ID)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketReceipts).Delete([]byte(c.ID)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketOutbox).Delete([]byte(exchange))
	})
}

// Prepared implements ExchangeStore.
func (s *BoltExchangeStore) Prepared(_ context.Context, exchange string) (*Step, error) {
	var st *Step
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketOutbox).Get([]byte(exchange))
		if v == nil {
			return ErrStepNotFound
		}
		var err error
		st, err = decodeStep(tx, v)
		return err
	})
	return st, err
}

// PreparedBefore implements ExchangeStore.
func (s *BoltExchangeStore) PreparedBefore(_ context.Context, t time.Time, limit int) ([]*Step, error) {
	var out []*Step
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(_, v []byte) error {
			// The time first: most entries are recent, and their
			// exchanges need not be read.
			var head struct {
				Prepared time.Time `json:"prepared"`
			}
			if err := json.Unmarshal(v, &head); err != nil {
				return err
			}
			if !head.Prepared.Before(t) {
				return nil
			}
			st, err := decodeStep(tx, v)
			if err != nil {
				return err
			}
			out = append(out, st)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *Step) int { return a.Prepared.Compare(b.Prepared) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// Exchange implements ExchangeStore.
func (s *BoltExchangeStore) Exchange(_ context.Context, id string) (*Exchange, error) {
	var e *Exchange
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		e, err = getExchange(tx, id)
		return err
	})
	return e, err
}

// ByIdempotencyKey implements ExchangeStore.
func (s *BoltExchangeStore) ByIdempotencyKey(_ context.Context, sender, key string) (string, error) {
	var id string
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIdem).Get(idemKey(sender, key))
		if v == nil {
			return ErrExchangeNotFound
		}
		id = string(v)
		return nil
	})
	return id, err
}

// Inbox implements ExchangeStore.
func (s *BoltExchangeStore) Inbox(_ context.Context, recipient, after string, limit int) ([]*Exchange, error) {
	var out []*Exchange
	prefix := []byte(recipient + "\x00")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketInbox).Cursor()
		k, _ := c.Seek(inboxKey(recipient, after))
		if after != "" && bytes.Equal(k, inboxKey(recipient, after)) {
			k, _ = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Next() {
			e, err := getExchange(tx, string(k[len(prefix):]))
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Claim implements ExchangeStore. The embedded store serves one process,
// and gives back at its opening the jobs held before: so a job is held in
// memory only, and claiming one writes nothing (a read transaction finds
// the first due job that no worker of this process holds).
func (s *BoltExchangeStore) Claim(ctx context.Context, now time.Time, lease time.Duration) (*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.claims.mu.Lock()
	defer s.claims.mu.Unlock()
	var job *Job
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) < 8 || int64(binary.BigEndian.Uint64(k)) > now.UnixNano() {
				return nil // none due
			}
			if until, held := s.claims.held[string(k[8:])]; held && until.After(now) {
				continue
			}
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			j.HeldUntil = now.Add(lease)
			job = &j
			return nil
		}
		return nil
	})
	if job != nil {
		if s.claims.held == nil {
			s.claims.held = map[string]time.Time{}
		}
		s.claims.held[job.ID] = job.HeldUntil
	}
	return job, err
}

// heldJobs are the jobs the workers of this process hold, by id.
type heldJobs struct {
	mu   sync.Mutex
	held map[string]time.Time // job id → held until
}

// release forgets the holds of ids (a job done, released, finished or
// enqueued again: as a stored job, due by its own time).
func (h *heldJobs) release(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.held, id)
	}
}

// holds returns the holds of ids (zero: not held).
func (h *heldJobs) holds(ids []string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]time.Time, len(ids))
	for i, id := range ids {
		out[i] = h.held[id]
	}
	return out
}

// releaseHeld forgets the holds of ids that are still those of holds:
// not one taken since (a job claimed once its step committed).
func (h *heldJobs) releaseHeld(ids []string, holds []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, id := range ids {
		if until, ok := h.held[id]; ok && i < len(holds) && until.Equal(holds[i]) {
			delete(h.held, id)
		}
	}
}

func (h *heldJobs) until(id string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[id]
}

// Release implements ExchangeStore.
func (s *BoltExchangeStore) Release(ctx context.Context, job *Job, notBefore time.Time, lastErr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.writes.update(func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketJobIDs).Get([]byte(job.ID))
		if k == nil {
			return nil
		}
		var j Job
		if err := json.Unmarshal(tx.Bucket(bucketJobs).Get(k), &j); err != nil {
			return err
		}
		j.Attempts++
		j.LastError, j.NotBefore, j.HeldUntil = lastErr, notBefore, time.Time{}
		return putJob(tx, &j, &s.backlog)
	})
	if err == nil {
		s.claims.release(job.ID)
	}
	return err
}

// Done implements ExchangeStore.
func (s *BoltExchangeStore) Done(ctx context.Context, jobID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.writes.update(func(tx *bolt.Tx) error { return deleteJob(tx, jobID, &s.backlog) })
	if err == nil {
		s.claims.release(jobID)
	}
	return err
}

// Jobs implements ExchangeStore.
func (s *BoltExchangeStore) Jobs(context.Context) ([]*Job, error) {
	var out []*Job
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(_, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if until := s.claims.until(j.ID); until.After(j.HeldUntil) {
				j.HeldUntil = until
			}
			out = append(out, &j)
			return nil
		})
	})
	return out, err
}

func (s *BoltExchangeStore) payloadPath(exchange, name string) (string, error) {
	if !validExchangeID(exchange) || !payloadNameSyntax.MatchString(name) || name != filepath.Base(name) {
		return "", fmt.Errorf("middleoffice: payload %q of exchange %q: not a payload name", name, exchange)
	}
	return filepath.Join(s.payloads, exchange, name), nil
}

// inlinePayloadMax is the largest payload kept in the bbolt file rather
// than in a file of its own: a 10 KiB document's envelope, a seal, an
// acknowledgment. Committed with the other writes of the moment (one
// group commit), it costs no file creation and none of the three fsyncs
// of a payload file (the file, its directory, the new directory's
// parent). A writer buffers this much at most before it spills to a file.
const inlinePayloadMax = 64 << 10

func payloadKey(exchange, name string) []byte { return []byte(exchange + "\x00" + name) }

// payloadBucket is the bucket of a small payload, by its name: the
// documents' envelopes and the data key, written with the exchange's
// creation, in payloads; the others — the seal, the acknowledgment,
// written seconds later, when the exchanges created since have been
// appended — in payloads-later. In one bucket, a seal of some KiB
// inserted among the envelopes of 10 KiB rewrote the leaf that holds its
// exchange's envelope (a node of two keys at least: some 25 KB per
// delivery); in a bucket of their own, their inserts follow each other
// as deliveries do.
func payloadBucket(name string) (bucket, other []byte) {
	if strings.HasPrefix(name, "document-") || name == dataKeyName {
		return bucketPayloads, bucketLater
	}
	return bucketLater, bucketPayloads
}

// putInline writes a small payload in its bucket, and removes a copy of
// it from the other (where a payload stored before payloads-later was).
func putInline(tx *bolt.Tx, exchange, name string, data []byte) error {
	in, other := payloadBucket(name)
	key := payloadKey(exchange, name)
	if ob := tx.Bucket(other); ob.Get(key) != nil {
		if err := ob.Delete(key); err != nil {
			return err
		}
	}
	return tx.Bucket(in).Put(key, data)
}

// getInline reads a small payload (nil: none), in its bucket or else in
// the other.
func getInline(tx *bolt.Tx, exchange, name string) []byte {
	in, other := payloadBucket(name)
	key := payloadKey(exchange, name)
	if v := tx.Bucket(in).Get(key); v != nil {
		return v
	}
	return tx.Bucket(other).Get(key)
}

// deleteInline removes a small payload from both buckets.
func deleteInline(tx *bolt.Tx, exchange, name string) error {
	key := payloadKey(exchange, name)
	for _, b := range [][]byte{bucketPayloads, bucketLater} {
		if bb := tx.Bucket(b); bb.Get(key) != nil {
			if err := bb.Delete(key); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreatePayload implements ExchangeStore.
func (s *BoltExchangeStore) CreatePayload(ctx context.Context, exchange, name string) (PayloadWriter, error) {
	path, err := s.payloadPath(exchange, name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &payloadWriter{s: s, exchange: exchange, name: name, path: path}, nil
}

// payloadWriter keeps a payload in memory up to inlinePayloadMax, then
// spills it to a temporary file of the exchange's directory. Commit puts
// a small one in the bbolt file, a large one in place (fsynced, renamed,
// its directory fsynced); either way the other copy, if any, is removed,
// so that the payload committed last is the one read.
type payloadWriter struct {
	s              *BoltExchangeStore
	exchange, name string
	path           string
	buf            []byte
	f              *os.File    // once spilled
	direct         *directFile // f's writer, when it takes direct I/O (payloadfile.go)
	written        int64       // to f
	flushed        int64       // of which writeback has started
	syncParent     bool
	done           bool
}

// writebackEvery is how much of a spilled payload is written between two
// starts of its writeback: the disk writes while the upload goes on, not
// all in Commit's fsync.
const writebackEvery = 8 << 20

func (w *payloadWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("middleoffice: payload committed or aborted already")
	}
	if w.f == nil && len(w.buf)+len(p) <= w.s.inlineMax {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if w.f == nil {
		if err := w.spill(); err != nil {
			return 0, err
		}
	}
	if w.direct != nil {
		n, err := w.direct.Write(p)
		w.written += int64(n)
		return n, err
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	if w.written-w.flushed >= writebackEvery {
		startWriteback(w.f, w.flushed, w.written-w.flushed)
		w.flushed = w.written
	}
	return n, err
}

func (w *payloadWriter) spill() error {
	dir := filepath.Dir(w.path)
	if err := os.Mkdir(dir, 0o700); err == nil {
		w.syncParent = true
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("middleoffice: payload: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+w.name+".*")
	if err != nil {
		return fmt.Errorf("middleoffice: payload: %w", err)
	}
	w.f, w.direct = f, newDirectFile(f)
	if _, err := w.Write(w.buf); err != nil {
		w.abortFile()
		return fmt.Errorf("middleoffice: payload: %w", err)
	}
	w.buf = nil
	return nil
}

// abortFile drops the spilled file.
func (w *payloadWriter) abortFile() {
	if w.direct != nil {
		w.direct.release()
	}
	w.f.Close()
	os.Remove(w.f.Name())
	w.f = nil
}

func (w *payloadWriter) Commit() error {
	if w.done {
		return errors.New("middleoffice: payload committed or aborted already")
	}
	w.done = true
	if w.f == nil {
		data := w.buf
		if data == nil {
			data = []byte{} // bbolt keeps an empty value; nil would not be one
		}
		if cap(data)-len(data) > 4<<10 {
			data = bytes.Clone(data) // staged a while: not the spare room of append
		}
		if _, err := os.Lstat(w.path); errors.Is(err, fs.ErrNotExist) && w.s.staged.stage(w.exchange, w.name, data, time.Now()) {
			return nil // written by the exchange's next Prepare
		}
		err := w.s.writes.update(func(tx *bolt.Tx) error {
			return putInline(tx, w.exchange, w.name, data)
		})
		if err != nil {
			return fmt.Errorf("middleoffice: payload %s: %w", w.name, err)
		}
		// A payload file of the same name, from before: the inline one
		// now wins (OpenPayload reads it first); the file goes.
		if err := os.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("middleoffice: payload %s: %w", w.name, err)
		}
		return nil
	}
	var err error
	if w.direct != nil {
		err = w.direct.finish(w.written)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(w.path))
	}
	if err == nil && w.syncParent {
		err = syncDir(filepath.Dir(filepath.Dir(w.path)))
	}
	if err == nil {
		// An inline payload of the same name, from before, goes: the
		// file is the one committed last.
		w.s.staged.drop(w.exchange, w.name)
		err = w.s.writes.update(func(tx *bolt.Tx) error { return deleteInline(tx, w.exchange, w.name) })
	}
	if err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("middleoffice: payload %s: %w", filepath.Base(w.path), err)
	}
	return nil
}

func (w *payloadWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.buf = nil
	if w.f == nil {
		return nil
	}
	if w.direct != nil {
		w.direct.release()
	}
	w.f.Close()
	return os.Remove(w.f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type filePayload struct {
	*os.File
	size int64
}

func (p filePayload) Size() int64 { return p.size }

// inlinePayload is a payload kept in the bbolt file, copied out of it.
type inlinePayload struct{ *bytes.Reader }

func (inlinePayload) Close() error { return nil }

// OpenPayload implements ExchangeStore.
func (s *BoltExchangeStore) OpenPayload(_ context.Context, exchange, name string) (Payload, error) {
	path, err := s.payloadPath(exchange, name)
	if err != nil {
		return nil, err
	}
	if data := s.staged.get(exchange, name); data != nil {
		return inlinePayload{bytes.NewReader(data)}, nil
	}
	var inline []byte
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := getInline(tx, exchange, name); v != nil {
			inline = bytes.Clone(v)
			if inline == nil {
				inline = []byte{}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("middleoffice: payload: %w", err)
	}
	if inline != nil {
		return inlinePayload{bytes.NewReader(inline)}, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s of exchange %s", ErrPayloadNotFound, name, exchange)
	} else if err != nil {
		return nil, fmt.Errorf("middleoffice: payload: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("middleoffice: payload: %w", err)
	}
	return filePayload{File: f, size: fi.Size()}, nil
}

// RemovePayloads implements ExchangeStore.
func (s *BoltExchangeStore) RemovePayloads(_ context.Context, exchange string) error {
	if !validExchangeID(exchange) {
		return fmt.Errorf("middleoffice: %q is not an exchange id", exchange)
	}
	prefix := payloadKey(exchange, "")
	s.staged.dropExchange(exchange)
	err := s.writes.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPayloads, bucketLater} {
			c := tx.Bucket(b).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("middleoffice: remove the payloads of %s: %w", exchange, err)
	}
	return os.RemoveAll(filepath.Join(s.payloads, exchange))
}

// pageFill is the fill of the pages bbolt splits in the store's buckets:
// 0.9, not bbolt's 0.5. Most keys come in time order (exchange ids begin
// with the time: the writes of an exchange's creation are appends, those
// of its delivery follow each other), and at 0.5 their pages stayed half
// empty for good: twice the pages, and the branch pages above them, for
// every transaction to rewrite. BenchmarkBoltExchangeFlow (bytes of pages
// written per exchange): 65 → 60 KB at a backlog of 200, 69 → 63 KB at
// 4000; the same at 0.9 for the time-ordered buckets only, 62 and 64 KB
// (the random idempotency keys and the outbox's churn gain too).
const pageFill = 0.9

// fillPages sets the fill of every bucket for tx (bbolt keeps it per
// transaction).
func fillPages(tx *bolt.Tx) {
	for _, name := range [][]byte{bucketExchanges, bucketIdem, bucketInbox, bucketOutbox, bucketJobs, bucketJobIDs, bucketPayloads, bucketReceipts, bucketLater} {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = pageFill
		}
	}
}

// groupCommit runs the store's write transactions. bbolt has one writer
// at a time and fsyncs each transaction twice (its pages, then its meta
// page), so that one transaction per call bounds the store at a few
// hundred writes a second whatever the number of callers. Here the
// caller that finds no transaction running leads: it runs every call
// queued meanwhile in one transaction, until the queue is empty; the
// others wait for the commit of the transaction that holds their call.
// Nobody waits for a timer (bbolt's own Batch waits MaxBatchDelay): a
// lone caller commits at once. A call that fails is taken out, the others
// run again without it, and it runs alone afterwards, so that its error
// is that of its own transaction, as bbolt's Batch does: every function
// must therefore be safe to run more than once.
type groupCommit struct {
	db *bolt.DB
	// before, if set, gives a call to run first in each transaction, and
	// the function to call once it committed (the staged payloads no step
	// took in time); nil: none.
	before  func() (fn func(*bolt.Tx) error, done func())
	mu      sync.Mutex
	queue   []*writeCall
	leading bool
	txs     atomic.Int64 // write transactions run
}

type writeCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

func (g *groupCommit) update(fn func(*bolt.Tx) error) error {
	c := &writeCall{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.leading {
		// A goroutine of its own, not the caller's: a caller that led
		// would go on committing the others' calls after its own.
		g.leading = true
		go g.lead()
	}
	g.mu.Unlock()
	return <-c.done
}

// lead commits what is queued, transaction after transaction, until the
// queue is empty.
func (g *groupCommit) lead() {
	for {
		g.mu.Lock()
		calls := g.queue
		g.queue = nil
		if len(calls) == 0 {
			g.leading = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		var first *writeCall
		var written func()
		if g.before != nil {
			if fn, done := g.before(); fn != nil {
				first, written = &writeCall{fn: fn, done: make(chan error, 1)}, done
				calls = append([]*writeCall{first}, calls...)
			}
		}
		g.run(calls)
		if first != nil && <-first.done == nil {
			written()
		}
	}
}

// run commits calls in one transaction; those that fail run alone after.
func (g *groupCommit) run(calls []*writeCall) {
	var alone []*writeCall
	for len(calls) > 0 {
		failed := -1
		g.txs.Add(1)
		err := g.db.Update(func(tx *bolt.Tx) error {
			fillPages(tx)
			for i, c := range calls {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 || len(calls) == 1 {
			for _, c := range calls {
				c.done <- err
			}
			break
		}
		alone = append(alone, calls[failed])
		calls = slices.Delete(calls, failed, failed+1)
	}
	for _, c := range alone {
		g.txs.Add(1)
		c.done <- g.db.Update(func(tx *bolt.Tx) error { fillPages(tx); return c.fn(tx) })
	}
}
