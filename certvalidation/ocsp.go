package certvalidation

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ocsp"
)

var (
	oidSHA1      = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
)

// The parts of an OCSP BasicResponse (RFC 6960 section 4.2.1) that
// golang.org/x/crypto/ocsp does not expose: the CertID of each response, to
// check it names our issuer (not just our serial number), and the response
// extensions, for the nonce.
type ocspResponseData struct {
	Version     int `asn1:"optional,default:0,explicit,tag:0"`
	ResponderID asn1.RawValue
	ProducedAt  time.Time `asn1:"generalized"`
	Responses   []ocspSingleResponse
	Extensions  []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type ocspSingleResponse struct {
	CertID     ocspCertID
	Status     asn1.RawValue
	ThisUpdate time.Time        `asn1:"generalized"`
	NextUpdate time.Time        `asn1:"generalized,explicit,tag:0,optional"`
	Extensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type ocspCertID struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	NameHash      []byte
	KeyHash       []byte
	Serial        *big.Int
}

type ocspRequestASN1 struct {
	TBS ocspTBSRequest
}

type ocspTBSRequest struct {
	RequestList []ocspSingleRequest
	Extensions  []pkix.Extension `asn1:"explicit,tag:2,optional"`
}

type ocspSingleRequest struct {
	CertID ocspCertID
}

// ocspRecord is a checked OCSP response, as the cache keeps it.
type ocspRecord struct {
	raw       []byte
	resp      *ocsp.Response
	responder string
	origin    string
	url       string
	sha256    string
}

func (o *ocspRecord) evidence(cert int, status, reason string) Evidence {
	ev := Evidence{
		Cert: cert, Type: "ocsp", Origin: o.origin, URL: o.url, Status: status, Reason: reason,
		Issuer: o.responder, SHA256: o.sha256, DER: o.raw, Raw: o.raw,
	}
	if o.resp != nil {
		ev.ThisUpdate, ev.ProducedAt = o.resp.ThisUpdate.UTC(), o.resp.ProducedAt.UTC()
		if !o.resp.NextUpdate.IsZero() {
			ev.NextUpdate = o.resp.NextUpdate.UTC()
		}
		if o.resp.Status == ocsp.Revoked {
			ev.RevokedAt = o.resp.RevokedAt.UTC()
		}
	}
	return ev
}

// publicKeyBits returns the subjectPublicKey BIT STRING of a certificate,
// what an OCSP CertID and a ResponderID byKey hash.
func publicKeyBits(c *x509.Certificate) ([]byte, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, err
	}
	return spki.PublicKey.RightAlign(), nil
}

func hashOf(h crypto.Hash, b []byte) []byte {
	hh := h.New()
	hh.Write(b)
	return hh.Sum(nil)
}

// ocspCacheKey identifies a certificate for the OCSP cache: its issuer's
// key and its serial number.
func ocspCacheKey(cert, issuer *certInfo) string {
	return hex.EncodeToString(issuer.fp[:8]) + "/" + hex.EncodeToString(hashOf(crypto.SHA256, issuer.c.RawSubjectPublicKeyInfo)[:8]) + "/" + cert.c.SerialNumber.Text(16)
}

// ocspRequest builds a DER OCSPRequest for cert (RFC 6960 section 4.1),
// with a SHA-1 CertID (the one RFC 5019 responders must support) and, when
// nonce is set, the nonce extension of RFC 8954.
func ocspRequest(cert, issuer *x509.Certificate, nonce []byte) ([]byte, error) {
	bits, err := publicKeyBits(issuer)
	if err != nil {
		return nil, err
	}
	req := ocspRequestASN1{TBS: ocspTBSRequest{RequestList: []ocspSingleRequest{{CertID: ocspCertID{
		HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidSHA1, Parameters: asn1.NullRawValue},
		NameHash:      hashOf(crypto.SHA1, issuer.RawSubject),
		KeyHash:       hashOf(crypto.SHA1, bits),
		Serial:        cert.SerialNumber,
	}}}}}
	if nonce != nil {
		v, err := asn1.Marshal(nonce)
		if err != nil {
			return nil, err
		}
		req.TBS.Extensions = []pkix.Extension{{Id: oidOCSPNonce, Value: v}}
	}
	return asn1.Marshal(req)
}

var ocspHashes = map[string]crypto.Hash{
	"1.3.14.3.2.26":          crypto.SHA1,
	"2.16.840.1.101.3.4.2.1": crypto.SHA256,
	"2.16.840.1.101.3.4.2.2": crypto.SHA384,
	"2.16.840.1.101.3.4.2.3": crypto.SHA512,
}

// checkOCSP verifies an OCSP response about path[j]: that it is about
// this certificate of this issuer, signed by the issuer or by a responder
// the issuer delegated to (RFC 6960 section 4.2.2.2: a certificate it
// issued with the id-kp-OCSPSigning extended key usage), and, when nonce
// is set, that it echoes it. It returns the checked response, or why it
// cannot be used.
func (r *run) checkOCSP(der []byte, cert, issuer *certInfo, issuerKey any, nonce []byte, origin, url string) (*ocspRecord, error) {
	s := r.v.s
	rec := &ocspRecord{raw: der, origin: origin, url: url, sha256: sha256Hex(der)}
	resp, err := ocsp.ParseResponseForCert(der, cert.c, nil)
	if err != nil {
		if re, ok := errors.AsType[ocsp.ResponseError](err); ok {
			return rec, fmt.Errorf("OCSP responder answered %s", re.Status)
		}
		return rec, fmt.Errorf("OCSP response: %v", err)
	}
	rec.resp = resp
	var rd ocspResponseData
	if rest, err := asn1.Unmarshal(resp.TBSResponseData, &rd); err != nil || len(rest) > 0 {
		return rec, errors.New("OCSP response: malformed response data")
	}
	// The single response chosen must name our issuer, not only our
	// serial number.
	var single *ocspSingleResponse
	for i := range rd.Responses {
		if rd.Responses[i].CertID.Serial != nil && rd.Responses[i].CertID.Serial.Cmp(cert.c.SerialNumber) == 0 {
			single = &rd.Responses[i]
			break
		}
	}
	if single == nil {
		return rec, errors.New("OCSP response: not about this certificate")
	}
	h, ok := ocspHashes[single.CertID.HashAlgorithm.Algorithm.String()]
	if !ok {
		return rec, errors.New("OCSP response: unsupported CertID hash")
	}
	bits, err := publicKeyBits(issuer.c)
	if err != nil {
		return rec, err
	}
	if !bytes.Equal(single.CertID.NameHash, hashOf(h, issuer.c.RawSubject)) || !bytes.Equal(single.CertID.KeyHash, hashOf(h, bits)) {
		return rec, errors.New("OCSP response: about a certificate of another issuer")
	}

	// Who signed it.
	if !s.allowWeak && weakSignature(resp.SignatureAlgorithm) {
		return rec, fmt.Errorf("OCSP response signature algorithm %v refused as weak", resp.SignatureAlgorithm)
	}
	signer := issuer.c
	switch {
	case resp.Certificate == nil || bytes.Equal(resp.Certificate.RawSubjectPublicKeyInfo, issuer.c.RawSubjectPublicKeyInfo):
		// Signed by the CA itself.
		if err := checkSignature(resp.SignatureAlgorithm, resp.TBSResponseData, resp.Signature, issuerKey); err != nil {
			return rec, errors.New("OCSP response signature does not verify with the issuer's key")
		}
		rec.responder = issuer.c.Subject.String()
	default:
		// A delegated responder (RFC 6960 section 4.2.2.2). The response's
		// signature by resp.Certificate was checked by ParseResponseForCert.
		rc := resp.Certificate
		signer = rc
		rec.responder = rc.Subject.String()
		rci := r.info(rc)
		if rci.issuerKey != issuer.subjectKey {
			return rec, fmt.Errorf("OCSP responder %q was not issued by the certificate's issuer", rc.Subject.String())
		}
		if !s.allowWeak && weakSignature(rc.SignatureAlgorithm) {
			return rec, fmt.Errorf("OCSP responder certificate signature algorithm %v refused as weak", rc.SignatureAlgorithm)
		}
		if err := checkSignature(rc.SignatureAlgorithm, rc.RawTBSCertificate, rc.Signature, issuerKey); err != nil {
			return rec, fmt.Errorf("OCSP responder %q was not issued by the certificate's issuer", rc.Subject.String())
		}
		if !hasEKU(rc, x509.ExtKeyUsageOCSPSigning) {
			return rec, fmt.Errorf("OCSP responder %q is not authorised: no id-kp-OCSPSigning extended key usage", rc.Subject.String())
		}
		if rci.hasKU && rc.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
			return rec, fmt.Errorf("OCSP responder %q: key usage does not allow signing", rc.Subject.String())
		}
		if len(rci.unknownCritical) > 0 {
			return rec, fmt.Errorf("OCSP responder %q: unsupported critical extension", rc.Subject.String())
		}
		at := resp.ProducedAt
		if at.Before(rc.NotBefore) || at.After(rc.NotAfter) {
			return rec, fmt.Errorf("OCSP responder certificate %q not valid when the response was produced", rc.Subject.String())
		}
		if !s.allowWeak {
			if w := weakKey(rc.PublicKey); w != "" {
				return rec, errors.New("OCSP responder key refused as weak: " + w)
			}
		}
	}
	if !s.allowWeak {
		if w := weakKey(signer.PublicKey); w != "" {
			return rec, errors.New("OCSP response signed with a weak key: " + w)
		}
	}
	// The ResponderID must name the signer.
	switch {
	case resp.RawResponderName != nil:
		dn, err := parseName(resp.RawResponderName)
		if err != nil || !dn.equal(r.info(signer).subject) {
			return rec, errors.New("OCSP response: responder name does not match the signer")
		}
	case resp.ResponderKeyHash != nil:
		sb, err := publicKeyBits(signer)
		if err != nil || !bytes.Equal(resp.ResponderKeyHash, hashOf(crypto.SHA1, sb)) {
			return rec, errors.New("OCSP response: responder key hash does not match the signer")
		}
	}
	if nonce != nil {
		var got []byte
		for _, e := range rd.Extensions {
			if e.Id.Equal(oidOCSPNonce) {
				got = e.Value
			}
		}
		want, _ := asn1.Marshal(nonce)
		if !bytes.Equal(got, want) {
			return rec, errors.New("OCSP response does not echo the request's nonce")
		}
	}
	// What stays cached is the status and the bytes: the responder's
	// parsed certificate (most of the memory) has done its job.
	trimmed := *resp
	trimmed.Certificate = nil
	rec.resp = &trimmed
	return rec, nil
}

// ocspStatus reads what a checked response says of cert at the validation
// time.
func (r *run) ocspStatus(rec *ocspRecord, cert *certInfo, j int) revResult {
	resp := rec.resp
	var res revResult
	f, why := r.timeFit(resp.ThisUpdate, resp.NextUpdate, cert.c)
	if f == fitNone {
		res.reason = "OCSP response " + why
		res.evidence = []Evidence{rec.evidence(j, "unusable", res.reason)}
		return res
	}
	res.until = r.dataUntil(resp.ThisUpdate, resp.NextUpdate)
	res.source = "ocsp"
	switch resp.Status {
	case ocsp.Good:
		res.status = statusGood
		res.evidence = []Evidence{rec.evidence(j, "good", "")}
	case ocsp.Revoked:
		if f == fitLater && resp.RevokedAt.After(r.at) {
			r.warn("certificate %q revoked at %s, after the validation time", cert.c.Subject.String(), resp.RevokedAt.UTC().Format(time.RFC3339))
			res.status = statusGood
			res.evidence = []Evidence{rec.evidence(j, "good", "revoked after the validation time")}
			break
		}
		res.status = statusRevoked
		res.reason = reasonName(resp.RevocationReason)
		res.revokedAt = resp.RevokedAt
		res.evidence = []Evidence{rec.evidence(j, "revoked", res.reason)}
	default:
		res.reason = "the OCSP responder does not know the certificate"
		res.evidence = []Evidence{rec.evidence(j, "unknown", "")}
	}
	return res
}

// fetchOCSP asks the certificate's OCSP responders (authority information
// access, RFC 5280 section 4.2.2.1) in turn until one gives a definite
// answer, and caches it.
func (r *run) fetchOCSP(ctx context.Context, path []*certInfo, j int, keys []any) (revResult, []string) {
	cert, issuer := path[j], path[j+1]
	var ev []Evidence
	var problems []string
	for _, u := range cert.c.OCSPServer {
		if !fetchableURL(u) {
			continue
		}
		if !r.takeFetch() {
			problems = append(problems, "limits.max_fetches: fetch budget exhausted before "+u)
			break
		}
		key := hex.EncodeToString(hashOf(crypto.SHA256, []byte(ocspCacheKey(cert, issuer))))
		useNonce := r.v.s.nonce
		body, nonce, err := r.v.fetch.post(ctx, "ocsp", u, key, "application/ocsp-request", func() ([]byte, []byte, error) {
			var nonce []byte
			if useNonce {
				nonce = make([]byte, 16)
				if _, err := rand.Read(nonce); err != nil {
					return nil, nil, err
				}
			}
			req, err := ocspRequest(cert.c, issuer.c, nonce)
			return req, nonce, err
		}, r.v.s.maxResponseBytes)
		if err != nil {
			problems = append(problems, fmt.Sprintf("OCSP %s: %v", u, err))
			continue
		}
		rec, err := r.checkOCSP(body, cert, issuer, keys[j+1], nonce, "fetched", u)
		if err != nil {
			ev = append(ev, rec.evidence(j, "unusable", err.Error()))
			problems = append(problems, fmt.Sprintf("OCSP %s: %v", u, err))
			continue
		}
		res := r.ocspStatus(rec, cert, j)
		res.evidence = append(ev, res.evidence...)
		if res.status != statusUnknown {
			until := r.dataUntil(rec.resp.ThisUpdate, rec.resp.NextUpdate)
			if limit := r.now.Add(r.v.s.cacheMaxAge); until.After(limit) {
				until = limit
			}
			if until.After(r.now) {
				r.v.ocspCache.put(ocspCacheKey(cert, issuer), rec, until)
			}
			return res, problems
		}
		ev = res.evidence
		problems = append(problems, fmt.Sprintf("OCSP %s: %s", u, res.reason))
	}
	return revResult{evidence: ev}, problems
}

// certStatus establishes the revocation status of path[j]: OCSP responses
// given with the request, then the OCSP cache, then the CRLs at hand (given,
// local, cached), then OCSP from the responder, then CRLs from the
// distribution points.
func (r *run) certStatus(ctx context.Context, path []*certInfo, j int, keys []any) revResult {
	cert, issuer := path[j], path[j+1]
	var ev []Evidence
	var problems []string
	definite := func(res revResult) bool { return res.status != statusUnknown }

	for _, der := range r.opts.OCSPResponses {
		rec, err := r.checkOCSP(der, cert, issuer, keys[j+1], nil, "request", "")
		if err != nil {
			if rec.resp != nil && rec.resp.SerialNumber != nil && rec.resp.SerialNumber.Cmp(cert.c.SerialNumber) == 0 {
				ev = append(ev, rec.evidence(j, "unusable", err.Error()))
				problems = append(problems, err.Error())
			}
			continue
		}
		res := r.ocspStatus(rec, cert, j)
		ev = append(ev, res.evidence...)
		if definite(res) {
			res.evidence = ev
			return res
		}
		problems = append(problems, res.reason)
	}
	if len(cert.c.OCSPServer) > 0 {
		rec, ok := r.v.ocspCache.get(ocspCacheKey(cert, issuer), r.now)
		r.v.m.lookup("ocsp", ok)
		if ok {
			c := *rec
			c.origin = "cache"
			res := r.ocspStatus(&c, cert, j)
			ev = append(ev, res.evidence...)
			if definite(res) {
				res.evidence = ev
				return res
			}
		}
	}
	res := r.crlStatus(ctx, path, j, keys, r.crlCandidates(cert))
	ev = append(ev, res.evidence...)
	if definite(res) {
		res.evidence = ev
		return res
	}
	malformed := res.malformed
	if res.reason != "" {
		problems = append(problems, res.reason)
	}
	if !r.offline {
		ores, p := r.fetchOCSP(ctx, path, j, keys)
		ev = append(ev, ores.evidence...)
		problems = append(problems, p...)
		if definite(ores) {
			ores.evidence = ev
			return ores
		}
		if urls := crlURLs(cert); len(urls) > 0 {
			problems = append(problems, r.fetchCRLs(ctx, cert)...)
			res := r.crlStatus(ctx, path, j, keys, r.crlCandidates(cert))
			ev = append(ev, res.evidence...)
			if definite(res) {
				res.evidence = ev
				return res
			}
			malformed = cmp.Or(malformed, res.malformed)
			if res.reason != "" {
				problems = append(problems, res.reason)
			}
		}
	}
	if len(problems) == 0 {
		switch {
		case len(cert.c.OCSPServer) == 0 && len(cert.crldp) == 0:
			problems = append(problems, "no CRL at hand, and the certificate names no OCSP responder and no CRL distribution point")
		case r.offline:
			problems = append(problems, "no CRL or OCSP response at hand, and fetching is off")
		default:
			problems = append(problems, "no CRL or OCSP response found")
		}
	}
	return revResult{status: statusUnknown, reason: joinProblems(problems), evidence: ev, malformed: malformed}
}

func joinProblems(p []string) string {
	p = uniq(p)
	out := ""
	for i, s := range p {
		if i > 0 {
			out += "; "
		}
		out += s
	}
	if out == "" {
		out = "no revocation data"
	}
	return out
}

// softFailReuse bounds how long a decision made without revocation data
// (RevocationPrefer) is reused.
const softFailReuse = time.Minute

// checkRevocation checks every certificate of an otherwise valid path but
// the trust anchor, under the revocation policy.
func (r *run) checkRevocation(ctx context.Context, out *pathOutcome, keys []any) {
	path := out.path
	n := len(path) - 1
	if r.policy == RevocationNone {
		for j := 0; j < n; j++ {
			out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusSkipped, Detail: "revocation policy none"})
		}
		return
	}
	var unknown *Error
	for j := 0; j < n; j++ {
		cert := path[j]
		refused := r.refused
		res := r.certStatus(ctx, path, j, keys)
		out.evidence = append(out.evidence, res.evidence...)
		switch res.status {
		case statusGood:
			out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusOK, Detail: "not revoked (" + res.source + ")"})
			out.progress++
			if !res.until.IsZero() && res.until.Before(out.until) {
				out.until = res.until
			}
		case statusRevoked:
			detail := fmt.Sprintf("revoked at %s (%s), according to %s", res.revokedAt.UTC().Format(time.RFC3339), res.reason, res.source)
			out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusFailed, Detail: detail})
			out.err = &Error{Cert: cert.c, Depth: j, Reason: ReasonRevoked, Detail: detail}
			return
		default:
			if res.malformed != "" {
				// The issuer's own CRL is broken: whatever the policy, its
				// certificates are not taken on trust.
				out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusFailed, Detail: res.malformed})
				out.err = &Error{Cert: cert.c, Depth: j, Reason: ReasonMalformedCRL, Detail: res.malformed}
				return
			}
			if r.policy == RevocationRequire {
				out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusFailed, Detail: res.reason})
				if unknown == nil {
					unknown = &Error{Cert: cert.c, Depth: j, Reason: ReasonRevocationUnknown, Detail: "revocation status unknown: " + res.reason}
					if r.refused > refused {
						// Not the responders' failure: the bound's.
						unknown.Reason = ReasonLimitExceeded
					}
				}
				continue
			}
			out.checks = append(out.checks, Check{Name: "revocation", Cert: j, Status: StatusWarning, Detail: res.reason})
			r.warn("revocation status of %q unknown: %s", cert.c.Subject.String(), res.reason)
			// A soft-fail is not reused for long: the data may come back.
			if limit := r.now.Add(softFailReuse); limit.Before(out.until) {
				out.until = limit
			}
		}
	}
	if unknown != nil {
		out.err = unknown
	}
}

// readInteger reads a DER INTEGER (an extension value) into n.
func readInteger(der []byte, n *big.Int) error {
	in := cryptobyte.String(der)
	if !in.ReadASN1Integer(n) || !in.Empty() {
		return errors.New("malformed INTEGER")
	}
	return nil
}
