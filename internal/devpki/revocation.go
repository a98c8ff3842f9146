package devpki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"
)

// The CRLReason codes of RFC 5280 section 5.3.1 that a development CA
// accepts for an end-entity certificate. cACompromise and aACompromise are
// about CAs, certificateHold is a suspension (not offered: a revocation
// here is final) and removeFromCRL belongs to delta CRLs.
var reasons = []struct {
	name string
	code int
}{
	{"unspecified", ocsp.Unspecified},
	{"keyCompromise", ocsp.KeyCompromise},
	{"affiliationChanged", ocsp.AffiliationChanged},
	{"superseded", ocsp.Superseded},
	{"cessationOfOperation", ocsp.CessationOfOperation},
	{"privilegeWithdrawn", ocsp.PrivilegeWithdrawn},
}

// ErrUnknownReason: a revocation reason that is not one of ReasonNames.
var ErrUnknownReason = errors.New("devpki: unknown revocation reason")

// ParseReason returns the CRLReason code of an RFC 5280 reason name
// ("keyCompromise", ...).
func ParseReason(name string) (int, error) {
	for _, r := range reasons {
		if r.name == name {
			return r.code, nil
		}
	}
	return 0, fmt.Errorf("%w %q: one of %s", ErrUnknownReason, name, strings.Join(ReasonNames(), ", "))
}

// ReasonNames lists the reasons ParseReason accepts.
func ReasonNames() []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = r.name
	}
	return out
}

// ReasonName is the RFC 5280 name of a CRLReason code.
func ReasonName(code int) string {
	for _, r := range reasons {
		if r.code == code {
			return r.name
		}
	}
	return fmt.Sprintf("reason %d", code)
}

// SignCRL signs the CA's complete CRL (RFC 5280 section 5): version 2,
// the authority key identifier and the CRL number (sections 5.2.1 and
// 5.2.3, which crypto/x509 writes), thisUpdate and nextUpdate, and one
// entry per revoked certificate with its reason code (omitted when
// unspecified, section 5.3.1). number must grow with each CRL the CA signs.
func (ca *CA) SignCRL(revoked []x509.RevocationListEntry, number *big.Int, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("devpki: no CA")
	}
	if !nextUpdate.After(thisUpdate) {
		return nil, errors.New("devpki: CRL: nextUpdate must be after thisUpdate")
	}
	entries := slices.Clone(revoked)
	for i := range entries {
		entries[i].RevocationTime = entries[i].RevocationTime.UTC()
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                thisUpdate.UTC(),
		NextUpdate:                nextUpdate.UTC(),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("devpki: CRL: %w", err)
	}
	return der, nil
}

// OCSPStatus is what an OCSP response says of one certificate of the CA.
type OCSPStatus struct {
	Serial     *big.Int
	Status     int // ocsp.Good, ocsp.Revoked or ocsp.Unknown
	RevokedAt  time.Time
	Reason     int         // a CRLReason code, for ocsp.Revoked
	IssuerHash crypto.Hash // the hash of the request's CertID (SHA-1 when zero)
	ThisUpdate time.Time
	NextUpdate time.Time
}

// SignOCSP signs a basic OCSP response (RFC 6960 section 4.2.1) about one
// certificate, by the CA itself (no delegated responder: section 4.2.2.2
// allows the issuer), its responder id the CA's name.
func (ca *CA) SignOCSP(st OCSPStatus) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("devpki: no CA")
	}
	if st.Serial == nil {
		return nil, errors.New("devpki: OCSP: no serial number")
	}
	tmpl := ocsp.Response{
		Status:       st.Status,
		SerialNumber: st.Serial,
		ThisUpdate:   st.ThisUpdate.UTC(),
		NextUpdate:   st.NextUpdate.UTC(),
		IssuerHash:   st.IssuerHash,
	}
	if st.Status == ocsp.Revoked {
		tmpl.RevokedAt = st.RevokedAt.UTC()
		tmpl.RevocationReason = st.Reason
	}
	der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("devpki: OCSP response: %w", err)
	}
	return der, nil
}
