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

// TestEnvelopeWriteInPlace: an envelope whose content is given to
// WriteInPlace — whole chunks, pieces of whole blocks, a piece that is
// not (written as Write does), the content's odd end — opens to the
// content (its GCM tag checked), has the length announced, and the pieces
// of whole blocks hold their ciphertext after; with CBC, every piece is
// left as it was.
func TestEnvelopeWriteInPlace(t *testing.T) {
	p := newParty(t, "p256", 0)
	rs := []cms.Recipient{p.recipient()}
	const chunk = 64 << 10
	for _, tc := range []struct {
		name   string
		pieces []int
	}{
		{"whole chunks", []int{chunk, chunk, chunk}},
		{"whole chunks and an odd end", []int{chunk, chunk, 1001}},
		{"blocks of every size", []int{16, 32, 4096, chunk - 16, 48, 3 * chunk}},
		{"a piece out of the blocks, then whole ones", []int{chunk, 7, chunk, chunk}},
		{"an empty piece", []int{0, chunk, 0, 33}},
		{"CBC", []int{chunk, chunk, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := cms.AES256GCM
			if tc.name == "CBC" {
				ce = cms.AES256CBC
			}
			size := 0
			for _, n := range tc.pieces {
				size += n
			}
			pt := randomBytes(size)
			var out bytes.Buffer
			w, err := cms.NewEnvelopeWriter(&out, int64(size), rs, &cms.EnvelopeOptions{Content: ce})
			if err != nil {
				t.Fatal(err)
			}
			changed := 0
			rest := pt
			for _, n := range tc.pieces {
				piece := bytes.Clone(rest[:n])
				if k, err := w.WriteInPlace(piece); k != n || err != nil {
					t.Fatalf("WriteInPlace(%d bytes) = %d, %v", n, k, err)
				}
				if n > 0 && !bytes.Equal(piece, rest[:n]) {
					changed++
				}
				rest = rest[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if int64(out.Len()) != w.Len() {
				t.Errorf("%d bytes written, Len %d", out.Len(), w.Len())
			}
			if ce == cms.AES256GCM && changed == 0 {
				t.Error("no piece was encrypted in place")
			}
			if ce == cms.AES256CBC && changed != 0 {
				t.Errorf("%d pieces changed by a CBC writer", changed)
			}
			plain, _, err := cms.Decrypt(out.Bytes(), p.rkey(), nil)
			if err != nil || !bytes.Equal(plain, pt) {
				t.Errorf("decrypted %d bytes, %v; want %d", len(plain), err, size)
			}
		})
	}
	t.Run("more than the declared size", func(t *testing.T) {
		w, _ := cms.NewEnvelopeWriter(io.Discard, chunk, rs, nil)
		if _, err := w.WriteInPlace(make([]byte, chunk+16)); err == nil {
			t.Error("no error")
		}
	})
}
