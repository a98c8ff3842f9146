package cms_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"pec/internal/cms"
)

// TestEnvelopeWriterSizes: the writer's buffer is as small as the content
// when the content is smaller than a chunk; around the block and chunk
// boundaries, written in small pieces, at once or read from a reader, the
// envelope opens to the content, and one byte too many or too few is
// refused.
func TestEnvelopeWriterSizes(t *testing.T) {
	p := newParty(t, "p256", 0)
	rs := []cms.Recipient{p.recipient()}
	const chunk = 64 << 10
	for _, ce := range []cms.ContentEncryption{cms.AES256GCM, cms.AES256CBC} {
		for _, size := range []int{0, 1, 15, 16, 17, 10 << 10, chunk - 1, chunk, chunk + 1, 2*chunk + 16} {
			pt := randomBytes(size)
			for _, how := range []string{"pieces", "whole", "ReadFrom"} {
				t.Run(fmt.Sprintf("%v/%d/%s", ce, size, how), func(t *testing.T) {
					var out bytes.Buffer
					w, err := cms.NewEnvelopeWriter(&out, int64(size), rs, &cms.EnvelopeOptions{Content: ce})
					if err != nil {
						t.Fatal(err)
					}
					switch how {
					case "pieces":
						for rest := pt; len(rest) > 0; {
							n := min(7, len(rest))
							if _, err := w.Write(rest[:n]); err != nil {
								t.Fatal(err)
							}
							rest = rest[n:]
						}
					case "whole":
						if _, err := w.Write(pt); err != nil {
							t.Fatal(err)
						}
					case "ReadFrom":
						if _, err := io.Copy(w, bytes.NewReader(pt)); err != nil {
							t.Fatal(err)
						}
					}
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
					if int64(out.Len()) != w.Len() {
						t.Errorf("%d bytes written, Len %d", out.Len(), w.Len())
					}
					got, _, err := cms.Decrypt(out.Bytes(), p.rkey(), nil)
					if err != nil || !bytes.Equal(got, pt) {
						t.Errorf("decrypted %d bytes, %v; want %d", len(got), err, size)
					}
				})
			}
			t.Run(fmt.Sprintf("%v/%d/one byte too many", ce, size), func(t *testing.T) {
				w, _ := cms.NewEnvelopeWriter(io.Discard, int64(size), rs, &cms.EnvelopeOptions{Content: ce})
				_, werr := w.Write(append(bytes.Clone(pt), 1))
				_, cerr := io.Copy(w, bytes.NewReader([]byte{1}))
				if werr == nil || cerr == nil {
					t.Errorf("Write: %v, then ReadFrom: %v; want errors", werr, cerr)
				}
			})
			if size > 0 {
				t.Run(fmt.Sprintf("%v/%d/one byte too few", ce, size), func(t *testing.T) {
					w, _ := cms.NewEnvelopeWriter(io.Discard, int64(size), rs, &cms.EnvelopeOptions{Content: ce})
					w.Write(pt[:size-1])
					if err := w.Close(); err == nil {
						t.Error("Close after one byte too few: no error")
					}
				})
			}
		}
	}
}
