package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The kinds of this package's errors, for errors.Is. The errors' own text
// does not include them: callers wrap with theirs.
var (
	// ErrMalformed: not a DER (or BER, where asked for) ContentInfo and
	// SignedData, or a field that breaks RFC 5652.
	ErrMalformed = errors.New("malformed CMS")
	// ErrUnsupported: an algorithm unknown, weak, with unexpected
	// parameters, or naming another hash than the digestAlgorithm.
	ErrUnsupported = errors.New("unsupported algorithm")
	// ErrInvalid: the signature does not verify, or the key is of
	// another kind than the algorithm.
	ErrInvalid = errors.New("invalid signature")
	// ErrNoSigner: the certificate a SignerInfo names is not among those
	// the SignedData carries or the caller gives.
	ErrNoSigner = errors.New("signer certificate not found")
	// ErrSigningCertificate: an ESS signing-certificate attribute (RFC
	// 2634, RFC 5035) is malformed or names another certificate.
	ErrSigningCertificate = errors.New("bad signing-certificate attribute")
	// ErrContentRequired: the signature covers the content itself (Ed25519
	// without signed attributes, RFC 8419 section 3), and only its digest
	// was given.
	ErrContentRequired = errors.New("the signature covers the content, not its digest")
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func errorOf(kind error, format string, args ...any) error {
	return &kindError{kind, fmt.Sprintf(format, args...)}
}

func unsupported(format string, args ...any) error { return errorOf(ErrUnsupported, format, args...) }
func invalid(format string, args ...any) error     { return errorOf(ErrInvalid, format, args...) }
func malformed(format string, args ...any) error   { return errorOf(ErrMalformed, format, args...) }

// A SignatureAlgorithm is a signatureAlgorithm verified with RSA PKCS #1
// v1.5 or ECDSA.
type SignatureAlgorithm struct {
	OID  asn1.ObjectIdentifier
	Name string
	EC   bool        // ECDSA, else RSA PKCS #1 v1.5
	Hash crypto.Hash // 0: a key algorithm OID, which takes the digestAlgorithm's
}

// signatureAlgorithms are the signatureAlgorithm values verified with RSA
// PKCS #1 v1.5 or ECDSA, and the hash each names: 0 for the key algorithm
// OIDs that some signers write.
var signatureAlgorithms = []SignatureAlgorithm{
	{OIDRSAEncryption, "RSA PKCS#1 v1.5", false, 0},
	{OIDSHA256WithRSA, "RSA PKCS#1 v1.5", false, crypto.SHA256},
	{OIDSHA384WithRSA, "RSA PKCS#1 v1.5", false, crypto.SHA384},
	{OIDSHA512WithRSA, "RSA PKCS#1 v1.5", false, crypto.SHA512},
	{OIDECPublicKey, "ECDSA", true, 0},
	{OIDECDSAWithSHA256, "ECDSA", true, crypto.SHA256},
	{OIDECDSAWithSHA384, "ECDSA", true, crypto.SHA384},
	{OIDECDSAWithSHA512, "ECDSA", true, crypto.SHA512},
}

// LookupSignatureAlgorithm finds oid among the RSA PKCS #1 v1.5 and ECDSA
// algorithms (not RSASSA-PSS, which has parameters).
func LookupSignatureAlgorithm(oid asn1.ObjectIdentifier) (SignatureAlgorithm, bool) {
	i := slices.IndexFunc(signatureAlgorithms, func(a SignatureAlgorithm) bool { return a.OID.Equal(oid) })
	if i < 0 {
		return SignatureAlgorithm{}, false
	}
	return signatureAlgorithms[i], true
}

// SignatureAlgorithmName is a readable name of a signatureAlgorithm: its
// scheme, or the OID when unknown.
func SignatureAlgorithmName(oid asn1.ObjectIdentifier) string {
	switch {
	case oid.Equal(OIDRSAPSS):
		return "RSA-PSS"
	case oid.Equal(OIDEd25519):
		return "Ed25519"
	case oid.Equal(OIDEd448):
		return "Ed448"
	}
	if a, ok := LookupSignatureAlgorithm(oid); ok {
		return a.Name
	}
	return oid.String()
}

// VerifySignature checks sig, a signatureAlgorithm oid signature with
// parameters params over message, with cert's key. h is the SignerInfo's
// digestAlgorithm, which the signature algorithm must agree with (RFC 5754
// section 3, RFC 8419 section 3). The algorithm policy, the one of every
// CMS signature we check:
//
//   - RSA PKCS #1 v1.5 (rsaEncryption or sha*WithRSAEncryption,
//     parameters NULL or absent, RFC 4055 section 5);
//   - RSASSA-PSS with the digestAlgorithm as hash and MGF1 hash (RFC 4055);
//   - ECDSA: ecdsa-with-SHA256/384/512, parameters absent (RFC 5758
//     section 3.2: they MUST be omitted), or id-ecPublicKey as some
//     signers write it;
//   - Ed25519, pure (RFC 8419): parameters absent (RFC 8410 section 3),
//     digestAlgorithm SHA-512;
//   - refused: SHA-1 and MD5 in any form, Ed448 (no implementation here),
//     anything else.
//
// The errors are ErrUnsupported or ErrInvalid.
func VerifySignature(cert *x509.Certificate, oid asn1.ObjectIdentifier, params []byte, h crypto.Hash, message, sig []byte) error {
	if oid.Equal(OIDEd25519) {
		if err := ed25519Policy(params, h); err != nil {
			return err
		}
		pub, ok := cert.PublicKey.(ed25519.PublicKey)
		if !ok {
			return wrongKey(cert, oid)
		}
		if !ed25519.Verify(pub, message, sig) {
			return invalid(notVerified)
		}
		return nil
	}
	return VerifyDigest(cert, oid, params, h, Digest(h, message), sig)
}

func ed25519Policy(params []byte, h crypto.Hash) error {
	if params != nil {
		return unsupported("Ed25519 with parameters (RFC 8410 section 3: they MUST be absent)")
	}
	if h != crypto.SHA512 {
		return unsupported("Ed25519 with digestAlgorithm %v (RFC 8419 section 3: SHA-512)", h)
	}
	return nil
}

const notVerified = "the signature value does not verify with the signer certificate's key"

func wrongKey(cert *x509.Certificate, oid asn1.ObjectIdentifier) error {
	return invalid("a %s signature, but the signer certificate has a %v key", SignatureAlgorithmName(oid), cert.PublicKeyAlgorithm)
}

// VerifyDigest is VerifySignature for a message of which only the h
// digest is known. Ed25519 signs the message itself: ErrContentRequired.
func VerifyDigest(cert *x509.Certificate, oid asn1.ObjectIdentifier, params []byte, h crypto.Hash, digest, sig []byte) error {
	if _, err := strongHash(h); err != nil {
		return err
	}
	switch {
	case oid.Equal(OIDEd25519):
		if err := ed25519Policy(params, h); err != nil {
			return err
		}
		return errorOf(ErrContentRequired, "an Ed25519 signature without signed attributes covers the content itself")
	case oid.Equal(OIDEd448):
		return unsupported("Ed448 signatures are not supported")
	case oid.Equal(OIDRSAPSS):
		opts, err := PSSOptions(params, h)
		if err != nil {
			return err
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return wrongKey(cert, oid)
		}
		if rsa.VerifyPSS(pub, h, digest, sig, opts) != nil {
			return invalid(notVerified)
		}
		return nil
	case oid.Equal(OIDSHA1WithRSA) || oid.Equal(OIDMD5WithRSA) || oid.Equal(OIDECDSAWithSHA1):
		return unsupported("signature algorithm %v is weak", oid)
	}
	alg, ok := LookupSignatureAlgorithm(oid)
	if !ok {
		return unsupported("unknown signature algorithm %v", oid)
	}
	if alg.Hash != 0 && alg.Hash != h {
		return unsupported("signature algorithm %v with digestAlgorithm %v", oid, h)
	}
	if alg.EC {
		// RFC 5758 section 3.2: ecdsa-with-SHA* has no parameters.
		// id-ecPublicKey, written by some signers in its place, may carry
		// the curve (RFC 5480 namedCurve), which the certificate names
		// anyway.
		if params != nil && (alg.Hash != 0 || !isOID(params)) {
			return unsupported("%v with parameters (RFC 5758 section 3.2: they MUST be absent)", oid)
		}
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return wrongKey(cert, oid)
		}
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			return invalid(notVerified)
		}
		return nil
	}
	if !NullOrAbsent(params) {
		return unsupported("%v with parameters", oid)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return wrongKey(cert, oid)
	}
	if rsa.VerifyPKCS1v15(pub, h, digest, sig) != nil {
		return invalid(notVerified)
	}
	return nil
}

func isOID(der []byte) bool {
	s := cryptobyte.String(der)
	var oid asn1.ObjectIdentifier
	return s.ReadASN1ObjectIdentifier(&oid) && s.Empty()
}

var (
	tagCons0 = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagCons1 = cbasn1.Tag(1).Constructed().ContextSpecific()
	tagCons2 = cbasn1.Tag(2).Constructed().ContextSpecific()
	tagCons3 = cbasn1.Tag(3).Constructed().ContextSpecific()
)

// PSSOptions reads RSASSA-PSS-params (RFC 4055 section 3.1). The hash and
// the MGF1 hash must be the digestAlgorithm h, as crypto/rsa verifies.
// The errors are ErrUnsupported.
//
//	RSASSA-PSS-params ::= SEQUENCE {
//	   hashAlgorithm      [0] HashAlgorithm    DEFAULT sha1Identifier,
//	   maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1Identifier,
//	   saltLength         [2] INTEGER          DEFAULT 20,
//	   trailerField       [3] INTEGER          DEFAULT 1  }
func PSSOptions(params []byte, h crypto.Hash) (*rsa.PSSOptions, error) {
	bad := unsupported("RSASSA-PSS parameters are malformed")
	s := cryptobyte.String(params)
	var seq, field cryptobyte.String
	var has bool
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, bad
	}
	hash, mgfHash, salt, trailer := crypto.SHA1, crypto.SHA1, int64(20), int64(1)
	if !seq.ReadOptionalASN1(&field, &has, tagCons0) {
		return nil, bad
	}
	if has {
		oid, par, err := ReadAlgorithm(&field, "RSASSA-PSS hashAlgorithm")
		if err != nil || !field.Empty() || !NullOrAbsent(par) {
			return nil, bad
		}
		hash = HashFromOID(oid)
	}
	if !seq.ReadOptionalASN1(&field, &has, tagCons1) {
		return nil, bad
	}
	if has {
		oid, par, err := ReadAlgorithm(&field, "RSASSA-PSS maskGenAlgorithm")
		if err != nil || !field.Empty() || !oid.Equal(OIDMGF1) {
			return nil, bad
		}
		inner := cryptobyte.String(par)
		hashOID, hashPar, err := ReadAlgorithm(&inner, "MGF1 hash")
		if err != nil || !inner.Empty() || !NullOrAbsent(hashPar) {
			return nil, bad
		}
		mgfHash = HashFromOID(hashOID)
	}
	if !seq.ReadOptionalASN1(&field, &has, tagCons2) || has && (!field.ReadASN1Integer(&salt) || !field.Empty()) {
		return nil, bad
	}
	if !seq.ReadOptionalASN1(&field, &has, tagCons3) || has && (!field.ReadASN1Integer(&trailer) || !field.Empty()) {
		return nil, bad
	}
	if !seq.Empty() || trailer != 1 || salt < 0 || salt > 1<<16 {
		return nil, bad
	}
	if hash != h || mgfHash != h {
		return nil, unsupported("RSASSA-PSS with %v and MGF1 %v, digestAlgorithm %v", hash, mgfHash, h)
	}
	opts := &rsa.PSSOptions{Hash: h, SaltLength: int(salt)}
	if salt == 0 {
		// rsa.PSSSaltLengthAuto is 0 too: an empty salt is accepted
		// among others.
		opts.SaltLength = rsa.PSSSaltLengthAuto
	}
	return opts, nil
}
