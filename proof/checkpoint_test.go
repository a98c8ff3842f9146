package proof_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"pec/proof"
)

func TestSignedCheckpoint(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := proof.NewNoteSigner("pec.test/log", key)
	if err != nil {
		t.Fatal(err)
	}
	cp := proof.Checkpoint{Origin: "pec.test/log", Size: 42, Root: bytes.Repeat([]byte{7}, 32)}
	note, err := s.Sign(cp.Text())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(note, []byte("pec.test/log\n42\nBwcH")) || !bytes.Contains(note, []byte("\n\n— pec.test/log ")) {
		t.Fatalf("note layout:\n%s", note)
	}
	v := s.Verifier()
	got, err := proof.OpenCheckpoint(v, "", note)
	if err != nil || got.Size != 42 || !bytes.Equal(got.Root, cp.Root) {
		t.Fatalf("OpenCheckpoint: %+v, %v", got, err)
	}
	// The verifier key text round-trips.
	v2, err := proof.ParseNoteVerifier(v.String())
	if err != nil || v2.KeyID() != v.KeyID() || v2.Name() != v.Name() {
		t.Fatalf("ParseNoteVerifier(%s): %v", v, err)
	}
	if _, err := proof.OpenCheckpoint(v2, "", note); err != nil {
		t.Error(err)
	}

	// A witness's cosignature (another key) is ignored.
	wkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w, _ := proof.NewNoteSigner("witness.test", wkey)
	wnote, _ := w.Sign(cp.Text())
	cosigned := append(append([]byte(nil), note...), wnote[bytes.LastIndex(wnote, []byte("\n\n"))+2:]...)
	if _, err := proof.OpenCheckpoint(v, "", cosigned); err != nil {
		t.Errorf("cosigned note: %v", err)
	}
	// Only the witness: no signature of the log.
	if _, err := proof.OpenCheckpoint(v, "", wnote); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("note of another key: %v, want ErrNoteSignature", err)
	}
	// A changed size.
	bad := bytes.Replace(note, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := proof.OpenCheckpoint(v, "", bad); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("changed size: %v, want ErrNoteSignature", err)
	}
	// Another origin.
	if _, err := proof.OpenCheckpoint(v, "other.test/log", note); !errors.Is(err, proof.ErrMalformedNote) {
		t.Errorf("other origin: %v, want ErrMalformedNote", err)
	}
	for name, in := range map[string]string{
		"no blank line":    strings.Replace(string(note), "\n\n", "\n", 1),
		"no final \\n":     strings.TrimSuffix(string(note), "\n"),
		"control char":     strings.Replace(string(note), "42", "4\x012", 1),
		"not a checkpoint": "hello\n\n" + string(note[bytes.LastIndex(note, []byte("\n\n"))+2:]),
	} {
		if _, err := proof.OpenCheckpoint(v, "", []byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := proof.NewNoteSigner("pec.test/log", rsaKey); err == nil {
		t.Error("an RSA key was accepted for signature type 0x02")
	}
	if _, err := proof.NewNoteSigner("with space", key); err == nil {
		t.Error("a key name with a space was accepted")
	}
}
