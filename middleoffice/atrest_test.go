package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/evidence"
	"pec/hsm"
	"pec/internal/cms"
	"pec/internal/interop"
	"pec/internal/softhsmtest"
	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
	"pec/proof"
)

// atRestKeys is a token of its own for one test's KEKs: KEK labels are
// per period and month, the same in every test.
func atRestKeys(t testing.TB) hsm.KeyStore {
	t.Helper()
	ks, err := hsm.Open(t.Context(), softhsmtest.NewToken(t, "atrest"), hsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func newAtRest(t testing.TB, inner middleoffice.ExchangeStore, keys hsm.KeyStore, ret middleoffice.RetentionConfig) *middleoffice.AtRest {
	t.Helper()
	a, err := middleoffice.NewAtRest(inner, keys, ret, middleoffice.AtRestOptions{KEKType: hsm.RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAtRestStore: the decorated embedded store passes the store suite.
func TestAtRestStore(t *testing.T) {
	t.Parallel()
	keys := atRestKeys(t)
	dirs := map[middleoffice.ExchangeStore]string{}
	var mu sync.Mutex
	open := func(t *testing.T, dir string) middleoffice.ExchangeStore {
		a := newAtRest(t, openExchangeStore(t, dir), keys, middleoffice.RetentionConfig{})
		mu.Lock()
		dirs[a] = dir
		mu.Unlock()
		return a
	}
	exchangetest.RunStore(t, exchangetest.Factory{
		New: func(t *testing.T) middleoffice.ExchangeStore { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, s middleoffice.ExchangeStore) middleoffice.ExchangeStore {
			mu.Lock()
			dir := dirs[s]
			mu.Unlock()
			return open(t, dir)
		},
	})
}

// testClock is the service's clock, moved by the tests.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// shredEnv is an exchange env whose store is the embedded one behind
// AtRest, with KEKs on a SoftHSM2 token and a clock the test moves.
type shredEnv struct {
	*exchangeEnv
	tb    testing.TB // exchangeEnv's t, before it is made
	keys  hsm.KeyStore
	ret   middleoffice.RetentionConfig
	clock *testClock
	at    *middleoffice.AtRest
	bolt  middleoffice.ExchangeStore // behind at
	// inner and appender, when set, wrap the store behind AtRest and the
	// log at the next open.
	inner    func(middleoffice.ExchangeStore) middleoffice.ExchangeStore
	appender func(evidence.Appender) evidence.Appender
}

func newShredEnv(t *testing.T, ret middleoffice.RetentionConfig, setup ...func(*exchangeEnv, []middleoffice.PartnerConfig)) *shredEnv {
	t.Helper()
	s := &shredEnv{tb: t, keys: atRestKeys(t), ret: ret, clock: new(testClock)}
	// Exchanges never expire here: the retention runs alone.
	s.exchangeEnv = newExchangeEnv(t, middleoffice.ExchangeConfig{ExpireAfter: -1}, append(setup, func(e *exchangeEnv, _ []middleoffice.PartnerConfig) {
		e.now = s.clock.Now
		e.wrap = s.wrap
	})...)
	return s
}

func (s *shredEnv) wrap(store middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
	middleoffice.WithoutInlinePayloads(store) // these tests read the payload files
	if s.inner != nil {
		store = s.inner(store)
	}
	if s.appender != nil {
		ev = s.appender(ev)
	}
	s.bolt = store
	s.at = newAtRest(s.tb, store, s.keys, s.ret)
	return s.at, ev
}

func (s *shredEnv) restart() {
	s.exchangeEnv.wrap = s.wrap
	s.exchangeEnv.restart()
}

// work runs the queue until it has nothing due.
func (s *shredEnv) work() {
	s.t.Helper()
	for range 100 {
		did, err := s.x.Work(s.t.Context())
		if err != nil {
			s.t.Fatalf("Work: %v", err)
		}
		if !did {
			return
		}
	}
	s.t.Fatal("the queue never ran dry")
}

// send submits docs from a to b and delivers them.
func (s *shredEnv) send(docs ...document) *middleoffice.Submission {
	s.t.Helper()
	sub, err := s.x.Submit(s.t.Context(), s.partners["a"].principal, manifest("b", docs...), sources(docs...))
	if err != nil {
		s.t.Fatal(err)
	}
	s.work()
	return sub
}

// payloadFiles are the files of an exchange's payloads in the data
// directory, by name.
func (s *shredEnv) payloadFiles(dir, exchange string) map[string][]byte {
	s.t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(filepath.Join(dir, "payloads", exchange))
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, "payloads", exchange, e.Name()))
		if err != nil {
			s.t.Fatal(err)
		}
		out[e.Name()] = data
	}
	return out
}

// logChain is a certificate of the env's checkpoint key, for bundles.
func (s *shredEnv) logChain() []*x509.Certificate {
	s.t.Helper()
	now := time.Now()
	cert, err := s.ca.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(rand.Int64()), Subject: pkix.Name{CommonName: "PEC evidence log"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, s.noteKey.Public())
	if err != nil {
		s.t.Fatal(err)
	}
	return []*x509.Certificate{cert, s.ca.Cert}
}

// verifyOffline exports the bundle of each evidence id and verifies it
// with no store and no network, as an auditor does.
func (s *shredEnv) verifyOffline(ids ...string) {
	s.t.Helper()
	chain := s.logChain()
	for _, id := range ids {
		s.record(id) // sealed
		data, err := proof.Export(s.t.Context(), s.logStore, id, proof.ExportOptions{LogChain: chain})
		if err != nil {
			s.t.Fatalf("export %s: %v", id, err)
		}
		b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: s.roots()})
		if err != nil {
			s.t.Fatalf("the bundle of %s does not verify: %v", id, err)
		}
		if b == nil {
			s.t.Fatalf("the bundle of %s: nothing verified", id)
		}
	}
}

// TestAtRestNoPlaintext: the payload files of an exchange hold neither
// the documents nor the envelopes' bytes nor the seal's; through the
// service, the envelopes decrypt with the recipient's key, read as a
// stream and at random offsets.
func TestAtRestNoPlaintext(t *testing.T) {
	t.Parallel()
	s := newShredEnv(t, middleoffice.RetentionConfig{})
	ctx := t.Context()
	big := make([]byte, 300_000+17)
	for i := range big {
		big[i] = byte(i * 31)
	}
	docs := []document{newDocument("grand.pdf", big), newDocument("petit.xml", []byte("<piece>justificatif confidentiel</piece>"))}
	sub := s.send(docs...)
	d, err := s.x.Fetch(ctx, s.partners["b"].principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	files := s.payloadFiles(s.dir, sub.Exchange)
	if _, ok := files["data-key"]; !ok || len(files) != 4 {
		t.Fatalf("payload files %v: want the two documents, the seal and the data key", slices.Sorted(func(yield func(string) bool) {
			for n := range files {
				if !yield(n) {
					return
				}
			}
		}))
	}
	secret := [][]byte{big[1000:1032], docs[1].content, d.Seal[len(d.Seal)/2 : len(d.Seal)/2+32]}
	for i, doc := range d.Documents {
		env, err := io.ReadAll(io.NewSectionReader(doc.Envelope, 0, doc.Envelope.Size()))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(env); hex.EncodeToString(sum[:]) != doc.EnvelopeSHA256 {
			t.Errorf("document %d: the envelope read back is not the one its evidence names", i)
		}
		for off := 0; off+32 <= len(env); off += max(32, len(env)/16) {
			secret = append(secret, env[off:off+32])
		}
		// Random offsets, as cms.DecryptTo reads.
		for range 50 {
			off := rand.IntN(len(env))
			buf := make([]byte, rand.IntN(70_000)+1)
			n, err := doc.Envelope.ReadAt(buf, int64(off))
			if want := min(len(buf), len(env)-off); n != want || !bytes.Equal(buf[:n], env[off:off+n]) || (n < len(buf)) != (err == io.EOF) {
				t.Fatalf("document %d: ReadAt(%d, %d) = %d, %v", i, len(buf), off, n, err)
			}
		}
		var plain bytes.Buffer
		if _, err := cms.DecryptTo(&plain, doc.Envelope, doc.Envelope.Size(), cms.RecipientKey{Cert: s.partners["b"].encCert, Key: s.partners["b"].encKey}, nil); err != nil || !bytes.Equal(plain.Bytes(), docs[i].content) {
			t.Errorf("document %d decrypts to %d bytes, %v", i, plain.Len(), err)
		}
	}
	filepath.WalkDir(filepath.Join(s.dir, "payloads"), func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		data, _ := os.ReadFile(path)
		for _, b := range secret {
			if bytes.Contains(data, b) {
				t.Errorf("%s holds %d bytes of a payload in clear", path, len(b))
				break
			}
		}
		return nil
	})
}

// TestAtRestDamage: a payload file altered on disk — a bit flipped, cut
// at a segment boundary, two segments swapped, replaced by another of the
// exchange's payloads or by another exchange's — and a data key record
// altered or moved are ErrPayloadDamaged, never other bytes.
func TestAtRestDamage(t *testing.T) {
	t.Parallel()
	s := newShredEnv(t, middleoffice.RetentionConfig{})
	ctx := t.Context()
	content := make([]byte, 200_000)
	for i := range content {
		content[i] = byte(i)
	}
	one := s.send(newDocument("un.pdf", content), newDocument("deux.pdf", content[:1000]))
	two := s.send(newDocument("trois.pdf", content))
	dir := filepath.Join(s.dir, "payloads")
	path := func(ex, name string) string { return filepath.Join(dir, ex, name) }
	read := func(ex, name string) []byte {
		data, err := os.ReadFile(path(ex, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	const header, seg = 24, 64<<10 + 16
	doc0 := read(one.Exchange, "document-0.p7m")
	cases := map[string]func() []byte{
		"a bit flipped": func() []byte { d := bytes.Clone(doc0); d[header+seg+5] ^= 1; return d },
		"cut at a segment boundary": func() []byte {
			return doc0[:header+2*seg]
		},
		"segments swapped": func() []byte {
			d := bytes.Clone(doc0[:header])
			d = append(d, doc0[header+seg:header+2*seg]...)
			d = append(d, doc0[header:header+seg]...)
			return append(d, doc0[header+2*seg:]...)
		},
		"another payload of the exchange": func() []byte { return read(one.Exchange, "document-1.p7m") },
		"another exchange's":              func() []byte { return read(two.Exchange, "document-0.p7m") },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path(one.Exchange, "document-0.p7m"), mk(), 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path(one.Exchange, "document-0.p7m"), doc0, 0o600)
			p, err := s.store.OpenPayload(ctx, one.Exchange, "document-0.p7m")
			if err == nil {
				_, err = io.Copy(io.Discard, p)
				p.Close()
			}
			if !errors.Is(err, middleoffice.ErrPayloadDamaged) {
				t.Errorf("%v, want ErrPayloadDamaged", err)
			}
		})
	}

	// The data key record: its wrapped key altered, or another
	// exchange's in its place (by a fresh store: no key held in memory).
	key := read(one.Exchange, "data-key")
	for name, mk := range map[string]func() []byte{
		"wrapped key altered": func() []byte {
			i := bytes.Index(key, []byte(`"wrapped":"`)) + len(`"wrapped":"`)
			d := bytes.Clone(key)
			d[i+10] ^= 'A' ^ 'B'
			if d[i+10] == key[i+10] {
				d[i+10] = 'C'
			}
			return d
		},
		"another exchange's record": func() []byte { return read(two.Exchange, "data-key") },
		"another exchange's record, renamed": func() []byte {
			return bytes.Replace(read(two.Exchange, "data-key"), []byte(two.Exchange), []byte(one.Exchange), 1)
		},
		"not JSON": func() []byte { return key[:len(key)/2] },
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path(one.Exchange, "data-key"), mk(), 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path(one.Exchange, "data-key"), key, 0o600)
			fresh := newAtRest(t, &noClose{s.bolt}, s.keys, s.ret)
			p, err := fresh.OpenPayload(ctx, one.Exchange, "document-1.p7m")
			if err == nil {
				p.Close()
			}
			if !errors.Is(err, middleoffice.ErrPayloadDamaged) {
				t.Errorf("%v, want ErrPayloadDamaged", err)
			}
		})
	}
	// Restored, all reads again.
	fresh := newAtRest(t, &noClose{s.bolt}, s.keys, s.ret)
	if p, err := fresh.OpenPayload(ctx, one.Exchange, "document-0.p7m"); err != nil {
		t.Errorf("restored: %v", err)
	} else {
		p.Close()
	}
	if _, err := s.store.CreatePayload(ctx, one.Exchange, "data-key"); err == nil {
		t.Error("a caller may write the data key record")
	}
	if _, err := s.store.OpenPayload(ctx, one.Exchange, "data-key"); err == nil {
		t.Error("a caller may read the data key record")
	}
}

// noClose keeps a store open when a second decorator over it closes.
type noClose struct{ middleoffice.ExchangeStore }

func (noClose) Close() error { return nil }

// copyDir copies the data directory's exchange store, as a backup does.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if rel != "." && rel != "exchanges.db" && rel != "payloads" && !strings.HasPrefix(rel, "payloads"+string(filepath.Separator)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestShredding: at the end of its procedure's retention, an exchange's
// payloads are destroyed with evidence (payload.destroyed naming their
// digests); its status and events stay, fetching it is ErrShredded, and
// every proof about it still verifies offline. A backup taken before
// stays readable until its month's KEK is destroyed, then never again;
// another procedure's exchange is kept meanwhile.
func TestShredding(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	t.Parallel()
	s := newShredEnv(t, middleoffice.RetentionConfig{Default: 3650, Procedures: map[string]middleoffice.Period{"dossier": 30}})
	ctx := t.Context()
	a, b := s.partners["a"], s.partners["b"]
	docs := []document{newDocument("demande.pdf", bytes.Repeat([]byte("%PDF-1.7 demande "), 10000)), newDocument("piece.xml", []byte("<piece>confidentiel</piece>"))}
	sub := s.send(docs...)
	longer, err := s.x.Submit(ctx, a.principal, func() middleoffice.Manifest {
		m := manifest("b", docs[1])
		m.Procedure = "typed"
		m.Documents[0].Type = "invoice"
		return m
	}(), sources(docs[1]))
	if err != nil {
		t.Fatal(err)
	}
	s.work()

	// b fetches and acknowledges.
	d, err := s.x.Fetch(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	envSums := []string{d.Documents[0].EnvelopeSHA256, d.Documents[1].EnvelopeSHA256}
	d.Close()
	seal, err := s.x.Seal(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.ParseSignedData(seal)
	if err != nil {
		t.Fatal(err)
	}
	signedAck := interop.OpenSSL(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-in", s.writeFile("sealed.json", sd.Content), "-signer", b.certFile, "-inkey", b.keyFile)
	if _, err := s.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Signed: signedAck}); err != nil {
		t.Fatal(err)
	}
	before, err := s.x.Status(ctx, a.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.at.DataKey(ctx, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	submitted := before.SubmittedAt
	if info.Retention != 30 || !info.ShredAt.Equal(submitted.Add(30*24*time.Hour)) || !strings.HasPrefix(info.KEK, "pec-atrest-30d-") {
		t.Errorf("data key %+v", info)
	}
	jobs, err := s.store.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, j := range jobs {
		kinds = append(kinds, j.Kind)
	}
	slices.Sort(kinds)
	if want := []string{"destroy-kek", "destroy-kek", "shred", "shred"}; !slices.Equal(kinds, want) {
		t.Errorf("jobs %v, want %v", kinds, want)
	}

	// A backup of the store, now.
	backup := t.TempDir()
	copyDir(t, s.dir, backup)

	// Not due yet: nothing happens.
	s.clock.Advance(29 * 24 * time.Hour)
	s.work()
	if st, _ := s.x.Status(ctx, a.principal, sub.Exchange); st.State != middleoffice.StateAcknowledged {
		t.Fatalf("shredded before its time: %s", st.State)
	}

	// Due: shredded.
	s.clock.Advance(2 * 24 * time.Hour)
	s.work()
	for _, p := range []*testPartner{a, b} {
		st, err := s.x.Status(ctx, p.principal, sub.Exchange)
		if err != nil || st.State != middleoffice.StateShredded {
			t.Fatalf("%s's status after the retention: %+v, %v", p.id, st, err)
		}
		if got, want := eventTypes(st), append(eventTypes(before), evidence.PayloadDestroyed); !slices.Equal(got, want) {
			t.Errorf("%s's events %v, want %v", p.id, got, want)
		}
	}
	if _, err := s.x.Fetch(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrShredded) {
		t.Errorf("Fetch of a shredded exchange: %v", err)
	}
	if _, err := s.x.Seal(ctx, a.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrShredded) {
		t.Errorf("Seal of a shredded exchange: %v", err)
	}
	if _, err := s.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Reject: "late"}); !errors.Is(err, middleoffice.ErrShredded) {
		t.Errorf("Ack of a shredded exchange: %v", err)
	}
	if _, err := s.x.Status(ctx, s.partners["c"].principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("c reads a shredded exchange's status: %v", err)
	}
	for _, name := range []string{"document-0.p7m", "seal.p7m", "acknowledgment.p7m"} {
		if _, err := s.store.OpenPayload(ctx, sub.Exchange, name); !errors.Is(err, middleoffice.ErrShredded) {
			t.Errorf("OpenPayload %s: %v, want ErrShredded", name, err)
		}
	}
	if _, err := s.store.CreatePayload(ctx, sub.Exchange, "acknowledgment.p7m"); !errors.Is(err, middleoffice.ErrShredded) {
		t.Errorf("a payload written to a shredded exchange: %v", err)
	}
	if files := s.payloadFiles(s.dir, sub.Exchange); len(files) != 0 {
		t.Errorf("files left after the shredding: %d", len(files))
	}
	after, _ := s.x.Status(ctx, a.principal, sub.Exchange)
	destroyed := s.record(after.Events[len(after.Events)-1].EvidenceID)
	ackSum := sha256.Sum256(signedAck)
	for name, want := range map[string]string{
		"envelope/0": envSums[0], "envelope/1": envSums[1], "seal": before.Seal.SHA256,
		"acknowledgment": hex.EncodeToString(ackSum[:]), "wrapped-data-key": hex.EncodeToString(info.WrappedSHA256),
	} {
		if got := digest(destroyed, name); got != want {
			t.Errorf("payload.destroyed names %s %s, want %s", name, got, want)
		}
	}
	accepted := s.record(sub.EvidenceID)
	if digest(accepted, "envelope/0") != digest(destroyed, "envelope/0") || destroyed.Subject != sub.Exchange || !slices.Equal(destroyed.Previous, []string{sub.EvidenceID}) {
		t.Errorf("payload.destroyed does not answer the submission's record: %+v", destroyed)
	}
	if recAttr(destroyed, "key_label") != info.KEK || recAttr(destroyed, "retention") != "30d" || recAttr(destroyed, "state") != "acknowledged" {
		t.Errorf("payload.destroyed attributes %+v", destroyed.Attributes)
	}
	// Every proof about the exchange verifies offline, the destruction's too.
	var ids []string
	for _, ev := range after.Events {
		ids = append(ids, ev.EvidenceID)
	}
	s.verifyOffline(ids...)
	// The other procedure's exchange (3650 days) is whole.
	if d, err := s.x.Fetch(ctx, b.principal, longer.Exchange); err != nil {
		t.Errorf("the exchange kept for 10 years: %v", err)
	} else {
		d.Close()
	}

	// The backup, read with the HSM, before the month's KEK is destroyed:
	// readable (what the package doc says a backup reveals).
	readBackup := func() error {
		bolt, err := middleoffice.OpenBoltExchanges(backup)
		if err != nil {
			t.Fatal(err)
		}
		old := newAtRest(t, bolt, s.keys, s.ret)
		defer old.Close()
		p, err := old.OpenPayload(ctx, sub.Exchange, "document-1.p7m")
		if err != nil {
			return err
		}
		defer p.Close()
		var plain bytes.Buffer
		if _, err := cms.DecryptTo(&plain, p, p.Size(), cms.RecipientKey{Cert: b.encCert, Key: b.encKey}, nil); err != nil || !bytes.Equal(plain.Bytes(), docs[1].content) {
			t.Fatalf("the backup's document: %v", err)
		}
		return nil
	}
	if err := readBackup(); err != nil {
		t.Fatalf("the backup before its KEK is destroyed: %v", err)
	}

	// The month over and the period with it: the KEK is destroyed, with
	// evidence; the backup is unreadable from then on.
	y := info.SubmittedAt.UTC()
	monthEnd := time.Date(y.Year(), y.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	s.clock.Advance(monthEnd.Add(30*24*time.Hour).Sub(s.clock.Now()) + time.Minute)
	s.work()
	if _, err := s.keys.Decrypter(ctx, info.KEK); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("the KEK after its epoch: %v", err)
	}
	if err := readBackup(); !errors.Is(err, middleoffice.ErrShredded) {
		t.Errorf("the backup after the KEK's destruction: %v, want ErrShredded", err)
	}
	kekRecords := s.records(info.KEK)
	if len(kekRecords) != 1 || kekRecords[0].Type != evidence.KeyDestroyed || recAttr(kekRecords[0], "key_label") != info.KEK {
		t.Fatalf("key.destroyed records: %+v", kekRecords)
	}
	s.verifyOffline(kekRecords[0].ID)
	// The backup's files hold no plaintext, with or without the HSM.
	filepath.WalkDir(filepath.Join(backup, "payloads", sub.Exchange), func(path string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			if data, _ := os.ReadFile(path); bytes.Contains(data, []byte("%PDF-1.7 demande")) || bytes.Contains(data, []byte("confidentiel")) {
				t.Errorf("%s holds plaintext", path)
			}
		}
		return nil
	})
	// The 10-year exchange's KEK is another: still there.
	if d, err := s.x.Fetch(ctx, b.principal, longer.Exchange); err != nil {
		t.Errorf("the exchange kept for 10 years, after the 30-day KEK's destruction: %v", err)
	} else {
		d.Close()
	}
}

// failRemove is the store behind AtRest whose RemovePayloads fails while
// fail is set: the destruction cut short.
type failRemove struct {
	middleoffice.ExchangeStore
	fail atomic.Bool
}

func (f *failRemove) RemovePayloads(ctx context.Context, exchange string) error {
	if f.fail.Load() {
		return errCrash
	}
	return f.ExchangeStore.RemovePayloads(ctx, exchange)
}

// TestShredCrash: a crash between the destruction and its evidence
// leaves neither without the other once the node is back: the record
// appended once, the step committed, the payloads gone.
func TestShredCrash(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// arm makes the next shredding fail at its point.
		arm func(*shredEnv) func()
	}{
		{"record lost after the destruction", func(s *shredEnv) func() {
			fa := &faultAppender{fail: func(r *evidence.Record) bool { return r.Type == evidence.PayloadDestroyed }}
			s.appender = func(ev evidence.Appender) evidence.Appender { fa.Appender = ev; return fa }
			return func() {
				if !fa.fired.Load() {
					s.t.Error("the fault did not fire")
				}
			}
		}},
		{"record appended, its answer lost", func(s *shredEnv) func() {
			fa := &faultAppender{fail: func(r *evidence.Record) bool { return r.Type == evidence.PayloadDestroyed }, append: true}
			s.appender = func(ev evidence.Appender) evidence.Appender { fa.Appender = ev; return fa }
			return func() {}
		}},
		{"commit lost", func(s *shredEnv) func() {
			fs := &faultStore{failCommit: func(st *middleoffice.Step) bool { return st.To == middleoffice.StateShredded }}
			s.inner = func(st middleoffice.ExchangeStore) middleoffice.ExchangeStore { fs.ExchangeStore = st; return fs }
			return func() {}
		}},
		{"destruction cut short", func(s *shredEnv) func() {
			fr := &failRemove{}
			fr.fail.Store(true)
			s.inner = func(st middleoffice.ExchangeStore) middleoffice.ExchangeStore { fr.ExchangeStore = st; return fr }
			return func() {}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newShredEnv(t, middleoffice.RetentionConfig{Default: 10})
			ctx := t.Context()
			a, b := s.partners["a"], s.partners["b"]
			sub := s.send(newDocument("a.pdf", []byte("confidentiel")))
			check := c.arm(s)
			s.restart() // with the fault
			s.clock.Advance(11 * 24 * time.Hour)
			if did, err := s.x.Work(ctx); !did || err == nil {
				t.Fatalf("the shredding with a fault: %v, %v", did, err)
			}
			check()
			// Meanwhile nobody reads the documents.
			if _, err := s.x.Fetch(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrShredded) {
				t.Errorf("Fetch after a shredding cut short: %v", err)
			}
			// The node dies and comes back without the fault: the queue's
			// recovery and the job's retry finish it.
			s.inner, s.appender = nil, nil
			s.restart()
			if _, err := s.x.Recover(ctx, s.clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			// Shredded by its state before the job comes back, whatever
			// files are left.
			if _, err := s.x.Fetch(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrShredded) {
				t.Errorf("Fetch after the recovery: %v", err)
			}
			s.clock.Advance(time.Hour) // past the retry delay
			s.work()
			st, err := s.x.Status(ctx, a.principal, sub.Exchange)
			if err != nil || st.State != middleoffice.StateShredded {
				t.Fatalf("after the restart: %+v, %v", st, err)
			}
			var destroyed []string
			for _, r := range s.records(sub.Exchange) {
				if r.Type == evidence.PayloadDestroyed {
					destroyed = append(destroyed, r.ID)
				}
			}
			if n := slices.IndexFunc(st.Events, func(e middleoffice.Event) bool { return e.Type == evidence.PayloadDestroyed }); len(destroyed) != 1 || n < 0 || st.Events[n].EvidenceID != destroyed[0] {
				t.Errorf("payload.destroyed records %v, events %v", destroyed, eventTypes(st))
			}
			if files := s.payloadFiles(s.dir, sub.Exchange); len(files) != 0 {
				t.Errorf("%d payload files left", len(files))
			}
			if jobs, _ := s.store.Jobs(ctx); slices.ContainsFunc(jobs, func(j *middleoffice.Job) bool { return j.Kind == middleoffice.JobShred }) {
				t.Error("the shred job is still there")
			}
			s.verifyOffline(destroyed...)
		})
	}
}

// TestShredDeadLetter: a dead letter never reached its recipient, and a
// shredded one does not either: its sender sees it shredded, its
// recipient not at all; an exchange accepted and never delivered is
// shredded the same.
func TestShredDeadLetter(t *testing.T) {
	t.Parallel()
	s := newShredEnv(t, middleoffice.RetentionConfig{Default: 10}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		// b on a webhook this node has no client for: every push fails.
		pcs[1].Channel = middleoffice.Channel{Type: middleoffice.ChannelWebhook, URL: "https://127.0.0.1:9/pec/inbox"}
	})
	ctx := t.Context()
	a, b := s.partners["a"], s.partners["b"]
	dead, err := s.x.Submit(ctx, a.principal, manifest("b", newDocument("a.pdf", []byte("jamais remis"))), sources(newDocument("a.pdf", []byte("jamais remis"))))
	if err != nil {
		t.Fatal(err)
	}
	drain := func() {
		for range 100 {
			if did, _ := s.x.Work(ctx); !did {
				return
			}
		}
	}
	drain()                         // a failed push
	s.clock.Advance(25 * time.Hour) // past dead_letter_after
	drain()
	if st, _ := s.x.Status(ctx, a.principal, dead.Exchange); st.State != middleoffice.StateDeadLetter {
		t.Fatalf("state %s, want dead-letter", st.State)
	}
	s.clock.Advance(10 * 24 * time.Hour)
	s.work()
	st, err := s.x.Status(ctx, a.principal, dead.Exchange)
	if err != nil || st.State != middleoffice.StateShredded {
		t.Fatalf("the sender's status: %+v, %v", st, err)
	}
	if _, err := s.x.Status(ctx, b.principal, dead.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("the recipient reads a shredded dead letter: %v", err)
	}
	if _, err := s.x.Fetch(ctx, b.principal, dead.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("the recipient fetches a shredded dead letter: %v", err)
	}
	if rec := s.record(st.Events[len(st.Events)-1].EvidenceID); rec.Type != evidence.PayloadDestroyed || recAttr(rec, "state") != "dead-letter" || digest(rec, "seal") == "" {
		t.Errorf("payload.destroyed of a dead letter: %+v", rec)
	}
}

// TestRetentionConfig: periods in days or keep, procedures by name.
func TestRetentionConfig(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]middleoffice.Period{"3650d": 3650, "1d": 1, "36500d": 36500, "keep": 0} {
		var p middleoffice.Period
		if err := p.UnmarshalText([]byte(in)); err != nil || p != want {
			t.Errorf("%q: %v, %v", in, p, err)
		}
		if out, _ := p.MarshalText(); string(out) != in {
			t.Errorf("%q marshals to %q", in, out)
		}
	}
	for _, in := range []string{"", "0d", "-1d", "36501d", "10y", "3650", "240h", "+5d", "05d", "d", "1.5d"} {
		var p middleoffice.Period
		if err := p.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %v", in, p)
		}
	}
	if err := (middleoffice.RetentionConfig{Default: 3650, Procedures: map[string]middleoffice.Period{"dossier": 30, "keep-me": 0}}).Validate(); err != nil {
		t.Errorf("a valid section: %v", err)
	}
	err := (middleoffice.RetentionConfig{Default: -1, Procedures: map[string]middleoffice.Period{"Bad Name": 3, "huge": 40000}}).Validate()
	for _, want := range []string{"exchange.retention.default:", `exchange.retention.procedures: "Bad Name"`, "exchange.retention.procedures.huge:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want %q", err, want)
		}
	}
	r := middleoffice.RetentionConfig{Default: 3650, Procedures: map[string]middleoffice.Period{"dossier": 30}}
	if r.For("dossier") != 30 || r.For("other") != 3650 {
		t.Error("For")
	}
}

// TestPrepareKEKs: the KEKs of this month and the next are made ahead,
// once; submissions then find them.
func TestPrepareKEKs(t *testing.T) {
	t.Parallel()
	keys := atRestKeys(t)
	a := newAtRest(t, openExchangeStore(t, t.TempDir()), keys, middleoffice.RetentionConfig{Default: 30})
	defer a.Close()
	now := time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)
	if err := a.PrepareKEKs(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{"pec-atrest-30d-202612", "pec-atrest-30d-202701"} {
		if _, err := keys.Decrypter(t.Context(), label); err != nil {
			t.Errorf("%s: %v", label, err)
		}
	}
	if _, err := keys.Decrypter(t.Context(), "pec-atrest-30d-202702"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("a KEK two months ahead: %v", err)
	}
	// Again, by another node's decorator: the same keys, none made.
	b := newAtRest(t, openExchangeStore(t, t.TempDir()), keys, middleoffice.RetentionConfig{Default: 30})
	defer b.Close()
	if err := b.PrepareKEKs(t.Context(), now); err != nil {
		t.Fatal(err)
	}
}
