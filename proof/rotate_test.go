package proof_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/proof"
)

// newLogKey is a second checkpoint key of e's log and its certificate,
// from e's root.
func (e *env) newLogKey(t testing.TB, serial int64) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.root.Issue(&x509.Certificate{
		SerialNumber:       big.NewInt(serial),
		Subject:            pkix.Name{CommonName: "PEC proof log 2", Organization: []string{"PEC test"}},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestNoteSignerRotate: after Rotate the signer signs with the new key's
// ID under the same name; its verifier accepts both keys' notes, a
// verifier of one key only its own; the signature line names the key.
func TestNoteSignerRotate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, err := proof.NewNoteSigner(origin, e.key)
	if err != nil {
		t.Fatal(err)
	}
	text := proof.Checkpoint{Origin: origin, Size: 1, Root: make([]byte, 32)}.Text()
	before, err := s.Sign(text)
	if err != nil {
		t.Fatal(err)
	}
	oldV := s.Verifier()
	key2, _ := e.newLogKey(t, 9)
	if err := s.Rotate(key2); err != nil {
		t.Fatal(err)
	}
	after, err := s.Sign(text)
	if err != nil {
		t.Fatal(err)
	}
	newOnly, _ := proof.NewNoteVerifier(origin, key2.Public())
	if s.KeyID() != newOnly.KeyID() || s.KeyID() == oldV.KeyID() {
		t.Errorf("KeyID %08x after rotation, want %08x", s.KeyID(), newOnly.KeyID())
	}
	if ids := proof.NoteKeyIDs(after, origin); !slices.Equal(ids, []uint32{newOnly.KeyID()}) {
		t.Errorf("the signature line of a new note names keys %08x", ids)
	}
	both := s.Verifier()
	if ids := both.KeyIDs(); !slices.Equal(ids, []uint32{newOnly.KeyID(), oldV.KeyID()}) {
		t.Errorf("the verifier's keys: %08x", ids)
	}
	for _, tc := range []struct {
		name string
		v    *proof.NoteVerifier
		note []byte
		ok   bool
		id   uint32
	}{
		{"both keys, old note", both, before, true, oldV.KeyID()},
		{"both keys, new note", both, after, true, newOnly.KeyID()},
		{"old key, new note", oldV, after, false, 0},
		{"new key, old note", newOnly, before, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, id, err := tc.v.OpenKey(tc.note)
			if (err == nil) != tc.ok || id != tc.id {
				t.Errorf("OpenKey: key %08x, %v; want ok %v, key %08x", id, err, tc.ok, tc.id)
			}
			if !tc.ok && !errors.Is(err, proof.ErrNoteSignature) {
				t.Errorf("err %v, want ErrNoteSignature", err)
			}
		})
	}
	// A rotation to a key the signer had, or to a key that is not P-256,
	// is refused and changes nothing.
	if err := s.Rotate(e.key); err == nil {
		t.Error("a rotation back to a retired key was accepted")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err := s.Rotate(p384); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("a P-384 key: %v", err)
	}
	if s.KeyID() != newOnly.KeyID() {
		t.Error("a refused rotation changed the key")
	}
	// A forged signature under a known key ID of the verifier's refuses
	// the note.
	forged := append([]byte(nil), before...)
	forged[len(forged)-3] ^= 1
	if _, err := both.Open(forged); err == nil {
		t.Error("a changed signature verified")
	}
}

// TestLogRotate rotates the checkpoint key of a log that keeps sealing:
// the heads after are signed by the new key, the bundles of records
// sealed before and after both verify (each carrying the certificate of
// the key of its head), the store audits with both keys and reopens with
// the retired key accepted — and not without it when its newest head is
// the old key's.
func TestLogRotate(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "proof.db")
	s := openBolt(t, path)
	cfg := fastSeal
	cfg.CheckpointFile = filepath.Join(t.TempDir(), "checkpoint")
	l := e.openLog(t, s, cfg)
	oldID, _ := appendSealed(t, l, sampleRecord(1))
	oldKeyID := l.KeyID()

	key2, cert2 := e.newLogKey(t, 10)
	if err := l.Rotate(key2); err != nil {
		t.Fatal(err)
	}
	newID, _ := appendSealed(t, l, sampleRecord(2))
	if ids := proof.NoteKeyIDs(l.Latest().Checkpoint, origin); len(ids) != 1 || ids[0] != l.KeyID() || ids[0] == oldKeyID {
		t.Errorf("the newest checkpoint names keys %08x; the new key is %08x", ids, l.KeyID())
	}
	certs, err := proof.NewLogCerts([]*x509.Certificate{cert2, e.root.Cert}, []*x509.Certificate{e.cert, e.root.Cert})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		cert *x509.Certificate
	}{{oldID, e.cert}, {newID, cert2}} {
		data, err := proof.Export(t.Context(), s, tc.id, proof.ExportOptions{LogCerts: certs})
		if err != nil {
			t.Fatal(err)
		}
		b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots})
		if err != nil {
			t.Fatalf("the bundle of %s: %v", tc.id, err)
		}
		if !b.Certificates[0].Equal(tc.cert) {
			t.Errorf("the bundle of %s carries %q", tc.id, b.Certificates[0].Subject)
		}
	}
	// With the new certificate alone, the old record's head has no
	// certificate: the export says so rather than make a bundle that does
	// not verify.
	onlyNew, _ := proof.NewLogCerts([]*x509.Certificate{cert2, e.root.Cert})
	if _, err := proof.Export(t.Context(), s, oldID, proof.ExportOptions{LogCerts: onlyNew}); err == nil || !strings.Contains(err.Error(), "signed by none of the log keys") {
		t.Errorf("export of an old record without its key's certificate: %v", err)
	}
	l.Close()

	opts := e.auditOptions()
	opts.Verifier = certsVerifier(t, certs)
	if _, err := proof.Audit(t.Context(), s, opts); err != nil {
		t.Errorf("audit with both keys: %v", err)
	}
	opts.Verifier, _ = proof.NewNoteVerifier(origin, key2.Public())
	if _, err := proof.Audit(t.Context(), s, opts); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("audit with the new key alone: %v, want ErrNoteSignature on the old heads", err)
	}

	// A node restarted with the new key: the newest head is the new
	// key's, and the older ones are read only by audit; with the old
	// key's head newest (a rotation while stopped), Open needs the
	// retired key.
	restarted, _ := proof.NewNoteSigner(origin, key2)
	l2, err := proof.Open(t.Context(), s, restarted, e.ts, cfg, proof.Options{})
	if err != nil {
		t.Fatalf("reopen with the new key: %v", err)
	}
	l2.Close()
	s.Close()

	e2 := newEnv(t)
	s2 := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s2.Close()
	l3 := e2.openLog(t, s2, fastSeal)
	appendSealed(t, l3, sampleRecord(1))
	l3.Close()
	key3, _ := e2.newLogKey(t, 11)
	fresh, _ := proof.NewNoteSigner(origin, key3)
	if _, err := proof.Open(t.Context(), s2, fresh, e2.ts, fastSeal, proof.Options{}); !errors.Is(err, proof.ErrNoteSignature) {
		t.Errorf("Open with a new key, the old one not accepted: %v, want ErrNoteSignature", err)
	}
	if err := fresh.AcceptRetired(e2.key.Public()); err != nil {
		t.Fatal(err)
	}
	l4, err := proof.Open(t.Context(), s2, fresh, e2.ts, fastSeal, proof.Options{})
	if err != nil {
		t.Fatalf("Open with the retired key accepted: %v", err)
	}
	appendSealed(t, l4, sampleRecord(2))
	if ids := proof.NoteKeyIDs(l4.Latest().Checkpoint, origin); len(ids) != 1 || ids[0] != fresh.KeyID() {
		t.Errorf("the first seal after the restart is signed by %08x, want the new key %08x", ids, fresh.KeyID())
	}
	l4.Close()
}

func certsVerifier(t testing.TB, c *proof.LogCerts) *proof.NoteVerifier {
	t.Helper()
	v, err := c.Verifier(origin)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLogRotateUnderAppends rotates the key while writers append: no
// append fails, every record is sealed, and every head verifies with one
// of the two keys.
func TestLogRotateUnderAppends(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	key2, cert2 := e.newLogKey(t, 12)
	var stop atomic.Bool
	var failed, appended atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				if _, err := l.Append(t.Context(), sampleRecord(w*100000+i)); err != nil {
					failed.Add(1)
				}
				appended.Add(1)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	if err := l.Rotate(key2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	last, _ := appendSealed(t, l, sampleRecord(999999))
	l.Close()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d appends failed across the rotation", failed.Load(), appended.Load())
	}
	certs, _ := proof.NewLogCerts([]*x509.Certificate{cert2, e.root.Cert}, []*x509.Certificate{e.cert, e.root.Cert})
	opts := e.auditOptions()
	opts.Verifier = certsVerifier(t, certs)
	rep, err := proof.Audit(t.Context(), s, opts)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if rep.Unsealed != 0 || rep.Records < uint64(appended.Load()) {
		t.Errorf("audit: %+v after %d appends", rep, appended.Load())
	}
	if _, err := proof.Export(t.Context(), s, last, proof.ExportOptions{LogCerts: certs}); err != nil {
		t.Error(err)
	}
}
