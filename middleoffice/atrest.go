package middleoffice

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"pec/hsm"
)

// Errors of payloads at rest.
var (
	// ErrShredded: the exchange's retention ended and its payloads were
	// destroyed (crypto-shredding): its status and its proofs remain, its
	// documents do not. The gateway answers it 410 Gone.
	ErrShredded = errors.New("middleoffice: the exchange's payloads were destroyed at the end of its retention")
	// ErrPayloadDamaged: a payload at rest that does not authenticate —
	// altered, truncated, reordered, or not the payload of this name and
	// exchange.
	ErrPayloadDamaged = errors.New("middleoffice: payload damaged at rest")
)

// KEKStore is what AtRest needs of hsm.KeyStore: the key-encryption keys
// are RSA keys of the HSM, found, made and destroyed by label.
type KEKStore interface {
	Decrypter(ctx context.Context, label string) (crypto.Decrypter, error)
	GenerateKey(ctx context.Context, label string, kt hsm.KeyType) (crypto.Signer, error)
	DestroyKey(ctx context.Context, label string) error
}

var _ KEKStore = hsm.KeyStore(nil)

// AtRestOptions hold the optional settings of AtRest; the zero value
// works.
type AtRestOptions struct {
	Logger *slog.Logger // nil: discard
	// KEKType is the type of the KEKs made: RSA2048 or RSA3072 (0).
	KEKType hsm.KeyType
	// Now is the clock of the data keys kept in memory; nil: time.Now.
	Now func() time.Time
}

// AtRest is an [ExchangeStore] that wraps another one (the embedded
// [BoltExchangeStore] or the PostgreSQL store alike) and encrypts every
// payload of an exchange — its documents' envelopes, its seal, its
// recipient's acknowledgment — under that exchange's own random data key,
// before the payload reaches the store. The envelopes are encrypted for
// their recipient already; the layer at rest is what lets the platform
// make a dossier unreadable at the end of its retention, everywhere,
// backups included, though the recipient keeps its key for years.
//
// The file format, version 1 (a STREAM construction, as in age's payload:
// Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption
// and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015):
//
//	header   "PEC-AR1\n" (8 bytes) || salt (16 random bytes)
//	segments AES-256-GCM(K, nonce_i, plaintext_i), each with its 16-byte tag
//	K        HKDF-SHA256(data key, salt, "pec at-rest payload v1" 0x00 exchange 0x00 name), 32 bytes
//	nonce_i  i as 11 bytes, big-endian || 0x01 for the last segment, 0x00 before
//
// Every segment holds 64 KiB of plaintext but the last, which holds 1 to
// 64 KiB (0 only when the whole payload is empty). A segment's position and
// whether it is the last are authenticated by its nonce, and the exchange
// and the payload's name by the key: a reordered, truncated, extended or
// transplanted file (another payload's, another exchange's) fails to
// decrypt ([ErrPayloadDamaged]), never yields other plaintext. Opening a
// payload authenticates its last segment, so that Size is known to be
// right; reads then decrypt one segment at a time, so that a Payload still
// reads in constant memory, sequentially or at any offset (io.ReaderAt).
//
// # Data keys and key-encryption keys
//
// An exchange's data key (32 random bytes) is made when its first payload
// is written, kept in memory while the submission streams its documents,
// and wrapped when the exchange is created ([ExchangeStore.Prepare] with
// Step.Create, which names its procedure and submission time) under the
// key-encryption key (KEK) of its retention epoch: an RSA key in the HSM
// (hsm.KeyStore; 3072 bits unless AtRestOptions.KEKType says otherwise)
// labelled pec-atrest-<period>-<YYYYMM> — the procedure's retention period
// ("3650d", or "keep") and the UTC month of the submission. The KEK never
// leaves the HSM. The wrapped key lives with the exchange, as a small
// record that the store keeps beside the payloads (the payload named
// "data-key", which callers cannot name), and is written before the step
// that creates the exchange: an exchange never exists without its data
// key, and the same Prepare enqueues the exchange's shredding (JobShred,
// due at the end of its retention) and the destruction of its KEK
// (JobDestroyKEK, see below) in the one transaction that creates it.
//
// The wrapping (record version 2) goes through an intermediate key, as
// envelope encryption with a cached data-encryption key does (NIST SP
// 800-57 part 1, section 6.1.2, key-wrapping keys): each node makes, per
// KEK, a random 256-bit wrapping key W, encrypts W once under the KEK's
// public key (RSA-OAEP with SHA-256, RFC 8017 section 7.1, the OAEP label
// naming the KEK), and wraps each data key under W with AES-256-GCM
// (NIST SP 800-38D; a random 96-bit nonce, the exchange and the KEK as
// additional data, so that a wrapped key moved to another exchange does
// not open). Every record carries W encrypted under the KEK beside its
// own wrapped data key:
//
//	{"v":2, "exchange", "kek", "kek_sha256", "alg":"AES-256-GCM/RSA-OAEP-SHA256",
//	 "wrapping_key": RSA-OAEP(KEK, W, label "pec at-rest wrapping key v2" 0x00 kek),
//	 "wrapped": nonce || AES-256-GCM(W, nonce, data key, "pec at-rest data key v2" 0x00 exchange 0x00 kek), ...}
//
// So a wrap costs one AES-GCM encryption instead of an RSA public-key
// operation, and an unwrap one AES-GCM decryption once W is known: the
// HSM decrypts each W once (then held in memory for heldKeyTTL), instead
// of every evicted data key. A W wraps at most maxWrapUses data keys and
// is replaced after wrapKeyAge (far below the 2^32 random nonces that SP
// 800-38D section 8.3 allows one key). The shredding properties are those
// of one level: W exists outside memory only encrypted under its KEK, in
// the records, so destroying the KEK makes every W it encrypted, and every
// data key wrapped under those, unrecoverable, in the store and in every
// copy of it; DestroyKEK forgets the Ws and data keys held for it. Records
// of version 1 (the data key RSA-OAEP-encrypted under the KEK directly,
// the OAEP label "pec at-rest data key v1" 0x00 exchange 0x00 kek) stay
// readable, each unwrapped by the HSM.
//
// The KEKs of this month and the next are made ahead ([AtRest.PrepareKEKs],
// at the node's start), and in the last week of a month the first data key
// wrapped under its KEK has the next month's made in the background: no
// submission waits for a key generation (seconds of RSA-3072 in SoftHSM2).
//
// Recently used data keys stay in memory (a few thousand, for minutes) so
// that the seal written just after a submission, and the documents of one
// fetch, cost no unwrapping each; a shredding forgets the key.
//
// # Retention and shredding
//
// The retention of an exchange is its procedure's ([RetentionConfig]),
// counted from its submission — the time its submission.accepted record
// holds — and not from its acknowledgment: the submission time is known
// when the data key is wrapped, so the epoch KEK can be chosen then and is
// sure to outlive no dossier it wraps by more than one epoch, whereas an
// acknowledgment may come late, or never (an exchange that expires, a
// dead letter). A change of the configuration applies to the exchanges
// submitted after it.
//
// When an exchange is due, the work queue's JobShred ([Exchanges.Run])
// first writes its payload.destroyed record to the outbox (the step that
// puts the exchange in [StateShredded]), then destroys its data key and
// its payloads ([AtRest.Shred]: the "data-key" record and every payload
// removed from the store), then appends the record and commits the step;
// a crash anywhere in between is finished by the recovery of the outbox
// and the job, which destroys again (idempotent) before it is done: the
// destruction is never without its evidence, nor the evidence without the
// destruction. (Until the job is back after a crash, files of an exchange
// shredded by its state may still be on disk: the service serves none,
// refusing every read of a shredded exchange by its state.) The exchange itself, its events and its evidence stay: its
// status still shows, and every proof about it still verifies, since
// records hold digests, never payloads. Fetching, acknowledging or reading
// the seal of a shredded exchange is ErrShredded.
//
// A KEK wraps the data keys of one retention period for one month: once
// that month is over and the period has passed since its end, every
// dossier it wraps is past retention, and JobDestroyKEK destroys it in the
// HSM (hsm.KeyStore.DestroyKey) and records key.destroyed.
//
// # What a copy of the store reveals
//
// A backup of the store (the data directory, a database dump) holds, for
// every exchange, its metadata in clear — the parties, the manifest
// (subject, reference, document names, sizes and digests), the events —
// and its payloads encrypted under its data key, itself wrapped by its
// epoch KEK. Removing an exchange's data key from the live store does not
// remove it from the backups, nor, right away, from the disk (a file
// unlinked, a row deleted keep their bytes until reused or vacuumed); what
// shreds is the destruction of the KEK. So, until its KEK is destroyed — at
// most one month after the last dossier it wraps is past retention — a
// copy of the store is readable by whoever can also make the HSM decrypt
// with the KEK (the platform itself, or someone with the token and its
// PIN); after it, by nobody. The HSM's own backups must then not outlive
// the KEK: a token backup restored brings the KEK back, and with it every
// copy of the store made before. Keys destroyed on a software key store
// (hsm.key_dir) may survive in the file system's blocks.
//
// # Limits
//
// KEKs are made on first use if not ahead ([AtRest.PrepareKEKs]): nodes
// sharing one HSM token should not make the same KEK at the same moment
// (two keys with one label are an error to every later use); start them
// one after the other, or make the month's KEKs ahead. Several nodes must
// share the HSM token that holds the KEKs; a node that had used a KEK
// another node destroyed sees it, in hsm, as a key gone with its token
// (see hsm's "Destroying keys"). Payloads written before the decorator
// was put in front of a store are not readable through it, and an
// exchange created before has no data key: new payloads of it are
// refused (ErrPayloadDamaged).
//
// It is safe for concurrent use.
type AtRest struct {
	inner   ExchangeStore
	keks    KEKStore
	ret     RetentionConfig
	kekType hsm.KeyType
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	pending  map[string]*heldKey // exchange → data key not wrapped yet (a submission under way)
	cache    map[string]*heldKey // exchange → data key unwrapped lately
	pubs     map[string]*kekPublic
	wrapping map[string]*wrapKey   // KEK label → this node's current W for it
	wrapKeys map[[32]byte]*wrapKey // SHA-256 of W's encryption under its KEK → W, made or unwrapped lately
	ahead    map[string]bool       // KEK labels being made ahead in the background

	genMu  sync.Mutex // the making of KEKs
	bg     sync.WaitGroup
	closed bool // guarded by mu
}

// wrapKey is an intermediate wrapping key W (see "Data keys and
// key-encryption keys" in [AtRest]).
type wrapKey struct {
	kek     string
	aead    cipher.AEAD // AES-256-GCM under W
	wrapped []byte      // W under the KEK, RSA-OAEP
	id      [32]byte    // SHA-256 of wrapped
	made    time.Time   // made, or unwrapped by the HSM
	uses    int64       // data keys wrapped (guarded by AtRest.mu)
}

type heldKey struct {
	key  []byte
	kek  string // the KEK that wraps it ("": not wrapped yet)
	used time.Time
}

type kekPublic struct {
	pub    *rsa.PublicKey
	sha256 string // of the SubjectPublicKeyInfo, hex
}

// Bounds of the data keys kept in memory.
const (
	maxHeldKeys = 4096
	heldKeyTTL  = 5 * time.Minute
	// pendingTTL: once maxHeldKeys submissions are under way, the data
	// keys of those that wrote nothing for so long are dropped (a
	// submission that failed without removing its payloads).
	pendingTTL = 24 * time.Hour
	// A W wraps so many data keys at most, for so long at most (see
	// "Data keys and key-encryption keys" in [AtRest]).
	maxWrapUses = 1 << 24
	wrapKeyAge  = time.Hour
	// maxWrapKeys bounds the Ws held in memory (each node makes one per
	// KEK and per wrapKeyAge; the others' are unwrapped when read).
	maxWrapKeys = 1024
	// aheadWindow: a data key wrapped this close to the end of its month
	// has the next month's KEK made in the background.
	aheadWindow = 7 * 24 * time.Hour
)

// dataKeyName is the payload of an exchange that holds its wrapped data
// key: callers cannot create or open a payload of this name.
const dataKeyName = "data-key"

// NewAtRest puts the layer at rest in front of inner: KEKs in keks,
// retention from ret.
func NewAtRest(inner ExchangeStore, keks KEKStore, ret RetentionConfig, opts AtRestOptions) (*AtRest, error) {
	if inner == nil || keks == nil {
		return nil, errors.New("middleoffice: at rest: a store and a key store are needed")
	}
	if err := ret.Validate(); err != nil {
		return nil, err
	}
	switch opts.KEKType {
	case 0:
		opts.KEKType = hsm.RSA3072
	case hsm.RSA2048, hsm.RSA3072:
	default:
		return nil, fmt.Errorf("middleoffice: at rest: a KEK is an RSA key, not %v", opts.KEKType)
	}
	a := &AtRest{
		inner: inner, keks: keks, ret: ret, kekType: opts.KEKType, log: opts.Logger, now: opts.Now,
		pending: map[string]*heldKey{}, cache: map[string]*heldKey{}, pubs: map[string]*kekPublic{},
		wrapping: map[string]*wrapKey{}, wrapKeys: map[[32]byte]*wrapKey{}, ahead: map[string]bool{},
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

var _ ExchangeStore = (*AtRest)(nil)

// dataKeyRecord is the wrapped data key of an exchange, as stored.
type dataKeyRecord struct {
	Version   int    `json:"v"` // 2; 1 for the records written before W
	Exchange  string `json:"exchange"`
	KEK       string `json:"kek"`        // the KEK's label
	KEKSHA256 string `json:"kek_sha256"` // SHA-256 of its SubjectPublicKeyInfo, hex
	Algorithm string `json:"alg"`        // wrapAlgorithm2 (version 1: wrapAlgorithm)
	// WrappingKey is W encrypted under the KEK (version 2).
	WrappingKey []byte `json:"wrapping_key,omitempty"`
	// Wrapped is the data key: nonce || AES-256-GCM under W (version 2),
	// or RSA-OAEP under the KEK (version 1).
	Wrapped []byte `json:"wrapped"`
	// Retention is the exchange's, in days (0: kept), counted from
	// SubmittedAt; ShredAt is when it ends.
	Retention   Period    `json:"retention"`
	SubmittedAt time.Time `json:"submitted_at"`
	ShredAt     time.Time `json:"shred_at,omitzero"`
}

// The algorithms of the records: version 1, the data key under the KEK;
// version 2, the data key under W, W under the KEK.
const (
	wrapAlgorithm  = "RSA-OAEP-SHA256"
	wrapAlgorithm2 = "AES-256-GCM/RSA-OAEP-SHA256"
)

// maxDataKeyRecord bounds the record read back.
const maxDataKeyRecord = 16 << 10

// wrappedLen2 is a version 2 wrapped data key: nonce, key, tag.
const wrappedLen2 = 12 + 32 + 16

// oaepLabel binds a version 1 wrapped data key to its exchange and KEK.
func oaepLabel(exchange, kek string) []byte {
	return []byte("pec at-rest data key v1\x00" + exchange + "\x00" + kek)
}

// wrapKeyLabel is the OAEP label of a W under the KEK kek.
func wrapKeyLabel(kek string) []byte { return []byte("pec at-rest wrapping key v2\x00" + kek) }

// dataKeyAD is the additional data of a data key wrapped under W.
func dataKeyAD(exchange, kek string) []byte {
	return []byte("pec at-rest data key v2\x00" + exchange + "\x00" + kek)
}

// DataKeyInfo describes an exchange's wrapped data key.
type DataKeyInfo struct {
	KEK       string // the label of the KEK that wraps it
	Retention Period // 0: kept
	// SubmittedAt is the start of the retention, ShredAt its end (zero:
	// kept).
	SubmittedAt, ShredAt time.Time
	// WrappedSHA256 is the SHA-256 of the wrapped key.
	WrappedSHA256 []byte
}

// epoch is the KEK of an exchange submitted at t with retention r, and
// when it is destroyed (zero: never).
func kekOf(r Period, t time.Time) (label string, destroyAt time.Time) {
	t = t.UTC()
	label = fmt.Sprintf("pec-atrest-%s-%04d%02d", r.label(), t.Year(), int(t.Month()))
	if r == 0 {
		return label, time.Time{}
	}
	next := time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	return label, next.Add(r.Duration())
}

// Job ids of the lifecycle.
func shredJobID(exchange string) string { return exchange + "-" + JobShred }
func kekJobID(label string) string      { return "destroy-kek-" + label }

// Prepare implements ExchangeStore. A step that creates an exchange gets
// its wrapped data key written first, and its lifecycle jobs added.
func (a *AtRest) Prepare(ctx context.Context, st *Step) error {
	if st == nil || st.Create == nil {
		return a.inner.Prepare(ctx, st)
	}
	c := st.Create
	if !validExchangeID(c.ID) {
		return a.inner.Prepare(ctx, st) // refused there
	}
	rec, _, err := a.readRecord(ctx, c.ID)
	var key []byte
	if errors.Is(err, ErrPayloadNotFound) {
		// The data key its documents were written with; an exchange
		// created before any payload gets a fresh one.
		if key = a.takePending(c.ID, false); key == nil {
			key = newDataKey()
		}
		rec, err = a.writeRecord(ctx, c, key)
	}
	if err != nil {
		return err
	}
	s := *st
	s.Enqueue = append([]*Job(nil), st.Enqueue...)
	if !rec.ShredAt.IsZero() {
		_, destroyAt := kekOf(rec.Retention, rec.SubmittedAt)
		s.Enqueue = append(s.Enqueue,
			&Job{ID: shredJobID(c.ID), Kind: JobShred, Exchange: c.ID, NotBefore: rec.ShredAt},
			// Every exchange of the epoch enqueues the same job again:
			// one of the same id replaces it, with the same due time.
			&Job{ID: kekJobID(rec.KEK), Kind: JobDestroyKEK, NotBefore: destroyAt})
	}
	if err := a.inner.Prepare(ctx, &s); err != nil {
		return err
	}
	if pending := a.takePending(c.ID, true); pending != nil {
		key = pending // the one its record wraps (written by an earlier attempt)
	}
	if key != nil {
		a.hold(c.ID, key, rec.KEK)
	}
	return nil
}

// writeRecord wraps key for the exchange c and stores the record.
func (a *AtRest) writeRecord(ctx context.Context, c *Exchange, key []byte) (*dataKeyRecord, error) {
	r := a.ret.For(c.Manifest.Procedure)
	label, _ := kekOf(r, c.SubmittedAt)
	kek, err := a.kek(ctx, label)
	if err != nil {
		return nil, err
	}
	a.makeAhead(r, c.SubmittedAt)
	w, err := a.wrapKeyFor(label, kek)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: at rest: wrap the data key of exchange %s: %w", c.ID, err)
	}
	nonce := make([]byte, 12, wrappedLen2)
	rand.Read(nonce)
	rec := &dataKeyRecord{
		Version: 2, Exchange: c.ID, KEK: label, KEKSHA256: kek.sha256, Algorithm: wrapAlgorithm2,
		WrappingKey: w.wrapped, Wrapped: w.aead.Seal(nonce, nonce, key, dataKeyAD(c.ID, label)),
		Retention: r, SubmittedAt: c.SubmittedAt.UTC(),
	}
	if r != 0 {
		rec.ShredAt = rec.SubmittedAt.Add(r.Duration())
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	pw, err := a.inner.CreatePayload(ctx, c.ID, dataKeyName)
	if err != nil {
		return nil, err
	}
	if _, err := pw.Write(data); err != nil {
		pw.Abort()
		return nil, err
	}
	if err := pw.Commit(); err != nil {
		return nil, err
	}
	return rec, nil
}

// wrapKeyFor returns this node's current W for the KEK label, made (and
// encrypted under the KEK's public key) when there is none, or when the
// current one has wrapped maxWrapUses keys or is older than wrapKeyAge.
// The use it returns is counted.
func (a *AtRest) wrapKeyFor(label string, kek *kekPublic) (*wrapKey, error) {
	now := a.now()
	a.mu.Lock()
	if w := a.wrapping[label]; w != nil && w.uses < maxWrapUses && now.Sub(w.made) < wrapKeyAge {
		w.uses++
		a.mu.Unlock()
		return w, nil
	}
	a.mu.Unlock()
	key := newDataKey()
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, kek.pub, key, wrapKeyLabel(label))
	if err != nil {
		return nil, err
	}
	w, err := newWrapKey(label, key, wrapped, now)
	if err != nil {
		return nil, err
	}
	w.uses = 1
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.wrapping[label]; cur != nil && cur.uses < maxWrapUses && now.Sub(cur.made) < wrapKeyAge {
		cur.uses++ // made meanwhile by another caller: that one
		return cur, nil
	}
	a.wrapping[label] = w
	a.holdWrapKey(w)
	return w, nil
}

func newWrapKey(label string, key, wrapped []byte, now time.Time) (*wrapKey, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &wrapKey{kek: label, aead: aead, wrapped: wrapped, id: sha256.Sum256(wrapped), made: now}, nil
}

// holdWrapKey keeps W for the unwrapping of the records that carry it.
// The caller holds a.mu.
func (a *AtRest) holdWrapKey(w *wrapKey) {
	if len(a.wrapKeys) >= maxWrapKeys {
		now := a.now()
		for id, h := range a.wrapKeys {
			if now.Sub(h.made) > heldKeyTTL || len(a.wrapKeys) >= maxWrapKeys/2 {
				delete(a.wrapKeys, id)
			}
		}
	}
	a.wrapKeys[w.id] = w
}

// makeAhead makes the KEK of the month after t's in the background, once,
// when t is in the last aheadWindow of its month and that KEK is not known
// yet (PrepareKEKs made it at the start otherwise).
func (a *AtRest) makeAhead(r Period, t time.Time) {
	t = t.UTC()
	next := time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	if next.Sub(t) > aheadWindow {
		return
	}
	label, _ := kekOf(r, next)
	a.mu.Lock()
	if a.pubs[label] != nil || a.ahead[label] || a.closed {
		a.mu.Unlock()
		return
	}
	a.ahead[label] = true
	a.bg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := a.kek(ctx, label); err != nil {
			a.log.Warn("exchange: at rest: next month's key-encryption key could not be made ahead; its first submission makes it", "key_label", label, "err", err)
			a.mu.Lock()
			delete(a.ahead, label) // the next submission tries again
			a.mu.Unlock()
		}
	}()
}

// readRecord reads the wrapped data key of an exchange, and its SHA-256
// (ErrPayloadNotFound if there is none).
func (a *AtRest) readRecord(ctx context.Context, exchange string) (*dataKeyRecord, []byte, error) {
	p, err := a.inner.OpenPayload(ctx, exchange, dataKeyName)
	if err != nil {
		return nil, nil, err
	}
	defer p.Close()
	data, err := io.ReadAll(io.LimitReader(p, maxDataKeyRecord+1))
	if err != nil {
		return nil, nil, fmt.Errorf("middleoffice: at rest: the data key of exchange %s: %w", exchange, err)
	}
	rec, err := decodeDataKeyRecord(data, exchange)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(rec.Wrapped)
	return rec, sum[:], nil
}

// decodeDataKeyRecord reads a stored record strictly: it must be version
// 2 (or 1), of this exchange, of its version's algorithm, and well formed.
func decodeDataKeyRecord(data []byte, exchange string) (*dataKeyRecord, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: the data key record of exchange %s: %s", ErrPayloadDamaged, exchange, why)
	}
	if len(data) > maxDataKeyRecord {
		return nil, bad("too large")
	}
	var rec dataKeyRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return nil, bad("not JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("data after the record")
	}
	switch {
	case rec.Version != 1 && rec.Version != 2:
		return nil, bad(fmt.Sprintf("version %d", rec.Version))
	case rec.Exchange != exchange:
		return nil, bad("it names another exchange")
	case rec.Version == 1 && rec.Algorithm != wrapAlgorithm, rec.Version == 2 && rec.Algorithm != wrapAlgorithm2:
		return nil, bad(fmt.Sprintf("algorithm %q in version %d", rec.Algorithm, rec.Version))
	case rec.KEK == "" || len(rec.Wrapped) == 0 || len(rec.Wrapped) > 1024:
		return nil, bad("no KEK or no wrapped key")
	case rec.Version == 1 && len(rec.WrappingKey) != 0:
		return nil, bad("a wrapping key in version 1")
	case rec.Version == 2 && (len(rec.WrappingKey) == 0 || len(rec.WrappingKey) > 1024):
		return nil, bad("no wrapping key")
	case rec.Version == 2 && len(rec.Wrapped) != wrappedLen2:
		return nil, bad(fmt.Sprintf("a wrapped key of %d bytes", len(rec.Wrapped)))
	}
	return &rec, nil
}

// DataKey describes the wrapped data key of an exchange: ErrShredded
// when it was destroyed, ErrPayloadNotFound when it has none.
func (a *AtRest) DataKey(ctx context.Context, exchange string) (*DataKeyInfo, error) {
	if !validExchangeID(exchange) {
		return nil, fmt.Errorf("%w: %q is not an exchange id", ErrPayloadNotFound, exchange)
	}
	rec, sum, err := a.readRecord(ctx, exchange)
	if errors.Is(err, ErrPayloadNotFound) && a.shredded(ctx, exchange) {
		return nil, ErrShredded
	}
	if err != nil {
		return nil, err
	}
	return &DataKeyInfo{KEK: rec.KEK, Retention: rec.Retention, SubmittedAt: rec.SubmittedAt, ShredAt: rec.ShredAt, WrappedSHA256: sum}, nil
}

// shredded reports whether an exchange is shredded, or being shredded
// (its step prepared).
func (a *AtRest) shredded(ctx context.Context, exchange string) bool {
	if ex, err := a.inner.Exchange(ctx, exchange); err == nil && ex.State == StateShredded {
		return true
	}
	st, err := a.inner.Prepared(ctx, exchange)
	return err == nil && st.To == StateShredded
}

// kek returns the public half of the KEK label, made on first use.
func (a *AtRest) kek(ctx context.Context, label string) (*kekPublic, error) {
	a.mu.Lock()
	k := a.pubs[label]
	a.mu.Unlock()
	if k != nil {
		return k, nil
	}
	a.genMu.Lock()
	defer a.genMu.Unlock()
	var pub crypto.PublicKey
	d, err := a.keks.Decrypter(ctx, label)
	switch {
	case err == nil:
		pub = d.Public()
	case errors.Is(err, hsm.ErrKeyNotFound):
		s, gerr := a.keks.GenerateKey(ctx, label, a.kekType)
		if errors.Is(gerr, hsm.ErrKeyExists) {
			d, gerr = a.keks.Decrypter(ctx, label)
			if gerr == nil {
				s = nil
				pub = d.Public()
			}
		}
		if gerr != nil {
			return nil, fmt.Errorf("middleoffice: at rest: make the key-encryption key %s: %w", label, gerr)
		}
		if s != nil {
			pub = s.Public()
			a.log.InfoContext(ctx, "exchange: at rest: key-encryption key made", "key_label", label)
		}
	default:
		return nil, fmt.Errorf("middleoffice: at rest: the key-encryption key %s: %w", label, err)
	}
	k, err = newKEKPublic(pub)
	if err != nil {
		return nil, fmt.Errorf("middleoffice: at rest: the key-encryption key %s: %w", label, err)
	}
	a.mu.Lock()
	a.pubs[label] = k
	a.mu.Unlock()
	return k, nil
}

func newKEKPublic(pub crypto.PublicKey) (*kekPublic, error) {
	rp, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an RSA key", pub)
	}
	der, err := x509.MarshalPKIXPublicKey(rp)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &kekPublic{pub: rp, sha256: hex.EncodeToString(sum[:])}, nil
}

// PrepareKEKs makes the KEKs of every configured retention period for the
// month of now and the next one, if they do not exist yet: so that the
// first submission of a month does not wait for a key generation, and so
// that the nodes started one after the other find them made.
func (a *AtRest) PrepareKEKs(ctx context.Context, now time.Time) error {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	var errs []error
	for _, r := range a.ret.periods() {
		for _, t := range []time.Time{now, next} {
			label, _ := kekOf(r, t)
			if _, err := a.kek(ctx, label); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func newDataKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// takePending returns the data key of a submission under way, removing
// it with remove.
func (a *AtRest) takePending(exchange string, remove bool) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.pending[exchange]
	if h == nil {
		return nil
	}
	if remove {
		delete(a.pending, exchange)
	}
	return h.key
}

// hold keeps an unwrapped data key in memory for a while.
func (a *AtRest) hold(exchange string, key []byte, kek string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxHeldKeys {
		// Full: drop the stale ones, or else half of them, any.
		now := a.now()
		for id, h := range a.cache {
			if now.Sub(h.used) > heldKeyTTL || len(a.cache) >= maxHeldKeys/2 {
				delete(a.cache, id)
			}
		}
	}
	a.cache[exchange] = &heldKey{key: key, kek: kek, used: a.now()}
}

// forget drops an exchange's data key from memory.
func (a *AtRest) forget(exchange string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, exchange)
	delete(a.cache, exchange)
}

// dataKey returns the data key of an exchange: the one of a submission
// under way, one held, or its record's, unwrapped by the HSM. With create,
// an exchange that does not exist yet gets a pending one (its submission
// writes its first document).
func (a *AtRest) dataKey(ctx context.Context, exchange string, create bool) ([]byte, error) {
	now := a.now()
	a.mu.Lock()
	if h := a.pending[exchange]; h != nil {
		h.used = now
		a.mu.Unlock()
		return h.key, nil
	}
	if h := a.cache[exchange]; h != nil && now.Sub(h.used) <= heldKeyTTL {
		a.mu.Unlock()
		return h.key, nil
	}
	a.mu.Unlock()

	rec, _, err := a.readRecord(ctx, exchange)
	if errors.Is(err, ErrPayloadNotFound) {
		_, xerr := a.inner.Exchange(ctx, exchange)
		switch {
		case errors.Is(xerr, ErrExchangeNotFound) && create:
			key := newDataKey()
			a.mu.Lock()
			if h := a.pending[exchange]; h != nil { // made meanwhile
				key = h.key
			} else {
				if len(a.pending) >= maxHeldKeys {
					for id, h := range a.pending {
						if now.Sub(h.used) > pendingTTL {
							delete(a.pending, id)
						}
					}
				}
				a.pending[exchange] = &heldKey{key: key, used: now}
			}
			a.mu.Unlock()
			return key, nil
		case errors.Is(xerr, ErrExchangeNotFound):
			return nil, fmt.Errorf("%w: exchange %s has no data key", ErrPayloadNotFound, exchange)
		case xerr != nil:
			return nil, xerr
		case a.shredded(ctx, exchange):
			return nil, ErrShredded
		}
		return nil, fmt.Errorf("%w: exchange %s has no data key (made before its payloads were encrypted at rest?)", ErrPayloadDamaged, exchange)
	}
	if err != nil {
		return nil, err
	}
	key, err := a.unwrap(ctx, rec)
	if err != nil {
		return nil, err
	}
	a.hold(exchange, key, rec.KEK)
	return key, nil
}

// unwrap unwraps the data key of rec: under its W (version 2), held or
// unwrapped by the HSM, or by the HSM itself (version 1).
func (a *AtRest) unwrap(ctx context.Context, rec *dataKeyRecord) ([]byte, error) {
	if rec.Version == 1 {
		return a.hsmUnwrap(ctx, rec, rec.Wrapped, oaepLabel(rec.Exchange, rec.KEK), "data key")
	}
	id := sha256.Sum256(rec.WrappingKey)
	now := a.now()
	a.mu.Lock()
	w := a.wrapKeys[id]
	if w != nil && (w.kek != rec.KEK || now.Sub(w.made) > heldKeyTTL && a.wrapping[w.kek] != w) {
		w = nil // another KEK's (a record altered), or held too long
	}
	a.mu.Unlock()
	if w == nil {
		key, err := a.hsmUnwrap(ctx, rec, rec.WrappingKey, wrapKeyLabel(rec.KEK), "wrapping key")
		if err != nil {
			return nil, err
		}
		if w, err = newWrapKey(rec.KEK, key, rec.WrappingKey, now); err != nil {
			return nil, err
		}
		a.mu.Lock()
		a.holdWrapKey(w)
		a.mu.Unlock()
	}
	nonce, sealed := rec.Wrapped[:12], rec.Wrapped[12:]
	key, err := w.aead.Open(nil, nonce, sealed, dataKeyAD(rec.Exchange, rec.KEK))
	if err != nil {
		return nil, fmt.Errorf("%w: the data key of exchange %s does not unwrap", ErrPayloadDamaged, rec.Exchange)
	}
	return key, nil
}

// hsmUnwrap has the HSM decrypt ct (what of rec: its data key, version 1,
// or its W) with the KEK of rec, under the OAEP label.
func (a *AtRest) hsmUnwrap(ctx context.Context, rec *dataKeyRecord, ct, label []byte, what string) ([]byte, error) {
	d, err := a.keks.Decrypter(ctx, rec.KEK)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: the key-encryption key %s of exchange %s was destroyed", ErrShredded, rec.KEK, rec.Exchange)
	}
	if err != nil {
		return nil, fmt.Errorf("middleoffice: at rest: the key-encryption key %s: %w", rec.KEK, err)
	}
	k, err := newKEKPublic(d.Public())
	if err != nil {
		return nil, fmt.Errorf("middleoffice: at rest: the key-encryption key %s: %w", rec.KEK, err)
	}
	if k.sha256 != rec.KEKSHA256 {
		return nil, fmt.Errorf("middleoffice: at rest: the key labelled %s is not the one that wrapped the data key of exchange %s", rec.KEK, rec.Exchange)
	}
	key, err := d.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: label})
	switch {
	case errors.Is(err, hsm.ErrKeyNotFound):
		return nil, fmt.Errorf("%w: the key-encryption key %s of exchange %s was destroyed", ErrShredded, rec.KEK, rec.Exchange)
	case errors.Is(err, rsa.ErrDecryption):
		return nil, fmt.Errorf("%w: the %s of exchange %s does not unwrap", ErrPayloadDamaged, what, rec.Exchange)
	case err != nil:
		return nil, fmt.Errorf("middleoffice: at rest: unwrap the %s of exchange %s: %w", what, rec.Exchange, err)
	case len(key) != 32:
		return nil, fmt.Errorf("%w: the %s of exchange %s is %d bytes", ErrPayloadDamaged, what, rec.Exchange, len(key))
	}
	return key, nil
}

func checkPayload(exchange, name string) error {
	if !validExchangeID(exchange) || !payloadNameSyntax.MatchString(name) || name == dataKeyName {
		return fmt.Errorf("middleoffice: payload %q of exchange %q: not a payload name", name, exchange)
	}
	return nil
}

// CreatePayload implements ExchangeStore: the payload is encrypted as it
// is written. A shredded exchange is ErrShredded.
func (a *AtRest) CreatePayload(ctx context.Context, exchange, name string) (PayloadWriter, error) {
	if err := checkPayload(exchange, name); err != nil {
		return nil, err
	}
	key, err := a.dataKey(ctx, exchange, true)
	if err != nil {
		return nil, err
	}
	w, err := a.inner.CreatePayload(ctx, exchange, name)
	if err != nil {
		return nil, err
	}
	sw, err := newSegmentWriter(w, key, exchange, name)
	if err != nil {
		w.Abort()
		return nil, err
	}
	return sw, nil
}

// OpenPayload implements ExchangeStore: the payload decrypts as it is
// read. A payload of a shredded exchange is ErrShredded (and
// ErrPayloadNotFound); one that does not authenticate, ErrPayloadDamaged.
func (a *AtRest) OpenPayload(ctx context.Context, exchange, name string) (Payload, error) {
	if err := checkPayload(exchange, name); err != nil {
		return nil, err
	}
	p, err := a.inner.OpenPayload(ctx, exchange, name)
	if errors.Is(err, ErrPayloadNotFound) && a.shredded(ctx, exchange) {
		// No such payload any more, and why.
		return nil, fmt.Errorf("%w: %s of exchange %s (%w)", ErrShredded, name, exchange, ErrPayloadNotFound)
	}
	if err != nil {
		return nil, err
	}
	key, err := a.dataKey(ctx, exchange, false)
	if err != nil {
		p.Close()
		return nil, err
	}
	sp, err := openSegments(p, p.Size(), key, exchange, name)
	if err != nil {
		p.Close()
		return nil, err
	}
	return &atRestPayload{segmentReader: sp, inner: p}, nil
}

type atRestPayload struct {
	*segmentReader
	inner Payload
}

func (p *atRestPayload) Close() error { return p.inner.Close() }

// RemovePayloads implements ExchangeStore: the data key goes with the
// payloads.
func (a *AtRest) RemovePayloads(ctx context.Context, exchange string) error {
	a.forget(exchange)
	return a.inner.RemovePayloads(ctx, exchange)
}

// Shred destroys the data key of an exchange and its payloads: the
// wrapped key and the ciphertext removed from the store, the key
// forgotten. It is idempotent. The caller records the destruction
// (see "Retention and shredding" in [AtRest]).
func (a *AtRest) Shred(ctx context.Context, exchange string) error {
	if !validExchangeID(exchange) {
		return fmt.Errorf("middleoffice: %q is not an exchange id", exchange)
	}
	a.forget(exchange)
	if err := a.inner.RemovePayloads(ctx, exchange); err != nil {
		return fmt.Errorf("middleoffice: at rest: shred exchange %s: %w", exchange, err)
	}
	a.forget(exchange) // a read that unwrapped it meanwhile
	return nil
}

// DestroyKEK destroys the key-encryption key label in the HSM: the data
// keys it wraps, in the store and in every copy of it, are unreadable
// from then on. The error wraps hsm.ErrKeyNotFound if it is gone already.
func (a *AtRest) DestroyKEK(ctx context.Context, label string) error {
	a.mu.Lock()
	delete(a.pubs, label)
	delete(a.wrapping, label)
	for id, w := range a.wrapKeys {
		if w.kek == label {
			delete(a.wrapKeys, id)
		}
	}
	for id, h := range a.cache {
		if h.kek == label {
			delete(a.cache, id)
		}
	}
	a.mu.Unlock()
	a.genMu.Lock()
	defer a.genMu.Unlock()
	if err := a.keks.DestroyKey(ctx, label); err != nil {
		return fmt.Errorf("middleoffice: at rest: destroy the key-encryption key %s: %w", label, err)
	}
	a.log.InfoContext(ctx, "exchange: at rest: key-encryption key destroyed", "key_label", label)
	return nil
}

// The rest of ExchangeStore goes to the store as it is: spelled out, so
// that a method added to the interface cannot pass payloads through
// unencrypted by default.

// Commit implements ExchangeStore.
func (a *AtRest) Commit(ctx context.Context, exchange, evidenceID string) error {
	return a.inner.Commit(ctx, exchange, evidenceID)
}

// Abort implements ExchangeStore.
func (a *AtRest) Abort(ctx context.Context, exchange, evidenceID string) error {
	return a.inner.Abort(ctx, exchange, evidenceID)
}

// Prepared implements ExchangeStore.
func (a *AtRest) Prepared(ctx context.Context, exchange string) (*Step, error) {
	return a.inner.Prepared(ctx, exchange)
}

// PreparedBefore implements ExchangeStore.
func (a *AtRest) PreparedBefore(ctx context.Context, t time.Time, limit int) ([]*Step, error) {
	return a.inner.PreparedBefore(ctx, t, limit)
}

// Exchange implements ExchangeStore.
func (a *AtRest) Exchange(ctx context.Context, id string) (*Exchange, error) {
	return a.inner.Exchange(ctx, id)
}

// ByIdempotencyKey implements ExchangeStore.
func (a *AtRest) ByIdempotencyKey(ctx context.Context, sender, key string) (string, error) {
	return a.inner.ByIdempotencyKey(ctx, sender, key)
}

// Inbox implements ExchangeStore.
func (a *AtRest) Inbox(ctx context.Context, recipient, after string, limit int) ([]*Exchange, error) {
	return a.inner.Inbox(ctx, recipient, after, limit)
}

// Claim implements ExchangeStore.
func (a *AtRest) Claim(ctx context.Context, now time.Time, lease time.Duration) (*Job, error) {
	return a.inner.Claim(ctx, now, lease)
}

// Release implements ExchangeStore.
func (a *AtRest) Release(ctx context.Context, job *Job, notBefore time.Time, lastErr string) error {
	return a.inner.Release(ctx, job, notBefore, lastErr)
}

// Done implements ExchangeStore.
func (a *AtRest) Done(ctx context.Context, jobID string) error { return a.inner.Done(ctx, jobID) }

// Jobs implements ExchangeStore.
func (a *AtRest) Jobs(ctx context.Context) ([]*Job, error) { return a.inner.Jobs(ctx) }

// Close implements ExchangeStore: the data keys and wrapping keys held
// are dropped, once a KEK being made ahead is made.
func (a *AtRest) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.bg.Wait()
	a.mu.Lock()
	clear(a.pending)
	clear(a.cache)
	clear(a.wrapping)
	clear(a.wrapKeys)
	a.mu.Unlock()
	return a.inner.Close()
}

// The file format.

const (
	atRestMagic   = "PEC-AR1\n"
	atRestSaltLen = 16
	atRestHeader  = len(atRestMagic) + atRestSaltLen
	segmentSize   = 64 << 10
	segmentTag    = 16
	segmentFull   = segmentSize + segmentTag
	// maxSegments: the counter has 11 bytes, but a payload is far
	// smaller than 2^40 segments (64 PiB).
	maxSegments = 1 << 40
)

func segmentAEAD(key, salt []byte, exchange, name string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, salt, "pec at-rest payload v1\x00"+exchange+"\x00"+name, 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func segmentNonce(nonce *[12]byte, i int64, last bool) {
	clear(nonce[:])
	binary.BigEndian.PutUint64(nonce[3:11], uint64(i))
	if last {
		nonce[11] = 1
	}
}

// segmentWriter encrypts a payload segment by segment into w: it holds
// one segment, sealed where it is (its buffer has room for the tag). The
// last segment is written by Commit.
type segmentWriter struct {
	w     PayloadWriter
	aead  cipher.AEAD
	buf   []byte // plaintext of the segment being filled, cap segmentFull
	seq   int64
	nonce [12]byte
	err   error
	done  bool
}

func newSegmentWriter(w PayloadWriter, key []byte, exchange, name string) (*segmentWriter, error) {
	salt := make([]byte, atRestSaltLen)
	rand.Read(salt)
	aead, err := segmentAEAD(key, salt, exchange, name)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(append([]byte(atRestMagic), salt...)); err != nil {
		return nil, err
	}
	return &segmentWriter{w: w, aead: aead, buf: make([]byte, 0, segmentFull)}, nil
}

func (s *segmentWriter) Write(p []byte) (int, error) {
	if s.done {
		return 0, errors.New("middleoffice: payload committed or aborted already")
	}
	n := 0
	for len(p) > 0 {
		if s.err != nil {
			return n, s.err
		}
		if len(s.buf) == segmentSize {
			// Full, and more comes: not the last.
			s.flush(false)
			continue
		}
		k := copy(s.buf[len(s.buf):segmentSize], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
		n += k
	}
	return n, s.err
}

func (s *segmentWriter) flush(last bool) {
	if s.seq >= maxSegments {
		s.err = errors.New("middleoffice: payload too large")
		return
	}
	segmentNonce(&s.nonce, s.seq, last)
	out := s.aead.Seal(s.buf[:0], s.nonce[:], s.buf, nil) // in place
	if _, err := s.w.Write(out); err != nil {
		s.err = err
		return
	}
	s.seq++
	s.buf = s.buf[:0]
}

// Commit writes the last segment and commits the payload.
func (s *segmentWriter) Commit() error {
	if s.done {
		return errors.New("middleoffice: payload committed or aborted already")
	}
	if s.err == nil {
		s.flush(true)
	}
	if s.err != nil {
		s.done = true
		s.w.Abort()
		return s.err
	}
	s.done = true
	return s.w.Commit()
}

// Abort discards the payload.
func (s *segmentWriter) Abort() error {
	if s.done {
		return nil
	}
	s.done = true
	return s.w.Abort()
}

// segmentReader decrypts a payload at rest of size bytes at r. It keeps
// the last two segments decrypted (a sequential Read and a ReadAt
// elsewhere, as cms.DecryptTo does) and is safe for concurrent use.
type segmentReader struct {
	r        io.ReaderAt
	aead     cipher.AEAD
	exchange string
	name     string
	size     int64 // of the plaintext
	nseg     int64
	lastLen  int64 // ciphertext bytes of the last segment

	mu    sync.Mutex
	segs  [2]cachedSegment
	next  int // of segs, to replace
	ct    []byte
	off   int64 // of Read
	nonce [12]byte
}

type cachedSegment struct {
	i     int64 // -1: none
	plain []byte
}

// openSegments checks the header and the last segment of a payload at
// rest (so that Size is right), with the data key of its exchange.
func openSegments(r io.ReaderAt, size int64, key []byte, exchange, name string) (*segmentReader, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s of exchange %s: %s", ErrPayloadDamaged, name, exchange, fmt.Sprintf(format, args...))
	}
	if size < int64(atRestHeader)+segmentTag {
		return nil, bad("%d bytes, shorter than a header and a segment", size)
	}
	hdr := make([]byte, atRestHeader)
	if n, err := r.ReadAt(hdr, 0); n != len(hdr) {
		return nil, bad("header: %v", err)
	}
	if string(hdr[:len(atRestMagic)]) != atRestMagic {
		return nil, bad("not a payload at rest (version 1)")
	}
	aead, err := segmentAEAD(key, hdr[len(atRestMagic):], exchange, name)
	if err != nil {
		return nil, err
	}
	body := size - int64(atRestHeader)
	nseg := (body + segmentFull - 1) / segmentFull
	lastLen := body - (nseg-1)*segmentFull
	switch {
	case lastLen < segmentTag:
		return nil, bad("the last segment is %d bytes, shorter than its tag", lastLen)
	case lastLen == segmentTag && nseg > 1:
		return nil, bad("an empty segment after a full one")
	case nseg > maxSegments:
		return nil, bad("too many segments")
	}
	s := &segmentReader{
		r: r, aead: aead, exchange: exchange, name: name,
		size: body - nseg*segmentTag, nseg: nseg, lastLen: lastLen,
		ct: make([]byte, segmentFull),
	}
	s.segs[0].i, s.segs[1].i = -1, -1
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.segment(nseg - 1); err != nil {
		return nil, err
	}
	return s, nil
}

// segment returns the plaintext of segment i, from the cache or
// decrypted. The caller holds s.mu.
func (s *segmentReader) segment(i int64) ([]byte, error) {
	for _, c := range s.segs {
		if c.i == i {
			return c.plain, nil
		}
	}
	n := int64(segmentFull)
	last := i == s.nseg-1
	if last {
		n = s.lastLen
	}
	ct := s.ct[:n]
	if k, err := s.r.ReadAt(ct, int64(atRestHeader)+i*segmentFull); int64(k) != n {
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("%w: %s of exchange %s: segment %d is cut short", ErrPayloadDamaged, s.name, s.exchange, i)
		}
		return nil, err
	}
	c := &s.segs[s.next]
	s.next = 1 - s.next
	segmentNonce(&s.nonce, i, last)
	plain, err := s.aead.Open(c.plain[:0], s.nonce[:], ct, nil)
	if err != nil {
		c.i = -1
		return nil, fmt.Errorf("%w: %s of exchange %s: segment %d of %d does not authenticate", ErrPayloadDamaged, s.name, s.exchange, i, s.nseg)
	}
	c.i, c.plain = i, plain
	return plain, nil
}

// Size is the size of the plaintext.
func (s *segmentReader) Size() int64 { return s.size }

// ReadAt implements io.ReaderAt over the plaintext.
func (s *segmentReader) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readAt(p, off)
}

func (s *segmentReader) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("middleoffice: payload: negative offset")
	}
	n := 0
	for n < len(p) {
		if off >= s.size {
			return n, io.EOF
		}
		plain, err := s.segment(off / segmentSize)
		if err != nil {
			return n, err
		}
		k := copy(p[n:], plain[off%segmentSize:])
		n += k
		off += int64(k)
	}
	return n, nil
}

// Read implements io.Reader over the plaintext.
func (s *segmentReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := s.readAt(p, s.off)
	s.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}
