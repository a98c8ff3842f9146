package certvalidation

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ncState holds the name constraints of the CAs processed so far (RFC 5280
// section 6.1.2 (b), (c)). Keeping each CA's constraints and requiring a
// name to satisfy all of them is the intersection of section 6.1.4 (g)
// without computing it; comparisons counts the work, which Limits bound.
type ncState struct {
	sets        []*nameConstraints
	comparisons int
	max         int
}

// errLimit marks a check that stopped because it hit a work bound.
type errLimit struct{ what string }

func (e errLimit) Error() string { return e.what }

// check applies the constraints to the names of ci (section 6.1.3 (b),
// (c)). It returns "" when every name is within them, otherwise the reason.
func (s *ncState) check(ci *certInfo) (string, error) {
	if len(s.sets) == 0 {
		return "", nil
	}
	var names []generalName
	if len(ci.subject) > 0 {
		names = append(names, generalName{tag: gnDirectory, dn: ci.subject})
	}
	names = append(names, ci.san...)
	if !ci.hasSAN {
		// Section 4.2.1.10: with no subjectAltName, rfc822Name constraints
		// apply to the emailAddress attributes of the subject.
		for _, e := range ci.subject.emailAddresses() {
			names = append(names, generalName{tag: gnRFC822, value: []byte(e)})
		}
	}
	for _, set := range s.sets {
		for _, n := range names {
			if reason, err := s.checkOne(set, n); reason != "" || err != nil {
				return reason, err
			}
		}
	}
	return "", nil
}

func (s *ncState) checkOne(set *nameConstraints, n generalName) (string, error) {
	supported := n.tag == gnDirectory || n.tag == gnRFC822 || n.tag == gnDNS || n.tag == gnURI || n.tag == gnIP
	// A name that cannot be compared (not a name of its type, or a URI with
	// no host name) fails every constraint on its type: excluded or
	// permitted, the answer would be a guess (crypto/x509 does the same).
	uncomparable := ""
	if supported {
		uncomparable = uncomparableName(n)
	}
	for _, st := range set.excluded {
		if st.base.tag != n.tag {
			continue
		}
		if !supported || st.unsupported {
			return fmt.Sprintf("a name constraint on %s that cannot be processed", gnTypeNames[n.tag]), nil
		}
		if uncomparable != "" {
			return fmt.Sprintf("%s cannot be checked against the name constraints of an issuing CA: %s", n, uncomparable), nil
		}
		if err := s.count(); err != nil {
			return "", err
		}
		if mayMatch(n, st.base) {
			return fmt.Sprintf("%s is excluded by a name constraint of an issuing CA", n), nil
		}
	}
	sawPermitted := false
	for _, st := range set.permitted {
		if st.base.tag != n.tag {
			continue
		}
		if !supported || st.unsupported {
			return fmt.Sprintf("a name constraint on %s that cannot be processed", gnTypeNames[n.tag]), nil
		}
		if uncomparable != "" {
			return fmt.Sprintf("%s cannot be checked against the name constraints of an issuing CA: %s", n, uncomparable), nil
		}
		sawPermitted = true
		if err := s.count(); err != nil {
			return "", err
		}
		if match(n, st.base) {
			return "", nil
		}
	}
	if sawPermitted {
		return fmt.Sprintf("%s is not within the permitted subtrees of an issuing CA", n), nil
	}
	return "", nil
}

// uncomparableName says why n cannot be compared with constraints of its
// type, or returns "". Names of subjectAltName were checked when the
// certificate was read; the emailAddress attributes of a subject (which
// rfc822Name constraints also cover) were not.
func uncomparableName(n generalName) string {
	switch n.tag {
	case gnRFC822:
		return mailboxSyntax(string(n.value))
	case gnDNS:
		return dnsSyntax(string(n.value), true)
	case gnURI:
		u, err := url.Parse(string(n.value))
		switch {
		case err != nil:
			return "not a URI"
		case u.Hostname() == "":
			return "a URI with no host name"
		case net.ParseIP(u.Hostname()) != nil:
			return "a URI whose host is an IP address"
		}
	case gnIP:
		if len(n.value) != 4 && len(n.value) != 16 {
			return "not an IPv4 or IPv6 address"
		}
	}
	return ""
}

func (s *ncState) count() error {
	s.comparisons++
	if s.max > 0 && s.comparisons > s.max {
		return errLimit{fmt.Sprintf("limits.max_name_comparisons: more than %d name constraint comparisons", s.max)}
	}
	return nil
}

// match reports whether name n is within the subtree base (same form).
// For a wildcard DNS name, comparing it as written is what permitted
// subtrees need: "*.example.com" is under a constraint exactly when every
// name it stands for is (wildcardWithin), as the syntax check leaves no
// wildcard in a constraint.
func match(n, base generalName) bool {
	switch n.tag {
	case gnDirectory:
		return n.dn.within(base.dn)
	case gnDNS:
		return matchDNS(string(n.value), string(base.value))
	case gnRFC822:
		return matchEmail(string(n.value), string(base.value))
	case gnURI:
		return matchURI(string(n.value), string(base.value))
	case gnIP:
		return matchIP(n.value, base.value)
	}
	return false
}

// mayMatch reports whether name n may be within the subtree base: as
// match, except that a wildcard DNS name may be when one of the names it
// stands for is. An excluded subtree refuses every name that may be in it:
// a leaf for "*.example.com" under a CA that excludes "bar.example.com"
// would otherwise be good for bar.example.com (CVE-2025-61727 in Go's
// crypto/x509).
func mayMatch(n, base generalName) bool {
	if n.tag == gnDNS {
		if parent, ok := wildcardParent(string(n.value)); ok {
			return wildcardMayMatch(parent, string(base.value))
		}
	}
	return match(n, base)
}

// wildcardParent returns "example.com" for "*.example.com".
func wildcardParent(name string) (string, bool) {
	if p, ok := strings.CutPrefix(name, "*."); ok {
		return p, true
	}
	return "", false
}

// dnsUnder reports whether name is domain or a name under it.
func dnsUnder(name, domain string) bool {
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// wildcardWithin reports whether every name "*.parent" stands for (one
// more label on the left) is within the DNS constraint: exactly when
// parent itself is the constraint's domain or under it, with or without a
// leading period.
func wildcardWithin(parent, constraint string) bool {
	parent = strings.ToLower(strings.TrimSuffix(parent, "."))
	constraint = strings.ToLower(strings.TrimSuffix(constraint, "."))
	if constraint == "" {
		return true
	}
	return dnsUnder(parent, strings.TrimPrefix(constraint, "."))
}

// wildcardMayMatch reports whether some name "*.parent" stands for is
// within the DNS constraint: all of them are when wildcardWithin says so,
// and one is when the constraint (without a leading period) is itself one
// label on the left of parent.
func wildcardMayMatch(parent, constraint string) bool {
	if wildcardWithin(parent, constraint) {
		return true
	}
	parent = strings.ToLower(strings.TrimSuffix(parent, "."))
	constraint = strings.ToLower(strings.TrimSuffix(constraint, "."))
	// (A constraint with a leading period stands for names under it; the
	// one it would cut to here is parent's own, which wildcardWithin took.)
	_, rest, ok := strings.Cut(constraint, ".")
	return ok && rest == parent
}

// matchDNS: any name formed by adding labels to the left of the
// constraint satisfies it (section 4.2.1.10); a leading period, a common
// extension, restricts it to subdomains.
func matchDNS(name, constraint string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	constraint = strings.ToLower(strings.TrimSuffix(constraint, "."))
	if constraint == "" {
		return true
	}
	if strings.HasPrefix(constraint, ".") {
		return strings.HasSuffix(name, constraint)
	}
	return name == constraint || strings.HasSuffix(name, "."+constraint)
}

// matchEmail: a constraint is a mailbox, a host, or a domain with a
// leading period for any host in it (section 4.2.1.10).
func matchEmail(mailbox, constraint string) bool {
	at := strings.LastIndexByte(mailbox, '@')
	if at < 0 {
		return false
	}
	host := mailbox[at+1:]
	switch {
	case strings.Contains(constraint, "@"):
		return strings.EqualFold(mailbox, constraint)
	case strings.HasPrefix(constraint, "."):
		return len(host) > len(constraint) && strings.EqualFold(host[len(host)-len(constraint):], constraint)
	default:
		return strings.EqualFold(host, constraint)
	}
}

// matchURI: the constraint applies to the host part of the URI; a URI
// without a host name satisfies no constraint (section 4.2.1.10).
func matchURI(uri, constraint string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "" {
		return false
	}
	if strings.HasPrefix(constraint, ".") {
		return len(host) > len(constraint) && strings.EqualFold(host[len(host)-len(constraint):], constraint)
	}
	return strings.EqualFold(host, constraint)
}

// matchIP: the constraint is an address and a mask of the same family.
func matchIP(ip, constraint []byte) bool {
	if len(constraint) != 2*len(ip) || (len(ip) != 4 && len(ip) != 16) {
		return false
	}
	addr, mask := constraint[:len(ip)], constraint[len(ip):]
	for i := range ip {
		if ip[i]&mask[i] != addr[i]&mask[i] {
			return false
		}
	}
	return true
}
