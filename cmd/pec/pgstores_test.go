package main

import (
	"errors"
	"strings"
	"testing"

	"pec/configs"
	"pec/internal/pgtest"
)

// pgMain runs the tests, then stops the throw-away PostgreSQL of the
// tests that started one (TestMain).
type pgMain struct{ m *testing.M }

func (p pgMain) Run() int { return pgtest.Main(p.m) }

// TestStoreConfig: exchange.store and directory.store, as `pec init`
// writes pec.yaml and as an operator changes it: a postgres store needs
// a URL (its own variable or the evidence log's), the shared exchanges
// need the shared log, and a directory in the database keeps no file.
func TestStoreConfig(t *testing.T) {
	t.Parallel()
	base, err := configs.Render(configs.Params{Dev: true, KeyDir: "keys", PolicyOID: devPolicyOID, DevCAURL: defaultCAURL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(f *File)
		want []string // in the error; none: valid
		file string   // directory.file after resolving
	}{
		{"embedded and file (the default)", func(*File) {}, nil, "/node/data/directory.json"},
		{"all in the evidence log's database", func(f *File) {
			f.Proof.PostgresURLEnv = "PEC_PG_URL"
			f.Exchange.Store, f.Directory.Store, f.Directory.File = "postgres", "postgres", ""
		}, nil, ""},
		{"a database of their own", func(f *File) {
			f.Proof.PostgresURLEnv = "PEC_PG_URL"
			f.Exchange.Store, f.Exchange.PostgresURLEnv = "postgres", "PEC_EXCHANGE_URL"
			f.Directory.Store, f.Directory.PostgresURLEnv, f.Directory.File = "postgres", "PEC_DIRECTORY_URL", ""
		}, nil, ""},
		{"the directory alone in a database", func(f *File) {
			f.Directory.Store, f.Directory.PostgresURLEnv, f.Directory.File = "postgres", "PEC_DIRECTORY_URL", ""
		}, nil, ""},
		{"exchange store without a URL", func(f *File) { f.Exchange.Store = "postgres" }, []string{
			"exchange.store: postgres needs the variable holding the database's URL: exchange.postgres_url_env (or proof.postgres_url_env)",
			"exchange.store: postgres: the nodes sharing the exchanges share the evidence log too: set proof.postgres_url_env",
		}, ""},
		{"exchange store with an embedded log", func(f *File) {
			f.Exchange.Store, f.Exchange.PostgresURLEnv = "postgres", "PEC_EXCHANGE_URL"
		}, []string{"exchange.store: postgres: the nodes sharing the exchanges share the evidence log too"}, ""},
		{"directory store without a URL", func(f *File) {
			f.Directory.Store, f.Directory.File = "postgres", ""
		}, []string{"directory.store: postgres needs the variable holding the database's URL: directory.postgres_url_env (or proof.postgres_url_env)"}, ""},
		{"directory store and a file", func(f *File) {
			f.Proof.PostgresURLEnv = "PEC_PG_URL"
			f.Directory.Store = "postgres"
		}, []string{"directory.file: not with directory.store: postgres"}, ""},
		{"unknown stores", func(f *File) { f.Exchange.Store, f.Directory.Store = "mysql", "ldap" }, []string{
			`exchange.store: "mysql" is not embedded or postgres`, `directory.store: "ldap" is not file or postgres`,
		}, ""},
		{"a URL without postgres", func(f *File) { f.Exchange.PostgresURLEnv = "PEC_PG_URL" }, []string{
			"exchange.postgres_url_env: only with exchange.store: postgres",
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := parseConfig(base)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(f)
			f.resolvePaths("/node")
			err = f.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if f.Directory.File != tc.file {
					t.Errorf("directory.file = %q, want %q", f.Directory.File, tc.file)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestPostgresURL: the URL comes from the section's variable, or from
// proof.postgres_url_env's; an empty variable is the operator's mistake
// (exit 2), named.
func TestPostgresURL(t *testing.T) {
	t.Setenv("PEC_TEST_OWN_URL", "host=/own")
	t.Setenv("PEC_TEST_LOG_URL", "host=/log")
	t.Setenv("PEC_TEST_EMPTY_URL", "")
	for _, tc := range []struct {
		name, own, log, want, fault string
	}{
		{"its own", "PEC_TEST_OWN_URL", "PEC_TEST_LOG_URL", "host=/own", ""},
		{"the log's", "", "PEC_TEST_LOG_URL", "host=/log", ""},
		{"its own, empty", "PEC_TEST_EMPTY_URL", "PEC_TEST_LOG_URL", "", "exchange.postgres_url_env: $PEC_TEST_EMPTY_URL is empty"},
		{"the log's, empty", "", "PEC_TEST_EMPTY_URL", "", "proof.postgres_url_env: $PEC_TEST_EMPTY_URL is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &File{}
			cfg.Proof.PostgresURLEnv = tc.log
			got, err := postgresURL(cfg, "exchange", tc.own)
			if tc.fault == "" {
				if err != nil || got != tc.want {
					t.Errorf("= %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			ee, ok := errors.AsType[*exitError](err)
			if !ok || ee.code != exitUsage || err.Error() != tc.fault {
				t.Errorf("= %q, %v; want exit 2, %q", got, err, tc.fault)
			}
		})
	}
}
