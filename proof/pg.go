package proof

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/compact"
)

// PGStore keeps the log in PostgreSQL, for several nodes sharing one log.
// Each Commit takes a transaction-scoped advisory lock, so one batch at a
// time is written, and checks that it extends the stored log: a node whose
// batch lost the race gets ErrConflict, resynchronises and seals again
// (see Log). Open it with [OpenPG].
type PGStore struct {
	pool *pgxpool.Pool
}

var _ Store = (*PGStore)(nil)

// pgLockKey is the advisory lock of the log's sequencing ("PECPROOF").
const pgLockKey = 0x50454350524f4f46

const pgSchema = `
CREATE TABLE IF NOT EXISTS proof_records (
	idx  BIGINT PRIMARY KEY,
	id   TEXT NOT NULL UNIQUE,
	data BYTEA NOT NULL
);
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

// OpenPG connects to PostgreSQL (a pgx connection string or URL) and
// creates the tables if needed.
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
		_, err := tx.Exec(ctx, pgSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("proof: postgres schema: %w", err)
	}
	return &PGStore{pool: pool}, nil
}

// Close implements Store.
func (s *PGStore) Close() error {
	s.pool.Close()
	return nil
}

// Commit implements Store.
func (s *PGStore) Commit(ctx context.Context, b *Batch) error {
	if b.Head.Size != b.Start+uint64(len(b.Records)) || len(b.Head.Root) != 32 {
		return fmt.Errorf("proof: store: batch at %d with %d records has a head of size %d", b.Start, len(b.Records), b.Head.Size)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgLockKey)); err != nil {
			return err
		}
		var size int64
		if err := tx.QueryRow(ctx, "SELECT COALESCE(MAX(idx) + 1, 0) FROM proof_records").Scan(&size); err != nil {
			return err
		}
		if uint64(size) != b.Start {
			return fmt.Errorf("%w: it starts at %d, the log holds %d records", ErrConflict, b.Start, size)
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"proof_records"}, []string{"idx", "id", "data"},
			pgx.CopyFromSlice(len(b.Records), func(i int) ([]any, error) {
				return []any{int64(b.Start) + int64(i), b.Records[i].ID, b.Records[i].Data}, nil
			}))
		if err != nil {
			return err
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
		if pe.ConstraintName == "proof_records_id_key" {
			return fmt.Errorf("%w: an evidence id of the batch is already in the log", ErrDuplicateID)
		}
		return fmt.Errorf("%w: %s", ErrConflict, pe.Message)
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("proof: postgres: commit: %w", err)
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
	var idx int64
	err := s.pool.QueryRow(ctx, "SELECT idx FROM proof_records WHERE id = $1", id).Scan(&idx)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: evidence %q", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("proof: postgres: %w", err)
	}
	return uint64(idx), nil
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
