package middleoffice_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pec/evidence"
	"pec/internal/pgtest"
	"pec/middleoffice"
)

func openPGStore(t testing.TB, url string, poll time.Duration) *middleoffice.PGStore {
	t.Helper()
	s, err := middleoffice.OpenPG(context.Background(), url, middleoffice.PGStoreOptions{PollInterval: poll})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPGStore(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	storeSuite(t, func(t *testing.T) middleoffice.Store { return openPGStore(t, url, 0) })
}

// pgNode is one node's directory on a shared PostgreSQL, following the
// changes of the others.
type pgNode struct {
	store *middleoffice.PGStore
	dir   *middleoffice.Directory
	admin *middleoffice.Principal
}

func newPGNode(t *testing.T, url string, cfg middleoffice.Config, adminCert *x509.Certificate, poll time.Duration, follow bool) *pgNode {
	t.Helper()
	s := openPGStore(t, url, poll)
	d := openDir(t, cfg, s, &evidence.Memory{})
	n := &pgNode{store: s, dir: d, admin: d.Resolve(adminCert)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if follow {
		wg.Go(func() {
			if err := d.Follow(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		s.Close()
	})
	return n
}

// waitPartner waits until the node's directory resolves cert to the
// partner id at revision rev.
func (n *pgNode) waitPartner(t *testing.T, cert *x509.Certificate, id string, rev int64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if p := n.dir.Resolve(cert); p.ID() == id && p.Partner.Revision == rev {
			return time.Since(start)
		}
		if time.Since(start) > within {
			p := n.dir.Resolve(cert)
			t.Fatalf("after %s the node resolves the certificate to %q, want %q at revision %d", within, p.ID(), id, rev)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPGDirectoryTwoNodes: a partner added through one node's directory
// is seen by the other's (LISTEN/NOTIFY), its changes too; a node whose
// view is behind a change of the other cannot make a change (neither
// wins silently: a certificate claimed by two partners is caught), and
// makes it once it has loaded the directory again.
func TestPGDirectoryTwoNodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newTestPKI(t)
	adminCert := p.client(t, p.ca, "admin", "Ops")
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(adminCert)),
	}}
	url := pgtest.NewSchema(t)
	a := newPGNode(t, url, cfg, adminCert, time.Minute, true)
	b := newPGNode(t, url, cfg, adminCert, time.Minute, true)
	c := p.client(t, p.ca, "partner-c", "C")

	added, err := a.dir.Add(ctx, a.admin, middleoffice.Partner{ID: "partner-c", Name: "Partner C", Certificates: []middleoffice.CertificateRule{byFingerprint(c)}})
	if err != nil {
		t.Fatal(err)
	}
	took := b.waitPartner(t, c, "partner-c", added.Revision, 5*time.Second)
	t.Logf("the partner added on node a was seen on node b %s later", took)
	got, ok := b.dir.Partner("partner-c")
	if !ok || got.EvidenceID != added.EvidenceID || got.Name != "Partner C" {
		t.Errorf("node b's partner-c: %+v", got)
	}
	// Disabled on b: refused on a.
	if _, err := b.dir.SetDisabled(ctx, b.admin, "partner-c", true); err != nil {
		t.Fatal(err)
	}
	a.waitPartner(t, c, "partner-c", 2, 5*time.Second)
	if !a.dir.Resolve(c).Disabled() {
		t.Error("disabled on node b, enabled on node a")
	}
}

// TestPGDirectoryStale: on a node that did not load the other's change
// yet, a change is refused with ErrDirectoryChanged and not stored —
// whether it touches that partner or another, such as one that claims the
// same certificate — and is checked against the other's once loaded.
func TestPGDirectoryStale(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newTestPKI(t)
	adminCert := p.client(t, p.ca, "admin", "Ops")
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(adminCert)),
	}}
	url := pgtest.NewSchema(t)
	// Neither follows: b's view stays behind until it reloads.
	a := newPGNode(t, url, cfg, adminCert, time.Minute, false)
	b := newPGNode(t, url, cfg, adminCert, time.Minute, false)
	c := p.client(t, p.ca, "partner-c", "C")
	rule := []middleoffice.CertificateRule{byFingerprint(c)}
	if _, err := a.dir.Add(ctx, a.admin, middleoffice.Partner{ID: "partner-c", Name: "Partner C", Certificates: rule}); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func() error{
		"the same id": func() error {
			_, err := b.dir.Add(ctx, b.admin, middleoffice.Partner{ID: "partner-c", Name: "Another C", Certificates: rule})
			return err
		},
		"another partner claiming the certificate": func() error {
			_, err := b.dir.Add(ctx, b.admin, middleoffice.Partner{ID: "partner-x", Name: "X", Certificates: rule})
			return err
		},
		"an unrelated change": func() error {
			_, err := b.dir.Add(ctx, b.admin, middleoffice.Partner{ID: "partner-y", Name: "Y"})
			return err
		},
	} {
		if err := change(); !errors.Is(err, middleoffice.ErrDirectoryChanged) {
			t.Errorf("%s on the stale node: %v, want ErrDirectoryChanged", name, err)
		}
	}
	stored, err := openPGStore(t, url, 0).Load(ctx)
	if err != nil || len(stored) != 1 || stored[0].Name != "Partner C" {
		t.Fatalf("stored after the refused changes: %+v, %v; want partner-c of node a only", stored, err)
	}
	if err := b.dir.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.dir.Add(ctx, b.admin, middleoffice.Partner{ID: "partner-x", Name: "X", Certificates: rule}); !errors.Is(err, middleoffice.ErrConflict) {
		t.Errorf("after reloading, a partner claiming partner-c's certificate: %v, want ErrConflict", err)
	}
	if _, err := b.dir.Add(ctx, b.admin, middleoffice.Partner{ID: "partner-y", Name: "Y"}); err != nil {
		t.Errorf("after reloading, an unrelated change: %v", err)
	}
	// Concurrent changes on both nodes, each on its own view: one wins.
	if err := a.dir.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, n := range []*pgNode{a, b} {
		wg.Go(func() {
			_, errs[i] = n.dir.PatchPartner(ctx, n.admin, "partner-y", []byte(`{"name": "Y`+string(rune('a'+i))+`"}`))
		})
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), middleoffice.ErrDirectoryChanged) {
		t.Errorf("two concurrent changes: %v; want one applied, one ErrDirectoryChanged", errs)
	}
}

// TestPGDirectoryListenerLost: a change made while a node's listening
// connection is down (killed, and no new connection possible: its role
// may not log in meanwhile) is loaded once the node listens again; a
// change whose notification never comes is found by the poll.
func TestPGDirectoryListenerLost(t *testing.T) {
	t.Parallel()
	cluster := pgtest.Start(t)
	if !cluster.CanRestart() {
		t.Skip(pgtest.EnvURL + ": a database whose roles this test does not change")
	}
	ctx := t.Context()
	p := newTestPKI(t)
	adminCert := p.client(t, p.ca, "admin", "Ops")
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(adminCert)),
	}}
	url := pgtest.NewSchema(t)
	a := newPGNode(t, url, cfg, adminCert, time.Minute, true)
	// Node b connects as a role of its own, which the test stops from
	// logging in.
	admin := pgAdmin(t)
	schema := schemaOf(t, url)
	role := schema + "_b"
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT ALL ON SCHEMA " + schema + " TO " + role,
		"GRANT ALL ON ALL TABLES IN SCHEMA " + schema + " TO " + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Exec(ctx, "DROP OWNED BY "+role)
		admin.Exec(ctx, "DROP ROLE "+role)
	})
	poll := time.Minute
	b := newPGNode(t, url+" user="+role, cfg, adminCert, poll, true)
	c := p.client(t, p.ca, "partner-c", "C")

	// listeners counts node b's listening connections; it connects on its
	// own goroutine, after OpenPG or a loss.
	listeners := func() int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE usename = $1 AND application_name = 'pec-directory-listener'`, role).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// killListener ends that connection once it is there, then forbids
	// the role to log in: node b cannot listen until it may again. The
	// connection is waited for first (with the role still able to log in:
	// forbidden first, a listener not yet connected would never be).
	killListener := func() {
		t.Helper()
		// Generous: under the race detector on two busy cores, the listener
		// of the round before may still be in its reconnection backoff.
		deadline := time.Now().Add(20 * time.Second)
		for listeners() != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("node b's listener not connected after 20 s (%d connections)", listeners())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
			t.Fatal(err)
		}
		var killed int
		err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
			WHERE usename = $1 AND application_name = 'pec-directory-listener'`, role).Scan(&killed)
		if err != nil || killed != 1 {
			t.Fatalf("killing the listener of node b: %d killed, %v", killed, err)
		}
	}
	for round := range 2 {
		killListener()
		var err error
		if round == 0 {
			_, err = a.dir.Add(ctx, a.admin, middleoffice.Partner{ID: "partner-c", Name: "Partner C", Certificates: []middleoffice.CertificateRule{byFingerprint(c)}})
		} else {
			_, err = a.dir.PatchPartner(ctx, a.admin, "partner-c", []byte(`{"name": "C again"}`))
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if got := b.dir.Resolve(c); got.Partner != nil && got.Partner.Revision == int64(round+1) {
			t.Fatal("node b saw the change while it could not listen: the test does not test the reconnection")
		}
		if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" LOGIN"); err != nil {
			t.Fatal(err)
		}
		took := b.waitPartner(t, c, "partner-c", int64(round+1), 10*time.Second)
		t.Logf("round %d: the change made while node b's listener was down, seen %s after it could connect again", round, took)
	}

	// A change without its notification (a node of another version, a
	// notification queue overflown): found by the poll.
	quiet := newPGNode(t, url, cfg, adminCert, 200*time.Millisecond, true)
	raw := openPGStore(t, url, 0)
	defer raw.Close()
	stored, err := raw.Load(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatal(stored, err)
	}
	cp := stored[0]
	cp.Name, cp.Revision = "C quietly", cp.Revision+1
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	entry, _ := json.Marshal(cp)
	if _, err := conn.Exec(ctx, "UPDATE directory_partners SET entry = $1, revision = $2", entry, cp.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "UPDATE directory_version SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	took := quiet.waitPartner(t, c, "partner-c", cp.Revision, 5*time.Second)
	t.Logf("a change without notification seen %s later (poll every 200ms)", took)
}

// TestStoreConfig: exchange.store and directory.store, with their
// postgres_url_env.
func TestStoreConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		exchange  middleoffice.ExchangeConfig
		directory middleoffice.Config
		want      string // "" valid; else a part of the error
	}{
		{name: "defaults"},
		{name: "embedded and file", exchange: middleoffice.ExchangeConfig{Store: "embedded"}, directory: middleoffice.Config{Store: "file"}},
		{name: "postgres, the proof's URL", exchange: middleoffice.ExchangeConfig{Store: "postgres"}, directory: middleoffice.Config{Store: "postgres"}},
		{name: "postgres, a URL of their own", exchange: middleoffice.ExchangeConfig{Store: "postgres", PostgresURLEnv: "PEC_EXCHANGE_PG"}, directory: middleoffice.Config{Store: "postgres", PostgresURLEnv: "PEC_DIR_PG"}},
		{name: "unknown exchange store", exchange: middleoffice.ExchangeConfig{Store: "bolt"}, want: `exchange.store: "bolt" is not embedded or postgres`},
		{name: "unknown directory store", directory: middleoffice.Config{Store: "embedded"}, want: `directory.store: "embedded" is not file or postgres`},
		{name: "a URL without postgres", exchange: middleoffice.ExchangeConfig{PostgresURLEnv: "PG"}, want: "exchange.postgres_url_env: only with exchange.store: postgres"},
		{name: "a URL inline", directory: middleoffice.Config{Store: "postgres", PostgresURLEnv: "postgres://u:secret@db/pec"}, want: "directory.postgres_url_env: \"postgres://u:secret@db/pec\" is not the name"},
		{name: "file and postgres", directory: middleoffice.Config{Store: "postgres", File: "directory.json"}, want: "directory.file: not with directory.store: postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := errors.Join(tc.exchange.Validate(), tc.directory.Validate())
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}
