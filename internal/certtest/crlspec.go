package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// CRLSpec is a CRL that may break any rule of RFC 5280 section 5: what
// CRLOf writes, field by field, for the tables of tests that each break
// one rule of a CRL verifier. Unlike CRLTemplate it carries entry
// extensions, any CRL extension, and its issuer name and signer apart
// from the CA's.
type CRLSpec struct {
	ThisUpdate time.Time // zero: an hour ago
	NextUpdate time.Time // zero: in a day, unless NoNextUpdate
	// NoNextUpdate leaves nextUpdate out (it is optional in the syntax;
	// RFC 5280 section 5.1.2.5 requires it of conforming CAs).
	NoNextUpdate bool
	Entries      []CRLEntry
	// Number is the CRL number (section 5.2.3); nil: none.
	Number         *big.Int
	NumberCritical bool
	// DeltaOf makes it a delta CRL on that base CRL number (section
	// 5.2.4): a critical DeltaCRLIndicator.
	DeltaOf *big.Int
	// DeltaRaw, when set, is the DeltaCRLIndicator's value instead.
	DeltaRaw []byte
	// Extensions come after the authority key identifier, the CRL number
	// and the delta CRL indicator.
	Extensions []pkix.Extension
	// Issuer is the issuer Name (DER); nil: the CA's subject.
	Issuer []byte
	// Signer signs instead of the CA's key (an ECDSA key): a CRL under
	// the CA's name that the CA did not sign.
	Signer crypto.Signer
	// SignatureHash is the digest of the ECDSA signature; zero: SHA-256.
	SignatureHash crypto.Hash
}

// CRLEntry is one revoked certificate.
type CRLEntry struct {
	Serial     *big.Int
	At         time.Time // zero: the CRL's thisUpdate
	Extensions []pkix.Extension
}

// OIDs of CRL and CRL entry extensions (RFC 5280 sections 5.2, 5.3).
var (
	OIDIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	OIDReasonCode               = asn1.ObjectIdentifier{2, 5, 29, 21}
	OIDCertificateIssuer        = asn1.ObjectIdentifier{2, 5, 29, 29}
)

// CRL reason codes (RFC 5280 section 5.3.1) and ReasonFlags bits
// (section 4.2.1.13).
const (
	ReasonKeyCompromise = 1
	ReasonRemoveFromCRL = 8
)

// ReasonCode is a reasonCode entry extension.
func ReasonCode(t testing.TB, code int) pkix.Extension {
	t.Helper()
	return pkix.Extension{Id: OIDReasonCode, Value: mustMarshal(t, asn1.Enumerated(code))}
}

// CertificateIssuer is the certificateIssuer entry extension (section
// 5.3.3) naming issuer (a DER Name): the entry and those after it are
// about certificates of that issuer.
func CertificateIssuer(issuer []byte) pkix.Extension {
	dn := append(appendLen([]byte{0xa4}, len(issuer)), issuer...)
	return pkix.Extension{Id: OIDCertificateIssuer, Critical: true, Value: append(appendLen([]byte{0x30}, len(dn)), dn...)}
}

// CRLIssuerDistributionPoint is a CRL distribution points extension
// (section 4.2.1.13) whose last distribution point names only its
// cRLIssuer (a DER Name): the CRLs of the certificate are that issuer's
// indirect CRLs. Each of uris is a distribution point before it, with
// that fullName and no cRLIssuer (the certificate issuer's CRLs).
func CRLIssuerDistributionPoint(crlIssuer []byte, uris ...string) pkix.Extension {
	var dps []byte
	for _, u := range uris {
		gn := append(appendLen([]byte{0x86}, len(u)), u...)
		full := append(appendLen([]byte{0xa0}, len(gn)), gn...)
		name := append(appendLen([]byte{0xa0}, len(full)), full...)
		dps = append(append(dps, appendLen([]byte{0x30}, len(name))...), name...)
	}
	dn := append(appendLen([]byte{0xa4}, len(crlIssuer)), crlIssuer...)
	names := append(appendLen([]byte{0xa2}, len(dn)), dn...)
	dps = append(append(dps, appendLen([]byte{0x30}, len(names))...), names...)
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 31}, Value: append(appendLen([]byte{0x30}, len(dps)), dps...)}
}

// IDP is an issuing distribution point (RFC 5280 section 5.2.5).
type IDP struct {
	FullNameURIs []string // distributionPoint fullName, as URIs; none: absent
	OnlyUser     bool
	OnlyCA       bool
	// OnlySomeReasons, when not nil, is the ReasonFlags BIT STRING's
	// content (unused-bits octet first).
	OnlySomeReasons []byte
	Indirect        bool
	OnlyAttr        bool
}

// Extension is the critical CRL extension of the issuing distribution
// point.
func (idp IDP) Extension() pkix.Extension {
	tlv := func(tag byte, content ...[]byte) []byte {
		var c []byte
		for _, x := range content {
			c = append(c, x...)
		}
		return append(appendLen([]byte{tag}, len(c)), c...)
	}
	var seq [][]byte
	if len(idp.FullNameURIs) > 0 {
		var names [][]byte
		for _, u := range idp.FullNameURIs {
			names = append(names, tlv(0x86, []byte(u)))
		}
		seq = append(seq, tlv(0xa0, tlv(0xa0, names...)))
	}
	boolean := func(tag byte, v bool) {
		if v {
			seq = append(seq, tlv(tag, []byte{0xff}))
		}
	}
	boolean(0x81, idp.OnlyUser)
	boolean(0x82, idp.OnlyCA)
	if idp.OnlySomeReasons != nil {
		seq = append(seq, tlv(0x83, idp.OnlySomeReasons))
	}
	boolean(0x84, idp.Indirect)
	boolean(0x85, idp.OnlyAttr)
	return pkix.Extension{Id: OIDIssuingDistributionPoint, Critical: true, Value: tlv(0x30, seq...)}
}

func appendLen(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	}
	return append(b, 0x82, byte(n>>8), byte(n))
}

// CRLOf returns the DER CRL that spec describes, issued by ca (whose key,
// or spec.Signer, must be ECDSA).
func (ca *Issued) CRLOf(t testing.TB, spec CRLSpec) []byte {
	t.Helper()
	signer := spec.Signer
	if signer == nil {
		signer = ca.Key
	}
	if _, ok := signer.Public().(*ecdsa.PublicKey); !ok {
		t.Fatal("certtest: CRLOf needs an ECDSA signer")
	}
	now := time.Now()
	if spec.ThisUpdate.IsZero() {
		spec.ThisUpdate = now.Add(-time.Hour)
	}
	if spec.NextUpdate.IsZero() && !spec.NoNextUpdate {
		spec.NextUpdate = now.Add(24 * time.Hour)
	}
	if spec.NoNextUpdate {
		spec.NextUpdate = time.Time{}
	}
	issuer := spec.Issuer
	if issuer == nil {
		issuer = ca.Cert.RawSubject
	}
	type revoked struct {
		Serial     *big.Int
		At         time.Time
		Extensions []pkix.Extension `asn1:"optional"`
	}
	type tbsCertList struct {
		Version    int
		Signature  pkix.AlgorithmIdentifier
		Issuer     asn1.RawValue
		ThisUpdate time.Time
		NextUpdate time.Time        `asn1:"optional"`
		Revoked    []revoked        `asn1:"optional"`
		Extensions []pkix.Extension `asn1:"tag:0,explicit"`
	}
	sigHash := spec.SignatureHash
	if sigHash == 0 {
		sigHash = crypto.SHA256
	}
	alg := pkix.AlgorithmIdentifier{Algorithm: map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA1: oidECDSAWithSHA1, crypto.SHA256: oidECDSAWithSHA256, crypto.SHA384: oidECDSAWithSHA384}[sigHash]}
	tbs := tbsCertList{Version: 1, Signature: alg, Issuer: asn1.RawValue{FullBytes: issuer},
		ThisUpdate: spec.ThisUpdate.UTC(), NextUpdate: spec.NextUpdate.UTC()}
	if spec.NoNextUpdate {
		tbs.NextUpdate = time.Time{}
	}
	for _, e := range spec.Entries {
		at := e.At
		if at.IsZero() {
			at = spec.ThisUpdate
		}
		tbs.Revoked = append(tbs.Revoked, revoked{e.Serial, at.UTC(), e.Extensions})
	}
	aki := mustMarshal(t, struct {
		ID []byte `asn1:"optional,tag:0"`
	}{ca.Cert.SubjectKeyId})
	tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidAuthorityKeyID, Value: aki})
	if spec.Number != nil {
		tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidCRLNumber, Critical: spec.NumberCritical, Value: mustMarshal(t, spec.Number)})
	}
	switch {
	case spec.DeltaRaw != nil:
		tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: spec.DeltaRaw})
	case spec.DeltaOf != nil:
		tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: mustMarshal(t, spec.DeltaOf)})
	}
	tbs.Extensions = append(tbs.Extensions, spec.Extensions...)
	tbsDER := mustMarshal(t, tbs)
	sig, err := signer.Sign(rand.Reader, hashOf(sigHash, tbsDER), sigHash)
	if err != nil {
		t.Fatal(err)
	}
	return mustMarshal(t, struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, alg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}
