package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"pec/proof"
	"pec/tsa"
)

func newRestoreCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "restore --config FILE BACKUP",
		Short: "Put a backup of pec backup back onto a stopped node",
		Long: `restore checks BACKUP whole (every file against its manifest, the manifest against its
checksum, the evidence log against this node's proof key, the serial file against tsa.node_id)
before it changes anything, then puts its files where the configuration names them: the
evidence log (proof.file and its write-ahead log: the records that were durable but not yet
sealed are sealed at the next start), the TSA's serial file and journal, the exchange store
and its payloads, the directory, the development CA's state. Each file or directory it
replaces is kept beside it, as NAME.replaced-TIME. The node must be stopped: restore holds
the data directory's lock meanwhile.

Two files only move forward. The node's serial file stays when its mark is above the backup's
(serial numbers are never handed out twice). The rollback guard's checkpoint
(proof.checkpoint_file) stays when there is one: when the node signed checkpoints after the
backup was taken, pec serve and pec proof audit refuse the restored, older log until the
operator accepts it explicitly, which is recorded as evidence:
  pec proof accept-store --config FILE --reason TEXT
Then pec proof audit checks the restored log.

A backup holds no key: the HSM is restored by its own means.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if configPath == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE is required")}}
			}
			cfg, err := LoadConfig(configPath)
			if err != nil {
				return inputError(err)
			}
			f, err := os.Open(a[0])
			if err != nil {
				return inputError(err)
			}
			defer f.Close()
			return restore(cmd.Context(), cfg, f, a[0], cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml) of the node to restore")
	return cmd
}

// restoreTarget is one file or directory of a restore.
type restoreTarget struct {
	name   string // in the backup; a directory's ends with "/"
	path   string // where it goes
	staged string // where the backup's copy is; "": the backup has none
	keep   string // why the node's own copy stays; "": replaced
}

func restore(ctx context.Context, cfg *File, r io.Reader, backupName string, out io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return failure(fmt.Errorf("data_dir: %w", err))
	}
	unlock, err := lockStoppedNode(cfg)
	if err != nil {
		return err
	}
	defer unlock()

	staging, err := os.MkdirTemp(cfg.DataDir, ".restore-")
	if err != nil {
		return failure(err)
	}
	defer os.RemoveAll(staging)
	m, sum, err := readBackup(r, staging, true)
	if err != nil {
		if _, ok := errors.AsType[*BackupError](err); ok {
			return failure(fmt.Errorf("%s: %w: nothing was restored", backupName, err))
		}
		return failure(fmt.Errorf("%s: %w", backupName, err))
	}
	if m.Scope != "node" {
		return failure(fmt.Errorf("%s: a snapshot of the evidence log alone (scope %q), not the backup of a node: nothing was restored", backupName, m.Scope))
	}
	staged := func(name string) string {
		p := filepath.Join(staging, filepath.FromSlash(name))
		if _, err := os.Stat(p); err != nil {
			return ""
		}
		return p
	}

	// Everything is checked before anything is changed.
	var v *proof.NoteVerifier
	if m.has(nameProofDB) {
		if !cfg.Proof.Configured() || cfg.Proof.PostgresURLEnv != "" {
			return failure(fmt.Errorf("%s holds an embedded evidence log, and this configuration has no proof.file to put it in: nothing was restored", backupName))
		}
		logChain, _, err := proofChains(cfg)
		if err != nil {
			return err
		}
		if v, err = proof.NewNoteVerifier(cfg.Proof.Origin, logChain[0].PublicKey); err != nil {
			return inputError(fmt.Errorf("proof.cert_file: %w", err))
		}
		if err := checkStagedLog(ctx, staged(nameProofDB), staged(nameCheckpoint), m, v); err != nil {
			return failure(fmt.Errorf("%s: %w: nothing was restored", backupName, err))
		}
	}
	if p := staged(nameSerials); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			return failure(err)
		}
		st, err := tsa.ParseSerialFile(data)
		if err != nil {
			return failure(fmt.Errorf("%s: %s: %w: nothing was restored", backupName, nameSerials, err))
		}
		if int(st.Node) != cfg.TSA.NodeID {
			return failure(fmt.Errorf("%s: the serial file is of TSA node %d, and tsa.node_id is %d: the backup of another node? nothing was restored", backupName, st.Node, cfg.TSA.NodeID))
		}
	}
	if m.has(nameCAState) && !cfg.DevCA.Configured() {
		return failure(fmt.Errorf("%s holds the state of a development CA, and this configuration has no devca section: nothing was restored", backupName))
	}

	targets := []restoreTarget{
		{name: nameProofDB, path: cfg.Proof.File},
		{name: nameProofWALDir, path: proof.WALDir(cfg.Proof.File)},
		{name: nameCheckpoint, path: cfg.Proof.CheckpointFile},
		{name: nameSerials, path: cfg.TSA.SerialFile},
		{name: nameJournal, path: cfg.TSA.JournalFile},
		{name: nameDirectory, path: cfg.Directory.File},
		{name: nameCAState, path: cfg.DevCA.StateFile},
		{name: nameExchangesDB, path: filepath.Join(cfg.DataDir, "exchanges.db")},
		{name: nameExchangesDir, path: filepath.Join(cfg.DataDir, "payloads")},
	}
	var plan []restoreTarget
	for _, t := range targets {
		t.staged = staged(t.name)
		switch {
		case t.path == "" || t.staged == "" && !replacedWith(t.name, m):
			continue // not in the backup
		case t.name == nameCheckpoint && exists(t.path):
			t.keep = "the node's saved checkpoint: it never moves back"
		case t.name == nameSerials && exists(t.path):
			t.keep = serialsKeep(t.path, t.staged)
		case sameFile(t.path, t.staged):
			t.keep = "the same as the backup's"
		}
		plan = append(plan, t)
	}

	stamp := time.Now().UTC().Format("20060102T150405Z")
	var kept []string
	for _, t := range plan {
		if t.keep != "" || !exists(t.path) {
			continue
		}
		aside := t.path + ".replaced-" + stamp
		if err := os.Rename(t.path, aside); err != nil {
			return failure(fmt.Errorf("restore: move %s aside: %w (restored so far: the files kept aside are %v)", t.path, err, kept))
		}
		kept = append(kept, aside)
	}
	restored := 0
	for _, t := range plan {
		if t.keep != "" {
			continue
		}
		if t.staged == "" { // an empty write-ahead log or payload directory: none
			continue
		}
		if err := place(t.staged, t.path); err != nil {
			return failure(fmt.Errorf("restore: %s: %w (the files replaced are kept aside: %v)", t.path, err, kept))
		}
		restored++
	}

	what := fmt.Sprintf("%d files", len(m.Files))
	if m.Proof != nil {
		what += fmt.Sprintf("; the evidence log: %d records, tree head %d, %d more unsealed", m.Proof.Records, m.Proof.Size, m.Proof.Unsealed)
	}
	if m.Exchanges > 0 {
		what += fmt.Sprintf("; %d exchanges", m.Exchanges)
	}
	fmt.Fprintf(out, "restore: restored %s made %s (%s; manifest sha256 %x) into %s\n", backupName, m.Created.Format(time.RFC3339), what, sum, cfg.DataDir)
	for _, k := range kept {
		fmt.Fprintf(out, "restore: kept the replaced %s\n", k)
	}
	for _, t := range plan {
		if t.keep != "" {
			fmt.Fprintf(out, "restore: left %s as it is: %s\n", t.path, t.keep)
		}
	}
	for _, l := range m.Left {
		fmt.Fprintf(out, "restore: not in the backup: %s\n", l)
	}
	if v != nil {
		if err := checkRestoredLog(ctx, cfg, v, out); err != nil {
			return err
		}
	}
	return nil
}

// checkStagedLog checks the backup's evidence log before it is put back:
// its file opens, its newest head is the manifest's and is signed by this
// node's log key, and its saved checkpoint (when it has one) is this
// log's and no newer than the head.
func checkStagedLog(ctx context.Context, path, guard string, m *backupManifest, v *proof.NoteVerifier) error {
	s, err := proof.OpenBolt(path, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%s: %w", nameProofDB, err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		return fmt.Errorf("%s: %w", nameProofDB, err)
	}
	size, root := uint64(0), ""
	switch h, err := s.Latest(ctx); {
	case err == nil:
		if _, err := proof.OpenCheckpoint(v, "", h.Checkpoint); err != nil {
			return fmt.Errorf("%s: its newest checkpoint is not this node's evidence log's (proof.origin, proof.cert_file): %w", nameProofDB, err)
		}
		size, root = h.Size, hex.EncodeToString(h.Root)
	case !errors.Is(err, proof.ErrNotFound):
		return fmt.Errorf("%s: %w", nameProofDB, err)
	}
	unsealed, err := s.Unsealed(ctx, proof.MaxUnsealed)
	if err != nil {
		return fmt.Errorf("%s: %w", nameProofDB, err)
	}
	if m.Proof == nil || m.Proof.Size != size || m.Proof.Root != root || m.Proof.Unsealed != len(unsealed) {
		return badBackup(nameProofDB, "its tree head %d (root %s, %d unsealed) is not the manifest's", size, root, len(unsealed))
	}
	if guard != "" {
		cp, _, err := proof.ReadSavedCheckpoint(guard, v)
		if err != nil {
			return fmt.Errorf("%s: %w", nameCheckpoint, err)
		}
		if cp != nil && cp.Size > size {
			return badBackup(nameCheckpoint, "of size %d, over the backup's tree head %d", cp.Size, size)
		}
	}
	return nil
}

// checkRestoredLog says what pec serve will say of the restored log and
// the node's saved checkpoint.
func checkRestoredLog(ctx context.Context, cfg *File, v *proof.NoteVerifier, out io.Writer) error {
	s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		return failure(fmt.Errorf("restore: the restored evidence log: %w", err))
	}
	defer s.Close()
	_, err = proof.CheckAgainstSaved(ctx, s, v, cfg.Proof.CheckpointFile)
	if re, ok := errors.AsType[*proof.RollbackError](err); ok {
		fmt.Fprintf(out, "restore: the node signed a checkpoint of size %d after this backup was made (its tree head: %d): pec serve and pec proof audit refuse the restored log until you accept it, which is recorded as evidence:\n  pec proof accept-store --config %s --reason TEXT\n", re.SavedSize, re.StoreSize, cfg.path)
		return nil
	}
	if err != nil {
		return failure(fmt.Errorf("restore: the restored evidence log: %w", err))
	}
	fmt.Fprintf(out, "restore: the evidence log holds the node's saved checkpoint or extends it: pec serve seals what is unsealed at its start; check it with pec proof audit --config %s\n", cfg.path)
	return nil
}

// replacedWith reports whether the directory name goes with a store file
// of the backup: the node's is then replaced even when the backup's is
// empty (a write-ahead log of records the restored store does not hold,
// payloads of exchanges it does not know, must not stay).
func replacedWith(name string, m *backupManifest) bool {
	switch name {
	case nameProofWALDir:
		return m.has(nameProofDB)
	case nameExchangesDir:
		return m.has(nameExchangesDB)
	}
	return false
}

// serialsKeep is why the node's serial file stays: its mark is at or
// above the backup's ("" when the backup's is higher, or the node's is
// unreadable).
func serialsKeep(node, backup string) string {
	n, err := tsa.ReadSerialFile(node)
	if err != nil {
		return ""
	}
	b, err := tsa.ReadSerialFile(backup)
	if err != nil || b.Node != n.Node || b.Mark > n.Mark {
		return ""
	}
	return "the node's serial file: its mark is at or above the backup's (serial numbers never move back)"
}

// sameFile reports whether the regular files a and b hold the same bytes.
func sameFile(a, b string) bool {
	fa, errA := os.Lstat(a)
	fb, errB := os.Lstat(b)
	if errA != nil || errB != nil || !fa.Mode().IsRegular() || !fb.Mode().IsRegular() || fa.Size() != fb.Size() || fa.Size() > 64<<20 {
		return false
	}
	da, errA := os.ReadFile(a)
	db, errB := os.ReadFile(b)
	return errA == nil && errB == nil && bytes.Equal(da, db)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// place moves the staged file or directory src to dst: a rename in the
// data directory, a copy (synced, then renamed into place) to another
// file system.
func place(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	err := os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		tmp := dst + ".restoring"
		os.RemoveAll(tmp)
		if err = copyRestored(src, tmp); err == nil {
			err = os.Rename(tmp, dst)
		}
	}
	if err != nil {
		return err
	}
	return syncDirOf(dst)
}

func copyRestored(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		outF, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(outF, in); err != nil {
			outF.Close()
			return err
		}
		if err := outF.Sync(); err != nil {
			outF.Close()
			return err
		}
		return outF.Close()
	})
}

// lockStoppedNode takes the data directory's lock, as pec serve does
// (lockDataDir: one node per data directory, its pid in the lock), and
// checks that no process holds the stores' own locks either: a node that
// runs is named, and nothing is touched. unlock releases it.
func lockStoppedNode(cfg *File) (unlock func(), err error) {
	const advice = "stop it before restoring; nothing was restored"
	release, err := lockDataDir(cfg.DataDir)
	if ne, ok := errors.AsType[*NodeRunningError](err); ok {
		ne.Advice = advice
		return nil, failure(ne)
	}
	if err != nil {
		return nil, failure(err)
	}
	// The stores' locks: a node that did not take the data directory's
	// (an older pec, another data_dir naming the same files).
	held := ""
	for _, p := range []string{cfg.Proof.File, filepath.Join(cfg.DataDir, "exchanges.db")} {
		if p != "" && held == "" && storeInUse(p) {
			held = p
		}
	}
	locks := []string{cfg.TSA.SerialFile, cfg.TSA.JournalFile, cfg.Directory.File + ".lock"}
	if cfg.Proof.File != "" {
		locks = append(locks, filepath.Join(proof.WALDir(cfg.Proof.File), "LOCK"))
	}
	for _, p := range locks {
		if p != "" && held == "" && flockHeld(p) {
			held = p
		}
	}
	if held != "" {
		release()
		return nil, failure(&NodeRunningError{Dir: cfg.DataDir, Advice: fmt.Sprintf("%s is locked: %s", held, advice)})
	}
	return func() { release() }, nil
}

// flockHeld reports whether another process holds an exclusive flock on
// the file at path.
func flockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
