package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"pec/middleoffice"
)

// The stores that several nodes share on one PostgreSQL: exchange.store
// and directory.store "postgres", beside the evidence log's
// proof.postgres_url_env. Each section names the variable holding its
// URL (the URL holds a password: never in pec.yaml), or takes the proof
// section's.

// validateStores checks what the sections cannot check alone: a postgres
// store needs a URL, its own variable or the evidence log's; the
// exchange's steps are evidence that every node may finish, so exchanges
// shared between nodes need the evidence log shared too.
func (f *File) validateStores() []error {
	var errs []error
	for _, s := range []struct{ section, store, env string }{
		{"exchange", f.Exchange.Store, f.Exchange.PostgresURLEnv},
		{"directory", f.Directory.Store, f.Directory.PostgresURLEnv},
	} {
		if s.store == middleoffice.StorePostgres && s.env == "" && f.Proof.PostgresURLEnv == "" {
			errs = append(errs, fmt.Errorf("%s.store: postgres needs the variable holding the database's URL: %s.postgres_url_env (or proof.postgres_url_env)", s.section, s.section))
		}
	}
	if f.Exchange.Store == middleoffice.StorePostgres && f.Exchange.Configured() && f.Proof.Configured() && f.Proof.PostgresURLEnv == "" {
		// A node finishes the steps another left prepared, appending
		// their records to its own log: one exchange's evidence would be
		// spread over several logs, some of it twice.
		errs = append(errs, errors.New("exchange.store: postgres: the nodes sharing the exchanges share the evidence log too: set proof.postgres_url_env"))
	}
	return errs
}

// postgresURL reads the URL of a section's PostgreSQL from the variable
// env names, or else from proof.postgres_url_env's.
func postgresURL(cfg *File, section, env string) (string, error) {
	field := section + ".postgres_url_env"
	if env == "" {
		env, field = cfg.Proof.PostgresURLEnv, "proof.postgres_url_env"
	}
	url := os.Getenv(env)
	if url == "" {
		return "", usageError("%s: $%s is empty", field, env)
	}
	return url, nil
}

// openExchangeStore opens exchange.store: the embedded store in the data
// directory, or the PostgreSQL that the nodes share.
func openExchangeStore(ctx context.Context, cfg *File) (middleoffice.ExchangeStore, error) {
	if cfg.Exchange.Store != middleoffice.StorePostgres {
		s, err := middleoffice.OpenBoltExchanges(cfg.DataDir)
		if err != nil {
			return nil, failure(err)
		}
		return s, nil
	}
	url, err := postgresURL(cfg, "exchange", cfg.Exchange.PostgresURLEnv)
	if err != nil {
		return nil, err
	}
	s, err := middleoffice.OpenPGExchanges(ctx, url)
	if err != nil {
		return nil, failure(err)
	}
	return s, nil
}

// openDirectoryStore opens directory.store: directory.file, or the
// PostgreSQL that the nodes share (whose changes by other nodes
// Directory.Follow loads).
func openDirectoryStore(ctx context.Context, cfg *File, log *slog.Logger) (middleoffice.Store, error) {
	if cfg.Directory.Store != middleoffice.StorePostgres {
		s, err := middleoffice.OpenFile(cfg.Directory.File)
		if err != nil {
			return nil, fmt.Errorf("directory.file: %w", err)
		}
		return s, nil
	}
	url, err := postgresURL(cfg, "directory", cfg.Directory.PostgresURLEnv)
	if err != nil {
		return nil, err
	}
	s, err := middleoffice.OpenPG(ctx, url, middleoffice.PGStoreOptions{Logger: log})
	if err != nil {
		return nil, failure(err)
	}
	return s, nil
}

// followDirectory loads the directory again whenever another node changes
// it (a shared store; with a file, Follow returns at once), until the
// node closes: n's closers stop it before the store closes.
func followDirectory(ctx context.Context, dir *middleoffice.Directory, n *node) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dir.Follow(ctx) // nil: it logs its own failures and retries
	}()
	n.onClose(func() error { stop(); <-done; return nil })
}
