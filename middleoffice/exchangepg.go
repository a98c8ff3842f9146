package middleoffice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGExchangeStore is the ExchangeStore of nodes sharing one PostgreSQL.
//
// Its tables live in the connection's current schema (search_path in the
// connection string selects it, as for proof.OpenPG, so that the evidence
// log and the exchanges may share a schema or not):
//
//   - exchanges: one row an exchange, its JSON in data (without its
//     events), with its state, recipient and whether it is in the inbox as
//     columns for the queries;
//   - exchange_events: the events, (exchange, seq), unique (exchange,
//     evidence_id);
//   - exchange_idempotency: primary key (sender, key) → exchange;
//   - exchange_outbox: the prepared steps, one an exchange (primary key);
//   - exchange_jobs: the work queue, with its due time (the later of
//     not_before and held_until) indexed, and the holder of a held job;
//   - exchange_payloads and exchange_payload_chunks: each payload version
//     a row, its bytes in chunks of 1 MiB (bytea rows stored uncompressed,
//     so that a read at an offset fetches only its slice), committed by
//     flipping the version's flag in the transaction that deletes the
//     version it replaces;
//   - exchange_schema: the version of the tables, created or upgraded at
//     open under an advisory lock (two nodes starting at once).
//
// Prepare and Commit are one transaction each. Every step of an exchange
// takes its row's lock first (SELECT ... FOR UPDATE), so that two nodes'
// steps of one exchange run one after the other and a Commit racing a
// recovery applies the step once. Claim is one UPDATE of the first due job
// chosen with FOR UPDATE SKIP LOCKED: two nodes never hold one job at
// once, and neither waits for the other.
//
// # Jobs of a node that died
//
// A held job is due again when its lease passes, and sooner when its
// holder is gone: each handle holds, on a connection of its own, a
// session-level advisory lock (the schema's class, a random holder id)
// and writes its id into the jobs it claims. When a node's process dies
// (SIGKILL, a crash), its connections close and the database releases the
// lock (a machine lost silently: once the server's TCP keepalives drop
// the connection, or the lease passes); every half second, a handle's
// Claim gives back the held jobs whose holder's lock is free (pg_locks).
// A job is thus taken again within a second of its node's death, by the
// other nodes or by the node started again, instead of at the end of its
// lease (5 minutes at least). A handle
// that loses its lock connection (the database restarted) takes the lock
// again with the same id; meanwhile another node may take its jobs: at
// least once, as ever — the steps' state guards keep each step once.
// Opening does not give back every held job, as the embedded store does,
// since other nodes hold theirs. The lock is a session lock: connect
// directly, or through a pooler in session mode.
//
// The leases are reckoned in the nodes' time (Claim's now), so the nodes'
// clocks must agree to well within a lease (5 minutes; NTP does).
//
// Times of the queue and of the outbox's order are kept to the
// microsecond (PostgreSQL's timestamptz); the steps and exchanges keep
// theirs whole, in their JSON.
//
// Payloads stream: a writer holds one chunk in memory and writes each full
// chunk at once, in a statement of its own (no transaction or connection
// held between two writes); a reader holds at most two chunks. A payload
// writer abandoned by a node that died leaves an uncommitted version,
// removed once it has not been written to for an hour. A payload read
// while it is replaced or removed fails with ErrPayloadNotFound.
//
// A lost connection fails the call under way (its transaction is rolled
// back by the server); the pool connects again on later calls. Every call
// is bounded (10 s, the connection 5 s unless the connection string says
// otherwise). Open it with [OpenPGExchanges]. It is safe for concurrent
// use.
type PGExchangeStore struct {
	pool   *pgxpool.Pool
	lastGC atomic.Int64 // UnixNano of the last collection of abandoned payloads

	// The holder lock (see the type's doc).
	lockCfg  *pgx.ConnConfig
	class    int32        // first key of the holders' locks: the schema's
	lastReap atomic.Int64 // UnixNano of the last reap
	lockMu   sync.Mutex
	lockConn *pgx.Conn // holds (class, holder); nil: none
	holder   int32     // this handle's id, > 0
	held     bool      // lockConn holds the lock
	closed   bool
	claimAs  atomic.Int32 // holder while held, else 0: what Claim writes
	id       atomic.Int32 // holder, for Release's guard
	backlog  backlogCount // Backlog's cache (backlog.go)
}

var _ ExchangeStore = (*PGExchangeStore)(nil)

const (
	// pgExchangeVersion is the version of the tables this code writes.
	pgExchangeVersion = 2
	// pgExchangeLockKey is the advisory lock of schema changes ("PECXCHGS").
	pgExchangeLockKey = 0x5045435843484753
	// pgChunkSize is the size of a payload's rows.
	pgChunkSize = 1 << 20
	// pgPayloadAbandoned: an uncommitted payload version untouched for
	// so long is a dead node's; pgPayloadGCEvery: how often a node looks.
	pgPayloadAbandoned = time.Hour
	pgPayloadGCEvery   = 10 * time.Minute
	// pgReapEvery: how often a handle looks for the jobs of dead holders.
	pgReapEvery      = 500 * time.Millisecond
	pgConnectTimeout = 5 * time.Second
	pgOpTimeout      = 10 * time.Second
)

const pgExchangeSchema = `
CREATE TABLE exchange_schema (version INT NOT NULL);
CREATE TABLE exchanges (
	id        TEXT COLLATE "C" PRIMARY KEY,
	sender    TEXT NOT NULL,
	recipient TEXT COLLATE "C" NOT NULL,
	state     TEXT NOT NULL,
	in_inbox  BOOLEAN NOT NULL,
	data      BYTEA NOT NULL
);
CREATE INDEX exchanges_inbox ON exchanges (recipient, id) WHERE in_inbox;
CREATE TABLE exchange_events (
	exchange    TEXT COLLATE "C" NOT NULL REFERENCES exchanges (id) ON DELETE CASCADE,
	seq         INT NOT NULL,
	evidence_id TEXT NOT NULL,
	data        BYTEA NOT NULL,
	PRIMARY KEY (exchange, seq),
	UNIQUE (exchange, evidence_id)
);
CREATE TABLE exchange_idempotency (
	sender   TEXT NOT NULL,
	key      TEXT NOT NULL,
	exchange TEXT NOT NULL,
	PRIMARY KEY (sender, key)
);
CREATE TABLE exchange_outbox (
	exchange    TEXT COLLATE "C" PRIMARY KEY,
	evidence_id TEXT NOT NULL,
	prepared    TIMESTAMPTZ NOT NULL,
	step        BYTEA NOT NULL
);
CREATE INDEX exchange_outbox_prepared ON exchange_outbox (prepared, exchange);
CREATE TABLE exchange_jobs (
	id         TEXT COLLATE "C" PRIMARY KEY,
	kind       TEXT NOT NULL,
	exchange   TEXT NOT NULL,
	evidence   TEXT NOT NULL DEFAULT '',
	not_before TIMESTAMPTZ NOT NULL,
	held_until TIMESTAMPTZ,
	holder     INT,
	due        TIMESTAMPTZ GENERATED ALWAYS AS (GREATEST(not_before, held_until)) STORED,
	attempts   INT NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX exchange_jobs_due ON exchange_jobs (due, id);
CREATE INDEX exchange_jobs_holder ON exchange_jobs (holder) WHERE holder IS NOT NULL;
CREATE INDEX exchange_jobs_backlog ON exchange_jobs (id) WHERE kind = 'process' AND attempts = 0;
CREATE TABLE exchange_payloads (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	exchange   TEXT COLLATE "C" NOT NULL,
	name       TEXT COLLATE "C" NOT NULL,
	committed  BOOLEAN NOT NULL DEFAULT false,
	size       BIGINT NOT NULL DEFAULT 0,
	chunk_size INT NOT NULL,
	touched    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX exchange_payloads_committed ON exchange_payloads (exchange, name) WHERE committed;
CREATE INDEX exchange_payloads_exchange ON exchange_payloads (exchange);
CREATE INDEX exchange_payloads_uncommitted ON exchange_payloads (touched) WHERE NOT committed;
CREATE TABLE exchange_payload_chunks (
	payload BIGINT NOT NULL REFERENCES exchange_payloads (id) ON DELETE CASCADE,
	seq     INT NOT NULL,
	data    BYTEA NOT NULL,
	PRIMARY KEY (payload, seq)
);
ALTER TABLE exchange_payload_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
INSERT INTO exchange_schema (version) VALUES (2);`

// pgExchangeMigrations[v] upgrades the tables from version v to v+1.
var pgExchangeMigrations = map[int]string{
	// 2: the backlog's count (Backlog, every 100 ms at most) reads an
	// index of the process jobs never attempted, not the whole queue
	// (which holds an expiry job per delivered exchange for 30 days).
	1: "CREATE INDEX exchange_jobs_backlog ON exchange_jobs (id) WHERE kind = 'process' AND attempts = 0",
}

// ErrSchemaNewer: the database's tables were made by a newer version of
// pec, which this one does not know how to use.
var ErrSchemaNewer = errors.New("middleoffice: postgres: the tables are of a newer version of pec")

// OpenPGExchanges connects to PostgreSQL (a pgx connection string or
// URL; pool_max_conns sizes the pool) and creates or upgrades the tables
// if needed.
func OpenPGExchanges(ctx context.Context, url string) (*PGExchangeStore, error) {
	pool, err := pgOpenPool(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: exchange store: postgres: %w", err)
	}
	if err := pgMigrate(ctx, pool, pgExchangeLockKey, "exchange_schema", pgExchangeSchema, pgExchangeVersion, pgExchangeMigrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("middleoffice: exchange store: postgres schema: %w", err)
	}
	var schema string
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("middleoffice: exchange store: postgres: %w", err)
	}
	h := fnv.New32a()
	h.Write([]byte("exchange-holders/" + schema))
	s := &PGExchangeStore{pool: pool, lockCfg: pool.Config().ConnConfig.Copy(), class: int32(h.Sum32())}
	if s.lockCfg.RuntimeParams["application_name"] == "" {
		s.lockCfg.RuntimeParams["application_name"] = "pec-exchange-holder"
	}
	s.collectPayloads(ctx)
	s.reap(ctx)
	return s, nil
}

func pgOpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = pgConnectTimeout
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// pgMigrate creates the tables (create, which writes version want into
// table) or upgrades them, under the advisory lock key.
func pgMigrate(ctx context.Context, pool *pgxpool.Pool, key int64, table, create string, want int, migrations map[int]string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
			return err
		}
		var schema *string
		if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return err
		}
		if schema == nil {
			return errors.New("no schema to create the tables in: check search_path")
		}
		var exists bool
		err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1)", table).Scan(&exists)
		if err != nil {
			return err
		}
		if !exists {
			_, err := tx.Exec(ctx, create)
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+table).Scan(&have); err != nil {
			return err
		}
		switch {
		case have > want:
			return fmt.Errorf("%w (%s: version %d; this one knows %d)", ErrSchemaNewer, table, have, want)
		case have == want:
			return nil
		}
		for v := have; v < want; v++ {
			m, ok := migrations[v]
			if !ok {
				return fmt.Errorf("%s: no upgrade from version %d", table, v)
			}
			if _, err := tx.Exec(ctx, m); err != nil {
				return fmt.Errorf("%s: upgrade from version %d: %w", table, v, err)
			}
		}
		_, err = tx.Exec(ctx, "UPDATE "+table+" SET version = $1", want)
		return err
	})
}

// Close implements ExchangeStore. It ends the holder lock: the jobs this
// handle holds go back to the queue at the next reap of another handle.
func (s *PGExchangeStore) Close() error {
	s.lockMu.Lock()
	s.closed = true
	s.dropLock()
	s.lockMu.Unlock()
	s.pool.Close()
	return nil
}

// holding returns the handle's holder id, if its lock is held.
func (s *PGExchangeStore) holding() (int32, bool) {
	h := s.claimAs.Load()
	return h, h != 0
}

func (s *PGExchangeStore) dropLock() {
	if s.lockConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.lockConn.Close(ctx)
		cancel()
	}
	s.lockConn, s.held = nil, false
	s.claimAs.Store(0)
}

// lock checks that the holder lock is held (its connection alive), or
// takes it again, on a connection of its own; under lockMu.
func (s *PGExchangeStore) lock(ctx context.Context) error {
	if s.closed {
		return errors.New("middleoffice: exchange store closed")
	}
	if s.lockConn != nil && s.held {
		if err := s.lockConn.Ping(ctx); err == nil {
			return nil
		}
		s.dropLock() // the lock went, or goes, with the connection
	}
	if s.lockConn == nil {
		conn, err := pgx.ConnectConfig(ctx, s.lockCfg)
		if err != nil {
			return err
		}
		s.lockConn = conn
	}
	for range 3 { // an id another handle holds: another
		if s.holder <= 0 {
			s.holder = rand.Int32N(math.MaxInt32) + 1
		}
		var got bool
		if err := s.lockConn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", s.class, s.holder).Scan(&got); err != nil {
			s.dropLock()
			return err
		}
		if got {
			s.held = true
			s.claimAs.Store(s.holder)
			s.id.Store(s.holder)
			return nil
		}
		s.holder = 0
	}
	return errors.New("no free holder id")
}

// reap gives back to the queue the jobs whose holders are gone (their
// lock is free: the node died, or lost its connection), at most every
// pgReapEvery, and takes or checks this handle's own lock first. A
// failure is logged by no one: the leases still bound the wait, and the
// next Claim tries again.
func (s *PGExchangeStore) reap(ctx context.Context) {
	last := s.lastReap.Load()
	now := time.Now()
	if last != 0 && now.Sub(time.Unix(0, last)) < pgReapEvery || !s.lastReap.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	s.lockMu.Lock()
	err := s.lock(ctx)
	s.lockMu.Unlock()
	if err != nil {
		return
	}
	// The holders alive are the locks of the class granted in this
	// database (pg_locks shows the advisory locks of every session).
	_, _ = s.pool.Exec(ctx, `UPDATE exchange_jobs SET held_until = NULL, holder = NULL
		WHERE holder IS NOT NULL AND holder::int8 NOT IN (SELECT objid::int8 FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::int8 = $1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`, int64(uint32(s.class)))
}

// pgOpContext bounds a call whose ctx does not end sooner.
func pgOpContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < pgOpTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, pgOpTimeout)
}

// storeError wraps an error of the database, leaving the store's own
// errors (which callers branch on) as they are.
func storeError(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{ErrExchangeExists, ErrExchangeNotFound, ErrStateChanged, ErrStepPending, ErrStepNotFound, ErrStepCommitted, ErrPayloadNotFound} {
		if errors.Is(err, e) {
			return err
		}
	}
	if _, ok := errors.AsType[*KeyTakenError](err); ok {
		return err
	}
	return fmt.Errorf("middleoffice: exchange store: postgres: %s: %w", op, err)
}

// tx runs f in one transaction, bounded.
func (s *PGExchangeStore) tx(ctx context.Context, op string, f func(ctx context.Context, tx pgx.Tx) error) error {
	octx, cancel := pgOpContext(ctx)
	defer cancel()
	err := pgx.BeginFunc(octx, s.pool, func(tx pgx.Tx) error { return f(octx, tx) })
	return storeError(op, err)
}

// Prepare implements ExchangeStore.
func (s *PGExchangeStore) Prepare(ctx context.Context, st *Step) error {
	if err := checkStep(st); err != nil {
		return err
	}
	step, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.tx(ctx, "prepare", func(ctx context.Context, tx pgx.Tx) error {
		if c := st.Create; c != nil {
			ex := c.clone()
			ex.Events = nil
			data, err := json.Marshal(ex)
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO exchanges (id, sender, recipient, state, in_inbox, data) VALUES ($1, $2, $3, $4, false, $5)
				ON CONFLICT (id) DO NOTHING`, c.ID, c.Sender, c.Recipient, string(c.State), data)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				if pending, err := hasOutbox(ctx, tx, c.ID); err != nil {
					return err
				} else if pending {
					return ErrStepPending
				}
				return ErrExchangeExists
			}
			if key := c.Manifest.IdempotencyKey; key != "" {
				// A concurrent submission with the key waits here for the
				// other transaction, then finds its row or none.
				var id string
				err := tx.QueryRow(ctx, `INSERT INTO exchange_idempotency (sender, key, exchange) VALUES ($1, $2, $3)
					ON CONFLICT (sender, key) DO NOTHING RETURNING exchange`, c.Sender, key, c.ID).Scan(&id)
				if errors.Is(err, pgx.ErrNoRows) {
					if err := tx.QueryRow(ctx, "SELECT exchange FROM exchange_idempotency WHERE sender = $1 AND key = $2", c.Sender, key).Scan(&id); err != nil {
						return err
					}
					return &KeyTakenError{Exchange: id}
				}
				if err != nil {
					return err
				}
			}
		} else {
			var state string
			err := tx.QueryRow(ctx, "SELECT state FROM exchanges WHERE id = $1 FOR UPDATE", st.Exchange).Scan(&state)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrExchangeNotFound
			}
			if err != nil {
				return err
			}
			if pending, err := hasOutbox(ctx, tx, st.Exchange); err != nil {
				return err
			} else if pending {
				return ErrStepPending
			}
			if !slices.Contains(st.From, State(state)) {
				return fmt.Errorf("%w: it is %s", ErrStateChanged, state)
			}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO exchange_outbox (exchange, evidence_id, prepared, step) VALUES ($1, $2, $3, $4)
			ON CONFLICT (exchange) DO NOTHING`, st.Exchange, st.Event.EvidenceID, st.Prepared, step)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrStepPending
		}
		return nil
	})
}

func hasOutbox(ctx context.Context, tx pgx.Tx, exchange string) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM exchange_outbox WHERE exchange = $1)", exchange).Scan(&ok)
	return ok, err
}

// lockedStep locks the exchange's row, then reads its outbox entry for
// evidenceID: ErrStepCommitted or ErrStepNotFound when it is not there.
// It returns the exchange (nil when none) and the step.
func lockedStep(ctx context.Context, tx pgx.Tx, exchange, evidenceID string) (*Exchange, *Step, error) {
	var data []byte
	err := tx.QueryRow(ctx, "SELECT data FROM exchanges WHERE id = $1 FOR UPDATE", exchange).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, ErrStepNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	var e Exchange
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, nil, fmt.Errorf("exchange %s: %w", exchange, err)
	}
	var raw []byte
	err = tx.QueryRow(ctx, "SELECT step FROM exchange_outbox WHERE exchange = $1 AND evidence_id = $2", exchange, evidenceID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		var done bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM exchange_events WHERE exchange = $1 AND evidence_id = $2)", exchange, evidenceID).Scan(&done); err != nil {
			return nil, nil, err
		}
		if done {
			return &e, nil, ErrStepCommitted
		}
		return &e, nil, ErrStepNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	var st Step
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, nil, fmt.Errorf("outbox %s: %w", exchange, err)
	}
	return &e, &st, nil
}

// Commit implements ExchangeStore.
func (s *PGExchangeStore) Commit(ctx context.Context, exchange, evidenceID string) error {
	err := s.tx(ctx, "commit", func(ctx context.Context, tx pgx.Tx) error {
		e, st, err := lockedStep(ctx, tx, exchange, evidenceID)
		if err != nil {
			return err
		}
		if st.To != "" {
			e.State = st.To
		}
		e.UpdatedAt = st.Event.Time
		if st.Seal != nil {
			e.Seal = st.Seal
		}
		if st.Acknowledgment != nil {
			e.Acknowledgment = st.Acknowledgment
		}
		e.Events = nil
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		event, err := json.Marshal(st.Event)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE exchanges SET state = $2, in_inbox = $3, data = $4 WHERE id = $1",
			e.ID, string(e.State), e.State.InInbox(), data); err != nil {
			return err
		}
		// seq: the number of events before it, under the exchange's lock.
		if _, err := tx.Exec(ctx, `INSERT INTO exchange_events (exchange, seq, evidence_id, data)
			VALUES ($1, (SELECT count(*) FROM exchange_events WHERE exchange = $1), $2, $3)`, e.ID, st.Event.EvidenceID, event); err != nil {
			return err
		}
		for _, j := range st.Enqueue {
			if _, err := tx.Exec(ctx, `INSERT INTO exchange_jobs (id, kind, exchange, evidence, not_before, held_until, attempts, last_error)
				VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)
				ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, exchange = excluded.exchange, evidence = excluded.evidence,
					not_before = excluded.not_before, held_until = NULL, holder = NULL, attempts = excluded.attempts, last_error = excluded.last_error`,
				j.ID, j.Kind, j.Exchange, j.Evidence, j.NotBefore, j.Attempts, j.LastError); err != nil {
				return err
			}
		}
		if st.Finish != "" {
			if _, err := tx.Exec(ctx, "DELETE FROM exchange_jobs WHERE id = $1", st.Finish); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, "DELETE FROM exchange_outbox WHERE exchange = $1", exchange)
		return err
	})
	if errors.Is(err, ErrStepCommitted) {
		return nil
	}
	return err
}

// Abort implements ExchangeStore.
func (s *PGExchangeStore) Abort(ctx context.Context, exchange, evidenceID string) error {
	return s.tx(ctx, "abort", func(ctx context.Context, tx pgx.Tx) error {
		_, st, err := lockedStep(ctx, tx, exchange, evidenceID)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM exchange_outbox WHERE exchange = $1", exchange); err != nil {
			return err
		}
		if c := st.Create; c != nil {
			if key := c.Manifest.IdempotencyKey; key != "" {
				if _, err := tx.Exec(ctx, "DELETE FROM exchange_idempotency WHERE sender = $1 AND key = $2 AND exchange = $3", c.Sender, key, c.ID); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, "DELETE FROM exchanges WHERE id = $1", c.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

func scanSteps(rows pgx.Rows, err error) ([]*Step, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Step, error) {
		var raw []byte
		if err := row.Scan(&raw); err != nil {
			return nil, err
		}
		st := new(Step)
		if err := json.Unmarshal(raw, st); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		return st, nil
	})
}

// Prepared implements ExchangeStore.
func (s *PGExchangeStore) Prepared(ctx context.Context, exchange string) (*Step, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	steps, err := scanSteps(s.pool.Query(ctx, "SELECT step FROM exchange_outbox WHERE exchange = $1", exchange))
	if err != nil {
		return nil, storeError("prepared", err)
	}
	if len(steps) == 0 {
		return nil, ErrStepNotFound
	}
	return steps[0], nil
}

// PreparedBefore implements ExchangeStore.
func (s *PGExchangeStore) PreparedBefore(ctx context.Context, t time.Time, limit int) ([]*Step, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	steps, err := scanSteps(s.pool.Query(ctx, "SELECT step FROM exchange_outbox WHERE prepared < $1 ORDER BY prepared, exchange LIMIT $2", t, limit))
	return steps, storeError("prepared steps", err)
}

// pgExchangeColumns reads an exchange with its events, in one statement
// (one snapshot).
const pgExchangeColumns = `x.data, ARRAY(SELECT e.data FROM exchange_events e WHERE e.exchange = x.id ORDER BY e.seq)`

func scanExchange(row pgx.Row) (*Exchange, error) {
	var data []byte
	var events [][]byte
	if err := row.Scan(&data, &events); err != nil {
		return nil, err
	}
	e := new(Exchange)
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	e.Events = make([]Event, len(events))
	for i, raw := range events {
		if err := json.Unmarshal(raw, &e.Events[i]); err != nil {
			return nil, fmt.Errorf("exchange %s: event %d: %w", e.ID, i, err)
		}
	}
	return e, nil
}

// Exchange implements ExchangeStore.
func (s *PGExchangeStore) Exchange(ctx context.Context, id string) (*Exchange, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	e, err := scanExchange(s.pool.QueryRow(ctx, "SELECT "+pgExchangeColumns+" FROM exchanges x WHERE x.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrExchangeNotFound
	}
	return e, storeError("exchange", err)
}

// ByIdempotencyKey implements ExchangeStore.
func (s *PGExchangeStore) ByIdempotencyKey(ctx context.Context, sender, key string) (string, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	var id string
	err := s.pool.QueryRow(ctx, "SELECT exchange FROM exchange_idempotency WHERE sender = $1 AND key = $2", sender, key).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrExchangeNotFound
	}
	return id, storeError("idempotency key", err)
}

// Inbox implements ExchangeStore.
func (s *PGExchangeStore) Inbox(ctx context.Context, recipient, after string, limit int) ([]*Exchange, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+pgExchangeColumns+` FROM exchanges x
		WHERE x.recipient = $1 AND x.in_inbox AND x.id > $2 COLLATE "C" ORDER BY x.id LIMIT $3`, recipient, after, limit)
	if err != nil {
		return nil, storeError("inbox", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Exchange, error) { return scanExchange(row) })
	return out, storeError("inbox", err)
}

const pgJobColumns = "id, kind, exchange, evidence, not_before, held_until, attempts, last_error"

func scanJob(row pgx.CollectableRow) (*Job, error) {
	var j Job
	var held *time.Time
	if err := row.Scan(&j.ID, &j.Kind, &j.Exchange, &j.Evidence, &j.NotBefore, &held, &j.Attempts, &j.LastError); err != nil {
		return nil, err
	}
	j.NotBefore = j.NotBefore.UTC()
	if held != nil {
		j.HeldUntil = held.UTC()
	}
	return &j, nil
}

// Claim implements ExchangeStore.
func (s *PGExchangeStore) Claim(ctx context.Context, now time.Time, lease time.Duration) (*Job, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	s.reap(ctx)
	var holder *int32
	if h, ok := s.holding(); ok {
		holder = &h
	}
	rows, err := s.pool.Query(ctx, `UPDATE exchange_jobs SET held_until = $2, holder = $3
		WHERE id = (SELECT id FROM exchange_jobs WHERE due <= $1 ORDER BY due, id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+pgJobColumns, now, now.Add(lease), holder)
	if err != nil {
		return nil, storeError("claim", err)
	}
	jobs, err := pgx.CollectRows(rows, scanJob)
	if err != nil || len(jobs) == 0 {
		return nil, storeError("claim", err)
	}
	return jobs[0], nil
}

// Release implements ExchangeStore. A job that another worker holds now
// (its lease passed, or its holder's lock went, and it was claimed again:
// job.HeldUntil is not its hold any more, or another handle is its
// holder) is left to that worker, as is one committed away.
func (s *PGExchangeStore) Release(ctx context.Context, job *Job, notBefore time.Time, lastErr string) error {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	var held *time.Time
	if !job.HeldUntil.IsZero() {
		held = &job.HeldUntil
	}
	_, err := s.pool.Exec(ctx, `UPDATE exchange_jobs SET attempts = attempts + 1, last_error = $2, not_before = $3, held_until = NULL, holder = NULL
		WHERE id = $1 AND ($4::timestamptz IS NULL OR held_until = $4) AND (holder IS NULL OR holder = $5)`, job.ID, lastErr, notBefore, held, s.id.Load())
	return storeError("release", err)
}

// Done implements ExchangeStore. It removes the job whoever holds it: a
// worker whose lease passed while it did the job has done it all the same.
func (s *PGExchangeStore) Done(ctx context.Context, jobID string) error {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "DELETE FROM exchange_jobs WHERE id = $1", jobID)
	return storeError("done", err)
}

// Jobs implements ExchangeStore.
func (s *PGExchangeStore) Jobs(ctx context.Context) ([]*Job, error) {
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+pgJobColumns+" FROM exchange_jobs ORDER BY due, id")
	if err != nil {
		return nil, storeError("jobs", err)
	}
	jobs, err := pgx.CollectRows(rows, scanJob)
	return jobs, storeError("jobs", err)
}

func checkPayloadName(exchange, name string) error {
	if !validExchangeID(exchange) || !payloadNameSyntax.MatchString(name) {
		return fmt.Errorf("middleoffice: payload %q of exchange %q: not a payload name", name, exchange)
	}
	return nil
}

// collectPayloads removes the uncommitted payload versions that nobody
// wrote to for pgPayloadAbandoned (a node died writing them); at most
// every pgPayloadGCEvery. A failure is tried again next time.
func (s *PGExchangeStore) collectPayloads(ctx context.Context) {
	last := s.lastGC.Load()
	now := time.Now()
	if last != 0 && now.Sub(time.Unix(0, last)) < pgPayloadGCEvery || !s.lastGC.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM exchange_payloads WHERE NOT committed AND touched < now() - $1 * interval '1 second'", int64(pgPayloadAbandoned/time.Second)); err != nil {
		s.lastGC.Store(last)
	}
}

// CreatePayload implements ExchangeStore. The writer writes with ctx: it
// fails once ctx ends (an upload given up), and Abort still works then.
func (s *PGExchangeStore) CreatePayload(ctx context.Context, exchange, name string) (PayloadWriter, error) {
	if err := checkPayloadName(exchange, name); err != nil {
		return nil, err
	}
	s.collectPayloads(ctx)
	octx, cancel := pgOpContext(ctx)
	defer cancel()
	var id int64
	err := s.pool.QueryRow(octx, "INSERT INTO exchange_payloads (exchange, name, chunk_size) VALUES ($1, $2, $3) RETURNING id", exchange, name, pgChunkSize).Scan(&id)
	if err != nil {
		return nil, storeError("create payload", err)
	}
	return &pgPayloadWriter{s: s, ctx: ctx, id: id, exchange: exchange, name: name, buf: make([]byte, 0, pgChunkSize)}, nil
}

// pgPayloadWriter writes a payload version chunk by chunk. It keeps the
// ctx of CreatePayload, the upload's (see CreatePayload).
type pgPayloadWriter struct {
	s              *PGExchangeStore
	ctx            context.Context
	id             int64
	exchange, name string
	buf            []byte
	seq            int32
	size           int64
	err            error // the first failure: every later call returns it
	done           bool
}

func (w *pgPayloadWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("middleoffice: payload committed or aborted already")
	}
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p, n = p[k:], n+k
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush writes the buffered chunk, if any, in a statement of its own.
func (w *pgPayloadWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	ctx, cancel := pgOpContext(w.ctx)
	defer cancel()
	tag, err := w.s.pool.Exec(ctx, `WITH p AS (UPDATE exchange_payloads SET touched = now() WHERE id = $1 AND NOT committed RETURNING id)
		INSERT INTO exchange_payload_chunks (payload, seq, data) SELECT id, $2, $3 FROM p`, w.id, w.seq, w.buf)
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("%w: %s of exchange %s was removed while being written", ErrPayloadNotFound, w.name, w.exchange)
	}
	if err != nil {
		w.err = storeError("write payload "+w.name, err)
		return w.err
	}
	w.seq++
	w.size += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// Commit writes the last chunk, then, in one transaction, removes the
// committed version of the name and makes this one it.
func (w *pgPayloadWriter) Commit() error {
	if w.done {
		return errors.New("middleoffice: payload committed or aborted already")
	}
	if w.err != nil {
		return w.err
	}
	if err := w.flush(); err != nil {
		return err
	}
	w.done = true
	var err error
	for range 3 { // a version committed by a concurrent writer of the name: again
		err = w.s.tx(w.ctx, "commit payload "+w.name, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "DELETE FROM exchange_payloads WHERE exchange = $1 AND name = $2 AND committed", w.exchange, w.name); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, "UPDATE exchange_payloads SET committed = true, size = $2 WHERE id = $1 AND NOT committed", w.id, w.size)
			if err == nil && tag.RowsAffected() == 0 {
				err = fmt.Errorf("%w: %s of exchange %s was removed while being written", ErrPayloadNotFound, w.name, w.exchange)
			}
			return err
		})
		if pe, ok := errors.AsType[*pgconn.PgError](err); !ok || pe.Code != "23505" {
			break
		}
	}
	if err != nil {
		w.abort()
	}
	return err
}

func (w *pgPayloadWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	return w.abort()
}

// abort removes the version, even after the upload's ctx ended.
func (w *pgPayloadWriter) abort() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), pgOpTimeout)
	defer cancel()
	_, err := w.s.pool.Exec(ctx, "DELETE FROM exchange_payloads WHERE id = $1 AND NOT committed", w.id)
	return storeError("abort payload "+w.name, err)
}

// OpenPayload implements ExchangeStore. The payload reads with ctx: keep
// it alive while reading.
func (s *PGExchangeStore) OpenPayload(ctx context.Context, exchange, name string) (Payload, error) {
	if err := checkPayloadName(exchange, name); err != nil {
		return nil, err
	}
	octx, cancel := pgOpContext(ctx)
	defer cancel()
	p := &pgPayload{s: s, ctx: ctx, exchange: exchange, name: name}
	err := s.pool.QueryRow(octx, "SELECT id, size, chunk_size FROM exchange_payloads WHERE exchange = $1 AND name = $2 AND committed", exchange, name).
		Scan(&p.id, &p.size, &p.chunk)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s of exchange %s", ErrPayloadNotFound, name, exchange)
	}
	if err != nil {
		return nil, storeError("open payload", err)
	}
	if p.chunk <= 0 {
		return nil, fmt.Errorf("middleoffice: exchange store: payload %s of exchange %s: chunk size %d", name, exchange, p.chunk)
	}
	return p, nil
}

// pgPayload reads a committed payload version chunk by chunk, keeping the
// two chunks read last (a sequential Read and a ReadAt elsewhere).
type pgPayload struct {
	s              *PGExchangeStore
	ctx            context.Context
	exchange, name string
	id, size       int64
	chunk          int64
	off            int64 // of Read

	mu     sync.Mutex
	cache  [2]pgChunk
	next   int // the cache entry to replace
	closed bool
}

type pgChunk struct {
	seq  int64
	data []byte // nil: empty entry; never modified once read
}

func (p *pgPayload) Size() int64 { return p.size }

func (p *pgPayload) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cache = [2]pgChunk{}
	p.mu.Unlock()
	return nil
}

// chunkAt returns the chunk seq, from the cache or the database.
func (p *pgPayload) chunkAt(seq int64) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("middleoffice: payload closed")
	}
	for _, c := range p.cache {
		if c.data != nil && c.seq == seq {
			return c.data, nil
		}
	}
	ctx, cancel := pgOpContext(p.ctx)
	defer cancel()
	var data []byte
	err := p.s.pool.QueryRow(ctx, "SELECT data FROM exchange_payload_chunks WHERE payload = $1 AND seq = $2", p.id, seq).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s of exchange %s was replaced or removed while being read", ErrPayloadNotFound, p.name, p.exchange)
	}
	if err != nil {
		return nil, storeError("read payload "+p.name, err)
	}
	if want := min(p.chunk, p.size-seq*p.chunk); int64(len(data)) != want {
		return nil, fmt.Errorf("middleoffice: exchange store: payload %s of exchange %s: chunk %d has %d bytes, want %d", p.name, p.exchange, seq, len(data), want)
	}
	if data == nil {
		data = []byte{}
	}
	p.cache[p.next] = pgChunk{seq: seq, data: data}
	p.next = 1 - p.next
	return data, nil
}

// ReadAt implements io.ReaderAt; parallel calls are safe.
func (p *pgPayload) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("middleoffice: payload: negative offset")
	}
	n := 0
	for n < len(b) && off < p.size {
		seq := off / p.chunk
		c, err := p.chunkAt(seq)
		if err != nil {
			return n, err
		}
		k := copy(b[n:], c[off-seq*p.chunk:])
		n, off = n+k, off+int64(k)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader, a chunk at most at a time.
func (p *pgPayload) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	seq := p.off / p.chunk
	c, err := p.chunkAt(seq)
	if err != nil {
		return 0, err
	}
	k := copy(b, c[p.off-seq*p.chunk:])
	p.off += int64(k)
	return k, nil
}

// RemovePayloads implements ExchangeStore.
func (s *PGExchangeStore) RemovePayloads(ctx context.Context, exchange string) error {
	if !validExchangeID(exchange) {
		return fmt.Errorf("middleoffice: %q is not an exchange id", exchange)
	}
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "DELETE FROM exchange_payloads WHERE exchange = $1", exchange)
	return storeError("remove payloads", err)
}
