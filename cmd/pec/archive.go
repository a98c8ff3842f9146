package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// The backup file of `pec backup`: one tar archive (POSIX, PAX headers),
// whose entries are, in this order:
//
//	FORMAT           "pec-backup 1\n": a tar of something else is refused at once
//	FILE...          the node's files, under the names of backupNames
//	MANIFEST.json    backupManifest: every FILE's name, size and SHA-256, and what the backup holds
//	MANIFEST.sha256  the SHA-256 of MANIFEST.json in hex, and a newline
//
// Reading checks each file against the manifest and the manifest against
// its checksum: a backup cut short (no manifest), damaged (a digest that
// differs), or with a file the manifest does not list (or the reverse) is
// a *BackupError. The checksum finds damage, not forgery: the manifest's
// SHA-256 is also in the admin.action record of the backup, in the
// evidence log, for whoever needs to tell that a backup file is the one
// the node made.

const (
	backupFormat       = "pec-backup 1\n"
	backupVersion      = 1
	entryFormat        = "FORMAT"
	entryManifest      = "MANIFEST.json"
	entryManifestSum   = "MANIFEST.sha256"
	maxManifestBytes   = 256 << 20
	maxBackupEntries   = 1 << 22
	maxBackupEntrySize = 1 << 40
)

// The names of a backup's files.
const (
	nameProofDB      = "proof/proof.db"
	nameProofWALDir  = "proof/proof.db.wal/"
	nameCheckpoint   = "proof/checkpoint"
	nameSerials      = "tsa/serials"
	nameJournal      = "tsa/journal.jsonl"
	nameDirectory    = "directory/directory.json"
	nameCAState      = "devca/ca-state.json"
	nameExchangesDB  = "exchange/exchanges.db"
	nameExchangesDir = "exchange/payloads/"
)

// backupNames are the names a backup's files may have: nothing else is
// written by a restore (no absolute path, no "..").
var backupNames = regexp.MustCompile(`^(proof/proof\.db|proof/proof\.db\.wal/[0-9a-f]{16}\.wal|proof/checkpoint|tsa/serials|tsa/journal\.jsonl|directory/directory\.json|devca/ca-state\.json|exchange/exchanges\.db|exchange/payloads/[a-z0-9][a-z0-9-]{0,63}/[a-z0-9][a-z0-9.-]{0,63})$`)

// ErrBadBackup is wrapped by every *BackupError.
var ErrBadBackup = errors.New("not a complete, intact PEC backup")

// BackupError says why a backup file is refused.
type BackupError struct {
	Entry  string // the entry at fault; "" the whole file
	Reason string
}

func (e *BackupError) Error() string {
	if e.Entry == "" {
		return "backup: " + e.Reason
	}
	return fmt.Sprintf("backup: %s: %s", e.Entry, e.Reason)
}

func (e *BackupError) Unwrap() error { return ErrBadBackup }

func badBackup(entry, format string, a ...any) error {
	return &BackupError{Entry: entry, Reason: fmt.Sprintf(format, a...)}
}

// backupManifest is MANIFEST.json.
type backupManifest struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	// Scope is "node" (every store: pec backup) or "evidence" (the
	// evidence log alone: a running node's proof list, export, audit).
	Scope string `json:"scope"`
	// Proof is the evidence log's state at the snapshot; nil: not in the
	// backup (no proof section, or a PostgreSQL log).
	Proof *manifestProof `json:"proof,omitempty"`
	// Exchanges is how many exchanges exchange/exchanges.db holds.
	Exchanges int `json:"exchanges,omitempty"`
	// Missing are payload files that the snapshot's exchanges named and
	// that were removed before they were copied (expired or shredded
	// meanwhile).
	Missing []string `json:"missing,omitempty"`
	// Left are the stores the backup does not hold, and why (a
	// PostgreSQL database, which is backed up by its own means).
	Left  []string       `json:"left,omitempty"`
	Files []manifestFile `json:"files"`
}

type manifestProof struct {
	Origin   string `json:"origin"`
	Size     uint64 `json:"size"` // of the newest signed tree head
	Root     string `json:"root,omitempty"`
	Records  uint64 `json:"records"`  // integrated (a pending tree's included)
	Unsealed int    `json:"unsealed"` // durable, not yet integrated
}

type manifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// backupWriter writes a backup file.
type backupWriter struct {
	tw    *tar.Writer
	now   time.Time
	files []manifestFile
	seen  map[string]bool
	bytes int64
}

func newBackupWriter(w io.Writer, now time.Time) (*backupWriter, error) {
	b := &backupWriter{tw: tar.NewWriter(w), now: now.UTC(), seen: map[string]bool{}}
	if err := b.entry(entryFormat, int64(len(backupFormat)), func(w io.Writer) error {
		_, err := io.WriteString(w, backupFormat)
		return err
	}); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *backupWriter) entry(name string, size int64, write func(io.Writer) error) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: b.now, Format: tar.FormatPAX}
	if err := b.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	if err := write(b.tw); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	return nil
}

// add writes a file of exactly size bytes, which write produces.
func (b *backupWriter) add(name string, size int64, write func(io.Writer) error) error {
	if !backupNames.MatchString(name) || b.seen[name] {
		return fmt.Errorf("backup: %q: not a backup file name, or twice", name)
	}
	b.seen[name] = true
	h := sha256.New()
	var cw *countWriter
	err := b.entry(name, size, func(w io.Writer) error {
		cw = &countWriter{w: io.MultiWriter(h, w)}
		return write(cw)
	})
	if err != nil {
		return err
	}
	if cw.n != size {
		return fmt.Errorf("backup: %s: wrote %d bytes of %d", name, cw.n, size)
	}
	b.files = append(b.files, manifestFile{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	b.bytes += size
	return nil
}

func (b *backupWriter) addBytes(name string, data []byte) error {
	return b.add(name, int64(len(data)), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// finish writes the manifest and its checksum, and returns the checksum.
func (b *backupWriter) finish(m *backupManifest) ([]byte, error) {
	m.Version, m.Created, m.Files = backupVersion, b.now, b.files
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	data = append(data, '\n')
	sum := sha256.Sum256(data)
	if err := b.entry(entryManifest, int64(len(data)), func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return nil, err
	}
	line := hex.EncodeToString(sum[:]) + "\n"
	if err := b.entry(entryManifestSum, int64(len(line)), func(w io.Writer) error { _, err := io.WriteString(w, line); return err }); err != nil {
		return nil, err
	}
	if err := b.tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return sum[:], nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readBackup reads and checks a backup file from r. With dir set, it
// writes each file under dir (by its name, fsynced when sync is set) as it
// reads it; the caller removes dir when the backup is refused. It returns
// the manifest and its checksum.
func readBackup(r io.Reader, dir string, sync bool) (*backupManifest, []byte, error) {
	tr := tar.NewReader(r)
	type got struct {
		size int64
		sum  string
	}
	files := map[string]got{}
	var order []string
	var manifest []byte
	var manifestSum string
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if n == 0 {
				return nil, nil, badBackup("", "not a PEC backup (not a tar archive: %v)", err)
			}
			return nil, nil, badBackup("", "cut short or damaged after %d entries (%v)", n, err)
		}
		name := hdr.Name
		if n >= maxBackupEntries {
			return nil, nil, badBackup("", "more than %d entries", maxBackupEntries)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size < 0 || hdr.Size > maxBackupEntrySize {
			return nil, nil, badBackup(printable(name), "not a regular file of a backup")
		}
		switch {
		case n == 0:
			if name != entryFormat || hdr.Size != int64(len(backupFormat)) {
				return nil, nil, badBackup("", "not a PEC backup (it does not start with its FORMAT entry)")
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, badBackup(entryFormat, "%v", err)
			}
			if string(data) != backupFormat {
				return nil, nil, badBackup("", "not a PEC backup of a format this pec reads (FORMAT %q)", printable(string(data)))
			}
			continue
		case manifestSum != "":
			return nil, nil, badBackup(printable(name), "an entry after the manifest's checksum")
		case name == entryManifest:
			if manifest != nil || hdr.Size > maxManifestBytes {
				return nil, nil, badBackup(entryManifest, "twice, or over %d bytes", maxManifestBytes)
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				return nil, nil, badBackup(entryManifest, "cut short (%v)", err)
			}
			continue
		case name == entryManifestSum:
			if manifest == nil || hdr.Size > 128 {
				return nil, nil, badBackup(entryManifestSum, "not after the manifest, or too long")
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, badBackup(entryManifestSum, "cut short (%v)", err)
			}
			manifestSum = string(data)
			continue
		case manifest != nil:
			return nil, nil, badBackup(printable(name), "a file after the manifest")
		case !backupNames.MatchString(name):
			return nil, nil, badBackup(printable(name), "not the name of a file a backup holds")
		}
		if _, dup := files[name]; dup {
			return nil, nil, badBackup(name, "twice in the backup")
		}
		h := sha256.New()
		size, err := readEntry(tr, h, dir, name, sync)
		if err != nil {
			if _, ok := errors.AsType[*BackupError](err); ok {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("backup: %s: %w", name, err)
		}
		files[name] = got{size, hex.EncodeToString(h.Sum(nil))}
		order = append(order, name)
	}
	switch {
	case manifest == nil:
		return nil, nil, badBackup("", "cut short: no manifest (an interrupted backup?)")
	case manifestSum == "":
		return nil, nil, badBackup("", "cut short: no checksum of the manifest")
	}
	sum := sha256.Sum256(manifest)
	if manifestSum != hex.EncodeToString(sum[:])+"\n" {
		return nil, nil, badBackup(entryManifest, "its SHA-256 is %x, MANIFEST.sha256 says %s", sum, printable(string(bytes.TrimSpace([]byte(manifestSum)))))
	}
	var m backupManifest
	dec := json.NewDecoder(bytes.NewReader(manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, nil, badBackup(entryManifest, "unreadable: %v", err)
	}
	if m.Version != backupVersion {
		return nil, nil, badBackup(entryManifest, "version %d; this pec reads version %d", m.Version, backupVersion)
	}
	if m.Scope != "node" && m.Scope != "evidence" {
		return nil, nil, badBackup(entryManifest, "scope %q", printable(m.Scope))
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		g, ok := files[f.Name]
		switch {
		case listed[f.Name]:
			return nil, nil, badBackup(printable(f.Name), "twice in the manifest")
		case !ok:
			return nil, nil, badBackup(printable(f.Name), "in the manifest, missing from the backup")
		case g.size != f.Size:
			return nil, nil, badBackup(f.Name, "%d bytes, the manifest says %d", g.size, f.Size)
		case g.sum != f.SHA256:
			return nil, nil, badBackup(f.Name, "its SHA-256 is %s, the manifest says %s (the file is damaged)", g.sum, printable(f.SHA256))
		}
		listed[f.Name] = true
	}
	for _, name := range order {
		if !listed[name] {
			return nil, nil, badBackup(name, "in the backup, not in the manifest")
		}
	}
	return &m, sum[:], nil
}

// readEntry copies the current entry into h and, with dir, into its file.
func readEntry(r io.Reader, h hash.Hash, dir, name string, sync bool) (int64, error) {
	src := &errReader{r: r}
	var dst io.Writer = h
	var f *os.File
	if dir != "" {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return 0, err
		}
		var err error
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return 0, err
		}
		defer f.Close()
		dst = io.MultiWriter(f, h)
	}
	n, err := io.Copy(dst, src)
	if src.err != nil {
		return n, badBackup(name, "cut short after %d bytes (%v)", n, src.err)
	}
	if err != nil {
		return n, err
	}
	if f != nil && sync {
		err = f.Sync()
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return n, err
}

// errReader keeps the error of its reader (io.EOF aside).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

// manifestNames are the names of the manifest's files, sorted.
func (m *backupManifest) names() []string {
	var out []string
	for _, f := range m.Files {
		out = append(out, f.Name)
	}
	slices.Sort(out)
	return out
}

func (m *backupManifest) has(name string) bool {
	return slices.ContainsFunc(m.Files, func(f manifestFile) bool { return f.Name == name })
}
