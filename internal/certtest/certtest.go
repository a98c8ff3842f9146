// Package certtest builds throw-away PKIs for tests of certificate
// validation, and the table of path-validation cases that package
// certvalidation and `pec validate` must both decide correctly.
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Issued is a certificate and its key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Key returns a new P-256 key.
func Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// CATemplate is a CA certificate valid from a week ago for 30 days.
func CATemplate(name string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"PEC test"}, Country: []string{"FR"}},
		NotBefore:             now.Add(-7 * 24 * time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// LeafTemplate is a client certificate (digitalSignature, clientAuth)
// valid from an hour ago for 10 days.
func LeafTemplate(name string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"PEC test"}, Country: []string{"FR"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// Root self-signs tmpl with a new key (or key, when not nil).
func Root(t testing.TB, tmpl *x509.Certificate, key crypto.Signer) *Issued {
	t.Helper()
	if key == nil {
		key = Key(t)
	}
	return &Issued{Cert: create(t, tmpl, tmpl, key.Public(), key), Key: key}
}

// Issue signs tmpl with ca's key, for key (a new P-256 key when nil).
func (ca *Issued) Issue(t testing.TB, tmpl *x509.Certificate, key crypto.Signer) *Issued {
	t.Helper()
	if key == nil {
		key = Key(t)
	}
	return &Issued{Cert: create(t, tmpl, ca.Cert, key.Public(), ca.Key), Key: key}
}

var serials = big.NewInt(0x1000)

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	c := *tmpl
	if c.SerialNumber == nil {
		s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
		if err != nil {
			t.Fatal(err)
		}
		c.SerialNumber = s.Add(s, serials)
	}
	if c.SubjectKeyId == nil {
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(spki)
		c.SubjectKeyId = sum[:20]
	}
	der, err := x509.CreateCertificate(rand.Reader, &c, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// PEM encodes certificates as consecutive PEM blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// WritePEM writes certificates to dir/name and returns the path.
func WritePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, PEM(certs...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteKey writes a key as PKCS#8 PEM to dir/name and returns the path.
func WriteKey(t testing.TB, dir, name string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Case is one path-validation case: a certificate, what comes with it,
// what it is validated for, and the expected outcome.
type Case struct {
	Name          string
	Leaf          *x509.Certificate
	Chain         []*x509.Certificate // sent with the leaf (after it in CERT.pem)
	Intermediates []*x509.Certificate // given apart (--intermediates)
	Roots         []*x509.Certificate
	Purpose       string    // "": any
	At            time.Time // zero: now
	Host, Email   string
	AllowWeak     bool // needs weak algorithms allowed, which the CLI never does
	// Want is "" for valid, otherwise the expected certvalidation.Reason.
	Want string
	// Rule is, for malformed_certificate, the profile rule the detail
	// starts with: a certvalidation.ProfileCheck, or name_syntax.
	Rule string
	// MinCandidates is the number of paths the report must show tried.
	MinCandidates int
}

func mod(tmpl *x509.Certificate, f func(*x509.Certificate)) *x509.Certificate {
	f(tmpl)
	return tmpl
}

// Table builds the test PKI and the cases. Revocation is not part of it
// (the cases carry no revocation data; validate them with policy none):
// the revocation tests run against OpenSSL's CRLs and OCSP responder.
func Table(t testing.TB) []Case {
	t.Helper()
	now := time.Now()
	root := Root(t, CATemplate("Test Root CA"), nil)
	inter := root.Issue(t, CATemplate("Test Issuing CA"), nil)
	leaf := inter.Issue(t, LeafTemplate("partner-a"), nil)
	roots := []*x509.Certificate{root.Cert}
	otherRoot := Root(t, CATemplate("Other Root CA"), nil)

	expiredLeaf := inter.Issue(t, mod(LeafTemplate("expired"), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}), nil)
	futureLeaf := inter.Issue(t, mod(LeafTemplate("future"), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(24*time.Hour), now.Add(48*time.Hour)
	}), nil)
	expiredInter := root.Issue(t, mod(CATemplate("Expired CA"), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	}), nil)
	underExpired := expiredInter.Issue(t, LeafTemplate("under expired CA"), nil)
	expiredRoot := Root(t, mod(CATemplate("Expired Root"), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	}), nil)
	underExpiredRoot := expiredRoot.Issue(t, LeafTemplate("under expired root"), nil)

	serverLeaf := inter.Issue(t, mod(LeafTemplate("api.example.gouv.fr"), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.DNSNames = []string{"api.example.gouv.fr"}
		c.IPAddresses = []net.IP{net.IPv4(192, 0, 2, 10)}
	}), nil)
	noDigitalSig := inter.Issue(t, mod(LeafTemplate("encipherment only"), func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageKeyEncipherment
	}), nil)
	serverOnlyCA := root.Issue(t, mod(CATemplate("Server-only CA"), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}), nil)
	underServerOnlyCA := serverOnlyCA.Issue(t, LeafTemplate("client under server-only CA"), nil)

	notCA := root.Issue(t, mod(CATemplate("Not a CA"), func(c *x509.Certificate) {
		c.IsCA = false
		c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	}), nil)
	underNotCA := notCA.Issue(t, LeafTemplate("under a non-CA"), nil)
	noCertSign := root.Issue(t, mod(CATemplate("No keyCertSign CA"), func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	}), nil)
	underNoCertSign := noCertSign.Issue(t, LeafTemplate("under no keyCertSign"), nil)

	pathLen0 := root.Issue(t, mod(CATemplate("PathLen 0 CA"), func(c *x509.Certificate) {
		c.MaxPathLenZero = true
	}), nil)
	subOfPathLen0 := pathLen0.Issue(t, CATemplate("Sub of PathLen 0"), nil)
	tooDeep := subOfPathLen0.Issue(t, LeafTemplate("too deep"), nil)
	underPathLen0 := pathLen0.Issue(t, LeafTemplate("under pathlen 0"), nil)

	ncCA := root.Issue(t, mod(CATemplate("Constrained CA"), func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"example.gouv.fr"}
		c.ExcludedDNSDomains = []string{"secret.example.gouv.fr"}
		c.PermittedEmailAddresses = []string{"example.gouv.fr"}
		c.PermittedIPRanges = []*net.IPNet{{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)}}
	}), nil)
	ncOK := ncCA.Issue(t, mod(LeafTemplate("ok.example.gouv.fr"), func(c *x509.Certificate) {
		c.DNSNames = []string{"ok.example.gouv.fr"}
		c.EmailAddresses = []string{"agent@example.gouv.fr"}
		c.IPAddresses = []net.IP{net.IPv4(192, 0, 2, 7)}
	}), nil)
	ncBadDNS := ncCA.Issue(t, mod(LeafTemplate("evil"), func(c *x509.Certificate) {
		c.DNSNames = []string{"www.evil.example"}
	}), nil)
	ncExcluded := ncCA.Issue(t, mod(LeafTemplate("secret"), func(c *x509.Certificate) {
		c.DNSNames = []string{"db.secret.example.gouv.fr"}
	}), nil)
	ncBadIP := ncCA.Issue(t, mod(LeafTemplate("bad ip"), func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(198, 51, 100, 1)}
	}), nil)
	ncBadEmail := ncCA.Issue(t, mod(LeafTemplate("bad mail"), func(c *x509.Certificate) {
		c.EmailAddresses = []string{"someone@evil.example"}
	}), nil)
	// A directoryName constraint, which crypto/x509 cannot make: added raw.
	dnCA := root.Issue(t, mod(CATemplate("DN Constrained CA"), func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{dirNameConstraint(t, pkix.Name{Country: []string{"FR"}, Organization: []string{"Ministry"}})}
	}), nil)
	dnOK := dnCA.Issue(t, mod(LeafTemplate("in ministry"), func(c *x509.Certificate) {
		c.Subject = pkix.Name{Country: []string{"FR"}, Organization: []string{"Ministry"}, CommonName: "agent"}
	}), nil)
	dnBad := dnCA.Issue(t, mod(LeafTemplate("outside ministry"), func(c *x509.Certificate) {
		c.Subject = pkix.Name{Country: []string{"FR"}, Organization: []string{"Elsewhere"}, CommonName: "agent"}
	}), nil)

	// Cross-certification: the new root is trusted through a certificate
	// the old root issued for the new root's name and key.
	oldRoot := Root(t, CATemplate("Old Root"), nil)
	newRoot := Root(t, CATemplate("New Root"), nil)
	cross := oldRoot.Issue(t, CATemplate("New Root"), newRoot.Key)
	expiredNewRoot := Root(t, mod(CATemplate("New Root"), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	}), newRoot.Key)
	newInter := newRoot.Issue(t, CATemplate("New Issuing CA"), nil)
	underNew := newInter.Issue(t, LeafTemplate("under new root"), nil)

	// Two CA certificates under one name (and one key identifier): the
	// first does not sign the leaf.
	twinKeyID := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	twinA := root.Issue(t, mod(CATemplate("Twin CA"), func(c *x509.Certificate) { c.SubjectKeyId = twinKeyID }), nil)
	twinB := root.Issue(t, mod(CATemplate("Twin CA"), func(c *x509.Certificate) { c.SubjectKeyId = twinKeyID }), nil)
	underTwinB := twinB.Issue(t, LeafTemplate("under twin B"), nil)

	// Signed by a key that is not the issuer's.
	impostor := Root(t, CATemplate("Test Issuing CA"), nil)
	forged := impostor.Issue(t, LeafTemplate("forged"), nil)

	// Weak algorithms.
	sha1Leaf := inter.Issue(t, mod(LeafTemplate("sha1"), func(c *x509.Certificate) {
		c.SignatureAlgorithm = x509.ECDSAWithSHA1
	}), nil)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakKeyLeaf := inter.Issue(t, LeafTemplate("rsa 1024"), rsa1024)

	unknownCritical := inter.Issue(t, mod(LeafTemplate("unknown critical"), func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}
	}), nil)
	unknownNonCritical := inter.Issue(t, mod(LeafTemplate("unknown non-critical"), func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{5, 0}}}
	}), nil)

	tsaCritical := inter.Issue(t, mod(LeafTemplate("TSA"), func(c *x509.Certificate) {
		c.ExtKeyUsage = nil
		c.ExtraExtensions = []pkix.Extension{ekuExtension(t, true, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8})}
	}), nil)
	tsaNonCritical := inter.Issue(t, mod(LeafTemplate("TSA non-critical"), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}
	}), nil)
	signer := inter.Issue(t, mod(LeafTemplate("document signer"), func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
		c.ExtKeyUsage = nil
		c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 36}}
	}), nil)
	mailUser := inter.Issue(t, mod(LeafTemplate("mail user"), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		c.EmailAddresses = []string{"agent@example.gouv.fr"}
	}), nil)

	// A loop: two CAs that certify each other, neither trusted.
	loopA := Root(t, CATemplate("Loop A"), nil)
	loopB := Root(t, CATemplate("Loop B"), nil)
	aByB := loopB.Issue(t, CATemplate("Loop A"), loopA.Key)
	bByA := loopA.Issue(t, CATemplate("Loop B"), loopB.Key)
	underLoop := loopA.Issue(t, LeafTemplate("under loop"), nil)

	chain := []*x509.Certificate{inter.Cert}
	cases := []Case{
		{Name: "valid chain of three", Leaf: leaf.Cert, Chain: chain, Roots: roots, Purpose: "clientAuth"},
		{Name: "valid, intermediate given apart", Leaf: leaf.Cert, Intermediates: chain, Roots: roots, Purpose: "clientAuth"},
		{Name: "valid for any purpose", Leaf: leaf.Cert, Chain: chain, Roots: roots},
		{Name: "valid at a past time", Leaf: expiredLeaf.Cert, Chain: chain, Roots: roots, At: now.Add(-36 * time.Hour)},
		{Name: "expired", Leaf: expiredLeaf.Cert, Chain: chain, Roots: roots, Want: "expired"},
		{Name: "not yet valid", Leaf: futureLeaf.Cert, Chain: chain, Roots: roots, Want: "not_yet_valid"},
		{Name: "valid at a future time", Leaf: futureLeaf.Cert, Chain: chain, Roots: roots, At: now.Add(36 * time.Hour)},
		{Name: "expired intermediate", Leaf: underExpired.Cert, Chain: []*x509.Certificate{expiredInter.Cert}, Roots: roots, Want: "expired"},
		{Name: "expired trust anchor", Leaf: underExpiredRoot.Cert, Roots: []*x509.Certificate{expiredRoot.Cert}, Want: "expired"},
		{Name: "missing intermediate", Leaf: leaf.Cert, Roots: roots, Want: "no_path"},
		{Name: "untrusted root", Leaf: leaf.Cert, Chain: chain, Roots: []*x509.Certificate{otherRoot.Cert}, Want: "no_path"},
		{Name: "the certificate is a trust anchor", Leaf: root.Cert, Roots: roots},
		{Name: "wrong EKU: server certificate as client", Leaf: serverLeaf.Cert, Chain: chain, Roots: roots, Purpose: "clientAuth", Want: "ext_key_usage"},
		{Name: "server certificate for its host", Leaf: serverLeaf.Cert, Chain: chain, Roots: roots, Purpose: "serverAuth", Host: "api.example.gouv.fr"},
		{Name: "server certificate for its IP address", Leaf: serverLeaf.Cert, Chain: chain, Roots: roots, Purpose: "serverAuth", Host: "192.0.2.10"},
		{Name: "server certificate for another host", Leaf: serverLeaf.Cert, Chain: chain, Roots: roots, Purpose: "serverAuth", Host: "other.example.gouv.fr", Want: "name_mismatch"},
		{Name: "wrong EKU: client certificate as server", Leaf: leaf.Cert, Chain: chain, Roots: roots, Purpose: "serverAuth", Want: "ext_key_usage"},
		{Name: "key usage without digitalSignature", Leaf: noDigitalSig.Cert, Chain: chain, Roots: roots, Purpose: "clientAuth", Want: "key_usage"},
		{Name: "intermediate EKU excludes the purpose", Leaf: underServerOnlyCA.Cert, Chain: []*x509.Certificate{serverOnlyCA.Cert}, Roots: roots, Purpose: "clientAuth", Want: "ext_key_usage"},
		{Name: "intermediate is not a CA", Leaf: underNotCA.Cert, Chain: []*x509.Certificate{notCA.Cert}, Roots: roots, Want: "not_ca"},
		{Name: "intermediate without keyCertSign", Leaf: underNoCertSign.Cert, Chain: []*x509.Certificate{noCertSign.Cert}, Roots: roots, Want: "key_usage"},
		{Name: "path length exceeded", Leaf: tooDeep.Cert, Chain: []*x509.Certificate{subOfPathLen0.Cert, pathLen0.Cert}, Roots: roots, Want: "path_length"},
		{Name: "path length zero respected", Leaf: underPathLen0.Cert, Chain: []*x509.Certificate{pathLen0.Cert}, Roots: roots},
		{Name: "name constraints respected", Leaf: ncOK.Cert, Chain: []*x509.Certificate{ncCA.Cert}, Roots: roots, Email: "agent@example.gouv.fr"},
		{Name: "name constraints: DNS name outside", Leaf: ncBadDNS.Cert, Chain: []*x509.Certificate{ncCA.Cert}, Roots: roots, Want: "name_constraints"},
		{Name: "name constraints: DNS name excluded", Leaf: ncExcluded.Cert, Chain: []*x509.Certificate{ncCA.Cert}, Roots: roots, Want: "name_constraints"},
		{Name: "name constraints: IP address outside", Leaf: ncBadIP.Cert, Chain: []*x509.Certificate{ncCA.Cert}, Roots: roots, Want: "name_constraints"},
		{Name: "name constraints: email outside", Leaf: ncBadEmail.Cert, Chain: []*x509.Certificate{ncCA.Cert}, Roots: roots, Want: "name_constraints"},
		{Name: "name constraints: directory name inside", Leaf: dnOK.Cert, Chain: []*x509.Certificate{dnCA.Cert}, Roots: roots},
		{Name: "name constraints: directory name outside", Leaf: dnBad.Cert, Chain: []*x509.Certificate{dnCA.Cert}, Roots: roots, Want: "name_constraints"},
		{Name: "cross-signed root: new root not trusted", Leaf: underNew.Cert, Chain: []*x509.Certificate{newInter.Cert, cross.Cert}, Roots: []*x509.Certificate{oldRoot.Cert}},
		{Name: "cross-signed root: both trusted", Leaf: underNew.Cert, Chain: []*x509.Certificate{newInter.Cert, cross.Cert}, Roots: []*x509.Certificate{newRoot.Cert, oldRoot.Cert}},
		{Name: "cross-signed root: trusted new root expired, old root path taken", Leaf: underNew.Cert, Chain: []*x509.Certificate{newInter.Cert, cross.Cert}, Roots: []*x509.Certificate{expiredNewRoot.Cert, oldRoot.Cert}, MinCandidates: 2},
		{Name: "cross-signed root: only the expired new root", Leaf: underNew.Cert, Chain: []*x509.Certificate{newInter.Cert}, Roots: []*x509.Certificate{expiredNewRoot.Cert}, Want: "expired"},
		{Name: "two issuers with one name, the second signed", Leaf: underTwinB.Cert, Chain: []*x509.Certificate{twinA.Cert, twinB.Cert}, Roots: roots, MinCandidates: 2},
		{Name: "two issuers with one name, neither signed", Leaf: forged.Cert, Chain: []*x509.Certificate{twinA.Cert, inter.Cert}, Roots: roots, Want: "bad_signature"},
		{Name: "bad signature", Leaf: forged.Cert, Chain: chain, Roots: roots, Want: "bad_signature"},
		{Name: "SHA-1 signature refused", Leaf: sha1Leaf.Cert, Chain: chain, Roots: roots, Want: "weak_algorithm"},
		{Name: "SHA-1 signature allowed by policy", Leaf: sha1Leaf.Cert, Chain: chain, Roots: roots, AllowWeak: true},
		{Name: "RSA 1024 key refused", Leaf: weakKeyLeaf.Cert, Chain: chain, Roots: roots, Want: "weak_algorithm"},
		{Name: "unknown critical extension", Leaf: unknownCritical.Cert, Chain: chain, Roots: roots, Want: "unknown_critical_extension"},
		{Name: "unknown non-critical extension", Leaf: unknownNonCritical.Cert, Chain: chain, Roots: roots},
		{Name: "time-stamping certificate", Leaf: tsaCritical.Cert, Chain: chain, Roots: roots, Purpose: "timeStamping"},
		{Name: "time-stamping EKU not critical", Leaf: tsaNonCritical.Cert, Chain: chain, Roots: roots, Purpose: "timeStamping", Want: "ext_key_usage"},
		{Name: "client certificate as time-stamping", Leaf: leaf.Cert, Chain: chain, Roots: roots, Purpose: "timeStamping", Want: "ext_key_usage"},
		{Name: "document signing certificate", Leaf: signer.Cert, Chain: chain, Roots: roots, Purpose: "documentSigning"},
		{Name: "client certificate as document signing", Leaf: leaf.Cert, Chain: chain, Roots: roots, Purpose: "documentSigning", Want: "ext_key_usage"},
		{Name: "S/MIME certificate for its address", Leaf: mailUser.Cert, Chain: chain, Roots: roots, Purpose: "emailProtection", Email: "agent@example.gouv.fr"},
		{Name: "S/MIME certificate for another address", Leaf: mailUser.Cert, Chain: chain, Roots: roots, Purpose: "emailProtection", Email: "other@example.gouv.fr", Want: "name_mismatch"},
		{Name: "certification loop without anchor", Leaf: underLoop.Cert, Chain: []*x509.Certificate{aByB.Cert, bByA.Cert}, Roots: roots, Want: "no_path"},
	}
	cases = append(cases, anchorCases(t)...)
	cases = append(cases, nameCases(t)...)
	return append(cases, profileCases(t)...)
}

// dirNameConstraint is a critical name constraints extension permitting
// one directory subtree.
func dirNameConstraint(t testing.TB, base pkix.Name) pkix.Extension {
	t.Helper()
	dn, err := asn1.Marshal(base.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	// GeneralSubtree ::= SEQUENCE { base [4] EXPLICIT Name }
	subtree, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true,
		Bytes: mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn})})
	if err != nil {
		t.Fatal(err)
	}
	// NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees }
	value := mustMarshal(t, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true,
		Bytes: mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: subtree})})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 30}, Critical: true, Value: value}
}

func ekuExtension(t testing.TB, critical bool, oids ...asn1.ObjectIdentifier) pkix.Extension {
	t.Helper()
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: critical, Value: mustMarshal(t, oids)}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
