package certvalidation

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// certInfo is a certificate with what this package reads from it beyond
// crypto/x509: names in canonical form, and the extensions crypto/x509
// does not parse (fully).
type certInfo struct {
	c               *x509.Certificate
	fp              [32]byte // SHA-256 of the DER
	subject, issuer dname
	subjectKey      string
	issuerKey       string
	selfIssued      bool
	hasKU, hasSAN   bool
	san             []generalName
	nc              *nameConstraints
	crldp, freshest []distPoint
	unknownCritical []string
	ocspNoCheck     bool
	malformed       string // why an extension or name could not be read
	badName         string // a name of subjectAltName that is not a name of its type
	badConstraint   string // a subtree of the name constraints that is not a name of its type
}

func newCertInfo(c *x509.Certificate) *certInfo {
	ci := &certInfo{c: c, fp: sha256.Sum256(c.Raw)}
	var err error
	if ci.subject, err = parseName(c.RawSubject); err != nil {
		ci.malformed = "subject: " + err.Error()
	}
	if ci.issuer, err = parseName(c.RawIssuer); err != nil {
		ci.malformed = "issuer: " + err.Error()
	}
	ci.subjectKey, ci.issuerKey = ci.subject.key(), ci.issuer.key()
	ci.selfIssued = ci.subject.equal(ci.issuer)
	for _, e := range c.Extensions {
		var err error
		switch {
		case e.Id.Equal(oidExtKeyUsage):
			ci.hasKU = true
		case e.Id.Equal(oidExtSubjectAltName):
			ci.hasSAN = true
			ci.san, err = readGeneralNamesExt(e.Value)
		case e.Id.Equal(oidExtNameConstraints):
			ci.nc, err = parseNameConstraints(e.Value, e.Critical)
		case e.Id.Equal(oidExtCRLDistPoints):
			ci.crldp, err = parseDistPoints(e.Value)
		case e.Id.Equal(oidExtFreshestCRL):
			ci.freshest, err = parseDistPoints(e.Value)
		case e.Id.Equal(oidExtOCSPNoCheck):
			ci.ocspNoCheck = true
		}
		if err != nil && ci.malformed == "" {
			ci.malformed = fmt.Sprintf("extension %s: %v", e.Id, err)
		}
		if e.Critical && !understood(certExtensionsUnderstood, e.Id) {
			ci.unknownCritical = append(ci.unknownCritical, e.Id.String())
		}
	}
	for _, g := range ci.san {
		if why := sanSyntax(g); why != "" {
			ci.badName = why
			break
		}
	}
	if ci.nc != nil {
		for _, st := range append(ci.nc.permitted[:len(ci.nc.permitted):len(ci.nc.permitted)], ci.nc.excluded...) {
			if why := constraintSyntax(st.base); why != "" {
				ci.badConstraint = why
				break
			}
		}
	}
	return ci
}

func (ci *certInfo) isCA() bool { return ci.c.BasicConstraintsValid && ci.c.IsCA }

// sameKeyAndName is the loop test of path building (RFC 4158 section
// 5.2): a certificate with the subject and key of one already in the path
// adds nothing but a loop.
func (ci *certInfo) sameKeyAndName(o *certInfo) bool {
	return ci.subjectKey == o.subjectKey && bytes.Equal(ci.c.RawSubjectPublicKeyInfo, o.c.RawSubjectPublicKeyInfo)
}

// certSet indexes certificates by canonical subject name.
type certSet struct {
	byName map[string][]*certInfo
	byFP   map[[32]byte]*certInfo
	all    []*certInfo
}

func newCertSet() *certSet {
	return &certSet{byName: map[string][]*certInfo{}, byFP: map[[32]byte]*certInfo{}}
}

// add puts ci in the set unless an identical certificate is there; it
// returns the one in the set.
func (s *certSet) add(ci *certInfo) *certInfo {
	if have, ok := s.byFP[ci.fp]; ok {
		return have
	}
	s.byFP[ci.fp] = ci
	s.byName[ci.subjectKey] = append(s.byName[ci.subjectKey], ci)
	s.all = append(s.all, ci)
	return ci
}

func (s *certSet) has(ci *certInfo) bool {
	_, ok := s.byFP[ci.fp]
	return ok
}

// issuersOf returns the certificates of s whose subject is child's issuer,
// those whose subject key identifier matches child's authority key
// identifier first (RFC 4158 section 3.5.12), then the others.
func (s *certSet) issuersOf(child *certInfo) []*certInfo {
	cands := s.byName[child.issuerKey]
	if len(cands) < 2 || len(child.c.AuthorityKeyId) == 0 {
		return cands
	}
	out := make([]*certInfo, 0, len(cands))
	for _, c := range cands {
		if bytes.Equal(c.c.SubjectKeyId, child.c.AuthorityKeyId) {
			out = append(out, c)
		}
	}
	for _, c := range cands {
		if len(c.c.SubjectKeyId) == 0 {
			out = append(out, c)
		}
	}
	for _, c := range cands {
		if len(c.c.SubjectKeyId) > 0 && !bytes.Equal(c.c.SubjectKeyId, child.c.AuthorityKeyId) {
			out = append(out, c)
		}
	}
	return out
}

// builder enumerates certification paths from a certificate to the trust
// anchors, depth first, shortest through anchors first. It tries every
// issuer that matches by name, so that cross-certificates and several CA
// certificates under one name all get their chance, and stops at the
// bounds of Limits.
type builder struct {
	anchors  *certSet
	pools    []*certSet // untrusted certificates, searched in order
	maxDepth int        // certificates in a path, anchor included
	maxPaths int
	maxSteps int

	paths    int
	steps    int
	deadEnds []string
	limit    string // set when a bound stopped the search
	depthCut string // set when a path was not followed for Limits.MaxDepth
}

// build calls yield with each path (leaf first, anchor last) until yield
// returns false or the bounds are reached.
func (b *builder) build(leaf *certInfo, yield func(path []*certInfo) bool) {
	if b.anchors.has(leaf) {
		// The certificate is itself a trust anchor.
		b.paths++
		if !yield([]*certInfo{b.anchors.byFP[leaf.fp]}) {
			return
		}
	}
	b.extend([]*certInfo{leaf}, yield)
}

func (b *builder) extend(path []*certInfo, yield func([]*certInfo) bool) bool {
	top := path[len(path)-1]
	found := false
	for _, a := range b.anchors.issuersOf(top) {
		if a.fp == top.fp {
			continue
		}
		found = true
		if b.paths >= b.maxPaths {
			b.limit = fmt.Sprintf("limits.max_candidates: more than %d candidate paths", b.maxPaths)
			return false
		}
		b.paths++
		if !yield(append(path[:len(path):len(path)], a)) {
			return false
		}
	}
	for _, pool := range b.pools {
		for _, ic := range pool.issuersOf(top) {
			if b.anchors.has(ic) || inPath(path, ic) {
				continue
			}
			found = true
			if len(path)+2 > b.maxDepth {
				cut := fmt.Sprintf("limits.max_depth: path through %q longer than %d certificates", ic.c.Subject.String(), b.maxDepth)
				b.deadEnds = append(b.deadEnds, cut)
				if b.depthCut == "" {
					b.depthCut = cut
				}
				continue
			}
			b.steps++
			if b.steps > b.maxSteps {
				b.limit = fmt.Sprintf("limits.max_candidates: more than %d path-building steps (64 a candidate path)", b.maxSteps)
				return false
			}
			if !b.extend(append(path[:len(path):len(path)], ic), yield) {
				return false
			}
		}
	}
	if !found {
		b.deadEnds = append(b.deadEnds, fmt.Sprintf("no issuer certificate found for %q", top.c.Issuer.String()))
	}
	return true
}

func inPath(path []*certInfo, c *certInfo) bool {
	for _, p := range path {
		if p.fp == c.fp || p.sameKeyAndName(c) {
			return true
		}
	}
	return false
}
