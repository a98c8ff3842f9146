package proof_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"pec/proof"
)

// rawNote signs text as a signed note of key under name and key ID id,
// without the checks of NoteSigner.Sign: for notes that break a rule of
// the text and still carry a valid signature, so that the parser, not the
// signature, has to refuse them.
func rawNote(t testing.TB, key *ecdsa.PrivateKey, name string, id uint32, text string) string {
	t.Helper()
	digest := sha256.Sum256([]byte(text))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return text + "\n" + noteSigLine(name, binary.BigEndian.AppendUint32(nil, id), sig) + "\n"
}

// sigLine is a signature line: an em dash, the key name, base64 of the
// key ID and the signature.
func noteSigLine(name string, id, sig []byte) string {
	return "— " + name + " " + base64.StdEncoding.EncodeToString(append(bytes.Clone(id), sig...))
}

// TestCheckpointRules: each note violates exactly one rule of
// NoteVerifier.Open, ParseCheckpoint or OpenCheckpoint (c2sp.org/
// signed-note, c2sp.org/tlog-checkpoint) and must be refused with the
// error of that rule; the valid notes beside them show that the rest of
// each note passes. A check removed from checkpoint.go fails a case here.
func TestCheckpointRules(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const name = "pec.test/log"
	s, err := proof.NewNoteSigner(name, key)
	if err != nil {
		t.Fatal(err)
	}
	v := s.Verifier()
	id := v.KeyID()
	idBytes := binary.BigEndian.AppendUint32(nil, id)
	root := bytes.Repeat([]byte{7}, 32)
	rootB64 := base64.StdEncoding.EncodeToString(root)
	text := name + "\n42\n" + rootB64 + "\n"
	sign := func(text string) string { return rawNote(t, key, name, id, text) }
	good := sign(text)
	sigs := good[len(text)+1:] // the signature block, after the blank line
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	witness := rawNote(t, otherKey, "witness.test", 0x01020304, text)
	witnessLine := witness[len(text)+1 : len(witness)-1]

	for _, tc := range []struct {
		name   string
		note   string
		origin string // for OpenCheckpoint; "": the key name
		want   error  // nil: valid
		msg    string // in the error: the rule that refused it
	}{
		// Valid notes, each the neighbour of a refused one.
		{name: "valid", note: good},
		{name: "valid/extension lines after the root", note: sign(text + "extension line\n")},
		{name: "valid/cosigned by a witness", note: good[:len(good)-1] + "\n" + witnessLine + "\n"},
		{name: "valid/size 0", note: sign(name + "\n0\n" + rootB64 + "\n")},
		{name: "valid/origin given", note: good, origin: name},

		// The note (c2sp.org/signed-note).
		{name: "note/over 64 KiB", note: sign(text + strings.Repeat("x", 64<<10) + "\n"), want: proof.ErrMalformedNote, msg: "over 65536 bytes"},
		{name: "note/not UTF-8", note: sign(text + "\xff\n"), want: proof.ErrMalformedNote, msg: "not UTF-8"},
		{name: "note/not UTF-8 in a signature line", note: good + "— w\xfftness AQIDBAUG\n", want: proof.ErrMalformedNote, msg: "not UTF-8"},
		{name: "note/no blank line before the signatures", note: text + sigs, want: proof.ErrMalformedNote, msg: "no signature block"},
		{name: "note/control character in the text", note: sign(text + "a\tb\n"), want: proof.ErrMalformedNote, msg: "control character"},
		{name: "note/signatures not ending in a newline", note: strings.TrimSuffix(good, "\n"), want: proof.ErrMalformedNote, msg: "must end in a newline"},
		{name: "note/empty signature block", note: text + "\n", want: proof.ErrMalformedNote, msg: "must end in a newline"},
		{name: "note/over 100 signature lines", note: text + "\n" + strings.Repeat(witnessLine+"\n", 100) + sigs, want: proof.ErrMalformedNote, msg: "too many signatures"},
		{name: "signature line/no em dash", note: text + "\n- " + sigs[len("— "):], want: proof.ErrMalformedNote, msg: "em dash"},
		{name: "signature line/no space after the name", note: text + "\n— " + name + "\n", want: proof.ErrMalformedNote, msg: "bad signature line"},
		{name: "signature line/key name with a +", note: good + noteSigLine("bad+name", idBytes, []byte{1}) + "\n", want: proof.ErrMalformedNote, msg: "bad signature line"},
		{name: "signature line/not base64", note: good + "— " + name + " !!!!\n", want: proof.ErrMalformedNote, msg: "bad signature line"},
		{name: "signature line/blob shorter than a key ID and a byte", note: good + noteSigLine("witness.test", idBytes, nil) + "\n", want: proof.ErrMalformedNote, msg: "bad signature line"},
		{name: "signature line/base64 not canonical", note: good + "— witness.test AQIDBAV=\n", want: proof.ErrMalformedNote, msg: "bad signature line"},

		// The signature.
		{name: "signature/none of the key", note: witness, want: proof.ErrNoteSignature, msg: "no signature of " + name},
		{name: "signature/key name of the log, other key ID", note: rawNote(t, key, name, id^1, text), want: proof.ErrNoteSignature, msg: "no signature of " + name},
		{name: "signature/key ID of the log, other key name", note: rawNote(t, key, "pec.test/other", id, text), want: proof.ErrNoteSignature, msg: "no signature of " + name},
		{name: "signature/of another key under the log's name and ID", note: rawNote(t, otherKey, name, id, text), want: proof.ErrNoteSignature, msg: "does not verify"},
		{name: "signature/text changed after signing", note: strings.Replace(good, "\n42\n", "\n43\n", 1), want: proof.ErrNoteSignature, msg: "does not verify"},
		{name: "signature/a bad one beside a good one", note: good + noteSigLine(name, idBytes, []byte{0x30, 0}) + "\n", want: proof.ErrNoteSignature, msg: "does not verify"},

		// The checkpoint (c2sp.org/tlog-checkpoint), validly signed.
		{name: "checkpoint/only origin and size", note: sign(name + "\n42\n"), want: proof.ErrMalformedNote, msg: "an origin, a size and a root hash"},
		{name: "checkpoint/empty origin", note: sign("\n42\n" + rootB64 + "\n"), origin: "-", want: proof.ErrMalformedNote, msg: "empty checkpoint origin"},
		{name: "checkpoint/size not decimal", note: sign(name + "\nforty-two\n" + rootB64 + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint size"},
		{name: "checkpoint/size with a leading zero", note: sign(name + "\n042\n" + rootB64 + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint size"},
		{name: "checkpoint/size with a plus sign", note: sign(name + "\n+42\n" + rootB64 + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint size"},
		{name: "checkpoint/size over 64 bits", note: sign(name + "\n18446744073709551616\n" + rootB64 + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint size"},
		{name: "checkpoint/root not base64", note: sign(name + "\n42\n" + strings.Repeat("!", 44) + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint root hash"},
		{name: "checkpoint/root of 31 bytes", note: sign(name + "\n42\n" + base64.StdEncoding.EncodeToString(root[:31]) + "\n"), want: proof.ErrMalformedNote, msg: "checkpoint root hash"},
		{name: "checkpoint/root base64 not canonical", note: sign(name + "\n42\n" + rootB64[:42] + "d=\n"), want: proof.ErrMalformedNote, msg: "checkpoint root hash"},
		{name: "checkpoint/of another log than the key's", note: sign("pec.test/other\n42\n" + rootB64 + "\n"), want: proof.ErrMalformedNote, msg: `not "pec.test/log"`},
		{name: "checkpoint/of another log than the one asked for", note: good, origin: "pec.test/other", want: proof.ErrMalformedNote, msg: `not "pec.test/other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			origin := tc.origin
			if origin == "-" {
				origin = ""
			}
			cp, err := proof.OpenCheckpoint(v, origin, []byte(tc.note))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("OpenCheckpoint: %v", err)
				}
				if cp.Origin != name || !bytes.Equal(cp.Root, root) {
					t.Errorf("read %+v", cp)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("OpenCheckpoint: %v; want %v saying %q", err, tc.want, tc.msg)
			}
		})
	}

	// NoteVerifier.Open alone, which checks the text of any note (not
	// only a checkpoint's).
	for _, tc := range []struct{ name, note, msg string }{
		{"control character", sign("any\x01note\n"), "control character"},
		{"not UTF-8", sign("any \xffnote\n"), "not UTF-8"},
	} {
		t.Run("Open/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := v.Open([]byte(tc.note)); !errors.Is(err, proof.ErrMalformedNote) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Open: %v; want ErrMalformedNote saying %q", err, tc.msg)
			}
		})
	}
	t.Run("Open/valid, not a checkpoint", func(t *testing.T) {
		if _, err := v.Open([]byte(sign("any note\n"))); err != nil {
			t.Fatal(err)
		}
	})

	// ParseCheckpoint alone: the text rules that Open cannot reach
	// (Open's text always ends in the newline before the blank line).
	for _, tc := range []struct {
		name, text, msg string
	}{
		{"text/no final newline", strings.TrimSuffix(text, "\n"), "must end in a newline"},
		{"text/empty", "", "must end in a newline"},
		{"text/not UTF-8", name + "\n42\n" + rootB64 + "\n\xc3\n", "not UTF-8"},
		{"text/control character", name + "\n4\x002\n" + rootB64 + "\n", "control character"},
	} {
		t.Run("ParseCheckpoint/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := proof.ParseCheckpoint([]byte(tc.text)); !errors.Is(err, proof.ErrMalformedNote) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseCheckpoint: %v; want ErrMalformedNote saying %q", err, tc.msg)
			}
		})
	}
	t.Run("ParseCheckpoint/valid", func(t *testing.T) {
		cp, err := proof.ParseCheckpoint([]byte(text))
		if err != nil || cp.Size != 42 || cp.Origin != name || !bytes.Equal(cp.Root, root) {
			t.Fatalf("ParseCheckpoint: %+v, %v", cp, err)
		}
	})
}

// TestNoteKeyRules: the verifier key text ([proof.ParseNoteVerifier]) and
// the keys a note signer or verifier takes, one broken rule each.
func TestNoteKeyRules(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := proof.NewNoteVerifier("pec.test/log", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	good := v.String()
	name, rest, _ := strings.Cut(good, "+")
	idHex, keyB64, _ := strings.Cut(rest, "+")
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384SPKI, err := x509.MarshalPKIXPublicKey(p384.Public())
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name, vkey, msg string
	}{
		{"no + at all", name, "malformed verifier key"},
		{"no key after the ID", name + "+" + idHex, "malformed verifier key"},
		{"key ID of 7 hex digits", name + "+" + idHex[1:] + "+" + keyB64, "malformed verifier key"},
		{"key not base64", name + "+" + idHex + "+!!!!", "malformed verifier key"},
		{"key of one byte", name + "+" + idHex + "+" + b64([]byte{proof.SigTypeECDSA}), "malformed verifier key"},
		{"signature type Ed25519", name + "+" + idHex + "+" + b64(append([]byte{0x01}, spki...)), "malformed verifier key"},
		{"key ID not hex", name + "+" + "zzzzzzzz" + "+" + keyB64, "malformed verifier key id"},
		{"key not a SubjectPublicKeyInfo", name + "+" + idHex + "+" + b64([]byte{proof.SigTypeECDSA, 0x30, 0}), "verifier key:"},
		{"key ID of another key", name + "+" + fmt.Sprintf("%08x", v.KeyID()^1) + "+" + keyB64, "does not match the key"},
		{"P-384 key", name + "+" + idHex + "+" + b64(append([]byte{proof.SigTypeECDSA}, p384SPKI...)), "P-256 key is required"},
		{"key name with a space", "pec test+" + idHex + "+" + keyB64, "must be non-empty"},
		{"empty key name", "+" + idHex + "+" + keyB64, "must be non-empty"},
	} {
		t.Run("ParseNoteVerifier/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := proof.ParseNoteVerifier(tc.vkey); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseNoteVerifier(%q): %v; want an error saying %q", tc.vkey, err, tc.msg)
			}
		})
	}
	t.Run("ParseNoteVerifier/valid", func(t *testing.T) {
		got, err := proof.ParseNoteVerifier(good)
		if err != nil || got.KeyID() != v.KeyID() || got.Name() != v.Name() {
			t.Fatalf("ParseNoteVerifier: %v", err)
		}
	})
	for _, tc := range []struct {
		name  string
		key   any
		kname string
	}{
		{"P-384 key", p384.Public(), "pec.test/log"},
		{"name with a tab", key.Public(), "pec.test\tlog"},
		{"name with a control character", key.Public(), "pec.test\x01log"},
		{"name not UTF-8", key.Public(), "pec.test/\xff"},
	} {
		t.Run("NewNoteVerifier/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := proof.NewNoteVerifier(tc.kname, tc.key); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("NewNoteSigner/no key", func(t *testing.T) {
		if _, err := proof.NewNoteSigner("pec.test/log", nil); err == nil {
			t.Fatal("accepted")
		}
	})
	t.Run("Sign/text without a final newline", func(t *testing.T) {
		s, err := proof.NewNoteSigner("pec.test/log", key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sign([]byte("pec.test/log\n1")); !errors.Is(err, proof.ErrMalformedNote) {
			t.Fatalf("Sign: %v; want ErrMalformedNote", err)
		}
	})
}
