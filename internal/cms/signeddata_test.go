package cms_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"pec/internal/cms"
)

// A SignedData built field by field, so that each test case breaks one
// rule of RFC 5652 (or of the algorithm policy) and nothing else.

var oidTSTInfo = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}

type testSigner struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestSigner(t testing.TB, cn string, serial int64) *testSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		SubjectKeyId: []byte{byte(serial), 1, 2, 3},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{key, cert}
}

// sdSpec is a SignedData; signerSpec one SignerInfo. Fields hold DER
// elements; the zero values are the good signature's.
type sdSpec struct {
	version      int // 0: 1 for id-data, 3 otherwise; -1: 0
	eContentType asn1.ObjectIdentifier
	content      []byte
	detached     bool
	eContent     []byte // the whole [0] element, replacing content's
	encapExtra   []byte
	digestAlgs   []byte // the whole SET
	certs        [][]byte
	noCerts      bool
	crls         []byte // the whole [1] element
	signers      []signerSpec
	signerInfos  []byte // the whole SET, replacing signers'
	after        []byte // after signerInfos, inside the SignedData
	trailing     []byte // after the ContentInfo
}

type signerSpec struct {
	s        *testSigner
	version  int // 0: 1, or 3 with byKeyID
	byKeyID  bool
	sid      []byte // replaces the sid made from s
	digest   []byte // digestAlgorithm element
	noAttrs  bool
	attrs    [][]byte // Attribute elements; nil: the good ones
	extra    [][]byte // more Attribute elements
	sigAlg   []byte
	sigValue func(sig []byte) []byte // changes the signature
	sigTag   byte                    // 0: OCTET STRING
	unsigned [][]byte
	tail     []byte
}

func oidDER(oid asn1.ObjectIdentifier) []byte { return der(oid) }

func attr(oid asn1.ObjectIdentifier, values ...[]byte) []byte {
	return cms.AppendTLV(nil, 0x30, der(oid), cms.AppendTLV(nil, 0x31, values...))
}

func octets(b []byte) []byte { return cms.AppendTLV(nil, 0x04, b) }

// essV2 is a SigningCertificateV2 naming cert with hash h (0: the default
// SHA-256, not written) and an issuerSerial (serial, issuer) when
// withIssuer.
func essV2(cert *x509.Certificate, h crypto.Hash, withIssuer bool, serial *big.Int, issuer []byte) []byte {
	var id []byte
	sum := sha256.Sum256(cert.Raw)
	hashed := sum[:]
	if h != 0 {
		id = algID(cms.OIDOfHash(h), nil)
		hashed = cms.Digest(h, cert.Raw)
	}
	id = append(id, octets(hashed)...)
	if withIssuer {
		id = append(id, cms.AppendTLV(nil, 0x30,
			cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0xa4, issuer)), der(serial))...)
	}
	return attr(cms.OIDAttrSigningCertV2, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, id))))
}

func essV1(cert *x509.Certificate) []byte {
	sum := sha1.Sum(cert.Raw)
	return attr(cms.OIDAttrSigningCertV1, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, octets(sum[:])))))
}

func (spec sdSpec) build(t testing.TB) []byte {
	t.Helper()
	ct := spec.eContentType
	if ct == nil {
		ct = cms.OIDData
	}
	version := spec.version
	if version < 0 {
		version = 0
	} else if version == 0 {
		version = 1
		if !ct.Equal(cms.OIDData) {
			version = 3
		}
		for _, s := range spec.signers {
			if s.byKeyID {
				version = 3
			}
		}
	}
	encap := oidDER(ct)
	switch {
	case spec.eContent != nil:
		encap = append(encap, spec.eContent...)
	case !spec.detached:
		encap = append(encap, cms.AppendTLV(nil, 0xa0, octets(spec.content))...)
	}
	encap = append(encap, spec.encapExtra...)
	digestAlgs := spec.digestAlgs
	if digestAlgs == nil {
		digestAlgs = cms.AppendTLV(nil, 0x31, algID(cms.OIDSHA256, nil))
	}
	body := append(der(version), digestAlgs...)
	body = append(body, cms.AppendTLV(nil, 0x30, encap)...)
	if !spec.noCerts {
		certs := spec.certs
		if certs == nil {
			for _, s := range spec.signers {
				certs = append(certs, s.s.cert.Raw)
			}
		}
		body = append(body, cms.AppendTLV(nil, 0xa0, certs...)...)
	}
	body = append(body, spec.crls...)
	infos := spec.signerInfos
	if infos == nil {
		var elems [][]byte
		for _, s := range spec.signers {
			elems = append(elems, s.build(t, ct, spec.content))
		}
		infos = cms.AppendTLV(nil, 0x31, elems...)
	}
	body = append(body, infos...)
	body = append(body, spec.after...)
	ci := cms.AppendTLV(nil, 0x30, oidDER(cms.OIDSignedData), cms.AppendTLV(nil, 0xa0, cms.AppendTLV(nil, 0x30, body)))
	return append(ci, spec.trailing...)
}

func (s signerSpec) build(t testing.TB, ct asn1.ObjectIdentifier, content []byte) []byte {
	t.Helper()
	version := s.version
	sid := s.sid
	if version == 0 {
		version = 1
		if s.byKeyID {
			version = 3
		}
	}
	if sid == nil {
		if s.byKeyID {
			sid = cms.AppendTLV(nil, 0x80, s.s.cert.SubjectKeyId)
		} else {
			sid = cms.AppendTLV(nil, 0x30, s.s.cert.RawIssuer, der(s.s.cert.SerialNumber))
		}
	}
	digestAlg := s.digest
	if digestAlg == nil {
		digestAlg = algID(cms.OIDSHA256, nil)
	}
	body := append(der(version), sid...)
	body = append(body, digestAlg...)
	toSign := content
	if !s.noAttrs {
		attrs := s.attrs
		if attrs == nil {
			sum := sha256.Sum256(content)
			attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(ct)), attr(cms.OIDAttrMessageDigest, octets(sum[:])), essV2(s.s.cert, 0, true, s.s.cert.SerialNumber, s.s.cert.RawIssuer)}
		}
		attrs = append(attrs, s.extra...)
		set := cms.AppendTLV(nil, 0x31, attrs...)
		toSign = set
		body = append(body, append([]byte{0xa0}, set[1:]...)...)
	}
	sigAlg := s.sigAlg
	if sigAlg == nil {
		sigAlg = algID(cms.OIDECDSAWithSHA256, nil)
	}
	body = append(body, sigAlg...)
	sum := sha256.Sum256(toSign)
	sig, err := ecdsa.SignASN1(rand.Reader, s.s.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if s.sigValue != nil {
		sig = s.sigValue(sig)
	}
	tag := s.sigTag
	if tag == 0 {
		tag = 0x04
	}
	body = append(body, cms.AppendTLV(nil, tag, sig)...)
	if s.unsigned != nil {
		body = append(body, cms.AppendTLV(nil, 0xa1, s.unsigned...)...)
	}
	body = append(body, s.tail...)
	return cms.AppendTLV(nil, 0x30, body)
}

// verifyAll runs every check of the shared layer on each SignerInfo, as
// tsa and signing do, with the content and extra certificates.
func verifyAll(sd *cms.SignedData, content []byte, extra []*x509.Certificate) error {
	if sd.Attached {
		content = sd.Content
	}
	for _, si := range sd.SignerInfos {
		h, err := si.Hash()
		if err != nil {
			return err
		}
		md, err := si.MessageDigest(sd.EContentType)
		if err != nil {
			return err
		}
		if _, _, err := si.SigningTime(); err != nil {
			return err
		}
		if md != nil && !bytes.Equal(md, cms.Digest(h, content)) {
			return errMismatch
		}
		cert, err := sd.Signer(si, extra)
		if err != nil {
			return err
		}
		if _, err := si.CheckSigningCertificate(cert); err != nil {
			return err
		}
		if err := si.VerifySignature(cert, h, content); err != nil {
			return err
		}
	}
	return nil
}

var errMismatch = errors.New("message digest mismatch")

func TestSignedDataRules(t *testing.T) {
	alice := newTestSigner(t, "Alice", 10)
	bob := newTestSigner(t, "Bob", 11)
	content := []byte("The signed content.")
	sum := sha256.Sum256(content)
	good := signerSpec{s: alice}
	goodAttrs := func(extra ...[]byte) [][]byte {
		return append([][]byte{attr(cms.OIDAttrContentType, oidDER(cms.OIDData)), attr(cms.OIDAttrMessageDigest, octets(sum[:]))}, extra...)
	}
	with := func(f func(*signerSpec)) []signerSpec {
		s := good
		f(&s)
		return []signerSpec{s}
	}
	one := []signerSpec{good}
	ess := essV2(alice.cert, 0, true, alice.cert.SerialNumber, alice.cert.RawIssuer)

	// What must still pass.
	passing := []struct {
		name  string
		spec  sdSpec
		extra []*x509.Certificate
	}{
		{"attached, issuerAndSerialNumber", sdSpec{content: content, signers: one}, nil},
		{"detached", sdSpec{content: content, detached: true, signers: one}, nil},
		{"subjectKeyIdentifier, version 3", sdSpec{content: content, signers: with(func(s *signerSpec) { s.byKeyID = true })}, nil},
		{"two signers", sdSpec{content: content, signers: []signerSpec{good, {s: bob}}}, nil},
		{"no signed attributes over id-data", sdSpec{content: content, signers: with(func(s *signerSpec) { s.noAttrs = true })}, nil},
		{"no certificates, given by the caller", sdSpec{content: content, noCerts: true, signers: one}, []*x509.Certificate{bob.cert, alice.cert}},
		{"an attribute certificate is skipped", sdSpec{content: content, certs: [][]byte{cms.AppendTLV(nil, 0xa2, null), alice.cert.Raw}, signers: one}, nil},
		{"a certificate that does not parse is skipped", sdSpec{content: content, certs: [][]byte{cms.AppendTLV(nil, 0x30, null), alice.cert.Raw}, signers: one}, nil},
		{"crls present", sdSpec{content: content, signers: one, crls: cms.AppendTLV(nil, 0xa1, cms.AppendTLV(nil, 0x30))}, nil},
		{"ESS v1 and v2", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(ess, essV1(alice.cert)) })}, nil},
		{"ESS v2 with SHA-512, no issuerSerial", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(essV2(alice.cert, crypto.SHA512, false, nil, nil)) })}, nil},
		{"no ESS attribute", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs() })}, nil},
		{"signing-time UTCTime", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = goodAttrs(attr(cms.OIDAttrSigningTime, cms.AppendTLV(nil, 0x17, []byte("250131120000Z"))))
		})}, nil},
		{"signing-time GeneralizedTime", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = goodAttrs(attr(cms.OIDAttrSigningTime, cms.AppendTLV(nil, 0x18, []byte("20500131120000Z"))))
		})}, nil},
		{"unsigned attributes", sdSpec{content: content, signers: with(func(s *signerSpec) { s.unsigned = [][]byte{attr(asn1.ObjectIdentifier{1, 2, 3}, null)} })}, nil},
		{"digest algorithm with NULL parameters", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = algID(cms.OIDSHA256, null) })}, nil},
		{"TSTInfo content, version 3", sdSpec{eContentType: oidTSTInfo, content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(oidTSTInfo)), attr(cms.OIDAttrMessageDigest, octets(sum[:]))}
		})}, nil},
		{"version 4", sdSpec{version: 4, content: content, signers: one}, nil},
		{"no SignerInfo (certificates only)", sdSpec{content: content, certs: [][]byte{alice.cert.Raw}}, nil},
	}
	for _, tc := range passing {
		t.Run("passes/"+tc.name, func(t *testing.T) {
			der := tc.spec.build(t)
			sd, err := cms.ParseSignedData(der)
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			if err := verifyAll(sd, content, tc.extra); err != nil {
				t.Fatalf("verification: %v", err)
			}
		})
	}

	// Each case breaks one rule; want is the kind of error, at parse
	// time (parse) or at verification.
	flip := func(sig []byte) []byte { sig[len(sig)-1] ^= 1; return sig }
	failing := []struct {
		name  string
		in    []byte
		parse bool
		want  error
	}{
		// RFC 5652 section 3: ContentInfo.
		{"not DER", []byte("not DER at all"), true, cms.ErrMalformed},
		{"trailing data after the ContentInfo", sdSpec{content: content, signers: one, trailing: []byte{0}}.build(t), true, cms.ErrMalformed},
		{"content type id-data", cms.AppendTLV(nil, 0x30, oidDER(cms.OIDData), cms.AppendTLV(nil, 0xa0, octets(content))), true, cms.ErrMalformed},
		{"content not [0] EXPLICIT", cms.AppendTLV(nil, 0x30, oidDER(cms.OIDSignedData), cms.AppendTLV(nil, 0x30)), true, cms.ErrMalformed},
		// Section 5.1: SignedData.
		{"version 0", sdSpec{version: -1, content: content, signers: one}.build(t), true, cms.ErrMalformed},
		{"version 2", sdSpec{version: 2, content: content, signers: one}.build(t), true, cms.ErrMalformed},
		{"version 6", sdSpec{version: 6, content: content, signers: one}.build(t), true, cms.ErrMalformed},
		{"version 1 with a non-data eContentType", sdSpec{version: 1, eContentType: oidTSTInfo, content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(oidTSTInfo)), attr(cms.OIDAttrMessageDigest, octets(sum[:]))}
		})}.build(t), true, cms.ErrMalformed},
		{"version 1 with a version 3 SignerInfo", sdSpec{version: 1, content: content, signers: with(func(s *signerSpec) { s.byKeyID = true })}.build(t), true, cms.ErrMalformed},
		{"digestAlgorithms not a SET", sdSpec{content: content, signers: one, digestAlgs: cms.AppendTLV(nil, 0x30, algID(cms.OIDSHA256, nil))}.build(t), true, cms.ErrMalformed},
		{"digestAlgorithms holds no AlgorithmIdentifier", sdSpec{content: content, signers: one, digestAlgs: cms.AppendTLV(nil, 0x31, null)}.build(t), true, cms.ErrMalformed},
		{"eContent constructed (BER)", sdSpec{content: content, signers: one, eContent: cms.AppendTLV(nil, 0xa0, cms.AppendTLV(nil, 0x24, octets(content)))}.build(t), true, cms.ErrMalformed},
		{"eContent not an OCTET STRING", sdSpec{content: content, signers: one, eContent: cms.AppendTLV(nil, 0xa0, der(1))}.build(t), true, cms.ErrMalformed},
		{"field after eContent", sdSpec{content: content, signers: one, encapExtra: null}.build(t), true, cms.ErrMalformed},
		{"certificates truncated", sdSpec{content: content, signers: one, certs: [][]byte{alice.cert.Raw[:10]}}.build(t), true, cms.ErrMalformed},
		{"signerInfos not a SET", sdSpec{content: content, signerInfos: cms.AppendTLV(nil, 0x30)}.build(t), true, cms.ErrMalformed},
		{"field after signerInfos", sdSpec{content: content, signers: one, after: null}.build(t), true, cms.ErrMalformed},
		{"a SignerInfo not a SEQUENCE", sdSpec{content: content, signerInfos: cms.AppendTLV(nil, 0x31, null)}.build(t), true, cms.ErrMalformed},
		// Section 5.3: SignerInfo.
		{"SignerInfo version 3 with issuerAndSerialNumber", sdSpec{version: 3, content: content, signers: with(func(s *signerSpec) { s.version = 3 })}.build(t), true, cms.ErrMalformed},
		{"SignerInfo version 1 with subjectKeyIdentifier", sdSpec{version: 3, content: content, signers: with(func(s *signerSpec) { s.byKeyID, s.version = true, 1 })}.build(t), true, cms.ErrMalformed},
		{"empty subjectKeyIdentifier", sdSpec{content: content, signers: with(func(s *signerSpec) { s.byKeyID, s.sid = true, []byte{0x80, 0} })}.build(t), true, cms.ErrMalformed},
		{"sid neither", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sid = der(5) })}.build(t), true, cms.ErrMalformed},
		{"sid without serial", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sid = cms.AppendTLV(nil, 0x30, alice.cert.RawIssuer) })}.build(t), true, cms.ErrMalformed},
		{"digestAlgorithm not an AlgorithmIdentifier", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = oidDER(cms.OIDSHA256) })}.build(t), true, cms.ErrMalformed},
		{"empty signedAttrs", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = [][]byte{} })}.build(t), true, cms.ErrMalformed},
		{"an attribute without value", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(attr(asn1.ObjectIdentifier{1, 2, 3})) })}.build(t), true, cms.ErrMalformed},
		{"no signed attributes over TSTInfo", sdSpec{eContentType: oidTSTInfo, content: content, signers: with(func(s *signerSpec) { s.noAttrs = true })}.build(t), true, cms.ErrMalformed},
		{"signature not an OCTET STRING", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sigTag = 0x03 })}.build(t), true, cms.ErrMalformed},
		{"unsigned attribute without value", sdSpec{content: content, signers: with(func(s *signerSpec) { s.unsigned = [][]byte{attr(asn1.ObjectIdentifier{1, 2, 3})} })}.build(t), true, cms.ErrMalformed},
		{"field after the SignerInfo", sdSpec{content: content, signers: with(func(s *signerSpec) { s.tail = null })}.build(t), true, cms.ErrMalformed},

		// Section 5.3 and 11: the required signed attributes.
		{"no content-type attribute", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = [][]byte{attr(cms.OIDAttrMessageDigest, octets(sum[:]))} })}.build(t), false, cms.ErrMalformed},
		{"content-type attribute other than eContentType", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(oidTSTInfo)), attr(cms.OIDAttrMessageDigest, octets(sum[:]))}
		})}.build(t), false, cms.ErrMalformed},
		{"content-type attribute not an OID", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, null), attr(cms.OIDAttrMessageDigest, octets(sum[:]))}
		})}.build(t), false, cms.ErrMalformed},
		{"no message-digest attribute", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(cms.OIDData))} })}.build(t), false, cms.ErrMalformed},
		{"message-digest attribute twice", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(attr(cms.OIDAttrMessageDigest, octets(sum[:]))) })}.build(t), false, cms.ErrMalformed},
		{"message-digest attribute with two values", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(cms.OIDData)), attr(cms.OIDAttrMessageDigest, octets(sum[:]), octets(sum[:]))}
		})}.build(t), false, cms.ErrMalformed},
		{"message-digest attribute not an OCTET STRING", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(cms.OIDData)), attr(cms.OIDAttrMessageDigest, null)}
		})}.build(t), false, cms.ErrMalformed},
		{"message-digest of other content", sdSpec{content: content, signers: with(func(s *signerSpec) {
			other := sha256.Sum256([]byte("other"))
			s.attrs = [][]byte{attr(cms.OIDAttrContentType, oidDER(cms.OIDData)), attr(cms.OIDAttrMessageDigest, octets(other[:]))}
		})}.build(t), false, errMismatch},
		{"signing-time not a Time", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(attr(cms.OIDAttrSigningTime, der(1))) })}.build(t), false, cms.ErrMalformed},

		// The algorithm policy.
		{"digestAlgorithm SHA-1", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = algID(cms.OIDSHA1, nil) })}.build(t), false, cms.ErrUnsupported},
		{"digestAlgorithm MD5", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = algID(cms.OIDMD5, null) })}.build(t), false, cms.ErrUnsupported},
		{"digestAlgorithm unknown", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = algID(asn1.ObjectIdentifier{1, 2, 3}, nil) })}.build(t), false, cms.ErrUnsupported},
		{"digestAlgorithm with parameters", sdSpec{content: content, signers: with(func(s *signerSpec) { s.digest = algID(cms.OIDSHA256, der(1)) })}.build(t), false, cms.ErrUnsupported},
		{"ecdsa-with-SHA256 with NULL parameters (RFC 5758)", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sigAlg = algID(cms.OIDECDSAWithSHA256, null) })}.build(t), false, cms.ErrUnsupported},
		{"ecdsa-with-SHA384 over SHA-256", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sigAlg = algID(cms.OIDECDSAWithSHA384, nil) })}.build(t), false, cms.ErrUnsupported},
		{"ecdsa-with-SHA1", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sigAlg = algID(cms.OIDECDSAWithSHA1, nil) })}.build(t), false, cms.ErrUnsupported},

		// The signature value and the signer.
		{"signature altered", sdSpec{content: content, signers: with(func(s *signerSpec) { s.sigValue = flip })}.build(t), false, cms.ErrInvalid},
		{"signature altered, no signed attributes", sdSpec{content: content, signers: with(func(s *signerSpec) { s.noAttrs, s.sigValue = true, flip })}.build(t), false, cms.ErrInvalid},
		{"signed by another key", sdSpec{content: content, certs: [][]byte{alice.cert.Raw}, signers: []signerSpec{{s: &testSigner{bob.key, alice.cert}}}}.build(t), false, cms.ErrInvalid},
		{"no certificate", sdSpec{content: content, noCerts: true, signers: one}.build(t), false, cms.ErrNoSigner},
		{"only another certificate", sdSpec{content: content, certs: [][]byte{bob.cert.Raw}, signers: one}.build(t), false, cms.ErrNoSigner},

		// ESS signing-certificate (RFC 2634, RFC 5035).
		{"ESS v2 names another certificate", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(essV2(bob.cert, 0, false, nil, nil)) })}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v2 issuerSerial with another serial", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = goodAttrs(essV2(alice.cert, 0, true, big.NewInt(99), alice.cert.RawIssuer))
		})}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v2 issuerSerial with another issuer", sdSpec{content: content, signers: with(func(s *signerSpec) {
			s.attrs = goodAttrs(essV2(alice.cert, 0, true, alice.cert.SerialNumber, bob.cert.RawSubject))
		})}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v1 names another certificate", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(ess, essV1(bob.cert)) })}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v2 malformed", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(attr(cms.OIDAttrSigningCertV2, null)) })}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v2 twice", sdSpec{content: content, signers: with(func(s *signerSpec) { s.attrs = goodAttrs(ess, ess) })}.build(t), false, cms.ErrSigningCertificate},
		{"ESS v2 hashed with MD5", sdSpec{content: content, signers: with(func(s *signerSpec) {
			md5ID := append(algID(cms.OIDMD5, nil), octets(make([]byte, 16))...)
			s.attrs = goodAttrs(attr(cms.OIDAttrSigningCertV2, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, cms.AppendTLV(nil, 0x30, md5ID)))))
		})}.build(t), false, cms.ErrUnsupported},
	}
	for _, tc := range failing {
		t.Run("fails/"+tc.name, func(t *testing.T) {
			sd, err := cms.ParseSignedData(tc.in)
			if tc.parse {
				if !errors.Is(err, tc.want) {
					t.Fatalf("ParseSignedData: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			err = verifyAll(sd, content, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
