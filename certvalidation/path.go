package certvalidation

import (
	"cmp"
	"context"
	"crypto/dsa" //nolint:staticcheck // DSA only to verify old certificates (PKITS 4.1.4-4.1.6)
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"
)

// leafRole is what the end certificate of a path is checked for.
type leafRole int

const (
	roleEndEntity leafRole = iota // the purpose of the validation
	roleCRLSigner                 // the issuer of a CRL (RFC 5280 section 6.3.3 (f))
)

// constraint reads one of crypto/x509's policy constraint fields: value,
// and whether it is present.
func constraint(v int, zero bool) (int, bool) {
	if zero {
		return 0, true
	}
	if v > 0 {
		return v, true
	}
	return 0, false
}

func hasExtension(c *x509.Certificate, oid []int) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// verify checks that issuer's key (key: the working public key, with
// inherited DSA parameters) signed child, remembering the answer for the
// other candidate paths.
func (r *run) verify(child, issuer *certInfo, key any) error {
	k := sigKey{child.fp, issuer.fp}
	_, inherited := key.(*dsa.PublicKey)
	if !inherited {
		if err, ok := r.sigs[k]; ok {
			return err
		}
	}
	if !inherited {
		if err, ok := r.v.sigCache.get(k, r.now); ok {
			r.sigs[k] = err
			return err
		}
	}
	c := child.c
	err := checkSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature, key)
	if !inherited {
		r.sigs[k] = err
		r.v.sigCache.put(k, err, never)
	}
	return err
}

// never is the expiry of cache entries that stay true: a signature
// verified over given bytes with a given key.
var never = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// checkPath runs the path validation of RFC 5280 section 6.1 on path (the
// certificate validated first, the trust anchor last), then the checks of
// the role (purpose or CRL signer), then, with revocation, section 6.3 and
// OCSP on each certificate.
func (r *run) checkPath(ctx context.Context, path []*certInfo, purpose Purpose, revocation bool) *pathOutcome {
	return r.checkPathRole(ctx, path, purpose, roleEndEntity, revocation)
}

func (r *run) checkPathRole(ctx context.Context, path []*certInfo, purpose Purpose, role leafRole, revocation bool) *pathOutcome {
	s := r.v.s
	out := &pathOutcome{path: path}
	n := len(path) - 1
	anchor := path[n]
	pass := func(name string, idx int, detail string) {
		out.checks = append(out.checks, Check{Name: name, Cert: idx, Status: StatusOK, Detail: detail})
		out.progress++
	}
	fail := func(name string, idx int, reason Reason, format string, args ...any) *pathOutcome {
		detail := fmt.Sprintf(format, args...)
		out.checks = append(out.checks, Check{Name: name, Cert: idx, Status: StatusFailed, Detail: detail})
		out.err = &Error{Cert: path[idx].c, Depth: idx, Reason: reason, Detail: detail}
		return out
	}
	validity := func(idx int) *pathOutcome {
		c := path[idx].c
		if r.at.Before(c.NotBefore) {
			return fail("validity", idx, ReasonNotYetValid, "not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
		}
		if r.at.After(c.NotAfter) {
			return fail("validity", idx, ReasonExpired, "expired %s", c.NotAfter.UTC().Format(time.RFC3339))
		}
		pass("validity", idx, "")
		return nil
	}

	// The trust anchor: its own validity (a RFC 5937 reading: an expired
	// anchor is no longer one) and its key.
	if o := validity(n); o != nil {
		return o
	}
	if !s.allowWeak {
		if w := weakKey(anchor.c.PublicKey); w != "" {
			return fail("algorithms", n, ReasonWeakAlgorithm, "%s", w)
		}
	}
	// A trust anchor that issues the next certificate is used as a CA: its
	// certificate must be one (basic constraints, key usage, no critical
	// extension not understood, a key that verifies signatures), as RFC
	// 5937 section 2 has it when anchor constraints are enforced and as
	// browsers and crypto/x509 read root certificates. Its constraints
	// (name constraints, path length, extended key usage) then apply below
	// it: RFC 5280 section 6.1.1 (b), (c) and (k) let the anchor supply
	// them. A certificate that is itself the anchor is trusted as is.
	if n > 0 {
		if anchor.malformed != "" {
			return fail("parse", n, ReasonMalformed, "the trust anchor: %s", anchor.malformed)
		}
		if !anchor.isCA() {
			return fail("trust_anchor", n, ReasonNotCA, "the trust anchor is not a CA certificate (basicConstraints cA is not set)")
		}
		if anchor.hasKU && anchor.c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fail("trust_anchor", n, ReasonKeyUsage, "the trust anchor's key usage does not allow signing certificates (keyCertSign)")
		}
		if len(anchor.unknownCritical) > 0 {
			return fail("trust_anchor", n, ReasonCriticalExtension, "the trust anchor has an unsupported critical extension %s", strings.Join(anchor.unknownCritical, ", "))
		}
		if u := unsupportedKey(anchor.c.PublicKey); u != "" {
			return fail("trust_anchor", n, ReasonUnsupportedAlgorithm, "the trust anchor has %s", u)
		}
		if anchor.badConstraint != "" {
			return fail("name_syntax", n, ReasonMalformedCertificate, "name_syntax: the trust anchor's %s", anchor.badConstraint)
		}
		if role == roleEndEntity {
			if msg := checkCAEKU(anchor.c, purpose); msg != "" {
				return fail("ext_key_usage", n, ReasonExtKeyUsage, "the trust anchor: %s", msg)
			}
		}
		pass("trust_anchor", n, "a CA certificate")
	}
	relax := r.v.relax[anchor.fp]

	keys := make([]any, len(path))
	keys[n] = anchor.c.PublicKey
	for j := n - 1; j >= 0; j-- {
		keys[j] = inheritParams(path[j].c.PublicKey, keys[j+1])
	}

	// Section 6.1.2: initialisation.
	explicit, mapping, inhibitAny := n+1, n+1, n+1
	if r.opts.RequireExplicitPolicy {
		explicit = 0
	}
	if r.opts.InhibitPolicyMapping {
		mapping = 0
	}
	if r.opts.InhibitAnyPolicy {
		inhibitAny = 0
	}
	maxPath := n
	graph := newPolicyGraph(1000)
	nc := &ncState{max: s.maxNameChecks}
	workingName := anchor.subject
	if n > 0 {
		if c := anchor.c; (c.MaxPathLen > 0 || c.MaxPathLenZero) && c.MaxPathLen < maxPath {
			maxPath = c.MaxPathLen
		}
		if anchor.nc != nil {
			nc.sets = append(nc.sets, anchor.nc)
		}
	}

	for i := 1; i <= n; i++ {
		j := n - i
		ci := path[j]
		c := ci.c
		last := i == n
		if ci.malformed != "" {
			return fail("parse", j, ReasonMalformed, "%s", ci.malformed)
		}
		// Section 6.1.3 (a)(1): signature, with the weak-algorithm policy.
		if !s.allowWeak {
			if weakSignature(c.SignatureAlgorithm) {
				return fail("algorithms", j, ReasonWeakAlgorithm, "signature algorithm %v", c.SignatureAlgorithm)
			}
			if w := weakKey(keys[j]); w != "" {
				return fail("algorithms", j, ReasonWeakAlgorithm, "%s", w)
			}
		}
		if c.SignatureAlgorithm == x509.UnknownSignatureAlgorithm {
			return fail("signature", j, ReasonUnsupportedAlgorithm, "unknown signature algorithm")
		}
		if err := r.verify(ci, path[j+1], keys[j+1]); err != nil {
			return fail("signature", j, ReasonBadSignature, "signature by %q does not verify: %v", path[j+1].c.Subject.String(), err)
		}
		pass("signature", j, c.SignatureAlgorithm.String())
		// (a)(2): validity at the validation time.
		if o := validity(j); o != nil {
			return o
		}
		// (a)(4): name chaining.
		if !ci.issuer.equal(workingName) {
			return fail("name_chaining", j, ReasonNoPath, "issuer name does not match the subject of the issuer certificate")
		}
		// The certificate profile of RFC 5280 section 4: names that are
		// names, and the issuance rules (ProfileCheck) not relaxed for
		// this anchor.
		if bad := cmp.Or(ci.badName, ci.badConstraint); bad != "" {
			return fail("name_syntax", j, ReasonMalformedCertificate, "name_syntax: %s", bad)
		}
		for _, v := range certViolations(path, j) {
			if relax[v.rule] {
				out.checks = append(out.checks, Check{Name: "profile", Cert: j, Status: StatusWarning, Detail: "relaxed for this trust anchor: " + v.String()})
				continue
			}
			return fail("profile", j, ReasonMalformedCertificate, "%s", v)
		}
		pass("profile", j, "")
		// (b), (c): name constraints, except on self-issued intermediates.
		if len(nc.sets) > 0 && (last || !ci.selfIssued) {
			reason, err := nc.check(ci)
			if err != nil {
				return fail("name_constraints", j, ReasonLimitExceeded, "%v", err)
			}
			if reason != "" {
				return fail("name_constraints", j, ReasonNameConstraints, "%s", reason)
			}
			pass("name_constraints", j, "")
		}
		// (d), (e): certificate policies.
		if graph != nil {
			if hasExtension(c, oidExtCertificatePolicies) {
				policies := make([]string, len(c.Policies))
				for k, p := range c.Policies {
					policies[k] = p.String()
				}
				if err := graph.processCert(policies, inhibitAny > 0 || (!last && ci.selfIssued)); err != nil {
					return fail("policies", j, ReasonLimitExceeded, "%v", err)
				}
				if graph.empty() {
					graph = nil
				}
			} else {
				graph = nil
			}
		}
		// (f)
		if explicit == 0 && graph == nil {
			return fail("policies", j, ReasonPolicy, "no valid certificate policy (an explicit policy is required)")
		}

		if !last {
			// Section 6.1.4: preparation for certificate i+1.
			for _, m := range c.PolicyMappings {
				if m.IssuerDomainPolicy.String() == anyPolicy || m.SubjectDomainPolicy.String() == anyPolicy {
					return fail("policies", j, ReasonPolicy, "policy mapping of anyPolicy")
				}
			}
			if graph != nil {
				graph.applyMappings(c.PolicyMappings, mapping > 0)
				if graph.empty() {
					graph = nil
				}
			}
			workingName = ci.subject
			if ci.nc != nil {
				nc.sets = append(nc.sets, ci.nc)
			}
			if !ci.selfIssued {
				if explicit > 0 {
					explicit--
				}
				if mapping > 0 {
					mapping--
				}
				if inhibitAny > 0 {
					inhibitAny--
				}
			}
			if v, ok := constraint(c.RequireExplicitPolicy, c.RequireExplicitPolicyZero); ok && v < explicit {
				explicit = v
			}
			if v, ok := constraint(c.InhibitPolicyMapping, c.InhibitPolicyMappingZero); ok && v < mapping {
				mapping = v
			}
			if v, ok := constraint(c.InhibitAnyPolicy, c.InhibitAnyPolicyZero); ok && v < inhibitAny {
				inhibitAny = v
			}
			// (k): a CA.
			if !ci.isCA() {
				return fail("basic_constraints", j, ReasonNotCA, "not a CA certificate (basicConstraints cA is not set)")
			}
			pass("basic_constraints", j, "")
			// (l), (m): path length.
			if !ci.selfIssued {
				if maxPath <= 0 {
					return fail("path_length", j, ReasonPathLength, "path length constraint exceeded")
				}
				maxPath--
			}
			if c.MaxPathLen > 0 || c.MaxPathLenZero {
				if c.MaxPathLen < maxPath {
					maxPath = c.MaxPathLen
				}
			}
			pass("path_length", j, "")
			// (n): keyCertSign.
			if ci.hasKU && c.KeyUsage&x509.KeyUsageCertSign == 0 {
				return fail("key_usage", j, ReasonKeyUsage, "key usage does not allow signing certificates (keyCertSign)")
			}
			if role == roleEndEntity {
				if msg := checkCAEKU(c, purpose); msg != "" {
					return fail("ext_key_usage", j, ReasonExtKeyUsage, "%s", msg)
				}
			}
			// (o)
			if len(ci.unknownCritical) > 0 {
				return fail("critical_extensions", j, ReasonCriticalExtension, "unsupported critical extension %s", strings.Join(ci.unknownCritical, ", "))
			}
			continue
		}

		// Section 6.1.5: wrap-up.
		if explicit > 0 {
			explicit--
		}
		if v, ok := constraint(c.RequireExplicitPolicy, c.RequireExplicitPolicyZero); ok && v == 0 {
			explicit = 0
		}
		if len(ci.unknownCritical) > 0 {
			return fail("critical_extensions", j, ReasonCriticalExtension, "unsupported critical extension %s", strings.Join(ci.unknownCritical, ", "))
		}
		var policies []string
		if graph != nil {
			policies = graph.userConstrained(r.opts.InitialPolicies)
		}
		if explicit == 0 && len(policies) == 0 {
			return fail("policies", j, ReasonPolicy, "no valid certificate policy for the requested policy set")
		}
		out.policies = policies
		if len(policies) > 0 {
			pass("policies", j, strings.Join(policies, ", "))
		}
	}

	// The end certificate: what it is checked for.
	leaf := path[0]
	if !s.allowWeak {
		if w := weakKey(keys[0]); w != "" {
			return fail("algorithms", 0, ReasonWeakAlgorithm, "%s", w)
		}
	}
	if n == 0 && leaf.malformed != "" {
		return fail("parse", 0, ReasonMalformed, "%s", leaf.malformed)
	}
	switch role {
	case roleCRLSigner:
		if leaf.hasKU && leaf.c.KeyUsage&x509.KeyUsageCRLSign == 0 {
			return fail("key_usage", 0, ReasonKeyUsage, "key usage does not allow signing CRLs (cRLSign)")
		}
	case roleEndEntity:
		if msg := checkLeafEKU(leaf.c, purpose); msg != "" {
			return fail("ext_key_usage", 0, ReasonExtKeyUsage, "%s", msg)
		}
		if purpose != PurposeAny {
			pass("ext_key_usage", 0, string(purpose))
		}
		if msg := checkLeafKeyUsage(leaf.c, leaf.hasKU, purpose); msg != "" {
			return fail("key_usage", 0, ReasonKeyUsage, "%s", msg)
		}
		if h := r.opts.Host; h != "" {
			if err := leaf.c.VerifyHostname(h); err != nil {
				return fail("host", 0, ReasonNameMismatch, "not valid for %q", h)
			}
			pass("host", 0, h)
		}
		if e := r.opts.Email; e != "" {
			if !hasEmail(leaf, e) {
				return fail("email", 0, ReasonNameMismatch, "not valid for %q", e)
			}
			pass("email", 0, e)
		}
	}

	out.structure = true
	out.until = path[0].c.NotAfter
	for _, ci := range path {
		if ci.c.NotAfter.Before(out.until) {
			out.until = ci.c.NotAfter
		}
	}
	if revocation {
		r.checkRevocation(ctx, out, keys)
	}
	return out
}

// hasEmail reports whether the certificate is for the mailbox addr: a
// subjectAltName rfc822Name, or without one an emailAddress of the subject.
func hasEmail(ci *certInfo, addr string) bool {
	var mailboxes []string
	for _, g := range ci.san {
		if g.tag == gnRFC822 {
			mailboxes = append(mailboxes, string(g.value))
		}
	}
	if !ci.hasSAN {
		mailboxes = append(mailboxes, ci.subject.emailAddresses()...)
	}
	for _, m := range mailboxes {
		if strings.EqualFold(m, addr) {
			return true
		}
	}
	return false
}

// ValidHost reports whether s can be given as Options.Host: a DNS name
// (letters, digits, hyphens, underscores) or an IP address.
func ValidHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
