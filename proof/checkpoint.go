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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// such as an HSM key. Its key can be replaced while it signs ([Rotate]):
// the name stays, the key ID of the signatures changes, and its
// [NoteSigner.Verifier] goes on accepting the keys it replaced. It is safe
// for concurrent use if the keys are.
type NoteSigner struct {
	name string
	cur  atomic.Pointer[signingKey]

	mu       sync.Mutex                   // serialises Rotate and AcceptRetired
	verifier atomic.Pointer[NoteVerifier] // the current key first, then the retired ones
}

// signingKey is one key of a NoteSigner and its key ID.
type signingKey struct {
	id  uint32
	key crypto.Signer
}

// NoteVerifier checks the signatures of one log's keys on notes: one key,
// or the successive keys of a log whose key was rotated (all under one
// name, each with its key ID). It is immutable.
type NoteVerifier struct {
	name string
	keys []noteKey // the first is the current key
}

// noteKey is one public key of a NoteVerifier.
type noteKey struct {
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

func keyInfo(name string, pub crypto.PublicKey) (noteKey, error) {
	if !validKeyName(name) {
		return noteKey{}, fmt.Errorf("proof: note key name %q: must be non-empty, with no space or +", name)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return noteKey{}, fmt.Errorf("proof: note key %q: an ECDSA P-256 key is required (signature type 0x02), not %T", name, pub)
	}
	spki, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil {
		return noteKey{}, fmt.Errorf("proof: note key %q: %w", name, err)
	}
	sum := sha256.Sum256(spki)
	return noteKey{id: binary.BigEndian.Uint32(sum[:4]), pub: ec, spki: spki}, nil
}

// NewNoteSigner signs with key under name (a schema-less URL such as
// "pec.example.org/proof", which is also the log's origin).
func NewNoteSigner(name string, key crypto.Signer) (*NoteSigner, error) {
	if key == nil {
		return nil, errors.New("proof: a note signer needs a key")
	}
	k, err := keyInfo(name, key.Public())
	if err != nil {
		return nil, err
	}
	s := &NoteSigner{name: name}
	s.cur.Store(&signingKey{id: k.id, key: key})
	s.verifier.Store(&NoteVerifier{name: name, keys: []noteKey{k}})
	return s, nil
}

// Name is the key name.
func (s *NoteSigner) Name() string { return s.name }

// KeyID is the key ID of the signatures of the current key.
func (s *NoteSigner) KeyID() uint32 { return s.cur.Load().id }

// Public is the current public key.
func (s *NoteSigner) Public() crypto.PublicKey { return s.cur.Load().key.Public() }

// Verifier is the verifier of this signer's notes: those of the current
// key, and of the keys it replaced or was told to accept.
func (s *NoteSigner) Verifier() *NoteVerifier { return s.verifier.Load() }

// Rotate makes key the signer's key: every note signed from now on is
// signed by it (a Sign under way finishes with the old one), under the
// same name with the new key's ID. The key replaced stays in
// [NoteSigner.Verifier], so that notes it signed still verify. The key
// must be ECDSA P-256 and new to the signer.
func (s *NoteSigner) Rotate(key crypto.Signer) error {
	if key == nil {
		return errors.New("proof: rotate: a note signer needs a key")
	}
	k, err := keyInfo(s.name, key.Public())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.verifier.Load()
	if v.hasKey(k.id) {
		return fmt.Errorf("proof: rotate: the key %08x of %s already signed for it: a rotation needs a new key", k.id, s.name)
	}
	s.verifier.Store(&NoteVerifier{name: s.name, keys: append([]noteKey{k}, v.keys...)})
	s.cur.Store(&signingKey{id: k.id, key: key})
	return nil
}

// AcceptRetired adds pub, a key that signed notes of this signer before
// (a key rotated out), to [NoteSigner.Verifier]. A key it has already is
// ignored.
func (s *NoteSigner) AcceptRetired(pub crypto.PublicKey) error {
	k, err := keyInfo(s.name, pub)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.verifier.Load()
	if v.hasKey(k.id) {
		return nil
	}
	s.verifier.Store(&NoteVerifier{name: s.name, keys: append(slices.Clip(v.keys), k)})
	return nil
}

// Sign returns the signed note of text, which must end in a newline,
// hold no control character but newlines, and leave the signed note
// within the 64 KiB that Open accepts.
func (s *NoteSigner) Sign(text []byte) ([]byte, error) {
	if err := checkNoteText(text); err != nil {
		return nil, err
	}
	k := s.cur.Load()
	digest := sha256.Sum256(text)
	sig, err := k.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("proof: sign note: %w", err)
	}
	blob := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(sig)), k.id)
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
	k, err := keyInfo(name, pub)
	if err != nil {
		return nil, err
	}
	return &NoteVerifier{name: name, keys: []noteKey{k}}, nil
}

// NewNoteVerifierKeys verifies the signatures of any of the keys pubs of
// name: the successive keys of a log, the current one first (whose ID
// [NoteVerifier.KeyID] and [NoteVerifier.String] give).
func NewNoteVerifierKeys(name string, pubs ...crypto.PublicKey) (*NoteVerifier, error) {
	if len(pubs) == 0 {
		return nil, fmt.Errorf("proof: note verifier %q: no key", name)
	}
	v := &NoteVerifier{name: name}
	for _, pub := range pubs {
		k, err := keyInfo(name, pub)
		if err != nil {
			return nil, err
		}
		if !v.hasKey(k.id) {
			v.keys = append(v.keys, k)
		}
	}
	return v, nil
}

func (v *NoteVerifier) hasKey(id uint32) bool {
	return slices.ContainsFunc(v.keys, func(k noteKey) bool { return k.id == id })
}

// KeyIDs are the key IDs of every key of v, the current one first.
func (v *NoteVerifier) KeyIDs() []uint32 {
	ids := make([]uint32, len(v.keys))
	for i, k := range v.keys {
		ids[i] = k.id
	}
	return ids
}

// Name is the key name.
func (v *NoteVerifier) Name() string { return v.name }

// KeyID is the key ID of the signatures of the (current) key.
func (v *NoteVerifier) KeyID() uint32 { return v.keys[0].id }

// String is the (current) verifier key in the text form of
// golang.org/x/mod's note package: name+hex key ID+base64(type byte ||
// SPKI DER).
func (v *NoteVerifier) String() string {
	k := v.keys[0]
	return fmt.Sprintf("%s+%08x+%s", v.name, k.id, base64.StdEncoding.EncodeToString(append([]byte{SigTypeECDSA}, k.spki...)))
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
	if binary.BigEndian.Uint32(id) != v.KeyID() {
		return nil, errors.New("proof: verifier key: the key id does not match the key")
	}
	return v, nil
}

// Open checks that note carries a valid signature of one of v's keys and
// returns its text. Signatures of other keys are ignored, as signed-note
// wants (they may be witnesses' cosignatures); a signature of v's name and
// of one of its key IDs that does not verify rejects the note.
func (v *NoteVerifier) Open(note []byte) ([]byte, error) {
	text, _, err := v.OpenKey(note)
	return text, err
}

// OpenKey is Open, also returning the key ID of the signature that
// verified (the first, if several of v's keys signed): which key of the
// log signed the note.
func (v *NoteVerifier) OpenKey(note []byte) (text []byte, keyID uint32, err error) {
	text, keyID, err = v.openKey(note)
	if err != nil {
		return nil, 0, err
	}
	return text, keyID, nil
}

func (v *NoteVerifier) openKey(note []byte) ([]byte, uint32, error) {
	if len(note) > maxNoteSize {
		return nil, 0, fmt.Errorf("%w: over %d bytes", ErrMalformedNote, maxNoteSize)
	}
	if !utf8.Valid(note) {
		return nil, 0, fmt.Errorf("%w: not UTF-8", ErrMalformedNote)
	}
	split := bytes.LastIndex(note, []byte("\n\n"))
	if split < 0 {
		return nil, 0, fmt.Errorf("%w: no signature block", ErrMalformedNote)
	}
	text, sigs := note[:split+1], note[split+2:]
	if err := checkNoteText(text); err != nil {
		return nil, 0, err
	}
	if len(sigs) == 0 || sigs[len(sigs)-1] != '\n' {
		return nil, 0, fmt.Errorf("%w: the signatures must end in a newline", ErrMalformedNote)
	}
	verified, signer := false, uint32(0)
	lines := strings.Split(string(sigs[:len(sigs)-1]), "\n")
	if len(lines) > 100 {
		return nil, 0, fmt.Errorf("%w: too many signatures", ErrMalformedNote)
	}
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, "— ")
		if !ok {
			return nil, 0, fmt.Errorf("%w: a signature line must start with an em dash and a space", ErrMalformedNote)
		}
		name, b64, ok := strings.Cut(rest, " ")
		blob, err := base64.StdEncoding.DecodeString(b64)
		if !ok || !validKeyName(name) || err != nil || len(blob) < 5 || base64.StdEncoding.EncodeToString(blob) != b64 {
			return nil, 0, fmt.Errorf("%w: bad signature line", ErrMalformedNote)
		}
		if name != v.name {
			continue
		}
		id := binary.BigEndian.Uint32(blob)
		i := slices.IndexFunc(v.keys, func(k noteKey) bool { return k.id == id })
		if i < 0 {
			continue
		}
		digest := sha256.Sum256(text)
		if !ecdsa.VerifyASN1(v.keys[i].pub, digest[:], blob[4:]) {
			return nil, 0, fmt.Errorf("%w: the signature of %s (key ID %08x) does not verify", ErrNoteSignature, v.name, id)
		}
		if !verified {
			verified, signer = true, id
		}
	}
	if !verified {
		return nil, 0, fmt.Errorf("%w: no signature of %s (%s)", ErrNoteSignature, v.name, v.keyIDText())
	}
	return text, signer, nil
}

// keyIDText names v's key IDs for an error.
func (v *NoteVerifier) keyIDText() string {
	if len(v.keys) == 1 {
		return fmt.Sprintf("key ID %08x", v.keys[0].id)
	}
	ids := make([]string, len(v.keys))
	for i, k := range v.keys {
		ids[i] = fmt.Sprintf("%08x", k.id)
	}
	return "key IDs " + strings.Join(ids, ", ")
}

// NoteKeyIDs are the key IDs of the signature lines of name in note,
// unverified, in their order: which keys claim to have signed it. A note
// that is not a signed note has none.
func NoteKeyIDs(note []byte, name string) []uint32 {
	split := bytes.LastIndex(note, []byte("\n\n"))
	if split < 0 || len(note) > maxNoteSize {
		return nil
	}
	var ids []uint32
	for line := range strings.Lines(string(note[split+2:])) {
		rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "— ")
		if !ok {
			continue
		}
		n, b64, ok := strings.Cut(rest, " ")
		blob, err := base64.StdEncoding.DecodeString(b64)
		if ok && n == name && err == nil && len(blob) >= 5 {
			ids = append(ids, binary.BigEndian.Uint32(blob))
		}
	}
	return ids
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
