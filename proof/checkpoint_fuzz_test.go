package proof_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"pec/proof"
)

// The fuzz targets of the signed-note (c2sp.org/signed-note) and
// checkpoint (c2sp.org/tlog-checkpoint) parsers sign with fixed keys, so
// that the signed notes of the committed corpus verify in every run.
const (
	fuzzKeyName     = "pec.test/proof" // the origin of the logs of env_test.go too
	fuzzWitnessName = "witness.test/w1"
	maxNote         = 64 << 10 // proof.maxNoteSize
)

func fixedKey(tb testing.TB, seed string) *ecdsa.PrivateKey {
	tb.Helper()
	d := sha256.Sum256([]byte(seed))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// fuzzKeys returns the signer and verifier of the fuzz log key.
func fuzzKeys(tb testing.TB) (*ecdsa.PrivateKey, *proof.NoteSigner, *proof.NoteVerifier) {
	tb.Helper()
	key := fixedKey(tb, "pec proof fuzz: the log key")
	s, err := proof.NewNoteSigner(fuzzKeyName, key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, s, s.Verifier()
}

// xmodVerifier is the fuzz key as a verifier of golang.org/x/mod's note
// package, whose Open is the reference implementation of signed notes:
// signature type 0x02 is an ECDSA signature (ASN.1) over SHA-256 of the
// text.
type xmodVerifier struct {
	v   *proof.NoteVerifier
	pub *ecdsa.PublicKey
}

func (x xmodVerifier) Name() string    { return x.v.Name() }
func (x xmodVerifier) KeyHash() uint32 { return x.v.KeyID() }
func (x xmodVerifier) Verify(msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(x.pub, d[:], sig)
}

// sigLine is a signature line of a note, as written.
type sigLine struct {
	start, end int // byte range in the note, newline excluded
	name       string
	id         uint32
	canonical  bool // its base64 is the canonical encoding of its bytes
}

// sigLines reads the signature block of note loosely (no error): the
// lines after the last blank line.
func sigLines(n []byte) []sigLine {
	split := bytes.LastIndex(n, []byte("\n\n"))
	if split < 0 {
		return nil
	}
	var out []sigLine
	pos := split + 2
	for pos < len(n) {
		end := bytes.IndexByte(n[pos:], '\n')
		if end < 0 {
			end = len(n) - pos
		}
		line := string(n[pos : pos+end])
		l := sigLine{start: pos, end: pos + end}
		rest, _ := strings.CutPrefix(line, "— ")
		name, b64, _ := strings.Cut(rest, " ")
		l.name = name
		if blob, err := base64.StdEncoding.DecodeString(b64); err == nil && len(blob) >= 4 {
			l.id = binary.BigEndian.Uint32(blob)
			l.canonical = base64.StdEncoding.EncodeToString(blob) == b64
		}
		out = append(out, l)
		pos += end + 1
	}
	return out
}

// ownLines are the signature lines of v's name and key ID.
func ownLines(v *proof.NoteVerifier, n []byte) []sigLine {
	var out []sigLine
	for _, l := range sigLines(n) {
		if l.name == v.Name() && l.id == v.KeyID() {
			out = append(out, l)
		}
	}
	return out
}

// short quotes b, cut to a length a failure message can show.
func short[T []byte | string](b T) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q... (%d bytes)", b[:300], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// noteError tells whether err is one of the two documented errors.
func noteError(err error) bool {
	return errors.Is(err, proof.ErrMalformedNote) != errors.Is(err, proof.ErrNoteSignature)
}

// FuzzOpenCheckpoint: whatever the bytes, NoteVerifier.Open and
// OpenCheckpoint do not panic and fail with ErrMalformedNote or
// ErrNoteSignature; what they accept, golang.org/x/mod's note.Open
// accepts too, with the same text and signature; what x/mod accepts they
// refuse only for the stricter rules of proof (size bound, canonical
// base64, every signature of the key checked); an accepted note's text
// signed again opens to the same text; and a change to any byte of its
// text or of its one signature line is refused.
func FuzzOpenCheckpoint(f *testing.F) {
	key, s, v := fuzzKeys(f)
	xv := note.VerifierList(xmodVerifier{v: v, pub: &key.PublicKey})
	f.Fuzz(func(t *testing.T, n []byte) {
		text, err := v.Open(n)
		cp, cerr := proof.OpenCheckpoint(v, "", n)
		xn, xerr := note.Open(n, xv)
		xok := xerr == nil && len(xn.Sigs) == 1 && xn.Sigs[0].Name == v.Name() && xn.Sigs[0].Hash == v.KeyID()
		own := ownLines(v, n)
		if err != nil {
			if text != nil || !noteError(err) {
				t.Fatalf("Open: %s, %v: want nil and ErrMalformedNote or ErrNoteSignature", short(text), err)
			}
			if cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("Open: %v, but OpenCheckpoint: %v", err, cerr)
			}
			if xok {
				nonCanonical := false
				for _, l := range sigLines(n) {
					nonCanonical = nonCanonical || !l.canonical
				}
				if len(n) <= maxNote && len(own) < 2 && !nonCanonical {
					t.Fatalf("x/mod's note.Open accepts the note, Open refuses it: %v", err)
				}
			}
			return
		}
		if !xok {
			t.Fatalf("Open accepts a note that x/mod's note.Open refuses (%v)", xerr)
		}
		if xn.Text != string(text) || !bytes.HasPrefix(n, text) || len(own) == 0 {
			t.Fatalf("Open returns %s of %s (x/mod: %s)", short(text), short(n), short(xn.Text))
		}
		if cerr == nil {
			if cp.Origin != v.Name() || len(cp.Root) != sha256.Size || !bytes.HasPrefix(text, cp.Text()) {
				t.Fatalf("OpenCheckpoint: %+v from %s", cp, short(text))
			}
		} else if !errors.Is(cerr, proof.ErrMalformedNote) {
			t.Fatalf("OpenCheckpoint of an authentic note: %v, want ErrMalformedNote", cerr)
		}
		if pcp, perr := proof.ParseCheckpoint(text); (perr == nil && pcp.Origin == v.Name()) != (cerr == nil) {
			t.Fatalf("ParseCheckpoint: %+v, %v; OpenCheckpoint: %v", pcp, perr, cerr)
		}

		// Sign then Open gives the text back.
		again, err := s.Sign(text)
		if err != nil {
			t.Fatalf("Sign of an opened text: %v", err)
		}
		if got, err := v.Open(again); err != nil || !bytes.Equal(got, text) {
			t.Fatalf("Open(Sign(text)) = %s, %v; want %s", short(got), err, short(text))
		}

		// One byte changed, in the text or in the one signature line of
		// the key: refused. (With two lines of the key, one may become
		// another key's line and the other still verify.) Eight positions
		// an input, chosen by its hash; TestNoteEveryByte tries them all.
		if len(own) != 1 {
			return
		}
		positions := len(text) + own[0].end - own[0].start
		h := sha256.Sum256(n)
		for k := range 8 {
			p := int(binary.BigEndian.Uint32(h[4*k%32:])) % positions
			if p >= len(text) {
				p = own[0].start + p - len(text)
			}
			bad := bytes.Clone(n)
			bad[p] ^= h[k] | 1
			if _, err := v.Open(bad); err == nil || !noteError(err) {
				t.Fatalf("byte %d of %s changed to %q: Open gives %v", p, short(n), bad[p], err)
			}
		}
	})
}

// FuzzParseCheckpoint: whatever the text, ParseCheckpoint does not panic
// and fails with ErrMalformedNote, or returns a checkpoint whose text
// starts the input, reads back the same, and agrees with
// golang.org/x/mod/sumdb/tlog.ParseTree; and any text NoteSigner.Sign
// accepts opens to the same text, as the same checkpoint.
func FuzzParseCheckpoint(f *testing.F) {
	_, s, v := fuzzKeys(f)
	f.Fuzz(func(t *testing.T, text []byte) {
		cp, err := proof.ParseCheckpoint(text)
		if err != nil {
			if !errors.Is(err, proof.ErrMalformedNote) {
				t.Fatalf("ParseCheckpoint: %v, want ErrMalformedNote", err)
			}
		} else {
			if cp.Origin == "" || len(cp.Root) != sha256.Size || !bytes.HasPrefix(text, cp.Text()) {
				t.Fatalf("ParseCheckpoint(%s) = %+v", short(text), cp)
			}
			again, err := proof.ParseCheckpoint(cp.Text())
			if err != nil || again.Origin != cp.Origin || again.Size != cp.Size || !bytes.Equal(again.Root, cp.Root) {
				t.Fatalf("%+v reads back as %+v, %v", cp, again, err)
			}
			if cp.Size <= math.MaxInt64 {
				_, rest, _ := bytes.Cut(text, []byte("\n"))
				tree, err := tlog.ParseTree(append([]byte("go.sum database tree\n"), rest...))
				if err != nil || tree.N != int64(cp.Size) || !bytes.Equal(tree.Hash[:], cp.Root) {
					t.Fatalf("tlog.ParseTree of %s: %+v, %v; ours %+v", short(text), tree, err, cp)
				}
			}
		}

		n, serr := s.Sign(text)
		if serr != nil {
			if !errors.Is(serr, proof.ErrMalformedNote) {
				t.Fatalf("Sign: %v, want ErrMalformedNote", serr)
			}
			if err == nil && len(text) < maxNote-1024 {
				t.Fatalf("ParseCheckpoint accepts %s, which Sign refuses: %v", short(text), serr)
			}
			return
		}
		got, oerr := v.Open(n)
		if oerr != nil || !bytes.Equal(got, text) {
			t.Fatalf("Open(Sign(%s)) = %s, %v", short(text), short(got), oerr)
		}
		if err != nil {
			if _, cerr := proof.OpenCheckpoint(v, "", n); !errors.Is(cerr, proof.ErrMalformedNote) {
				t.Fatalf("OpenCheckpoint of a signed non-checkpoint: %v", cerr)
			}
			return
		}
		ocp, cerr := proof.OpenCheckpoint(v, cp.Origin, n)
		if cerr != nil || ocp.Origin != cp.Origin || ocp.Size != cp.Size || !bytes.Equal(ocp.Root, cp.Root) {
			t.Fatalf("OpenCheckpoint(Sign(%s)) = %+v, %v; want %+v", short(text), ocp, cerr, cp)
		}
	})
}

// FuzzParseNoteVerifier: whatever the string, ParseNoteVerifier does not
// panic; a key it reads prints in a form that reads back the same, and
// opens exactly the notes of its own key.
func FuzzParseNoteVerifier(f *testing.F) {
	_, s, fv := fuzzKeys(f)
	cp := proof.Checkpoint{Origin: fuzzKeyName, Size: 3, Root: bytes.Repeat([]byte{3}, 32)}
	signed, err := s.Sign(cp.Text())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, vkey string) {
		v, err := proof.ParseNoteVerifier(vkey)
		if err != nil {
			if v != nil || !strings.HasPrefix(err.Error(), "proof: ") {
				t.Fatalf("ParseNoteVerifier: %v, %v", v, err)
			}
			return
		}
		if !strings.HasPrefix(vkey, v.Name()+"+") {
			t.Fatalf("ParseNoteVerifier(%s): name %q", short(vkey), v.Name())
		}
		str := v.String()
		again, err := proof.ParseNoteVerifier(str)
		if err != nil || again.String() != str || again.Name() != v.Name() || again.KeyID() != v.KeyID() {
			t.Fatalf("%s prints as %q, which reads as %v, %v", short(vkey), str, again, err)
		}
		_, oerr := v.Open(signed)
		if own := v.Name() == fv.Name() && v.KeyID() == fv.KeyID(); own != (oerr == nil) {
			t.Fatalf("verifier %s opens a note of %s: %v", v, fv, oerr)
		}
		if oerr != nil && !errors.Is(oerr, proof.ErrNoteSignature) {
			t.Fatalf("a note of another key: %v, want ErrNoteSignature", oerr)
		}
	})
}

// TestNoteEveryByte changes each byte of a signed checkpoint, one at a
// time, to every other value of a few: Open refuses each.
func TestNoteEveryByte(t *testing.T) {
	t.Parallel()
	_, s, v := fuzzKeys(t)
	n, err := s.Sign(proof.Checkpoint{Origin: fuzzKeyName, Size: 1234, Root: bytes.Repeat([]byte{0xab}, 32)}.Text())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for _, x := range []byte{0x01, 0x20, 0x80, 0xff} {
			bad := bytes.Clone(n)
			bad[i] ^= x
			if _, err := proof.OpenCheckpoint(v, "", bad); err == nil || !noteError(err) {
				t.Fatalf("byte %d ^ %#x: OpenCheckpoint gives %v", i, x, err)
			}
		}
	}
}

// TestSignNoteSize: Sign refuses a text whose signed note Open would
// refuse for its size (found by FuzzParseCheckpoint, seed
// text-near-the-size-cap), and signs one a little shorter.
func TestSignNoteSize(t *testing.T) {
	t.Parallel()
	_, s, v := fuzzKeys(t)
	cp := proof.Checkpoint{Origin: fuzzKeyName, Size: 7, Root: make([]byte, 32)}.Text()
	text := func(n int) []byte { return append(bytes.Clone(cp), strings.Repeat("x", n-len(cp)-1)+"\n"...) }
	// A note is its text, "\n— ", the name, a space, base64 of the key ID
	// and an ECDSA P-256 signature (at most 72 bytes), and a newline.
	over := maxNote - len(fuzzKeyName) - 20
	if n, err := s.Sign(text(over)); !errors.Is(err, proof.ErrMalformedNote) {
		t.Errorf("Sign of %d bytes: a note of %d bytes, %v; want ErrMalformedNote", over, len(n), err)
	}
	under := maxNote - len(fuzzKeyName) - 120
	n, err := s.Sign(text(under))
	if err != nil {
		t.Fatalf("Sign of %d bytes: %v", under, err)
	}
	if got, err := proof.OpenCheckpoint(v, "", n); err != nil || got.Size != 7 {
		t.Errorf("OpenCheckpoint of a note of %d bytes: %+v, %v", len(n), got, err)
	}
}

// TestCheckpointFuzzCorpus writes the seed corpora of the three targets
// above (-update): real signed notes (of the sequencer of a log with the
// fuzz key, cosigned, with extension lines), and each kind of malformed
// input.
func TestCheckpointFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("run with -update to refresh testdata/fuzz/Fuzz{OpenCheckpoint,ParseCheckpoint,ParseNoteVerifier}")
	}
	key, s, v := fuzzKeys(t)
	wkey := fixedKey(t, "pec proof fuzz: a witness key")
	w, err := proof.NewNoteSigner(fuzzWitnessName, wkey)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s *proof.NoteSigner, text string) string {
		n, err := s.Sign([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return string(n)
	}
	sigBlock := func(n string) string { return n[strings.LastIndex(n, "\n\n")+2:] }

	// A real checkpoint: a log sealed by the sequencer with the fuzz key.
	e := newEnv(t)
	e.signer = s
	l := e.openLog(t, openBolt(t, filepath.Join(t.TempDir(), "proof.db")), fastSeal)
	for i := range 3 {
		appendSealed(t, l, sampleRecord(i))
	}
	sealed := string(l.Latest().Checkpoint)
	l.Close()
	// And one of a log with another key under the same name.
	other := newEnv(t)
	ol := other.openLog(t, openBolt(t, filepath.Join(t.TempDir(), "other.db")), fastSeal)
	appendSealed(t, ol, sampleRecord(0))
	otherKey := string(ol.Latest().Checkpoint)
	ol.Close()

	root := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	cp42 := fuzzKeyName + "\n42\n" + root + "\n"
	note42 := sign(s, cp42)
	ext := sign(s, cp42+"extension line one\nanother extension\n")
	empty := sign(s, string(proof.Checkpoint{Origin: fuzzKeyName, Size: 0, Root: make([]byte, 32)}.Text()))
	wnote := sign(w, cp42)
	own := sigBlock(note42)
	line := strings.TrimSuffix(own, "\n")
	b64 := line[strings.LastIndex(line, " ")+1:]
	blob, _ := base64.StdEncoding.DecodeString(b64)
	otherID := bytes.Clone(blob)
	otherID[0] ^= 1
	// 101 short signature lines, one over the bound of signed-note (and
	// small: the fuzzer minimizes what it finds from a seed, at a cost that
	// grows with the square of its length).
	many := note42 + strings.Repeat("— w AAAAAAA=\n", 100)
	// A signature whose base64 has padding bits set: the same bytes to a
	// lax decoder (x/mod's), not the canonical encoding. (Signed again
	// until the DER signature leaves unused bits.)
	nonCanonical := ""
	for nonCanonical == "" {
		n := sign(s, cp42)
		l := strings.TrimSuffix(sigBlock(n), "\n")
		enc := l[strings.LastIndex(l, " ")+1:]
		pad := len(enc) - len(strings.TrimRight(enc, "="))
		if pad == 0 {
			continue
		}
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		last := len(enc) - pad - 1
		bits := map[int]int{1: 3, 2: 15}[pad]
		lax := enc[:last] + string(alphabet[strings.IndexByte(alphabet, enc[last])|bits]) + enc[last+1:]
		nonCanonical = strings.TrimSuffix(n, enc+"\n") + lax + "\n"
	}

	notes := map[string]string{
		"sequencer-checkpoint":         sealed,
		"checkpoint-size-42":           note42,
		"checkpoint-empty-tree":        empty,
		"checkpoint-extension-lines":   ext,
		"cosigned-by-witness":          note42 + sigBlock(wnote),
		"witness-first":                wnote + own,
		"witness-only":                 wnote,
		"same-name-other-key":          otherKey,
		"other-key-id":                 cp42 + "\n— " + fuzzKeyName + " " + base64.StdEncoding.EncodeToString(otherID) + "\n",
		"signed-not-a-checkpoint":      sign(s, "hello, world\n"),
		"signed-other-origin":          sign(s, strings.Replace(cp42, fuzzKeyName, "other.test/log", 1)),
		"changed-size":                 strings.Replace(note42, "\n42\n", "\n43\n", 1),
		"signature-twice":              note42 + own,
		"signature-twice-second-bad":   note42 + "— " + fuzzKeyName + " " + base64.StdEncoding.EncodeToString(append(blob[:4:4], 0x30, 0x00)) + "\n",
		"no-blank-line":                strings.Replace(note42, "\n\n", "\n", 1),
		"no-final-newline":             strings.TrimSuffix(note42, "\n"),
		"control-character":            strings.Replace(note42, "42", "4\x012", 1),
		"not-utf8":                     strings.Replace(note42, "42", "4\xff2", 1),
		"crlf":                         strings.ReplaceAll(note42, "\n", "\r\n"),
		"hyphen-not-em-dash":           strings.Replace(note42, "— ", "-- ", 1),
		"name-without-signature":       cp42 + "\n— " + fuzzKeyName + "\n",
		"short-signature":              cp42 + "\n— " + fuzzKeyName + " AAAA\n",
		"non-canonical-base64":         nonCanonical,
		"101-signatures":               many,
		"empty-text":                   "\n" + own,
		"empty":                        "",
		"x-mod-ed25519-example":        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
		"name-with-space-in-signature": cp42 + "\n— pec.test proof " + b64 + "\n",
	}
	texts := map[string]string{
		"checkpoint":          cp42,
		"empty-tree":          string(proof.Checkpoint{Origin: fuzzKeyName, Size: 0, Root: make([]byte, 32)}.Text()),
		"max-size":            fmt.Sprintf("%s\n%d\n%s\n", fuzzKeyName, uint64(math.MaxUint64), root),
		"size-over-int64":     fmt.Sprintf("%s\n%d\n%s\n", fuzzKeyName, uint64(math.MaxInt64)+1, root),
		"size-overflow":       fuzzKeyName + "\n18446744073709551616\n" + root + "\n",
		"extension-lines":     cp42 + "ext one\next two\n",
		"size-leading-zero":   fuzzKeyName + "\n042\n" + root + "\n",
		"size-plus":           fuzzKeyName + "\n+42\n" + root + "\n",
		"size-negative":       fuzzKeyName + "\n-1\n" + root + "\n",
		"size-hex":            fuzzKeyName + "\n0x2a\n" + root + "\n",
		"root-31-bytes":       fuzzKeyName + "\n42\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n",
		"root-33-bytes":       fuzzKeyName + "\n42\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n",
		"root-non-canonical":  fuzzKeyName + "\n42\n" + root[:42] + "b=\n",
		"root-url-safe":       fuzzKeyName + "\n42\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n",
		"root-unpadded":       fuzzKeyName + "\n42\n" + strings.TrimRight(root, "=") + "\n",
		"empty-origin":        "\n42\n" + root + "\n",
		"no-root":             fuzzKeyName + "\n42\n",
		"no-final-newline":    strings.TrimSuffix(cp42, "\n"),
		"crlf":                strings.ReplaceAll(cp42, "\n", "\r\n"),
		"control-character":   strings.Replace(cp42, "pec", "p\x7fe\x01c", 1),
		"not-utf8":            "\xc3\x28\n42\n" + root + "\n",
		"origin-with-space":   "pec test\n42\n" + root + "\n",
		"blank-line-in-text":  cp42 + "\nafter a blank line\n",
		"signed-note-as-text": note42,
		"empty":               "",
		"newline":             "\n",
	}
	wvkey := w.Verifier().String()
	vkey := v.String()
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	d := sha512.Sum384([]byte("pec proof fuzz: a P-384 key"))
	p384, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	spki384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	sum384 := sha256.Sum256(spki384)
	vkeys := map[string]string{
		"log-key":          vkey,
		"witness-key":      wvkey,
		"upper-case-id":    strings.Replace(vkey, vkey[len(fuzzKeyName)+1:len(fuzzKeyName)+9], strings.ToUpper(vkey[len(fuzzKeyName)+1:len(fuzzKeyName)+9]), 1),
		"wrong-id":         fuzzKeyName + "+00000000+" + vkey[len(fuzzKeyName)+10:],
		"other-name":       "other.test/log+" + vkey[len(fuzzKeyName)+1:],
		"ed25519-x-mod":    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
		"type-1-with-spki": fmt.Sprintf("%s+%s+%s", fuzzKeyName, vkey[len(fuzzKeyName)+1:len(fuzzKeyName)+9], base64.StdEncoding.EncodeToString(append([]byte{1}, spki...))),
		"trailing-bytes":   fmt.Sprintf("%s+%s+%s", fuzzKeyName, vkey[len(fuzzKeyName)+1:len(fuzzKeyName)+9], base64.StdEncoding.EncodeToString(append(append([]byte{2}, spki...), 0))),
		"base64-with-line": vkey[:len(vkey)-8] + "\n" + vkey[len(vkey)-8:],
		"name-with-space":  "pec test+" + vkey[len(fuzzKeyName)+1:],
		"no-key":           fuzzKeyName + "+" + vkey[len(fuzzKeyName)+1:len(fuzzKeyName)+9],
		"only-name":        fuzzKeyName,
		"empty":            "",
		"empty-name":       vkey[len(fuzzKeyName):],
		"p384-key":         fmt.Sprintf("%s+%x+%s", fuzzKeyName, sum384[:4], base64.StdEncoding.EncodeToString(append([]byte{2}, spki384...))),
	}
	write := func(target string, seeds map[string]string, typ string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, seed := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n%s(%q)\n", typ, seed), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzOpenCheckpoint", notes, "[]byte")
	write("FuzzParseCheckpoint", texts, "[]byte")
	write("FuzzParseNoteVerifier", vkeys, "string")
}
