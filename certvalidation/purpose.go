package certvalidation

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
)

// Purpose is what the certificate is validated for. It selects the trust
// anchors and revocation policy (Config.Purposes) and the key usage and
// extended key usage the end certificate must allow.
type Purpose string

// Purposes.
const (
	PurposeAny             Purpose = "any"             // no key usage requirement
	PurposeServerAuth      Purpose = "serverAuth"      // TLS server (RFC 5280 id-kp-serverAuth)
	PurposeClientAuth      Purpose = "clientAuth"      // TLS client: a partner calling the API
	PurposeEmailProtection Purpose = "emailProtection" // S/MIME (RFC 8550)
	PurposeTimeStamping    Purpose = "timeStamping"    // a TSA (RFC 3161 section 2.3)
	PurposeDocumentSigning Purpose = "documentSigning" // signed documents (RFC 9336)
)

// AllPurposes lists the purposes in the order the CLI shows them.
var AllPurposes = []Purpose{PurposeAny, PurposeServerAuth, PurposeClientAuth, PurposeEmailProtection, PurposeTimeStamping, PurposeDocumentSigning}

// ParsePurpose reads a purpose name as the CLI and the API write it.
func ParsePurpose(s string) (Purpose, error) {
	for _, p := range AllPurposes {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown purpose %q (want one of %s)", s, purposeList())
}

func purposeList() string {
	names := make([]string, len(AllPurposes))
	for i, p := range AllPurposes {
		names[i] = string(p)
	}
	return strings.Join(names, ", ")
}

// RevocationPolicy says what to do when the revocation status of a
// certificate cannot be established.
type RevocationPolicy string

// Revocation policies.
const (
	RevocationNone    RevocationPolicy = "none"    // do not check
	RevocationPrefer  RevocationPolicy = "prefer"  // check; unknown status is a warning in the report (soft-fail)
	RevocationRequire RevocationPolicy = "require" // check; unknown status makes the chain invalid (hard-fail)
)

// ParseRevocationPolicy reads none, prefer or require.
func ParseRevocationPolicy(s string) (RevocationPolicy, error) {
	switch p := RevocationPolicy(s); p {
	case RevocationNone, RevocationPrefer, RevocationRequire:
		return p, nil
	}
	return "", fmt.Errorf("unknown revocation policy %q (want none, prefer or require)", s)
}

// Stricter returns the stricter of p and q.
func (p RevocationPolicy) Stricter(q RevocationPolicy) RevocationPolicy {
	rank := func(r RevocationPolicy) int {
		return slices.Index([]RevocationPolicy{RevocationNone, RevocationPrefer, RevocationRequire}, r)
	}
	if rank(q) > rank(p) {
		return q
	}
	return p
}

var (
	oidEKUDocumentSigning   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}       // RFC 9336
	oidEKUMSDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 12} // Microsoft document signing
)

// ekuFor returns the extended key usage the purpose needs, or
// ExtKeyUsageAny when it needs none.
func ekuFor(p Purpose) x509.ExtKeyUsage {
	switch p {
	case PurposeServerAuth:
		return x509.ExtKeyUsageServerAuth
	case PurposeClientAuth:
		return x509.ExtKeyUsageClientAuth
	case PurposeEmailProtection:
		return x509.ExtKeyUsageEmailProtection
	case PurposeTimeStamping:
		return x509.ExtKeyUsageTimeStamping
	}
	return x509.ExtKeyUsageAny
}

func hasEKU(c *x509.Certificate, eku x509.ExtKeyUsage) bool {
	return slices.Contains(c.ExtKeyUsage, eku)
}

func hasUnknownEKU(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(oid) {
			return true
		}
	}
	return false
}

// checkLeafEKU checks the end certificate's extended key usage for the
// purpose. An absent extension allows every purpose (RFC 5280 section
// 4.2.1.12) except timeStamping, for which RFC 3161 section 2.3 requires the
// extension, critical, with timeStamping as its only purpose.
func checkLeafEKU(c *x509.Certificate, p Purpose) string {
	hasExt := len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0
	switch p {
	case PurposeAny:
		return ""
	case PurposeTimeStamping:
		critical := false
		for _, e := range c.Extensions {
			if e.Id.Equal(oidExtExtKeyUsage) {
				critical = e.Critical
			}
		}
		if !hasExt || !critical || len(c.ExtKeyUsage) != 1 || len(c.UnknownExtKeyUsage) != 0 || c.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping {
			return "a time-stamping certificate needs a critical extended key usage with timeStamping only (RFC 3161 section 2.3)"
		}
		return ""
	case PurposeDocumentSigning:
		if !hasExt || hasEKU(c, x509.ExtKeyUsageAny) || hasEKU(c, x509.ExtKeyUsageEmailProtection) ||
			hasUnknownEKU(c, oidEKUDocumentSigning) || hasUnknownEKU(c, oidEKUMSDocumentSigning) {
			return ""
		}
		return "extended key usage allows neither documentSigning (RFC 9336) nor emailProtection"
	}
	if !hasExt || hasEKU(c, x509.ExtKeyUsageAny) || hasEKU(c, ekuFor(p)) {
		return ""
	}
	return fmt.Sprintf("extended key usage does not allow %s", p)
}

// checkCAEKU applies the purpose to an intermediate CA's extended key usage,
// when it has one: it constrains what the CA may issue for, as browsers,
// Microsoft and crypto/x509 read it (RFC 5280 leaves it open).
func checkCAEKU(c *x509.Certificate, p Purpose) string {
	hasExt := len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0
	if p == PurposeAny || !hasExt || hasEKU(c, x509.ExtKeyUsageAny) {
		return ""
	}
	switch p {
	case PurposeDocumentSigning:
		if hasEKU(c, x509.ExtKeyUsageEmailProtection) || hasUnknownEKU(c, oidEKUDocumentSigning) || hasUnknownEKU(c, oidEKUMSDocumentSigning) {
			return ""
		}
	default:
		if hasEKU(c, ekuFor(p)) {
			return ""
		}
	}
	return fmt.Sprintf("the CA's extended key usage does not allow %s", p)
}

// checkLeafKeyUsage checks the end certificate's key usage, when present,
// for what the purpose does with the key.
func checkLeafKeyUsage(c *x509.Certificate, present bool, p Purpose) string {
	if !present {
		return ""
	}
	ku := c.KeyUsage
	var want x509.KeyUsage
	switch p {
	case PurposeServerAuth:
		want = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement
	case PurposeClientAuth:
		want = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement
	case PurposeEmailProtection:
		want = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement
	case PurposeTimeStamping, PurposeDocumentSigning:
		want = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	default:
		return ""
	}
	if ku&want == 0 {
		return fmt.Sprintf("key usage does not allow %s", p)
	}
	return ""
}
