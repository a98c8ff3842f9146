package proof

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SigTypeECDSA is the C2SP signed-note signature type of our tree heads:
// 0x02, "ECDSA signatures as implemented by github.com/transparency-dev/
// witness" — an ASN.1 DER ECDSA signature over SHA-256 of the note text,
// with NIST P-256, and the key ID the first four bytes of SHA-256 of the
// DER SubjectPublicKeyInfo. (Ed25519, type 0x01 of golang.org/x/mod's
// note package, is not offered by the HSMs we use.)
const SigTypeECDSA = 0x02

// Why a note or checkpoint is refused. Test with errors.Is.
var (
	// ErrMalformedNote: not a signed note (c2sp.org/signed-note) or not a
	// checkpoint (c2sp.org/tlog-checkpoint).
	ErrMalformedNote = errors.New("proof: malformed signed note")
	// ErrNoteSignature: no signature of the expected key, or one that
	// does not verify.
	ErrNoteSignature = errors.New("proof: no valid signature of the log key on the note")
)

// maxNoteSize bounds a note; a checkpoint with a few cosignatures is well
// under a kilobyte.
const maxNoteSize = 64 << 10

// NoteSigner signs notes (c2sp.org/signed-note) with an ECDSA P-256 key,
// such as an HSM key. It is safe for concurrent use if the key is.
type NoteSigner struct {
	name string
	id   uint32
	key  crypto.Signer
}

// NoteVerifier checks the signatures of one key on notes.
type NoteVerifier struct {
	name string
	id   uint32
	pub  *ecdsa.PublicKey
	spki []byte
}

func validKeyName(name string) bool {
	if name == "" || !utf8.ValidString(name) || strings.ContainsRune(name, '+') {
		return false
	}
	for _, r := range name {
		if unicode.IsSpace(r) || r < 0x20 {
			return false
		}
	}
	return true
}

func keyInfo(name string, pub crypto.PublicKey) (*ecdsa.PublicKey, []byte, uint32, error) {
	if !validKeyName(name) {
		return nil, nil, 0, fmt.Errorf("proof: note key name %q: must be non-empty, with no space or +", name)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, nil, 0, fmt.Errorf("proof: note key %q: an ECDSA P-256 key is required (signature type 0x02), not %T", name, pub)
	}
	spki, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("proof: note key %q: %w", name, err)
	}
	sum := sha256.Sum256(spki)
	return ec, spki, binary.BigEndian.Uint32(sum[:4]), nil
}

// NewNoteSigner signs with key under name (a schema-less URL such as
// "pec.example.org/proof", which is also the log's origin).
func NewNoteSigner(name string, key crypto.Signer) (*NoteSigner, error) {
	if key == nil {
		return nil, errors.New("proof: a note signer needs a key")
	}
	_, _, id, err := keyInfo(name, key.Public())
	if err != nil {
		return nil, err
	}
	return &NoteSigner{name: name, id: id, key: key}, nil
}

// Name is the key name.
func (s *NoteSigner) Name() string { return s.name }

// KeyID is the key ID of the signatures.
func (s *NoteSigner) KeyID() uint32 { return s.id }

// Public is the public key.
func (s *NoteSigner) Public() crypto.PublicKey { return s.key.Public() }

// Verifier is the verifier of this signer's notes.
func (s *NoteSigner) Verifier() *NoteVerifier {
	v, _ := NewNoteVerifier(s.name, s.key.Public())
	return v
}

// Sign returns the signed note of text, which must end in a newline,
// hold no control character but newlines, and leave the signed note
// within the 64 KiB that Open accepts.
func (s *NoteSigner) Sign(text []byte) ([]byte, error) {
	if err := checkNoteText(text); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(text)
	sig, err := s.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("proof: sign note: %w", err)
	}
	blob := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(sig)), s.id)
	blob = append(blob, sig...)
	var b bytes.Buffer
	b.Grow(len(text) + len(s.name) + 140)
	b.Write(text)
	b.WriteString("\n— ")
	b.WriteString(s.name)
	b.WriteByte(' ')
	b.WriteString(base64.StdEncoding.EncodeToString(blob))
	b.WriteByte('\n')
	if b.Len() > maxNoteSize {
		return nil, fmt.Errorf("%w: the signed note is over %d bytes, which Open refuses", ErrMalformedNote, maxNoteSize)
	}
	return b.Bytes(), nil
}

func checkNoteText(text []byte) error {
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return fmt.Errorf("%w: the text must end in a newline", ErrMalformedNote)
	}
	if !utf8.Valid(text) {
		return fmt.Errorf("%w: not UTF-8", ErrMalformedNote)
	}
	for _, c := range text {
		if c < 0x20 && c != '\n' {
			return fmt.Errorf("%w: a control character", ErrMalformedNote)
		}
	}
	return nil
}

// NewNoteVerifier verifies the signatures of name's key pub.
func NewNoteVerifier(name string, pub crypto.PublicKey) (*NoteVerifier, error) {
	ec, spki, id, err := keyInfo(name, pub)
	if err != nil {
		return nil, err
	}
	return &NoteVerifier{name: name, id: id, pub: ec, spki: spki}, nil
}

// Name is the key name.
func (v *NoteVerifier) Name() string { return v.name }

// KeyID is the key ID of the signatures.
func (v *NoteVerifier) KeyID() uint32 { return v.id }

// String is the verifier key in the text form of golang.org/x/mod's note
// package: name+hex key ID+base64(type byte || SPKI DER).
func (v *NoteVerifier) String() string {
	return fmt.Sprintf("%s+%08x+%s", v.name, v.id, base64.StdEncoding.EncodeToString(append([]byte{SigTypeECDSA}, v.spki...)))
}

// ParseNoteVerifier reads a verifier key written by [NoteVerifier.String].
func ParseNoteVerifier(vkey string) (*NoteVerifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	idHex, keyB64, ok2 := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if !ok1 || !ok2 || len(idHex) != 8 || err != nil || len(key) < 2 || key[0] != SigTypeECDSA {
		return nil, errors.New("proof: malformed verifier key (name+keyid+base64 of 0x02 and the public key)")
	}
	id, err := hex.DecodeString(idHex)
	if err != nil {
		return nil, errors.New("proof: malformed verifier key id")
	}
	pub, err := x509.ParsePKIXPublicKey(key[1:])
	if err != nil {
		return nil, fmt.Errorf("proof: verifier key: %w", err)
	}
	v, err := NewNoteVerifier(name, pub)
	if err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(id) != v.id {
		return nil, errors.New("proof: verifier key: the key id does not match the key")
	}
	return v, nil
}

// Open checks that note carries a valid signature of v's key and returns
// its text. Signatures of other keys are ignored, as signed-note wants
// (they may be witnesses' cosignatures); a signature of v's name and ID
// that does not verify rejects the note.
func (v *NoteVerifier) Open(note []byte) ([]byte, error) {
	if len(note) > maxNoteSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMalformedNote, maxNoteSize)
	}
	if !utf8.Valid(note) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrMalformedNote)
	}
	split := bytes.LastIndex(note, []byte("\n\n"))
	if split < 0 {
		return nil, fmt.Errorf("%w: no signature block", ErrMalformedNote)
	}
	text, sigs := note[:split+1], note[split+2:]
	if err := checkNoteText(text); err != nil {
		return nil, err
	}
	if len(sigs) == 0 || sigs[len(sigs)-1] != '\n' {
		return nil, fmt.Errorf("%w: the signatures must end in a newline", ErrMalformedNote)
	}
	verified := false
	lines := strings.Split(string(sigs[:len(sigs)-1]), "\n")
	if len(lines) > 100 {
		return nil, fmt.Errorf("%w: too many signatures", ErrMalformedNote)
	}
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, "— ")
		if !ok {
			return nil, fmt.Errorf("%w: a signature line must start with an em dash and a space", ErrMalformedNote)
		}
		name, b64, ok := strings.Cut(rest, " ")
		blob, err := base64.StdEncoding.DecodeString(b64)
		if !ok || !validKeyName(name) || err != nil || len(blob) < 5 || base64.StdEncoding.EncodeToString(blob) != b64 {
			return nil, fmt.Errorf("%w: bad signature line", ErrMalformedNote)
		}
		if name != v.name || binary.BigEndian.Uint32(blob) != v.id {
			continue
		}
		digest := sha256.Sum256(text)
		if !ecdsa.VerifyASN1(v.pub, digest[:], blob[4:]) {
			return nil, fmt.Errorf("%w: the signature of %s does not verify", ErrNoteSignature, v.name)
		}
		verified = true
	}
	if !verified {
		return nil, fmt.Errorf("%w: no signature of %s (key ID %08x)", ErrNoteSignature, v.name, v.id)
	}
	return text, nil
}

// Checkpoint is a tree head in the form of c2sp.org/tlog-checkpoint: the
// log's origin, its size and its RFC 9162 root hash.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte // SHA-256, 32 bytes
}

// Text is the checkpoint's note text: origin, decimal size and base64 root
// hash, one a line.
func (c Checkpoint) Text() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root))
}

// ParseCheckpoint reads a checkpoint's note text. Extension lines after
// the root are allowed by tlog-checkpoint and ignored.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	if err := checkNoteText(text); err != nil {
		return Checkpoint{}, err
	}
	lines := strings.SplitN(string(text), "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, fmt.Errorf("%w: a checkpoint has an origin, a size and a root hash", ErrMalformedNote)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint size %q", ErrMalformedNote, lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != sha256.Size || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint root hash %q", ErrMalformedNote, lines[2])
	}
	if lines[0] == "" {
		return Checkpoint{}, fmt.Errorf("%w: empty checkpoint origin", ErrMalformedNote)
	}
	return Checkpoint{Origin: lines[0], Size: size, Root: root}, nil
}

// OpenCheckpoint verifies note with v and reads its checkpoint, which must
// be of origin (the key name when origin is empty).
func OpenCheckpoint(v *NoteVerifier, origin string, note []byte) (Checkpoint, error) {
	text, err := v.Open(note)
	if err != nil {
		return Checkpoint{}, err
	}
	cp, err := ParseCheckpoint(text)
	if err != nil {
		return Checkpoint{}, err
	}
	if origin == "" {
		origin = v.name
	}
	if cp.Origin != origin {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint of log %q, not %q", ErrMalformedNote, cp.Origin, origin)
	}
	return cp, nil
}
