package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
)

// Key is a key pair on a PKCS#11 token: a crypto.Signer, and for RSA a
// crypto.Decrypter. The private key never leaves the token. It is safe for
// concurrent use, and stops working when its KeyStore is closed.
type Key struct {
	s       *tokenStore
	label   string
	id      []byte // CKA_ID: tells this key from a later one with the same label
	pub     crypto.PublicKey
	h       atomic.Pointer[keyHandle]
	gone    atomic.Pointer[outage] // not on the token since a recovery
	observe prometheus.Observer

	// destroyed: by DestroyKey; calls fail at once, recoveries skip it.
	destroyed atomic.Bool

	// The session copy that signs (see "Signing from a session copy" in
	// the package doc): checked is when the token object last signed
	// (UnixNano), noCopy says the module refuses copies of this key,
	// copying that one is being made.
	checked atomic.Int64
	noCopy  atomic.Bool
	copying atomic.Bool
}

var (
	_ crypto.Signer    = (*Key)(nil)
	_ crypto.Decrypter = (*Key)(nil)
)

// keyHandle is the private key's object handle, valid in one token epoch:
// handles are void once the token is re-inserted or the module re-initialised.
type keyHandle struct {
	epoch uint64
	obj   pkcs11.ObjectHandle
	// copy is a session object copy of the private key, made in the
	// epoch's anchor session (0: none); it lives as long as that session.
	copy pkcs11.ObjectHandle
}

// keyCheckEvery is how long a key signs from its session copy before the
// token object signs again (and so is checked to be there): see "Signing
// from a session copy" in the package doc.
const keyCheckEvery = 100 * time.Millisecond

// copyTemplate makes a session object (CKA_TOKEN false) of a key; every
// other attribute is the token object's (sensitive, not extractable).
var copyTemplate = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}

func newKey(s *tokenStore, label string, id []byte, pub crypto.PublicKey, h *keyHandle) *Key {
	k := &Key{s: s, label: label, id: id, pub: pub, observe: s.met.signSeconds.WithLabelValues(label)}
	k.h.Store(h)
	return k
}

// Public returns the *rsa.PublicKey or *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Mechanisms without parameters, shared: the binding only reads them.
var (
	mechRSAPKCS  = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	mechRSAX509  = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_X_509, nil)}
	mechECDSA    = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
	errNotRSAKey = errors.New("not an RSA key")
)

// Sign signs digest, the hash of the message under opts.HashFunc(): RSA-PSS
// if opts is an *rsa.PSSOptions, RSA PKCS#1 v1.5 for other RSA options, ECDSA
// (ASN.1 DER, as crypto/ecdsa) for EC keys. rand is ignored: the token draws
// its own randomness.
//
// crypto.Signer has no context: Sign waits at most [Config.Wait] for a
// session, a recovery under way or the module; the error then wraps
// ErrUnavailable. SignContext lets the caller's context bound it too.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign, which also stops waiting when ctx ends.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := k.bound(ctx)
	defer cancel()
	start := time.Now()
	sig, err := k.sign(ctx, digest, opts)
	if err != nil {
		k.s.met.errors.WithLabelValues("sign").Inc()
		return nil, fmt.Errorf("hsm: sign with key %q: %w", k.label, err)
	}
	k.observe.Observe(time.Since(start).Seconds())
	return sig, nil
}

// bound limits ctx to the key store's Config.Wait.
func (k *Key) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, k.s.wait, fmt.Errorf("%w: no answer within hsm.wait (%v)", ErrUnavailable, k.s.wait))
}

func (k *Key) sign(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h, err := checkDigest(digest, opts)
	if err != nil {
		return nil, err
	}
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		// FIPS 186-4 section 6.4 uses the leftmost bits of a longer digest;
		// modules differ in whether they truncate themselves.
		if n := (pub.Curve.Params().N.BitLen() + 7) / 8; len(digest) > n {
			digest = digest[:n]
		}
		raw, err := k.op(ctx, mechECDSA, digest, false)
		if err != nil {
			return nil, err
		}
		return ecdsaDER(raw)
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			mech, err := pssMechanism(pub, h, pss.SaltLength)
			if err != nil {
				return nil, err
			}
			return k.op(ctx, mech, digest, false)
		}
		prefix, ok := digestInfoPrefix[h]
		if !ok {
			return nil, fmt.Errorf("RSA PKCS#1 v1.5 with %v is not supported", h)
		}
		// CKM_RSA_PKCS pads whatever it is given: the DigestInfo of
		// RFC 8017 section 9.2 is ours to build.
		msg := make([]byte, len(prefix)+len(digest))
		copy(msg, prefix)
		copy(msg[len(prefix):], digest)
		return k.op(ctx, mechRSAPKCS, msg, false)
	}
	return nil, fmt.Errorf("unsupported public key %T", k.pub)
}

// op runs one single-part sign or decrypt operation on the token.
func (k *Key) op(ctx context.Context, mech []*pkcs11.Mechanism, in []byte, decrypt bool) (out []byte, err error) {
	err = k.s.do(ctx, k, func(sh pkcs11.SessionHandle, st *tokenState) error {
		obj, err := k.object(sh, st)
		if err != nil {
			return err
		}
		p := k.s.p
		if decrypt {
			if err := p.DecryptInit(sh, mech, obj); err != nil {
				return err
			}
			out, err = p.Decrypt(sh, in)
			if errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
				// SoftHSM2 answers CKR_GENERAL_ERROR to a ciphertext
				// whose padding is wrong. Taken for a module fault, it
				// would let anyone who can send a ciphertext make us
				// re-initialise the module; DecryptInit, which sees no
				// ciphertext, still reports a sick module.
				return rsa.ErrDecryption
			}
			return err
		}
		signer, viaCopy := obj, false
		if h := k.h.Load(); h != nil && h.epoch == st.epoch && h.obj == obj && h.copy != 0 &&
			time.Now().UnixNano()-k.checked.Load() < int64(keyCheckEvery) {
			signer, viaCopy = h.copy, true
		}
		if err := p.SignInit(sh, mech, signer); err != nil {
			return err
		}
		if out, err = p.Sign(sh, in); err != nil || viaCopy {
			return err
		}
		k.checked.Store(time.Now().UnixNano())
		k.makeCopy(st, obj)
		return nil
	})
	return out, err
}

// makeCopy makes the session copy of the key's token object obj, in the
// anchor session of st, if it has none: one caller at a time, the others
// sign from the token object meanwhile. A module that refuses the copy
// (no C_CopyObject, CKA_COPYABLE false) keeps signing from the token
// object. The caller holds the module's lock for reading.
func (k *Key) makeCopy(st *tokenState, obj pkcs11.ObjectHandle) {
	if h := k.h.Load(); h == nil || h.epoch != st.epoch || h.obj != obj || h.copy != 0 || k.noCopy.Load() {
		return
	}
	if !k.copying.CompareAndSwap(false, true) {
		return
	}
	defer k.copying.Store(false)
	p := k.s.p
	cp, err := p.CopyObject(st.anchor, obj, copyTemplate)
	if err != nil {
		if classify(err) == faultNone {
			k.noCopy.Store(true)
			k.s.log.Info("hsm: the module does not copy this key into a session object: it signs from the token object", "key_label", k.label, "err", err)
		}
		return // a fault: the next signature from the token meets it
	}
	cur := k.h.Load()
	if cur == nil || cur.epoch != st.epoch || cur.obj != obj || cur.copy != 0 ||
		!k.h.CompareAndSwap(cur, &keyHandle{epoch: st.epoch, obj: obj, copy: cp}) || k.destroyed.Load() {
		_ = p.DestroyObject(st.anchor, cp) // the handle changed meanwhile
	}
}

// object returns the private key's handle in the token's current epoch,
// finding it again, by label and CKA_ID, after a recovery.
func (k *Key) object(sh pkcs11.SessionHandle, st *tokenState) (pkcs11.ObjectHandle, error) {
	if h := k.h.Load(); h != nil && h.epoch == st.epoch {
		return h.obj, nil
	}
	obj, err := findPrivateKey(k.s.p, sh, k.label, k.id)
	if errors.Is(err, ErrKeyNotFound) {
		// It was there: the token went away, or came back unseen.
		return 0, &keyGoneError{label: k.label}
	}
	if err != nil {
		return 0, err
	}
	k.h.Store(&keyHandle{epoch: st.epoch, obj: obj})
	return obj, nil
}

// Decrypt decrypts an RSA ciphertext: RSA-OAEP for *rsa.OAEPOptions,
// RSAES-PKCS1-v1_5 for nil or *rsa.PKCS1v15DecryptOptions (with
// SessionKeyLen, a bad ciphertext yields a random key and no error, as
// rsa.DecryptPKCS1v15SessionKey does against Bleichenbacher's attack; see
// the note of RFC 8017 section 7.2.2). random only draws that random key
// (nil: crypto/rand).
func (k *Key) Decrypt(random io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	ctx, cancel := k.bound(context.Background())
	defer cancel()
	pt, err := k.decrypt(ctx, random, ciphertext, opts)
	if err != nil {
		k.s.met.errors.WithLabelValues("decrypt").Inc()
		if errors.Is(err, rsa.ErrDecryption) {
			return nil, rsa.ErrDecryption // no detail: no padding oracle
		}
		return nil, fmt.Errorf("hsm: decrypt with key %q: %w", k.label, err)
	}
	return pt, nil
}

func (k *Key) decrypt(ctx context.Context, random io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	pub, ok := k.pub.(*rsa.PublicKey)
	if !ok {
		return nil, errNotRSAKey
	}
	switch o := opts.(type) {
	case nil:
		return decryptResult(k.op(ctx, mechRSAPKCS, ct, true))
	case *rsa.PKCS1v15DecryptOptions:
		if o.SessionKeyLen <= 0 {
			return decryptResult(k.op(ctx, mechRSAPKCS, ct, true))
		}
		if random == nil {
			random = rand.Reader
		}
		key := make([]byte, o.SessionKeyLen)
		if _, err := io.ReadFull(random, key); err != nil {
			return nil, err
		}
		pt, err := decryptResult(k.op(ctx, mechRSAPKCS, ct, true))
		switch {
		case errors.Is(err, rsa.ErrDecryption):
			return key, nil
		case err != nil:
			return nil, err
		}
		if len(pt) != len(key) {
			return key, nil
		}
		return pt, nil
	case *rsa.OAEPOptions:
		return k.decryptOAEP(ctx, pub, ct, o)
	}
	return nil, fmt.Errorf("unsupported decrypter options %T", opts)
}

// oaepParams are the OAEP parameters of a decryption; the KeyStore
// remembers for each whether the module does them right (true), or whether
// the decoding must happen here (false).
type oaepParams struct {
	hash, mgf crypto.Hash
	label     bool
}

func (k *Key) decryptOAEP(ctx context.Context, pub *rsa.PublicKey, ct []byte, o *rsa.OAEPOptions) ([]byte, error) {
	h, mgf := o.Hash, o.MGFHash
	if mgf == 0 {
		mgf = h
	}
	hm, ok := hashMechanisms[h]
	mm, ok2 := hashMechanisms[mgf]
	if !ok || !ok2 || !h.Available() || !mgf.Available() {
		return nil, fmt.Errorf("RSA-OAEP with %v and MGF1 %v is not supported", h, mgf)
	}
	params := oaepParams{h, mgf, len(o.Label) > 0}
	native, err := k.oaepNative(ctx, pub, params, hm.hash, mm.mgf)
	if err != nil {
		return nil, err
	}
	if native {
		pt, err := k.op(ctx, oaepMechanism(hm.hash, mm.mgf, o.Label), ct, true)
		if !refusedParams(err) {
			return decryptResult(pt, err)
		}
		k.s.oaep.Store(params, false)
	}
	em, err := decryptResult(k.op(ctx, mechRSAX509, ct, true))
	if err != nil {
		return nil, err
	}
	return oaepDecode(h.New(), mgf.New(), pub.Size(), em, o.Label)
}

func oaepMechanism(hash, mgf uint, label []byte) []*pkcs11.Mechanism {
	if len(label) == 0 {
		label = nil // CK_RSA_PKCS_OAEP_PARAMS: pSourceData NULL, length 0
	}
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(hash, mgf, pkcs11.CKZ_DATA_SPECIFIED, label))}
}

// oaepNative tells whether the module can be trusted with OAEP decryption
// under params. With a label, it must first show that it enforces labels:
// SoftHSM2 2.6 ignores pSourceData, and would accept a ciphertext made for
// another label (RFC 8017 section 7.1.2 step 3g requires the check). The
// probe, once per KeyStore and parameters, decrypts a ciphertext made with
// no label under a label: a module that succeeds ignores labels.
func (k *Key) oaepNative(ctx context.Context, pub *rsa.PublicKey, params oaepParams, hash, mgf uint) (bool, error) {
	if v, ok := k.s.oaep.Load(params); ok {
		return v.(bool), nil
	}
	native := true
	if params.label {
		probe, err := rsa.EncryptOAEPWithOptions(rand.Reader, pub, []byte("pec hsm OAEP label probe"),
			&rsa.OAEPOptions{Hash: params.hash, MGFHash: params.mgf})
		if err != nil {
			return false, err
		}
		_, err = decryptResult(k.op(ctx, oaepMechanism(hash, mgf, []byte("another label")), probe, true))
		switch {
		case err == nil || refusedParams(err):
			native = false
		case !errors.Is(err, rsa.ErrDecryption):
			return false, err // a fault: the probe tells nothing yet
		}
	}
	k.s.oaep.Store(params, native)
	if !native {
		k.s.log.Info("hsm: the module does not do RSA-OAEP right with these parameters: decoding OAEP here, over raw RSA on the token",
			"key_label", k.label, "hash", params.hash.String(), "mgf", params.mgf.String(), "label", params.label)
	}
	return native, nil
}

// refusedParams tells a module that does not support a mechanism's
// parameters (SoftHSM2 2.6 answers CKR_ARGUMENTS_BAD to OAEP with SHA-2).
func refusedParams(err error) bool {
	rv, ok := errors.AsType[pkcs11.Error](err)
	return ok && (rv == pkcs11.CKR_ARGUMENTS_BAD || rv == pkcs11.CKR_MECHANISM_PARAM_INVALID || rv == pkcs11.CKR_MECHANISM_INVALID)
}

// decryptResult turns the module's answer to a bad ciphertext into
// rsa.ErrDecryption, which callers of crypto.Decrypter expect.
func decryptResult(pt []byte, err error) ([]byte, error) {
	if rv, ok := errors.AsType[pkcs11.Error](err); ok {
		switch rv {
		case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:
			return nil, rsa.ErrDecryption
		}
	}
	return pt, err
}

// oaepDecode is EME-OAEP decoding (RFC 8017 section 7.1.2 step 3) of em, the
// raw RSA decryption, in constant time as crypto/rsa: which check failed
// must not show (Manger's attack).
func oaepDecode(h, mgf hash.Hash, k int, em, label []byte) ([]byte, error) {
	hLen := h.Size()
	if len(em) > k || k < 2*hLen+2 {
		return nil, rsa.ErrDecryption
	}
	if len(em) < k { // some modules strip leading zero bytes
		em = append(make([]byte, k-len(em), k), em...)
	}
	h.Write(label)
	lHash := h.Sum(nil)

	firstByteIsZero := subtle.ConstantTimeByteEq(em[0], 0)
	seed, db := em[1:hLen+1], em[hLen+1:]
	mgf1XOR(seed, mgf, db)
	mgf1XOR(db, mgf, seed)
	lHashGood := subtle.ConstantTimeCompare(lHash, db[:hLen])

	// After lHash: zero or more 0x00, one 0x01, the message.
	// lookingForIndex is 1 until the 0x01 is found, at index; invalid is 1
	// if another non-zero byte came before it.
	lookingForIndex, index, invalid := 1, 0, 0
	rest := db[hLen:]
	for i := range rest {
		equals0 := subtle.ConstantTimeByteEq(rest[i], 0)
		equals1 := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(lookingForIndex&equals1, i, index)
		lookingForIndex = subtle.ConstantTimeSelect(equals1, 0, lookingForIndex)
		invalid = subtle.ConstantTimeSelect(lookingForIndex&^equals0, 1, invalid)
	}
	if firstByteIsZero&lHashGood&^invalid&^lookingForIndex != 1 {
		return nil, rsa.ErrDecryption
	}
	return rest[index+1:], nil
}

// mgf1XOR XORs out with MGF1(seed) (RFC 8017 appendix B.2.1).
func mgf1XOR(out []byte, h hash.Hash, seed []byte) {
	var counter [4]byte
	var digest []byte
	for done := 0; done < len(out); {
		h.Reset()
		h.Write(seed)
		h.Write(counter[:])
		digest = h.Sum(digest[:0])
		done += subtle.XORBytes(out[done:], out[done:], digest)
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}

// hashMechanisms maps a hash to its PKCS#11 mechanism and MGF1 generator.
var hashMechanisms = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA1:   {pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1},
	crypto.SHA224: {pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224},
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

// pssMechanism is CKM_RSA_PKCS_PSS with MGF1 over the same hash, as
// crypto/rsa does. A salt as long as the hash serves both
// PSSSaltLengthEqualsHash and PSSSaltLengthAuto: RFC 8017 section 9.1 calls
// it typical, TLS 1.3 (RFC 8446 section 4.2.3) requires it, and every
// verifier accepts it.
func pssMechanism(pub *rsa.PublicKey, h crypto.Hash, saltLen int) ([]*pkcs11.Mechanism, error) {
	hm, ok := hashMechanisms[h]
	if !ok {
		return nil, fmt.Errorf("RSA-PSS with %v is not supported", h)
	}
	if saltLen == rsa.PSSSaltLengthEqualsHash || saltLen == rsa.PSSSaltLengthAuto {
		saltLen = h.Size()
	}
	emLen := (pub.N.BitLen() - 1 + 7) / 8
	if saltLen < 0 || saltLen > emLen-h.Size()-2 {
		return nil, fmt.Errorf("RSA-PSS salt length %d does not fit a %d-bit key", saltLen, pub.N.BitLen())
	}
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(hm.hash, hm.mgf, uint(saltLen)))}, nil
}

// digestInfoPrefix is the DER DigestInfo (RFC 8017 section 9.2 note 1) up
// to the digest, by hash; crypto.Hash(0) signs the input as it is, as
// rsa.SignPKCS1v15 does.
var digestInfoPrefix = map[crypto.Hash][]byte{
	0:             {},
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// hashSizes are the digest sizes Sign checks, without calling
// crypto.Hash.Size, which panics on an unknown value.
var hashSizes = map[crypto.Hash]int{
	crypto.SHA1: 20, crypto.SHA224: 28, crypto.SHA256: 32, crypto.SHA384: 48, crypto.SHA512: 64,
	crypto.SHA512_224: 28, crypto.SHA512_256: 32,
	crypto.SHA3_224: 28, crypto.SHA3_256: 32, crypto.SHA3_384: 48, crypto.SHA3_512: 64,
}

// checkDigest returns opts' hash after checking that digest has its size: a
// message passed where its digest belongs would otherwise be signed.
func checkDigest(digest []byte, opts crypto.SignerOpts) (crypto.Hash, error) {
	if opts == nil {
		return 0, errors.New("no crypto.SignerOpts")
	}
	h := opts.HashFunc()
	if h == 0 {
		return 0, nil
	}
	size, ok := hashSizes[h]
	if !ok {
		return 0, fmt.Errorf("hash %v is not supported", h)
	}
	if len(digest) != size {
		return 0, fmt.Errorf("digest is %d bytes, %v makes %d", len(digest), h, size)
	}
	return h, nil
}

// ecdsaDER encodes a PKCS#11 ECDSA signature, r and s as two big-endian
// halves (PKCS#11 Current Mechanisms v2.40 section 2.3.1), as the
// Ecdsa-Sig-Value SEQUENCE of RFC 3279 section 2.2.3 that X.509, CMS and
// crypto/ecdsa's VerifyASN1 expect.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 || len(raw) > 2*66 {
		return nil, fmt.Errorf("ECDSA signature of %d bytes from the module", len(raw))
	}
	r, s := raw[:len(raw)/2], raw[len(raw)/2:]
	body := derIntLen(r) + derIntLen(s)
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	if body >= 0x80 { // P-521: the long form (X.690 section 8.1.3.5)
		out = append(out, 0x81)
	}
	out = append(out, byte(body))
	out = appendDERInt(out, r)
	return appendDERInt(out, s), nil
}

// derIntLen is the size of the DER INTEGER of the unsigned big-endian b.
func derIntLen(b []byte) int {
	b = trimZeros(b)
	n := len(b)
	if b[0]&0x80 != 0 {
		n++ // a leading zero keeps it positive
	}
	return 2 + n
}

func appendDERInt(out, b []byte) []byte {
	b = trimZeros(b)
	n := len(b)
	if b[0]&0x80 != 0 {
		out = append(out, 0x02, byte(n+1), 0)
	} else {
		out = append(out, 0x02, byte(n))
	}
	return append(out, b...)
}

// trimZeros drops leading zero bytes, keeping one byte for zero itself.
func trimZeros(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}
