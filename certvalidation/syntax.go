package certvalidation

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// The syntax of the names of subjectAltName and of name constraints (RFC
// 5280 section 4.2.1.6 and 4.2.1.10). A name that is not a name of its
// type cannot be compared with a constraint, and comparing it anyway is
// how ".example.com" or "a@evil.example@example.com" pass a permitted
// subtree: such names make the certificate malformed wherever it is in the
// path, constraints or not.

// dnsSyntax checks a dNSName in the preferred name syntax (RFC 1034
// section 3.5 as relaxed by RFC 1123 section 2.1; underscores, which
// service labels use, are accepted): letters, digits and hyphens, labels of
// 1 to 63 characters not starting or ending with a hyphen, 253 characters
// at most, no empty label (so no leading, trailing or doubled period).
// wildcard allows "*" as the whole leftmost label of a name with at least
// two labels, as certificates use it (RFC 6125 section 6.4.3).
func dnsSyntax(name string, wildcard bool) string {
	if name == "" {
		return "an empty DNS name"
	}
	if len(name) > 253 {
		return "a DNS name longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		switch {
		case l == "":
			return "an empty label"
		case l == "*" && i == 0 && wildcard && len(labels) > 1:
			continue
		case len(l) > 63:
			return "a label longer than 63 characters"
		case l[0] == '-' || l[len(l)-1] == '-':
			return "a label that starts or ends with a hyphen"
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				if r == '*' {
					return "a wildcard that is not the whole leftmost label"
				}
				return fmt.Sprintf("the character %q (internationalised names are written as A-labels, RFC 5280 section 7.2)", r)
			}
		}
	}
	return ""
}

// atext are the characters of an unquoted local part (RFC 5322 section
// 3.2.3) besides letters and digits.
const atext = "!#$%&'*+-/=?^_`{|}~"

// mailboxSyntax checks an rfc822Name: a Mailbox of RFC 5321 section 4.1.2,
// local-part "@" domain, with a dot-atom or quoted-string local part and a
// domain name (address literals are not accepted).
func mailboxSyntax(m string) string {
	for _, r := range m {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("the character %q (an rfc822Name is ASCII; RFC 8398 puts internationalised addresses in an otherName)", r)
		}
	}
	var local, domain string
	if strings.HasPrefix(m, `"`) {
		end := -1
		for i := 1; i < len(m); i++ {
			if m[i] == '\\' {
				i++
				continue
			}
			if m[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 || end+1 >= len(m) || m[end+1] != '@' {
			return "a quoted local part not followed by @"
		}
		local, domain = m[:end+1], m[end+2:]
	} else {
		at := strings.IndexByte(m, '@')
		if at < 0 {
			return "no @"
		}
		local, domain = m[:at], m[at+1:]
		if local == "" {
			return "an empty local part"
		}
		for _, part := range strings.Split(local, ".") {
			if part == "" {
				return "a local part with an empty dot-atom"
			}
			for _, r := range part {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(atext, r)) {
					return fmt.Sprintf("the character %q in the local part", r)
				}
			}
		}
	}
	if len(local) > 64 {
		return "a local part longer than 64 characters"
	}
	if strings.Contains(domain, "@") {
		return "more than one @"
	}
	if why := dnsSyntax(domain, false); why != "" {
		return "a domain with " + why
	}
	return ""
}

// uriSyntax checks a uniformResourceIdentifier: an absolute URI (RFC 3986
// section 4.3) with a scheme and a scheme-specific part, whose host, when
// it has one, is a DNS name or an IP literal (RFC 5280 section 4.2.1.6).
func uriSyntax(s string) string {
	for _, r := range s {
		if r <= 0x20 || r > 0x7e {
			return fmt.Sprintf("the character %q", r)
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return "not a URI"
	}
	if u.Scheme == "" {
		return "a relative URI (no scheme)"
	}
	if u.Opaque == "" && u.Host == "" && u.Path == "" {
		return "no scheme-specific part"
	}
	if h := u.Hostname(); h != "" && net.ParseIP(h) == nil {
		if why := dnsSyntax(h, false); why != "" {
			return "a host with " + why
		}
	}
	return ""
}

// sanSyntax checks one name of a subjectAltName.
func sanSyntax(g generalName) string {
	var why string
	switch g.tag {
	case gnDNS:
		why = dnsSyntax(string(g.value), true)
	case gnRFC822:
		why = mailboxSyntax(string(g.value))
	case gnURI:
		why = uriSyntax(string(g.value))
	case gnIP:
		if len(g.value) != 4 && len(g.value) != 16 {
			why = fmt.Sprintf("an address of %d octets", len(g.value))
		}
	default:
		return ""
	}
	if why == "" {
		return ""
	}
	if g.tag == gnIP {
		return fmt.Sprintf("subjectAltName iPAddress %x is not valid: %s", g.value, why)
	}
	return fmt.Sprintf("subjectAltName %s %q is not valid: %s", gnTypeNames[g.tag], g.value, why)
}

// constraintSyntax checks the base of one subtree of a name constraint: a
// DNS name, possibly with a leading period, for dNSName and URI
// constraints (a host or a domain); a mailbox, a host or a domain for
// rfc822Name (section 4.2.1.10). An empty dNSName matches every name.
func constraintSyntax(g generalName) string {
	v := string(g.value)
	var why string
	switch g.tag {
	case gnDNS:
		if v != "" && v != "." {
			why = dnsSyntax(strings.TrimPrefix(v, "."), false)
		}
	case gnURI:
		why = dnsSyntax(strings.TrimPrefix(v, "."), false)
	case gnRFC822:
		if strings.Contains(v, "@") {
			why = mailboxSyntax(v)
		} else {
			why = dnsSyntax(strings.TrimPrefix(v, "."), false)
		}
	default:
		return ""
	}
	if why == "" {
		return ""
	}
	return fmt.Sprintf("%s name constraint %q is not valid: %s", gnTypeNames[g.tag], g.value, why)
}
