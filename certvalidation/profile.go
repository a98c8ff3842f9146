package certvalidation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"crypto/dsa" //nolint:staticcheck // DSA only to verify old certificates (PKITS 4.1.4-4.1.6)
)

// ProfileCheck names one issuance rule of RFC 5280 that the certificates
// (and CRLs) of a path must follow, beyond the path validation algorithm
// of section 6.1. A certificate that breaks one is refused with
// [ReasonMalformedCertificate], a CRL with [ReasonMalformedCRL], the
// detail starting with the rule's name. Every rule is on by default; a
// legacy PKI that breaks one can be let through for the paths that end at
// its trust anchor (Config.Relax, Material.Relax), and the report then
// says so with a warning check.
//
// The rules apply to the certificates a CA issued (intermediates and the
// end certificate), never to the trust anchor's own certificate: its
// self-signature and encoding are trust material chosen by the operator,
// and roots in every trust store break them (a serial number 0, a
// basicConstraints not marked critical, no subject key identifier).
type ProfileCheck string

// The profile rules.
const (
	// Section 4.1.2.2: a positive serial number of at most 20 octets.
	ProfileSerialNumber ProfileCheck = "serial_number"
	// Section 4.2.1.1: an authority key identifier (keyIdentifier) in every
	// certificate but a self-signed one.
	ProfileAuthorityKeyID ProfileCheck = "authority_key_id"
	// Section 4.2.1.2: a subject key identifier in every CA certificate.
	ProfileSubjectKeyID ProfileCheck = "subject_key_id"
	// Section 4.2.1.9: a CA certificate's basicConstraints marked critical.
	ProfileBasicConstraintsCritical ProfileCheck = "basic_constraints_critical"
	// Section 4.2.1.12: an extended key usage names at least one purpose
	// (KeyPurposeId SIZE (1..MAX)); an empty one would read as "any".
	ProfileEmptyExtKeyUsage ProfileCheck = "empty_ext_key_usage"
	// Sections 4.2.1.3 and 4.2.1.9: keyCertSign only with cA set.
	ProfileEndEntityCertSign ProfileCheck = "end_entity_cert_sign"
	// Section 4.2.1.10: name constraints only in a CA certificate.
	ProfileEndEntityNameConstraints ProfileCheck = "end_entity_name_constraints"
	// Sections 4.1.2.6 and 4.2.1.6: an empty subject needs a
	// subjectAltName, marked critical.
	ProfileSubjectAltNameCritical ProfileCheck = "subject_alt_name_critical"
	// Section 4.2.1.11: policy constraints marked critical, and not empty.
	ProfilePolicyConstraints ProfileCheck = "policy_constraints"
	// Section 5.2.3: a CRL carries a CRL number, not critical, between 0
	// and 2^159-1 (20 octets).
	ProfileCRLNumber ProfileCheck = "crl_number"
)

// AllProfileChecks lists the rules in RFC order.
var AllProfileChecks = []ProfileCheck{
	ProfileSerialNumber, ProfileAuthorityKeyID, ProfileSubjectKeyID, ProfileBasicConstraintsCritical,
	ProfileEmptyExtKeyUsage, ProfileEndEntityCertSign, ProfileEndEntityNameConstraints,
	ProfileSubjectAltNameCritical, ProfilePolicyConstraints, ProfileCRLNumber,
}

// ParseProfileCheck reads a rule name as the configuration writes it.
func ParseProfileCheck(s string) (ProfileCheck, error) {
	if slices.Contains(AllProfileChecks, ProfileCheck(s)) {
		return ProfileCheck(s), nil
	}
	names := make([]string, len(AllProfileChecks))
	for i, c := range AllProfileChecks {
		names[i] = string(c)
	}
	return "", fmt.Errorf("unknown profile check %q (want one of %s)", s, strings.Join(names, ", "))
}

// violation is one profile rule broken, with what was found.
type violation struct {
	rule   ProfileCheck
	detail string
}

func (v violation) String() string { return string(v.rule) + ": " + v.detail }

// relaxSet is the set of rules relaxed for the paths of one trust anchor.
type relaxSet map[ProfileCheck]bool

// certViolations returns every profile rule that path[j] (not the trust
// anchor) breaks.
func certViolations(path []*certInfo, j int) []violation {
	ci, issuer := path[j], path[j+1]
	c := ci.c
	var out []violation
	add := func(rule ProfileCheck, format string, args ...any) {
		out = append(out, violation{rule, fmt.Sprintf(format, args...)})
	}
	if s := c.SerialNumber; s != nil {
		switch {
		case s.Sign() == 0:
			add(ProfileSerialNumber, "the serial number is zero (RFC 5280 section 4.1.2.2)")
		case s.Sign() < 0:
			add(ProfileSerialNumber, "the serial number is negative (RFC 5280 section 4.1.2.2)")
		case serialOctets(s) > 20:
			add(ProfileSerialNumber, "the serial number is %d octets long, more than 20 (RFC 5280 section 4.1.2.2)", serialOctets(s))
		}
	}
	selfSigned := ci.selfIssued && bytes.Equal(c.RawSubjectPublicKeyInfo, issuer.c.RawSubjectPublicKeyInfo)
	if !selfSigned && len(c.AuthorityKeyId) == 0 {
		add(ProfileAuthorityKeyID, "no authority key identifier (RFC 5280 section 4.2.1.1)")
	}
	if ci.isCA() {
		if len(c.SubjectKeyId) == 0 {
			add(ProfileSubjectKeyID, "a CA certificate without a subject key identifier (RFC 5280 section 4.2.1.2)")
		}
		if !extensionCritical(c, oidExtBasicConstraints) {
			add(ProfileBasicConstraintsCritical, "a CA certificate whose basic constraints are not marked critical (RFC 5280 section 4.2.1.9)")
		}
	}
	if hasExtension(c, oidExtExtKeyUsage) && len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		add(ProfileEmptyExtKeyUsage, "an extended key usage extension with no purpose (RFC 5280 section 4.2.1.12)")
	}
	if j == 0 && !ci.isCA() {
		if ci.hasKU && c.KeyUsage&x509.KeyUsageCertSign != 0 {
			add(ProfileEndEntityCertSign, "an end-entity certificate (cA not set) with the keyCertSign key usage (RFC 5280 section 4.2.1.3)")
		}
		if hasExtension(c, oidExtNameConstraints) {
			add(ProfileEndEntityNameConstraints, "name constraints in an end-entity certificate (RFC 5280 section 4.2.1.10)")
		}
	}
	// With no SAN, extensionCritical is false too: one check, two wordings.
	if len(ci.subject) == 0 && !extensionCritical(c, oidExtSubjectAltName) {
		what := "not marked critical (RFC 5280 section 4.2.1.6)"
		if !ci.hasSAN {
			what = "absent (RFC 5280 section 4.1.2.6)"
		}
		add(ProfileSubjectAltNameCritical, "an empty subject, and the subject alternative name is %s", what)
	}
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidExtPolicyConstraints) {
			continue
		}
		switch {
		case !e.Critical:
			add(ProfilePolicyConstraints, "policy constraints not marked critical (RFC 5280 section 4.2.1.11)")
		case bytes.Equal(e.Value, []byte{0x30, 0x00}):
			add(ProfilePolicyConstraints, "policy constraints with neither requireExplicitPolicy nor inhibitPolicyMapping (RFC 5280 section 4.2.1.11)")
		}
	}
	return out
}

// crlViolation returns the CRL number rule a CRL breaks, if it does.
func crlViolation(rec *crlRecord) *violation {
	v := func(format string, args ...any) *violation {
		return &violation{ProfileCRLNumber, fmt.Sprintf(format, args...)}
	}
	for _, e := range rec.rl.Extensions {
		if e.Id.Equal(oidExtCRLNumber) && e.Critical {
			return v("the CRL number extension is marked critical (RFC 5280 section 5.2.3)")
		}
	}
	n := rec.rl.Number
	switch {
	case n == nil:
		return v("the CRL has no CRL number (RFC 5280 section 5.2.3)")
	case n.Sign() < 0:
		return v("the CRL number is negative (RFC 5280 section 5.2.3)")
	case serialOctets(n) > 20:
		return v("the CRL number is %d octets long, more than 20 (RFC 5280 section 5.2.3)", serialOctets(n))
	}
	return nil
}

// serialOctets is the length of the DER content of a non-negative INTEGER.
func serialOctets(n *big.Int) int {
	b := n.Bytes()
	if len(b) == 0 {
		return 1
	}
	if b[0]&0x80 != 0 {
		return len(b) + 1
	}
	return len(b)
}

func extensionCritical(c *x509.Certificate, oid []int) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	return false
}

// unsupportedKey describes why a CA's public key cannot verify
// signatures, or returns "".
func unsupportedKey(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return ""
	case *dsa.PublicKey:
		if k.P == nil {
			return "a DSA key without domain parameters"
		}
		return ""
	case nil:
		return "a public key algorithm this package does not support"
	}
	return fmt.Sprintf("a %s key, which cannot verify signatures", keyDescription(pub))
}
