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
