package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"pec/evidence"
	"pec/internal/cms"
	"pec/tsa"
)

// Signer makes CMS signatures (RFC 5652) in the CAdES baseline profiles
// (ETSI EN 319 122-1) with one key and its certificate chain, and PDF
// signatures in the PAdES baseline profiles ([Signer.SignPDF]). Its key
// and certificate can be replaced while it signs ([Signer.Rotate]): each
// signature is made by one key and names that key's certificate. It is
// safe for concurrent use.
type Signer struct {
	cur  atomic.Pointer[signerKey]
	opts SignerOptions // what every key is prepared with
}

// signerKey is a Signer's key, its certificate, and the constant parts of
// their signatures. A signature loads it once.
type signerKey struct {
	key        crypto.Signer
	cert       *x509.Certificate
	hash       crypto.Hash
	signerOpts crypto.SignerOpts
	ts         Timestamper
	now        func() time.Time
	sigAlg     string         // for reports and evidence: "ECDSA", "RSA-PSS", "RSA PKCS#1 v1.5"
	actor      evidence.Actor // the signer, in the evidence of its signatures

	// The parts of every signature that do not change (DER).
	digestAlgID     []byte // AlgorithmIdentifier of hash, parameters absent (RFC 5754 section 2)
	sigAlgID        []byte // the SignerInfo signatureAlgorithm
	sid             []byte // IssuerAndSerialNumber of the certificate
	certs           []byte // [0] IMPLICIT CertificateSet: the certificate, then its chain
	attrContentType []byte // content-type id-data
	attrSigningCert []byte // signing-certificate-v2 (RFC 5035), ESSCertIDv2 of the certificate
	attrMDPrefix    []byte // message-digest up to the digest's bytes
	attrTimePrefix  []byte // signing-time up to a UTCTime's 13 characters
}

// SignerOptions shape a Signer's signatures. The zero value signs with
// SHA-256, RSA PKCS#1 v1.5 for RSA keys, and no timestamp (B-B).
type SignerOptions struct {
	Hash crypto.Hash // SHA-256 (the default), SHA-384 or SHA-512
	// PSS signs with RSASSA-PSS (RFC 4055; salt as long as the hash, MGF1
	// with the same hash) instead of PKCS#1 v1.5. RSA keys only.
	PSS bool
	// Timestamper, if set, adds a signature timestamp to every signature:
	// the B-T level.
	Timestamper Timestamper
	Now         func() time.Time // nil: time.Now
}

// Signature is a CMS signature made by a Signer.
type Signature struct {
	DER         []byte     // the ContentInfo of the SignedData (for PDFs, the signed PDF)
	SigningTime time.Time  // the claimed signing time, UTC, to the second
	Digest      []byte     // the message-digest attribute: of the content (for PDFs, of the byte range)
	Value       []byte     // the signature value of the SignerInfo
	Timestamp   *tsa.Token // the signature timestamp; nil at B-B
}

// ErrSignerConfig: the key, the certificate or the options cannot make
// signatures together.
var ErrSignerConfig = errors.New("signing: unusable signer")

// NewSigner checks that chain[0] certifies key's public key, is valid now
// and allows signatures, and prepares the constant parts of the signatures.
// The rest of chain is embedded in each signature, self-signed roots left
// out: a verifier must hold its trust anchors itself.
func NewSigner(key crypto.Signer, chain []*x509.Certificate, opts SignerOptions) (*Signer, error) {
	k, err := newSignerKey(key, chain, opts)
	if err != nil {
		return nil, err
	}
	s := &Signer{opts: opts}
	s.cur.Store(k)
	return s, nil
}

// Rotate makes key, certified by chain[0], the signer's key, with the
// checks of NewSigner and the options the signer was made with: every
// signature begun after it returns is made by key and carries chain; a
// signature under way finishes with the key it began with. Signatures
// made before stay valid: they carry the old certificate. It returns the
// certificate replaced; on error nothing changes.
func (s *Signer) Rotate(key crypto.Signer, chain []*x509.Certificate) (old *x509.Certificate, err error) {
	k, err := newSignerKey(key, chain, s.opts)
	if err != nil {
		return nil, err
	}
	return s.cur.Swap(k).cert, nil
}

// current is the key a signature is made with.
func (s *Signer) current() *signerKey { return s.cur.Load() }

func newSignerKey(key crypto.Signer, chain []*x509.Certificate, opts SignerOptions) (*signerKey, error) {
	if key == nil || len(chain) == 0 {
		return nil, fmt.Errorf("%w: a key and its certificate are required", ErrSignerConfig)
	}
	cert := chain[0]
	if k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the certificate %q is not that of the key", ErrSignerConfig, cert.Subject)
	}
	s := &signerKey{key: key, cert: cert, hash: opts.Hash, ts: opts.Timestamper, now: opts.Now, actor: evidence.ActorFromCertificate("signer", cert)}
	if s.hash == 0 {
		s.hash = crypto.SHA256
	}
	if s.now == nil {
		s.now = time.Now
	}
	hashOID := cms.OIDOfHash(s.hash)
	if hashOID == nil {
		return nil, fmt.Errorf("%w: digest %v (use SHA-256, SHA-384 or SHA-512)", ErrSignerConfig, s.hash)
	}
	now := s.now()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: the certificate %q is valid from %s to %s, not now", ErrSignerConfig, cert.Subject,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	// RFC 5280 section 4.2.1.3: a key usage, if present, must allow signing.
	if cert.KeyUsage != 0 && cert.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, fmt.Errorf("%w: the key usage of %q allows neither digitalSignature nor nonRepudiation", ErrSignerConfig, cert.Subject)
	}

	s.digestAlgID = algorithmID(hashOID, nil)
	null := []byte{tagNull, 0}
	switch key.Public().(type) {
	case *ecdsa.PublicKey:
		if opts.PSS {
			return nil, fmt.Errorf("%w: RSA-PSS needs an RSA key", ErrSignerConfig)
		}
		// RFC 5758 section 3.2: ecdsa-with-SHA* without parameters.
		oid := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: cms.OIDECDSAWithSHA256, crypto.SHA384: cms.OIDECDSAWithSHA384, crypto.SHA512: cms.OIDECDSAWithSHA512}[s.hash]
		s.sigAlgID = algorithmID(oid, nil)
		s.signerOpts, s.sigAlg = s.hash, "ECDSA"
	case *rsa.PublicKey:
		if opts.PSS {
			// RSASSA-PSS-params (RFC 4055 section 3.1); the hash
			// identifiers carry NULL as RFC 4055 section 2.1 writes them.
			hashID := algorithmID(hashOID, null)
			params := tlv(tagSequence,
				tlv(tagContext0, hashID),
				tlv(tagContext1, algorithmID(cms.OIDMGF1, hashID)),
				tlv(tagContext2, mustMarshal(s.hash.Size())))
			s.sigAlgID = algorithmID(cms.OIDRSAPSS, params)
			s.signerOpts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: s.hash}
			s.sigAlg = "RSA-PSS"
		} else {
			// RFC 4055 section 5: sha*WithRSAEncryption with NULL.
			oid := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: cms.OIDSHA256WithRSA, crypto.SHA384: cms.OIDSHA384WithRSA, crypto.SHA512: cms.OIDSHA512WithRSA}[s.hash]
			s.sigAlgID = algorithmID(oid, null)
			s.signerOpts, s.sigAlg = s.hash, "RSA PKCS#1 v1.5"
		}
	default:
		return nil, fmt.Errorf("%w: a %T key (RSA or ECDSA only)", ErrSignerConfig, key.Public())
	}

	serial := mustMarshal(cert.SerialNumber)
	s.sid = tlv(tagSequence, cert.RawIssuer, serial)
	var all []byte
	all = append(all, cert.Raw...)
	for _, c := range chain[1:] {
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		all = append(all, c.Raw...)
	}
	s.certs = tlv(tagContext0, all)
	s.attrContentType = attribute(derOIDContentType, derOIDData)
	md := attribute(derOIDMessageDigest, tlv(tagOctetString, make([]byte, s.hash.Size())))
	s.attrMDPrefix = md[:len(md)-s.hash.Size()]
	st := attribute(derOIDSigningTime, tlv(tagUTCTime, make([]byte, 13)))
	s.attrTimePrefix = st[:len(st)-13]
	// ESSCertIDv2 with SHA-256, the DEFAULT hashAlgorithm, left out (RFC
	// 5035 section 5.4.1.1); issuerSerial names the certificate too.
	certHash := sha256.Sum256(cert.Raw)
	issuerSerial := tlv(tagSequence, tlv(tagSequence, tlv(tagContext4, cert.RawIssuer)), serial)
	essCertID := tlv(tagSequence, tlv(tagOctetString, certHash[:]), issuerSerial)
	s.attrSigningCert = attribute(mustMarshal(oidAttrSigningCertV2), tlv(tagSequence, tlv(tagSequence, essCertID)))
	return s, nil
}

// Certificate is the signer's (current) certificate.
func (s *Signer) Certificate() *x509.Certificate { return s.current().cert }

// Hash is the digest algorithm of the signatures.
func (s *Signer) Hash() crypto.Hash { return s.current().hash }

// Sign makes a CAdES signature of content: attached (the content inside
// the SignedData) or detached.
func (s *Signer) Sign(ctx context.Context, content []byte, detached bool) (*Signature, error) {
	return s.current().signContent(ctx, content, detached)
}

// SignDigest makes a detached CAdES signature of a document the caller
// hashed with [Signer.Hash]: the signer never sees the document.
func (s *Signer) SignDigest(ctx context.Context, digest []byte) (*Signature, error) {
	return s.current().signDigest(ctx, digest)
}

func (s *signerKey) signContent(ctx context.Context, content []byte, detached bool) (*Signature, error) {
	digest := digestOf(s.hash, content)
	if detached {
		content = nil
	}
	return s.sign(ctx, digest, content, true, s.now())
}

func (s *signerKey) signDigest(ctx context.Context, digest []byte) (*Signature, error) {
	return s.sign(ctx, digest, nil, true, s.now())
}

// sign builds the SignedData (RFC 5652 section 5) over a content whose
// digest is given; content is nil for a detached signature. PAdES leaves
// the signing-time attribute out (ETSI EN 319 142-1 section 6.3): the
// time is the signature dictionary's /M. The constant parts were encoded by
// NewSigner: a signature is the HSM call and a few appends into one buffer.
func (s *signerKey) sign(ctx context.Context, digest, content []byte, signingTime bool, now time.Time) (*Signature, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(digest) != s.hash.Size() {
		return nil, badRequest("a %s digest has %d bytes, not %d", hashName(s.hash, nil), s.hash.Size(), len(digest))
	}
	now = now.UTC().Truncate(time.Second)

	// The signed attributes, a DER SET OF: sorted encodings.
	scratch := make([]byte, 0, len(s.attrMDPrefix)+len(digest)+len(s.attrTimePrefix)+15)
	scratch = append(append(scratch, s.attrMDPrefix...), digest...)
	md := scratch
	attrs := [4][]byte{s.attrContentType, md, s.attrSigningCert}
	n := 3
	if signingTime {
		if y := now.Year(); y >= 1950 && y < 2050 {
			scratch = append(scratch, s.attrTimePrefix...)
			scratch = now.AppendFormat(scratch, "060102150405Z")
			attrs[3] = scratch[len(md):]
		} else {
			attrs[3] = attribute(derOIDSigningTime, signingTimeValue(now))
		}
		n = 4
	}
	derSetOf(attrs[:n])
	attrsLen := 0
	for _, a := range attrs[:n] {
		attrsLen += len(a)
	}
	signed := cms.AppendHeader(make([]byte, 0, 4+attrsLen), tagSet, attrsLen)
	for _, a := range attrs[:n] {
		signed = append(signed, a...)
	}

	sig, err := s.key.Sign(rand.Reader, digestOf(s.hash, signed), s.signerOpts)
	if err != nil {
		return nil, fmt.Errorf("signing: sign: %w", err)
	}
	out := &Signature{SigningTime: now, Digest: digest, Value: sig}

	var unsigned []byte
	if s.ts != nil {
		res, err := s.ts.Request(ctx, s.hash, digestOf(s.hash, sig), tsa.RequestOptions{})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTimestamp, err)
		}
		out.Timestamp = res.Token
		unsigned = tlv(tagContext1, attribute(derOIDSignatureTimeStamp, res.Token.Raw))
	}
	signed[0] = tagContext0 // [0] IMPLICIT in the SignerInfo

	// Lengths, inside out, then one buffer written outside in.
	siLen := 3 + len(s.sid) + len(s.digestAlgID) + len(signed) + len(s.sigAlgID) + cms.TLVLen(len(sig)) + len(unsigned)
	setSILen := cms.TLVLen(siLen)
	encapLen := len(derOIDData)
	if content != nil {
		encapLen += cms.TLVLen(cms.TLVLen(len(content)))
	}
	sdLen := 3 + cms.TLVLen(len(s.digestAlgID)) + cms.TLVLen(encapLen) + len(s.certs) + cms.TLVLen(setSILen)
	ciLen := len(derOIDSignedData) + cms.TLVLen(cms.TLVLen(sdLen))
	b := make([]byte, 0, cms.TLVLen(ciLen))
	b = cms.AppendHeader(b, tagSequence, ciLen)
	b = append(b, derOIDSignedData...)
	b = cms.AppendHeader(b, tagContext0, cms.TLVLen(sdLen))
	b = cms.AppendHeader(b, tagSequence, sdLen)
	// Version 1: eContentType id-data, an issuerAndSerialNumber sid and
	// only X.509 certificates (RFC 5652 section 5.1).
	b = append(b, tagInteger, 1, 1)
	b = cms.AppendHeader(b, tagSet, len(s.digestAlgID))
	b = append(b, s.digestAlgID...)
	b = cms.AppendHeader(b, tagSequence, encapLen)
	b = append(b, derOIDData...)
	if content != nil {
		b = cms.AppendHeader(b, tagContext0, cms.TLVLen(len(content)))
		b = cms.AppendHeader(b, tagOctetString, len(content))
		b = append(b, content...)
	}
	b = append(b, s.certs...)
	b = cms.AppendHeader(b, tagSet, setSILen)
	b = cms.AppendHeader(b, tagSequence, siLen)
	b = append(b, tagInteger, 1, 1)
	b = append(b, s.sid...)
	b = append(b, s.digestAlgID...)
	b = append(b, signed...)
	b = append(b, s.sigAlgID...)
	b = cms.AppendHeader(b, tagOctetString, len(sig))
	b = append(b, sig...)
	b = append(b, unsigned...)
	out.DER = b
	return out, nil
}

// ErrTimestamp: the TSA did not deliver the signature timestamp; nothing
// was signed for the caller (the HSM signature is discarded).
var ErrTimestamp = errors.New("signing: signature timestamp failed")
