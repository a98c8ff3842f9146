package tsa

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"pec/internal/cms"
)

// The fast path. digitorus/timestamp builds a response through
// encoding/asn1 reflection and digitorus/pkcs7, about 110 µs a token — three
// times an ECDSA P-256 signature. Here everything that does not change from
// one token to the next (policy, accuracy, TSA name, certificates, the
// signer's identifiers, the content-type and signing-certificate
// attributes) is encoded once in newEncoder, and a token is a few appends
// around the signature. TestEncoderMatchesLibrary checks the bytes against
// the library's output for the same inputs.

// Object identifiers of CMS (RFC 5652), RFC 3161 and ESS (RFC 5035).
var (
	oidData                 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidTSTInfo              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	oidAttrContentType      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAttrSigningCertV2    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	oidAttrSigningCertV1    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12}
	oidExtKeyUsage          = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKPTimeStamping       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}
	grantedStatusInfo       = []byte{tagSequence, 3, tagInteger, 1, 0} // PKIStatusInfo { granted }
	tstInfoVersion          = []byte{tagInteger, 1, 1}
	signedDataVersion       = []byte{tagInteger, 1, 3} // RFC 5652 section 5.1: eContentType is not id-data
	signerInfoVersion       = []byte{tagInteger, 1, 1} // sid is issuerAndSerialNumber
	errUnsupportedSignerKey = errors.New("tsa: the TSA key must be RSA or ECDSA")
)

// encoder turns a request into a signed TimeStampResp for one TSA key and
// certificate. It is safe for concurrent use.
type encoder struct {
	signer     crypto.Signer
	signerOpts crypto.SignerOpts
	sigHash    crypto.Hash

	digestAlgID     []byte // AlgorithmIdentifier of sigHash (no parameters, as digitorus/pkcs7)
	digestAlgIDSet  []byte // SET { digestAlgID } of SignedData.digestAlgorithms
	sigAlgID        []byte // signatureAlgorithm of the SignerInfo
	accuracyOrder   []byte // TSTInfo accuracy and ordering
	tsaName         []byte // TSTInfo tsa: [0] { directoryName [4] { subject } }
	issuerAndSerial []byte // SignerInfo sid
	certs           []byte // [0] IMPLICIT CertificateSet, when certReq
	noCerts         []byte // what digitorus/pkcs7 writes without certificates: an empty set
	attrContentType []byte // Attribute { contentType, SET { id-ct-TSTInfo } }
	attrSigningCert []byte // Attribute { signingCertificateV2, SET { ESSCertIDv2 } }
	encapPrefix     []byte // SEQUENCE header is variable; this is the eContentType OID
}

// newEncoder prepares the constant parts of every token. extra are the
// certificates sent with the TSA's own when certReq is set.
func newEncoder(signer crypto.Signer, cert *x509.Certificate, extra []*x509.Certificate, sigHash crypto.Hash, accuracy time.Duration, ordering bool) (*encoder, error) {
	e := &encoder{signer: signer, signerOpts: sigHash, sigHash: sigHash}
	hashOID := cms.OIDOfHash(sigHash)
	if hashOID == nil || sigHash == crypto.SHA1 {
		return nil, fmt.Errorf("tsa: unsupported signature hash %v", sigHash)
	}
	e.digestAlgID = mustMarshal(algorithmIdentifier{Algorithm: hashOID})
	e.digestAlgIDSet = cms.AppendTLV(nil, tagSet, e.digestAlgID)
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		e.sigAlgID = mustMarshal(algorithmIdentifier{Algorithm: map[crypto.Hash]asn1.ObjectIdentifier{
			crypto.SHA256: cms.OIDECDSAWithSHA256, crypto.SHA384: cms.OIDECDSAWithSHA384, crypto.SHA512: cms.OIDECDSAWithSHA512}[sigHash]})
	case *rsa.PublicKey:
		e.sigAlgID = mustMarshal(algorithmIdentifier{Algorithm: map[crypto.Hash]asn1.ObjectIdentifier{
			crypto.SHA256: cms.OIDSHA256WithRSA, crypto.SHA384: cms.OIDSHA384WithRSA, crypto.SHA512: cms.OIDSHA512WithRSA}[sigHash]})
	default:
		return nil, errUnsupportedSignerKey
	}

	e.accuracyOrder = encodeAccuracy(accuracy)
	if ordering {
		e.accuracyOrder = append(e.accuracyOrder, tagBoolean, 1, 0xff)
	}
	directoryName := cms.AppendTLV(nil, tagContext4, cert.RawSubject)
	e.tsaName = cms.AppendTLV(nil, tagContext0, directoryName)
	e.issuerAndSerial = cms.AppendTLV(nil, tagSequence, cert.RawIssuer, mustMarshal(cert.SerialNumber))

	var all []byte
	all = append(all, cert.Raw...)
	for _, c := range extra {
		all = append(all, c.Raw...)
	}
	e.certs = cms.AppendTLV(nil, tagContext0, all)
	e.noCerts = []byte{tagContext0, 0}

	e.attrContentType = cms.AppendTLV(nil, tagSequence, mustMarshal(oidAttrContentType), cms.AppendTLV(nil, tagSet, mustMarshal(oidTSTInfo)))
	// ESSCertIDv2 with SHA-256, the DEFAULT hashAlgorithm (RFC 5035 section
	// 5.4.1.1), so it is omitted; issuerSerial names the certificate.
	certHash := sha256.Sum256(cert.Raw)
	issuerSerial := cms.AppendTLV(nil, tagSequence,
		cms.AppendTLV(nil, tagSequence, cms.AppendTLV(nil, tagContext4, cert.RawIssuer)),
		mustMarshal(cert.SerialNumber))
	essCertID := cms.AppendTLV(nil, tagSequence, cms.AppendTLV(nil, tagOctetString, certHash[:]), issuerSerial)
	signingCertV2 := cms.AppendTLV(nil, tagSequence, cms.AppendTLV(nil, tagSequence, essCertID))
	e.attrSigningCert = cms.AppendTLV(nil, tagSequence, mustMarshal(oidAttrSigningCertV2), cms.AppendTLV(nil, tagSet, signingCertV2))
	e.encapPrefix = mustMarshal(oidTSTInfo)
	return e, nil
}

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

// encodeAccuracy is the TSTInfo accuracy (RFC 3161 section 2.4.2), with
// zero fields left out and sub-microsecond accuracy rounded up.
func encodeAccuracy(d time.Duration) []byte {
	if d <= 0 {
		return nil
	}
	if d < time.Microsecond {
		d = time.Microsecond
	}
	sec := int64(d / time.Second)
	ms := int64(d % time.Second / time.Millisecond)
	us := int64(d % time.Millisecond / time.Microsecond)
	var content []byte
	if sec != 0 {
		content = append(content, mustMarshal(sec)...)
	}
	if ms != 0 {
		b := mustMarshal(ms)
		b[0] = 0x80 // [0] IMPLICIT
		content = append(content, b...)
	}
	if us != 0 {
		b := mustMarshal(us)
		b[0] = 0x81 // [1] IMPLICIT
		content = append(content, b...)
	}
	return cms.AppendTLV(nil, tagSequence, content)
}

// tokenFields are what changes from one token to the next.
type tokenFields struct {
	policyDER   []byte // the TSAPolicyId, DER
	imprintDER  []byte // the request's MessageImprint, verbatim
	serial      []byte // INTEGER contents
	genTime     time.Time
	signingTime time.Time // to the second
	nonce       []byte    // INTEGER contents; nil: none
	certReq     bool
	// buf holds the response when it has room for it; nil or too small:
	// a new slice.
	buf []byte
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// encode signs one token and returns the TimeStampResp and the offset of
// the TimeStampToken (a ContentInfo that runs to the end of resp).
func (e *encoder) encode(f *tokenFields) (resp []byte, tokenAt int, err error) {
	sp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(sp)

	// TSTInfo.
	serialLen := cms.TLVLen(len(f.serial))
	nonceLen := 0
	if f.nonce != nil {
		nonceLen = cms.TLVLen(len(f.nonce))
	}
	tstLen := len(tstInfoVersion) + len(f.policyDER) + len(f.imprintDER) + serialLen +
		cms.TLVLen(generalizedTimeLen(f.genTime)) + len(e.accuracyOrder) + nonceLen + len(e.tsaName)
	// One scratch buffer holds the TSTInfo and the signed attributes; it is
	// sized so that no append below reallocates (the slices alias it).
	need := cms.TLVLen(tstLen) + 2*(len(e.attrContentType)+len(e.attrSigningCert)+160)
	if cap(*sp) < need {
		*sp = make([]byte, 0, need)
	}
	buf := (*sp)[:0]
	buf = cms.AppendHeader(buf, tagSequence, tstLen)
	buf = append(buf, tstInfoVersion...)
	buf = append(buf, f.policyDER...)
	buf = append(buf, f.imprintDER...)
	buf = cms.AppendTLV(buf, tagInteger, f.serial)
	buf = appendGeneralizedTime(buf, f.genTime)
	buf = append(buf, e.accuracyOrder...)
	if f.nonce != nil {
		buf = cms.AppendTLV(buf, tagInteger, f.nonce)
	}
	buf = append(buf, e.tsaName...)
	tst := buf

	// Signed attributes, in DER SET OF order (X.690 section 11.6): the
	// message digest of the TSTInfo and the signing time change per token.
	var digest [64]byte
	md := e.sum(digest[:0], tst)
	attrs := buf[len(buf):]
	attrs = cms.AppendHeader(attrs, tagSequence, len(mustOIDMessageDigest)+cms.TLVLen(cms.TLVLen(len(md))))
	attrs = append(attrs, mustOIDMessageDigest...)
	attrs = cms.AppendHeader(attrs, tagSet, cms.TLVLen(len(md)))
	attrs = cms.AppendTLV(attrs, tagOctetString, md)
	mdAttr := attrs
	stAttr := attrs[len(attrs):]
	stAttr = cms.AppendHeader(stAttr, tagSequence, len(mustOIDSigningTime)+cms.TLVLen(signingTimeLen(f.signingTime)))
	stAttr = append(stAttr, mustOIDSigningTime...)
	stAttr = cms.AppendHeader(stAttr, tagSet, signingTimeLen(f.signingTime))
	stAttr = appendSigningTime(stAttr, f.signingTime)
	sorted := [4][]byte{e.attrContentType, mdAttr, stAttr, e.attrSigningCert}
	slices.SortFunc(sorted[:], bytes.Compare)
	attrsLen := 0
	for _, a := range sorted {
		attrsLen += len(a)
	}
	set := stAttr[len(stAttr):]
	set = cms.AppendHeader(set, tagSet, attrsLen)
	for _, a := range sorted {
		set = append(set, a...)
	}
	if cap(*sp) > 1<<16 {
		*sp = nil // a rare huge request: do not keep its buffer
	}

	sig, err := e.signer.Sign(rand.Reader, e.sum(digest[:0], set), e.signerOpts)
	if err != nil {
		return nil, 0, fmt.Errorf("tsa: sign token: %w", err)
	}

	// SignerInfo, with the attributes under [0] IMPLICIT instead of SET.
	attrsField := set[cms.LenOfLen(attrsLen)+1:]
	signerInfoLen := len(signerInfoVersion) + len(e.issuerAndSerial) + len(e.digestAlgID) +
		cms.TLVLen(attrsLen) + len(e.sigAlgID) + cms.TLVLen(len(sig))
	certs := e.noCerts
	if f.certReq {
		certs = e.certs
	}
	encapContentLen := cms.TLVLen(len(tst))
	encapLen := len(e.encapPrefix) + cms.TLVLen(encapContentLen)
	signedDataLen := len(signedDataVersion) + len(e.digestAlgIDSet) + cms.TLVLen(encapLen) + len(certs) +
		cms.TLVLen(cms.TLVLen(signerInfoLen))
	contentInfoLen := len(mustOIDSignedData) + cms.TLVLen(cms.TLVLen(signedDataLen))
	total := cms.TLVLen(len(grantedStatusInfo) + cms.TLVLen(contentInfoLen))

	if cap(f.buf) >= total {
		resp = f.buf[:0]
	} else {
		resp = make([]byte, 0, total)
	}
	resp = cms.AppendHeader(resp, tagSequence, len(grantedStatusInfo)+cms.TLVLen(contentInfoLen))
	resp = append(resp, grantedStatusInfo...)
	tokenAt = len(resp)
	resp = cms.AppendHeader(resp, tagSequence, contentInfoLen)
	resp = append(resp, mustOIDSignedData...)
	resp = cms.AppendHeader(resp, tagContext0, cms.TLVLen(signedDataLen))
	resp = cms.AppendHeader(resp, tagSequence, signedDataLen)
	resp = append(resp, signedDataVersion...)
	resp = append(resp, e.digestAlgIDSet...)
	resp = cms.AppendHeader(resp, tagSequence, encapLen)
	resp = append(resp, e.encapPrefix...)
	resp = cms.AppendHeader(resp, tagContext0, encapContentLen)
	resp = cms.AppendTLV(resp, tagOctetString, tst)
	resp = append(resp, certs...)
	resp = cms.AppendHeader(resp, tagSet, cms.TLVLen(signerInfoLen))
	resp = cms.AppendHeader(resp, tagSequence, signerInfoLen)
	resp = append(resp, signerInfoVersion...)
	resp = append(resp, e.issuerAndSerial...)
	resp = append(resp, e.digestAlgID...)
	resp = cms.AppendHeader(resp, tagContext0, attrsLen)
	resp = append(resp, attrsField...)
	resp = append(resp, e.sigAlgID...)
	resp = cms.AppendTLV(resp, tagOctetString, sig)
	if len(resp) != total {
		return nil, 0, fmt.Errorf("tsa: encoder length mismatch: %d != %d", len(resp), total)
	}
	return resp, tokenAt, nil
}

// sum appends the sigHash digest of data to dst. SHA-256, the default,
// needs no hash object (two allocations a token fewer).
func (e *encoder) sum(dst, data []byte) []byte {
	if e.sigHash == crypto.SHA256 {
		d := sha256.Sum256(data)
		return append(dst, d[:]...)
	}
	h := e.sigHash.New()
	h.Write(data)
	return h.Sum(dst)
}

var (
	mustOIDMessageDigest = mustMarshal(oidAttrMessageDigest)
	mustOIDSigningTime   = mustMarshal(oidAttrSigningTime)
	mustOIDSignedData    = mustMarshal(oidSignedData)
)

// rejection encodes a TimeStampResp with no token (RFC 3161 section 2.4.2).
func rejection(status int, fail FailInfo, text string) []byte {
	var info []byte
	info = cms.AppendTLV(info, tagInteger, []byte{byte(status)})
	if text != "" {
		info = cms.AppendTLV(info, tagSequence, cms.AppendTLV(nil, tagUTF8String, []byte(text)))
	}
	if fail >= 0 {
		info = appendBitString(info, int(fail))
	}
	return cms.AppendTLV(nil, tagSequence, cms.AppendTLV(nil, tagSequence, info))
}

// Reject encodes a rejection TimeStampResp with one failInfo bit and a
// statusString: the answer to a client's mistake, or systemFailure.
func Reject(fail FailInfo, text string) []byte {
	return rejection(StatusRejection, fail, text)
}

// serialContents is the INTEGER contents of a serial number.
func serialContents(n *big.Int) []byte { return integerContents(n) }
