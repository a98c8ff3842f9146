package certvalidation

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// Reason says why a certificate is invalid. The values are stable: reports,
// the CLI and the API show them.
type Reason string

// Reasons, in RFC 5280 section 6.1 order where they come from it.
const (
	ReasonMalformed            Reason = "malformed"                  // a certificate or extension that does not parse
	ReasonNoPath               Reason = "no_path"                    // no chain of issuers to a trust anchor
	ReasonBadSignature         Reason = "bad_signature"              // section 6.1.3 (a)(1)
	ReasonExpired              Reason = "expired"                    // section 6.1.3 (a)(2): after notAfter
	ReasonNotYetValid          Reason = "not_yet_valid"              // section 6.1.3 (a)(2): before notBefore
	ReasonNameConstraints      Reason = "name_constraints"           // section 6.1.3 (b), (c)
	ReasonPolicy               Reason = "policy"                     // section 6.1.3 (f), 6.1.4 (a), 6.1.5 (g)
	ReasonNotCA                Reason = "not_ca"                     // section 6.1.4 (k)
	ReasonPathLength           Reason = "path_length"                // section 6.1.4 (l)
	ReasonKeyUsage             Reason = "key_usage"                  // section 6.1.4 (n), or the purpose's key usage
	ReasonCriticalExtension    Reason = "unknown_critical_extension" // section 6.1.4 (o), 6.1.5 (f)
	ReasonExtKeyUsage          Reason = "ext_key_usage"              // the purpose's extended key usage
	ReasonWeakAlgorithm        Reason = "weak_algorithm"             // MD5, SHA-1, RSA or DSA under 2048 bits
	ReasonNameMismatch         Reason = "name_mismatch"              // Options.Host or Options.Email not in the certificate
	ReasonRevoked              Reason = "revoked"                    // a CRL or OCSP response says so
	ReasonRevocationUnknown    Reason = "revocation_unknown"         // no usable revocation data, under RevocationRequire
	ReasonLimitExceeded        Reason = "limit_exceeded"             // the work one validation may cause (Limits); the detail names the bound
	ReasonUnsupportedAlgorithm Reason = "unsupported_algorithm"      // a signature or key this package cannot check
	// ReasonMalformedCertificate: a certificate of the path that parses but
	// breaks the certificate profile of RFC 5280 section 4: a name that is
	// not a name of its type (section 4.2.1.6, 4.2.1.10), or one of the
	// issuance rules of [ProfileCheck]. The detail starts with the rule's
	// name ("serial_number: ...").
	ReasonMalformedCertificate Reason = "malformed_certificate"
	// ReasonMalformedCRL: an authentic CRL, in scope and current, that breaks
	// the CRL profile of RFC 5280 section 5 (the CRL number rules of section
	// 5.2.3), when no other revocation data decides. The issuer's own
	// revocation data is broken: the certificate is refused whatever the
	// revocation policy (except none, which reads no CRL).
	ReasonMalformedCRL Reason = "malformed_crl"
)

// Error is why a certificate chain is invalid: which certificate, and what
// check it failed. Validate returns it (with the report) for an invalid
// chain; inspect it with errors.AsType.
type Error struct {
	Cert   *x509.Certificate // the certificate at fault; nil when none is (no_path)
	Depth  int               // its place: 0 is the certificate validated, then its issuers
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	where := ""
	if e.Cert != nil {
		who := "certificate"
		if e.Depth > 0 {
			who = fmt.Sprintf("issuer certificate %d", e.Depth)
		}
		where = fmt.Sprintf(" (%s %q)", who, e.Cert.Subject.String())
	}
	return fmt.Sprintf("certvalidation: %s: %s%s", e.Reason, e.Detail, where)
}

// Errors of a call that could not be made at all, as opposed to an invalid
// chain (*Error).
var (
	// ErrNoTrustAnchors: no trust anchor is configured for the purpose, and
	// Options.Roots gives none.
	ErrNoTrustAnchors = errors.New("certvalidation: no trust anchors for this purpose")
	// ErrBadOptions: Options that cannot be honoured (unknown purpose, nil
	// certificate).
	ErrBadOptions = errors.New("certvalidation: invalid options")
)
