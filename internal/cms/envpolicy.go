package cms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The encryption half of the one algorithm policy, beside the signature
// half of verify.go ([VerifySignature]) and the digests of oid.go
// ([DigestHash]): what EnvelopedData and AuthEnvelopedData may use, read
// or written. Every decision is taken by the functions of this file.
//
//   - content encryption: AES-128/192/256-GCM (RFC 5084; nonce of 12
//     bytes, ICV of 12 to 16 bytes) and ChaCha20-Poly1305 (RFC 8103) in
//     AuthEnvelopedData; AES-128/192/256-CBC (RFC 3565) in EnvelopedData;
//     Triple-DES CBC only for a legacy read ([DecryptOptions.AllowLegacy]);
//     DES and RC2 refused always. Written: AES-256-GCM by default,
//     AES-128-GCM, AES-256-CBC and AES-128-CBC on request.
//   - key transport (RFC 5652 section 6.2.1): RSAES-OAEP (RFC 8017, RFC
//     4055) with SHA-256, SHA-384 or SHA-512 and MGF1 over any of them, an
//     optional pSpecified label; RSAES-OAEP with SHA-1 only for a legacy
//     read; RSAES-PKCS1-v1_5 read with the random-key fallback of RFC 3218
//     section 2.3.2, written only on request; RSA keys of 2048 bits at
//     least, both ways.
//   - key agreement (RFC 5652 section 6.2.2): ephemeral-static ECDH,
//     dhSinglePass-stdDH-sha256/384/512kdf-scheme (RFC 5753, ANSI X9.63
//     KDF) and dhSinglePass-stdDH-hkdf-sha256/384/512-scheme (RFC 8418,
//     HKDF), on P-256, P-384, P-521 (RFC 5753) and X25519 (RFC 8418);
//     the cofactor schemes are the standard ones on these curves (cofactor
//     1; X25519 clamps) and are read as such; SHA-1 and SHA-224 KDFs
//     refused. Written: P-256 with sha256kdf, P-384 with sha384kdf, P-521
//     with sha512kdf, X25519 with hkdf-sha256, each with AES-256 key wrap.
//   - key wrap: AES key wrap (RFC 3394, RFC 3565) with a 128, 192 or 256
//     bit key-encryption key; Triple-DES key wrap refused.

// Content-encryption algorithms (RFC 3565, RFC 5084, RFC 8103, RFC 8018).
var (
	OIDAES128CBC        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	OIDAES192CBC        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	OIDAES256CBC        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	OIDAES128GCM        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	OIDAES192GCM        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	OIDAES256GCM        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	OIDChaCha20Poly1305 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 18}
	OIDDESEDE3CBC       = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	OIDDESCBC           = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}
	OIDRC2CBC           = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}
)

// Key-management algorithms (RFC 8017, RFC 4055, RFC 5753, RFC 8418, RFC
// 3565, RFC 8410).
var (
	OIDRSAOAEP    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	OIDPSpecified = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}

	OIDStdDHSHA1KDF   = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 2}
	OIDStdDHSHA224KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 0}
	OIDStdDHSHA256KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}
	OIDStdDHSHA384KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	OIDStdDHSHA512KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}
	OIDCofactorSHA1   = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 3}
	OIDCofactorSHA224 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 0}
	OIDCofactorSHA256 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 1}
	OIDCofactorSHA384 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 2}
	OIDCofactorSHA512 = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 3}
	OIDStdDHHKDF256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 19}
	OIDStdDHHKDF384   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 20}
	OIDStdDHHKDF512   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 21}

	OIDAES128Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	OIDAES192Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	OIDAES256Wrap  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
	OID3DESWrap    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 6}
	OIDX25519      = asn1.ObjectIdentifier{1, 3, 101, 110}
	OIDX448        = asn1.ObjectIdentifier{1, 3, 101, 111}
	OIDCurveP256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	OIDCurveP384   = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	OIDCurveP521   = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
	OIDEnveloped   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	OIDAuthEnvData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// The kinds of the errors of decryption, beside ErrMalformed and
// ErrUnsupported.
var (
	// ErrNoRecipient: no RecipientInfo names the key given.
	ErrNoRecipient = errors.New("no recipient for this key")
	// ErrDecryption: the content-encryption key does not unwrap, the
	// authentication tag does not verify, or the padding is wrong. The
	// reason is never said more precisely: no oracle.
	ErrDecryption = errors.New("decryption failed")
)

func decryptionFailed() error {
	return errorOf(ErrDecryption, "the content does not decrypt with this key (wrong key, or altered)")
}

// contentMode is how a content-encryption algorithm runs.
type contentMode int

const (
	modeCBC contentMode = iota
	modeGCM
	modeChaCha
)

// contentAlg is a content-encryption algorithm of the policy.
type contentAlg struct {
	oid    asn1.ObjectIdentifier
	name   string
	mode   contentMode
	keyLen int
	legacy bool // 3DES: read with AllowLegacy only
}

var contentAlgs = []contentAlg{
	{OIDAES128GCM, "AES-128-GCM", modeGCM, 16, false},
	{OIDAES192GCM, "AES-192-GCM", modeGCM, 24, false},
	{OIDAES256GCM, "AES-256-GCM", modeGCM, 32, false},
	{OIDChaCha20Poly1305, "ChaCha20-Poly1305", modeChaCha, 32, false},
	{OIDAES128CBC, "AES-128-CBC", modeCBC, 16, false},
	{OIDAES192CBC, "AES-192-CBC", modeCBC, 24, false},
	{OIDAES256CBC, "AES-256-CBC", modeCBC, 32, false},
	{OIDDESEDE3CBC, "3DES-CBC", modeCBC, 24, true},
}

// contentParams is a content-encryption algorithm with its parameters
// read: the CBC IV, or the AEAD nonce and tag length.
type contentParams struct {
	alg    contentAlg
	iv     []byte
	tagLen int
}

// contentPolicy reads a contentEncryptionAlgorithm under the policy; auth
// tells whether it is that of an AuthEnvelopedData, where only AEADs go,
// and an EnvelopedData only the others. The errors are ErrUnsupported, or
// ErrMalformed for parameters that do not parse.
func contentPolicy(oid asn1.ObjectIdentifier, params []byte, auth, legacy bool) (contentParams, error) {
	switch {
	case oid.Equal(OIDDESCBC), oid.Equal(OIDRC2CBC):
		return contentParams{}, unsupported("content-encryption algorithm %v is weak", oid)
	}
	i := slices.IndexFunc(contentAlgs, func(a contentAlg) bool { return a.oid.Equal(oid) })
	if i < 0 {
		return contentParams{}, unsupported("unknown content-encryption algorithm %v", oid)
	}
	p := contentParams{alg: contentAlgs[i]}
	if p.alg.legacy && !legacy {
		return contentParams{}, unsupported("content-encryption algorithm %s is weak (allowed for a legacy read only)", p.alg.name)
	}
	if auth != (p.alg.mode != modeCBC) {
		if auth {
			return contentParams{}, unsupported("%s in an AuthEnvelopedData (RFC 5083: authenticated encryption only)", p.alg.name)
		}
		return contentParams{}, unsupported("%s in an EnvelopedData (RFC 5083: AuthEnvelopedData)", p.alg.name)
	}
	s := cryptobyte.String(params)
	var iv cryptobyte.String
	switch p.alg.mode {
	case modeCBC:
		// RFC 3565 section 4.1, RFC 8018 B.2.2: the IV as OCTET STRING.
		bs := aes.BlockSize
		if p.alg.oid.Equal(OIDDESEDE3CBC) {
			bs = des.BlockSize
		}
		if !s.ReadASN1(&iv, cbasn1.OCTET_STRING) || !s.Empty() || len(iv) != bs {
			return contentParams{}, malformed("%s parameters are not an IV of %d bytes", p.alg.name, bs)
		}
		p.iv = iv
	case modeGCM:
		// RFC 5084 section 3.2: GCMParameters ::= SEQUENCE {
		//   aes-nonce OCTET STRING, aes-ICVlen AES-GCM-ICVlen DEFAULT 12 }
		var seq cryptobyte.String
		tagLen := int64(12)
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() || !seq.ReadASN1(&iv, cbasn1.OCTET_STRING) {
			return contentParams{}, malformed("%s parameters are not GCMParameters", p.alg.name)
		}
		if !seq.Empty() && (!seq.ReadASN1Integer(&tagLen) || !seq.Empty()) {
			return contentParams{}, malformed("%s parameters are not GCMParameters", p.alg.name)
		}
		if tagLen < 12 || tagLen > 16 {
			return contentParams{}, malformed("%s ICV length %d is not 12 to 16 (RFC 5084 section 3.2)", p.alg.name, tagLen)
		}
		if len(iv) != gcmNonceSize {
			return contentParams{}, unsupported("%s with a nonce of %d bytes (12 only, RFC 5084 section 3.2 recommends it)", p.alg.name, len(iv))
		}
		p.iv, p.tagLen = iv, int(tagLen)
	case modeChaCha:
		// RFC 8103 section 3: AEADChaCha20Poly1305Nonce ::= OCTET STRING (SIZE(12))
		if !s.ReadASN1(&iv, cbasn1.OCTET_STRING) || !s.Empty() || len(iv) != 12 {
			return contentParams{}, malformed("%s parameters are not a nonce of 12 bytes", p.alg.name)
		}
		p.iv, p.tagLen = iv, 16
	}
	return p, nil
}

// block is the block cipher of a CBC or GCM content key.
func (p contentParams) block(key []byte) (cipher.Block, error) {
	if p.alg.oid.Equal(OIDDESEDE3CBC) {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}

// oaepPolicy reads RSAES-OAEP-params (RFC 8017 appendix A.2.1, RFC 4055
// section 4.1). SHA-1, the default, only for a legacy read.
//
//	RSAES-OAEP-params ::= SEQUENCE {
//	   hashFunc          [0] AlgorithmIdentifier DEFAULT sha1Identifier,
//	   maskGenFunc       [1] AlgorithmIdentifier DEFAULT mgf1SHA1Identifier,
//	   pSourceFunc       [2] AlgorithmIdentifier DEFAULT pSpecifiedEmptyIdentifier }
func oaepPolicy(params []byte, legacy bool) (*rsa.OAEPOptions, error) {
	bad := malformed("RSAES-OAEP parameters are malformed")
	opts := &rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA1}
	if params != nil && !NullOrAbsent(params) {
		s := cryptobyte.String(params)
		var seq, field cryptobyte.String
		var has bool
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
			return nil, bad
		}
		if !seq.ReadOptionalASN1(&field, &has, tagCons0) {
			return nil, bad
		}
		if has {
			oid, par, err := ReadAlgorithm(&field, "RSAES-OAEP hashFunc")
			if err != nil || !field.Empty() || !NullOrAbsent(par) {
				return nil, bad
			}
			opts.Hash = HashFromOID(oid)
		}
		if !seq.ReadOptionalASN1(&field, &has, tagCons1) {
			return nil, bad
		}
		if has {
			oid, par, err := ReadAlgorithm(&field, "RSAES-OAEP maskGenFunc")
			if err != nil || !field.Empty() || !oid.Equal(OIDMGF1) {
				return nil, bad
			}
			inner := cryptobyte.String(par)
			hashOID, hashPar, err := ReadAlgorithm(&inner, "MGF1 hash")
			if err != nil || !inner.Empty() || !NullOrAbsent(hashPar) {
				return nil, bad
			}
			opts.MGFHash = HashFromOID(hashOID)
		}
		if !seq.ReadOptionalASN1(&field, &has, tagCons2) {
			return nil, bad
		}
		if has {
			oid, par, err := ReadAlgorithm(&field, "RSAES-OAEP pSourceFunc")
			if err != nil || !field.Empty() || !oid.Equal(OIDPSpecified) {
				return nil, bad
			}
			label := cryptobyte.String(par)
			var l cryptobyte.String
			if !label.ReadASN1(&l, cbasn1.OCTET_STRING) || !label.Empty() {
				return nil, bad
			}
			if len(l) > 0 {
				opts.Label = l
			}
		}
		if !seq.Empty() {
			return nil, bad
		}
	}
	for _, h := range []crypto.Hash{opts.Hash, opts.MGFHash} {
		switch h {
		case crypto.SHA256, crypto.SHA384, crypto.SHA512:
		case crypto.SHA1:
			if !legacy {
				return nil, unsupported("RSAES-OAEP with SHA-1 (allowed for a legacy read only)")
			}
		default:
			return nil, unsupported("RSAES-OAEP with hash %v", h)
		}
	}
	return opts, nil
}

// minRSABits is the smallest RSA modulus of the policy, both ways.
const minRSABits = 2048

func rsaPolicy(pub *rsa.PublicKey) error {
	if n := pub.N.BitLen(); n < minRSABits {
		return unsupported("RSA key of %d bits (at least %d)", n, minRSABits)
	}
	return nil
}

// kdfKind is the key-derivation function of a key-agreement scheme.
type kdfKind int

const (
	kdfX963 kdfKind = iota // ANSI X9.63, RFC 5753 section 7.2
	kdfHKDF                // RFC 5869, RFC 8418 section 2.2
)

type kdfScheme struct {
	oid  asn1.ObjectIdentifier
	kind kdfKind
	hash crypto.Hash
}

var kdfSchemes = []kdfScheme{
	{OIDStdDHSHA256KDF, kdfX963, crypto.SHA256},
	{OIDStdDHSHA384KDF, kdfX963, crypto.SHA384},
	{OIDStdDHSHA512KDF, kdfX963, crypto.SHA512},
	{OIDCofactorSHA256, kdfX963, crypto.SHA256},
	{OIDCofactorSHA384, kdfX963, crypto.SHA384},
	{OIDCofactorSHA512, kdfX963, crypto.SHA512},
	{OIDStdDHHKDF256, kdfHKDF, crypto.SHA256},
	{OIDStdDHHKDF384, kdfHKDF, crypto.SHA384},
	{OIDStdDHHKDF512, kdfHKDF, crypto.SHA512},
}

// kdfPolicy is the scheme of a KeyAgreeRecipientInfo's
// keyEncryptionAlgorithm OID.
func kdfPolicy(oid asn1.ObjectIdentifier) (kdfScheme, error) {
	switch {
	case oid.Equal(OIDStdDHSHA1KDF), oid.Equal(OIDCofactorSHA1), oid.Equal(OIDStdDHSHA224KDF), oid.Equal(OIDCofactorSHA224):
		return kdfScheme{}, unsupported("key-agreement scheme %v has a weak KDF (SHA-1 or SHA-224)", oid)
	}
	i := slices.IndexFunc(kdfSchemes, func(k kdfScheme) bool { return k.oid.Equal(oid) })
	if i < 0 {
		return kdfScheme{}, unsupported("unknown key-agreement scheme %v", oid)
	}
	return kdfSchemes[i], nil
}

// wrapPolicy is the key-encryption-key length of a key-wrap algorithm
// (RFC 3565 section 2.3.2: parameters absent).
func wrapPolicy(oid asn1.ObjectIdentifier, params []byte) (int, error) {
	n := 0
	switch {
	case oid.Equal(OIDAES128Wrap):
		n = 16
	case oid.Equal(OIDAES192Wrap):
		n = 24
	case oid.Equal(OIDAES256Wrap):
		n = 32
	case oid.Equal(OID3DESWrap):
		return 0, unsupported("Triple-DES key wrap is weak")
	default:
		return 0, unsupported("unknown key-wrap algorithm %v", oid)
	}
	if !NullOrAbsent(params) {
		return 0, unsupported("key-wrap algorithm %v with parameters (RFC 3565 section 2.3.2: absent)", oid)
	}
	return n, nil
}
