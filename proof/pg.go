package proof

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/compact"
)

// PGStore keeps the log in PostgreSQL, for several nodes sharing one log.
//
// Every node appends records concurrently (unsealed rows, one COPY per
// group of appends). One node at a time integrates them into the tree:
// the one whose dedicated connection holds a session-level advisory lock
// of the schema (see [PGStore.Lead]). When that node dies, its connection
// closes, the database releases the lock, and another node takes it within
// a few seal intervals. [PGStore.Integrate] runs on that connection,
// checks in its transaction that the connection still holds the lock and
// that the store's newest tree is the one it extends (size and root) and
// is signed, and only then writes; when this handle leads,
// [PGStore.Unsealed] also runs on that connection, so that a lost lock is
// known before the sequencer builds a batch. The database itself keeps one
// root for each size (proof_trees, keyed by size) and refuses a head that
// is not of a stored tree (a foreign key on size and root): a sequencer
// that signed a tree and died before writing its head leaves the tree
// pending, and the next one signs the same tree.
//
// A lost connection is an error, never a wait: the pool connects again on
// later calls, the sealing connection on the next Lead (once a seal
// interval). While the database is unreachable, calls on the pool fail at
// once with the last error for a back-off that grows from 50 ms to 1 s (no
// call hammers a database that is down or starting up); each call and
// connection attempt is bounded (10 s, connect_timeout 5 s unless the
// connection string sets one).
//
// The advisory lock is a session lock: connect directly, or through a
// pooler in session mode (an integration through a transaction-mode
// pooler fails its lock check, with ErrConflict). Open it with [OpenPG].
type PGStore struct {
	pool    *pgxpool.Pool
	leadCfg *pgx.ConnConfig
	sealKey int32 // second key of the sealing lock: the schema's

	health pgHealth

	leadMu   sync.Mutex
	conn     *pgx.Conn // the sealing connection; nil: none open
	leading  bool      // conn holds the sealing lock
	sawOther bool      // another handle held the lock when this one last asked
	free     int       // consecutive Lead calls that found the lock free since
	closed   bool
}

var (
	_ Store  = (*PGStore)(nil)
	_ Leader = (*PGStore)(nil)
)

// pgLockKey is the advisory lock of schema changes ("PECPROOF");
// pgSealKey ("SEAL") and the schema's hash the session lock of the node
// that seals, so that logs in two schemas of one database do not share
// it.
const (
	pgLockKey = 0x50454350524f4f46
	pgSealKey = 0x5345414c
)

// The bounds of the database calls. pgTakeover is the number of
// consecutive Lead calls (seal intervals) that a handle which saw another
// holder waits, finding the lock free, before it takes it: a holder that
// lost its connection but not its node (a database restart, a killed
// backend) takes it back at once, with the checkpoint it may have signed
// and not yet written, which the new holder would otherwise sign again
// (the same tree: not a fork, but one signature and token more).
const (
	pgConnectTimeout = 5 * time.Second
	pgOpTimeout      = 10 * time.Second
	pgBackoffMin     = 50 * time.Millisecond
	pgBackoffMax     = time.Second
	pgTakeover       = 3
	pgAppName        = "pec-proof-sealer"
)

// errPGClosed: the store was closed.
var errPGClosed = errors.New("proof: postgres: store closed")

// pgSchema is version 3: records are appended unsealed (idx NULL, in seq
// order) and the sequencer gives them their leaf index, with the tree's
// size and root (proof_trees), before it signs the tree's head
// (proof_heads, whose size and root must be those of a tree: the foreign
// key proof_heads_tree, added by pgMigrateV2).
const pgSchema = `
CREATE TABLE IF NOT EXISTS proof_schema (version INT NOT NULL);
CREATE TABLE IF NOT EXISTS proof_records (
	seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	idx  BIGINT UNIQUE,
	id   TEXT NOT NULL UNIQUE,
	data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS proof_records_unsealed ON proof_records (seq) WHERE idx IS NULL;
CREATE TABLE IF NOT EXISTS proof_nodes (
	level SMALLINT NOT NULL,
	idx   BIGINT NOT NULL,
	hash  BYTEA NOT NULL,
	PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS proof_trees (
	size BIGINT PRIMARY KEY,
	root BYTEA NOT NULL,
	CONSTRAINT proof_trees_size_root UNIQUE (size, root)
);
CREATE TABLE IF NOT EXISTS proof_heads (
	size       BIGINT PRIMARY KEY,
	root       BYTEA NOT NULL,
	checkpoint BYTEA NOT NULL,
	token      BYTEA NOT NULL
);`

// pgMigrateV1 turns the version 1 table of records (idx the primary key,
// every record sealed) into version 2.
const pgMigrateV1 = `
ALTER TABLE proof_records DROP CONSTRAINT proof_records_pkey;
ALTER TABLE proof_records ALTER COLUMN idx DROP NOT NULL;
ALTER TABLE proof_records ADD CONSTRAINT proof_records_idx_key UNIQUE (idx);
ALTER TABLE proof_records ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;`

// pgMigrateV2 gives the heads of version 2 (or of a new schema: none)
// their trees, and ties every head to its tree. (A node of version 2,
// which writes heads with no tree, is refused by the key: upgrade every
// node.)
const pgMigrateV2 = `
INSERT INTO proof_trees (size, root) SELECT size, root FROM proof_heads ON CONFLICT DO NOTHING;
ALTER TABLE proof_heads ADD CONSTRAINT proof_heads_tree FOREIGN KEY (size, root) REFERENCES proof_trees (size, root);`

// OpenPG connects to PostgreSQL (a pgx connection string or URL) and
// creates or upgrades the tables if needed.
func OpenPG(ctx context.Context, url string) (*PGStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = pgConnectTimeout
	}
	leadCfg := cfg.ConnConfig.Copy()
	if leadCfg.RuntimeParams["application_name"] == "" {
		leadCfg.RuntimeParams["application_name"] = pgAppName
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	var schema *string
	// Two nodes creating the schema at once would collide: under the lock.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgLockKey)); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return err
		}
		if schema == nil {
			return errors.New("no schema to create the tables in: check search_path")
		}
		var v1 bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'proof_records' AND table_schema = current_schema())
			AND NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'proof_records' AND column_name = 'seq' AND table_schema = current_schema())`).Scan(&v1)
		if err != nil {
			return err
		}
		if v1 {
			if _, err := tx.Exec(ctx, pgMigrateV1); err != nil {
				return fmt.Errorf("upgrade from version 1: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, pgSchema); err != nil {
			return err
		}
		var v3 bool
		err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
			WHERE c.conname = 'proof_heads_tree' AND n.nspname = current_schema())`).Scan(&v3)
		if err != nil {
			return err
		}
		if !v3 {
			if _, err := tx.Exec(ctx, pgMigrateV2); err != nil {
				return fmt.Errorf("upgrade from version 2: %w", err)
			}
		}
		_, err = tx.Exec(ctx, "DELETE FROM proof_schema; INSERT INTO proof_schema (version) VALUES (3)")
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("proof: postgres schema: %w", err)
	}
	h := fnv.New32a()
	h.Write([]byte(*schema))
	return &PGStore{pool: pool, leadCfg: leadCfg, sealKey: int32(h.Sum32())}, nil
}

// Close implements Store. It ends the sealing connection, releasing the
// lock at once.
func (s *PGStore) Close() error {
	s.leadMu.Lock()
	s.closed = true
	s.dropConn()
	s.leadMu.Unlock()
	s.pool.Close()
	return nil
}

// Lead implements Leader. On its connection of its own, it checks that
// the lock is still held (the connection is alive), or takes it when it
// is free: at once, unless this handle saw another hold it last (then
// after finding it free on pgTakeover consecutive calls). A lost
// connection is opened again on the next call.
func (s *PGStore) Lead(ctx context.Context) (bool, error) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.closed {
		return false, errPGClosed
	}
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	if s.conn != nil && s.leading {
		err := s.conn.Ping(ctx)
		if err == nil {
			return true, nil
		}
		s.dropConn() // the lock went, or goes, with the connection
	}
	if s.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, s.leadCfg)
		if err != nil {
			return false, fmt.Errorf("proof: postgres: sealing connection: %w", err)
		}
		s.conn = conn
	}
	if s.sawOther {
		var held bool
		err := s.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 2)`, int64(pgSealKey), int64(uint32(s.sealKey))).Scan(&held)
		if err != nil {
			s.lostConn(err)
			return false, fmt.Errorf("proof: postgres: sealing lock: %w", err)
		}
		if held {
			s.free = 0
			return false, nil
		}
		if s.free++; s.free < pgTakeover {
			return false, nil
		}
	}
	var got bool
	if err := s.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", int32(pgSealKey), s.sealKey).Scan(&got); err != nil {
		s.lostConn(err)
		return false, fmt.Errorf("proof: postgres: sealing lock: %w", err)
	}
	s.free = 0
	s.leading, s.sawOther = got, !got
	return got, nil
}

// lostConn closes the sealing connection after err, unless err left it
// usable (an error of the statement, not of the connection).
func (s *PGStore) lostConn(err error) {
	if s.conn == nil || !s.conn.IsClosed() && !pgConnLost(err) {
		return
	}
	s.dropConn()
}

func (s *PGStore) dropConn() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(ctx)
		cancel()
	}
	s.conn, s.leading = nil, false
}

// Append implements Store.
func (s *PGStore) Append(ctx context.Context, recs []StoredRecord) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.op(ctx, func(ctx context.Context) error {
		_, err := s.pool.CopyFrom(ctx, pgx.Identifier{"proof_records"}, []string{"id", "data"},
			pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
				return []any{recs[i].ID, recs[i].Data}, nil
			}))
		return err
	})
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "23505" && pe.ConstraintName == "proof_records_id_key" {
		return fmt.Errorf("%w: an evidence id of the batch is already in the log", ErrDuplicateID)
	}
	if err != nil {
		return fmt.Errorf("proof: postgres: append: %w", err)
	}
	return nil
}

const pgUnsealed = "SELECT id, data FROM proof_records WHERE idx IS NULL ORDER BY seq LIMIT $1"

// Unsealed implements Store. While this handle leads, it reads on the
// sealing connection: a lost lock fails it, before the sequencer builds a
// batch.
func (s *PGStore) Unsealed(ctx context.Context, max int) ([]StoredRecord, error) {
	var recs []StoredRecord
	collect := func(rows pgx.Rows, err error) error {
		if err == nil {
			recs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (StoredRecord, error) {
				var r StoredRecord
				err := row.Scan(&r.ID, &r.Data)
				return r, err
			})
		}
		return err
	}
	s.leadMu.Lock()
	if s.leading {
		defer s.leadMu.Unlock()
		octx, cancel := pgOpContext(ctx)
		defer cancel()
		if err := collect(s.conn.Query(octx, pgUnsealed, max)); err != nil {
			s.lostConn(err)
			return nil, fmt.Errorf("proof: postgres: unsealed records (sealing connection): %w", err)
		}
		return recs, nil
	}
	s.leadMu.Unlock()
	err := s.op(ctx, func(ctx context.Context) error { return collect(s.pool.Query(ctx, pgUnsealed, max)) })
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: unsealed records: %w", err)
	}
	return recs, nil
}

// Integrate implements Store, on the sealing connection: only while this
// handle leads (otherwise ErrConflict), after checking in the transaction
// that the connection holds the lock. Records appended by other nodes may
// commit out of their seq order, so b.Records need only be unsealed
// records.
func (s *PGStore) Integrate(ctx context.Context, prev *Tree, b *Batch) error {
	if err := checkBatch(b); err != nil {
		return err
	}
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if !s.leading {
		return fmt.Errorf("%w: this node does not hold the sealing lock", ErrConflict)
	}
	octx, cancel := pgOpContext(ctx)
	defer cancel()
	err := pgx.BeginFunc(octx, s.conn, func(tx pgx.Tx) error {
		ctx := octx
		var held bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
			AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 2)`, int64(pgSealKey), int64(uint32(s.sealKey))).Scan(&held)
		if err != nil {
			return err
		}
		if !held {
			return fmt.Errorf("%w: the sealing connection does not hold the lock (a pooler in transaction mode?)", ErrConflict)
		}
		var newest *Tree
		var signed bool
		var t Tree
		var size int64
		err = tx.QueryRow(ctx, `SELECT t.size, t.root, EXISTS (SELECT 1 FROM proof_heads h WHERE h.size = t.size)
			FROM proof_trees t ORDER BY t.size DESC LIMIT 1`).Scan(&size, &t.Root, &signed)
		switch {
		case err == nil:
			t.Size = uint64(size)
			newest = &t
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if err := extendsNewest(newest, signed, prev, b.Start); err != nil {
			return err
		}
		ids := make([]string, len(b.Records))
		idxs := make([]int64, len(b.Records))
		for i, r := range b.Records {
			ids[i], idxs[i] = r.ID, int64(b.Start)+int64(i)
		}
		tag, err := tx.Exec(ctx, `UPDATE proof_records r SET idx = v.idx FROM unnest($1::text[], $2::bigint[]) AS v(id, idx)
			WHERE r.id = v.id AND r.idx IS NULL`, ids, idxs)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(ids)) {
			return fmt.Errorf("%w: %d of the batch's %d records are not unsealed records of the store", ErrConflict, int64(len(ids))-tag.RowsAffected(), len(ids))
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"proof_nodes"}, []string{"level", "idx", "hash"},
			pgx.CopyFromSlice(len(b.Nodes), func(i int) ([]any, error) {
				return []any{int16(b.Nodes[i].ID.Level), int64(b.Nodes[i].ID.Index), b.Nodes[i].Hash}, nil
			}))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO proof_trees (size, root) VALUES ($1, $2)", int64(b.Tree.Size), b.Tree.Root)
		return err
	})
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %s", ErrConflict, pe.Message)
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		// A lost connection: the lock is lost, the batch may or may not
		// be written (the caller finds out from the stored tree).
		s.lostConn(err)
		return fmt.Errorf("proof: postgres: integrate: %w", err)
	}
	return err
}

// Pending implements Store.
func (s *PGStore) Pending(ctx context.Context) (*Tree, error) {
	var t Tree
	var size int64
	var signed bool
	err := s.op(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT t.size, t.root, EXISTS (SELECT 1 FROM proof_heads h WHERE h.size = t.size)
			FROM proof_trees t ORDER BY t.size DESC LIMIT 1`).Scan(&size, &t.Root, &signed)
	})
	if errors.Is(err, pgx.ErrNoRows) || err == nil && signed {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: pending tree: %w", err)
	}
	t.Size = uint64(size)
	return &t, nil
}

// Trees implements Store. It reads in pages, so that a long walk holds no
// transaction open.
func (s *PGStore) Trees(ctx context.Context, fn func(*Tree) error) error {
	after := int64(-1)
	for {
		var page []*Tree
		err := s.op(ctx, func(ctx context.Context) error {
			rows, err := s.pool.Query(ctx, "SELECT size, root FROM proof_trees WHERE size > $1 ORDER BY size LIMIT 1000", after)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var t Tree
				var size int64
				if err := rows.Scan(&size, &t.Root); err != nil {
					return err
				}
				t.Size = uint64(size)
				page = append(page, &t)
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("proof: postgres: trees: %w", err)
		}
		for _, t := range page {
			if err := fn(t); err != nil {
				return err
			}
			after = int64(t.Size)
		}
		if len(page) < 1000 {
			return nil
		}
	}
}

// PutHead implements Store, on any connection: the database refuses a
// second head of one size (the primary key) and a head that is not of a
// stored tree (the foreign key to proof_trees), whoever writes it.
func (s *PGStore) PutHead(ctx context.Context, h *Head) error {
	if len(h.Root) != 32 || len(h.Checkpoint) == 0 || len(h.Token) == 0 {
		return fmt.Errorf("proof: store: the head of size %d lacks its root, checkpoint or token", h.Size)
	}
	err := s.op(ctx, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, "INSERT INTO proof_heads (size, root, checkpoint, token) VALUES ($1, $2, $3, $4)",
			int64(h.Size), h.Root, h.Checkpoint, h.Token)
		return err
	})
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: the store holds a head of size %d already", ErrConflict, h.Size)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: the store holds no tree of size %d with root %x", ErrConflict, h.Size, h.Root)
		}
	}
	if err != nil {
		return fmt.Errorf("proof: postgres: tree head: %w", err)
	}
	return nil
}

func scanHead(row pgx.Row) (*Head, error) {
	var h Head
	var size int64
	if err := row.Scan(&size, &h.Root, &h.Checkpoint, &h.Token); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	h.Size = uint64(size)
	return &h, nil
}

// head reads one head on the pool.
func (s *PGStore) head(ctx context.Context, q string, args ...any) (*Head, error) {
	var h *Head
	err := s.op(ctx, func(ctx context.Context) error {
		var err error
		h, err = scanHead(s.pool.QueryRow(ctx, q, args...))
		return err
	})
	return h, err
}

// Latest implements Store.
func (s *PGStore) Latest(ctx context.Context) (*Head, error) {
	return s.head(ctx, "SELECT size, root, checkpoint, token FROM proof_heads ORDER BY size DESC LIMIT 1")
}

// HeadAt implements Store.
func (s *PGStore) HeadAt(ctx context.Context, size uint64) (*Head, error) {
	h, err := s.head(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size = $1", int64(size))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: tree head of size %d", ErrNotFound, size)
	}
	return h, err
}

// HeadCovering implements Store.
func (s *PGStore) HeadCovering(ctx context.Context, index uint64) (*Head, error) {
	h, err := s.head(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size > $1 ORDER BY size LIMIT 1", int64(index))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no tree head covers record %d", ErrNotFound, index)
	}
	return h, err
}

// Heads implements Store. It reads in pages, so that a long walk holds no
// transaction open.
func (s *PGStore) Heads(ctx context.Context, fn func(*Head) error) error {
	after := int64(-1)
	for {
		var page []*Head
		err := s.op(ctx, func(ctx context.Context) error {
			rows, err := s.pool.Query(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size > $1 ORDER BY size LIMIT 1000", after)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				h, err := scanHead(rows)
				if err != nil {
					return err
				}
				page = append(page, h)
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("proof: postgres: tree heads: %w", err)
		}
		for _, h := range page {
			if err := fn(h); err != nil {
				return err
			}
			after = int64(h.Size)
		}
		if len(page) < 1000 {
			return nil
		}
	}
}

// Record implements Store: a sealed record, or one of the pending tree.
func (s *PGStore) Record(ctx context.Context, index uint64) (*StoredRecord, error) {
	var r StoredRecord
	err := s.op(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT id, data FROM proof_records WHERE idx = $1", int64(index)).Scan(&r.ID, &r.Data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: record %d", ErrNotFound, index)
	}
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	return &r, nil
}

// Lookup implements Store.
func (s *PGStore) Lookup(ctx context.Context, id string) (uint64, error) {
	var idx *int64
	var sealed *bool
	err := s.op(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT idx, idx < (SELECT coalesce(max(size), 0) FROM proof_heads) FROM proof_records WHERE id = $1", id).Scan(&idx, &sealed)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: evidence %q", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("proof: postgres: %w", err)
	}
	if idx == nil || sealed == nil || !*sealed {
		return 0, fmt.Errorf("%w: evidence %q", ErrNotSealed, id) // unsealed, or in the pending tree
	}
	return uint64(*idx), nil
}

// Records implements Store, in pages.
func (s *PGStore) Records(ctx context.Context, start uint64, fn func(uint64, *StoredRecord) error) error {
	type row struct {
		idx int64
		r   StoredRecord
	}
	next := int64(start)
	for {
		var page []row
		err := s.op(ctx, func(ctx context.Context) error {
			rows, err := s.pool.Query(ctx, `SELECT idx, id, data FROM proof_records
				WHERE idx >= $1 AND idx < (SELECT coalesce(max(size), 0) FROM proof_heads) ORDER BY idx LIMIT 10000`, next)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var x row
				if err := rows.Scan(&x.idx, &x.r.ID, &x.r.Data); err != nil {
					return err
				}
				page = append(page, x)
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("proof: postgres: records: %w", err)
		}
		for i := range page {
			if err := fn(uint64(page[i].idx), &page[i].r); err != nil {
				return err
			}
			next = page[i].idx + 1
		}
		if len(page) < 10000 {
			return nil
		}
	}
}

// Nodes implements Store.
func (s *PGStore) Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	if len(ids) == 0 {
		return [][]byte{}, nil
	}
	levels := make([]int16, len(ids))
	idxs := make([]int64, len(ids))
	for i, id := range ids {
		levels[i], idxs[i] = int16(id.Level), int64(id.Index)
	}
	out := make([][]byte, len(ids))
	err := s.op(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT q.ord, n.hash FROM unnest($1::smallint[], $2::bigint[]) WITH ORDINALITY AS q(level, idx, ord)
			JOIN proof_nodes n ON n.level = q.level AND n.idx = q.idx`, levels, idxs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ord int64
			var h []byte
			if err := rows.Scan(&ord, &h); err != nil {
				return err
			}
			out[ord-1] = h
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	for i, h := range out {
		if h == nil {
			return nil, fmt.Errorf("%w: tree node (level %d, index %d)", ErrNotFound, ids[i].Level, ids[i].Index)
		}
	}
	return out, nil
}

// op runs one call on the pool, bounded by pgOpTimeout: at once with the
// last error while the database is known to be unreachable, and noting
// whether it lost the database.
func (s *PGStore) op(ctx context.Context, f func(ctx context.Context) error) error {
	if err := s.health.check(); err != nil {
		return err
	}
	octx, cancel := pgOpContext(ctx)
	defer cancel()
	err := f(octx)
	s.health.observe(ctx, err)
	return err
}

// pgOpContext bounds a call whose ctx does not end sooner.
func pgOpContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < pgOpTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, pgOpTimeout)
}

// pgHealth is the back-off of calls to an unreachable database: after a
// lost connection, calls fail at once until the back-off ends, then the
// next call tries again; a success ends the back-off, a failure doubles
// it (pgBackoffMin to pgBackoffMax).
type pgHealth struct {
	down    atomic.Bool // the fast path: false while all is well
	mu      sync.Mutex
	until   time.Time
	backoff time.Duration
	err     error
}

// errPGBackoff is wrapped by the errors of calls refused during the
// back-off.
var errPGBackoff = errors.New("proof: postgres: the database is unreachable")

func (h *pgHealth) check() error {
	if !h.down.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if wait := time.Until(h.until); wait > 0 {
		return fmt.Errorf("%w (next attempt in %s): %w", errPGBackoff, wait.Round(time.Millisecond), h.err)
	}
	return nil
}

// observe notes the outcome of a call made with ctx.
func (h *pgHealth) observe(ctx context.Context, err error) {
	if err == nil {
		if h.down.Load() {
			h.mu.Lock()
			h.down.Store(false)
			h.backoff, h.err = 0, nil
			h.mu.Unlock()
		}
		return
	}
	if ctx.Err() != nil || !pgConnLost(err) {
		return // the caller gave up, or the database answered
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if now.Before(h.until) {
		return // a call started before the back-off: it does not lengthen it
	}
	h.backoff = min(max(2*h.backoff, pgBackoffMin), pgBackoffMax)
	h.until, h.err = now.Add(h.backoff), err
	h.down.Store(true)
}

// pgConnLost reports whether err says the database is unreachable (no
// connection, a connection lost, the server shutting down or starting
// up), rather than an answer to the statement.
func pgConnLost(err error) bool {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		// Class 08: connection exception; 57P01-57P05: shutdown,
		// crash, cannot connect now, ...; 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300"
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
