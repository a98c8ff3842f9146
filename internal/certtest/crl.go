package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// CRLTemplate is what CRL puts in a CRL. Unlike crypto/x509's
// CreateRevocationList, it writes CRLs that break the CRL profile of RFC
// 5280 (no CRL number, a critical one, one out of range), for tests of
// the verifiers that must refuse them.
type CRLTemplate struct {
	ThisUpdate, NextUpdate time.Time // zero: an hour ago, in a day
	Revoked                []*big.Int
	Number                 *big.Int // nil: no CRL number extension
	NumberCritical         bool
	// DeltaOf, when set, makes the CRL a delta CRL on that base CRL number
	// (RFC 5280 section 5.2.4).
	DeltaOf *big.Int
}

var (
	oidCRLNumber         = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidAuthorityKeyID    = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidECDSAWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// CRL returns a DER CRL issued and signed by ca (whose key must be ECDSA).
func (ca *Issued) CRL(t testing.TB, tmpl CRLTemplate) []byte {
	t.Helper()
	if _, ok := ca.Key.Public().(*ecdsa.PublicKey); !ok {
		t.Fatal("certtest: CRL needs an ECDSA issuer key")
	}
	now := time.Now()
	if tmpl.ThisUpdate.IsZero() {
		tmpl.ThisUpdate = now.Add(-time.Hour)
	}
	if tmpl.NextUpdate.IsZero() {
		tmpl.NextUpdate = now.Add(24 * time.Hour)
	}
	type revoked struct {
		Serial *big.Int
		At     time.Time
	}
	type tbsCertList struct {
		Version    int
		Signature  pkix.AlgorithmIdentifier
		Issuer     asn1.RawValue
		ThisUpdate time.Time
		NextUpdate time.Time
		Revoked    []revoked        `asn1:"optional"`
		Extensions []pkix.Extension `asn1:"tag:0,explicit"`
	}
	alg := pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}
	tbs := tbsCertList{Version: 1, Signature: alg, Issuer: asn1.RawValue{FullBytes: ca.Cert.RawSubject},
		ThisUpdate: tmpl.ThisUpdate.UTC(), NextUpdate: tmpl.NextUpdate.UTC()}
	for _, s := range tmpl.Revoked {
		tbs.Revoked = append(tbs.Revoked, revoked{s, tmpl.ThisUpdate.UTC()})
	}
	aki := mustMarshal(t, struct {
		ID []byte `asn1:"optional,tag:0"`
	}{ca.Cert.SubjectKeyId})
	tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidAuthorityKeyID, Value: aki})
	if tmpl.Number != nil {
		tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidCRLNumber, Critical: tmpl.NumberCritical, Value: mustMarshal(t, tmpl.Number)})
	}
	if tmpl.DeltaOf != nil {
		tbs.Extensions = append(tbs.Extensions, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: mustMarshal(t, tmpl.DeltaOf)})
	}
	tbsDER := mustMarshal(t, tbs)
	digest := sha256.Sum256(tbsDER)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return mustMarshal(t, struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, alg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}
