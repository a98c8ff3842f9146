package middleoffice

import (
	"crypto/sha256"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bounds of the staged payloads (see "Fewer transactions, less decoding"
// in [BoltExchangeStore]): past them, a payload's Commit writes it at
// once, in a transaction of its own.
const (
	maxStaged      = 4096
	maxStagedBytes = 64 << 20
	// stagedMaxAge: a payload staged so long ago, that no step took, is
	// written with the next transaction.
	stagedMaxAge = time.Second
)

// stagedPayloads are the small payloads committed and not yet written:
// each exchange's next Prepare writes them. It is safe for concurrent use.
type stagedPayloads struct {
	mu    sync.Mutex
	m     map[string]map[string]*stagedPayload // exchange → name → payload
	n     int
	bytes int
	fifo  []*stagedPayload // in the order staged, written ones included
}

type stagedPayload struct {
	exchange, name string
	data           []byte // guarded by stagedPayloads.mu: nil once written or dropped
	at             time.Time
	written        bool // guarded by stagedPayloads.mu
}

// stagedWrite is a staged payload to write: its bytes, taken under the
// lock, and the entry to remove once they are written.
type stagedWrite struct {
	p    *stagedPayload
	data []byte
}

// stage keeps data as the payload name of exchange, unless the bounds are
// reached (false: write it now).
func (s *stagedPayloads) stage(exchange, name string, data []byte, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= maxStaged || s.bytes+len(data) > maxStagedBytes {
		return false
	}
	if s.m == nil {
		s.m = map[string]map[string]*stagedPayload{}
	}
	names := s.m[exchange]
	if names == nil {
		names = map[string]*stagedPayload{}
		s.m[exchange] = names
	}
	if old := names[name]; old != nil {
		s.remove(old)
	}
	p := &stagedPayload{exchange: exchange, name: name, data: data, at: now}
	names[name] = p
	s.n++
	s.bytes += len(data)
	s.fifo = append(s.fifo, p)
	return true
}

// remove takes p out of the map; the caller holds s.mu.
func (s *stagedPayloads) remove(p *stagedPayload) {
	names := s.m[p.exchange]
	if names[p.name] != p {
		return
	}
	delete(names, p.name)
	if len(names) == 0 {
		delete(s.m, p.exchange)
	}
	p.written = true
	s.n--
	s.bytes -= len(p.data)
	p.data = nil // the queue may keep the entry a while, not its bytes
}

// get returns the staged payload (nil: none); its bytes do not change.
func (s *stagedPayloads) get(exchange, name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.m[exchange][name]; p != nil {
		return p.data
	}
	return nil
}

// of returns the payloads staged for exchange, to write with its step.
func (s *stagedPayloads) of(exchange string) []stagedWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := s.m[exchange]
	if len(names) == 0 {
		return nil
	}
	out := make([]stagedWrite, 0, len(names))
	for _, p := range names {
		out = append(out, stagedWrite{p, p.data})
	}
	return out
}

// all returns every staged payload.
func (s *stagedPayloads) all() []stagedWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stagedWrite
	for _, names := range s.m {
		for _, p := range names {
			out = append(out, stagedWrite{p, p.data})
		}
	}
	return out
}

// stale returns the payloads staged before t, oldest first, taking the
// written ones off the queue as far as it looked: up to the first recent
// one. (Taking off only those ahead of the first one not written let the
// queue grow behind a stale payload waiting for its transaction, or a
// submission's payload waiting for its step, and every transaction's
// call scan it again: some 3% of the node's CPU at 128 clients.)
func (s *stagedPayloads) stale(t time.Time) []stagedWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stagedWrite
	kept, i := 0, 0
	for ; i < len(s.fifo); i++ {
		p := s.fifo[i]
		if p.written {
			continue
		}
		if !p.at.Before(t) {
			break
		}
		out = append(out, stagedWrite{p, p.data})
		s.fifo[kept] = p // stays until written
		kept++
	}
	if kept < i {
		n := copy(s.fifo[kept:], s.fifo[i:])
		clear(s.fifo[kept+n:])
		s.fifo = s.fifo[:kept+n]
	}
	return out
}

// written removes the payloads a committed transaction wrote, unless
// staged again meanwhile.
func (s *stagedPayloads) written(ps []stagedWrite) {
	if len(ps) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range ps {
		s.remove(w.p)
	}
}

// drop forgets a staged payload (a larger one of the same name replaces
// it).
func (s *stagedPayloads) drop(exchange, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.m[exchange][name]; p != nil {
		s.remove(p)
	}
}

// dropExchange forgets the staged payloads of exchange.
func (s *stagedPayloads) dropExchange(exchange string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.m[exchange] {
		s.remove(p)
	}
}

// putStaged writes staged payloads in tx.
func putStaged(tx *bolt.Tx, ps []stagedWrite) error {
	for _, w := range ps {
		if err := putInline(tx, w.p.exchange, w.p.name, w.data); err != nil {
			return err
		}
	}
	return nil
}

// flushStale is the group commit's first call: the payloads staged for
// longer than stagedMaxAge, which no step took.
func (s *BoltExchangeStore) flushStale() (func(*bolt.Tx) error, func()) {
	ps := s.staged.stale(time.Now().Add(-stagedMaxAge))
	if len(ps) == 0 {
		return nil, nil
	}
	return func(tx *bolt.Tx) error { return putStaged(tx, ps) }, func() { s.staged.written(ps) }
}

// decodeCache keeps values decoded from the store with the SHA-256 of
// the bytes they were decoded from (or encoded to): get returns one only
// for bytes of the same digest. It is safe for concurrent use; values are
// shared, not to be changed.
type decodeCache[T any] struct {
	mu sync.Mutex
	m  map[string]decoded[T]
}

type decoded[T any] struct {
	sum [32]byte
	v   *T
}

// maxDecoded bounds a decodeCache: the exchanges in flight, about.
const maxDecoded = 2048

func (c *decodeCache[T]) get(key string, data []byte) *T {
	c.mu.Lock()
	d, ok := c.m[key]
	c.mu.Unlock()
	if ok && d.sum == sha256.Sum256(data) {
		return d.v
	}
	return nil
}

// put keeps v as decoded from data.
func (c *decodeCache[T]) put(key string, data []byte, v *T) {
	sum := sha256.Sum256(data)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]decoded[T]{}
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= maxDecoded {
		n := 0
		for k := range c.m { // any half
			delete(c.m, k)
			if n++; n >= maxDecoded/2 {
				break
			}
		}
	}
	c.m[key] = decoded[T]{sum: sum, v: v}
}

func (c *decodeCache[T]) drop(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}
