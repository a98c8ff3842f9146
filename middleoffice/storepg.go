package middleoffice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGStore is the directory's Store for nodes sharing one PostgreSQL: a
// partner added or changed through the administration API on one node is
// seen by the others.
//
// Its tables live in the connection's current schema (search_path), as
// the exchange store's: directory_partners (id, revision, the entry's
// JSON), directory_version (one row: a counter of the changes) and
// directory_schema.
//
// # Changes from several nodes
//
// Each Put is one transaction that moves the counter on from the value
// this handle last loaded or wrote (UPDATE ... WHERE version = seen): a
// node whose view is behind another's change fails its Put with
// ErrDirectoryChanged, and none is applied, so that every change is
// checked by the directory (certificate rules claimed by two partners,
// say) against every change before it, whichever node made it. The
// directory is then loaded again ([Directory.Reload]) and the change can
// be made again on it.
//
// The other nodes learn of a change by LISTEN/NOTIFY: Put notifies the
// channel of the schema in its transaction (delivered at commit), and a
// connection of each handle listens to it and signals [PGStore.Changes],
// which [Directory.Follow] turns into a Reload. A notification is lost
// while the listening connection is down, so each new listening
// connection signals once (the directory loads again after an outage),
// and the connection polls the counter every PollInterval when nothing
// is heard (a connection half-open would never hear again). A change is
// thus seen on the other nodes within milliseconds, and within
// PollInterval at worst.
//
// Open it with [OpenPG]. It is safe for concurrent use.
type PGStore struct {
	pool      *pgxpool.Pool
	listenCfg *pgx.ConnConfig
	channel   string
	poll      time.Duration
	log       *slog.Logger

	mu   sync.Mutex
	seen int64 // the counter this handle last loaded or wrote

	changes chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

var _ Store = (*PGStore)(nil)

// PGStoreOptions hold the optional settings of a PGStore; the zero value
// suits.
type PGStoreOptions struct {
	Logger *slog.Logger // nil: discard
	// PollInterval is how often the listening connection reads the
	// counter when no notification came; 0: 10s.
	PollInterval time.Duration
}

// ErrDirectoryChanged: another node changed the directory since this one
// loaded it; the change was not made. Load it again and retry.
var ErrDirectoryChanged = errors.New("middleoffice: the directory was changed on another node meanwhile")

const (
	pgDirectoryVersion = 1
	// pgDirectoryLockKey is the advisory lock of schema changes ("PECDIREC").
	pgDirectoryLockKey = 0x5045434449524543
)

const pgDirectorySchema = `
CREATE TABLE directory_schema (version INT NOT NULL);
CREATE TABLE directory_version (
	one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
	version BIGINT NOT NULL
);
CREATE TABLE directory_partners (
	id       TEXT COLLATE "C" PRIMARY KEY,
	revision BIGINT NOT NULL,
	version  BIGINT NOT NULL,
	entry    BYTEA NOT NULL
);
INSERT INTO directory_version (version) VALUES (0);
INSERT INTO directory_schema (version) VALUES (1);`

// OpenPG connects to PostgreSQL (a pgx connection string or URL) for the
// directory's store, creates or upgrades its tables, and starts listening
// for the changes of other nodes; Close stops it.
func OpenPG(ctx context.Context, url string, opts PGStoreOptions) (*PGStore, error) {
	pool, err := pgOpenPool(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: directory store: postgres: %w", err)
	}
	if err := pgMigrate(ctx, pool, pgDirectoryLockKey, "directory_schema", pgDirectorySchema, pgDirectoryVersion, nil); err != nil {
		pool.Close()
		return nil, fmt.Errorf("middleoffice: directory store: postgres schema: %w", err)
	}
	var schema string
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("middleoffice: directory store: postgres: %w", err)
	}
	// Notifications are per database: the channel names the schema.
	h := fnv.New32a()
	h.Write([]byte(schema))
	s := &PGStore{
		pool:      pool,
		listenCfg: pool.Config().ConnConfig.Copy(),
		channel:   fmt.Sprintf("pec_directory_%08x", h.Sum32()),
		poll:      opts.PollInterval,
		log:       opts.Logger,
		seen:      -1,
		changes:   make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if s.poll <= 0 {
		s.poll = 10 * time.Second
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.listenCfg.RuntimeParams["application_name"] == "" {
		s.listenCfg.RuntimeParams["application_name"] = "pec-directory-listener"
	}
	lctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.listen(lctx)
	return s, nil
}

// Close implements Store. It stops listening.
func (s *PGStore) Close() error {
	s.stop()
	<-s.done
	s.pool.Close()
	return nil
}

// Changes implements ChangeNotifier: a value arrives when another node
// may have changed the directory (several changes may give one value).
func (s *PGStore) Changes() <-chan struct{} { return s.changes }

func (s *PGStore) signal() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// Load implements Store, in one snapshot of the partners and the counter.
func (s *PGStore) Load(ctx context.Context) ([]Partner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	var out []Partner
	var version int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT version FROM directory_version").Scan(&version); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT id, entry FROM directory_partners ORDER BY id")
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Partner, error) {
			var id string
			var entry []byte
			if err := row.Scan(&id, &entry); err != nil {
				return Partner{}, err
			}
			var p Partner
			dec := json.NewDecoder(bytes.NewReader(entry))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil || p.ID != id {
				if err == nil {
					err = fmt.Errorf("the entry is partner %q's", p.ID)
				}
				return Partner{}, fmt.Errorf("%w: partner %q: %v", ErrStoreCorrupt, id, err)
			}
			return p, nil
		})
		return err
	})
	if err != nil {
		if errors.Is(err, ErrStoreCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("middleoffice: directory store: postgres: load: %w", err)
	}
	s.seen = version
	if out == nil {
		out = []Partner{}
	}
	return out, nil
}

// Put implements Store: ErrDirectoryChanged if another node changed the
// directory since this handle's last Load or Put (or if nothing was
// loaded yet).
func (s *PGStore) Put(ctx context.Context, p Partner) error {
	entry, err := json.Marshal(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := pgOpContext(ctx)
	defer cancel()
	var version int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "UPDATE directory_version SET version = version + 1 WHERE version = $1 RETURNING version", s.seen).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w (partner %q)", ErrDirectoryChanged, p.ID)
		}
		if err != nil {
			return err
		}
		// The revision guards the row too, should a handle's counter be
		// wrong.
		tag, err := tx.Exec(ctx, `INSERT INTO directory_partners (id, revision, version, entry) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, version = excluded.version, entry = excluded.entry
			WHERE directory_partners.revision < excluded.revision`, p.ID, p.Revision, version, entry)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w (partner %q is stored at revision %d or later)", ErrDirectoryChanged, p.ID, p.Revision)
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", s.channel, strconv.FormatInt(version, 10))
		return err
	})
	if errors.Is(err, ErrDirectoryChanged) {
		return err
	}
	if err != nil {
		return fmt.Errorf("middleoffice: directory store: postgres: put: %w", err)
	}
	s.seen = version
	return nil
}

// listen keeps a connection listening to the channel until ctx ends,
// connecting again after a failure (50 ms, doubling up to 5 s).
func (s *PGStore) listen(ctx context.Context) {
	defer close(s.done)
	backoff := 50 * time.Millisecond
	for {
		heard, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if heard {
			backoff = 50 * time.Millisecond
		}
		s.log.Warn("directory: listening for the changes of other nodes", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listenOnce listens on one connection until it fails; heard reports
// whether it listened at all.
func (s *PGStore) listenOnce(ctx context.Context) (heard bool, err error) {
	cctx, cancel := pgOpContext(ctx)
	conn, err := pgx.ConnectConfig(cctx, s.listenCfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(ctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, err
	}
	// What was changed while nobody listened.
	s.signal()
	for {
		wctx, cancel := context.WithTimeout(ctx, s.poll)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err == nil:
			if v, perr := strconv.ParseInt(n.Payload, 10, 64); perr != nil || v > s.seenVersion() {
				s.signal()
			}
			continue
		case !errors.Is(err, context.DeadlineExceeded):
			return true, err
		}
		// Nothing heard for a while: is the connection alive, and did
		// the counter move?
		qctx, cancel := pgOpContext(ctx)
		var v int64
		err = conn.QueryRow(qctx, "SELECT version FROM directory_version").Scan(&v)
		cancel()
		if err != nil {
			return true, err
		}
		if v != s.seenVersion() {
			s.signal()
		}
	}
}

func (s *PGStore) seenVersion() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// StorePostgres is the value of exchange.store and directory.store for a
// PostgreSQL database shared by several nodes.
const StorePostgres = "postgres"

// validateStore checks a section's store and postgres_url_env: store is
// "", embedded or StorePostgres; postgres_url_env names a variable (the
// URL holds a password: never in pec.yaml), only with postgres.
func validateStore(section, store, embedded, urlEnv string) []error {
	var errs []error
	switch store {
	case "", embedded, StorePostgres:
	default:
		errs = append(errs, fmt.Errorf("%s.store: %q is not %s or %s", section, store, embedded, StorePostgres))
	}
	if urlEnv != "" {
		if store != StorePostgres {
			errs = append(errs, fmt.Errorf("%s.postgres_url_env: only with %s.store: %s", section, section, StorePostgres))
		}
		if !envNameSyntax.MatchString(urlEnv) {
			errs = append(errs, fmt.Errorf("%s.postgres_url_env: %q is not the name of an environment variable", section, urlEnv))
		}
	}
	return errs
}

var envNameSyntax = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
