// Package pgtest gives tests a real, throw-away PostgreSQL: a cluster of
// their own (initdb and pg_ctl of PostgreSQL 15 on a temporary directory
// and a unix socket, no TCP listener), or the database that
// PEC_TEST_POSTGRES_URL names. Each test gets a schema of its own
// ([NewSchema]), cheaper than a database (CREATE DATABASE copies a
// template), selected by search_path in the connection string: the
// convention of the stores (proof.OpenPG, middleoffice.OpenPGExchanges)
// is to create their tables in current_schema().
//
// The cluster starts on first use and is stopped by [Main], which a test
// binary calls from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Running as root (initdb refuses it), the cluster runs as user postgres.
// A missing PostgreSQL fails the test, naming the apt package; it never
// skips.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Bin is where Debian's postgresql-15 package installs the server.
const Bin = "/usr/lib/postgresql/15/bin"

// EnvURL names the variable of an existing database to use instead of a
// cluster of the test binary's own. Its schemas are dropped after each
// test; the database is otherwise left as found, and never restarted.
const EnvURL = "PEC_TEST_POSTGRES_URL"

// ErrNoRestart: the database is not the test binary's own
// (PEC_TEST_POSTGRES_URL), so it cannot be restarted.
var ErrNoRestart = errors.New("pgtest: " + EnvURL + ": a database this test cannot restart")

// Cluster is the test binary's PostgreSQL.
type Cluster struct {
	// URL is the connection string of the cluster's database (user
	// postgres, database postgres), a superuser's: tests use it to kill
	// backends or look at pg_locks.
	URL string

	stop    func()
	restart func(down time.Duration) error
	n       atomic.Int64
}

var (
	once    sync.Once
	cluster *Cluster
	err     error
)

// Main runs the tests of m, then stops the cluster if one was started,
// and returns the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if cluster != nil && cluster.stop != nil {
		cluster.stop()
	}
	return code
}

// Start returns the cluster, started on the first call.
func Start(t testing.TB) *Cluster {
	t.Helper()
	once.Do(func() { cluster, err = start() })
	if err != nil {
		t.Fatal(err)
	}
	return cluster
}

// CanRestart reports whether Restart can work: the cluster is the test
// binary's own.
func (c *Cluster) CanRestart() bool { return c.restart != nil }

// Restart stops the cluster (-m fast: clients are disconnected) and
// starts it again after down. ErrNoRestart for PEC_TEST_POSTGRES_URL.
func (c *Cluster) Restart(down time.Duration) error {
	if c.restart == nil {
		return ErrNoRestart
	}
	return c.restart(down)
}

// NewSchema returns the connection string of a new, empty schema of the
// cluster, dropped (with everything in it) when t ends.
func NewSchema(t testing.TB) string {
	t.Helper()
	return Start(t).NewSchema(t)
}

// NewSchema is the package's NewSchema on c.
func (c *Cluster) NewSchema(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("pec_test_%d_%d", os.Getpid(), c.n.Add(1))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, c.URL); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			c.Close(ctx)
		}
	})
	cfg, err := pgx.ParseConfig(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable search_path=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database, name)
}

func start() (*Cluster, error) {
	if url := os.Getenv(EnvURL); url != "" {
		return &Cluster{URL: url}, nil
	}
	if _, err := os.Stat(filepath.Join(Bin, "initdb")); err != nil {
		return nil, fmt.Errorf("pgtest: PostgreSQL 15 is not installed (apt-get install postgresql-15) and %s is not set: %w", EnvURL, err)
	}
	dir, err := os.MkdirTemp("", "pec-pg-")
	if err != nil {
		return nil, err
	}
	var wrap []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		wrap = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		args = append(wrap, args...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pgtest: %v: %w\n%s", args, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(Bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The port only names the socket (listen_addresses is empty).
	opts := fmt.Sprintf("-k %s -p %d -c listen_addresses= -c fsync=on -c max_connections=200", dir, port)
	startServer := func() error {
		return run(filepath.Join(Bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start")
	}
	if err := startServer(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A test binary that panics or is killed never returns from m.Run:
	// a watchdog of its own session stops the cluster once the binary
	// is gone.
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	stopCmd := append(slices.Clone(wrap), filepath.Join(Bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
	for i := range stopCmd {
		stopCmd[i] = quote(stopCmd[i])
	}
	watchdog := exec.Command("sh", "-c", fmt.Sprintf("while kill -0 %d 2>/dev/null; do sleep 1; done; %s >/dev/null 2>&1; rm -rf %s",
		os.Getpid(), strings.Join(stopCmd, " "), quote(dir)))
	watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := watchdog.Start(); err == nil {
		go watchdog.Wait()
	}
	return &Cluster{
		URL: fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", dir, port),
		restart: func(down time.Duration) error {
			if err := run(filepath.Join(Bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"); err != nil {
				return err
			}
			time.Sleep(down)
			return startServer()
		},
		stop: func() {
			_ = run(filepath.Join(Bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
			os.RemoveAll(dir)
		},
	}, nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
