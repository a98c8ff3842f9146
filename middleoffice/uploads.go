package middleoffice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"pec/evidence"
	"pec/internal/atomicfile"
)

// Resumable uploads: a large document is uploaded beforehand, in as many
// requests as the connection needs, each appending at the offset the
// last one reached, and the submission's manifest then names the upload
// instead of carrying the document as a part. An upload belongs to the
// partner that created it: nobody else sees it, appends to it or submits
// it. It is kept in the node's data directory (uploads/ID.part, mode
// 0600, with ID.json: owner, declared size and SHA-256, offset, expiry)
// until it is submitted, deleted, or expires (Uploads.Expiry after its
// creation); a submission reads it like a part — hashed, checked and
// encrypted for the recipient as it streams — and removes it once the
// exchange is accepted. Uploads are local to a node: with several nodes,
// a client resumes on the node that holds its upload.
//
// The offset is durable: each append is fsynced before it is answered,
// so that after a crash the client resumes where the node says.

// Uploads keeps the resumable uploads of a node. It is safe for
// concurrent use.
type Uploads struct {
	dir    string
	expiry time.Duration
	now    func() time.Time
	mu     sync.Mutex
	busy   map[string]bool // uploads an append or a submission is using
}

// DefaultUploadExpiry is how long an upload waits for its submission.
const DefaultUploadExpiry = 24 * time.Hour

// Errors of the uploads.
var (
	ErrUploadNotFound = errors.New("middleoffice: no such upload for this partner")
	// ErrUploadBusy: another request appends to it, or submits it, now.
	ErrUploadBusy = errors.New("middleoffice: the upload is in use by another request")
	// ErrUploadIncomplete: its submission names an upload not complete.
	ErrUploadIncomplete = errors.New("middleoffice: the upload is not complete")
)

// OffsetError is an append at another offset than the upload's: the
// client resumes at Offset.
type OffsetError struct{ Offset, Got int64 }

func (e *OffsetError) Error() string {
	return fmt.Sprintf("middleoffice: the upload is at offset %d, not %d: resume at %d", e.Offset, e.Got, e.Offset)
}

// UploadError is an upload the node refuses: its text is safe to show.
type UploadError struct{ Reason string }

func (e *UploadError) Error() string { return "middleoffice: upload refused: " + e.Reason }

// Upload is the state of one upload.
type Upload struct {
	ID        string    `json:"id"`
	Owner     string    `json:"owner"` // the partner id
	Size      int64     `json:"size"`  // declared
	SHA256    string    `json:"sha256"`
	Offset    int64     `json:"offset"` // bytes received, durable
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Complete reports whether every declared byte is in.
func (u *Upload) Complete() bool { return u.Offset == u.Size }

var uploadIDSyntax = regexp.MustCompile(`^[0-9a-f]{32}$`)

// OpenUploads keeps uploads in dir (created), expiring expiry after their
// creation (0: DefaultUploadExpiry). now nil: time.Now.
func OpenUploads(dir string, expiry time.Duration, now func() time.Time) (*Uploads, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("middleoffice: uploads: %w", err)
	}
	if expiry <= 0 {
		expiry = DefaultUploadExpiry
	}
	if now == nil {
		now = time.Now
	}
	return &Uploads{dir: dir, expiry: expiry, now: now, busy: map[string]bool{}}, nil
}

// Create starts an upload of size bytes whose SHA-256 is sum, for owner.
func (u *Uploads) Create(ctx context.Context, owner *Principal, size int64, sum string, maxSize int64) (*Upload, error) {
	if owner == nil || owner.Partner == nil || owner.Disabled() || !(owner.Has(RolePartner) || owner.Has(RoleAgent)) {
		who := ""
		if owner != nil {
			who = owner.ID()
		}
		return nil, &ForbiddenError{Principal: who, Reason: "uploads are for partners that submit dossiers"}
	}
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
		return nil, &UploadError{Reason: "sha256: not 64 hexadecimal digits"}
	}
	if size < 0 || size > maxSize {
		return nil, &UploadError{Reason: fmt.Sprintf("size: %d is not between 0 and %d bytes", size, maxSize)}
	}
	u.sweep()
	now := u.now().UTC()
	up := &Upload{ID: evidence.NewID(now), Owner: owner.ID(), Size: size, SHA256: lower(sum), CreatedAt: now, ExpiresAt: now.Add(u.expiry)}
	f, err := os.OpenFile(u.data(up.ID), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := u.save(up); err != nil {
		os.Remove(u.data(up.ID))
		return nil, err
	}
	return up, nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Status returns owner's upload id.
func (u *Uploads) Status(ctx context.Context, owner *Principal, id string) (*Upload, error) {
	return u.load(owner, id)
}

// Append writes r's bytes at offset, which must be the upload's (else an
// *OffsetError naming it), up to its declared size; what is received is
// durable before Append returns, even when r fails midway (the client
// resumes at the returned upload's Offset).
func (u *Uploads) Append(ctx context.Context, owner *Principal, id string, offset int64, r io.Reader) (*Upload, error) {
	up, err := u.load(owner, id)
	if err != nil {
		return nil, err
	}
	if !u.acquire(id) {
		return nil, ErrUploadBusy
	}
	defer u.release(id)
	if up, err = u.load(owner, id); err != nil { // as it is now that we hold it
		return nil, err
	}
	if offset != up.Offset {
		return up, &OffsetError{Offset: up.Offset, Got: offset}
	}
	f, err := os.OpenFile(u.data(id), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	defer f.Close()
	// What a crash left past the durable offset is overwritten.
	if err := f.Truncate(up.Offset); err != nil {
		return nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	if _, err := f.Seek(up.Offset, io.SeekStart); err != nil {
		return nil, err
	}
	left := up.Size - up.Offset
	n, copyErr := io.Copy(f, io.LimitReader(r, left))
	var extra [1]byte
	more := false
	if copyErr == nil && n == left {
		if k, _ := r.Read(extra[:]); k > 0 {
			more = true
		}
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	up.Offset += n
	if err := u.save(up); err != nil {
		return nil, err
	}
	switch {
	case more:
		return up, &UploadError{Reason: fmt.Sprintf("more than the declared %d bytes", up.Size)}
	case copyErr != nil:
		return up, fmt.Errorf("middleoffice: upload: the body failed at offset %d: %w", up.Offset, copyErr)
	}
	return up, nil
}

// Delete removes owner's upload id.
func (u *Uploads) Delete(ctx context.Context, owner *Principal, id string) error {
	if _, err := u.load(owner, id); err != nil {
		return err
	}
	if !u.acquire(id) {
		return ErrUploadBusy
	}
	defer u.release(id)
	return u.remove(id)
}

// Take opens owner's complete upload id for a submission: its content,
// checked against its declared size and SHA-256 by the submission as it
// reads it. done releases it: with accepted, the upload is removed (its
// content is now the exchange's), else it stays for another submission.
func (u *Uploads) Take(ctx context.Context, owner *Principal, id string) (up *Upload, content io.ReadCloser, done func(accepted bool), err error) {
	if up, err = u.load(owner, id); err != nil {
		return nil, nil, nil, err
	}
	if !up.Complete() {
		return up, nil, nil, ErrUploadIncomplete
	}
	if !u.acquire(id) {
		return nil, nil, nil, ErrUploadBusy
	}
	f, err := os.Open(u.data(id))
	if err != nil {
		u.release(id)
		return nil, nil, nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	return up, f, func(accepted bool) {
		f.Close()
		if accepted {
			_ = u.remove(id)
		}
		u.release(id)
	}, nil
}

func (u *Uploads) acquire(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.busy[id] {
		return false
	}
	u.busy[id] = true
	return true
}

func (u *Uploads) release(id string) {
	u.mu.Lock()
	delete(u.busy, id)
	u.mu.Unlock()
}

func (u *Uploads) data(id string) string { return filepath.Join(u.dir, id+".part") }
func (u *Uploads) meta(id string) string { return filepath.Join(u.dir, id+".json") }

func (u *Uploads) save(up *Upload) error {
	data, err := json.Marshal(up)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(u.meta(up.ID), data, 0o600)
}

// load reads upload id of owner: anyone else's, an expired one and a
// malformed id are ErrUploadNotFound alike.
func (u *Uploads) load(owner *Principal, id string) (*Upload, error) {
	if owner == nil || owner.Partner == nil || owner.Disabled() || !uploadIDSyntax.MatchString(id) {
		return nil, ErrUploadNotFound
	}
	data, err := os.ReadFile(u.meta(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrUploadNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("middleoffice: upload: %w", err)
	}
	var up Upload
	if err := json.Unmarshal(data, &up); err != nil || up.ID != id {
		return nil, fmt.Errorf("middleoffice: upload %s: its state file is damaged", id)
	}
	if up.Owner != owner.ID() || !u.now().Before(up.ExpiresAt) {
		return nil, ErrUploadNotFound
	}
	return &up, nil
}

func (u *Uploads) remove(id string) error {
	err := os.Remove(u.meta(id))
	if rerr := os.Remove(u.data(id)); err == nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// sweep removes the expired uploads nobody uses.
func (u *Uploads) sweep() {
	entries, err := os.ReadDir(u.dir)
	if err != nil {
		return
	}
	now := u.now()
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".json" {
			continue
		}
		id := name[:len(name)-len(".json")]
		data, err := os.ReadFile(filepath.Join(u.dir, name))
		var up Upload
		if err != nil || json.Unmarshal(data, &up) != nil || now.Before(up.ExpiresAt) {
			continue
		}
		if u.acquire(id) {
			_ = u.remove(id)
			u.release(id)
		}
	}
}
