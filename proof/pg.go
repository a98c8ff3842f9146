package proof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/compact"
)

// PGStore keeps the log in PostgreSQL, for several nodes sharing one log.
// Every node appends records concurrently (an INSERT of unsealed rows, one
// COPY per group of appends); one node at a time seals, the one whose
// dedicated connection holds a session-level advisory lock (see
// [PGStore.Lead]): when that node dies, its connection closes, the lock is
// released and another node takes it within a seal interval. A seal runs
// on that connection, so that it is written only while the lock is held,
// and checks the stored head it extends (size and root). Open it with
// [OpenPG].
type PGStore struct {
	pool *pgxpool.Pool
	url  string

	leadMu sync.Mutex
	lead   *pgx.Conn // holds the sealing lock; nil: not leading
}

var (
	_ Store  = (*PGStore)(nil)
	_ Leader = (*PGStore)(nil)
)

// pgLockKey is the advisory lock of schema changes ("PECPROOF");
// pgSealKey the session lock of the node that seals ("PECSEAL!").
const (
	pgLockKey = 0x50454350524f4f46
	pgSealKey = 0x5045435345414c21
)

// pgSchema is version 2: records are appended unsealed (idx NULL, in seq
// order) and the sealer gives them their leaf index.
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

// OpenPG connects to PostgreSQL (a pgx connection string or URL) and
// creates or upgrades the tables if needed.
func OpenPG(ctx context.Context, url string) (*PGStore, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	// Two nodes creating the schema at once would collide: under the lock.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgLockKey)); err != nil {
			return err
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
		_, err = tx.Exec(ctx, "DELETE FROM proof_schema; INSERT INTO proof_schema (version) VALUES (2)")
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("proof: postgres schema: %w", err)
	}
	return &PGStore{pool: pool, url: url}, nil
}

// Close implements Store.
func (s *PGStore) Close() error {
	s.leadMu.Lock()
	if s.lead != nil {
		s.lead.Close(context.Background())
		s.lead = nil
	}
	s.leadMu.Unlock()
	s.pool.Close()
	return nil
}

// Lead implements Leader: it takes the sealing lock on a connection of
// its own, or checks that the connection holding it is alive.
func (s *PGStore) Lead(ctx context.Context) (bool, error) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.lead != nil {
		if err := s.lead.Ping(ctx); err == nil {
			return true, nil
		}
		s.lead.Close(context.Background()) // the lock went with the connection
		s.lead = nil
	}
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return false, fmt.Errorf("proof: postgres: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(pgSealKey)).Scan(&got); err != nil {
		conn.Close(context.Background())
		return false, fmt.Errorf("proof: postgres: %w", err)
	}
	if !got {
		conn.Close(context.Background())
		return false, nil
	}
	s.lead = conn
	return true, nil
}

// Append implements Store.
func (s *PGStore) Append(ctx context.Context, recs []StoredRecord) error {
	if len(recs) == 0 {
		return nil
	}
	_, err := s.pool.CopyFrom(ctx, pgx.Identifier{"proof_records"}, []string{"id", "data"},
		pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
			return []any{recs[i].ID, recs[i].Data}, nil
		}))
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "23505" && pe.ConstraintName == "proof_records_id_key" {
		return fmt.Errorf("%w: an evidence id of the batch is already in the log", ErrDuplicateID)
	}
	if err != nil {
		return fmt.Errorf("proof: postgres: append: %w", err)
	}
	return nil
}

// Unsealed implements Store.
func (s *PGStore) Unsealed(ctx context.Context, max int) ([]StoredRecord, error) {
	rows, err := s.pool.Query(ctx, "SELECT id, data FROM proof_records WHERE idx IS NULL ORDER BY seq LIMIT $1", max)
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StoredRecord, error) {
		var r StoredRecord
		err := row.Scan(&r.ID, &r.Data)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	return recs, nil
}

// Seal implements Store. Records appended by other nodes may commit out
// of their seq order, so b.Records need only be unsealed records.
func (s *PGStore) Seal(ctx context.Context, prev *Head, b *Batch) error {
	if b.Head.Size != b.Start+uint64(len(b.Records)) || len(b.Head.Root) != 32 {
		return fmt.Errorf("proof: store: batch at %d with %d records has a head of size %d", b.Start, len(b.Records), b.Head.Size)
	}
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.lead == nil {
		return fmt.Errorf("%w: this node does not hold the sealing lock", ErrConflict)
	}
	err := pgx.BeginFunc(ctx, s.lead, func(tx pgx.Tx) error {
		latest, err := scanHead(tx.QueryRow(ctx, "SELECT size, root, checkpoint, token FROM proof_heads ORDER BY size DESC LIMIT 1"))
		switch {
		case errors.Is(err, ErrNotFound):
			if prev != nil {
				return fmt.Errorf("%w: the store holds no head, the batch extends size %d", ErrConflict, prev.Size)
			}
		case err != nil:
			return err
		case prev == nil:
			return fmt.Errorf("%w: the store holds a head of size %d, the batch extends the empty log", ErrConflict, latest.Size)
		case latest.Size != prev.Size || !bytes.Equal(latest.Root, prev.Root):
			return fmt.Errorf("%w: the stored head is size %d root %x, the batch extends size %d root %x", ErrConflict, latest.Size, latest.Root, prev.Size, prev.Root)
		}
		if prev != nil && prev.Size != b.Start || prev == nil && b.Start != 0 {
			return fmt.Errorf("%w: the batch starts at %d", ErrConflict, b.Start)
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
		_, err = tx.Exec(ctx, "INSERT INTO proof_heads (size, root, checkpoint, token) VALUES ($1, $2, $3, $4)",
			int64(b.Head.Size), b.Head.Root, b.Head.Checkpoint, b.Head.Token)
		return err
	})
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %s", ErrConflict, pe.Message)
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		if s.lead.IsClosed() {
			s.lead = nil
		}
		return fmt.Errorf("proof: postgres: seal: %w", err)
	}
	return err
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

// Latest implements Store.
func (s *PGStore) Latest(ctx context.Context) (*Head, error) {
	return scanHead(s.pool.QueryRow(ctx, "SELECT size, root, checkpoint, token FROM proof_heads ORDER BY size DESC LIMIT 1"))
}

// HeadAt implements Store.
func (s *PGStore) HeadAt(ctx context.Context, size uint64) (*Head, error) {
	h, err := scanHead(s.pool.QueryRow(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size = $1", int64(size)))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: tree head of size %d", ErrNotFound, size)
	}
	return h, err
}

// HeadCovering implements Store.
func (s *PGStore) HeadCovering(ctx context.Context, index uint64) (*Head, error) {
	h, err := scanHead(s.pool.QueryRow(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size > $1 ORDER BY size LIMIT 1", int64(index)))
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
		rows, err := s.pool.Query(ctx, "SELECT size, root, checkpoint, token FROM proof_heads WHERE size > $1 ORDER BY size LIMIT 1000", after)
		if err != nil {
			return fmt.Errorf("proof: postgres: %w", err)
		}
		var page []*Head
		for rows.Next() {
			h, err := scanHead(rows)
			if err != nil {
				rows.Close()
				return err
			}
			page = append(page, h)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("proof: postgres: %w", err)
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

// Record implements Store.
func (s *PGStore) Record(ctx context.Context, index uint64) (*StoredRecord, error) {
	var r StoredRecord
	err := s.pool.QueryRow(ctx, "SELECT id, data FROM proof_records WHERE idx = $1", int64(index)).Scan(&r.ID, &r.Data)
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
	err := s.pool.QueryRow(ctx, "SELECT idx FROM proof_records WHERE id = $1", id).Scan(&idx)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: evidence %q", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("proof: postgres: %w", err)
	}
	if idx == nil {
		return 0, fmt.Errorf("%w: evidence %q", ErrNotSealed, id)
	}
	return uint64(*idx), nil
}

// Records implements Store, in pages.
func (s *PGStore) Records(ctx context.Context, start uint64, fn func(uint64, *StoredRecord) error) error {
	next := int64(start)
	for {
		rows, err := s.pool.Query(ctx, "SELECT idx, id, data FROM proof_records WHERE idx >= $1 ORDER BY idx LIMIT 10000", next)
		if err != nil {
			return fmt.Errorf("proof: postgres: %w", err)
		}
		type row struct {
			idx int64
			r   StoredRecord
		}
		var page []row
		for rows.Next() {
			var x row
			if err := rows.Scan(&x.idx, &x.r.ID, &x.r.Data); err != nil {
				rows.Close()
				return fmt.Errorf("proof: postgres: %w", err)
			}
			page = append(page, x)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("proof: postgres: %w", err)
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
	rows, err := s.pool.Query(ctx, `SELECT q.ord, n.hash FROM unnest($1::smallint[], $2::bigint[]) WITH ORDINALITY AS q(level, idx, ord)
		JOIN proof_nodes n ON n.level = q.level AND n.idx = q.idx`, levels, idxs)
	if err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, len(ids))
	for rows.Next() {
		var ord int64
		var h []byte
		if err := rows.Scan(&ord, &h); err != nil {
			return nil, fmt.Errorf("proof: postgres: %w", err)
		}
		out[ord-1] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("proof: postgres: %w", err)
	}
	for i, h := range out {
		if h == nil {
			return nil, fmt.Errorf("%w: tree node (level %d, index %d)", ErrNotFound, ids[i].Level, ids[i].Index)
		}
	}
	return out, nil
}
