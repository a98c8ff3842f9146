package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// OCSPSpec is an OCSP response (RFC 6960 section 4.2) that may break any
// rule a verifier enforces: what OCSP writes, field by field. Unlike
// golang.org/x/crypto/ocsp's CreateResponse, it sets the response
// extensions (the nonce), the producedAt time, the CertID's hashes, the
// ResponderID and the signer apart from one another.
type OCSPSpec struct {
	// ResponseStatus other than 0 (successful) writes a response with no
	// responseBytes (RFC 6960 section 4.2.1).
	ResponseStatus int
	Serial         *big.Int
	Status         int       // 0 good, 1 revoked, 2 unknown
	RevokedAt      time.Time // with Status 1; zero: an hour ago
	Reason         int       // with Status 1: the CRLReason; -1 or 0 with NoReason: none
	NoReason       bool

	ThisUpdate   time.Time // zero: an hour ago
	NextUpdate   time.Time // zero: in a day, unless NoNextUpdate
	NoNextUpdate bool
	ProducedAt   time.Time // zero: now

	// The CertID: hashed with CertIDHash (zero: SHA-1) of Issuer's name
	// and key (nil: the CA's), unless the OID or the hashes are given.
	CertIDHash    crypto.Hash
	CertIDHashOID asn1.ObjectIdentifier
	Issuer        *x509.Certificate
	NameHash      []byte
	KeyHash       []byte

	// Responder, when set, is a delegated responder: it signs, its
	// certificate is in the response and the ResponderID names it.
	// Otherwise the CA signs and is named.
	Responder *Issued
	// Signer, when set, signs instead (an ECDSA key), names unchanged.
	Signer crypto.Signer
	// SignatureHash is the digest of the ECDSA signature; zero: SHA-256.
	SignatureHash crypto.Hash
	// ResponderName (a DER Name) or ResponderKeyHash, when set, is the
	// ResponderID instead.
	ResponderName    []byte
	ResponderKeyHash []byte
	// Extensions are the responseExtensions (the nonce of RFC 8954).
	Extensions []pkix.Extension
}

var (
	oidOCSPBasic       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	hashOIDs           = map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA1:   {1, 3, 14, 3, 2, 26},
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	}
)

// OIDOCSPNonce is the OCSP nonce extension (RFC 8954).
var OIDOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}

// SubjectPublicKeyBits is the subjectPublicKey BIT STRING of c: what a
// CertID's issuerKeyHash and a ResponderID byKey hash.
func SubjectPublicKeyBits(t testing.TB, c *x509.Certificate) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	return spki.PublicKey.RightAlign()
}

func hashOf(h crypto.Hash, b []byte) []byte {
	d := h.New()
	d.Write(b)
	return d.Sum(nil)
}

// OCSP returns the DER OCSPResponse that spec describes, from ca (the
// issuer of the certificate it is about).
func (ca *Issued) OCSP(t testing.TB, spec OCSPSpec) []byte {
	t.Helper()
	type algID struct {
		Algorithm asn1.ObjectIdentifier
		Params    asn1.RawValue `asn1:"optional"`
	}
	if spec.ResponseStatus != 0 {
		return mustMarshal(t, struct {
			Status asn1.Enumerated
		}{asn1.Enumerated(spec.ResponseStatus)})
	}
	now := time.Now()
	if spec.ThisUpdate.IsZero() {
		spec.ThisUpdate = now.Add(-time.Hour)
	}
	if spec.NextUpdate.IsZero() {
		spec.NextUpdate = now.Add(24 * time.Hour)
	}
	if spec.ProducedAt.IsZero() {
		spec.ProducedAt = now
	}
	if spec.RevokedAt.IsZero() {
		spec.RevokedAt = now.Add(-time.Hour)
	}
	h := spec.CertIDHash
	if h == 0 {
		h = crypto.SHA1
	}
	oid := spec.CertIDHashOID
	if oid == nil {
		oid = hashOIDs[h]
	}
	issuer := spec.Issuer
	if issuer == nil {
		issuer = ca.Cert
	}
	nameHash, keyHash := spec.NameHash, spec.KeyHash
	if nameHash == nil {
		nameHash = hashOf(h, issuer.RawSubject)
	}
	if keyHash == nil {
		keyHash = hashOf(h, SubjectPublicKeyBits(t, issuer))
	}
	certID := mustMarshal(t, struct {
		Alg      algID
		NameHash []byte
		KeyHash  []byte
		Serial   *big.Int
	}{algID{Algorithm: oid, Params: asn1.NullRawValue}, nameHash, keyHash, spec.Serial})

	gt := func(tm time.Time) []byte {
		return mustMarshal(t, asn1.RawValue{Tag: asn1.TagGeneralizedTime, Bytes: []byte(tm.UTC().Format("20060102150405Z"))})
	}
	explicit := func(tag int, content ...[]byte) []byte {
		var c []byte
		for _, x := range content {
			c = append(c, x...)
		}
		return mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: c})
	}
	var status []byte
	switch spec.Status {
	case 0:
		status = []byte{0x80, 0}
	case 1:
		info := gt(spec.RevokedAt)
		if !spec.NoReason {
			info = append(info, explicit(0, mustMarshal(t, asn1.Enumerated(spec.Reason)))...)
		}
		status = explicit(1, info)
	default:
		status = []byte{0x82, 0}
	}
	single := append(append(append([]byte{}, certID...), status...), gt(spec.ThisUpdate)...)
	if !spec.NoNextUpdate {
		single = append(single, explicit(0, gt(spec.NextUpdate))...)
	}
	single = mustMarshal(t, asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: single})

	signer, named := ca.Key, ca.Cert
	var certs []*x509.Certificate
	if spec.Responder != nil {
		signer, named = spec.Responder.Key, spec.Responder.Cert
		certs = []*x509.Certificate{spec.Responder.Cert}
	}
	responderID := explicit(1, named.RawSubject)
	switch {
	case spec.ResponderName != nil:
		responderID = explicit(1, spec.ResponderName)
	case spec.ResponderKeyHash != nil:
		responderID = explicit(2, mustMarshal(t, spec.ResponderKeyHash))
	}
	if spec.Signer != nil {
		signer = spec.Signer
	}
	if _, ok := signer.Public().(*ecdsa.PublicKey); !ok {
		t.Fatal("certtest: OCSP needs an ECDSA signer")
	}
	tbs := append(append(append([]byte{}, responderID...), gt(spec.ProducedAt)...),
		mustMarshal(t, asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: single})...)
	if len(spec.Extensions) > 0 {
		tbs = append(tbs, explicit(1, mustMarshal(t, spec.Extensions))...)
	}
	tbs = mustMarshal(t, asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: tbs})

	sigHash := spec.SignatureHash
	if sigHash == 0 {
		sigHash = crypto.SHA256
	}
	sigOID := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA1: oidECDSAWithSHA1, crypto.SHA256: oidECDSAWithSHA256, crypto.SHA384: oidECDSAWithSHA384}[sigHash]
	sig, err := signer.Sign(rand.Reader, hashOf(sigHash, tbs), sigHash)
	if err != nil {
		t.Fatal(err)
	}
	basic := append(append([]byte{}, tbs...), mustMarshal(t, algID{Algorithm: sigOID})...)
	basic = append(basic, mustMarshal(t, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)})...)
	if len(certs) > 0 {
		var raw []byte
		for _, c := range certs {
			raw = append(raw, c.Raw...)
		}
		basic = append(basic, explicit(0, mustMarshal(t, asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: raw}))...)
	}
	basic = mustMarshal(t, asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: basic})
	return mustMarshal(t, struct {
		Status asn1.Enumerated
		Bytes  asn1.RawValue
	}{0, asn1.RawValue{FullBytes: explicit(0, mustMarshal(t, struct {
		Type     asn1.ObjectIdentifier
		Response []byte
	}{oidOCSPBasic, basic}))}})
}

// OCSPResponderTemplate is a delegated OCSP responder's certificate
// (RFC 6960 section 4.2.2.2): digitalSignature, id-kp-OCSPSigning.
func OCSPResponderTemplate(name string) *x509.Certificate {
	tmpl := LeafTemplate(name)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	return tmpl
}
