package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// RecipientInfos (RFC 5652 section 6.2): written for a Recipient, read
// and opened with a RecipientKey.

// A KeyAgreer does the ECDH of key agreement with a private key it holds:
// *ecdh.PrivateKey is one (P-256, P-384, P-521, X25519), and so can be an
// HSM key (CKM_ECDH1_DERIVE). Public is an *ecdh.PublicKey. ECDH returns
// the shared secret Z: the x-coordinate for the NIST curves (SEC 1
// section 3.3.1), the X25519 output (RFC 7748), which must not be all
// zeros.
type KeyAgreer interface {
	Public() crypto.PublicKey
	ECDH(peer *ecdh.PublicKey) ([]byte, error)
}

var _ KeyAgreer = (*ecdh.PrivateKey)(nil)

// A RecipientKey is what opens an envelope: a certificate that a
// RecipientInfo names (issuer and serial number, or subject key
// identifier) with its private key, or a key-encryption key shared
// beforehand.
type RecipientKey struct {
	Cert *x509.Certificate
	// Key is a crypto.Decrypter with an RSA public key (key transport;
	// hsm keys are), a KeyAgreer (key agreement), or an
	// *ecdsa.PrivateKey (converted to its KeyAgreer).
	Key crypto.PrivateKey

	// KEKID and KEK open a KEKRecipientInfo of that key identifier.
	KEKID, KEK []byte
}

// --- writing ---

var null = []byte{tagNull, 0}

var (
	oaepSHA256 = AppendTLV(nil, 0x30, der(OIDRSAOAEP), AppendTLV(nil, 0x30,
		AppendTLV(nil, 0xa0, AppendTLV(nil, 0x30, der(OIDSHA256), null)),
		AppendTLV(nil, 0xa1, AppendTLV(nil, 0x30, der(OIDMGF1), AppendTLV(nil, 0x30, der(OIDSHA256), null)))))
	rsaPKCS1 = AppendTLV(nil, 0x30, der(OIDRSAEncryption), null)
)

// info is r's RecipientInfo for cek, and its version.
func (r Recipient) info(cek []byte, rnd io.Reader) ([]byte, int, error) {
	if r.KEK != nil {
		return kekInfo(r.KEKID, r.KEK, cek)
	}
	c := r.Cert
	if c == nil {
		return nil, 0, errors.New("a recipient has neither certificate nor key-encryption key")
	}
	if r.SubjectKeyID && len(c.SubjectKeyId) == 0 {
		return nil, 0, fmt.Errorf("certificate %q has no subject key identifier", c.Subject)
	}
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return nil, 0, unsupported("certificate %q: its key usage does not allow keyEncipherment", c.Subject)
		}
		return ktriInfo(r, pub, cek, rnd)
	case *ecdsa.PublicKey:
		ek, err := pub.ECDH()
		if err != nil {
			return nil, 0, unsupported("certificate %q: %v", c.Subject, err)
		}
		return kariInfo(r, ek, cek, rnd)
	}
	// crypto/x509 leaves PublicKey nil for X25519 certificates (RFC 8410).
	if k, err := x509.ParsePKIXPublicKey(c.RawSubjectPublicKeyInfo); err == nil {
		if ek, ok := k.(*ecdh.PublicKey); ok {
			return kariInfo(r, ek, cek, rnd)
		}
	}
	return nil, 0, unsupported("certificate %q: a %v key can neither transport nor agree keys here", c.Subject, c.PublicKeyAlgorithm)
}

func issuerAndSerial(c *x509.Certificate) []byte {
	return AppendTLV(nil, 0x30, c.RawIssuer, der(c.SerialNumber))
}

func ktriInfo(r Recipient, pub *rsa.PublicKey, cek []byte, rnd io.Reader) ([]byte, int, error) {
	if err := rsaPolicy(pub); err != nil {
		return nil, 0, err
	}
	version, rid := 0, issuerAndSerial(r.Cert)
	if r.SubjectKeyID {
		version, rid = 2, AppendTLV(nil, 0x80, r.Cert.SubjectKeyId)
	}
	alg := oaepSHA256
	var ek []byte
	var err error
	if r.PKCS1v15 {
		alg = rsaPKCS1
		ek, err = rsa.EncryptPKCS1v15(rnd, pub, cek)
	} else {
		ek, err = rsa.EncryptOAEP(sha256.New(), rnd, pub, cek, nil)
	}
	if err != nil {
		return nil, 0, err
	}
	return AppendTLV(nil, 0x30, []byte{0x02, 0x01, byte(version)}, rid, alg, AppendTLV(nil, 0x04, ek)), version, nil
}

// kariInfo is a KeyAgreeRecipientInfo with an ephemeral key of the
// recipient's curve (RFC 5753 section 3.1.1, RFC 8418 section 2).
//
//	KeyAgreeRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 3
//	  originator [0] EXPLICIT OriginatorIdentifierOrKey,
//	  ukm [1] EXPLICIT UserKeyingMaterial OPTIONAL,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  recipientEncryptedKeys RecipientEncryptedKeys }
func kariInfo(r Recipient, pub *ecdh.PublicKey, cek []byte, rnd io.Reader) ([]byte, int, error) {
	c := r.Cert
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyAgreement == 0 {
		return nil, 0, unsupported("certificate %q: its key usage does not allow keyAgreement", c.Subject)
	}
	curve := pub.Curve()
	var scheme asn1.ObjectIdentifier
	keyAlg := AppendTLV(nil, 0x30, der(OIDECPublicKey)) // parameters absent: the recipient's curve (RFC 5753 section 7.1.2)
	switch curve {
	case ecdh.P256():
		scheme = OIDStdDHSHA256KDF
	case ecdh.P384():
		scheme = OIDStdDHSHA384KDF
	case ecdh.P521():
		scheme = OIDStdDHSHA512KDF
	case ecdh.X25519():
		scheme = OIDStdDHHKDF256
		keyAlg = AppendTLV(nil, 0x30, der(OIDX25519)) // RFC 8418 section 2: parameters absent
	default:
		return nil, 0, unsupported("certificate %q: curve %v", c.Subject, curve)
	}
	ks, _ := kdfPolicy(scheme)
	eph, err := curve.GenerateKey(rnd)
	if err != nil {
		return nil, 0, err
	}
	z, err := eph.ECDH(pub)
	if err != nil {
		return nil, 0, unsupported("certificate %q: %v", c.Subject, err)
	}
	wrapAlg := AppendTLV(nil, 0x30, der(OIDAES256Wrap))
	kek, err := deriveKEK(ks, z, sharedInfo(wrapAlg, nil, 32), 32)
	if err != nil {
		return nil, 0, err
	}
	wrapped, err := wrapKey(kek, cek)
	if err != nil {
		return nil, 0, err
	}
	rid := issuerAndSerial(c)
	if r.SubjectKeyID {
		rid = AppendTLV(nil, 0xa0, AppendTLV(nil, 0x04, c.SubjectKeyId)) // rKeyId [0] IMPLICIT RecipientKeyIdentifier
	}
	originator := AppendTLV(nil, 0xa0, AppendTLV(nil, 0xa1, keyAlg, AppendTLV(nil, 0x03, []byte{0}, eph.PublicKey().Bytes())))
	kea := AppendTLV(nil, 0x30, der(scheme), wrapAlg)
	reks := AppendTLV(nil, 0x30, AppendTLV(nil, 0x30, rid, AppendTLV(nil, 0x04, wrapped)))
	return AppendTLV(nil, 0xa1, []byte{0x02, 0x01, 0x03}, originator, kea, reks), 3, nil
}

func kekInfo(id, kek, cek []byte) ([]byte, int, error) {
	var wrap asn1.ObjectIdentifier
	switch len(kek) {
	case 16:
		wrap = OIDAES128Wrap
	case 24:
		wrap = OIDAES192Wrap
	case 32:
		wrap = OIDAES256Wrap
	default:
		return nil, 0, fmt.Errorf("a key-encryption key of %d bytes (16, 24 or 32)", len(kek))
	}
	if len(id) == 0 {
		return nil, 0, errors.New("a key-encryption key without identifier")
	}
	wrapped, err := wrapKey(kek, cek)
	if err != nil {
		return nil, 0, err
	}
	return AppendTLV(nil, 0xa2, []byte{0x02, 0x01, 0x04}, AppendTLV(nil, 0x30, AppendTLV(nil, 0x04, id)),
		AppendTLV(nil, 0x30, der(wrap)), AppendTLV(nil, 0x04, wrapped)), 4, nil
}

// sharedInfo is the DER ECC-CMS-SharedInfo (RFC 5753 section 7.2), the
// KDF's SharedInfo (X9.63) or info (HKDF, RFC 8418 section 2.2).
//
//	ECC-CMS-SharedInfo ::= SEQUENCE {
//	  keyInfo         AlgorithmIdentifier,
//	  entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
//	  suppPubInfo [2] EXPLICIT OCTET STRING   }
func sharedInfo(wrapAlg, ukm []byte, kekLen int) []byte {
	var bits [4]byte
	binary.BigEndian.PutUint32(bits[:], uint32(kekLen*8))
	var u []byte
	if ukm != nil {
		u = AppendTLV(nil, 0xa0, AppendTLV(nil, 0x04, ukm))
	}
	return AppendTLV(nil, 0x30, wrapAlg, u, AppendTLV(nil, 0xa2, AppendTLV(nil, 0x04, bits[:])))
}

// deriveKEK derives n bytes from the shared secret z.
func deriveKEK(s kdfScheme, z, info []byte, n int) ([]byte, error) {
	if s.kind == kdfHKDF {
		// RFC 8418 section 2.2: no salt (the ukm, if any, is in info).
		return hkdf.Key(s.hash.New, z, nil, string(info), n)
	}
	// ANSI X9.63 section 3.6.1 (SEC 1 section 3.6.1): Hash(Z || counter || SharedInfo).
	var out []byte
	for counter := uint32(1); len(out) < n; counter++ {
		h := s.hash.New()
		h.Write(z)
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], counter)
		h.Write(c[:])
		h.Write(info)
		out = h.Sum(out)
	}
	return out[:n], nil
}

// --- reading ---

// openOptions are what opening a RecipientInfo needs besides the key.
type openOptions struct {
	keyLen int // of the content-encryption key
	legacy bool
	rand   io.Reader
}

// maxAttempts bounds the RecipientInfos tried for one key: each costs a
// private-key operation.
const maxAttempts = 8

// openRecipientInfos finds among ris (the DER content of the
// RecipientInfos SET) those that k opens and returns the
// content-encryption key. A RecipientInfo for k that does not open is
// ErrDecryption, unless another one opens; none for k is ErrNoRecipient.
func openRecipientInfos(ris cryptobyte.String, k *RecipientKey, o openOptions) ([]byte, error) {
	if ris.Empty() {
		return nil, malformed("RecipientInfos is empty (RFC 5652 section 6.1: SIZE (1..MAX))")
	}
	var firstErr error
	found := 0
	for !ris.Empty() {
		var ri cryptobyte.String
		var tag cbasn1.Tag
		if !ris.ReadAnyASN1(&ri, &tag) {
			return nil, malformed("a RecipientInfo is not DER")
		}
		var cek []byte
		var match bool
		var err error
		switch tag {
		case cbasn1.SEQUENCE:
			cek, match, err = openKTRI(ri, k, o)
		case cbasn1.Tag(1).Constructed().ContextSpecific():
			cek, match, err = openKARI(ri, k, o)
		case cbasn1.Tag(2).Constructed().ContextSpecific():
			cek, match, err = openKEKRI(ri, k, o)
		case cbasn1.Tag(3).Constructed().ContextSpecific(), cbasn1.Tag(4).Constructed().ContextSpecific():
			continue // pwri, ori: not ours
		default:
			return nil, malformed("a RecipientInfo of tag %#x", uint8(tag))
		}
		if errors.Is(err, ErrMalformed) {
			return nil, err
		}
		if !match {
			continue
		}
		if found++; found > maxAttempts {
			return nil, malformed("more than %d RecipientInfos name this key", maxAttempts)
		}
		if err == nil {
			return cek, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if found == 0 {
		what := "the key-encryption key"
		if k.Cert != nil {
			what = fmt.Sprintf("certificate %q (serial %x)", k.Cert.Subject, k.Cert.SerialNumber)
		}
		return nil, errorOf(ErrNoRecipient, "no RecipientInfo names %s", what)
	}
	return nil, firstErr
}

// readRID reads an issuerAndSerialNumber, or a [0] subject key identifier
// (primitive in a KeyTransRecipientInfo, a RecipientKeyIdentifier in a
// KeyAgreeRecipientInfo), and tells whether it names c.
func readRID(s *cryptobyte.String, c *x509.Certificate, keyAgree bool) (bool, error) {
	switch {
	case s.PeekASN1Tag(cbasn1.SEQUENCE):
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		if !s.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(serial) || !ias.Empty() {
			return false, malformed("a recipient identifier is not an IssuerAndSerialNumber")
		}
		return c != nil && bytes.Equal(issuer, c.RawIssuer) && serial.Cmp(c.SerialNumber) == 0, nil
	case !keyAgree && s.PeekASN1Tag(tagPrim0):
		var ski cryptobyte.String
		s.ReadASN1(&ski, tagPrim0)
		return c != nil && len(ski) > 0 && bytes.Equal(ski, c.SubjectKeyId), nil
	case keyAgree && s.PeekASN1Tag(tagCons0):
		var rkid, ski cryptobyte.String
		if !s.ReadASN1(&rkid, tagCons0) || !rkid.ReadASN1(&ski, cbasn1.OCTET_STRING) ||
			!rkid.SkipOptionalASN1(cbasn1.GeneralizedTime) || !rkid.SkipOptionalASN1(cbasn1.SEQUENCE) || !rkid.Empty() {
			return false, malformed("a recipient identifier is not a RecipientKeyIdentifier")
		}
		return c != nil && len(ski) > 0 && bytes.Equal(ski, c.SubjectKeyId), nil
	}
	return false, malformed("a recipient identifier is neither issuerAndSerialNumber nor a key identifier")
}

// openKTRI reads a KeyTransRecipientInfo (RFC 5652 section 6.2.1).
//
//	KeyTransRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 0 or 2
//	  rid RecipientIdentifier,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  encryptedKey EncryptedKey }
func openKTRI(ri cryptobyte.String, k *RecipientKey, o openOptions) ([]byte, bool, error) {
	var version int64
	if !ri.ReadASN1Integer(&version) || version != 0 && version != 2 {
		return nil, false, malformed("KeyTransRecipientInfo version is not 0 or 2")
	}
	match, err := readRID(&ri, k.Cert, false)
	if err != nil {
		return nil, false, err
	}
	oid, params, err := ReadAlgorithm(&ri, "KeyTransRecipientInfo keyEncryptionAlgorithm")
	if err != nil {
		return nil, false, malformed("%v", err)
	}
	var ek cryptobyte.String
	if !ri.ReadASN1(&ek, cbasn1.OCTET_STRING) || !ri.Empty() {
		return nil, false, malformed("KeyTransRecipientInfo encryptedKey is not an OCTET STRING at its end")
	}
	if !match {
		return nil, false, nil
	}
	dec, ok := k.Key.(crypto.Decrypter)
	if !ok {
		return nil, true, unsupported("a key transport recipient, but the key is a %T, not a crypto.Decrypter", k.Key)
	}
	pub, ok := dec.Public().(*rsa.PublicKey)
	if !ok {
		return nil, true, unsupported("a key transport recipient, but the key is not RSA")
	}
	if err := rsaPolicy(pub); err != nil {
		return nil, true, err
	}
	rnd := o.rand
	switch {
	case oid.Equal(OIDRSAOAEP):
		opts, err := oaepPolicy(params, o.legacy)
		if err != nil {
			return nil, true, err
		}
		cek, err := dec.Decrypt(rnd, ek, opts)
		if err != nil && !errors.Is(err, rsa.ErrDecryption) {
			return nil, true, fmt.Errorf("key transport: %w", err) // the key's own: an HSM unavailable
		}
		if err != nil || len(cek) != o.keyLen {
			return nil, true, decryptionFailed()
		}
		return cek, true, nil
	case oid.Equal(OIDRSAEncryption):
		if !NullOrAbsent(params) {
			return nil, true, unsupported("rsaEncryption with parameters")
		}
		cek, err := pkcs1v15CEK(dec, rnd, ek, o.keyLen)
		return cek, true, err
	}
	return nil, true, unsupported("key transport algorithm %v", oid)
}

// fallbackSecret keys the substitute content-encryption keys of
// pkcs1v15CEK: one per process.
var fallbackSecret = func() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}()

// pkcs1v15CEK decrypts an RSAES-PKCS1-v1_5 encryptedKey. A bad padding or
// a key of the wrong length gives a substitute key, computed before the
// outcome is known, that then fails as a wrong key would, and not before (RFC 3218 section
// 2.3.2, RFC 8017 section 7.2.2): there is no padding oracle. The
// substitute is HMAC-SHA256(fallbackSecret, encryptedKey), not a fresh
// random key, so that the same encryptedKey sent twice fails the same way
// twice and a valid padding cannot be told from an invalid one by trying
// again ("implicit rejection", as in draft-irtf-cfrg-rsa-guidance).
func pkcs1v15CEK(dec crypto.Decrypter, rnd io.Reader, ek []byte, keyLen int) ([]byte, error) {
	mac := hmac.New(sha256.New, fallbackSecret)
	mac.Write(ek)
	cek := mac.Sum(nil)[:keyLen]
	pt, err := dec.Decrypt(rnd, ek, &rsa.PKCS1v15DecryptOptions{})
	if err != nil && !errors.Is(err, rsa.ErrDecryption) {
		return nil, fmt.Errorf("key transport: %w", err) // the key's own: an HSM unavailable
	}
	if err == nil && len(pt) == keyLen {
		cek = pt
	}
	return cek, nil
}

// openKARI reads a KeyAgreeRecipientInfo (RFC 5652 section 6.2.2) with an
// originatorKey: ephemeral-static ECDH (RFC 5753 section 3.1, RFC 8418
// section 2).
func openKARI(ri cryptobyte.String, k *RecipientKey, o openOptions) ([]byte, bool, error) {
	var version int64
	var orig, origKey, keyAlg, ukmField, reks cryptobyte.String
	var pubBits asn1.BitString
	var hasUKM bool
	if !ri.ReadASN1Integer(&version) || version != 3 {
		return nil, false, malformed("KeyAgreeRecipientInfo version is not 3")
	}
	if !ri.ReadASN1(&orig, tagCons0) {
		return nil, false, malformed("KeyAgreeRecipientInfo has no originator")
	}
	static := !orig.PeekASN1Tag(tagCons1)
	if !static {
		if !orig.ReadASN1(&origKey, tagCons1) || !orig.Empty() || !origKey.ReadASN1(&keyAlg, cbasn1.SEQUENCE) ||
			!origKey.ReadASN1BitString(&pubBits) || !origKey.Empty() || pubBits.BitLength%8 != 0 {
			return nil, false, malformed("KeyAgreeRecipientInfo originatorKey is not an OriginatorPublicKey")
		}
	}
	var ukm []byte
	if !ri.ReadOptionalASN1(&ukmField, &hasUKM, tagCons1) {
		return nil, false, malformed("KeyAgreeRecipientInfo ukm")
	}
	if hasUKM {
		var u cryptobyte.String
		if !ukmField.ReadASN1(&u, cbasn1.OCTET_STRING) || !ukmField.Empty() {
			return nil, false, malformed("KeyAgreeRecipientInfo ukm is not an OCTET STRING")
		}
		ukm = u
	}
	schemeOID, wrapAlg, err := ReadAlgorithm(&ri, "KeyAgreeRecipientInfo keyEncryptionAlgorithm")
	if err != nil {
		return nil, false, malformed("%v", err)
	}
	if !ri.ReadASN1(&reks, cbasn1.SEQUENCE) || !ri.Empty() {
		return nil, false, malformed("KeyAgreeRecipientInfo recipientEncryptedKeys is not a SEQUENCE at its end")
	}
	var wrapped []byte
	match := false
	for !reks.Empty() {
		var rek, ek cryptobyte.String
		if !reks.ReadASN1(&rek, cbasn1.SEQUENCE) {
			return nil, false, malformed("a RecipientEncryptedKey is not a SEQUENCE")
		}
		m, err := readRID(&rek, k.Cert, true)
		if err != nil {
			return nil, false, err
		}
		if !rek.ReadASN1(&ek, cbasn1.OCTET_STRING) || !rek.Empty() {
			return nil, false, malformed("a RecipientEncryptedKey encryptedKey is not an OCTET STRING at its end")
		}
		if m && !match {
			match, wrapped = true, ek
		}
	}
	if !match {
		return nil, false, nil
	}
	if static {
		return nil, true, unsupported("static-static key agreement (the originator names a certificate)")
	}
	ag, err := keyAgreer(k.Key)
	if err != nil {
		return nil, true, err
	}
	ours, ok := ag.Public().(*ecdh.PublicKey)
	if !ok {
		return nil, true, unsupported("the key agreement key's public key is a %T, not an *ecdh.PublicKey", ag.Public())
	}
	curve := ours.Curve()
	s := cryptobyte.String(keyAlg)
	var algOID asn1.ObjectIdentifier
	if !s.ReadASN1ObjectIdentifier(&algOID) {
		return nil, true, malformed("KeyAgreeRecipientInfo originatorKey algorithm")
	}
	params := []byte(s)
	if len(params) == 0 {
		params = nil
	}
	if err := originatorPolicy(curve, algOID, params); err != nil {
		return nil, true, err
	}
	peer, err := curve.NewPublicKey(pubBits.Bytes)
	if err != nil {
		return nil, true, malformed("the originator's public key is not a point of %v: %v", curve, err)
	}
	scheme, err := kdfPolicy(schemeOID)
	if err != nil {
		return nil, true, err
	}
	ws := cryptobyte.String(wrapAlg)
	wrapOID, wrapParams, err := ReadAlgorithm(&ws, "the key-wrap algorithm")
	if err != nil || !ws.Empty() {
		return nil, true, malformed("the key-agreement parameters are not a key-wrap AlgorithmIdentifier")
	}
	kekLen, err := wrapPolicy(wrapOID, wrapParams)
	if err != nil {
		return nil, true, err
	}
	z, err := ag.ECDH(peer)
	if err != nil {
		if _, software := ag.(*ecdh.PrivateKey); software {
			// A low-order X25519 point, the only failure of crypto/ecdh here.
			return nil, true, malformed("the originator's public key: %v", err)
		}
		return nil, true, fmt.Errorf("key agreement: %w", err) // the key's own: an HSM unavailable
	}
	kek, err := deriveKEK(scheme, z, sharedInfo(wrapAlg, ukm, kekLen), kekLen)
	if err != nil {
		return nil, true, err
	}
	cek, err := unwrapKey(kek, wrapped)
	if err != nil || len(cek) != o.keyLen {
		return nil, true, decryptionFailed()
	}
	return cek, true, nil
}

// originatorPolicy checks the originatorKey algorithm against our curve:
// id-X25519 without parameters (RFC 8418 section 2), or id-ecPublicKey
// with parameters absent, NULL, or our curve's name (RFC 5753 section
// 7.1.2).
func originatorPolicy(curve ecdh.Curve, oid asn1.ObjectIdentifier, params []byte) error {
	if curve == ecdh.X25519() {
		if !oid.Equal(OIDX25519) || params != nil {
			return unsupported("an originator key %v for an X25519 recipient", oid)
		}
		return nil
	}
	if !oid.Equal(OIDECPublicKey) {
		return unsupported("an originator key %v for a %v recipient", oid, curve)
	}
	if NullOrAbsent(params) {
		return nil
	}
	var named asn1.ObjectIdentifier
	ps := cryptobyte.String(params)
	if !ps.ReadASN1ObjectIdentifier(&named) || !ps.Empty() {
		return unsupported("originator key parameters that are not a named curve")
	}
	var want asn1.ObjectIdentifier
	switch curve {
	case ecdh.P256():
		want = OIDCurveP256
	case ecdh.P384():
		want = OIDCurveP384
	case ecdh.P521():
		want = OIDCurveP521
	}
	if !named.Equal(want) {
		return unsupported("an originator key on curve %v for a %v recipient", named, curve)
	}
	return nil
}

func keyAgreer(key crypto.PrivateKey) (KeyAgreer, error) {
	switch k := key.(type) {
	case KeyAgreer:
		return k, nil
	case *ecdsa.PrivateKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, unsupported("%v", err)
		}
		return ek, nil
	}
	return nil, unsupported("a key agreement recipient, but the key is a %T, not a KeyAgreer", key)
}

// openKEKRI reads a KEKRecipientInfo (RFC 5652 section 6.2.3).
//
//	KEKRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 4
//	  kekid KEKIdentifier,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  encryptedKey EncryptedKey }
//	KEKIdentifier ::= SEQUENCE {
//	  keyIdentifier OCTET STRING,
//	  date GeneralizedTime OPTIONAL,
//	  other OtherKeyAttribute OPTIONAL }
func openKEKRI(ri cryptobyte.String, k *RecipientKey, o openOptions) ([]byte, bool, error) {
	var version int64
	var kekid, id, ek cryptobyte.String
	if !ri.ReadASN1Integer(&version) || version != 4 {
		return nil, false, malformed("KEKRecipientInfo version is not 4")
	}
	if !ri.ReadASN1(&kekid, cbasn1.SEQUENCE) || !kekid.ReadASN1(&id, cbasn1.OCTET_STRING) ||
		!kekid.SkipOptionalASN1(cbasn1.GeneralizedTime) || !kekid.SkipOptionalASN1(cbasn1.SEQUENCE) || !kekid.Empty() {
		return nil, false, malformed("KEKRecipientInfo kekid is not a KEKIdentifier")
	}
	oid, params, err := ReadAlgorithm(&ri, "KEKRecipientInfo keyEncryptionAlgorithm")
	if err != nil {
		return nil, false, malformed("%v", err)
	}
	if !ri.ReadASN1(&ek, cbasn1.OCTET_STRING) || !ri.Empty() {
		return nil, false, malformed("KEKRecipientInfo encryptedKey is not an OCTET STRING at its end")
	}
	if k.KEK == nil || !bytes.Equal(id, k.KEKID) {
		return nil, false, nil
	}
	kekLen, err := wrapPolicy(oid, params)
	if err != nil {
		return nil, true, err
	}
	if len(k.KEK) != kekLen {
		return nil, true, unsupported("a key-encryption key of %d bytes for %v", len(k.KEK), oid)
	}
	cek, err := unwrapKey(k.KEK, ek)
	if err != nil || len(cek) != o.keyLen {
		return nil, true, decryptionFailed()
	}
	return cek, true, nil
}
