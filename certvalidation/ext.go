package certvalidation

import (
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Extension OIDs this package reads or acts on (RFC 5280 section 4.2,
// section 5.2 and 5.3; RFC 6960 section 4.2.2.2.1).
var (
	oidExtSubjectKeyID        = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtKeyUsage            = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtSubjectAltName      = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtIssuerAltName       = asn1.ObjectIdentifier{2, 5, 29, 18}
	oidExtBasicConstraints    = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtCRLNumber           = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidExtReasonCode          = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidExtInvalidityDate      = asn1.ObjectIdentifier{2, 5, 29, 24}
	oidExtDeltaCRLIndicator   = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidExtIssuingDistPoint    = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidExtCertificateIssuer   = asn1.ObjectIdentifier{2, 5, 29, 29}
	oidExtNameConstraints     = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidExtCRLDistPoints       = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidExtCertificatePolicies = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidExtPolicyMappings      = asn1.ObjectIdentifier{2, 5, 29, 33}
	oidExtAuthorityKeyID      = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtPolicyConstraints   = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidExtExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtFreshestCRL         = asn1.ObjectIdentifier{2, 5, 29, 46}
	oidExtInhibitAnyPolicy    = asn1.ObjectIdentifier{2, 5, 29, 54}
	oidExtAuthorityInfoAccess = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidExtHoldInstruction     = asn1.ObjectIdentifier{2, 5, 29, 23}
	oidExtOCSPNoCheck         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	oidExtExpiredCertsOnCRL   = asn1.ObjectIdentifier{2, 5, 29, 60}
)

// certExtensionsUnderstood are the certificate extensions whose semantics
// this package implements: a critical extension outside this list makes the
// certificate invalid (RFC 5280 section 4.2, section 6.1.4 (o), 6.1.5 (f)).
var certExtensionsUnderstood = []asn1.ObjectIdentifier{
	oidExtSubjectKeyID, oidExtKeyUsage, oidExtSubjectAltName, oidExtBasicConstraints,
	oidExtNameConstraints, oidExtCRLDistPoints, oidExtCertificatePolicies, oidExtPolicyMappings,
	oidExtAuthorityKeyID, oidExtPolicyConstraints, oidExtExtKeyUsage, oidExtFreshestCRL,
	oidExtInhibitAnyPolicy, oidExtAuthorityInfoAccess, oidExtOCSPNoCheck,
}

// crlExtensionsUnderstood and crlEntryExtensionsUnderstood: a CRL with a
// critical extension (or entry extension) outside these lists must not be
// used at all (RFC 5280 sections 5.2 and 5.3).
var crlExtensionsUnderstood = []asn1.ObjectIdentifier{
	oidExtAuthorityKeyID, oidExtIssuerAltName, oidExtCRLNumber, oidExtDeltaCRLIndicator,
	oidExtIssuingDistPoint, oidExtFreshestCRL, oidExtAuthorityInfoAccess, oidExtExpiredCertsOnCRL,
}

var crlEntryExtensionsUnderstood = []asn1.ObjectIdentifier{
	oidExtReasonCode, oidExtInvalidityDate, oidExtCertificateIssuer, oidExtHoldInstruction,
}

func understood(list []asn1.ObjectIdentifier, oid asn1.ObjectIdentifier) bool {
	for _, o := range list {
		if o.Equal(oid) {
			return true
		}
	}
	return false
}

// GeneralName CHOICE tags (RFC 5280 section 4.2.1.6).
const (
	gnOther     = 0
	gnRFC822    = 1
	gnDNS       = 2
	gnX400      = 3
	gnDirectory = 4
	gnEDIParty  = 5
	gnURI       = 6
	gnIP        = 7
	gnRegID     = 8
)

var gnTypeNames = [...]string{"otherName", "rfc822Name", "dNSName", "x400Address", "directoryName", "ediPartyName", "uniformResourceIdentifier", "iPAddress", "registeredID"}

// generalName is one GeneralName. value is the content octets for the
// string and address forms; dn is set for directoryName.
type generalName struct {
	tag   int
	value []byte
	dn    dname
}

func (g generalName) String() string {
	switch g.tag {
	case gnRFC822, gnDNS, gnURI:
		return gnTypeNames[g.tag] + ":" + string(g.value)
	case gnIP:
		return fmt.Sprintf("iPAddress:%x", g.value)
	case gnDirectory:
		return "directoryName"
	}
	return gnTypeNames[g.tag]
}

func (g generalName) equal(h generalName) bool {
	if g.tag != h.tag {
		return false
	}
	if g.tag == gnDirectory {
		return g.dn.equal(h.dn)
	}
	return string(g.value) == string(h.value)
}

// parseGeneralNames reads the content of a GeneralNames SEQUENCE (the
// elements, without the outer tag).
func parseGeneralNames(content cryptobyte.String) ([]generalName, error) {
	var out []generalName
	for !content.Empty() {
		var v cryptobyte.String
		var tag cbasn1.Tag
		if !content.ReadAnyASN1(&v, &tag) {
			return nil, errors.New("malformed GeneralName")
		}
		if tag&0xc0 != 0x80 { // context-specific
			return nil, errors.New("malformed GeneralName: not context-specific")
		}
		n := int(tag & 0x1f)
		if n > gnRegID {
			return nil, fmt.Errorf("malformed GeneralName: tag [%d]", n)
		}
		constructed := tag&0x20 != 0
		g := generalName{tag: n, value: v}
		switch n {
		case gnDirectory:
			// [4] EXPLICIT Name: a constructed tag around the SEQUENCE.
			if !constructed {
				return nil, errors.New("malformed directoryName")
			}
			var seq cryptobyte.String
			if !v.ReadASN1(&seq, cbasn1.SEQUENCE) || !v.Empty() {
				return nil, errors.New("malformed directoryName")
			}
			dn, err := parseRDNSequence(seq)
			if err != nil {
				return nil, err
			}
			g.dn = dn
		case gnRFC822, gnDNS, gnURI, gnIP, gnRegID:
			if constructed {
				return nil, fmt.Errorf("malformed %s", gnTypeNames[n])
			}
		}
		out = append(out, g)
	}
	return out, nil
}

// readGeneralNamesExt parses an extension value that is a GeneralNames
// SEQUENCE (subjectAltName, certificateIssuer).
func readGeneralNamesExt(value []byte) ([]generalName, error) {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed GeneralNames")
	}
	return parseGeneralNames(seq)
}

// subtree is one GeneralSubtree of a name constraint.
type subtree struct {
	base generalName
	// unsupported is set when minimum or maximum is not the default: RFC
	// 5280 says they MUST NOT be used, so such a constraint is one we do not
	// process.
	unsupported bool
}

// nameConstraints is a parsed NameConstraints extension (RFC 5280 section
// 4.2.1.10).
type nameConstraints struct {
	permitted, excluded []subtree
	critical            bool
}

func parseNameConstraints(value []byte, critical bool) (*nameConstraints, error) {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed name constraints")
	}
	nc := &nameConstraints{critical: critical}
	readSubtrees := func(tag cbasn1.Tag) ([]subtree, error) {
		var trees cryptobyte.String
		var present bool
		if !seq.ReadOptionalASN1(&trees, &present, tag) {
			return nil, errors.New("malformed name constraints")
		}
		if !present {
			return nil, nil
		}
		var out []subtree
		for !trees.Empty() {
			var st cryptobyte.String
			if !trees.ReadASN1(&st, cbasn1.SEQUENCE) {
				return nil, errors.New("malformed GeneralSubtree")
			}
			// base is one GeneralName: read its element and parse it alone.
			var el cryptobyte.String
			var t cbasn1.Tag
			if !st.ReadAnyASN1Element(&el, &t) {
				return nil, errors.New("malformed GeneralSubtree base")
			}
			names, err := parseGeneralNames(el)
			if err != nil || len(names) != 1 {
				return nil, errors.New("malformed GeneralSubtree base")
			}
			s := subtree{base: names[0]}
			for !st.Empty() {
				var v cryptobyte.String
				var vt cbasn1.Tag
				if !st.ReadAnyASN1(&v, &vt) {
					return nil, errors.New("malformed GeneralSubtree")
				}
				// minimum [0] DEFAULT 0 (DER omits it), maximum [1] absent.
				if !(vt == cbasn1.Tag(0).ContextSpecific() && len(v) == 1 && v[0] == 0) {
					s.unsupported = true
				}
			}
			out = append(out, s)
		}
		if len(out) == 0 {
			return nil, errors.New("empty GeneralSubtrees")
		}
		return out, nil
	}
	var err error
	if nc.permitted, err = readSubtrees(cbasn1.Tag(0).ContextSpecific().Constructed()); err != nil {
		return nil, err
	}
	if nc.excluded, err = readSubtrees(cbasn1.Tag(1).ContextSpecific().Constructed()); err != nil {
		return nil, err
	}
	if !seq.Empty() {
		return nil, errors.New("malformed name constraints: trailing data")
	}
	if nc.permitted == nil && nc.excluded == nil {
		return nil, errors.New("name constraints with neither permitted nor excluded subtrees")
	}
	return nc, nil
}

// Revocation reasons as ReasonFlags bits (RFC 5280 section 4.2.1.13).
type reasonFlags uint16

const (
	allReasons reasonFlags = 0x1fe // keyCompromise (1) … aACompromise (8)
)

// reasonFlagsFromCode maps a CRLReason code (section 5.3.1) to its flag.
func reasonFlagsFromCode(code int) reasonFlags {
	switch code {
	case 1, 2, 3, 4, 5, 6:
		return 1 << code
	case 9: // privilegeWithdrawn
		return 1 << 7
	case 10: // aACompromise
		return 1 << 8
	}
	return 0
}

func parseReasonFlags(bits []byte) (reasonFlags, error) {
	if len(bits) == 0 {
		return 0, errors.New("malformed ReasonFlags")
	}
	var f reasonFlags
	data := bits[1:]
	for i := 0; i < 9 && i/8 < len(data); i++ {
		if data[i/8]&(0x80>>(i%8)) != 0 {
			f |= 1 << i
		}
	}
	return f &^ 1, nil // bit 0 is "unused"
}

// distPoint is a DistributionPoint (section 4.2.1.13), or the
// DistributionPointName part of an issuingDistributionPoint.
type distPoint struct {
	// fullName holds the distribution point's names; a
	// nameRelativeToCRLIssuer is kept in relative until resolved against
	// the CRL issuer's name.
	fullName   []generalName
	relative   rdn
	hasName    bool
	reasons    reasonFlags // 0: absent
	hasReasons bool
	crlIssuer  []generalName
}

// names resolves the distribution point name: the full names, or the
// relative name appended to issuer (section 4.2.1.13).
func (dp distPoint) names(issuer dname) []generalName {
	if dp.relative != nil {
		dn := append(append(dname{}, issuer...), dp.relative)
		return []generalName{{tag: gnDirectory, dn: dn}}
	}
	return dp.fullName
}

func (dp distPoint) uris() []string {
	var out []string
	for _, g := range dp.fullName {
		if g.tag == gnURI {
			out = append(out, string(g.value))
		}
	}
	return out
}

// parseDistPointName reads the content of the [0] EXPLICIT
// DistributionPointName CHOICE.
func parseDistPointName(in cryptobyte.String, dp *distPoint) error {
	var v cryptobyte.String
	var tag cbasn1.Tag
	if !in.ReadAnyASN1(&v, &tag) || !in.Empty() {
		return errors.New("malformed DistributionPointName")
	}
	switch tag {
	case cbasn1.Tag(0).ContextSpecific().Constructed():
		names, err := parseGeneralNames(v)
		if err != nil {
			return err
		}
		dp.fullName = names
	case cbasn1.Tag(1).ContextSpecific().Constructed():
		r, err := parseRDN(v)
		if err != nil {
			return err
		}
		dp.relative = r
	default:
		return errors.New("malformed DistributionPointName")
	}
	dp.hasName = true
	return nil
}

// parseDistPoints reads a CRLDistributionPoints or FreshestCRL extension.
func parseDistPoints(value []byte) ([]distPoint, error) {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed CRL distribution points")
	}
	var out []distPoint
	for !seq.Empty() {
		var d cryptobyte.String
		if !seq.ReadASN1(&d, cbasn1.SEQUENCE) {
			return nil, errors.New("malformed DistributionPoint")
		}
		var dp distPoint
		var v cryptobyte.String
		var present bool
		if !d.ReadOptionalASN1(&v, &present, cbasn1.Tag(0).ContextSpecific().Constructed()) {
			return nil, errors.New("malformed DistributionPoint")
		}
		if present {
			if err := parseDistPointName(v, &dp); err != nil {
				return nil, err
			}
		}
		if !d.ReadOptionalASN1(&v, &present, cbasn1.Tag(1).ContextSpecific()) {
			return nil, errors.New("malformed DistributionPoint reasons")
		}
		if present {
			f, err := parseReasonFlags(v)
			if err != nil {
				return nil, err
			}
			dp.reasons, dp.hasReasons = f, true
		}
		if !d.ReadOptionalASN1(&v, &present, cbasn1.Tag(2).ContextSpecific().Constructed()) {
			return nil, errors.New("malformed DistributionPoint cRLIssuer")
		}
		if present {
			names, err := parseGeneralNames(v)
			if err != nil {
				return nil, err
			}
			dp.crlIssuer = names
		}
		if !d.Empty() {
			return nil, errors.New("malformed DistributionPoint: trailing data")
		}
		// Section 4.2.1.13: either distributionPoint or cRLIssuer.
		if !dp.hasName && dp.crlIssuer == nil {
			return nil, errors.New("DistributionPoint with neither a name nor a cRLIssuer")
		}
		out = append(out, dp)
	}
	return out, nil
}

// issuingDistPoint is the IssuingDistributionPoint CRL extension (section
// 5.2.5).
type issuingDistPoint struct {
	dp                    distPoint // name and onlySomeReasons
	onlyUser, onlyCA      bool
	onlyAttr, indirectCRL bool
	raw                   []byte // the extension value, to compare a delta's scope
}

func parseIssuingDistPoint(value []byte) (*issuingDistPoint, error) {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed issuing distribution point")
	}
	idp := &issuingDistPoint{raw: value}
	var v cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&v, &present, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, errors.New("malformed issuing distribution point")
	}
	if present {
		if err := parseDistPointName(v, &idp.dp); err != nil {
			return nil, err
		}
	}
	readBool := func(n int, out *bool) error {
		if !seq.ReadOptionalASN1(&v, &present, cbasn1.Tag(n).ContextSpecific()) {
			return errors.New("malformed issuing distribution point")
		}
		if present {
			if len(v) != 1 {
				return errors.New("malformed BOOLEAN in issuing distribution point")
			}
			*out = v[0] != 0
		}
		return nil
	}
	if err := readBool(1, &idp.onlyUser); err != nil {
		return nil, err
	}
	if err := readBool(2, &idp.onlyCA); err != nil {
		return nil, err
	}
	if !seq.ReadOptionalASN1(&v, &present, cbasn1.Tag(3).ContextSpecific()) {
		return nil, errors.New("malformed onlySomeReasons")
	}
	if present {
		f, err := parseReasonFlags(v)
		if err != nil {
			return nil, err
		}
		idp.dp.reasons, idp.dp.hasReasons = f, true
	}
	if err := readBool(4, &idp.indirectCRL); err != nil {
		return nil, err
	}
	if err := readBool(5, &idp.onlyAttr); err != nil {
		return nil, err
	}
	if !seq.Empty() {
		return nil, errors.New("malformed issuing distribution point: trailing data")
	}
	return idp, nil
}
