package certtest

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

// The cases of issue 9's certificate classes: trust anchors used as CAs
// and their constraints, wildcards and malformed names against name
// constraints, and the issuance rules of RFC 5280 (certvalidation's
// ProfileCheck). Each refusal has a case that passes beside it.

var (
	oidBasicConstraints  = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidSubjectAltName    = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidPolicyConstraints = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidEmailAddress      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// BasicConstraints is a basicConstraints extension (cA, no path length).
func BasicConstraints(t testing.TB, critical, isCA bool) pkix.Extension {
	t.Helper()
	v := struct {
		IsCA bool `asn1:"optional"`
	}{isCA}
	return pkix.Extension{Id: oidBasicConstraints, Critical: critical, Value: mustMarshal(t, v)}
}

// DNSNameSAN is a subjectAltName extension of dNSNames.
func DNSNameSAN(t testing.TB, critical bool, names ...string) pkix.Extension {
	t.Helper()
	var raw []asn1.RawValue
	for _, n := range names {
		raw = append(raw, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(n)})
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: critical, Value: mustMarshal(t, raw)}
}

// IssueWithoutAKI is Issue, with no authority key identifier in the
// certificate (crypto/x509 copies the issuer's subject key identifier).
func (ca *Issued) IssueWithoutAKI(t testing.TB, tmpl *x509.Certificate, key *Issued) *Issued {
	t.Helper()
	parent := *ca.Cert
	parent.SubjectKeyId = nil
	if key == nil {
		key = &Issued{Key: Key(t)}
	}
	return &Issued{Cert: create(t, tmpl, &parent, key.Key.Public(), ca.Key), Key: key.Key}
}

// withSPKI returns c with its subjectPublicKeyInfo replaced by spki (DER)
// and its signature left as it was.
func withSPKI(t testing.TB, c *x509.Certificate, spki []byte) *x509.Certificate {
	t.Helper()
	var cert struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.RawValue
	}
	if _, err := asn1.Unmarshal(c.Raw, &cert); err != nil {
		t.Fatal(err)
	}
	var tbs []asn1.RawValue
	if _, err := asn1.Unmarshal(cert.TBS.FullBytes, &tbs); err != nil {
		t.Fatal(err)
	}
	tbs[6] = asn1.RawValue{FullBytes: spki} // version, serial, signature, issuer, validity, subject, spki
	cert.TBS = asn1.RawValue{FullBytes: mustMarshal(t, tbs)}
	out, err := x509.ParseCertificate(mustMarshal(t, cert))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ipNet(cidr string) *net.IPNet {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return n
}

func serverLeaf(name string, dns ...string) *x509.Certificate {
	return mod(LeafTemplate(name), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.DNSNames = dns
	})
}

// anchorCases: the trust anchor's certificate is checked as a CA's when it
// issues the next certificate, and its constraints apply below it.
func anchorCases(t testing.TB) []Case {
	t.Helper()
	excluding := Root(t, mod(CATemplate("Excluding Root"), func(c *x509.Certificate) {
		c.ExcludedIPRanges = []*net.IPNet{ipNet("192.0.2.0/24")}
		c.ExcludedDNSDomains = []string{"secret.example.gouv.fr"}
		c.PermittedDNSDomainsCritical = true
	}), nil)
	excludingInter := excluding.Issue(t, CATemplate("CA under Excluding Root"), nil)
	ipInside := excludingInter.Issue(t, mod(LeafTemplate("in 192.0.2.0/24"), func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(192, 0, 2, 1)}
	}), nil)
	ipOutside := excludingInter.Issue(t, mod(LeafTemplate("in 198.51.100.0/24"), func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(198, 51, 100, 1)}
	}), nil)
	dnsInside := excluding.Issue(t, serverLeaf("db.secret", "db.secret.example.gouv.fr"), nil)
	dnsOutside := excluding.Issue(t, serverLeaf("www", "www.example.gouv.fr"), nil)

	permitting := Root(t, mod(CATemplate("Permitting Root"), func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"example.gouv.fr"}
		c.PermittedDNSDomainsCritical = true
	}), nil)
	permitted := permitting.Issue(t, serverLeaf("ok", "ok.example.gouv.fr"), nil)
	notPermitted := permitting.Issue(t, serverLeaf("evil", "www.evil.example"), nil)

	pathLen0 := Root(t, mod(CATemplate("PathLen 0 Root"), func(c *x509.Certificate) { c.MaxPathLenZero = true }), nil)
	pathLen0Inter := pathLen0.Issue(t, CATemplate("CA under PathLen 0 Root"), nil)
	underPathLen0Inter := pathLen0Inter.Issue(t, LeafTemplate("under a CA under pathlen 0 root"), nil)
	underPathLen0 := pathLen0.Issue(t, LeafTemplate("under pathlen 0 root"), nil)

	serverOnly := Root(t, mod(CATemplate("Server-only Root"), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}), nil)
	underServerOnly := serverOnly.Issue(t, LeafTemplate("client under server-only root"), nil)

	noBC := Root(t, mod(CATemplate("Root without basic constraints"), func(c *x509.Certificate) {
		c.BasicConstraintsValid, c.IsCA = false, false
	}), nil)
	underNoBC := noBC.Issue(t, LeafTemplate("under a root without basic constraints"), nil)
	caFalse := Root(t, mod(CATemplate("Root with cA false"), func(c *x509.Certificate) { c.IsCA = false }), nil)
	underCAFalse := caFalse.Issue(t, LeafTemplate("under a root with cA false"), nil)
	noCertSign := Root(t, mod(CATemplate("Root without keyCertSign"), func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	}), nil)
	underNoCertSign := noCertSign.Issue(t, LeafTemplate("under a root without keyCertSign"), nil)
	critical := Root(t, mod(CATemplate("Root with an unknown critical extension"), func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Critical: true, Value: []byte{5, 0}}}
	}), nil)
	underCritical := critical.Issue(t, LeafTemplate("under a root with an unknown critical extension"), nil)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak := Root(t, CATemplate("RSA 1024 Root"), rsa1024)
	underWeak := weak.Issue(t, LeafTemplate("under an RSA 1024 root"), nil)
	// A root whose key cannot sign (X25519, which crypto/x509 cannot put
	// in a certificate: swapped into the DER of an ECDSA root, whose
	// self-signature path validation never looks at).
	ecRoot := Root(t, CATemplate("X25519 Root"), nil)
	underX := ecRoot.Issue(t, LeafTemplate("under an X25519 root"), nil)
	xkey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xRoot := withSPKI(t, ecRoot.Cert, mustMarshal(t, struct {
		Algorithm pkix.AlgorithmIdentifier
		Key       asn1.BitString
	}{pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 101, 110}}, asn1.BitString{Bytes: xkey.PublicKey().Bytes(), BitLength: 256}}))

	badConstraint := Root(t, mod(CATemplate("Root permitting *.example.gouv.fr"), func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"*.example.gouv.fr"}
	}), nil)
	underBadConstraint := badConstraint.Issue(t, serverLeaf("www", "www.example.gouv.fr"), nil)

	pinned := Root(t, LeafTemplate("pinned self-signed"), nil)
	// A root and its re-issue (same name and key, another validity): the
	// first, self-signed, needs no authority key identifier below the
	// second (RFC 5280 section 4.2.1.1).
	reissued := Root(t, CATemplate("Re-issued Root"), nil)
	original := Root(t, mod(CATemplate("Re-issued Root"), func(c *x509.Certificate) { c.NotAfter = c.NotAfter.Add(-time.Hour) }), reissued.Key)

	return []Case{
		{Name: "trust anchor name constraints: excluded IP address", Leaf: ipInside.Cert, Chain: []*x509.Certificate{excludingInter.Cert}, Roots: []*x509.Certificate{excluding.Cert}, Want: "name_constraints"},
		{Name: "trust anchor name constraints: IP address outside the excluded range", Leaf: ipOutside.Cert, Chain: []*x509.Certificate{excludingInter.Cert}, Roots: []*x509.Certificate{excluding.Cert}},
		{Name: "trust anchor name constraints: excluded DNS subtree", Leaf: dnsInside.Cert, Roots: []*x509.Certificate{excluding.Cert}, Purpose: "serverAuth", Want: "name_constraints"},
		{Name: "trust anchor name constraints: DNS name outside the excluded subtree", Leaf: dnsOutside.Cert, Roots: []*x509.Certificate{excluding.Cert}, Purpose: "serverAuth", Host: "www.example.gouv.fr"},
		{Name: "trust anchor name constraints: permitted subtree", Leaf: permitted.Cert, Roots: []*x509.Certificate{permitting.Cert}, Purpose: "serverAuth"},
		{Name: "trust anchor name constraints: outside the permitted subtree", Leaf: notPermitted.Cert, Roots: []*x509.Certificate{permitting.Cert}, Purpose: "serverAuth", Want: "name_constraints"},
		{Name: "trust anchor path length 0: an intermediate CA below it", Leaf: underPathLen0Inter.Cert, Chain: []*x509.Certificate{pathLen0Inter.Cert}, Roots: []*x509.Certificate{pathLen0.Cert}, Want: "path_length"},
		{Name: "trust anchor path length 0: the end certificate right below it", Leaf: underPathLen0.Cert, Roots: []*x509.Certificate{pathLen0.Cert}},
		{Name: "trust anchor extended key usage excludes the purpose", Leaf: underServerOnly.Cert, Roots: []*x509.Certificate{serverOnly.Cert}, Purpose: "clientAuth", Want: "ext_key_usage"},
		{Name: "trust anchor extended key usage, purpose any", Leaf: underServerOnly.Cert, Roots: []*x509.Certificate{serverOnly.Cert}},
		{Name: "trust anchor without basic constraints", Leaf: underNoBC.Cert, Roots: []*x509.Certificate{noBC.Cert}, Want: "not_ca"},
		{Name: "trust anchor with cA false", Leaf: underCAFalse.Cert, Roots: []*x509.Certificate{caFalse.Cert}, Want: "not_ca"},
		{Name: "trust anchor without keyCertSign", Leaf: underNoCertSign.Cert, Roots: []*x509.Certificate{noCertSign.Cert}, Want: "key_usage"},
		{Name: "trust anchor with an unknown critical extension", Leaf: underCritical.Cert, Roots: []*x509.Certificate{critical.Cert}, Want: "unknown_critical_extension"},
		{Name: "trust anchor with an RSA 1024 key", Leaf: underWeak.Cert, Roots: []*x509.Certificate{weak.Cert}, Want: "weak_algorithm"},
		{Name: "trust anchor with an X25519 key", Leaf: underX.Cert, Roots: []*x509.Certificate{xRoot}, Want: "unsupported_algorithm"},
		{Name: "trust anchor with a malformed name constraint", Leaf: underBadConstraint.Cert, Roots: []*x509.Certificate{badConstraint.Cert}, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "self-signed end-entity certificate trusted as itself", Leaf: pinned.Cert, Roots: []*x509.Certificate{pinned.Cert}},
		{Name: "self-signed root under its re-issue, without authority key identifier", Leaf: original.Cert, Roots: []*x509.Certificate{reissued.Cert}},
	}
}

// nameCases: wildcard DNS names are compared with name constraints as the
// set of names they stand for, and names that are not names are refused.
func nameCases(t testing.TB) []Case {
	t.Helper()
	root := Root(t, CATemplate("Names Root"), nil)
	roots := []*x509.Certificate{root.Cert}
	wildcard := func(ca *Issued) *Issued { return ca.Issue(t, serverLeaf("wildcard", "*.example.com"), nil) }
	ca := func(name string, f func(*x509.Certificate)) *Issued {
		return root.Issue(t, mod(CATemplate(name), f), nil)
	}
	exclBar := ca("Excludes bar.example.com", func(c *x509.Certificate) { c.ExcludedDNSDomains = []string{"bar.example.com"} })
	exclDeep := ca("Excludes a.b.example.com", func(c *x509.Certificate) { c.ExcludedDNSDomains = []string{"a.b.example.com"} })
	exclWhole := ca("Excludes example.com", func(c *x509.Certificate) { c.ExcludedDNSDomains = []string{"example.com"} })
	exclDotBar := ca("Excludes .bar.example.com", func(c *x509.Certificate) { c.ExcludedDNSDomains = []string{".bar.example.com"} })
	permWhole := ca("Permits example.com", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"example.com"} })
	permDot := ca("Permits .example.com", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{".example.com"} })
	permFoo := ca("Permits foo.example.com", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"foo.example.com"} })
	plainCA := ca("Unconstrained CA", func(*x509.Certificate) {})

	gouv := ca("Permits example.gouv.fr", func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"example.gouv.fr"}
		c.PermittedEmailAddresses = []string{"example.gouv.fr"}
	})
	withDNS := func(issuer *Issued, dns string) *Issued { return issuer.Issue(t, serverLeaf("dns", dns), nil) }
	withMail := func(issuer *Issued, mail string) *Issued {
		return issuer.Issue(t, mod(LeafTemplate("mail"), func(c *x509.Certificate) { c.EmailAddresses = []string{mail} }), nil)
	}
	withURI := func(issuer *Issued, uri string) *Issued {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		return issuer.Issue(t, mod(LeafTemplate("uri"), func(c *x509.Certificate) { c.URIs = []*url.URL{u} }), nil)
	}
	subjectMail := gouv.Issue(t, mod(LeafTemplate("subject mail"), func(c *x509.Certificate) {
		c.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: "agent@evil.example@example.gouv.fr"}}
	}), nil)
	subjectMailOK := gouv.Issue(t, mod(LeafTemplate("subject mail ok"), func(c *x509.Certificate) {
		c.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: "agent@example.gouv.fr"}}
	}), nil)
	uriExcl := ca("Excludes URIs in .example.gouv.fr", func(c *x509.Certificate) { c.ExcludedURIDomains = []string{".example.gouv.fr"} })
	badConstraint := ca("Permits *.example.gouv.fr", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"*.example.gouv.fr"} })

	in := func(c *Issued) []*x509.Certificate { return []*x509.Certificate{c.Cert} }
	return []Case{
		{Name: "wildcard: *.example.com under an exclusion of bar.example.com", Leaf: wildcard(exclBar).Cert, Chain: in(exclBar), Roots: roots, Want: "name_constraints"},
		{Name: "wildcard: --host bar.example.com under an exclusion of bar.example.com", Leaf: wildcard(exclBar).Cert, Chain: in(exclBar), Roots: roots, Purpose: "serverAuth", Host: "bar.example.com", Want: "name_constraints"},
		{Name: "wildcard: *.example.com under an exclusion of example.com", Leaf: wildcard(exclWhole).Cert, Chain: in(exclWhole), Roots: roots, Want: "name_constraints"},
		{Name: "wildcard: *.example.com under an exclusion of a.b.example.com", Leaf: wildcard(exclDeep).Cert, Chain: in(exclDeep), Roots: roots, Purpose: "serverAuth", Host: "bar.example.com"},
		{Name: "wildcard: *.example.com under an exclusion of .bar.example.com", Leaf: wildcard(exclDotBar).Cert, Chain: in(exclDotBar), Roots: roots, Purpose: "serverAuth", Host: "bar.example.com"},
		{Name: "wildcard: *.example.com inside a permitted example.com", Leaf: wildcard(permWhole).Cert, Chain: in(permWhole), Roots: roots, Purpose: "serverAuth", Host: "foo.example.com"},
		{Name: "wildcard: *.example.com inside a permitted .example.com", Leaf: wildcard(permDot).Cert, Chain: in(permDot), Roots: roots, Purpose: "serverAuth", Host: "foo.example.com"},
		{Name: "wildcard: *.example.com wider than a permitted foo.example.com", Leaf: wildcard(permFoo).Cert, Chain: in(permFoo), Roots: roots, Want: "name_constraints"},
		{Name: "wildcard: --host bar.example.com, no constraints", Leaf: wildcard(plainCA).Cert, Chain: in(plainCA), Roots: roots, Purpose: "serverAuth", Host: "bar.example.com"},
		{Name: "wildcard: --host a.b.example.com is two labels down", Leaf: wildcard(plainCA).Cert, Chain: in(plainCA), Roots: roots, Purpose: "serverAuth", Host: "a.b.example.com", Want: "name_mismatch"},

		{Name: "malformed name: dNSName with a leading period inside a permitted subtree", Leaf: withDNS(gouv, ".example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: dNSName with an empty label", Leaf: withDNS(gouv, "a..example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: dNSName with a wildcard inside", Leaf: withDNS(gouv, "a.*.example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: dNSName label starting with a hyphen", Leaf: withDNS(gouv, "-a.example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: dNSName with a leading period, no constraints", Leaf: withDNS(plainCA, ".example.com").Cert, Chain: in(plainCA), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: dNSName with a space, no constraints", Leaf: withDNS(plainCA, "www example.com").Cert, Chain: in(plainCA), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "well-formed name: dNSName with an underscore label", Leaf: withDNS(gouv, "_service.example.gouv.fr").Cert, Chain: in(gouv), Roots: roots},
		{Name: "malformed name: rfc822Name with two @ inside a permitted subtree", Leaf: withMail(gouv, "agent@evil.example@example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: rfc822Name without @", Leaf: withMail(plainCA, "agent.example.com").Cert, Chain: in(plainCA), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: rfc822Name with an empty local part", Leaf: withMail(gouv, "@example.gouv.fr").Cert, Chain: in(gouv), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "well-formed name: rfc822Name with a quoted local part holding @", Leaf: withMail(gouv, `"agent@home"@example.gouv.fr`).Cert, Chain: in(gouv), Roots: roots},
		{Name: "malformed name: relative URI", Leaf: withURI(plainCA, "relative/path").Cert, Chain: in(plainCA), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "malformed name: URI with a wildcard host", Leaf: withURI(plainCA, "https://*.example.com/").Cert, Chain: in(plainCA), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
		{Name: "URI without a host under a URI exclusion", Leaf: withURI(uriExcl, "urn:example:agent").Cert, Chain: in(uriExcl), Roots: roots, Want: "name_constraints"},
		{Name: "URI with an IP address under a URI exclusion", Leaf: withURI(uriExcl, "https://192.0.2.1/agent").Cert, Chain: in(uriExcl), Roots: roots, Want: "name_constraints"},
		{Name: "URI outside a URI exclusion", Leaf: withURI(uriExcl, "https://www.example.org/agent").Cert, Chain: in(uriExcl), Roots: roots},
		{Name: "URI inside a URI exclusion", Leaf: withURI(uriExcl, "https://www.example.gouv.fr/agent").Cert, Chain: in(uriExcl), Roots: roots, Want: "name_constraints"},
		{Name: "subject emailAddress with two @ under an rfc822Name constraint", Leaf: subjectMail.Cert, Chain: in(gouv), Roots: roots, Want: "name_constraints"},
		{Name: "subject emailAddress inside an rfc822Name constraint", Leaf: subjectMailOK.Cert, Chain: in(gouv), Roots: roots},
		{Name: "malformed name constraint: *.example.gouv.fr", Leaf: withDNS(badConstraint, "www.example.gouv.fr").Cert, Chain: in(badConstraint), Roots: roots, Want: "malformed_certificate", Rule: "name_syntax"},
	}
}

// profileCases: the issuance rules of RFC 5280 section 4 (certvalidation's
// ProfileCheck), one broken per case; Rule names it.
func profileCases(t testing.TB) []Case {
	t.Helper()
	root := Root(t, CATemplate("Profile Root"), nil)
	roots := []*x509.Certificate{root.Cert}
	inter := root.Issue(t, CATemplate("Profile CA"), nil)
	chain := []*x509.Certificate{inter.Cert}
	leaf := func(name string, f func(*x509.Certificate)) *x509.Certificate {
		return inter.Issue(t, mod(LeafTemplate(name), f), nil).Cert
	}
	caUnder := func(name string, f func(*x509.Certificate)) (ca, under *x509.Certificate) {
		c := root.Issue(t, mod(CATemplate(name), f), nil)
		return c.Cert, c.Issue(t, LeafTemplate("under "+name), nil).Cert
	}
	serial := func(n *big.Int) func(*x509.Certificate) {
		return func(c *x509.Certificate) { c.SerialNumber = n }
	}
	octets20 := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)) // 0x7fff...: 20 octets
	octets21 := new(big.Int).Lsh(big.NewInt(1), 159)                                  // 0x00 0x80 ...: 21 octets
	noAKI := inter.IssueWithoutAKI(t, LeafTemplate("no AKI"), nil).Cert
	noSKI, underNoSKI := caUnder("CA without SKI", func(c *x509.Certificate) {
		// crypto/x509 makes a subject key identifier for a CA template.
		c.IsCA, c.BasicConstraintsValid, c.SubjectKeyId = false, false, []byte{}
		c.ExtraExtensions = []pkix.Extension{BasicConstraints(t, true, true)}
	})
	bcNotCritical, underBCNotCritical := caUnder("CA with basic constraints not critical", func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{BasicConstraints(t, false, true)}
	})
	pc := func(critical bool, value []byte) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: oidPolicyConstraints, Critical: critical, Value: value}}
		}
	}
	requireExplicit5 := []byte{0x30, 0x03, 0x80, 0x01, 0x05}
	pcNotCritical, underPCNotCritical := caUnder("CA with policy constraints not critical", pc(false, requireExplicit5))
	pcCritical, underPCCritical := caUnder("CA with policy constraints critical", pc(true, requireExplicit5))
	pcEmpty, underPCEmpty := caUnder("CA with empty policy constraints", pc(true, []byte{0x30, 0x00}))
	emptySubject := func(f func(*x509.Certificate)) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.Subject = pkix.Name{}
			f(c)
		}
	}

	return []Case{
		{Name: "profile: serial number zero", Leaf: leaf("serial zero", serial(big.NewInt(0))), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "serial_number"},
		{Name: "profile: serial number of 21 octets", Leaf: leaf("serial 21 octets", serial(octets21)), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "serial_number"},
		{Name: "profile: serial number of 20 octets", Leaf: leaf("serial 20 octets", serial(octets20)), Chain: chain, Roots: roots},
		{Name: "profile: no authority key identifier", Leaf: noAKI, Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "authority_key_id"},
		{Name: "profile: CA without subject key identifier", Leaf: underNoSKI, Chain: []*x509.Certificate{noSKI}, Roots: roots, Want: "malformed_certificate", Rule: "subject_key_id"},
		{Name: "profile: CA basic constraints not critical", Leaf: underBCNotCritical, Chain: []*x509.Certificate{bcNotCritical}, Roots: roots, Want: "malformed_certificate", Rule: "basic_constraints_critical"},
		{Name: "profile: empty extended key usage", Leaf: leaf("empty EKU", func(c *x509.Certificate) {
			c.ExtKeyUsage = nil
			c.ExtraExtensions = []pkix.Extension{{Id: oidExtKeyUsage, Value: []byte{0x30, 0x00}}}
		}), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "empty_ext_key_usage"},
		{Name: "profile: end entity with keyCertSign", Leaf: leaf("EE keyCertSign", func(c *x509.Certificate) {
			c.KeyUsage |= x509.KeyUsageCertSign
		}), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "end_entity_cert_sign"},
		{Name: "profile: end entity with name constraints", Leaf: leaf("EE name constraints", func(c *x509.Certificate) {
			c.PermittedDNSDomains = []string{"example.gouv.fr"}
		}), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "end_entity_name_constraints"},
		{Name: "profile: empty subject, subjectAltName not critical", Leaf: leaf("", emptySubject(func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{DNSNameSAN(t, false, "agent.example.gouv.fr")}
		})), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "subject_alt_name_critical"},
		{Name: "profile: empty subject, no subjectAltName", Leaf: leaf("", emptySubject(func(*x509.Certificate) {})), Chain: chain, Roots: roots, Want: "malformed_certificate", Rule: "subject_alt_name_critical"},
		{Name: "profile: empty subject, subjectAltName critical", Leaf: leaf("", emptySubject(func(c *x509.Certificate) {
			c.DNSNames = []string{"agent.example.gouv.fr"}
		})), Chain: chain, Roots: roots},
		{Name: "profile: policy constraints not critical", Leaf: underPCNotCritical, Chain: []*x509.Certificate{pcNotCritical}, Roots: roots, Want: "malformed_certificate", Rule: "policy_constraints"},
		{Name: "profile: empty policy constraints", Leaf: underPCEmpty, Chain: []*x509.Certificate{pcEmpty}, Roots: roots, Want: "malformed_certificate", Rule: "policy_constraints"},
		{Name: "profile: policy constraints critical", Leaf: underPCCritical, Chain: []*x509.Certificate{pcCritical}, Roots: roots},
	}
}
