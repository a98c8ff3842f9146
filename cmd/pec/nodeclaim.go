package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// A node's claim to its tsa.node_id on the PostgreSQL database its
// evidence log shares with the platform's other nodes. Serial numbers are
// node_id<<64 | counter (tsa.OpenFileSerials): two nodes running with one
// node_id — a configuration copied without pec init --join — would issue
// tokens of the same serial, which RFC 3161 (section 2.4.2) forbids of
// one TSA, and which the shared log would hold side by side. So a node on
// PostgreSQL holds, for as long as it runs, a session-level advisory lock
// named by its node_id (and the schema of its tables: the nodes of
// another platform in the same database are not its business) on a
// connection of its own. PostgreSQL releases the lock when that
// connection ends: a node killed with -9 gives its id back at once, and a
// node restarted takes it again. A second node with the id is refused at
// its start, naming the holder. A lost connection is taken again with
// backoff; if meanwhile another node took the id, /readyz says so (the
// node keeps serving what it must: the operator decides which node goes).

// nodeLockClass is the first key of the advisory lock, "PEC1", with the
// schema's hash mixed in (schemaHash): both positive, as pg_locks shows
// the keys as oids.
const nodeLockClass = 0x50454331

// nodeClaimWait is how long a start waits for the lock of a node that is
// going (its connection not yet noticed closed by the server).
const nodeClaimWait = 5 * time.Second

type nodeClaim struct {
	url    string
	nodeID int
	log    *slog.Logger

	conn   atomic.Pointer[pgx.Conn]
	lost   atomic.Pointer[error] // non-nil: the claim is lost, why
	cancel context.CancelFunc
	done   chan struct{}
}

// claimNodeID takes the lock of nodeID on the database of url, waiting
// nodeClaimWait at most for a node that is going; it keeps the lock (and
// takes it again after a lost connection) until Close.
func claimNodeID(ctx context.Context, url string, nodeID int, log *slog.Logger) (*nodeClaim, error) {
	c := &nodeClaim{url: url, nodeID: nodeID, log: log, done: make(chan struct{})}
	deadline := time.Now().Add(nodeClaimWait)
	for {
		err := c.take(ctx)
		if err == nil {
			break
		}
		var held *nodeIDHeldError
		if !errors.As(err, &held) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	hctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.hold(hctx)
	return c, nil
}

// nodeIDHeldError: another session holds the node's lock.
type nodeIDHeldError struct {
	nodeID int
	holder string // what pg_stat_activity says of the session holding it
}

func (e *nodeIDHeldError) Error() string {
	return fmt.Sprintf("tsa.node_id %d is held by another running node of this database (%s): two nodes with one node_id would issue time-stamp tokens of the same serial numbers; give each node its own tsa.node_id (pec init --join makes a node's configuration)", e.nodeID, e.holder)
}

// take connects and takes the lock.
func (c *nodeClaim) take(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(c.url)
	if err != nil {
		return fmt.Errorf("tsa.node_id: postgres: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	cfg.RuntimeParams["application_name"] = fmt.Sprintf("pec-node-%d", c.nodeID)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("tsa.node_id: postgres: %w", err)
	}
	var schema string
	var ok bool
	var class int32 // the lock's first key: nodeLockClass and the schema
	err = conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema)
	if err == nil {
		class = nodeLockClass ^ schemaHash(schema)
		err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", class, int32(c.nodeID)).Scan(&ok)
	}
	if err != nil {
		conn.Close(context.Background())
		return fmt.Errorf("tsa.node_id: postgres: %w", err)
	}
	if !ok {
		holder := "unknown session"
		var pid int
		var app, addr, since string
		if conn.QueryRow(ctx, `SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '')
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.classid = $1::oid AND l.objid = $2::oid AND l.granted LIMIT 1`,
			uint32(class), uint32(c.nodeID)).Scan(&pid, &app, &addr, &since) == nil {
			holder = fmt.Sprintf("backend pid %d, %s from %s since %s", pid, app, addr, since)
		}
		conn.Close(context.Background())
		return &nodeIDHeldError{nodeID: c.nodeID, holder: holder}
	}
	if old := c.conn.Swap(conn); old != nil {
		old.Close(context.Background())
	}
	return nil
}

// schemaHash folds the schema's name into the lock's first key.
func schemaHash(schema string) int32 {
	h := fnv.New32a()
	h.Write([]byte(schema))
	return int32(h.Sum32() & 0x7fffffff)
}

// hold checks the lock's connection every few seconds and, once it is
// lost, takes the lock again with backoff.
func (c *nodeClaim) hold(ctx context.Context) {
	defer close(c.done)
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		conn := c.conn.Load()
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		c.log.Warn("tsa.node_id: the connection holding the node's id was lost; taking it again", "node_id", c.nodeID, "err", err)
		for ctx.Err() == nil {
			err := c.take(ctx)
			if err == nil {
				if c.lost.Swap(nil) != nil {
					c.log.Warn("tsa.node_id: the node's id is held again", "node_id", c.nodeID)
				}
				backoff = 100 * time.Millisecond
				break
			}
			var held *nodeIDHeldError
			if errors.As(err, &held) && c.lost.Load() == nil {
				c.log.Error("tsa.node_id: another node took this node's id while its connection was lost: their serial numbers may repeat; stop one of them", "node_id", c.nodeID, "err", err)
			}
			c.lost.Store(&err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Ready is the claim's readiness check: an error while the node does not
// hold its id.
func (c *nodeClaim) Ready() error {
	if err := c.lost.Load(); err != nil {
		return *err
	}
	return nil
}

// Close gives the id back.
func (c *nodeClaim) Close() error {
	c.cancel()
	<-c.done
	if conn := c.conn.Swap(nil); conn != nil {
		return conn.Close(context.Background())
	}
	return nil
}
