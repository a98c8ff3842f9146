package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/middleoffice"
	"pec/proof"
	"pec/tsa"
)

// Online backup. A running node makes the backup itself, on its ops
// listener (POST /backup): it takes a consistent snapshot of each store
// it holds open — the evidence log as one bbolt read transaction plus the
// records durable in its write-ahead log and not yet integrated
// (proof.BoltStore.Snapshot), the exchange store likewise with the
// payload files of its exchanges — and reads the files that are only ever
// replaced whole or written in checksummed copies (the TSA's serial file,
// the directory, the development CA's state, the rollback guard's
// checkpoint) or appended to (the TSA's journal, up to its last complete
// line). It streams them as one archive (archive.go), records the backup
// as evidence (admin.action node.backup, with the manifest's SHA-256) and
// names the record in the answer's trailer. `pec backup` saves the stream,
// checking it as it comes, and keeps it only when it is whole and
// recorded.
//
// The snapshots are taken in an order that keeps the stores consistent
// with each other: the files first, then the exchange store, then the
// rollback guard's checkpoint, then the evidence log — a step of an
// exchange commits after its evidence is durable, a checkpoint is saved
// after the store holds its head, so what an earlier snapshot names, a
// later one holds.
//
// A backup holds no key and no PIN: the keys stay in the HSM, which is
// backed up by its own means (a SoftHSM2 token directory is copied while
// no process uses it; a hardware HSM has its own backup procedure). It
// holds the evidence log, which names who exchanged with whom, and the
// dossiers, encrypted for their recipients and at rest (their data keys,
// wrapped by HSM keys, are payloads of the exchange store: in the backup;
// a retention's key destroyed, its dossiers are unreadable in every
// backup too): keep backups as the data directory is kept. Resumable
// uploads under way are not in it. The ops listener has no authentication of its own:
// it is for operators, on a loopback or management address.

// nodeBackup is the gateway.Backuper of a running node.
type nodeBackup struct {
	cfg       *File
	plog      *proof.Log                      // nil: no evidence log
	exchanges *middleoffice.BoltExchangeStore // nil: no exchange, or not embedded
	log       *slog.Logger
	now       func() time.Time
	busy      sync.Mutex
}

var _ gateway.Backuper = (*nodeBackup)(nil)

func newNodeBackup(cfg *File, plog *proof.Log, exchanges *middleoffice.BoltExchangeStore, log *slog.Logger) *nodeBackup {
	return &nodeBackup{cfg: cfg, plog: plog, exchanges: exchanges, log: log, now: time.Now}
}

// boltExchanges is the embedded exchange store s, or nil.
func boltExchanges(s any) *middleoffice.BoltExchangeStore {
	b, _ := s.(*middleoffice.BoltExchangeStore)
	return b
}

// readOptional reads a file that may not exist: nil, nil then.
func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// Backup implements gateway.Backuper.
func (b *nodeBackup) Backup(ctx context.Context, w io.Writer, req gateway.BackupRequest) (gateway.BackupResult, error) {
	if !b.busy.TryLock() {
		return gateway.BackupResult{}, gateway.ErrBackupBusy
	}
	defer b.busy.Unlock()
	cfg := b.cfg
	var store *proof.BoltStore
	if b.plog != nil {
		store, _ = b.plog.Store().(*proof.BoltStore)
	}
	if req.EvidenceOnly && store == nil {
		return gateway.BackupResult{}, gateway.ErrNoBackup
	}
	m := &backupManifest{Scope: "node"}
	if req.EvidenceOnly {
		m.Scope = "evidence"
	}

	// The snapshot points, in the order of the package comment.
	type file struct {
		name string
		data []byte
	}
	var files []file
	journal := int64(-1)
	var xs *middleoffice.ExchangeSnapshot
	if !req.EvidenceOnly {
		for _, f := range []struct{ name, path string }{
			{nameCAState, cfg.DevCA.StateFile},
			{nameDirectory, cfg.Directory.File},
		} {
			data, err := readOptional(f.path)
			if err != nil {
				return gateway.BackupResult{}, fmt.Errorf("backup: %w", err)
			}
			if data != nil {
				files = append(files, file{f.name, data})
			}
		}
		switch st, err := tsa.ReadSerialFile(cfg.TSA.SerialFile); {
		case err == nil:
			files = append(files, file{nameSerials, tsa.EncodeSerialFile(st)})
		case !errors.Is(err, fs.ErrNotExist):
			return gateway.BackupResult{}, fmt.Errorf("backup: %w", err)
		}
		switch n, err := tsa.JournalLength(cfg.TSA.JournalFile); {
		case err == nil:
			journal = n
		case !errors.Is(err, fs.ErrNotExist):
			return gateway.BackupResult{}, fmt.Errorf("backup: %w", err)
		}
		if b.exchanges != nil {
			var err error
			if xs, err = b.exchanges.Snapshot(); err != nil {
				return gateway.BackupResult{}, err
			}
			defer func() {
				if xs != nil {
					xs.Close()
				}
			}()
			m.Exchanges = xs.Exchanges()
		} else if cfg.Exchange.Configured() {
			m.Left = append(m.Left, "the exchange store: not in the data directory (a PostgreSQL database is backed up by its own means)")
		}
	}
	var guard []byte
	var ps *proof.BoltSnapshot
	if store != nil {
		var err error
		if guard, err = readOptional(cfg.Proof.CheckpointFile); err != nil {
			return gateway.BackupResult{}, fmt.Errorf("backup: %w", err)
		}
		if ps, err = store.Snapshot(); err != nil {
			return gateway.BackupResult{}, err
		}
		defer func() {
			if ps != nil {
				ps.Close()
			}
		}()
	} else if cfg.Proof.Configured() {
		m.Left = append(m.Left, "the evidence log: in PostgreSQL, backed up by its own means")
	}

	bw, err := newBackupWriter(w, b.now())
	if err != nil {
		return gateway.BackupResult{}, err
	}
	if ps != nil {
		if err := bw.add(nameProofDB, ps.DBSize(), func(w io.Writer) error { _, err := ps.WriteDB(w); return err }); err != nil {
			return gateway.BackupResult{}, err
		}
		if ps.Unsealed() > 0 {
			seg, err := ps.WAL()
			if err == nil {
				err = bw.addBytes(nameProofWALDir+ps.WALFile(), seg)
			}
			if err != nil {
				return gateway.BackupResult{}, err
			}
		}
		size, root := ps.Head()
		m.Proof = &manifestProof{Origin: cfg.Proof.Origin, Size: size, Root: hex.EncodeToString(root), Records: ps.Records(), Unsealed: ps.Unsealed()}
		ps.Close() // the read transaction ends as soon as it is copied
		ps = nil
		if guard != nil {
			if err := bw.addBytes(nameCheckpoint, guard); err != nil {
				return gateway.BackupResult{}, err
			}
		}
	}
	for _, f := range files {
		if err := bw.addBytes(f.name, f.data); err != nil {
			return gateway.BackupResult{}, err
		}
	}
	if journal >= 0 {
		if err := addFile(bw, nameJournal, cfg.TSA.JournalFile, journal); err != nil {
			return gateway.BackupResult{}, err
		}
	}
	if xs != nil {
		if err := bw.add(nameExchangesDB, xs.DBSize(), func(w io.Writer) error { _, err := xs.WriteDB(w); return err }); err != nil {
			return gateway.BackupResult{}, err
		}
		payloads := xs.Payloads()
		xs.Close()
		xs = nil
		for _, p := range payloads {
			name := nameExchangesDir + p.Exchange + "/" + p.Name
			err := addFile(bw, name, p.Path, -1)
			if errors.Is(err, fs.ErrNotExist) {
				m.Missing = append(m.Missing, name)
				continue
			}
			if err != nil {
				return gateway.BackupResult{}, err
			}
		}
	}
	sum, err := bw.finish(m)
	if err != nil {
		return gateway.BackupResult{}, err
	}
	res := gateway.BackupResult{ManifestSHA256: hex.EncodeToString(sum)}
	if req.EvidenceOnly || b.plog == nil {
		return res, nil
	}
	attrs := []evidence.Attribute{
		{Key: "bytes", Value: strconv.FormatInt(bw.bytes, 10)},
		{Key: "exchanges", Value: strconv.Itoa(m.Exchanges)},
		{Key: "files", Value: strconv.Itoa(len(m.Files))},
	}
	if m.Proof != nil {
		attrs = append(attrs,
			evidence.Attribute{Key: "log_records", Value: strconv.FormatUint(m.Proof.Records, 10)},
			evidence.Attribute{Key: "log_size", Value: strconv.FormatUint(m.Proof.Size, 10)},
			evidence.Attribute{Key: "log_unsealed", Value: strconv.Itoa(m.Proof.Unsealed)})
	}
	if len(m.Missing) > 0 {
		attrs = append(attrs, evidence.Attribute{Key: "missing_payloads", Value: strconv.Itoa(len(m.Missing))})
	}
	ids, err := b.plog.Append(ctx, &evidence.Record{
		Type:       evidence.AdminAction,
		Subject:    "node.backup",
		Actors:     []evidence.Actor{{Role: "operator", Subject: "ops listener client " + req.Client}},
		Digests:    []evidence.Digest{{Name: "backup-manifest", Algorithm: "sha256", Value: sum}},
		Attributes: attrs,
	})
	if err != nil {
		return res, fmt.Errorf("backup: record it: %w", err)
	}
	res.EvidenceID = ids[0]
	return res, nil
}

// addFile adds the first size bytes of the file at path (size < 0: all
// of it).
func addFile(bw *backupWriter, name, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if size < 0 {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
	}
	return bw.add(name, size, func(w io.Writer) error {
		_, err := io.Copy(w, io.NewSectionReader(f, 0, size))
		return err
	})
}

func newBackupCommand() *cobra.Command {
	var configPath, out, ops string
	cmd := &cobra.Command{
		Use:   "backup --config FILE -o BACKUP [--ops URL]",
		Short: "Back up a running node's stores into one checked file, recording the backup as evidence",
		Long: `backup asks the running node, on its ops listener (listen.ops, or --ops URL), for a consistent
snapshot of every store it keeps in its own files: the evidence log (every record acknowledged
before the backup began, sealed or not), the TSA's serial file and journal, the exchange store
and its payloads, the directory, the development CA's state and the rollback guard's
checkpoint. The node streams them as one archive with a manifest of SHA-256 digests, itself
checked; backup checks it as it comes and keeps BACKUP only when it is whole, and when the
node recorded the backup as evidence (admin.action node.backup, naming the manifest's digest).

The backup holds no key and no PIN: back the HSM up by its own means. It holds the evidence
log and the dossiers (encrypted): keep it as the data directory is kept. A PostgreSQL store
is not in it (pg_dump). Restore with pec restore, onto the stopped node.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" || out == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE and -o BACKUP are required")}}
			}
			cfg, err := LoadConfig(configPath)
			if err != nil {
				return inputError(err)
			}
			base, err := opsURL(cfg, ops)
			if err != nil {
				return err
			}
			if _, err := os.Lstat(out); err == nil {
				return usageError("%s exists: give the backup a new name", out)
			}
			res, err := fetchBackup(cmd.Context(), cfg, base, out)
			if err != nil {
				return err
			}
			m := res.manifest
			what := fmt.Sprintf("%d files, %d bytes", len(m.Files), res.bytes)
			if m.Proof != nil {
				what += fmt.Sprintf("; the evidence log: %d records, tree head %d, %d more unsealed", m.Proof.Records, m.Proof.Size, m.Proof.Unsealed)
			}
			if m.Exchanges > 0 {
				what += fmt.Sprintf("; %d exchanges", m.Exchanges)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup: wrote %s (%s); manifest sha256 %x\n", out, what, res.sum)
			for _, l := range m.Left {
				fmt.Fprintf(cmd.OutOrStdout(), "backup: not in it: %s\n", l)
			}
			if len(m.Missing) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "backup: %d payload files were removed (expired or shredded) while the backup ran\n", len(m.Missing))
			}
			if res.evidence != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "backup: recorded as evidence %s\n", res.evidence)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "backup: not recorded: the node keeps no evidence log\n")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml) of the node")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the backup file to write (must not exist)")
	cmd.Flags().StringVar(&ops, "ops", "", "the node's ops listener (http://HOST:PORT); default: listen.ops")
	return cmd
}

// opsURL is the base URL of the node's ops listener: --ops, or listen.ops
// (an unspecified host is reached on loopback).
func opsURL(cfg *File, flag string) (string, error) {
	if flag != "" {
		if !strings.HasPrefix(flag, "http://") && !strings.HasPrefix(flag, "https://") {
			return "", usageError("--ops %q: want http://HOST:PORT", flag)
		}
		return strings.TrimSuffix(flag, "/"), nil
	}
	if cfg.Listen.Ops == "" {
		return "", usageError("%s: listen.ops is empty: the node has no ops listener to ask (give --ops URL)", cfg.path)
	}
	host, port, err := net.SplitHostPort(cfg.Listen.Ops)
	if err != nil {
		return "", inputError(fmt.Errorf("listen.ops: %w", err))
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

type fetched struct {
	manifest *backupManifest
	sum      []byte
	bytes    int64
	evidence string
}

// opsClient has no overall timeout: a backup takes as long as the stores
// are large; connecting and the first answer are bounded.
var opsClient = &http.Client{Transport: &http.Transport{
	DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	ResponseHeaderTimeout: 60 * time.Second,
}}

// postBackup asks the node at base for an archive: the whole node
// (POST /backup) or its evidence log (GET /proof/snapshot). The node that
// answers must be the one whose pid the data directory's lock holds, when
// it holds one: the configured ops address may be another node's.
func postBackup(ctx context.Context, cfg *File, base string, evidenceOnly bool) (*http.Response, error) {
	method, path := http.MethodPost, "/backup"
	if evidenceOnly {
		method, path = http.MethodGet, "/proof/snapshot"
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return nil, inputError(err)
	}
	resp, err := opsClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, failure(fmt.Errorf("no node answers on %s (is pec serve running? started with --listen ops=HOST:PORT, it is asked with --ops http://HOST:PORT)", base))
		}
		return nil, failure(fmt.Errorf("the node's ops listener %s: %w", base, err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var p api.Problem
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return nil, failure(fmt.Errorf("%s%s: %s: %s", base, path, resp.Status, p.Detail))
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil, failure(fmt.Errorf("%s%s: %s: this node serves no backups (an older pec?)", base, path, resp.Status))
		}
		return nil, failure(fmt.Errorf("%s%s: %s", base, path, resp.Status))
	}
	if want := readPID(filepath.Join(cfg.DataDir, lockFile)); want > 0 {
		if got := resp.Header.Get(gateway.HeaderNodePID); got != strconv.Itoa(want) {
			resp.Body.Close()
			return nil, failure(fmt.Errorf("%s answers for another process (pid %q), not the node running on %s (pid %d): give that node's ops listener with --ops http://HOST:PORT", base, got, cfg.DataDir, want))
		}
	}
	return resp, nil
}

// fetchBackup saves the node's backup in out, checked: nothing is left at
// out unless the archive is whole and the node named its record.
func fetchBackup(ctx context.Context, cfg *File, base, out string) (*fetched, error) {
	resp, err := postBackup(ctx, cfg, base, false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return nil, inputError(err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	cw := &countWriter{w: f}
	body := io.TeeReader(resp.Body, cw)
	m, sum, err := readBackup(body, "", false)
	if err != nil {
		if tr := resp.Trailer.Get(gateway.TrailerBackupError); tr != "" {
			return nil, failure(fmt.Errorf("the node: %s", tr))
		}
		return nil, failure(fmt.Errorf("the node's answer: %w", err))
	}
	if _, err := io.Copy(io.Discard, body); err != nil { // the tar's end, and the trailers
		return nil, failure(fmt.Errorf("the node's answer: %w", err))
	}
	if tr := resp.Trailer.Get(gateway.TrailerBackupError); tr != "" {
		return nil, failure(fmt.Errorf("the node: %s", tr))
	}
	if got := resp.Trailer.Get(gateway.TrailerBackupSHA256); got != hex.EncodeToString(sum) {
		return nil, failure(fmt.Errorf("the node's answer: the manifest's SHA-256 is %x, the node says %q", sum, got))
	}
	if err := f.Sync(); err != nil {
		return nil, failure(err)
	}
	if err := f.Close(); err != nil {
		return nil, failure(err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return nil, failure(err)
	}
	keep = true
	if err := syncDirOf(out); err != nil {
		return nil, failure(err)
	}
	return &fetched{manifest: m, sum: sum, bytes: cw.n, evidence: resp.Trailer.Get(gateway.TrailerBackupEvidence)}, nil
}

func syncDirOf(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fetchEvidenceSnapshot saves the running node's evidence log in a new
// temporary directory: its store file (with its write-ahead log) and its
// saved checkpoint, checked. The caller removes dir.
func fetchEvidenceSnapshot(ctx context.Context, cfg *File, base string) (dir string, m *backupManifest, err error) {
	resp, err := postBackup(ctx, cfg, base, true)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	dir, err = os.MkdirTemp("", "pec-evidence-snapshot-")
	if err != nil {
		return "", nil, failure(err)
	}
	m, _, err = readBackup(resp.Body, dir, false)
	if err == nil && !m.has(nameProofDB) {
		err = badBackup("", "the node's snapshot holds no evidence log")
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, failure(fmt.Errorf("the node's snapshot of its evidence log: %w", err))
	}
	return dir, m, nil
}

// storeInUse reports whether a process holds the write lock of the
// embedded store file at path (bbolt's flock): a running node.
func storeInUse(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}

// proofSource is the evidence store that list, show, export and audit
// read: that of a stopped node, opened read-only; or a snapshot that the
// running node gave on its ops listener (--ops URL, or found running:
// its store locked, and asked on listen.ops); or the shared PostgreSQL.
type proofSource struct {
	proof.Store
	// Guard is the rollback guard's checkpoint file to audit against:
	// the node's, or the snapshot's copy ("": none).
	Guard string
	// From says where the store was read: "" the node's files.
	From string
	dir  string
}

func (p *proofSource) Close() error {
	err := p.Store.Close()
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	return err
}

func openProofSource(ctx context.Context, cfg *File, ops string) (*proofSource, error) {
	if cfg.Proof.PostgresURLEnv != "" {
		s, err := openPGStore(cfg)
		if err != nil {
			return nil, err
		}
		return &proofSource{Store: s, Guard: cfg.Proof.CheckpointFile}, nil
	}
	if ops == "" && !storeInUse(cfg.Proof.File) {
		s, err := openProofStore(cfg)
		if err != nil {
			return nil, err
		}
		return &proofSource{Store: s, Guard: cfg.Proof.CheckpointFile}, nil
	}
	base, err := opsURL(cfg, ops)
	if err != nil {
		if ops == "" {
			return nil, failure(fmt.Errorf("the evidence log %s is in use by a running node, which has no ops listener to ask for a snapshot (listen.ops): stop the node, or give --ops URL", cfg.Proof.File))
		}
		return nil, err
	}
	dir, m, err := fetchEvidenceSnapshot(ctx, cfg, base)
	if err != nil {
		return nil, err
	}
	s, err := proof.OpenBolt(filepath.Join(dir, filepath.FromSlash(nameProofDB)), proof.BoltOptions{ReadOnly: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, failure(fmt.Errorf("the node's snapshot: %w", err))
	}
	src := &proofSource{Store: s, From: base, dir: dir}
	if m.has(nameCheckpoint) {
		src.Guard = filepath.Join(dir, filepath.FromSlash(nameCheckpoint))
	}
	return src, nil
}
