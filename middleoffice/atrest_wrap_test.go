package middleoffice

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// countingKEKs is the real key store of a SoftHSM2 token, counting the
// decryptions it is asked for: what the key hierarchy costs the HSM.
type countingKEKs struct {
	hsm.KeyStore
	decrypts atomic.Int64
}

func (c *countingKEKs) Decrypter(ctx context.Context, label string) (crypto.Decrypter, error) {
	d, err := c.KeyStore.Decrypter(ctx, label)
	if err != nil {
		return nil, err
	}
	return &countingDecrypter{d, c}, nil
}

type countingDecrypter struct {
	crypto.Decrypter
	c *countingKEKs
}

func (d *countingDecrypter) Decrypt(r io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	d.c.decrypts.Add(1)
	return d.Decrypter.Decrypt(r, ct, opts)
}

// wrapEnv is a store and the KEKs of a token of its own; clock is the
// AtRest's clock.
type wrapEnv struct {
	inner *BoltExchangeStore
	keys  *countingKEKs
	ret   RetentionConfig
	mu    sync.Mutex
	clock time.Time
}

func newWrapEnv(t *testing.T) *wrapEnv {
	t.Helper()
	ks, err := hsm.Open(t.Context(), softhsmtest.NewToken(t, "wrap"), hsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	inner, err := OpenBoltExchanges(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	return &wrapEnv{inner: inner, keys: &countingKEKs{KeyStore: ks}, ret: RetentionConfig{Default: 30},
		clock: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
}

func (e *wrapEnv) now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clock
}

func (e *wrapEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.clock = e.clock.Add(d)
	e.mu.Unlock()
}

// atRest is a fresh decorator: no key held.
func (e *wrapEnv) atRest(t *testing.T) *AtRest {
	t.Helper()
	a, err := NewAtRest(e.inner, e.keys, e.ret, AtRestOptions{KEKType: hsm.RSA2048, Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// record wraps a fresh data key for exchange id through a.
func (e *wrapEnv) record(t *testing.T, a *AtRest, id string) (*dataKeyRecord, []byte) {
	t.Helper()
	key := newDataKey()
	rec, err := a.writeRecord(t.Context(), &Exchange{ID: id, SubmittedAt: e.now(), Manifest: Manifest{Procedure: "dossier"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return rec, key
}

func (e *wrapEnv) stored(t *testing.T, id string) *dataKeyRecord {
	t.Helper()
	rec, _, err := e.atRest(t).readRecord(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestWrapKeyHSMOnce: the data keys that one node wrapped cost a fresh
// node one HSM decryption in all (their W), not one each; each unwraps to
// its own key, and the records are version 2.
func TestWrapKeyHSMOnce(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	keys := map[string][]byte{}
	for i := range 20 {
		id := fmt.Sprintf("x%d", i)
		rec, key := e.record(t, a, id)
		if rec.Version != 2 || rec.Algorithm != wrapAlgorithm2 || len(rec.Wrapped) != wrappedLen2 {
			t.Fatalf("record %+v, want version 2", rec)
		}
		keys[id] = key
	}
	if n := e.keys.decrypts.Load(); n != 0 {
		t.Fatalf("wrapping made %d HSM decryptions", n)
	}
	// The node that wrapped them knows W: no HSM.
	for id, key := range keys {
		got, err := a.dataKey(t.Context(), id, false)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: %x, %v; want %x", id, got, err, key)
		}
	}
	if n := e.keys.decrypts.Load(); n != 0 {
		t.Fatalf("the wrapping node made %d HSM decryptions", n)
	}
	b := e.atRest(t)
	for id, key := range keys {
		got, err := b.dataKey(t.Context(), id, false)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: %x, %v; want %x", id, got, err, key)
		}
	}
	if n := e.keys.decrypts.Load(); n != 1 {
		t.Errorf("a fresh node unwrapped 20 data keys with %d HSM decryptions, want 1", n)
	}
	// Past heldKeyTTL, W is unwrapped again (once).
	e.advance(heldKeyTTL + time.Second)
	c := e.atRest(t)
	for id := range keys {
		if _, err := c.dataKey(t.Context(), id, false); err != nil {
			t.Fatal(err)
		}
	}
	e.advance(heldKeyTTL + time.Second)
	if _, err := c.unwrap(t.Context(), e.stored(t, "x0")); err != nil {
		t.Fatal(err)
	}
	if n := e.keys.decrypts.Load(); n != 3 {
		t.Errorf("%d HSM decryptions, want 3 (W unwrapped again past its time in memory)", n)
	}
}

// TestDataKeyRecordV1: records of version 1 (the data key RSA-OAEP under
// the KEK itself) stay readable, each unwrapped by the HSM; the wrong
// OAEP label does not unwrap.
func TestDataKeyRecordV1(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	label, _ := kekOf(30, e.now())
	kek, err := a.kek(t.Context(), label)
	if err != nil {
		t.Fatal(err)
	}
	write := func(id string, key, wrapped []byte) {
		rec := dataKeyRecord{Version: 1, Exchange: id, KEK: label, KEKSHA256: kek.sha256, Algorithm: wrapAlgorithm,
			Wrapped: wrapped, Retention: 30, SubmittedAt: e.now(), ShredAt: e.now().Add(30 * 24 * time.Hour)}
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		w, err := e.inner.CreatePayload(t.Context(), id, dataKeyName)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	keys := map[string][]byte{}
	for _, id := range []string{"v1-a", "v1-b"} {
		key := newDataKey()
		wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, kek.pub, key, oaepLabel(id, label))
		if err != nil {
			t.Fatal(err)
		}
		write(id, key, wrapped)
		keys[id] = key
	}
	b := e.atRest(t)
	for id, key := range keys {
		got, err := b.dataKey(t.Context(), id, false)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: %x, %v; want %x", id, got, err, key)
		}
	}
	if n := e.keys.decrypts.Load(); n != 2 {
		t.Errorf("%d HSM decryptions for two version 1 records, want 2", n)
	}
	// Wrapped for another exchange (its OAEP label): damaged.
	wrapped, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, kek.pub, newDataKey(), oaepLabel("v1-a", label))
	write("v1-c", nil, wrapped)
	if _, err := e.atRest(t).dataKey(t.Context(), "v1-c", false); !errors.Is(err, ErrPayloadDamaged) {
		t.Errorf("a version 1 key wrapped for another exchange: %v, want ErrPayloadDamaged", err)
	}
}

// TestWrapKeyRenewed: a W is replaced after wrapKeyAge and after
// maxWrapUses; the records under the old one stay readable.
func TestWrapKeyRenewed(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	r1, k1 := e.record(t, a, "x1")
	r2, _ := e.record(t, a, "x2")
	if !bytes.Equal(r1.WrappingKey, r2.WrappingKey) {
		t.Fatal("two records of one KEK a moment apart under two Ws")
	}
	e.advance(wrapKeyAge)
	r3, _ := e.record(t, a, "x3")
	if bytes.Equal(r1.WrappingKey, r3.WrappingKey) {
		t.Error("W still used after wrapKeyAge")
	}
	a.mu.Lock()
	a.wrapping[r3.KEK].uses = maxWrapUses
	a.mu.Unlock()
	r4, _ := e.record(t, a, "x4")
	if bytes.Equal(r3.WrappingKey, r4.WrappingKey) {
		t.Error("W still used after maxWrapUses")
	}
	if got, err := e.atRest(t).dataKey(t.Context(), "x1", false); err != nil || !bytes.Equal(got, k1) {
		t.Errorf("the first W's record: %x, %v", got, err)
	}
}

// TestWrapKeyShredded: once the KEK is destroyed, the data keys under
// every W it encrypted are gone, for the node that held W and for a fresh
// one (a backup); the KEK made again gets a W of its own.
func TestWrapKeyShredded(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	rec, _ := e.record(t, a, "x1")
	if _, err := a.dataKey(t.Context(), "x1", false); err != nil {
		t.Fatal(err)
	}
	if err := a.DestroyKEK(t.Context(), rec.KEK); err != nil {
		t.Fatal(err)
	}
	for name, x := range map[string]*AtRest{"the node": a, "a fresh node": e.atRest(t)} {
		if _, err := x.dataKey(t.Context(), "x1", false); !errors.Is(err, ErrShredded) {
			t.Errorf("%s, the KEK destroyed: %v, want ErrShredded", name, err)
		}
	}
	again, _ := e.record(t, a, "x2")
	if again.KEK != rec.KEK || bytes.Equal(again.WrappingKey, rec.WrappingKey) || again.KEKSHA256 == rec.KEKSHA256 {
		t.Errorf("after the KEK's destruction, a record under the same W or KEK")
	}
}

// TestWrapKeyTampered: a record whose W, wrapped key, exchange or KEK was
// changed does not unwrap (ErrPayloadDamaged), whether W is held or not.
func TestWrapKeyTampered(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	e.record(t, a, "x1")
	e.record(t, a, "x2")
	other := e.stored(t, "x2")
	e.ret.Procedures = map[string]Period{"dossier": 60} // another KEK
	e.record(t, e.atRest(t), "x3")
	third := e.stored(t, "x3")
	for name, change := range map[string]func(r *dataKeyRecord){
		"wrapped key flipped": func(r *dataKeyRecord) { r.Wrapped[20] ^= 1 },
		"nonce flipped":       func(r *dataKeyRecord) { r.Wrapped[0] ^= 1 },
		"W flipped":           func(r *dataKeyRecord) { r.WrappingKey[10] ^= 1 },
		"another exchange's":  func(r *dataKeyRecord) { r.Wrapped = other.Wrapped },
		"another KEK's W":     func(r *dataKeyRecord) { r.WrappingKey = third.WrappingKey },
		"another KEK, its W": func(r *dataKeyRecord) {
			r.KEK, r.KEKSHA256, r.WrappingKey = third.KEK, third.KEKSHA256, third.WrappingKey
		},
		"exchange renamed (x2)": func(r *dataKeyRecord) { r.Exchange = "x2" },
	} {
		for _, held := range []bool{true, false} {
			rec := e.stored(t, "x1")
			change(rec)
			x := a
			if !held {
				x = e.atRest(t)
			}
			if _, err := x.unwrap(t.Context(), rec); !errors.Is(err, ErrPayloadDamaged) && !(name == "another KEK, its W" && err != nil) {
				t.Errorf("%s (W held: %v): %v, want ErrPayloadDamaged", name, held, err)
			}
		}
	}
}

// TestKEKMadeAhead: in the last week of a month, the first data key
// wrapped has the next month's KEK made in the background; earlier in the
// month, not.
func TestKEKMadeAhead(t *testing.T) {
	t.Parallel()
	e := newWrapEnv(t)
	a := e.atRest(t)
	e.record(t, a, "x1") // 3 November
	next, _ := kekOf(30, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if _, err := e.keys.Decrypter(t.Context(), next); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("next month's KEK on 3 November: %v", err)
	}
	e.advance(24 * 24 * time.Hour) // 27 November
	e.record(t, a, "x2")
	if err := a.Close(); err != nil { // waits for the key made ahead
		t.Fatal(err)
	}
	if _, err := e.keys.Decrypter(t.Context(), next); err != nil {
		t.Errorf("next month's KEK on 27 November: %v", err)
	}
}

// FuzzDataKeyRecord: a stored data key record (a store's bytes, a backup
// restored) is decoded strictly: an error wrapping ErrPayloadDamaged, or
// a record of version 1 or 2 that names this exchange and holds what its
// version needs; never a panic.
func FuzzDataKeyRecord(f *testing.F) {
	f.Add([]byte(`{"v":2,"exchange":"x1","kek":"pec-atrest-30d-202611","kek_sha256":"00","alg":"AES-256-GCM/RSA-OAEP-SHA256","wrapping_key":"AAEC","wrapped":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","retention":"30d","submitted_at":"2026-11-03T10:00:00Z","shred_at":"2026-12-03T10:00:00Z"}`))
	f.Add([]byte(`{"v":1,"exchange":"x1","kek":"pec-atrest-keep-202611","kek_sha256":"00","alg":"RSA-OAEP-SHA256","wrapped":"AAEC","retention":"keep","submitted_at":"2026-11-03T10:00:00Z"}`))
	f.Add([]byte(`{"v":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeDataKeyRecord(data, "x1")
		if err != nil {
			if !errors.Is(err, ErrPayloadDamaged) {
				t.Fatalf("%v, not ErrPayloadDamaged", err)
			}
			return
		}
		switch {
		case rec.Exchange != "x1" || rec.KEK == "":
			t.Fatalf("accepted %+v", rec)
		case rec.Version == 1 && (rec.Algorithm != wrapAlgorithm || len(rec.WrappingKey) != 0):
			t.Fatalf("accepted version 1 %+v", rec)
		case rec.Version == 2 && (rec.Algorithm != wrapAlgorithm2 || len(rec.Wrapped) != wrappedLen2 || len(rec.WrappingKey) == 0):
			t.Fatalf("accepted version 2 %+v", rec)
		case rec.Version != 1 && rec.Version != 2:
			t.Fatalf("accepted version %d", rec.Version)
		}
	})
}
