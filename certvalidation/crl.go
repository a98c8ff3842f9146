package certvalidation

import (
	"context"
	"crypto/dsa" //nolint:staticcheck // DSA only to verify old CRLs (PKITS)
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// crlRecord is a parsed CRL with what section 6.3 needs of it.
type crlRecord struct {
	raw        []byte
	rl         *x509.RevocationList
	issuer     dname
	issuerKey  string
	idp        *issuingDistPoint
	delta      bool
	baseNumber *big.Int // DeltaCRLIndicator
	unusable   string   // why the CRL may not be used at all
	entries    map[string][]crlEntry
	origin     string
	url        string
	sha256     string

	mu       sync.Mutex
	verified map[string]error // signature checks, by the signer's key
}

// checkSignatureWith verifies the CRL's signature with key, once per key:
// a cached CRL is checked for many certificates.
func (rec *crlRecord) checkSignatureWith(key any, spki []byte) error {
	rl := rec.rl
	if _, inherited := key.(*dsa.PublicKey); inherited || spki == nil {
		return checkSignature(rl.SignatureAlgorithm, rl.RawTBSRevocationList, rl.Signature, key)
	}
	rec.mu.Lock()
	err, ok := rec.verified[string(spki)]
	rec.mu.Unlock()
	if ok {
		return err
	}
	err = checkSignature(rl.SignatureAlgorithm, rl.RawTBSRevocationList, rl.Signature, key)
	rec.mu.Lock()
	if rec.verified == nil {
		rec.verified = map[string]error{}
	}
	rec.verified[string(spki)] = err
	rec.mu.Unlock()
	return err
}

type crlEntry struct {
	issuerKey string // the certificate issuer the entry is about (indirect CRLs)
	reason    int
	at        time.Time
}

// CRLReason codes (RFC 5280 section 5.3.1).
const (
	reasonCertificateHold = 6
	reasonRemoveFromCRL   = 8
)

var reasonNames = map[int]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
	5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise",
}

func reasonName(code int) string {
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return fmt.Sprintf("reason %d", code)
}

// parseCRL parses a DER CRL. A CRL that parses but carries an extension
// it must not be used with is returned with unusable set: it is still
// reported as consulted.
func parseCRL(der []byte, origin, url string) (*crlRecord, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	rec := &crlRecord{raw: der, rl: rl, origin: origin, url: url, sha256: sha256Hex(der), entries: map[string][]crlEntry{}}
	if rec.issuer, err = parseName(rl.RawIssuer); err != nil {
		return nil, fmt.Errorf("CRL issuer: %w", err)
	}
	rec.issuerKey = rec.issuer.key()
	for _, e := range rl.Extensions {
		switch {
		case e.Id.Equal(oidExtIssuingDistPoint):
			idp, err := parseIssuingDistPoint(e.Value)
			if err != nil {
				rec.unusable = "malformed issuing distribution point: " + err.Error()
			}
			rec.idp = idp
		case e.Id.Equal(oidExtDeltaCRLIndicator):
			n := new(big.Int)
			if err := readInteger(e.Value, n); err != nil {
				rec.unusable = "malformed delta CRL indicator"
			}
			rec.delta, rec.baseNumber = true, n
		}
		if e.Critical && !understood(crlExtensionsUnderstood, e.Id) && rec.unusable == "" {
			rec.unusable = "unrecognised critical CRL extension " + e.Id.String()
		}
	}
	current := rec.issuerKey
	for _, entry := range rl.RevokedCertificateEntries {
		for _, e := range entry.Extensions {
			if e.Id.Equal(oidExtCertificateIssuer) {
				names, err := readGeneralNamesExt(e.Value)
				if err != nil && rec.unusable == "" {
					rec.unusable = "malformed certificate issuer entry extension"
				}
				for _, g := range names {
					if g.tag == gnDirectory {
						current = g.dn.key()
						break
					}
				}
			}
			if e.Critical && !understood(crlEntryExtensionsUnderstood, e.Id) && rec.unusable == "" {
				rec.unusable = "unrecognised critical CRL entry extension " + e.Id.String()
			}
		}
		if entry.SerialNumber == nil {
			continue
		}
		k := entry.SerialNumber.Text(16)
		rec.entries[k] = append(rec.entries[k], crlEntry{issuerKey: current, reason: entry.ReasonCode, at: entry.RevocationTime})
	}
	return rec, nil
}

// lookup finds the entry for the certificate serial issued by issuerKey.
func (rec *crlRecord) lookup(serial *big.Int, issuerKey string) *crlEntry {
	for _, e := range rec.entries[serial.Text(16)] {
		if e.issuerKey == issuerKey {
			return &e
		}
	}
	return nil
}

func (rec *crlRecord) evidence(cert int, status, reason string) Evidence {
	typ := "crl"
	if rec.delta {
		typ = "delta-crl"
	}
	ev := Evidence{
		Cert: cert, Type: typ, Origin: rec.origin, URL: rec.url, Status: status, Reason: reason,
		Issuer: rec.rl.Issuer.String(), ThisUpdate: rec.rl.ThisUpdate.UTC(), SHA256: rec.sha256, Raw: rec.raw,
	}
	if !rec.rl.NextUpdate.IsZero() {
		ev.NextUpdate = rec.rl.NextUpdate.UTC()
	}
	if len(rec.raw) <= MaxEmbeddedCRLBytes {
		ev.DER = rec.raw
	}
	return ev
}

// Revocation statuses of one certificate.
type revStatus int

const (
	statusUnknown revStatus = iota
	statusGood
	statusRevoked
)

type revResult struct {
	status    revStatus
	reason    string    // revocation reason, or why unknown
	revokedAt time.Time // when revoked
	until     time.Time // when the data relied on stops being current
	source    string    // what decided
	evidence  []Evidence
	malformed string // an authentic CRL in scope broke the CRL profile (statusUnknown)
}

// Time fits of revocation data for the validation time T.
type fit int

const (
	fitNone    fit = iota
	fitCurrent     // thisUpdate ≤ T ≤ nextUpdate: the data that was valid at T
	fitLater       // issued after T, while the certificate was still valid: it says whether it was revoked by T
)

// timeFit places revocation data (thisUpdate, nextUpdate) relative to the
// validation time; why explains fitNone.
func (r *run) timeFit(this, next time.Time, cert *x509.Certificate) (fit, string) {
	s := r.v.s
	if this.After(r.at.Add(s.skew)) {
		if !this.After(cert.NotAfter) {
			return fitLater, ""
		}
		return fitNone, fmt.Sprintf("issued %s, after the certificate expired", this.UTC().Format(time.RFC3339))
	}
	if next.IsZero() {
		if r.at.Sub(this) > s.maxAge {
			return fitNone, fmt.Sprintf("issued %s without nextUpdate, older than %s", this.UTC().Format(time.RFC3339), s.maxAge)
		}
		return fitCurrent, ""
	}
	if r.at.After(next) {
		return fitNone, fmt.Sprintf("not current: nextUpdate %s", next.UTC().Format(time.RFC3339))
	}
	return fitCurrent, ""
}

// dataUntil is when data without nextUpdate stops being current.
func (r *run) dataUntil(this, next time.Time) time.Time {
	if next.IsZero() {
		return this.Add(r.v.s.maxAge)
	}
	return next
}

// crlCandidates gathers the CRLs that might cover cert: those of the
// request, the local ones, and those cached or fetched for its distribution
// points.
func (r *run) crlCandidates(cert *certInfo) []*crlRecord {
	names := map[string]bool{cert.issuerKey: true}
	for _, dp := range cert.crldp {
		for _, g := range dp.crlIssuer {
			if g.tag == gnDirectory {
				names[g.dn.key()] = true
			}
		}
	}
	var out []*crlRecord
	seen := map[string]bool{}
	add := func(rec *crlRecord) {
		if rec != nil && names[rec.issuerKey] && !seen[rec.sha256] {
			seen[rec.sha256] = true
			out = append(out, rec)
		}
	}
	for _, rec := range r.reqCRLs {
		add(rec)
	}
	for _, rec := range r.v.localCRLs {
		add(rec)
	}
	for _, u := range crlURLs(cert) {
		if rec, ok := r.v.crlCache.get(u, r.now); ok {
			r.v.m.lookup("crl", true)
			add(rec)
		}
	}
	return out
}

// crlURLs lists the fetchable URLs of the certificate's distribution
// points, then of its freshest CRL (delta) points.
func crlURLs(cert *certInfo) []string {
	var out []string
	for _, list := range [][]distPoint{cert.crldp, cert.freshest} {
		for _, dp := range list {
			for _, u := range dp.uris() {
				if fetchableURL(u) && !containsString(out, u) {
					out = append(out, u)
				}
			}
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fetchCRLs gets the CRLs of the certificate's distribution points that
// are not cached, and caches them.
func (r *run) fetchCRLs(ctx context.Context, cert *certInfo) []string {
	var problems []string
	for _, u := range crlURLs(cert) {
		if _, ok := r.v.crlCache.get(u, r.now); ok {
			continue
		}
		r.v.m.lookup("crl", false)
		if !r.takeFetch() {
			problems = append(problems, "limits.max_fetches: fetch budget exhausted before "+u)
			continue
		}
		body, err := r.v.fetch.get(ctx, "crl", u, r.v.s.maxCRLBytes)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRL %s: %v", u, err))
			continue
		}
		der, err := crlDER(body)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRL %s: %v", u, err))
			continue
		}
		rec, err := parseCRL(der, "fetched", u)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRL %s: %v", u, err))
			continue
		}
		until := r.dataUntil(rec.rl.ThisUpdate, rec.rl.NextUpdate)
		if limit := r.now.Add(r.v.s.cacheMaxAge); until.After(limit) {
			until = limit
		}
		if until.After(r.now) {
			r.v.crlCache.put(u, rec, until)
		} else {
			// Not cacheable (already past nextUpdate), but usable by this
			// run, which reports it as consulted.
			r.reqCRLs = append(r.reqCRLs, rec)
		}
	}
	return problems
}

// crlDER accepts a DER CRL or one PEM CRL (servers that send PEM exist).
func crlDER(body []byte) ([]byte, error) {
	if len(body) > 0 && body[0] == 0x30 {
		return body, nil
	}
	crls, err := ParseCRLs(body)
	if err != nil {
		return nil, err
	}
	return crls[0], nil
}

// crlStatus is the CRL processing of RFC 5280 section 6.3.3 for path[j],
// over the candidate CRLs: distribution points one by one, the scope of
// each CRL (issuer, issuing distribution point, reasons), its issuer's
// authority and signature, delta CRLs, until every reason is covered.
func (r *run) crlStatus(ctx context.Context, path []*certInfo, j int, keys []any, cands []*crlRecord) revResult {
	cert := path[j]
	var res revResult
	var problems []string
	relax := r.v.relax[path[len(path)-1].fp]
	dps := cert.crldp
	pseudo := len(dps) == 0
	if pseudo {
		// No distribution points: the CRL issuer is the certificate issuer.
		dps = []distPoint{{crlIssuer: []generalName{{tag: gnDirectory, dn: cert.issuer}}}}
	}
	var mask reasonFlags
	status := statusGood
	for _, dp := range dps {
		if mask == allReasons || status == statusRevoked {
			break
		}
		for _, rec := range cands {
			if mask == allReasons || status == statusRevoked {
				break
			}
			if rec.delta {
				continue
			}
			// (b)(1): the CRL issuer.
			if !pseudo && len(dp.crlIssuer) > 0 {
				if !nameListHas(dp.crlIssuer, rec.issuer) {
					continue
				}
				if rec.idp == nil || !rec.idp.indirectCRL {
					problems = append(problems, fmt.Sprintf("CRL of %q is named by the distribution point but is not an indirect CRL", rec.rl.Issuer.String()))
					continue
				}
			} else if rec.issuerKey != cert.issuerKey {
				continue
			}
			// (b)(2): the scope of the CRL.
			if rec.idp != nil {
				idp := rec.idp
				if idp.dp.hasName {
					var dpNames []generalName
					switch {
					case !pseudo && dp.hasName:
						base := cert.issuer
						if len(dp.crlIssuer) > 0 {
							base = firstDirName(dp.crlIssuer, cert.issuer)
						}
						dpNames = dp.names(base)
					default:
						dpNames = dp.crlIssuer
					}
					if !namesIntersect(idp.dp.names(rec.issuer), dpNames) {
						problems = append(problems, fmt.Sprintf("CRL of %q is for another distribution point", rec.rl.Issuer.String()))
						continue
					}
				}
				if idp.onlyUser && cert.isCA() {
					problems = append(problems, "the CRL covers only end-entity certificates and this is a CA certificate")
					continue
				}
				if idp.onlyCA && !cert.isCA() {
					problems = append(problems, "the CRL covers only CA certificates and this is an end-entity certificate")
					continue
				}
				if idp.onlyAttr {
					problems = append(problems, "the CRL covers only attribute certificates")
					continue
				}
			}
			// (c), (d): the reasons it covers must add to those covered.
			interim := allReasons
			switch {
			case rec.idp != nil && rec.idp.dp.hasReasons && dp.hasReasons:
				interim = rec.idp.dp.reasons & dp.reasons
			case rec.idp != nil && rec.idp.dp.hasReasons:
				interim = rec.idp.dp.reasons
			case dp.hasReasons:
				interim = dp.reasons
			}
			if interim&^mask == 0 {
				continue
			}
			if rec.unusable != "" {
				res.evidence = append(res.evidence, rec.evidence(j, "unusable", rec.unusable))
				problems = append(problems, rec.unusable)
				continue
			}
			f, why := r.timeFit(rec.rl.ThisUpdate, rec.rl.NextUpdate, cert.c)
			if f == fitNone {
				res.evidence = append(res.evidence, rec.evidence(j, "unusable", why))
				problems = append(problems, "CRL "+why)
				continue
			}
			// (f), (g): the CRL issuer and the signature.
			if err := r.crlSigner(ctx, rec, path, j, keys); err != nil {
				res.evidence = append(res.evidence, rec.evidence(j, "unusable", err.Error()))
				problems = append(problems, err.Error())
				continue
			}
			// The CRL profile (section 5.2.3), once the CRL is known to be
			// the issuer's: a broken one is reported as such, not as
			// missing data.
			if v := crlViolation(rec); v != nil && !relax[v.rule] {
				why := "malformed CRL: " + v.String()
				res.evidence = append(res.evidence, rec.evidence(j, "unusable", why))
				problems = append(problems, why)
				if res.malformed == "" {
					res.malformed = fmt.Sprintf("the CRL of %q: %s", rec.rl.Issuer.String(), v)
				}
				continue
			}
			// (h): a delta CRL, when one applies.
			delta, err := r.pickDelta(ctx, rec, cands, path, j, keys)
			if err != nil {
				res.evidence = append(res.evidence, rec.evidence(j, "unusable", err.Error()))
				problems = append(problems, err.Error())
				if m, ok := err.(malformedCRLError); ok && res.malformed == "" {
					res.malformed = string(m)
				}
				continue
			}
			// (i), (j), (k): the status.
			var entry *crlEntry
			var from *crlRecord
			if delta != nil {
				if entry = delta.lookup(cert.c.SerialNumber, cert.issuerKey); entry != nil {
					from = delta
				}
			}
			if entry == nil {
				if entry = rec.lookup(cert.c.SerialNumber, cert.issuerKey); entry != nil {
					from = rec
				}
			}
			if entry != nil && entry.reason == reasonRemoveFromCRL {
				entry = nil
			}
			if entry != nil && f == fitLater && entry.at.After(r.at) {
				r.warn("certificate %q revoked at %s, after the validation time", cert.c.Subject.String(), entry.at.UTC().Format(time.RFC3339))
				entry = nil
			}
			until := r.dataUntil(rec.rl.ThisUpdate, rec.rl.NextUpdate)
			if delta != nil {
				if du := r.dataUntil(delta.rl.ThisUpdate, delta.rl.NextUpdate); du.Before(until) {
					until = du
				}
			}
			if entry != nil {
				status = statusRevoked
				res.reason, res.revokedAt = reasonName(entry.reason), entry.at
				res.source = "crl"
				ev := from.evidence(j, "revoked", res.reason)
				ev.RevokedAt = entry.at.UTC() // as OCSP evidence has it: a signature verifier judges by it
				res.evidence = append(res.evidence, ev)
				if from != rec {
					res.evidence = append(res.evidence, rec.evidence(j, "good", ""))
				}
				break
			}
			res.evidence = append(res.evidence, rec.evidence(j, "good", ""))
			if delta != nil {
				res.evidence = append(res.evidence, delta.evidence(j, "good", ""))
			}
			if res.until.IsZero() || until.Before(res.until) {
				res.until = until
			}
			mask |= interim
		}
	}
	switch {
	case status == statusRevoked:
		res.status = statusRevoked
	case mask == allReasons:
		res.status = statusGood
		res.source = "crl"
	default:
		res.status = statusUnknown
		if mask != 0 {
			problems = append(problems, "the CRLs available do not cover every revocation reason")
		}
		res.reason = strings.Join(uniq(problems), "; ")
	}
	return res
}

func nameListHas(names []generalName, dn dname) bool {
	for _, g := range names {
		if g.tag == gnDirectory && g.dn.equal(dn) {
			return true
		}
	}
	return false
}

func firstDirName(names []generalName, def dname) dname {
	for _, g := range names {
		if g.tag == gnDirectory {
			return g.dn
		}
	}
	return def
}

func namesIntersect(a, b []generalName) bool {
	for _, x := range a {
		for _, y := range b {
			if x.equal(y) {
				return true
			}
		}
	}
	return false
}

// crlSigner checks that the CRL was signed by an issuer with authority
// over the certificate: the certificate's issuer with the same key, or a
// certificate with the CRL issuer's name (another key of the CA, or the
// issuer of an indirect CRL) whose own path leads to the same trust anchor
// (section 6.3.3 (f)) and allows signing CRLs.
func (r *run) crlSigner(ctx context.Context, rec *crlRecord, path []*certInfo, j int, keys []any) error {
	s := r.v.s
	rl := rec.rl
	if !s.allowWeak && weakSignature(rl.SignatureAlgorithm) {
		return fmt.Errorf("CRL signature algorithm %v refused as weak", rl.SignatureAlgorithm)
	}
	issuer := path[j+1]
	if rec.issuerKey == issuer.subjectKey {
		if err := rec.checkSignatureWith(keys[j+1], issuer.c.RawSubjectPublicKeyInfo); err == nil {
			if issuer.hasKU && issuer.c.KeyUsage&x509.KeyUsageCRLSign == 0 {
				return errors.New("the CRL issuer is not allowed to sign CRLs (no cRLSign key usage)")
			}
			if !s.allowWeak {
				if w := weakKey(keys[j+1]); w != "" {
					return errors.New("CRL signed with a weak key: " + w)
				}
			}
			return nil
		}
	}
	// Another certificate under the CRL issuer's name.
	anchor := path[len(path)-1]
	var cands []*certInfo
	for _, set := range []*certSet{r.pool, r.v.intermediates, r.anchors} {
		for _, ci := range set.byName[rec.issuerKey] {
			if ci.fp != issuer.fp && !containsInfo(cands, ci) {
				cands = append(cands, ci)
			}
		}
	}
	// The certificates of the path itself (an issuer with a second key).
	for _, ci := range path[:len(path)-1] {
		if ci.subjectKey == rec.issuerKey && ci.fp != issuer.fp && !containsInfo(cands, ci) {
			cands = append(cands, ci)
		}
	}
	lastErr := errors.New("CRL signature does not verify with the issuer's key, and no other certificate of its issuer does")
	for _, ci := range cands {
		key := ci.c.PublicKey
		if err := rec.checkSignatureWith(key, ci.c.RawSubjectPublicKeyInfo); err != nil {
			continue
		}
		if !s.allowWeak {
			if w := weakKey(key); w != "" {
				lastErr = errors.New("CRL signed with a weak key: " + w)
				continue
			}
		}
		if ci.fp == anchor.fp {
			return nil
		}
		if err := r.validateSigner(ctx, ci, anchor); err != nil {
			lastErr = fmt.Errorf("the CRL issuer certificate %q is not valid: %v", ci.c.Subject.String(), err)
			continue
		}
		return nil
	}
	return lastErr
}

func containsInfo(list []*certInfo, ci *certInfo) bool {
	for _, x := range list {
		if x.fp == ci.fp {
			return true
		}
	}
	return false
}

type signerKey struct{ signer, anchor [32]byte }

type signerResult struct {
	done bool
	err  error
}

// maxSignerDepth bounds CRL issuers whose certificates need CRLs whose
// issuers need... (PKITS goes two deep).
const maxSignerDepth = 3

// validateSigner validates the path of a CRL issuer's certificate to
// anchor, revocation included.
func (r *run) validateSigner(ctx context.Context, signer, anchor *certInfo) error {
	k := signerKey{signer.fp, anchor.fp}
	if res, ok := r.signers[k]; ok {
		if !res.done {
			// The CRL issuer's own status comes from a CRL it signed
			// (PKITS 4.14.30): its path is being validated by the caller,
			// whose result stands for both.
			r.warn("the revocation status of CRL issuer %q is taken from a CRL it signed itself", signer.c.Subject.String())
			return nil
		}
		return res.err
	}
	if r.depth >= maxSignerDepth {
		return errors.New("CRL issuer validation nested too deep")
	}
	res := &signerResult{}
	r.signers[k] = res
	r.depth++
	defer func() { r.depth-- }()
	anchors := newCertSet()
	anchors.add(anchor)
	b := r.newBuilder(anchors)
	var lastErr error = errors.New("no path to the trust anchor")
	found := false
	b.build(signer, func(path []*certInfo) bool {
		out := r.checkPathRole(ctx, path, PurposeAny, roleCRLSigner, true)
		if out.err == nil {
			found = true
			return false
		}
		lastErr = out.err
		return true
	})
	res.done = true
	if !found {
		res.err = lastErr
	}
	return res.err
}

// pickDelta returns the delta CRL that applies to the complete CRL base
// (section 5.2.4 and 6.3.3 (h)): same issuer and scope, based on base or an
// earlier CRL, current at the validation time and validly signed. An
// applicable delta that is not current makes base unusable: the status it
// would give may be out of date.
func (r *run) pickDelta(ctx context.Context, base *crlRecord, cands []*crlRecord, path []*certInfo, j int, keys []any) (*crlRecord, error) {
	if base.rl.Number == nil {
		return nil, nil
	}
	var best *crlRecord
	stale, malformed := "", ""
	for _, d := range cands {
		if !d.delta || d.issuerKey != base.issuerKey || d.baseNumber == nil || !sameScope(base, d) || d.baseNumber.Cmp(base.rl.Number) > 0 {
			continue
		}
		if d.rl.Number != nil && d.rl.Number.Cmp(base.rl.Number) <= 0 {
			continue
		}
		if d.unusable != "" {
			stale = d.unusable
			continue
		}
		if f, why := r.timeFit(d.rl.ThisUpdate, d.rl.NextUpdate, path[j].c); f == fitNone {
			stale = "delta CRL " + why
			continue
		}
		if err := r.crlSigner(ctx, d, path, j, keys); err != nil {
			stale = "delta CRL: " + err.Error()
			continue
		}
		if v := crlViolation(d); v != nil && !r.v.relax[path[len(path)-1].fp][v.rule] {
			malformed = fmt.Sprintf("the delta CRL of %q: %s", d.rl.Issuer.String(), v)
			continue
		}
		if d.rl.Number == nil {
			continue // relaxed: a delta without a number cannot be ordered
		}
		if best == nil || d.rl.Number.Cmp(best.rl.Number) > 0 {
			best = d
		}
	}
	switch {
	case best != nil:
		return best, nil
	case malformed != "":
		return nil, malformedCRLError(malformed)
	case stale != "":
		return nil, errors.New(stale)
	}
	return nil, nil
}

// malformedCRLError: an authentic delta CRL that breaks the CRL profile.
type malformedCRLError string

func (e malformedCRLError) Error() string { return "malformed CRL: " + string(e) }

func sameScope(a, b *crlRecord) bool {
	switch {
	case a.idp == nil && b.idp == nil:
		return true
	case a.idp == nil || b.idp == nil:
		return false
	}
	return string(a.idp.raw) == string(b.idp.raw)
}
