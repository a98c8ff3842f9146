package certvalidation

import (
	"strings"
	"testing"
)

// TestNameSyntax: one case per rule of the name syntax (RFC 5280 section
// 4.2.1.6 and 4.2.1.10), each way.
func TestNameSyntax(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name  string
		check func(string) string
		in    string
		want  string // "" valid, otherwise a word of the reason
	}{
		{"dns: plain", dns, "www.example.gouv.fr", ""},
		{"dns: one label", dns, "localhost", ""},
		{"dns: digits and hyphens", dns, "a-1.0-b.example", ""},
		{"dns: underscore", dns, "_acme.example.com", ""},
		{"dns: wildcard", dns, "*.example.com", ""},
		{"dns: 63-character label", dns, long(63) + ".example", ""},
		{"dns: empty", dns, "", "empty DNS name"},
		{"dns: leading period", dns, ".example.com", "empty label"},
		{"dns: trailing period", dns, "example.com.", "empty label"},
		{"dns: doubled period", dns, "a..example.com", "empty label"},
		{"dns: 64-character label", dns, long(64) + ".example", "longer than 63"},
		{"dns: 254 characters", dns, strings.Repeat(long(62)+".", 4) + "ab", "longer than 253"},
		{"dns: leading hyphen", dns, "-a.example.com", "hyphen"},
		{"dns: trailing hyphen", dns, "a-.example.com", "hyphen"},
		{"dns: space", dns, "a b.example.com", "character"},
		{"dns: U-label", dns, "bücher.example", "A-labels"},
		{"dns: bare wildcard", dns, "*", "wildcard"},
		{"dns: wildcard not leftmost", dns, "a.*.example.com", "wildcard"},
		{"dns: partial wildcard", dns, "a*.example.com", "wildcard"},
		{"dns: wildcard not allowed", dnsNoWildcard, "*.example.com", "wildcard"},

		{"mailbox: plain", mailboxSyntax, "agent@example.gouv.fr", ""},
		{"mailbox: dots and atext", mailboxSyntax, "first.last+tag!x@example.gouv.fr", ""},
		{"mailbox: quoted local part", mailboxSyntax, `"a@b c"@example.gouv.fr`, ""},
		{"mailbox: quoted with escape", mailboxSyntax, `"a\"@"@example.gouv.fr`, ""},
		{"mailbox: no @", mailboxSyntax, "agent.example.gouv.fr", "no @"},
		{"mailbox: two @", mailboxSyntax, "a@evil.example@example.gouv.fr", "more than one @"},
		{"mailbox: empty local part", mailboxSyntax, "@example.gouv.fr", "empty local part"},
		{"mailbox: leading dot", mailboxSyntax, ".a@example.gouv.fr", "empty dot-atom"},
		{"mailbox: doubled dot", mailboxSyntax, "a..b@example.gouv.fr", "empty dot-atom"},
		{"mailbox: space", mailboxSyntax, "a b@example.gouv.fr", "local part"},
		{"mailbox: unterminated quote", mailboxSyntax, `"a@example.gouv.fr`, "quoted"},
		{"mailbox: quote not followed by @", mailboxSyntax, `"a"b@example.gouv.fr`, "quoted"},
		{"mailbox: 65-character local part", mailboxSyntax, long(65) + "@example.gouv.fr", "longer than 64"},
		{"mailbox: non-ASCII", mailboxSyntax, "agent@bücher.example", "ASCII"},
		{"mailbox: control character", mailboxSyntax, "agent\x00@example.gouv.fr", "ASCII"},
		{"mailbox: empty domain", mailboxSyntax, "agent@", "domain"},
		{"mailbox: domain with leading period", mailboxSyntax, "agent@.example.gouv.fr", "domain"},
		{"mailbox: wildcard domain", mailboxSyntax, "agent@*.example.gouv.fr", "domain"},

		{"uri: https", uriSyntax, "https://www.example.gouv.fr/a?b#c", ""},
		{"uri: urn", uriSyntax, "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", ""},
		{"uri: IP literal", uriSyntax, "https://[2001:db8::1]:8443/", ""},
		{"uri: file, empty host", uriSyntax, "file:///etc/hosts", ""},
		{"uri: relative", uriSyntax, "relative/path", "relative"},
		{"uri: no scheme-specific part", uriSyntax, "https:", "scheme-specific"},
		{"uri: space", uriSyntax, "https://a b/", "character"},
		{"uri: not a URI", uriSyntax, "https://[::1/", "not a URI"},
		{"uri: wildcard host", uriSyntax, "https://*.example.gouv.fr/", "host"},
		{"uri: empty label in host", uriSyntax, "https://a..example.gouv.fr/", "host"},

		{"constraint dns: domain", dnsConstraint, "example.gouv.fr", ""},
		{"constraint dns: leading period", dnsConstraint, ".example.gouv.fr", ""},
		{"constraint dns: empty (every name)", dnsConstraint, "", ""},
		{"constraint dns: wildcard", dnsConstraint, "*.example.gouv.fr", "wildcard"},
		{"constraint dns: doubled period", dnsConstraint, "..example.gouv.fr", "empty label"},
		{"constraint uri: domain", uriConstraint, ".example.gouv.fr", ""},
		{"constraint uri: empty", uriConstraint, "", "empty"},
		{"constraint email: mailbox", emailConstraint, "agent@example.gouv.fr", ""},
		{"constraint email: host", emailConstraint, "example.gouv.fr", ""},
		{"constraint email: domain", emailConstraint, ".example.gouv.fr", ""},
		{"constraint email: two @", emailConstraint, "a@b@example.gouv.fr", "more than one @"},
		{"constraint email: bad domain", emailConstraint, ".-example.gouv.fr", "hyphen"},
		{"constraint directoryName: not checked here", func(string) string { return constraintSyntax(generalName{tag: gnDirectory}) }, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.check(tc.in)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := sanSyntax(generalName{tag: gnIP, value: []byte{1, 2, 3}}); !strings.Contains(got, "3 octets") {
		t.Errorf("3-octet IP address: %q", got)
	}
	if got := sanSyntax(generalName{tag: gnIP, value: make([]byte, 16)}); got != "" {
		t.Errorf("IPv6 address: %q", got)
	}
	if got := sanSyntax(generalName{tag: gnRegID, value: []byte{1}}); got != "" {
		t.Errorf("registeredID: %q", got)
	}
}

func dns(s string) string           { return dnsSyntax(s, true) }
func dnsNoWildcard(s string) string { return dnsSyntax(s, false) }
func dnsConstraint(s string) string {
	return constraintSyntax(generalName{tag: gnDNS, value: []byte(s)})
}
func uriConstraint(s string) string {
	return constraintSyntax(generalName{tag: gnURI, value: []byte(s)})
}
func emailConstraint(s string) string {
	return constraintSyntax(generalName{tag: gnRFC822, value: []byte(s)})
}

// TestWildcardConstraints: a wildcard DNS name against DNS constraints,
// as the set of names it stands for.
func TestWildcardConstraints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		parent, constraint string
		within, mayMatch   bool
	}{
		{"example.com", "example.com", true, true},
		{"example.com", ".example.com", true, true},
		{"example.com", "com", true, true},
		{"example.com", "", true, true},
		{"example.com", "bar.example.com", false, true},
		{"Example.COM", "BAR.example.com.", false, true},
		{"example.com", ".bar.example.com", false, false},
		{"example.com", "a.b.example.com", false, false},
		{"example.com", "other.com", false, false},
		{"example.com", "xexample.com", false, false},
		{"sub.example.com", "example.com", true, true},
	} {
		if got := wildcardWithin(tc.parent, tc.constraint); got != tc.within {
			t.Errorf("*.%s within %q: %v", tc.parent, tc.constraint, got)
		}
		if got := wildcardMayMatch(tc.parent, tc.constraint); got != tc.mayMatch {
			t.Errorf("*.%s may match %q: %v", tc.parent, tc.constraint, got)
		}
	}
}

// FuzzNameSyntax: the syntax checks never panic, and what they accept has
// the shape they promise.
func FuzzNameSyntax(f *testing.F) {
	for _, s := range []string{"www.example.gouv.fr", "*.example.com", ".example.com", "a@b", `"a@b"@c.example`, "a@b@c", "https://h.example/p", "urn:x:y", "relative", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if dnsSyntax(s, true) == "" {
			if s == "" || len(s) > 253 || strings.Contains(s, "..") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s[1:], "*") {
				t.Fatalf("dNSName %q accepted", s)
			}
		}
		if mailboxSyntax(s) == "" {
			at := strings.LastIndexByte(s, '@')
			if at <= 0 || dnsSyntax(s[at+1:], false) != "" {
				t.Fatalf("rfc822Name %q accepted", s)
			}
		}
		if uriSyntax(s) == "" && !strings.Contains(s, ":") {
			t.Fatalf("URI %q accepted without a scheme", s)
		}
		for _, tag := range []int{gnDNS, gnRFC822, gnURI} {
			_ = constraintSyntax(generalName{tag: tag, value: []byte(s)})
			_ = uncomparableName(generalName{tag: tag, value: []byte(s)})
		}
	})
}
