package middleoffice

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func uploadPrincipal(id string) *Principal {
	return &Principal{Partner: &Partner{ID: id, Roles: []Role{RolePartner}}}
}

// TestUploads: an upload takes its bytes in several appends, each at the
// offset the last reached; a wrong offset names the right one; a body that
// fails midway keeps what came (durable) for the next append; more than
// declared is refused; nobody but its owner sees it; Take gives the whole
// content once complete and removes the upload when the exchange is
// accepted; an expired upload is gone.
func TestUploads(t *testing.T) {
	ctx := t.Context()
	now := time.Now()
	clock := func() time.Time { return now }
	u, err := OpenUploads(t.TempDir(), time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	a, b := uploadPrincipal("a"), uploadPrincipal("b")
	content := bytes.Repeat([]byte("pièce jointe 0123456789 "), 4000)
	sum := sha256.Sum256(content)
	hexSum := hex.EncodeToString(sum[:])

	if _, err := u.Create(ctx, a, -1, hexSum, 1<<20); err == nil {
		t.Error("a negative size is taken")
	}
	if _, err := u.Create(ctx, a, 2<<20, hexSum, 1<<20); err == nil {
		t.Error("a size over the limit is taken")
	}
	if _, err := u.Create(ctx, a, 10, "abc", 1<<20); err == nil {
		t.Error("a malformed digest is taken")
	}
	if _, err := u.Create(ctx, &Principal{}, 10, hexSum, 1<<20); err == nil {
		t.Error("a certificate no partner claims starts an upload")
	}
	up, err := u.Create(ctx, a, int64(len(content)), strings.ToUpper(hexSum), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if up.Offset != 0 || up.SHA256 != hexSum {
		t.Fatalf("created %+v", up)
	}
	// The first third; then a body that fails after another third.
	third := int64(len(content) / 3)
	if up, err = u.Append(ctx, a, up.ID, 0, bytes.NewReader(content[:third])); err != nil || up.Offset != third {
		t.Fatalf("append: %+v, %v", up, err)
	}
	broken := io.MultiReader(bytes.NewReader(content[third:2*third]), iotest.ErrReader(errors.New("connection reset")))
	up, err = u.Append(ctx, a, up.ID, third, broken)
	if err == nil || up == nil || up.Offset != 2*third {
		t.Fatalf("a failing body: %+v, %v", up, err)
	}
	// A wrong offset: told where to resume.
	var oe *OffsetError
	if _, err := u.Append(ctx, a, up.ID, third, bytes.NewReader(content[third:])); !errors.As(err, &oe) || oe.Offset != 2*third {
		t.Fatalf("a wrong offset: %v", err)
	}
	// Another partner sees nothing of it.
	for _, f := range []func() error{
		func() error { _, err := u.Status(ctx, b, up.ID); return err },
		func() error {
			_, err := u.Append(ctx, b, up.ID, 2*third, bytes.NewReader(content[2*third:]))
			return err
		},
		func() error { _, _, _, err := u.Take(ctx, b, up.ID); return err },
		func() error { return u.Delete(ctx, b, up.ID) },
	} {
		if err := f(); !errors.Is(err, ErrUploadNotFound) {
			t.Errorf("b: %v", err)
		}
	}
	if _, _, _, err := u.Take(ctx, a, up.ID); !errors.Is(err, ErrUploadIncomplete) {
		t.Errorf("Take of an incomplete upload: %v", err)
	}
	// More than declared: what was declared is kept, the excess refused.
	up, err = u.Append(ctx, a, up.ID, 2*third, bytes.NewReader(append(content[2*third:], 'x')))
	var ue *UploadError
	if !errors.As(err, &ue) || !up.Complete() {
		t.Fatalf("more than declared: %+v, %v", up, err)
	}
	// Taken by a submission that is refused: it stays; accepted: gone.
	_, r, done, err := u.Take(ctx, a, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := u.Take(ctx, a, up.ID); !errors.Is(err, ErrUploadBusy) {
		t.Errorf("a second Take meanwhile: %v", err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, content) {
		t.Fatalf("the upload holds %d bytes, want %d", len(got), len(content))
	}
	done(false)
	_, r, done, err = u.Take(ctx, a, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	done(true)
	if _, err := u.Status(ctx, a, up.ID); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("an upload whose exchange was accepted: %v", err)
	}

	// Expiry: gone for its owner, and its files swept at the next Create.
	old, err := u.Create(ctx, a, 3, hex.EncodeToString(sha256.New().Sum(nil)), 10)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := u.Status(ctx, a, old.ID); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("an expired upload: %v", err)
	}
	if _, err := u.Create(ctx, a, 1, hexSum, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(u.data(old.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the expired upload's data is still there: %v", err)
	}
	// A malformed id is no upload.
	if _, err := u.Status(ctx, a, "../../etc/passwd"); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("a path as id: %v", err)
	}
}
