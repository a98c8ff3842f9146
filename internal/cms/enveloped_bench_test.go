package cms_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"pec/internal/cms"
)

// zeros is an io.Reader of n zero bytes that allocates nothing.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), z.n))
	clear(p[:k])
	z.n -= int64(k)
	return k, nil
}

// counting is an io.Reader of the bytes 0, 1, 2, ...: a deterministic
// Rand.
type counting struct{ c byte }

func (r *counting) Read(p []byte) (int, error) {
	for i := range p {
		r.c++
		p[i] = r.c
	}
	return len(p), nil
}

// heldWriter keeps the first head bytes and the last tail bytes written,
// and counts the rest.
type heldWriter struct {
	head, tail []byte
	headLen    int
	n          int64
}

func (w *heldWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	if k := min(w.headLen-len(w.head), len(p)); k > 0 {
		w.head = append(w.head, p[:k]...)
	}
	w.tail = append(w.tail, p...)
	if len(w.tail) > 64 {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-64:]...)
	}
	return len(p), nil
}

// zeroChecker counts what is written and checks it is zeros.
type zeroChecker struct {
	n       int64
	nonzero bool
}

var zeroChunk = make([]byte, 64<<10)

func (w *zeroChecker) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	for len(p) > 0 {
		k := min(len(p), len(zeroChunk))
		if !bytes.Equal(p[:k], zeroChunk[:k]) {
			w.nonzero = true
		}
		p = p[k:]
	}
	return len(p), nil
}

// genEnvelope is an io.ReaderAt of an AES-GCM envelope of zeros whose
// ciphertext is computed where it is read: a 1 GiB envelope with no 1 GiB
// anywhere. Sequential reads continue one CTR keystream.
type genEnvelope struct {
	head, tail []byte
	size       int64
	block      cipher.Block
	nonce      []byte
	ctr        cipher.Stream
	pos        int64 // of ctr, in the ciphertext
}

func (g *genEnvelope) ReadAt(p []byte, off int64) (int, error) {
	total := int64(len(g.head)) + g.size + int64(len(g.tail))
	if off >= total {
		return 0, io.EOF
	}
	n := 0
	for len(p) > 0 && off < total {
		var k int
		switch {
		case off < int64(len(g.head)):
			k = copy(p, g.head[off:])
		case off < int64(len(g.head))+g.size:
			c := off - int64(len(g.head))
			k = int(min(int64(len(p)), g.size-c))
			if g.ctr == nil || g.pos != c {
				var iv [16]byte
				copy(iv[:], g.nonce)
				binary.BigEndian.PutUint32(iv[12:], uint32(2+c/16))
				g.ctr = cipher.NewCTR(g.block, iv[:])
				var skip [16]byte
				g.ctr.XORKeyStream(skip[:c%16], skip[:c%16])
			}
			clear(p[:k])
			g.ctr.XORKeyStream(p[:k], p[:k])
			g.pos = c + int64(k)
		default:
			k = copy(p, g.tail[off-int64(len(g.head))-g.size:])
		}
		p, off, n = p[k:], off+int64(k), n+k
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// allocated runs f and returns the bytes it allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestEnvelope1GiBBoundedMemory: a 1 GiB dossier is encrypted, then
// decrypted (both passes), with less than 1 MiB allocated in all, whatever
// the size (64 MiB under the race detector, which is slow).
func TestEnvelope1GiBBoundedMemory(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled || testing.Short() {
		size = 64 << 20
	}
	kek := bytes.Repeat([]byte{9}, 32)
	rs := []cms.Recipient{{KEKID: []byte("k"), KEK: kek}}
	// The Rand gives the content-encryption key first, then the nonce.
	rnd := &counting{}
	cek, nonce := make([]byte, 32), make([]byte, 12)
	(&counting{}).Read(cek)
	(&counting{c: 32}).Read(nonce)

	w, err := cms.NewEnvelopeWriter(io.Discard, size, rs, &cms.EnvelopeOptions{Rand: &counting{}})
	if err != nil {
		t.Fatal(err)
	}
	headLen := int(w.Len() - size - 18)
	out := &heldWriter{headLen: headLen}
	var n int64
	start := time.Now()
	alloc := allocated(func() {
		n, err = cms.EncryptTo(out, &zeros{size}, size, rs, &cms.EnvelopeOptions{Rand: rnd})
	})
	if err != nil || n != w.Len() || out.n != n {
		t.Fatalf("EncryptTo: %d bytes of %d, %v", n, w.Len(), err)
	}
	t.Logf("encrypted %d MiB in %v, %d KiB allocated", size>>20, time.Since(start), alloc>>10)
	if alloc > 1<<20 {
		t.Errorf("encryption allocated %d KiB", alloc>>10)
	}

	block, _ := aes.NewCipher(cek)
	g := &genEnvelope{head: out.head, tail: out.tail[len(out.tail)-18:], size: size, block: block, nonce: nonce}
	check := &zeroChecker{}
	start = time.Now()
	var env *cms.Envelope
	alloc = allocated(func() {
		env, err = cms.DecryptTo(check, g, n, cms.RecipientKey{KEKID: []byte("k"), KEK: kek}, nil)
	})
	if err != nil {
		t.Fatalf("DecryptTo: %v (the generated ciphertext may not be what EncryptTo wrote)", err)
	}
	if check.n != size || check.nonzero || env.Size != size || !env.Authenticated {
		t.Fatalf("decrypted %d bytes of %d (zeros: %v), %+v", check.n, size, !check.nonzero, env)
	}
	t.Logf("decrypted %d MiB (two passes) in %v, %d KiB allocated", size>>20, time.Since(start), alloc>>10)
	if alloc > 1<<20 {
		t.Errorf("decryption allocated %d KiB", alloc>>10)
	}
}

// Raw speeds, measured once per run on this machine: AES-256-GCM sealing
// and SHA-256, 16 MiB at a time, the best of a few tries.
var raw struct {
	once      sync.Once
	gcm, sha  float64 // bytes per second
	hashCrypt float64 // SHA-256 then AES-256-GCM over the same bytes
}

func rawSpeeds() {
	raw.once.Do(func() {
		buf := make([]byte, 16<<20)
		block, _ := aes.NewCipher(make([]byte, 32))
		gcm, _ := cipher.NewGCM(block)
		nonce := make([]byte, 12)
		best := func(f func()) float64 {
			var b time.Duration = 1 << 62
			for range 5 {
				start := time.Now()
				f()
				b = min(b, time.Since(start))
			}
			return float64(len(buf)) / b.Seconds()
		}
		raw.gcm = best(func() { gcm.Seal(buf[:0], nonce, buf[:len(buf)-16], nil) })
		raw.sha = best(func() { sha256.Sum256(buf) })
		raw.hashCrypt = 1 / (1/raw.gcm + 1/raw.sha)
	})
}

// BenchmarkEnvelope: a 100 MiB dossier encrypted in constant memory
// (EncryptTo from a reader to a writer) and decrypted (DecryptTo, both
// passes, from memory), beside the raw AES-256-GCM and SHA-256 speeds of
// the machine: of-raw-gcm is the envelope's speed over raw AES-256-GCM,
// of-raw-sha256+gcm over hashing then encrypting the same bytes (the work
// of a submission and its encryption, the target: 0.30).
func BenchmarkEnvelope(b *testing.B) {
	rawSpeeds()
	const size = 100 << 20
	p := newParty(b, "p256", 0)
	rs := []cms.Recipient{p.recipient()}
	report := func(b *testing.B, bytesDone int64) {
		speed := float64(bytesDone) / b.Elapsed().Seconds()
		b.ReportMetric(speed/raw.gcm, "of-raw-gcm")
		b.ReportMetric(speed/raw.hashCrypt, "of-raw-sha256+gcm")
		b.ReportMetric(raw.gcm/1e6, "raw-gcm-MB/s")
		b.ReportMetric(raw.sha/1e6, "raw-sha256-MB/s")
	}
	for _, ce := range []cms.ContentEncryption{cms.AES256GCM, cms.AES256CBC} {
		b.Run("encrypt-100MiB/"+ce.String(), func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			var done int64
			for b.Loop() {
				if _, err := cms.EncryptTo(io.Discard, &zeros{size}, size, rs, &cms.EnvelopeOptions{Content: ce}); err != nil {
					b.Fatal(err)
				}
				done += size
			}
			report(b, done)
		})
		b.Run("decrypt-100MiB/"+ce.String(), func(b *testing.B) {
			var env bytes.Buffer
			if _, err := cms.EncryptTo(&env, &zeros{size}, size, rs, &cms.EnvelopeOptions{Content: ce}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ReportAllocs()
			var done int64
			for b.Loop() {
				if _, err := cms.DecryptTo(io.Discard, bytes.NewReader(env.Bytes()), int64(env.Len()), p.rkey(), nil); err != nil {
					b.Fatal(err)
				}
				done += size
			}
			report(b, done)
		})
	}
}
