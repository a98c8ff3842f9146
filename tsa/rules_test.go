package tsa_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/cms"
	"pec/internal/devpki"
	"pec/tsa"
)

// DER tags used to build tokens.
const (
	tInteger  = 0x02
	tBitStr   = 0x03
	tOctets   = 0x04
	tNull     = 0x05
	tOID      = 0x06
	tUTF8     = 0x0c
	tIA5      = 0x16
	tUTCTime  = 0x17
	tGenTime  = 0x18
	tSeq      = 0x30
	tSet      = 0x31
	tBoolean  = 0x01
	tCtx0     = 0xa0 // [0] constructed
	tCtx1     = 0xa1
	tCtx0Prim = 0x80 // [0] primitive
	tCtx1Prim = 0x81
)

// Positions of the TSTInfo fields in the tokens of ruleTSA (RFC 3161
// section 2.4.2): the authority declares an accuracy and ordering, the
// request carries a nonce, and the TSA name is always written.
const (
	fVersion = iota
	fPolicy
	fImprint
	fSerial
	fGenTime
	fAccuracy
	fOrdering
	fNonce
	fTSAName
	nFields
)

func tlv(tag byte, content ...[]byte) []byte { return cms.AppendTLV(nil, tag, content...) }

func derOf(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedAttr is an Attribute { type, SET { values } }.
func signedAttr(t testing.TB, oid asn1.ObjectIdentifier, values ...[]byte) []byte {
	return tlv(tSeq, derOf(t, oid), tlv(tSet, values...))
}

// essV2 is a signingCertificateV2 attribute naming cert with the default
// SHA-256 (RFC 5035 section 5.4.1.1); essV1 a signingCertificate (RFC
// 2634) with SHA-1.
func essV2(t testing.TB, cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.Raw)
	return signedAttr(t, cms.OIDAttrSigningCertV2, tlv(tSeq, tlv(tSeq, tlv(tSeq, tlv(tOctets, sum[:])))))
}

func essV1(t testing.TB, cert *x509.Certificate) []byte {
	sum := sha1.Sum(cert.Raw)
	return signedAttr(t, cms.OIDAttrSigningCertV1, tlv(tSeq, tlv(tSeq, tlv(tSeq, tlv(tOctets, sum[:])))))
}

// tokenSpec is a time-stamp token taken apart: the TSTInfo's fields and
// what the SignerInfo signs. encode puts it together again and signs it,
// so that a case can break one rule and keep every other one, the
// signature included.
type tokenSpec struct {
	fields       [][]byte // the TSTInfo fields, DER elements in order
	eContent     []byte   // when set, the eContent instead of SEQUENCE { fields }
	eContentType asn1.ObjectIdentifier
	detached     bool
	certs        []*x509.Certificate // in the token
	key          crypto.Signer       // signs
	sid          *x509.Certificate   // the issuerAndSerialNumber, and the default ESS attribute
	digest       crypto.Hash         // of the SignerInfo
	digestParams []byte              // parameters of its AlgorithmIdentifier; nil: absent
	attrs        [][]byte            // signed attributes besides content-type and message-digest; nil: essV2(sid)
	contentType  []byte              // value of the content-type attribute; nil: id-ct-TSTInfo
	noMD         bool                // no message-digest attribute
	md           []byte              // value of the message-digest; nil: the digest of the eContent
	signers      int                 // SignerInfos; 0 is 1, -1 is none
}

func (s tokenSpec) clone() tokenSpec {
	s.fields = slices.Clone(s.fields)
	s.attrs = slices.Clone(s.attrs)
	s.certs = slices.Clone(s.certs)
	return s
}

func (s tokenSpec) tstInfo() []byte {
	if s.eContent != nil {
		return s.eContent
	}
	return tlv(tSeq, s.fields...)
}

func (s tokenSpec) encode(t testing.TB) []byte {
	t.Helper()
	tst := s.tstInfo()
	h := s.digest
	if h == 0 {
		h = crypto.SHA256
	}
	ect := s.eContentType
	if ect == nil {
		ect = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	}
	ct := s.contentType
	if ct == nil {
		ct = derOf(t, ect)
	}
	attrs := [][]byte{signedAttr(t, cms.OIDAttrContentType, ct)}
	if !s.noMD {
		md := s.md
		if md == nil {
			md = cms.Digest(h, tst)
		}
		attrs = append(attrs, signedAttr(t, cms.OIDAttrMessageDigest, tlv(tOctets, md)))
	}
	if s.attrs == nil {
		attrs = append(attrs, essV2(t, s.sid))
	} else {
		attrs = append(attrs, s.attrs...)
	}
	slices.SortFunc(attrs, bytes.Compare) // DER SET OF
	set := tlv(tSet, attrs...)
	hh := h.New()
	hh.Write(set)
	sig, err := s.key.Sign(rand.Reader, hh.Sum(nil), h)
	if err != nil {
		t.Fatal(err)
	}
	sigAlg := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: cms.OIDECDSAWithSHA256, crypto.SHA384: cms.OIDECDSAWithSHA384, crypto.SHA1: cms.OIDECDSAWithSHA1}[h]
	digestOID := cms.OIDOfHash(h)
	if h == crypto.SHA1 {
		digestOID = cms.OIDSHA1
	}
	digestAlg := tlv(tSeq, derOf(t, digestOID), s.digestParams)
	si := tlv(tSeq,
		tlv(tInteger, []byte{1}),
		tlv(tSeq, s.sid.RawIssuer, derOf(t, s.sid.SerialNumber)),
		digestAlg,
		tlv(tCtx0, attrs...), // [0] IMPLICIT SET OF Attribute
		tlv(tSeq, derOf(t, sigAlg)),
		tlv(tOctets, sig))
	var infos [][]byte
	switch s.signers {
	case 0:
		infos = [][]byte{si}
	case -1:
	default:
		for range s.signers {
			infos = append(infos, si)
		}
	}
	encap := [][]byte{derOf(t, ect)}
	if !s.detached {
		encap = append(encap, tlv(tCtx0, tlv(tOctets, tst)))
	}
	sd := [][]byte{tlv(tInteger, []byte{3}), tlv(tSet, digestAlg), tlv(tSeq, encap...)}
	if len(s.certs) > 0 {
		var raw [][]byte
		for _, c := range s.certs {
			raw = append(raw, c.Raw)
		}
		sd = append(sd, tlv(tCtx0, raw...))
	}
	sd = append(sd, tlv(tSet, infos...))
	return tlv(tSeq, derOf(t, cms.OIDSignedData), tlv(tCtx0, tlv(tSeq, sd...)))
}

// setContent is the content of a SET element (header dropped).
func contentOf(t testing.TB, elem []byte) []byte {
	t.Helper()
	s := cryptobyte.String(elem)
	var c cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&c, &tag) {
		t.Fatal("not a DER element")
	}
	return c
}

// elements splits DER content into its elements.
func elements(t testing.TB, content []byte) [][]byte {
	t.Helper()
	s := cryptobyte.String(content)
	var out [][]byte
	for !s.Empty() {
		var e cryptobyte.String
		var tag cbasn1.Tag
		if !s.ReadAnyASN1Element(&e, &tag) {
			t.Fatal("not DER elements")
		}
		out = append(out, bytes.Clone(e))
	}
	return out
}

// ruleTSA is a TSA whose tokens the rule tables take apart.
type ruleTSA struct {
	root      *devpki.CA
	roots     *x509.CertPool
	key       *ecdsa.PrivateKey
	cert      *x509.Certificate
	authority *tsa.Authority
}

func newRuleTSA(t testing.TB) *ruleTSA {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root, err := devpki.NewRootCA(rootKey, "Rules Root", now)
	if err != nil {
		t.Fatal(err)
	}
	r := &ruleTSA{root: root, roots: x509.NewCertPool()}
	r.roots.AddCert(root.Cert)
	if r.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if r.cert, err = root.IssueTSA(r.key.Public(), "Rules TSA", now); err != nil {
		t.Fatal(err)
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(t.TempDir(), "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	cfg := tsa.Config{PolicyOID: "2.999.3161.1", Accuracy: 1500 * time.Millisecond, Ordering: true}
	if r.authority, err = tsa.New(cfg, r.key, []*x509.Certificate{r.cert, root.Cert}, serials, tsa.Options{}); err != nil {
		t.Fatal(err)
	}
	return r
}

// respond has the authority stamp digest (SHA-256), with a nonce and
// certReq.
func (r *ruleTSA) respond(t testing.TB, digest []byte) []byte {
	t.Helper()
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Nonce: big.NewInt(0x5eed), Certificates: true}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.authority.Respond(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// spec takes a token of the authority apart.
func (r *ruleTSA) spec(t testing.TB, resp []byte) tokenSpec {
	t.Helper()
	tok, err := tsa.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.ParseSignedData(tok.Raw)
	if err != nil {
		t.Fatal(err)
	}
	fields := elements(t, contentOf(t, sd.Content))
	wantTags := []byte{tInteger, tOID, tSeq, tInteger, tGenTime, tSeq, tBoolean, tInteger, tCtx0}
	if len(fields) != nFields {
		t.Fatalf("the authority's TSTInfo has %d fields, want %d", len(fields), nFields)
	}
	for i, f := range fields {
		if f[0] != wantTags[i] {
			t.Fatalf("TSTInfo field %d has tag %#x, want %#x", i, f[0], wantTags[i])
		}
	}
	return tokenSpec{fields: fields, certs: tok.Certificates, key: r.key, sid: r.cert}
}

func genTime(s string) []byte { return tlv(tGenTime, []byte(s)) }

func imprint(t testing.TB, oid asn1.ObjectIdentifier, params []byte, digest []byte) []byte {
	alg := tlv(tSeq, derOf(t, oid))
	if params != nil {
		alg = tlv(tSeq, derOf(t, oid), params)
	}
	return tlv(tSeq, alg, tlv(tOctets, digest))
}

func accuracy(parts ...[]byte) []byte { return tlv(tSeq, parts...) }

// tsaName is the TSTInfo tsa field: [0] EXPLICIT GeneralName.
func tsaName(gn []byte) []byte { return tlv(tCtx0, gn) }

func directoryName(name []byte) []byte { return tsaName(tlv(0xa4, name)) }

// issueTSACert issues a certificate for the rule TSA's key from tmpl,
// with defaults for what tmpl leaves out.
func (r *ruleTSA) issue(t testing.TB, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	if tmpl.Subject.CommonName == "" {
		tmpl.Subject = pkix.Name{CommonName: "Rules TSA", Organization: []string{"PEC development"}}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	c, err := r.root.Issue(tmpl, r.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ekuExt(t testing.TB, critical bool, oids ...asn1.ObjectIdentifier) []pkix.Extension {
	return []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: critical, Value: derOf(t, oids)}}
}

// TestVerifyRules: tokens of the in-process authority, each taken apart,
// changed so that it breaks exactly one rule that tsa.Verify enforces, and
// signed again with the TSA's key (so that only that rule can refuse it),
// one case per rule and named after it. Each refusal must wrap the
// rule's error and say why: removing any one check of verify.go fails a
// case. The valid cases beside them are the same tokens with the rule
// kept, so that a case fails only by its change.
func TestVerifyRules(t *testing.T) {
	t.Parallel()
	r := newRuleTSA(t)
	data := []byte("the dossier stamped")
	sum := sha256.Sum256(data)
	resp := r.respond(t, sum[:])
	base := r.spec(t, resp)
	token, err := tsa.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	now := token.GenTime

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherRootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, err := devpki.NewRootCA(otherRootKey, "Other Root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherRoot.Cert)
	foreign, err := otherRoot.IssueTSA(r.key.Public(), "Rules TSA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	twin := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, true, devpki.OIDTimeStamping)})
	tsEKU := func() []pkix.Extension { return ekuExt(t, true, devpki.OIDTimeStamping) }
	named := r.issue(t, &x509.Certificate{
		KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: tsEKU(),
		DNSNames: []string{"tsa.example"}, EmailAddresses: []string{"tsa@example.org"},
		URIs: []*url.URL{{Scheme: "https", Host: "tsa.example", Path: "/"}}, IPAddresses: []net.IP{net.ParseIP("192.0.2.7")},
	})
	serverAuth := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	nonCritical := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, false, devpki.OIDTimeStamping)})
	noEKU := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature})
	twoEKUs := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, true, devpki.OIDTimeStamping, serverAuth)})
	unknownEKU := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, true, devpki.OIDTimeStamping, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1})})
	serverOnly := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, true, serverAuth)})
	certSignOnly := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageCertSign, ExtraExtensions: tsEKU()})
	nonRepudiation := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageContentCommitment, ExtraExtensions: tsEKU()})
	noKeyUsage := r.issue(t, &x509.Certificate{ExtraExtensions: tsEKU()})
	expired := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: tsEKU(), NotBefore: now.Add(-50 * time.Minute), NotAfter: now.Add(-10 * time.Minute)})
	later := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: tsEKU(), NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	interCert, err := r.root.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "Rules Intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	inter := &devpki.CA{Cert: interCert, Signer: interKey}
	underInter, err := inter.IssueTSA(r.key.Public(), "Rules TSA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	interPool := x509.NewCertPool()
	interPool.AddCert(interCert)

	// with changes a copy of the authority's token.
	with := func(f func(s *tokenSpec)) []byte {
		s := base.clone()
		f(&s)
		return s.encode(t)
	}
	field := func(i int, v []byte) []byte { return with(func(s *tokenSpec) { s.fields[i] = v }) }
	drop := func(i int) func(s *tokenSpec) {
		return func(s *tokenSpec) { s.fields = slices.Delete(s.fields, i, i+1) }
	}
	signedBy := func(c *x509.Certificate) func(s *tokenSpec) {
		return func(s *tokenSpec) {
			s.sid, s.certs = c, []*x509.Certificate{c}
			s.fields[fTSAName] = directoryName(c.RawSubject)
		}
	}
	gt := func(layout string) string { return now.UTC().Format(layout) }
	sha1Sum := sha1.Sum(data)
	sha512Sum := digestOf(crypto.SHA512, data)
	var tsaCertOnly = func(o *tsa.VerifyOptions) { o.Certificates = []*x509.Certificate{r.cert} }

	type opt = func(*tsa.VerifyOptions)
	for _, tc := range []struct {
		name   string
		in     []byte
		digest []byte      // nil: sum
		hash   crypto.Hash // 0: SHA-256
		opts   opt
		want   error  // nil: valid
		msg    string // in the error
	}{
		// Valid: the authority's response and token, and the rebuilt
		// token with nothing changed.
		{name: "valid/the authority's response", in: resp},
		{name: "valid/the authority's token", in: token.Raw},
		{name: "valid/rebuilt unchanged", in: base.encode(t)},
		{name: "valid/PEM", in: pem.EncodeToMemory(&pem.Block{Type: "TSA RESPONSE", Bytes: resp})},
		{name: "valid/granted with modifications", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{1})), token.Raw)},

		// The TimeStampResp (RFC 3161 section 2.4.2).
		{name: "response/rejection", in: tsa.Reject(tsa.FailBadAlg, "no"), want: &tsa.RejectError{}},
		{name: "response/waiting is no grant", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{3}))), want: &tsa.RejectError{}},
		{name: "response/granted without a token", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{0}))), want: tsa.ErrMalformed, msg: "granted response without a timeStampToken"},
		{name: "response/PKIStatus not a small INTEGER", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, bytes.Repeat([]byte{0x7f}, 9))), token.Raw), want: tsa.ErrMalformed, msg: "PKIStatus is not a small INTEGER"},
		{name: "response/no PKIStatusInfo", in: tlv(tSeq, tlv(tInteger, []byte{0})), want: tsa.ErrMalformed},
		{name: "response/statusString not UTF8String", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{0}), tlv(tSeq, tlv(tIA5, []byte("ok")))), token.Raw), want: tsa.ErrMalformed, msg: "statusString"},
		{name: "response/failInfo not a BIT STRING", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{2}), tlv(tBitStr, []byte{8, 0}))), want: tsa.ErrMalformed, msg: "failInfo is not a BIT STRING"},
		{name: "response/extra field in PKIStatusInfo", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{0}), tlv(tNull)), token.Raw), want: tsa.ErrMalformed, msg: "unexpected field in PKIStatusInfo"},
		{name: "response/extra field after the token", in: tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{0})), token.Raw, tlv(tNull)), want: tsa.ErrMalformed, msg: "unexpected field in TimeStampResp"},
		{name: "response/trailing data", in: append(bytes.Clone(resp), 0), want: tsa.ErrMalformed, msg: "trailing data"},
		{name: "response/truncated SEQUENCE", in: []byte{tSeq, 5, tNull, 0}, want: tsa.ErrMalformed, msg: "not a DER SEQUENCE"},
		{name: "response/PEM with data after", in: append(pem.EncodeToMemory(&pem.Block{Type: "TSA RESPONSE", Bytes: resp}), "more"...), want: tsa.ErrMalformed, msg: "data after the PEM block"},
		{name: "response/neither DER nor PEM", in: []byte("time-stamp"), want: tsa.ErrMalformed, msg: "neither DER nor PEM"},

		// The SignedData around the TSTInfo (RFC 3161 section 2.4.2).
		{name: "content/eContentType id-data", in: with(func(s *tokenSpec) { s.eContentType = cms.OIDData }), want: tsa.ErrMalformed, msg: "is not id-ct-TSTInfo"},
		{name: "content/detached", in: with(func(s *tokenSpec) { s.detached = true }), want: tsa.ErrMalformed, msg: "no eContent"},
		{name: "content/no SignerInfo", in: with(func(s *tokenSpec) { s.signers = -1 }), want: tsa.ErrMalformed, msg: "no SignerInfo"},
		{name: "content/two SignerInfos", in: with(func(s *tokenSpec) { s.signers = 2 }), want: tsa.ErrMalformed, msg: "more than one SignerInfo"},

		// The TSTInfo syntax, signed.
		{name: "TSTInfo/not a SEQUENCE", in: with(func(s *tokenSpec) { s.eContent = tlv(tSet, s.fields...) }), want: tsa.ErrMalformed, msg: "TSTInfo is not a DER SEQUENCE"},
		{name: "TSTInfo/trailing data", in: with(func(s *tokenSpec) { s.eContent = append(tlv(tSeq, s.fields...), tlv(tNull)...) }), want: tsa.ErrMalformed, msg: "trailing data after the TSTInfo"},
		{name: "TSTInfo/version 2", in: field(fVersion, tlv(tInteger, []byte{2})), want: tsa.ErrMalformed, msg: "version is not 1"},
		{name: "TSTInfo/policy not an OID", in: field(fPolicy, tlv(tInteger, []byte{1})), want: tsa.ErrMalformed, msg: "policy is not an OID"},
		{name: "TSTInfo/messageImprint not a SEQUENCE", in: field(fImprint, tlv(tOctets, sum[:])), want: tsa.ErrMalformed, msg: "messageImprint is not a SEQUENCE"},
		{name: "TSTInfo/messageImprint hashAlgorithm not an AlgorithmIdentifier", in: field(fImprint, tlv(tSeq, tlv(tOctets, sum[:]))), want: tsa.ErrMalformed, msg: "hashAlgorithm"},
		{name: "TSTInfo/messageImprint hashedMessage not an OCTET STRING", in: field(fImprint, tlv(tSeq, tlv(tSeq, derOf(t, cms.OIDSHA256)), tlv(tBitStr, append([]byte{0}, sum[:]...)))), want: tsa.ErrMalformed, msg: "hashedMessage is not an OCTET STRING"},
		{name: "TSTInfo/messageImprint with an extra field", in: field(fImprint, tlv(tSeq, tlv(tSeq, derOf(t, cms.OIDSHA256)), tlv(tOctets, sum[:]), tlv(tNull))), want: tsa.ErrMalformed, msg: "hashedMessage is not an OCTET STRING"},
		{name: "TSTInfo/messageImprint hash unknown", in: field(fImprint, imprint(t, asn1.ObjectIdentifier{1, 2, 3, 4}, nil, sum[:])), want: tsa.ErrUnsupportedAlgorithm, msg: "message imprint hash algorithm"},
		{name: "TSTInfo/messageImprint hash with parameters", in: field(fImprint, imprint(t, cms.OIDSHA256, tlv(tInteger, []byte{1}), sum[:])), want: tsa.ErrUnsupportedAlgorithm, msg: "message imprint hash algorithm"},
		{name: "valid/messageImprint hash with NULL parameters", in: field(fImprint, imprint(t, cms.OIDSHA256, tlv(tNull), sum[:]))},
		{name: "TSTInfo/messageImprint shorter than its hash", in: field(fImprint, imprint(t, cms.OIDSHA256, nil, sum[:31])), want: tsa.ErrMalformed, msg: "message imprint has 31 bytes"},
		{name: "TSTInfo/serialNumber not an INTEGER", in: field(fSerial, tlv(tOctets, []byte{1})), want: tsa.ErrMalformed, msg: "serialNumber is not an INTEGER"},
		{name: "TSTInfo/genTime a UTCTime", in: field(fGenTime, tlv(tUTCTime, []byte(gt("060102150405Z")))), want: tsa.ErrMalformed, msg: "genTime is not a GeneralizedTime"},
		{name: "valid/genTime in whole seconds", in: field(fGenTime, genTime(gt("20060102150405Z")))},
		{name: "valid/genTime with a fraction", in: field(fGenTime, genTime(gt("20060102150405")+".25Z"))},
		{name: "genTime/without Z", in: field(fGenTime, genTime(gt("20060102150405"))), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/with an offset", in: field(fGenTime, genTime(gt("20060102150405")+"+0000")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/empty", in: field(fGenTime, genTime("")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/a digit for the Z", in: field(fGenTime, genTime(gt("20060102150405")+"7")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/without seconds", in: field(fGenTime, genTime(gt("200601021504Z"))), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/a letter among the digits", in: field(fGenTime, genTime("2O"+gt("060102150405Z"))), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/February 30th", in: field(fGenTime, genTime(now.UTC().Format("2006")+"0230120000Z")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/fraction with a trailing zero", in: field(fGenTime, genTime(gt("20060102150405")+".50Z")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/a dot without digits", in: field(fGenTime, genTime(gt("20060102150405")+".Z")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/a comma for the dot", in: field(fGenTime, genTime(gt("20060102150405")+",5Z")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "genTime/a letter in the fraction", in: field(fGenTime, genTime(gt("20060102150405")+".5aZ")), want: tsa.ErrMalformed, msg: "genTime"},
		{name: "valid/no accuracy", in: with(drop(fAccuracy))},
		{name: "valid/accuracy of seconds, millis and micros", in: field(fAccuracy, accuracy(tlv(tInteger, []byte{1}), tlv(tCtx0Prim, []byte{0x03, 0xe7}), tlv(tCtx1Prim, []byte{1})))},
		{name: "accuracy/millis 0", in: field(fAccuracy, accuracy(tlv(tCtx0Prim, []byte{0}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/millis 1000", in: field(fAccuracy, accuracy(tlv(tCtx0Prim, []byte{0x03, 0xe8}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/micros 0", in: field(fAccuracy, accuracy(tlv(tCtx1Prim, []byte{0}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/micros 1000", in: field(fAccuracy, accuracy(tlv(tCtx1Prim, []byte{0x03, 0xe8}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/negative seconds", in: field(fAccuracy, accuracy(tlv(tInteger, []byte{0xff}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/seconds beyond a Duration", in: field(fAccuracy, accuracy(tlv(tInteger, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))), want: tsa.ErrMalformed, msg: "accuracy out of range"},
		{name: "accuracy/seconds not a minimal INTEGER", in: field(fAccuracy, accuracy(tlv(tInteger, []byte{0, 1}))), want: tsa.ErrMalformed, msg: "not an Accuracy"},
		{name: "accuracy/millis of three bytes", in: field(fAccuracy, accuracy(tlv(tCtx0Prim, []byte{1, 0, 0}))), want: tsa.ErrMalformed, msg: "not an Accuracy"},
		{name: "accuracy/millis not minimal", in: field(fAccuracy, accuracy(tlv(tCtx0Prim, []byte{0, 1}))), want: tsa.ErrMalformed, msg: "not an Accuracy"},
		{name: "accuracy/an extra field", in: field(fAccuracy, accuracy(tlv(tInteger, []byte{1}), tlv(tNull))), want: tsa.ErrMalformed, msg: "not an Accuracy"},
		{name: "accuracy/micros before millis", in: field(fAccuracy, accuracy(tlv(tCtx1Prim, []byte{1}), tlv(tCtx0Prim, []byte{1}))), want: tsa.ErrMalformed, msg: "not an Accuracy"},
		{name: "valid/no ordering", in: with(drop(fOrdering))},
		{name: "ordering/FALSE encoded", in: field(fOrdering, tlv(tBoolean, []byte{0})), want: tsa.ErrMalformed, msg: "ordering FALSE is encoded"},
		{name: "ordering/TRUE not 0xff", in: field(fOrdering, tlv(tBoolean, []byte{1})), want: tsa.ErrMalformed, msg: "ordering is not a DER BOOLEAN"},
		{name: "valid/no nonce", in: with(drop(fNonce))},
		{name: "nonce/not a minimal INTEGER", in: field(fNonce, tlv(tInteger, []byte{0, 0x5e, 0xed})), want: tsa.ErrMalformed, msg: "nonce is not an INTEGER"},
		{name: "valid/no tsa name", in: with(drop(fTSAName))},
		{name: "tsa name/two GeneralNames", in: field(fTSAName, tlv(tCtx0, tlv(0x82, []byte("a")), tlv(0x82, []byte("b")))), want: tsa.ErrMalformed, msg: "tsa is not a GeneralName"},
		{name: "tsa name/directoryName not a Name", in: field(fTSAName, tsaName(tlv(0xa4, tlv(tInteger, []byte{1})))), want: tsa.ErrMalformed, msg: "directoryName is not a Name"},
		{name: "tsa name/directoryName with data after the Name", in: field(fTSAName, tsaName(tlv(0xa4, r.cert.RawSubject, tlv(tNull)))), want: tsa.ErrMalformed, msg: "directoryName is not a Name"},
		{name: "tsa name/dNSName with a control character", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x82, []byte("tsa.example\n")))
		}), want: tsa.ErrMalformed, msg: "not printable IA5String"},
		{name: "tsa name/iPAddress of 5 bytes", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x87, []byte{192, 0, 2, 7, 0}))
		}), want: tsa.ErrMalformed, msg: "iPAddress has 5 bytes"},
		{name: "valid/a non-critical extension", in: with(func(s *tokenSpec) {
			s.fields = append(s.fields, tlv(tCtx1, tlv(tSeq, derOf(t, asn1.ObjectIdentifier{1, 2, 3}), tlv(tOctets))))
		})},
		{name: "extensions/a critical one", in: with(func(s *tokenSpec) {
			s.fields = append(s.fields, tlv(tCtx1, tlv(tSeq, derOf(t, asn1.ObjectIdentifier{1, 2, 3}), tlv(tBoolean, []byte{0xff}), tlv(tOctets))))
		}), want: tsa.ErrMalformed, msg: "critical extension 1.2.3"},
		{name: "extensions/critical FALSE encoded", in: with(func(s *tokenSpec) {
			s.fields = append(s.fields, tlv(tCtx1, tlv(tSeq, derOf(t, asn1.ObjectIdentifier{1, 2, 3}), tlv(tBoolean, []byte{0}), tlv(tOctets))))
		}), want: tsa.ErrMalformed, msg: "TSTInfo extensions"},
		{name: "extensions/not an Extension", in: with(func(s *tokenSpec) {
			s.fields = append(s.fields, tlv(tCtx1, tlv(tSeq, derOf(t, asn1.ObjectIdentifier{1, 2, 3}))))
		}), want: tsa.ErrMalformed, msg: "TSTInfo extensions"},
		{name: "TSTInfo/an unknown field at the end", in: with(func(s *tokenSpec) { s.fields = append(s.fields, tlv(tNull)) }), want: tsa.ErrMalformed, msg: "unexpected field in the TSTInfo"},

		// The signature (RFC 5652 sections 5.4, 5.6).
		{name: "signature/no message-digest attribute", in: with(func(s *tokenSpec) { s.noMD = true }), want: tsa.ErrBadSignature, msg: "no message-digest attribute"},
		{name: "signature/message-digest of another TSTInfo", in: with(func(s *tokenSpec) { s.md = cms.Digest(crypto.SHA256, []byte("another")) }), want: tsa.ErrBadSignature, msg: "does not match the TSTInfo"},
		{name: "signature/content-type attribute id-data", in: with(func(s *tokenSpec) { s.contentType = derOf(t, cms.OIDData) }), want: tsa.ErrBadSignature, msg: "is not the eContentType"},
		{name: "signature/by another key", in: with(func(s *tokenSpec) { s.key = otherKey }), want: tsa.ErrBadSignature},
		{name: "signature/SHA-1 digest", in: with(func(s *tokenSpec) { s.digest = crypto.SHA1 }), want: tsa.ErrUnsupportedAlgorithm, msg: "digest algorithm SHA-1 is weak"},
		{name: "signature/digest algorithm with parameters", in: with(func(s *tokenSpec) { s.digestParams = tlv(tInteger, []byte{1}) }), want: tsa.ErrUnsupportedAlgorithm, msg: "with parameters"},
		{name: "valid/SHA-384 digest", in: with(func(s *tokenSpec) { s.digest = crypto.SHA384 })},

		// The signer certificate.
		{name: "signer/not in the token, not given", in: with(func(s *tokenSpec) { s.certs = nil }), want: tsa.ErrNoSigner},
		{name: "valid/signer not in the token, given", in: with(func(s *tokenSpec) { s.certs = nil }), opts: tsaCertOnly},

		// The ESS signing-certificate attribute (RFC 2634, RFC 5816).
		{name: "ESS/none", in: with(func(s *tokenSpec) { s.attrs = [][]byte{} }), want: tsa.ErrSigningCertificate, msg: "neither signingCertificateV2 nor signingCertificate"},
		{name: "ESS/v2 of another certificate", in: with(func(s *tokenSpec) { s.attrs = [][]byte{essV2(t, twin)} }), want: tsa.ErrSigningCertificate, msg: "certHash"},
		{name: "ESS/v1 of another certificate", in: with(func(s *tokenSpec) { s.attrs = [][]byte{essV1(t, twin)} }), want: tsa.ErrSigningCertificate, msg: "certHash"},
		{name: "ESS/v2 right, v1 of another certificate", in: with(func(s *tokenSpec) { s.attrs = [][]byte{essV2(t, r.cert), essV1(t, twin)} }), want: tsa.ErrSigningCertificate, msg: "certHash"},
		{name: "valid/ESS v1 only", in: with(func(s *tokenSpec) { s.attrs = [][]byte{essV1(t, r.cert)} })},

		// The tsa name against the certificate (RFC 3161 section 2.4.2).
		{name: "tsa name/directoryName of another subject", in: field(fTSAName, directoryName(derOf(t, pkix.Name{CommonName: "Other TSA"}.ToRDNSequence()))), want: tsa.ErrTSAName},
		{name: "valid/directoryName the subject in another string type", in: field(fTSAName, directoryName(asUTF8(t, r.cert.Subject.ToRDNSequence())))},
		{name: "valid/dNSName of the certificate", in: with(func(s *tokenSpec) { signedBy(named)(s); s.fields[fTSAName] = tsaName(tlv(0x82, []byte("tsa.example"))) })},
		{name: "tsa name/dNSName not of the certificate", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x82, []byte("other.example")))
		}), want: tsa.ErrTSAName},
		{name: "valid/rfc822Name of the certificate", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x81, []byte("tsa@example.org")))
		})},
		{name: "tsa name/rfc822Name not of the certificate", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x81, []byte("other@example.org")))
		}), want: tsa.ErrTSAName},
		{name: "valid/URI of the certificate", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x86, []byte("https://tsa.example/")))
		})},
		{name: "tsa name/URI not of the certificate", in: with(func(s *tokenSpec) {
			signedBy(named)(s)
			s.fields[fTSAName] = tsaName(tlv(0x86, []byte("https://other.example/")))
		}), want: tsa.ErrTSAName},
		{name: "valid/iPAddress of the certificate", in: with(func(s *tokenSpec) { signedBy(named)(s); s.fields[fTSAName] = tsaName(tlv(0x87, []byte{192, 0, 2, 7})) })},
		{name: "tsa name/iPAddress not of the certificate", in: with(func(s *tokenSpec) { signedBy(named)(s); s.fields[fTSAName] = tsaName(tlv(0x87, []byte{192, 0, 2, 8})) }), want: tsa.ErrTSAName},

		// The chain, at genTime (RFC 3161 section 2.3, RFC 5280).
		{name: "chain/another root", in: base.encode(t), opts: func(o *tsa.VerifyOptions) { o.Roots = otherRoots }, want: tsa.ErrChain},
		{name: "chain/a certificate of the same key under another root", in: with(signedBy(foreign)), want: tsa.ErrChain},
		{name: "chain/verified after the certificate expired", in: base.encode(t), opts: func(o *tsa.VerifyOptions) { o.CurrentTime = r.cert.NotAfter.Add(time.Hour) }, want: tsa.ErrChain},
		{name: "valid/certificate expired since: the chain at genTime", in: with(func(s *tokenSpec) {
			signedBy(expired)(s)
			s.fields[fGenTime] = genTime(expired.NotAfter.Add(-20 * time.Minute).UTC().Format("20060102150405Z"))
		})},
		{name: "chain/genTime before the certificate's validity", in: with(signedBy(later)), opts: func(o *tsa.VerifyOptions) { o.CurrentTime = now.Add(2 * time.Hour) }, want: tsa.ErrChain, msg: "is outside its validity"},
		{name: "chain/genTime after the certificate's validity", in: field(fGenTime, genTime(r.cert.NotAfter.Add(time.Hour).UTC().Format("20060102150405Z"))), opts: func(o *tsa.VerifyOptions) { o.CurrentTime = now }, want: tsa.ErrChain, msg: "is outside its validity"},
		{name: "chain/key usage keyCertSign only", in: with(signedBy(certSignOnly)), want: tsa.ErrChain, msg: "neither digitalSignature nor nonRepudiation"},
		{name: "valid/key usage nonRepudiation", in: with(signedBy(nonRepudiation))},
		{name: "valid/no key usage", in: with(signedBy(noKeyUsage))},
		{name: "chain/extended key usage serverAuth only", in: with(signedBy(serverOnly)), want: tsa.ErrChain},
		{name: "chain/intermediate not given", in: with(signedBy(underInter)), want: tsa.ErrChain},
		{name: "valid/intermediate given", in: with(signedBy(underInter)), opts: func(o *tsa.VerifyOptions) { o.Intermediates = interPool }},

		// The extended key usage (RFC 3161 section 2.3).
		{name: "EKU/none", in: with(signedBy(noEKU)), want: tsa.ErrEKU, msg: "no extended key usage"},
		{name: "EKU/not critical", in: with(signedBy(nonCritical)), want: tsa.ErrEKU, msg: "not critical"},
		{name: "EKU/timeStamping and serverAuth", in: with(signedBy(twoEKUs)), want: tsa.ErrEKU, msg: "other purposes"},
		{name: "EKU/timeStamping and an unknown purpose", in: with(signedBy(unknownEKU)), want: tsa.ErrEKU, msg: "other purposes"},

		// The message imprint.
		{name: "imprint/other data", in: resp, digest: cms.Digest(crypto.SHA256, []byte("other")), want: tsa.ErrImprintMismatch, msg: "stamps other data"},
		{name: "imprint/other hash asked", in: resp, digest: sha512Sum, hash: crypto.SHA512, want: tsa.ErrImprintMismatch, msg: "not SHA-512"},
		{name: "imprint/SHA-1", in: field(fImprint, imprint(t, cms.OIDSHA1, nil, sha1Sum[:])), digest: sha1Sum[:], hash: crypto.SHA1, want: tsa.ErrUnsupportedAlgorithm, msg: "is weak"},
		{name: "valid/SHA-512 imprint", in: field(fImprint, imprint(t, cms.OIDSHA512, nil, sha512Sum)), digest: sha512Sum, hash: crypto.SHA512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tsa.VerifyOptions{Roots: r.roots}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			digest, hash := tc.digest, tc.hash
			if digest == nil {
				digest = sum[:]
			}
			if hash == 0 {
				hash = crypto.SHA256
			}
			_, err := tsa.Verify(tc.in, digest, hash, opts)
			switch want := tc.want.(type) {
			case nil:
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
			case *tsa.RejectError:
				if _, ok := errors.AsType[*tsa.RejectError](err); !ok {
					t.Fatalf("Verify: %v; want a *RejectError", err)
				}
			default:
				if !errors.Is(err, want) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Verify: %v\nwant %v saying %q", err, want, tc.msg)
				}
			}
		})
	}
}

// asUTF8 is the DER of the RDN sequence with every value a UTF8String,
// rather than the PrintableString crypto/x509 writes: the same name in
// other bytes.
func asUTF8(t testing.TB, rdns pkix.RDNSequence) []byte {
	var sets [][]byte
	for _, set := range rdns {
		var atvs [][]byte
		for _, a := range set {
			atvs = append(atvs, tlv(tSeq, derOf(t, a.Type), tlv(tUTF8, []byte(a.Value.(string)))))
		}
		sets = append(sets, tlv(tSet, atvs...))
	}
	return tlv(tSeq, sets...)
}

// TestRequestRules: Client.Request checks that the response answers the
// request with certReq set: a server answers with the authority's token,
// taken apart and signed again with one rule broken.
func TestRequestRules(t *testing.T) {
	t.Parallel()
	r := newRuleTSA(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	twin := r.issue(t, &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: ekuExt(t, true, devpki.OIDTimeStamping)})
	sum := sha256.Sum256([]byte("asked for"))
	for _, tc := range []struct {
		name   string
		change func(*tokenSpec)
		opts   tsa.RequestOptions
		want   error // nil: granted
	}{
		{name: "valid/rebuilt unchanged", change: func(*tokenSpec) {}},
		{name: "certReq/no certificate in the token", change: func(s *tokenSpec) { s.certs = nil }, want: tsa.ErrResponseMismatch},
		{name: "certReq/signature by another key", change: func(s *tokenSpec) { s.key = otherKey }, want: tsa.ErrBadSignature},
		{name: "certReq/message-digest of another TSTInfo", change: func(s *tokenSpec) { s.md = make([]byte, 32) }, want: tsa.ErrBadSignature},
		{name: "certReq/no signing-certificate attribute", change: func(s *tokenSpec) { s.attrs = [][]byte{} }, want: tsa.ErrSigningCertificate},
		{name: "certReq/signing-certificate of another certificate", change: func(s *tokenSpec) { s.attrs = [][]byte{essV2(t, twin)} }, want: tsa.ErrSigningCertificate},
		{name: "nonce/not echoed", change: func(s *tokenSpec) { s.fields = slices.Delete(s.fields, fNonce, fNonce+1) }, want: tsa.ErrResponseMismatch},
		{name: "nonce/another", change: func(s *tokenSpec) { s.fields[fNonce] = tlv(tInteger, []byte{0x42}) }, want: tsa.ErrResponseMismatch},
		{name: "valid/the policy asked for", change: func(*tokenSpec) {}, opts: tsa.RequestOptions{Policy: "2.999.3161.1"}},
		{name: "policy/another than asked for", change: func(s *tokenSpec) { s.fields[fPolicy] = derOf(t, asn1.ObjectIdentifier{2, 999, 3161, 9}) }, opts: tsa.RequestOptions{Policy: "2.999.3161.1"}, want: tsa.ErrResponseMismatch},
		{name: "imprint/another", change: func(s *tokenSpec) { s.fields[fImprint] = imprint(t, cms.OIDSHA256, nil, make([]byte, 32)) }, want: tsa.ErrResponseMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				body, err := io.ReadAll(req.Body)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := r.authority.Respond(req.Context(), body)
				if err != nil {
					t.Error(err)
					return
				}
				s := r.spec(t, resp)
				tc.change(&s)
				w.Header().Set("Content-Type", "application/timestamp-reply")
				w.Write(tlv(tSeq, tlv(tSeq, tlv(tInteger, []byte{0})), s.encode(t)))
			}))
			defer srv.Close()
			_, err := (&tsa.Client{URL: srv.URL}).Request(context.Background(), crypto.SHA256, sum[:], tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Request: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Request: %v; want %v", err, tc.want)
			}
		})
	}
}
