package certvalidation_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
)

// rulesPKI is root → CA → leaves, for the revocation rule tables: the
// root's CRL covers the CA, the case under test gives the CA's CRL (or
// OCSP response) for the leaf.
type rulesPKI struct {
	root, ca       *certtest.Issued
	leaf, leafDP   *certtest.Issued // leafDP names a CRL distribution point
	rootCRL        []byte
	noCRLSign      *certtest.Issued // a CA whose key usage lacks cRLSign
	noCRLSignLeaf  *certtest.Issued
	impostor       *certtest.Issued // another CA under the CA's name
	twin           *certtest.Issued // another certificate of the CA's name, another key, under the root
	leafIndirect   *certtest.Issued // names the other CA as its CRL issuer
	leafTwoDPs     *certtest.Issued // a distribution point of the CA, and one of the other CA
	other          *certtest.Issued // another CA, another name
	validator      *certvalidation.Validator
	leafValidUntil time.Time
}

const rulesDP = "http://crl.example/ca.crl"

func newRulesPKI(t testing.TB, cfg certvalidation.Config) *rulesPKI {
	t.Helper()
	p := &rulesPKI{}
	p.root = certtest.Root(t, certtest.CATemplate("Rules Root"), nil)
	p.ca = p.root.Issue(t, certtest.CATemplate("Rules CA"), nil)
	p.leaf = p.ca.Issue(t, certtest.LeafTemplate("rules leaf"), nil)
	dp := certtest.LeafTemplate("rules leaf with a distribution point")
	dp.CRLDistributionPoints = []string{rulesDP}
	p.leafDP = p.ca.Issue(t, dp, nil)
	p.rootCRL = p.root.CRLOf(t, certtest.CRLSpec{Number: big.NewInt(1)})
	noSign := certtest.CATemplate("Rules CA without cRLSign")
	noSign.KeyUsage = x509.KeyUsageCertSign
	p.noCRLSign = p.root.Issue(t, noSign, nil)
	p.noCRLSignLeaf = p.noCRLSign.Issue(t, certtest.LeafTemplate("rules leaf 2"), nil)
	p.impostor = certtest.Root(t, certtest.CATemplate("Rules CA"), nil)
	p.other = p.root.Issue(t, certtest.CATemplate("Other CA"), nil)
	p.twin = p.root.Issue(t, certtest.CATemplate("Rules CA"), nil)
	ind := certtest.LeafTemplate("rules leaf with an indirect CRL")
	ind.ExtraExtensions = []pkix.Extension{certtest.CRLIssuerDistributionPoint(p.other.Cert.RawSubject)}
	p.leafIndirect = p.ca.Issue(t, ind, nil)
	two := certtest.LeafTemplate("rules leaf with two distribution points")
	two.ExtraExtensions = []pkix.Extension{certtest.CRLIssuerDistributionPoint(p.other.Cert.RawSubject, rulesDP)}
	p.leafTwoDPs = p.ca.Issue(t, two, nil)
	p.leafValidUntil = p.leaf.Cert.NotAfter
	v, err := certvalidation.New(cfg, certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{
		certvalidation.PurposeClientAuth: {p.root.Cert},
	}}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.validator = v
	return p
}

// revocationCase is one validation of a leaf with the revocation data
// given (offline, revocation required).
type revocationCase struct {
	name   string
	leaf   *certtest.Issued // nil: p.leaf
	crls   [][]byte         // the CA's CRLs; the root's is added
	ocsp   [][]byte
	inter  []*x509.Certificate // more intermediates
	at     time.Time           // zero: now
	want   certvalidation.Reason
	detail string // in the report's detail
}

func (p *rulesPKI) run(t *testing.T, cases []revocationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf := tc.leaf
			if leaf == nil {
				leaf = p.leaf
			}
			rep, err := p.validator.Validate(context.Background(), leaf.Cert, certvalidation.Options{
				Purpose:       certvalidation.PurposeClientAuth,
				Intermediates: append([]*x509.Certificate{p.ca.Cert, p.noCRLSign.Cert, p.other.Cert}, tc.inter...),
				CRLs:          append([][]byte{p.rootCRL}, tc.crls...),
				OCSPResponses: tc.ocsp,
				Revocation:    certvalidation.RevocationRequire,
				Offline:       true,
				At:            tc.at,
			})
			wantReason(t, rep, err, tc.want)
			if !strings.Contains(rep.Detail, tc.detail) {
				t.Errorf("detail %q does not say %q%s", rep.Detail, tc.detail, evidenceText(rep))
			}
		})
	}
}

// TestCRLRules: the CRL processing of RFC 5280 section 6.3 (and the CRL
// profile of section 5), one broken rule a case, named after it; beside
// each refusal, the valid CRL it was made from. Each CRL is built by
// certtest.CRLOf, signed by the CA unless the rule is the signature.
func TestCRLRules(t *testing.T) {
	t.Parallel()
	p := newRulesPKI(t, certvalidation.Config{})
	ca := p.ca
	now := time.Now()
	n := big.NewInt
	leafSerial := p.leaf.Cert.SerialNumber
	revokedLeaf := []certtest.CRLEntry{{Serial: leafSerial}}
	crl := func(s certtest.CRLSpec) []byte { return ca.CRLOf(t, s) }
	otherSerial := n(12345)
	unknownCritical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}, Critical: true, Value: []byte{5, 0}}
	const (
		valid     = ""
		revoked   = certvalidation.ReasonRevoked
		unknown   = certvalidation.ReasonRevocationUnknown
		malformed = certvalidation.ReasonMalformedCRL
	)
	// Validation half an hour ago: a CRL issued since is a later one.
	earlier := now.Add(-30 * time.Minute)

	p.run(t, []revocationCase{
		// Valid.
		{name: "valid/current CRL, the leaf not listed", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: otherSerial}}})}},
		{name: "valid/no nextUpdate, within the maximum age", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), NoNextUpdate: true})}},
		{name: "valid/listed as removeFromCRL", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: leafSerial, Extensions: []pkix.Extension{certtest.ReasonCode(t, certtest.ReasonRemoveFromCRL)}}}})}},
		{name: "valid/a CRL issued after the validation time", at: earlier, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), ThisUpdate: now.Add(-5 * time.Minute)})}},
		{name: "valid/revoked after the validation time, by a later CRL", at: earlier, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), ThisUpdate: now.Add(-5 * time.Minute), Entries: []certtest.CRLEntry{{Serial: leafSerial, At: now.Add(-10 * time.Minute)}}})}},
		{name: "valid/issuing distribution point of the leaf's", leaf: p.leafDP, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{FullNameURIs: []string{rulesDP}}.Extension()}})}},
		{name: "valid/only user certificates, for a leaf", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlyUser: true}.Extension()}})}},
		{name: "valid/a non-critical unknown extension", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{{Id: unknownCritical.Id, Value: unknownCritical.Value}}})}},
		{name: "valid/a delta CRL that does not list it", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5)})}},

		// Status.
		{name: "status/listed", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: revokedLeaf})}, want: revoked},
		{name: "status/listed with reason keyCompromise", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: leafSerial, Extensions: []pkix.Extension{certtest.ReasonCode(t, certtest.ReasonKeyCompromise)}}}})}, want: revoked, detail: "keyCompromise"},
		{name: "status/listed by a later CRL, revoked before the validation time", at: earlier, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), ThisUpdate: now.Add(-5 * time.Minute), Entries: []certtest.CRLEntry{{Serial: leafSerial, At: now.Add(-40 * time.Minute)}}})}, want: revoked},
		{name: "status/listed in the delta CRL", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Entries: revokedLeaf})}, want: revoked},

		// Issuer and signature (section 6.3.3 (b)(1), (f), (g)).
		{name: "issuer/the CRL of another CA", crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "no CRL"},
		{name: "signature/under the CA's name, by another key", crls: [][]byte{p.impostor.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "CRL signature does not verify"},
		{name: "signature/under the CA's name, the CA's key identifier, another key", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Signer: p.impostor.Key})}, want: unknown, detail: "CRL signature does not verify"},
		{name: "signature/ECDSA with SHA-1", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), SignatureHash: crypto.SHA1})}, want: unknown, detail: "refused as weak"},
		{name: "valid/signed by another certificate of the CA's name, under the same root", inter: []*x509.Certificate{p.twin.Cert}, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Signer: p.twin.Key})}},
		{name: "signature/another key, with another certificate of the CA's name given", inter: []*x509.Certificate{p.twin.Cert}, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Signer: p.impostor.Key})}, want: unknown, detail: "CRL signature does not verify"},
		{name: "signature/by another certificate of the CA's name, under no root", inter: []*x509.Certificate{p.impostor.Cert}, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Signer: p.impostor.Key})}, want: unknown, detail: "is not valid"},
		{name: "signature/by a CA without cRLSign", leaf: p.noCRLSignLeaf, crls: [][]byte{p.noCRLSign.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "no cRLSign key usage"},

		// Time (section 6.3.3 (a)).
		{name: "time/past nextUpdate", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), ThisUpdate: now.Add(-3 * time.Hour), NextUpdate: now.Add(-time.Hour)})}, want: unknown, detail: "CRL not current"},
		{name: "time/no nextUpdate, older than the maximum age", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), NoNextUpdate: true, ThisUpdate: now.Add(-25 * time.Hour)})}, want: unknown, detail: "without nextUpdate, older than"},
		{name: "time/issued after the certificate expired", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), ThisUpdate: p.leafValidUntil.Add(time.Hour), NextUpdate: p.leafValidUntil.Add(48 * time.Hour)})}, want: unknown, detail: "after the certificate expired"},

		// Scope (section 6.3.3 (b)(2)).
		{name: "scope/another distribution point", leaf: p.leafDP, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{FullNameURIs: []string{"http://crl.example/other.crl"}}.Extension()}})}, want: unknown, detail: "for another distribution point"},
		{name: "scope/only CA certificates, for a leaf", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlyCA: true}.Extension()}})}, want: unknown, detail: "covers only CA certificates"},
		{name: "scope/only attribute certificates", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlyAttr: true}.Extension()}})}, want: unknown, detail: "only attribute certificates"},
		{name: "scope/an indirect CRL the certificate does not name", crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()}, Entries: revokedLeaf})}, want: unknown, detail: "no CRL"},
		{name: "valid/an entry for another issuer's certificate of the same serial", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: leafSerial, Extensions: []pkix.Extension{certtest.CertificateIssuer(p.other.Cert.RawSubject)}}}})}},
		{name: "valid/the indirect CRL of the named CRL issuer", leaf: p.leafIndirect, crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()}})}},
		{name: "status/listed by the indirect CRL of the named CRL issuer", leaf: p.leafIndirect, crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()},
			Entries: []certtest.CRLEntry{{Serial: p.leafIndirect.Cert.SerialNumber, Extensions: []pkix.Extension{certtest.CertificateIssuer(ca.Cert.RawSubject)}}}})}, want: revoked},
		{name: "valid/the indirect CRL lists the serial for its own certificates", leaf: p.leafIndirect, crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()},
			Entries: []certtest.CRLEntry{{Serial: p.leafIndirect.Cert.SerialNumber}}})}},
		{name: "scope/a CRL of the named CRL issuer, not indirect", leaf: p.leafIndirect, crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "is not an indirect CRL"},
		{name: "scope/a CRL of the other CA's, for the CA's distribution point", leaf: p.leafTwoDPs, crls: [][]byte{p.other.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "is not an indirect CRL"},
		{name: "valid/two distribution points, the CA's CRL", leaf: p.leafTwoDPs, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1)})}},
		{name: "scope/the CA's own CRL, when the certificate names another CRL issuer", leaf: p.leafIndirect, crls: [][]byte{crl(certtest.CRLSpec{Number: n(1)})}, want: unknown},
		{name: "valid/a delta CRL of another issuer is not used", leaf: p.leafIndirect, crls: [][]byte{
			p.other.CRLOf(t, certtest.CRLSpec{Number: n(5), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()}}),
			crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Extensions: []pkix.Extension{certtest.IDP{Indirect: true}.Extension()}, Entries: []certtest.CRLEntry{{Serial: p.leafIndirect.Cert.SerialNumber}}}),
		}},
		{name: "reasons/only keyCompromise", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlySomeReasons: []byte{6, 0x40}}.Extension()}})}, want: unknown, detail: "do not cover every revocation reason"},
		{name: "reasons/only keyCompromise, listed", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlySomeReasons: []byte{6, 0x40}}.Extension()}, Entries: revokedLeaf})}, want: revoked},

		// Extensions (sections 5.2, 5.3).
		{name: "extensions/an unknown critical CRL extension", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{unknownCritical}})}, want: unknown, detail: "unrecognised critical CRL extension"},
		{name: "extensions/an unknown critical entry extension", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: otherSerial, Extensions: []pkix.Extension{unknownCritical}}}})}, want: unknown, detail: "unrecognised critical CRL entry extension"},
		{name: "extensions/a malformed issuing distribution point", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{{Id: certtest.OIDIssuingDistributionPoint, Critical: true, Value: []byte{0x30, 0x03, 0x81, 0x01}}}})}, want: unknown, detail: "malformed issuing distribution point"},
		{name: "extensions/a malformed certificate issuer entry extension", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), Entries: []certtest.CRLEntry{{Serial: otherSerial, Extensions: []pkix.Extension{{Id: certtest.OIDCertificateIssuer, Critical: true, Value: []byte{0x04, 0x00}}}}}})}, want: unknown, detail: "malformed certificate issuer"},

		// The CRL number (section 5.2.3).
		{name: "CRL number/missing", crls: [][]byte{crl(certtest.CRLSpec{})}, want: malformed, detail: "no CRL number"},
		{name: "CRL number/critical", crls: [][]byte{crl(certtest.CRLSpec{Number: n(1), NumberCritical: true})}, want: malformed, detail: "marked critical"},
		{name: "CRL number/negative", crls: [][]byte{crl(certtest.CRLSpec{Number: n(-1)})}, want: malformed, detail: "negative"},
		{name: "CRL number/21 octets", crls: [][]byte{crl(certtest.CRLSpec{Number: new(big.Int).Lsh(n(1), 160)})}, want: malformed, detail: "21 octets"},
		{name: "valid/CRL number of 20 octets", crls: [][]byte{crl(certtest.CRLSpec{Number: new(big.Int).Lsh(n(1), 158)})}},

		// Delta CRLs (sections 5.2.4, 6.3.3 (h)).
		{name: "delta/alone, without its base", crls: [][]byte{crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Entries: revokedLeaf})}, want: unknown, detail: "no CRL"},
		{name: "delta/not current", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), ThisUpdate: now.Add(-3 * time.Hour), NextUpdate: now.Add(-time.Hour)})}, want: unknown, detail: "delta CRL not current"},
		{name: "delta/by another key", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Signer: p.impostor.Key})}, want: unknown, detail: "delta CRL: CRL signature does not verify"},
		{name: "delta/a malformed delta CRL indicator", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(6), DeltaRaw: []byte{0x04, 0x00}})}, want: unknown, detail: "malformed delta CRL indicator"},
		{name: "delta/without a CRL number", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{DeltaOf: n(5)})}, want: malformed, detail: "the delta CRL of"},
		{name: "valid/a delta CRL on a later base is not used", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(7), DeltaOf: n(6), Entries: revokedLeaf})}},
		{name: "valid/a delta CRL not newer than the base is not used", crls: [][]byte{crl(certtest.CRLSpec{Number: n(5)}), crl(certtest.CRLSpec{Number: n(5), DeltaOf: n(4), Entries: revokedLeaf})}},
		{name: "valid/a delta CRL of another scope is not used", crls: [][]byte{
			crl(certtest.CRLSpec{Number: n(5), Extensions: []pkix.Extension{certtest.IDP{OnlyUser: true}.Extension()}}),
			crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Entries: revokedLeaf}),
		}},
		{name: "valid/the newest applicable delta CRL", crls: [][]byte{
			crl(certtest.CRLSpec{Number: n(5)}),
			crl(certtest.CRLSpec{Number: n(6), DeltaOf: n(5), Entries: revokedLeaf}),
			crl(certtest.CRLSpec{Number: n(7), DeltaOf: n(5)}),
		}},
	})

	// The CA's own status, from the root's CRL.
	onlyUser := newRulesPKI(t, certvalidation.Config{})
	onlyUser.rootCRL = onlyUser.root.CRLOf(t, certtest.CRLSpec{Number: n(1), Extensions: []pkix.Extension{certtest.IDP{OnlyUser: true}.Extension()}})
	onlyUser.run(t, []revocationCase{
		{name: "scope/only user certificates, for a CA", crls: [][]byte{onlyUser.ca.CRLOf(t, certtest.CRLSpec{Number: n(1)})}, want: unknown, detail: "covers only end-entity certificates"},
	})
}
