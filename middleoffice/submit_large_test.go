package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"pec/evidence"
	"pec/middleoffice"
)

// TestSubmitLargeDocuments: from 1 MiB, a document's envelope is hashed
// and stored by a goroutine of its own beside the encryption; around that
// size, accepted documents decrypt to what was sent and their envelope's
// digest is that of the stored payload, and refused ones leave nothing.
func TestSubmitLargeDocuments(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	content := func(n int) []byte {
		c := make([]byte, n)
		for i := range c {
			c[i] = byte(i*13 + i>>16)
		}
		return c
	}
	for _, n := range []int{1<<20 - 1, 1 << 20, 1<<20 + 1, 3<<20 + 12345} {
		doc := newDocument("big.bin", content(n))
		sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if _, err := e.x.Work(ctx); err != nil {
			t.Fatal(err)
		}
		d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
		if err != nil {
			t.Fatal(err)
		}
		plain, _, err := decryptAll(d.Documents[0].Envelope, b)
		if err != nil || !bytes.Equal(plain, doc.content) {
			t.Errorf("%d bytes: decrypted %d bytes, %v", n, len(plain), err)
		}
		env, _ := io.ReadAll(io.NewSectionReader(d.Documents[0].Envelope, 0, d.Documents[0].Envelope.Size()))
		if got := sha256Hex(env); got != d.Documents[0].EnvelopeSHA256 {
			t.Errorf("%d bytes: the envelope's digest %s, the stored payload's %s", n, d.Documents[0].EnvelopeSHA256, got)
		}
		d.Close()
	}

	big := newDocument("big.bin", content(2<<20))
	tampered := big
	tampered.content = bytes.Clone(big.content)
	tampered.content[1<<20+5] ^= 1
	for _, tc := range []struct {
		name   string
		docs   middleoffice.DocumentSource
		reason middleoffice.Reason
	}{
		{"digest mismatch", sources(tampered), middleoffice.ReasonDigestMismatch},
		{"shorter than declared", sources(newDocument("big.bin", big.content[:3<<19])), middleoffice.ReasonSizeMismatch},
		{"longer than declared", sources(newDocument("big.bin", append(bytes.Clone(big.content), 1))), middleoffice.ReasonSizeMismatch},
		{"the sender's reader fails half way", middleoffice.DocumentSourceFunc(func(context.Context, int, middleoffice.Document) (io.Reader, error) {
			return io.MultiReader(bytes.NewReader(big.content[:3<<19]), errReader{}), nil
		}), middleoffice.ReasonIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.x.Submit(ctx, a.principal, manifest("b", big), tc.docs)
			re, ok := errors.AsType[*middleoffice.RejectedError](err)
			if !ok || re.Reason != tc.reason {
				t.Fatalf("Submit: %v; want a refusal for %s", err, tc.reason)
			}
			if _, err := os.Stat(filepath.Join(e.dir, "payloads", re.Exchange)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused exchange left payloads: %v", err)
			}
		})
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// diskFullStore is the real store whose payload files fill the disk after
// limit bytes: a fault the real store cannot be made to have.
type diskFullStore struct {
	middleoffice.ExchangeStore
	limit int64
}

var errDiskFull = errors.New("injected: no space left on device")

func (s *diskFullStore) CreatePayload(ctx context.Context, exchange, name string) (middleoffice.PayloadWriter, error) {
	w, err := s.ExchangeStore.CreatePayload(ctx, exchange, name)
	if err != nil {
		return nil, err
	}
	return &diskFullWriter{PayloadWriter: w, left: s.limit}, nil
}

type diskFullWriter struct {
	middleoffice.PayloadWriter
	left int64
}

func (w *diskFullWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		return 0, errDiskFull
	}
	w.left -= int64(len(p))
	return w.PayloadWriter.Write(p)
}

// TestSubmitStoreFails: when the store fails while a document streams in
// (the disk full half way), the submission fails with the node's error —
// not a refusal of the sender's document for its size — and leaves no
// payload, whether the document is encrypted beside its reading (from
// 1 MiB) or not.
func TestSubmitStoreFails(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	e.wrap = func(s middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
		return &diskFullStore{ExchangeStore: s, limit: 300 << 10}, ev
	}
	e.restart()
	a := e.partners["a"]
	for _, n := range []int{600 << 10, 3 << 20} {
		content := make([]byte, n)
		for i := range content {
			content[i] = byte(i * 31)
		}
		doc := newDocument("big.bin", content)
		sub, err := e.x.Submit(t.Context(), a.principal, manifest("b", doc), sources(doc))
		if re, refused := errors.AsType[*middleoffice.RejectedError](err); refused || !errors.Is(err, errDiskFull) {
			t.Errorf("%d bytes: Submit = %+v, %v (refused: %+v); want the store's error", n, sub, err, re)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.dir, "payloads"))
	if len(entries) > 0 {
		t.Errorf("payloads left: %d directories", len(entries))
	}
}
