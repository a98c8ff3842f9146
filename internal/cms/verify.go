package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The kinds of VerifySignature's and PSSOptions' errors, for errors.Is.
// The errors' own text does not include them: callers wrap with theirs.
var (
	// ErrUnsupported: an algorithm unknown, weak, with unexpected
	// parameters, or naming another hash than the digestAlgorithm.
	ErrUnsupported = errors.New("unsupported algorithm")
	// ErrInvalid: the signature does not verify, or the key is of
	// another kind than the algorithm.
	ErrInvalid = errors.New("invalid signature")
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func unsupported(format string, args ...any) error {
	return &kindError{ErrUnsupported, fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &kindError{ErrInvalid, fmt.Sprintf(format, args...)}
}

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
	if oid.Equal(OIDRSAPSS) {
		return "RSA-PSS"
	}
	if a, ok := LookupSignatureAlgorithm(oid); ok {
		return a.Name
	}
	return oid.String()
}

// VerifySignature checks sig, a signatureAlgorithm oid signature with
// parameters params over a message whose h digest is digest, with cert's
// key. h is the SignerInfo's digestAlgorithm, which the signature
// algorithm must agree with (RFC 5754 section 3). The errors are
// ErrUnsupported or ErrInvalid.
func VerifySignature(cert *x509.Certificate, oid asn1.ObjectIdentifier, params []byte, h crypto.Hash, digest, sig []byte) error {
	wrongKey := func() error {
		return invalid("a %s signature, but the signer certificate has a %v key", SignatureAlgorithmName(oid), cert.PublicKeyAlgorithm)
	}
	const notVerified = "the signature value does not verify with the signer certificate's key"
	if oid.Equal(OIDRSAPSS) {
		opts, err := PSSOptions(params, h)
		if err != nil {
			return err
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return wrongKey()
		}
		if rsa.VerifyPSS(pub, h, digest, sig, opts) != nil {
			return invalid(notVerified)
		}
		return nil
	}
	if oid.Equal(OIDSHA1WithRSA) || oid.Equal(OIDMD5WithRSA) || oid.Equal(OIDECDSAWithSHA1) {
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
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return wrongKey()
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
		return wrongKey()
	}
	if rsa.VerifyPKCS1v15(pub, h, digest, sig) != nil {
		return invalid(notVerified)
	}
	return nil
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
