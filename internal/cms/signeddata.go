package cms

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SignedData is a ContentInfo holding a SignedData (RFC 5652 sections 3
// and 5), read by [ParseSignedData]. Its slices alias Raw.
type SignedData struct {
	Raw          []byte // the DER ContentInfo
	Version      int
	EContentType asn1.ObjectIdentifier
	Content      []byte // eContent; nil when absent (a detached signature)
	Attached     bool   // eContent is present

	// Certificates are those of the certificates field that parse; the
	// other CertificateChoices (attribute and other certificates) are
	// skipped. CertError says why the first one that did not parse was
	// left out, for the error of a signer not found.
	Certificates []*x509.Certificate
	CertError    error

	SignerInfos []*SignerInfo // none in a certificates-only SignedData
}

// SignerInfo is one signer (RFC 5652 section 5.3). Exactly one of Serial
// (with IssuerRaw) and SubjectKeyID identifies the signer certificate.
type SignerInfo struct {
	Version      int
	IssuerRaw    []byte   // issuerAndSerialNumber: the issuer Name, DER
	Serial       *big.Int // issuerAndSerialNumber: the serial number
	SubjectKeyID []byte   // subjectKeyIdentifier

	DigestAlgorithm asn1.ObjectIdentifier
	DigestParams    []byte // DER; nil when absent

	// RawSignedAttrs is the [0] IMPLICIT SET OF Attribute as received;
	// nil when absent.
	RawSignedAttrs []byte
	SignedAttrs    []Attribute

	SignatureAlgorithm asn1.ObjectIdentifier
	SignatureParams    []byte // DER; nil when absent
	Signature          []byte
	UnsignedAttrs      []Attribute
}

var (
	tagPrim0 = cbasn1.Tag(0).ContextSpecific()
	tagCons4 = cbasn1.Tag(4).Constructed().ContextSpecific()
)

// ParseSignedData reads der, one DER ContentInfo of type signedData and
// nothing after it, with the syntax rules of RFC 5652 section 5:
//
//   - SignedData version 1, 3, 4 or 5, and at least 3 when the
//     eContentType is not id-data or a SignerInfo is version 3 (section
//     5.1);
//   - SignerInfo version 1 with an issuerAndSerialNumber, 3 with a
//     subjectKeyIdentifier (section 5.3);
//   - signed attributes, when present, not empty, and present when the
//     eContentType is not id-data (section 5.3); every attribute has a
//     value.
//
// What the signatures are worth is not checked: see [SignerInfo.Hash],
// [SignerInfo.MessageDigest], [SignerInfo.VerifySignature] and
// [SignerInfo.CheckSigningCertificate]. The errors are ErrMalformed.
func ParseSignedData(der []byte) (*SignedData, error) {
	sd := &SignedData{Raw: der}
	s := cryptobyte.String(der)
	var seq, content, body cryptobyte.String
	var contentType asn1.ObjectIdentifier
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&contentType) {
		return nil, malformed("not a DER ContentInfo")
	}
	if !s.Empty() {
		return nil, malformed("%d bytes after the ContentInfo", len(s))
	}
	if !contentType.Equal(OIDSignedData) {
		return nil, malformed("content type %v is not signedData", contentType)
	}
	if !seq.ReadASN1(&content, tagCons0) || !seq.Empty() || !content.ReadASN1(&body, cbasn1.SEQUENCE) || !content.Empty() {
		return nil, malformed("ContentInfo content is not a SignedData")
	}
	var version int64
	if !body.ReadASN1Integer(&version) || (version != 1 && (version < 3 || version > 5)) {
		return nil, malformed("SignedData version is not 1, 3, 4 or 5")
	}
	sd.Version = int(version)
	var digestAlgs cryptobyte.String
	if !body.ReadASN1(&digestAlgs, cbasn1.SET) {
		return nil, malformed("SignedData digestAlgorithms is not a SET")
	}
	for !digestAlgs.Empty() {
		if _, _, err := ReadAlgorithm(&digestAlgs, "SignedData digestAlgorithms"); err != nil {
			return nil, malformed("%v", err)
		}
	}
	var encap cryptobyte.String
	if !body.ReadASN1(&encap, cbasn1.SEQUENCE) || !encap.ReadASN1ObjectIdentifier(&sd.EContentType) {
		return nil, malformed("no EncapsulatedContentInfo")
	}
	if encap.PeekASN1Tag(tagCons0) {
		var explicit, eContent cryptobyte.String
		if !encap.ReadASN1(&explicit, tagCons0) || !explicit.ReadASN1(&eContent, cbasn1.OCTET_STRING) || !explicit.Empty() {
			return nil, malformed("eContent is not a primitive OCTET STRING")
		}
		sd.Content, sd.Attached = eContent, true
	}
	if !encap.Empty() {
		return nil, malformed("unexpected field in the EncapsulatedContentInfo")
	}
	var certs cryptobyte.String
	var hasCerts bool
	if !body.ReadOptionalASN1(&certs, &hasCerts, tagCons0) {
		return nil, malformed("SignedData certificates")
	}
	for i := 0; !certs.Empty(); i++ {
		var c cryptobyte.String
		var tag cbasn1.Tag
		if !certs.ReadAnyASN1Element(&c, &tag) {
			return nil, malformed("SignedData certificates")
		}
		if tag != cbasn1.SEQUENCE {
			continue // an attribute or other certificate: never a signer's
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			// Not fatal: another certificate may be the signer's.
			if sd.CertError == nil {
				sd.CertError = fmt.Errorf("certificate %d of the SignedData: %w", i, err)
			}
			continue
		}
		sd.Certificates = append(sd.Certificates, cert)
	}
	if !body.SkipOptionalASN1(tagCons1) {
		return nil, malformed("SignedData crls")
	}
	var infos cryptobyte.String
	if !body.ReadASN1(&infos, cbasn1.SET) || !body.Empty() {
		return nil, malformed("SignedData signerInfos is not a SET at its end")
	}
	for !infos.Empty() {
		var info cryptobyte.String
		if !infos.ReadASN1(&info, cbasn1.SEQUENCE) {
			return nil, malformed("a SignerInfo is not a SEQUENCE")
		}
		si, err := parseSignerInfo(info)
		if err != nil {
			return nil, err
		}
		if si.RawSignedAttrs == nil && !sd.EContentType.Equal(OIDData) {
			return nil, malformed("a SignerInfo without signed attributes over a content that is not id-data (RFC 5652 section 5.3)")
		}
		if si.Version == 3 && sd.Version < 3 {
			return nil, malformed("SignedData version %d with a version 3 SignerInfo (RFC 5652 section 5.1)", sd.Version)
		}
		sd.SignerInfos = append(sd.SignerInfos, si)
	}
	if sd.Version < 3 && !sd.EContentType.Equal(OIDData) {
		return nil, malformed("SignedData version %d with eContentType %v, want 3 (RFC 5652 section 5.1)", sd.Version, sd.EContentType)
	}
	return sd, nil
}

// ParseSignedDataBER is ParseSignedData for DER or BER input: BER, as
// streaming signers write it (`openssl cms -sign -stream`), is converted
// with [BERToDER] first, and Raw is then the DER.
func ParseSignedDataBER(in []byte) (*SignedData, error) {
	sd, err := ParseSignedData(in)
	if err == nil {
		return sd, nil
	}
	der, berErr := BERToDER(in)
	if berErr != nil {
		return nil, err
	}
	return ParseSignedData(der)
}

func parseSignerInfo(in cryptobyte.String) (*SignerInfo, error) {
	si := &SignerInfo{}
	var version int64
	if !in.ReadASN1Integer(&version) {
		return nil, malformed("SignerInfo version is not a small INTEGER")
	}
	switch {
	case in.PeekASN1Tag(cbasn1.SEQUENCE):
		var ias, issuer cryptobyte.String
		si.Serial = new(big.Int)
		if !in.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(si.Serial) || !ias.Empty() {
			return nil, malformed("SignerInfo sid is not an IssuerAndSerialNumber")
		}
		si.IssuerRaw = issuer
		if version != 1 {
			return nil, malformed("SignerInfo version %d with an issuerAndSerialNumber, want 1 (RFC 5652 section 5.3)", version)
		}
	case in.PeekASN1Tag(tagPrim0):
		var keyID cryptobyte.String
		in.ReadASN1(&keyID, tagPrim0)
		if len(keyID) == 0 {
			return nil, malformed("SignerInfo sid is an empty subjectKeyIdentifier")
		}
		si.SubjectKeyID = keyID
		if version != 3 {
			return nil, malformed("SignerInfo version %d with a subjectKeyIdentifier, want 3 (RFC 5652 section 5.3)", version)
		}
	default:
		return nil, malformed("SignerInfo sid is neither issuerAndSerialNumber nor subjectKeyIdentifier")
	}
	si.Version = int(version)
	var err error
	if si.DigestAlgorithm, si.DigestParams, err = ReadAlgorithm(&in, "SignerInfo digestAlgorithm"); err != nil {
		return nil, malformed("%v", err)
	}
	if in.PeekASN1Tag(tagCons0) {
		var element, set cryptobyte.String
		in.ReadASN1Element(&element, tagCons0)
		si.RawSignedAttrs = element
		element.ReadASN1(&set, tagCons0)
		if set.Empty() {
			return nil, malformed("SignerInfo signedAttrs is empty (RFC 5652 section 5.3: SIZE (1..MAX))")
		}
		if si.SignedAttrs, err = ParseAttributes(set); err != nil {
			return nil, malformed("signed attributes: %v", err)
		}
	}
	if si.SignatureAlgorithm, si.SignatureParams, err = ReadAlgorithm(&in, "SignerInfo signatureAlgorithm"); err != nil {
		return nil, malformed("%v", err)
	}
	var sig cryptobyte.String
	if !in.ReadASN1(&sig, cbasn1.OCTET_STRING) {
		return nil, malformed("SignerInfo signature is not an OCTET STRING")
	}
	si.Signature = sig
	if in.PeekASN1Tag(tagCons1) {
		var set cryptobyte.String
		in.ReadASN1(&set, tagCons1)
		if si.UnsignedAttrs, err = ParseAttributes(set); err != nil {
			return nil, malformed("unsigned attributes: %v", err)
		}
	}
	if !in.Empty() {
		return nil, malformed("unexpected field at the end of a SignerInfo")
	}
	return si, nil
}

// Attr returns the single value of the signed attribute oid. The
// attributes of RFC 5652 section 11 and RFC 5035 are allowed once, with
// one value: a second one is ErrMalformed.
func (si *SignerInfo) Attr(oid asn1.ObjectIdentifier) (v cryptobyte.String, ok bool, err error) {
	for _, a := range si.SignedAttrs {
		if !a.OID.Equal(oid) {
			continue
		}
		if ok || len(a.Values) != 1 {
			return nil, false, malformed("signed attribute %v present twice or with several values", oid)
		}
		v, ok = a.Values[0], true
	}
	return v, ok, nil
}

// Names tells whether the SignerInfo's sid designates c.
func (si *SignerInfo) Names(c *x509.Certificate) bool {
	if si.SubjectKeyID != nil {
		return bytes.Equal(c.SubjectKeyId, si.SubjectKeyID)
	}
	return bytes.Equal(c.RawIssuer, si.IssuerRaw) && c.SerialNumber.Cmp(si.Serial) == 0
}

// SID is the sid as text, for errors: "serial 1f" or "key identifier 0a1b".
func (si *SignerInfo) SID() string {
	if si.SubjectKeyID != nil {
		return fmt.Sprintf("key identifier %x", si.SubjectKeyID)
	}
	return fmt.Sprintf("serial %x", si.Serial)
}

// Hash is the digestAlgorithm under the one policy of [DigestHash].
func (si *SignerInfo) Hash() (crypto.Hash, error) {
	return DigestHash(si.DigestAlgorithm, si.DigestParams)
}

// Signer finds the certificate that si's sid names, among sd's
// certificates then extra. When several do (the same key certified twice,
// named by its key identifier; an impostor with the issuer and serial of
// the signer), the one that the ESS signing-certificate attribute names
// wins; without a match, the first, which CheckSigningCertificate then
// refuses. None is ErrNoSigner.
func (sd *SignedData) Signer(si *SignerInfo, extra []*x509.Certificate) (*x509.Certificate, error) {
	var found []*x509.Certificate
	for _, c := range slices.Concat(sd.Certificates, extra) {
		if c != nil && si.Names(c) {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		err := errorOf(ErrNoSigner, "the certificate the signature names (%s) is neither among its %d certificates nor among the %d given",
			si.SID(), len(sd.Certificates), len(extra))
		if sd.CertError != nil {
			err = &kindError{ErrNoSigner, err.Error() + "; " + sd.CertError.Error()}
		}
		return nil, err
	}
	for _, c := range found {
		if _, err := si.CheckSigningCertificate(c); err == nil {
			return c, nil
		}
	}
	return found[0], nil
}

// MessageDigest checks the two signed attributes that RFC 5652 section
// 5.3 requires when there are any — content-type, equal to eContentType,
// and message-digest — and returns the digest that the latter claims for
// the content. Without signed attributes it returns nil and no error. The
// errors are ErrMalformed.
func (si *SignerInfo) MessageDigest(eContentType asn1.ObjectIdentifier) ([]byte, error) {
	if si.RawSignedAttrs == nil {
		return nil, nil
	}
	v, ok, err := si.Attr(OIDAttrContentType)
	if err != nil {
		return nil, err
	}
	var contentType asn1.ObjectIdentifier
	if !ok {
		return nil, malformed("no content-type attribute")
	}
	if !v.ReadASN1ObjectIdentifier(&contentType) || !v.Empty() {
		return nil, malformed("the content-type attribute is not an OID")
	}
	if !contentType.Equal(eContentType) {
		return nil, malformed("the content-type attribute %v is not the eContentType %v", contentType, eContentType)
	}
	if v, ok, err = si.Attr(OIDAttrMessageDigest); err != nil {
		return nil, err
	}
	var md cryptobyte.String
	if !ok {
		return nil, malformed("no message-digest attribute")
	}
	if !v.ReadASN1(&md, cbasn1.OCTET_STRING) || !v.Empty() {
		return nil, malformed("the message-digest attribute is not an OCTET STRING")
	}
	return md, nil
}

// SignedAttrsDER is what a signature over signed attributes covers: their
// DER SET OF, not the [0] IMPLICIT tag they travel with (RFC 5652 section
// 5.4). nil without signed attributes.
func (si *SignerInfo) SignedAttrsDER() []byte {
	if si.RawSignedAttrs == nil {
		return nil
	}
	attrs := bytes.Clone(si.RawSignedAttrs)
	attrs[0] = 0x31 // SET
	return attrs
}

// VerifySignature checks si's signature value with cert's key (RFC 5652
// section 5.6), under the policy of [VerifySignature]: over the signed
// attributes when there are any, over content otherwise. h is si's
// [SignerInfo.Hash]. The message-digest attribute is the caller's to
// compare with the content (see [SignerInfo.MessageDigest]).
func (si *SignerInfo) VerifySignature(cert *x509.Certificate, h crypto.Hash, content []byte) error {
	msg := content
	if si.RawSignedAttrs != nil {
		msg = si.SignedAttrsDER()
	}
	return VerifySignature(cert, si.SignatureAlgorithm, si.SignatureParams, h, msg, si.Signature)
}

// VerifySignatureDigest is VerifySignature when only the h digest of the
// content is known. It fails with ErrContentRequired where the signature
// covers the content itself (Ed25519 without signed attributes).
func (si *SignerInfo) VerifySignatureDigest(cert *x509.Certificate, h crypto.Hash, contentDigest []byte) error {
	if si.RawSignedAttrs != nil {
		return si.VerifySignature(cert, h, nil)
	}
	return VerifyDigest(cert, si.SignatureAlgorithm, si.SignatureParams, h, contentDigest, si.Signature)
}

// SigningTime reads the signing-time attribute (RFC 5652 section 11.3):
// false when absent. A malformed one is ErrMalformed.
func (si *SignerInfo) SigningTime() (time.Time, bool, error) {
	v, ok, err := si.Attr(OIDAttrSigningTime)
	if err != nil || !ok {
		return time.Time{}, false, err
	}
	var t time.Time
	switch {
	case v.PeekASN1Tag(cbasn1.UTCTime):
		ok = v.ReadASN1UTCTime(&t)
	case v.PeekASN1Tag(cbasn1.GeneralizedTime):
		ok = v.ReadASN1GeneralizedTime(&t)
	default:
		ok = false
	}
	if !ok || !v.Empty() {
		return time.Time{}, false, malformed("the signing-time attribute is not a Time")
	}
	return t.UTC(), true, nil
}

// CheckSigningCertificate checks that the ESS signing-certificate
// attributes name cert: signingCertificateV2 (RFC 5035, RFC 5816) or
// signingCertificate (RFC 2634); each one present must match. Only the
// first ESSCertID concerns the signer; the others name its chain. present
// tells whether there is any. The errors are ErrSigningCertificate, or
// ErrUnsupported for an ESSCertIDv2 hashed with MD5 or an unknown hash.
func (si *SignerInfo) CheckSigningCertificate(cert *x509.Certificate) (present bool, err error) {
	v2, has2, err := si.Attr(OIDAttrSigningCertV2)
	if err != nil {
		return false, errorOf(ErrSigningCertificate, "%v", err)
	}
	v1, has1, err := si.Attr(OIDAttrSigningCertV1)
	if err != nil {
		return false, errorOf(ErrSigningCertificate, "%v", err)
	}
	if has2 {
		if err := checkESSCertID(v2, true, cert); err != nil {
			return true, err
		}
	}
	if has1 {
		if err := checkESSCertID(v1, false, cert); err != nil {
			return true, err
		}
	}
	return has1 || has2, nil
}

// checkESSCertID checks the first ESSCertIDv2 (v2) or ESSCertID of a
// SigningCertificate[V2] against cert.
//
//	SigningCertificateV2 ::= SEQUENCE {
//	   certs        SEQUENCE OF ESSCertIDv2,
//	   policies     SEQUENCE OF PolicyInformation OPTIONAL }
//	ESSCertIDv2 ::= SEQUENCE {
//	   hashAlgorithm  AlgorithmIdentifier DEFAULT {algorithm id-sha256},
//	   certHash       OCTET STRING,
//	   issuerSerial   IssuerSerial OPTIONAL }
//	ESSCertID ::= SEQUENCE { certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }
//	IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }
func checkESSCertID(v cryptobyte.String, v2 bool, cert *x509.Certificate) error {
	name := "signing-certificate"
	if v2 {
		name = "signing-certificate-v2"
	}
	bad := errorOf(ErrSigningCertificate, "the %s attribute is malformed", name)
	var sc, ids, id, certHash cryptobyte.String
	if !v.ReadASN1(&sc, cbasn1.SEQUENCE) || !v.Empty() || !sc.ReadASN1(&ids, cbasn1.SEQUENCE) ||
		!sc.SkipOptionalASN1(cbasn1.SEQUENCE) || !sc.Empty() || !ids.ReadASN1(&id, cbasn1.SEQUENCE) {
		return bad
	}
	h := crypto.SHA1
	if v2 {
		h = crypto.SHA256
		if id.PeekASN1Tag(cbasn1.SEQUENCE) {
			oid, params, err := ReadAlgorithm(&id, name+" hashAlgorithm")
			if err != nil || !NullOrAbsent(params) {
				return bad
			}
			// SHA-1 stays: ESSCertID hashes identify, they do not sign,
			// and RFC 5035 tokens with a SHA-1 ESSCertIDv2 are common.
			if h = HashFromOID(oid); h == 0 || h == crypto.MD5 {
				return unsupported("the %s attribute hashes with %v", name, oid)
			}
		}
	}
	if !id.ReadASN1(&certHash, cbasn1.OCTET_STRING) {
		return bad
	}
	if !bytes.Equal(certHash, Digest(h, cert.Raw)) {
		return errorOf(ErrSigningCertificate, "the %s attribute's %v certHash is not that of the signer certificate %q", name, h, cert.Subject)
	}
	if id.PeekASN1Tag(cbasn1.SEQUENCE) {
		var is, names cryptobyte.String
		serial := new(big.Int)
		if !id.ReadASN1(&is, cbasn1.SEQUENCE) || !is.ReadASN1(&names, cbasn1.SEQUENCE) ||
			!is.ReadASN1Integer(serial) || !is.Empty() {
			return bad
		}
		if serial.Cmp(cert.SerialNumber) != 0 {
			return errorOf(ErrSigningCertificate, "the %s attribute's issuerSerial names serial %x, the signer certificate has %x", name, serial, cert.SerialNumber)
		}
		issuerFound := false
		for !names.Empty() {
			var gn, dn cryptobyte.String
			var tag cbasn1.Tag
			if !names.ReadAnyASN1(&gn, &tag) {
				return bad
			}
			if tag == tagCons4 && gn.ReadASN1Element(&dn, cbasn1.SEQUENCE) && gn.Empty() && bytes.Equal(dn, cert.RawIssuer) {
				issuerFound = true
			}
		}
		if !issuerFound {
			return errorOf(ErrSigningCertificate, "the %s attribute's issuerSerial names another issuer than %q", name, cert.Issuer)
		}
	}
	if !id.Empty() {
		return bad
	}
	return nil
}
