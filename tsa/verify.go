package tsa

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // ESSCertID (RFC 2634) hashes the certificate with SHA-1
	_ "crypto/sha256"
	_ "crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/cms"
)

// Token is a time-stamp token (RFC 3161 section 2.4.2): the fields of its
// TSTInfo and the certificates that came with it.
type Token struct {
	GenTime  time.Time     // UTC
	Accuracy time.Duration // 0 when the token declares none
	Ordering bool
	Serial   *big.Int
	Policy   asn1.ObjectIdentifier
	Nonce    *big.Int    // nil when absent
	Hash     crypto.Hash // of the message imprint
	Imprint  []byte
	TSAName  string // the tsa GeneralName, if present, as text

	// SignerCert is the certificate that the SignerInfo names: from the
	// token's certificates (ParseToken, Verify) or from
	// VerifyOptions.Certificates (Verify). nil when none was found.
	SignerCert   *x509.Certificate
	Certificates []*x509.Certificate // as carried in the token
	Raw          []byte              // the DER ContentInfo of the token
}

// VerifyOptions are the trust anchors and the time of a verification.
type VerifyOptions struct {
	Roots *x509.CertPool // required

	// Intermediates are untrusted CA certificates for chain building.
	Intermediates *x509.CertPool

	// Certificates are untrusted certificates among which the TSA
	// certificate is looked for when the token does not carry it (a
	// token requested without certReq); they serve as intermediates too.
	// An x509.CertPool cannot be searched for the certificate a SignerInfo
	// names, hence this list.
	Certificates []*x509.Certificate

	// CurrentTime is the time at which the TSA certificate's chain must be
	// valid. Zero means the token's genTime: validation at the time of
	// stamping.
	CurrentTime time.Time
}

// Why a token is invalid. Verify and ParseToken wrap these with the detail:
// test them with errors.Is.
var (
	// ErrMalformed: not a DER TimeStampResp or TimeStampToken (RFC 3161,
	// RFC 5652), or a TSTInfo that breaks its syntax.
	ErrMalformed = errors.New("tsa: malformed token")
	// ErrUnsupportedAlgorithm: an algorithm that is unknown or weak (MD5,
	// SHA-1 for a digest or a signature).
	ErrUnsupportedAlgorithm = errors.New("tsa: unsupported algorithm")
	// ErrBadSignature: the CMS signature, its content-type or its
	// message-digest attribute does not hold.
	ErrBadSignature = errors.New("tsa: bad signature")
	// ErrNoSigner: the certificate the SignerInfo names is neither in the
	// token nor in VerifyOptions.Certificates.
	ErrNoSigner = errors.New("tsa: signer certificate not found")
	// ErrSigningCertificate: the ESS signing-certificate attribute (RFC
	// 2634, RFC 5816) is missing or names another certificate.
	ErrSigningCertificate = errors.New("tsa: bad signing-certificate attribute")
	// ErrTSAName: the TSTInfo tsa field is not a name of the TSA
	// certificate (RFC 3161 section 2.4.2).
	ErrTSAName = errors.New("tsa: tsa name does not match the TSA certificate")
	// ErrChain: the TSA certificate does not chain to a root, or is not
	// valid at the validation time; the x509 error is wrapped too.
	ErrChain = errors.New("tsa: untrusted TSA certificate")
	// ErrEKU: the TSA certificate's extended key usage is not critical or
	// holds more than id-kp-timeStamping (RFC 3161 section 2.3).
	ErrEKU = errors.New("tsa: TSA certificate lacks a critical timeStamping-only extended key usage")
	// ErrImprintMismatch: the token stamps other data, or the same data
	// hashed with another algorithm.
	ErrImprintMismatch = errors.New("tsa: message imprint does not match")
)

// Context-specific tags of CMS and RFC 3161.
var (
	tagCons0 = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagCons1 = cbasn1.Tag(1).Constructed().ContextSpecific()
	tagCons4 = cbasn1.Tag(4).Constructed().ContextSpecific()
	tagPrim0 = cbasn1.Tag(0).ContextSpecific()
	tagPrim1 = cbasn1.Tag(1).ContextSpecific()
)

// ParseToken reads a time-stamp token without checking its signature: a
// granted TimeStampResp or a bare TimeStampToken (a CMS ContentInfo), in
// DER or PEM (any label). A response that grants nothing is a
// *RejectError; anything else unreadable wraps ErrMalformed or
// ErrUnsupportedAlgorithm.
func ParseToken(der []byte) (*Token, error) {
	p, err := parseToken(der)
	if err != nil {
		return nil, err
	}
	return p.tok, nil
}

// TokenHash is the hash algorithm of the token's message imprint, for
// hashing the data the same way before [Verify]. Only SHA-256, SHA-384 and
// SHA-512 are returned; others are ErrUnsupportedAlgorithm.
func TokenHash(tokenOrResp []byte) (crypto.Hash, error) {
	tok, err := ParseToken(tokenOrResp)
	if err != nil {
		return 0, err
	}
	if err := strongHash(tok.Hash, "message imprint"); err != nil {
		return 0, err
	}
	return tok.Hash, nil
}

// Verify checks a time-stamp token (or a granted TimeStampResp) from any
// TSA against the digest of the data, computed with h:
//
//  1. the syntax: a SignedData (RFC 5652 section 5) with one SignerInfo
//     over a TSTInfo (RFC 3161 section 2.4.2), strict DER;
//  2. the signed attributes: content-type id-ct-TSTInfo, message-digest of
//     the TSTInfo (SHA-256, SHA-384 or SHA-512), and the signature over
//     them (RSA PKCS #1 v1.5, RSASSA-PSS or ECDSA);
//  3. the signer certificate, named by the SignerInfo, from the token or
//     opts.Certificates;
//  4. the signing-certificate attribute, ESSCertIDv2 (RFC 5816) or
//     ESSCertID (RFC 2634), naming that certificate, and the tsa name;
//  5. the certificate's chain to opts.Roots for id-kp-timeStamping at
//     opts.CurrentTime (default: genTime), and its extended key usage:
//     critical and timeStamping only (RFC 3161 section 2.3);
//  6. the message imprint: algorithm h and value digest.
//
// Each failure wraps one of the Err values above (a non-granted response
// is a *RejectError). The Token is returned, as far as it was read, also
// with an error.
func Verify(tokenOrResp []byte, digest []byte, h crypto.Hash, opts VerifyOptions) (*Token, error) {
	if opts.Roots == nil {
		return nil, errors.New("tsa: verify: VerifyOptions.Roots is required")
	}
	p, err := parseToken(tokenOrResp)
	if err != nil {
		return nil, err
	}
	tok := p.tok
	signer, err := p.signer(opts.Certificates)
	if err != nil {
		return tok, err
	}
	tok.SignerCert = signer
	if err := p.checkSignature(signer); err != nil {
		return tok, err
	}
	if err := p.checkSigningCertificate(signer); err != nil {
		return tok, err
	}
	if err := p.checkTSAName(signer); err != nil {
		return tok, err
	}
	if err := checkChain(signer, tok, opts); err != nil {
		return tok, err
	}
	if err := checkTimeStampingEKU(signer); err != nil {
		return tok, err
	}
	if err := strongHash(tok.Hash, "message imprint"); err != nil {
		return tok, err
	}
	if tok.Hash != h {
		return tok, fmt.Errorf("%w: the token stamps a %v digest, not %v", ErrImprintMismatch, tok.Hash, h)
	}
	if !bytes.Equal(tok.Imprint, digest) {
		return tok, fmt.Errorf("%w: the token stamps other data", ErrImprintMismatch)
	}
	return tok, nil
}

// parsedToken is a token read but not yet checked.
type parsedToken struct {
	tok     *Token
	tstInfo []byte // eContent: the DER TSTInfo
	tsaName []byte // the TSTInfo tsa GeneralName, DER; nil when absent

	// The SignerInfo (RFC 5652 section 5.3).
	sidIssuer   []byte   // issuerAndSerialNumber: the issuer Name, DER
	sidSerial   *big.Int // issuerAndSerialNumber: the serial number
	sidKeyID    []byte   // subjectKeyIdentifier, when the sid is one
	digestOID   asn1.ObjectIdentifier
	digestPar   []byte // DER parameters of the digestAlgorithm; nil when absent
	signedAttrs []byte // the [0] IMPLICIT SET OF Attribute as received; nil when absent
	attrs       []cms.Attribute
	sigOID      asn1.ObjectIdentifier
	sigParams   []byte // DER parameters of the signatureAlgorithm; nil when absent
	signature   []byte

	certErr error // why a certificate of the token could not be parsed
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// parseToken reads a response or token, DER or PEM.
func parseToken(in []byte) (*parsedToken, error) {
	der, err := unPEM(in)
	if err != nil {
		return nil, err
	}
	s := cryptobyte.String(der)
	var outer, body cryptobyte.String
	if !s.ReadASN1Element(&outer, cbasn1.SEQUENCE) {
		return nil, malformed("not a DER SEQUENCE (truncated, or not a token)")
	}
	if !s.Empty() {
		return nil, malformed("%d bytes of trailing data", len(s))
	}
	elem := outer
	elem.ReadASN1(&body, cbasn1.SEQUENCE)
	ci := []byte(outer)
	// A TimeStampResp starts with its PKIStatusInfo, a ContentInfo with an OID.
	if body.PeekASN1Tag(cbasn1.SEQUENCE) {
		if ci, err = responseToken(outer); err != nil {
			return nil, err
		}
	}
	return parseContentInfo(ci)
}

// unPEM returns DER input as is and decodes the first block of PEM input.
func unPEM(in []byte) ([]byte, error) {
	if len(in) > 0 && in[0] == 0x30 {
		return in, nil
	}
	block, rest := pem.Decode(in)
	if block == nil {
		return nil, malformed("neither DER nor PEM")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, malformed("data after the PEM block")
	}
	return block.Bytes, nil
}

// responseToken returns the TimeStampToken of a DER TimeStampResp (RFC
// 3161 section 2.4.2). A response that grants nothing is a *RejectError.
func responseToken(der []byte) ([]byte, error) {
	s := cryptobyte.String(der)
	var resp, info cryptobyte.String
	if !s.ReadASN1(&resp, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed("TimeStampResp is not one DER SEQUENCE")
	}
	if !resp.ReadASN1(&info, cbasn1.SEQUENCE) {
		return nil, malformed("TimeStampResp has no PKIStatusInfo")
	}
	var status int64
	if !info.ReadASN1Integer(&status) {
		return nil, malformed("PKIStatus is not a small INTEGER")
	}
	var reasons []string
	if info.PeekASN1Tag(cbasn1.SEQUENCE) {
		var texts cryptobyte.String
		info.ReadASN1(&texts, cbasn1.SEQUENCE)
		for !texts.Empty() {
			var text cryptobyte.String
			if !texts.ReadASN1(&text, cbasn1.UTF8String) || !utf8.Valid(text) {
				return nil, malformed("statusString holds something else than UTF8Strings")
			}
			reasons = append(reasons, printable(string(text)))
		}
	}
	fail := FailNone
	if info.PeekASN1Tag(cbasn1.BIT_STRING) {
		var bits cryptobyte.String
		info.ReadASN1(&bits, cbasn1.BIT_STRING)
		var err error
		if fail, err = failInfoOf(bits); err != nil {
			return nil, err
		}
	}
	if !info.Empty() {
		return nil, malformed("unexpected field in PKIStatusInfo")
	}
	var token cryptobyte.String
	hasToken := resp.PeekASN1Tag(cbasn1.SEQUENCE)
	if hasToken {
		resp.ReadASN1Element(&token, cbasn1.SEQUENCE)
	}
	if !resp.Empty() {
		return nil, malformed("unexpected field in TimeStampResp")
	}
	if status != StatusGranted && status != StatusGrantedWithMods {
		st := StatusRejection
		if status >= math.MinInt32 && status <= math.MaxInt32 {
			st = int(status)
		}
		return nil, &RejectError{Status: st, FailInfo: fail, Reason: strings.Join(reasons, "; ")}
	}
	if !hasToken {
		return nil, malformed("granted response without a timeStampToken")
	}
	return token, nil
}

// printable replaces control characters, so that a TSA's text cannot drive
// the terminal that shows it.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// failInfoOf is the first bit set in a PKIFailureInfo BIT STRING, or
// FailNone.
func failInfoOf(bits []byte) (FailInfo, error) {
	if len(bits) == 0 || bits[0] > 7 || (len(bits) == 1 && bits[0] != 0) {
		return 0, malformed("failInfo is not a BIT STRING")
	}
	n := (len(bits)-1)*8 - int(bits[0])
	for i := range n {
		if bits[1+i/8]&(0x80>>(i%8)) != 0 {
			return FailInfo(i), nil
		}
	}
	return FailNone, nil
}

// parseContentInfo reads a TimeStampToken: a ContentInfo holding a
// SignedData over a TSTInfo (RFC 3161 section 2.4.2, RFC 5652 sections 3
// and 5).
func parseContentInfo(ci []byte) (*parsedToken, error) {
	ci = bytes.Clone(ci) // the Token's slices alias Raw, not the caller's buffer
	p := &parsedToken{tok: &Token{Raw: ci}}
	s := cryptobyte.String(ci)
	var seq, content, sd cryptobyte.String
	var contentType asn1.ObjectIdentifier
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() || !seq.ReadASN1ObjectIdentifier(&contentType) {
		return nil, malformed("not a ContentInfo")
	}
	if !contentType.Equal(oidSignedData) {
		return nil, malformed("content type %v is not signedData", contentType)
	}
	if !seq.ReadASN1(&content, tagCons0) || !seq.Empty() || !content.ReadASN1(&sd, cbasn1.SEQUENCE) || !content.Empty() {
		return nil, malformed("ContentInfo content is not a SignedData")
	}
	var version int64
	if !sd.ReadASN1Integer(&version) {
		return nil, malformed("SignedData version is not a small INTEGER")
	}
	// RFC 5652 section 5.1: 3 for an eContentType other than id-data; 4
	// and 5 when attribute or other certificates are present.
	if version < 3 || version > 5 {
		return nil, malformed("SignedData version %d, want 3", version)
	}
	var digestAlgs cryptobyte.String
	if !sd.ReadASN1(&digestAlgs, cbasn1.SET) {
		return nil, malformed("SignedData digestAlgorithms is not a SET")
	}
	for !digestAlgs.Empty() {
		if _, _, err := readAlgorithm(&digestAlgs, "digestAlgorithms"); err != nil {
			return nil, err
		}
	}
	var encap, explicit, eContent cryptobyte.String
	var eContentType asn1.ObjectIdentifier
	if !sd.ReadASN1(&encap, cbasn1.SEQUENCE) || !encap.ReadASN1ObjectIdentifier(&eContentType) {
		return nil, malformed("no EncapsulatedContentInfo")
	}
	if !eContentType.Equal(oidTSTInfo) {
		return nil, malformed("eContentType %v is not id-ct-TSTInfo", eContentType)
	}
	if !encap.ReadASN1(&explicit, tagCons0) || !encap.Empty() {
		return nil, malformed("no eContent: the TSTInfo is missing")
	}
	if !explicit.ReadASN1(&eContent, cbasn1.OCTET_STRING) || !explicit.Empty() {
		return nil, malformed("eContent is not a primitive OCTET STRING")
	}
	p.tstInfo = eContent
	if err := p.parseTSTInfo(); err != nil {
		return nil, err
	}

	var certs cryptobyte.String
	var hasCerts bool
	if !sd.ReadOptionalASN1(&certs, &hasCerts, tagCons0) {
		return nil, malformed("SignedData certificates")
	}
	for i := 0; !certs.Empty(); i++ {
		var der cryptobyte.String
		var tag cbasn1.Tag
		if !certs.ReadAnyASN1Element(&der, &tag) {
			return nil, malformed("SignedData certificates")
		}
		if tag != cbasn1.SEQUENCE {
			continue // an attribute or other certificate: never a TSA certificate
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			// Not fatal: another certificate may be the signer's.
			if p.certErr == nil {
				p.certErr = fmt.Errorf("certificate %d of the token: %w", i, err)
			}
			continue
		}
		p.tok.Certificates = append(p.tok.Certificates, cert)
	}
	if !sd.SkipOptionalASN1(tagCons1) {
		return nil, malformed("SignedData crls")
	}
	var infos, info cryptobyte.String
	if !sd.ReadASN1(&infos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("SignedData signerInfos is not a SET at its end")
	}
	if !infos.ReadASN1(&info, cbasn1.SEQUENCE) {
		return nil, malformed("no SignerInfo")
	}
	if !infos.Empty() {
		return nil, malformed("more than one SignerInfo (RFC 3161 section 2.4.2 allows one)")
	}
	if err := p.parseSignerInfo(info); err != nil {
		return nil, err
	}
	for _, c := range p.tok.Certificates {
		if p.names(c) {
			p.tok.SignerCert = c
			break
		}
	}
	return p, nil
}

// parseSignerInfo reads the SignerInfo (RFC 5652 section 5.3).
func (p *parsedToken) parseSignerInfo(si cryptobyte.String) error {
	var version int64
	if !si.ReadASN1Integer(&version) {
		return malformed("SignerInfo version is not a small INTEGER")
	}
	switch {
	case si.PeekASN1Tag(cbasn1.SEQUENCE):
		var ias, issuer cryptobyte.String
		p.sidSerial = new(big.Int)
		if !si.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(p.sidSerial) || !ias.Empty() {
			return malformed("SignerInfo sid is not an IssuerAndSerialNumber")
		}
		p.sidIssuer = issuer
		if version != 1 {
			return malformed("SignerInfo version %d with an issuerAndSerialNumber, want 1", version)
		}
	case si.PeekASN1Tag(tagPrim0):
		var keyID cryptobyte.String
		si.ReadASN1(&keyID, tagPrim0)
		if len(keyID) == 0 {
			return malformed("SignerInfo sid is an empty subjectKeyIdentifier")
		}
		p.sidKeyID = keyID
		if version != 3 {
			return malformed("SignerInfo version %d with a subjectKeyIdentifier, want 3", version)
		}
	default:
		return malformed("SignerInfo sid is neither issuerAndSerialNumber nor subjectKeyIdentifier")
	}
	var err error
	if p.digestOID, p.digestPar, err = readAlgorithm(&si, "SignerInfo digestAlgorithm"); err != nil {
		return err
	}
	if si.PeekASN1Tag(tagCons0) {
		var attrs, set cryptobyte.String
		si.ReadASN1Element(&attrs, tagCons0)
		p.signedAttrs = attrs
		attrs.ReadASN1(&set, tagCons0)
		if p.attrs, err = parseAttributes(set); err != nil {
			return err
		}
	}
	if p.sigOID, p.sigParams, err = readAlgorithm(&si, "SignerInfo signatureAlgorithm"); err != nil {
		return err
	}
	var sig cryptobyte.String
	if !si.ReadASN1(&sig, cbasn1.OCTET_STRING) {
		return malformed("SignerInfo signature is not an OCTET STRING")
	}
	p.signature = sig
	if !si.SkipOptionalASN1(tagCons1) || !si.Empty() {
		return malformed("unexpected field at the end of the SignerInfo")
	}
	return nil
}

// readAlgorithm reads an AlgorithmIdentifier: its OID and its parameters
// (a whole DER element, nil when absent).
func readAlgorithm(s *cryptobyte.String, what string) (asn1.ObjectIdentifier, []byte, error) {
	oid, params, err := cms.ReadAlgorithm(s, what)
	if err != nil {
		return nil, nil, malformed("%v", err)
	}
	return oid, params, nil
}

// parseAttributes reads a SET OF Attribute (RFC 5652 section 5.3).
func parseAttributes(set cryptobyte.String) ([]cms.Attribute, error) {
	attrs, err := cms.ParseAttributes(set)
	if err != nil {
		return nil, malformed("%v", err)
	}
	return attrs, nil
}

// attr returns the value of the signed attribute oid. RFC 5652 section 11
// and RFC 5035 section 5.4 allow these attributes once, with one value.
func (p *parsedToken) attr(oid asn1.ObjectIdentifier, sentinel error, name string) (v cryptobyte.String, ok bool, err error) {
	for _, a := range p.attrs {
		if !a.OID.Equal(oid) {
			continue
		}
		if ok || len(a.Values) != 1 {
			return nil, false, fmt.Errorf("%w: %s attribute present twice or with several values", sentinel, name)
		}
		v, ok = a.Values[0], true
	}
	return v, ok, nil
}

// parseTSTInfo reads the TSTInfo (RFC 3161 section 2.4.2) into p.tok.
func (p *parsedToken) parseTSTInfo() error {
	tok := p.tok
	s := cryptobyte.String(p.tstInfo)
	var info cryptobyte.String
	if !s.ReadASN1(&info, cbasn1.SEQUENCE) {
		return malformed("TSTInfo is not a DER SEQUENCE")
	}
	if !s.Empty() {
		return malformed("trailing data after the TSTInfo")
	}
	var version int64
	if !info.ReadASN1Integer(&version) || version != 1 {
		return malformed("TSTInfo version is not 1")
	}
	if !info.ReadASN1ObjectIdentifier(&tok.Policy) {
		return malformed("TSTInfo policy is not an OID")
	}
	var imprint, hashed cryptobyte.String
	if !info.ReadASN1(&imprint, cbasn1.SEQUENCE) {
		return malformed("TSTInfo messageImprint is not a SEQUENCE")
	}
	oid, params, err := readAlgorithm(&imprint, "messageImprint hashAlgorithm")
	if err != nil {
		return err
	}
	if !imprint.ReadASN1(&hashed, cbasn1.OCTET_STRING) || !imprint.Empty() {
		return malformed("TSTInfo messageImprint hashedMessage is not an OCTET STRING")
	}
	if tok.Hash = cms.HashFromOID(oid); tok.Hash == 0 || !cms.NullOrAbsent(params) {
		return fmt.Errorf("%w: message imprint hash algorithm %v", ErrUnsupportedAlgorithm, oid)
	}
	if len(hashed) != tok.Hash.Size() {
		return malformed("message imprint has %d bytes, a %v digest has %d", len(hashed), tok.Hash, tok.Hash.Size())
	}
	tok.Imprint = hashed
	tok.Serial = new(big.Int)
	if !info.ReadASN1Integer(tok.Serial) {
		return malformed("TSTInfo serialNumber is not an INTEGER")
	}
	var genTime cryptobyte.String
	if !info.ReadASN1(&genTime, cbasn1.GeneralizedTime) {
		return malformed("TSTInfo genTime is not a GeneralizedTime")
	}
	if tok.GenTime, err = parseGenTime(genTime); err != nil {
		return err
	}
	if info.PeekASN1Tag(cbasn1.SEQUENCE) {
		var acc cryptobyte.String
		info.ReadASN1(&acc, cbasn1.SEQUENCE)
		if tok.Accuracy, err = parseAccuracy(acc); err != nil {
			return err
		}
	}
	if info.PeekASN1Tag(cbasn1.BOOLEAN) {
		if !info.ReadASN1Boolean(&tok.Ordering) {
			return malformed("TSTInfo ordering is not a DER BOOLEAN")
		}
		if !tok.Ordering {
			return malformed("TSTInfo ordering FALSE is encoded (DER leaves out DEFAULT values)")
		}
	}
	if info.PeekASN1Tag(cbasn1.INTEGER) {
		tok.Nonce = new(big.Int)
		if !info.ReadASN1Integer(tok.Nonce) {
			return malformed("TSTInfo nonce is not an INTEGER")
		}
	}
	if info.PeekASN1Tag(tagCons0) {
		var name cryptobyte.String
		info.ReadASN1(&name, tagCons0)
		p.tsaName = name
		if tok.TSAName, err = generalNameText(name); err != nil {
			return err
		}
	}
	if info.PeekASN1Tag(tagCons1) {
		var exts cryptobyte.String
		info.ReadASN1(&exts, tagCons1)
		if err := checkExtensions(exts); err != nil {
			return err
		}
	}
	if !info.Empty() {
		return malformed("unexpected field in the TSTInfo")
	}
	return nil
}

// parseGenTime reads a GeneralizedTime as RFC 3161 section 2.4.2 and DER
// want it: YYYYMMDDhhmmss[.s...]Z, the fraction without trailing zeros.
// Digits beyond the nanosecond are dropped.
func parseGenTime(b []byte) (time.Time, error) {
	s := string(b)
	bad := malformed("TSTInfo genTime %q is not YYYYMMDDhhmmss[.s...]Z", s)
	if len(s) < 15 || s[len(s)-1] != 'Z' {
		return time.Time{}, bad
	}
	for i := range 14 {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, bad
		}
	}
	t, err := time.Parse("20060102150405", s[:14])
	if err != nil {
		return time.Time{}, bad
	}
	if frac := s[14 : len(s)-1]; frac != "" {
		if len(frac) < 2 || frac[0] != '.' || frac[len(frac)-1] == '0' {
			return time.Time{}, bad
		}
		ns, scale := 0, int(time.Second)
		for _, c := range frac[1:] {
			if c < '0' || c > '9' {
				return time.Time{}, bad
			}
			scale /= 10
			ns += int(c-'0') * scale
		}
		t = t.Add(time.Duration(ns))
	}
	return t, nil
}

// parseAccuracy reads an Accuracy (RFC 3161 section 2.4.2):
//
//	Accuracy ::= SEQUENCE {
//	   seconds        INTEGER              OPTIONAL,
//	   millis     [0] INTEGER  (1..999)    OPTIONAL,
//	   micros     [1] INTEGER  (1..999)    OPTIONAL  }
func parseAccuracy(acc cryptobyte.String) (time.Duration, error) {
	bad := malformed("TSTInfo accuracy is not an Accuracy")
	var secs int64
	if acc.PeekASN1Tag(cbasn1.INTEGER) && !acc.ReadASN1Integer(&secs) {
		return 0, bad
	}
	millis, ok1 := readImplicitSmallInt(&acc, tagPrim0)
	micros, ok2 := readImplicitSmallInt(&acc, tagPrim1)
	if !ok1 || !ok2 || !acc.Empty() {
		return 0, bad
	}
	if secs < 0 || secs > math.MaxInt64/int64(time.Second)-1 ||
		millis == 0 || millis > 999 || micros == 0 || micros > 999 {
		return 0, malformed("TSTInfo accuracy out of range")
	}
	return time.Duration(secs)*time.Second + time.Duration(max(millis, 0))*time.Millisecond +
		time.Duration(max(micros, 0))*time.Microsecond, nil
}

// readImplicitSmallInt reads an optional [n] IMPLICIT INTEGER of up to two
// bytes: -1 when absent. (cryptobyte's ReadOptionalASN1Integer reads an
// EXPLICIT one.)
func readImplicitSmallInt(s *cryptobyte.String, tag cbasn1.Tag) (int64, bool) {
	var content cryptobyte.String
	var present bool
	if !s.ReadOptionalASN1(&content, &present, tag) {
		return 0, false
	}
	if !present {
		return -1, true
	}
	if len(content) == 0 || len(content) > 2 {
		return 0, false
	}
	// Reuse the INTEGER checks (minimal, signed) on a rebuilt TLV.
	tlv := cryptobyte.String(append([]byte{byte(cbasn1.INTEGER), byte(len(content))}, content...))
	var v int64
	if !tlv.ReadASN1Integer(&v) {
		return 0, false
	}
	return v, true
}

// checkExtensions refuses a critical TSTInfo extension: RFC 3161 defines
// none, so none is understood.
func checkExtensions(exts cryptobyte.String) error {
	for !exts.Empty() {
		var ext, value cryptobyte.String
		var oid asn1.ObjectIdentifier
		var critical bool
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) ||
			!ext.ReadOptionalASN1Boolean(&critical, cbasn1.BOOLEAN, false) ||
			!ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
			return malformed("TSTInfo extensions")
		}
		if critical {
			return malformed("TSTInfo has critical extension %v, which is not understood", oid)
		}
	}
	return nil
}

// generalNameText renders the TSTInfo tsa field, [0] EXPLICIT GeneralName
// (RFC 5280 section 4.2.1.6).
func generalNameText(field cryptobyte.String) (string, error) {
	var v cryptobyte.String
	var tag cbasn1.Tag
	if !field.ReadAnyASN1(&v, &tag) || !field.Empty() {
		return "", malformed("TSTInfo tsa is not a GeneralName")
	}
	switch tag {
	case tagCons4: // directoryName: [4] EXPLICIT Name
		rdn, err := parseName(v)
		if err != nil {
			return "", err
		}
		var name pkix.Name
		name.FillFromRDNSequence(&rdn)
		return name.String(), nil
	case cbasn1.Tag(1).ContextSpecific(), cbasn1.Tag(2).ContextSpecific(), cbasn1.Tag(6).ContextSpecific():
		// rfc822Name, dNSName, uniformResourceIdentifier: IA5String.
		for _, c := range v {
			if c < 0x20 || c > 0x7e {
				return "", malformed("TSTInfo tsa name is not printable IA5String")
			}
		}
		return string(v), nil
	case cbasn1.Tag(7).ContextSpecific(): // iPAddress
		if len(v) != net.IPv4len && len(v) != net.IPv6len {
			return "", malformed("TSTInfo tsa iPAddress has %d bytes", len(v))
		}
		return net.IP(v).String(), nil
	}
	return fmt.Sprintf("[%d] %x", tag&0x1f, []byte(v)), nil
}

// parseName reads a Name in a directoryName: one RDNSequence, nothing after.
func parseName(v cryptobyte.String) (pkix.RDNSequence, error) {
	var rdn pkix.RDNSequence
	rest, err := asn1.Unmarshal(v, &rdn)
	if err != nil || len(rest) != 0 {
		return nil, malformed("directoryName is not a Name")
	}
	return rdn, nil
}

// names tells whether the SignerInfo's sid designates c.
func (p *parsedToken) names(c *x509.Certificate) bool {
	if p.sidKeyID != nil {
		return bytes.Equal(c.SubjectKeyId, p.sidKeyID)
	}
	return bytes.Equal(c.RawIssuer, p.sidIssuer) && c.SerialNumber.Cmp(p.sidSerial) == 0
}

// signer finds the certificate that the sid names, among the token's then
// extra. When several do (the same key certified twice, named by its key
// identifier), the one that the signing-certificate attribute names wins.
func (p *parsedToken) signer(extra []*x509.Certificate) (*x509.Certificate, error) {
	var found []*x509.Certificate
	for _, c := range slices.Concat(p.tok.Certificates, extra) {
		if c != nil && p.names(c) {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		sid := fmt.Sprintf("serial %x", p.sidSerial)
		if p.sidKeyID != nil {
			sid = fmt.Sprintf("key identifier %x", p.sidKeyID)
		}
		err := fmt.Errorf("%w: %s (the token carries %d certificates; give the TSA certificate)", ErrNoSigner, sid, len(p.tok.Certificates))
		if p.certErr != nil {
			err = fmt.Errorf("%w: %w", err, p.certErr)
		}
		return nil, err
	}
	for _, c := range found {
		if p.checkSigningCertificate(c) == nil {
			return c, nil
		}
	}
	return found[0], nil
}

// strongHash refuses what is not SHA-256, SHA-384 or SHA-512.
func strongHash(h crypto.Hash, what string) error {
	switch h {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
		return nil
	case crypto.SHA1, crypto.MD5:
		return fmt.Errorf("%w: %s hash %v is weak", ErrUnsupportedAlgorithm, what, h)
	}
	return fmt.Errorf("%w: %s hash %v", ErrUnsupportedAlgorithm, what, h)
}

func digestOf(h crypto.Hash, data []byte) []byte {
	d := h.New()
	d.Write(data)
	return d.Sum(nil)
}

// checkSignature checks the signed attributes and the signature over them
// with cert's key (RFC 5652 sections 5.4 and 5.6).
func (p *parsedToken) checkSignature(cert *x509.Certificate) error {
	if p.signedAttrs == nil {
		return fmt.Errorf("%w: no signed attributes (RFC 3161 needs the signing-certificate attribute)", ErrBadSignature)
	}
	h := cms.HashFromOID(p.digestOID)
	if !cms.NullOrAbsent(p.digestPar) {
		return fmt.Errorf("%w: digestAlgorithm %v has parameters", ErrUnsupportedAlgorithm, p.digestOID)
	}
	if h == 0 {
		return fmt.Errorf("%w: digestAlgorithm %v", ErrUnsupportedAlgorithm, p.digestOID)
	}
	if err := strongHash(h, "signature digest"); err != nil {
		return err
	}

	v, ok, err := p.attr(oidAttrContentType, ErrBadSignature, "content-type")
	if err != nil {
		return err
	}
	var contentType asn1.ObjectIdentifier
	if !ok {
		return fmt.Errorf("%w: no content-type attribute", ErrBadSignature)
	}
	if !v.ReadASN1ObjectIdentifier(&contentType) || !v.Empty() {
		return fmt.Errorf("%w: content-type attribute is not an OID", ErrBadSignature)
	}
	if !contentType.Equal(oidTSTInfo) {
		return fmt.Errorf("%w: content-type attribute %v is not id-ct-TSTInfo", ErrBadSignature, contentType)
	}

	if v, ok, err = p.attr(oidAttrMessageDigest, ErrBadSignature, "message-digest"); err != nil {
		return err
	}
	var md cryptobyte.String
	if !ok {
		return fmt.Errorf("%w: no message-digest attribute", ErrBadSignature)
	}
	if !v.ReadASN1(&md, cbasn1.OCTET_STRING) || !v.Empty() {
		return fmt.Errorf("%w: message-digest attribute is not an OCTET STRING", ErrBadSignature)
	}
	if !bytes.Equal(md, digestOf(h, p.tstInfo)) {
		return fmt.Errorf("%w: message-digest attribute does not match the TSTInfo (the token was altered)", ErrBadSignature)
	}

	// The signature covers the DER SET OF, not the [0] IMPLICIT tag it
	// travels with (RFC 5652 section 5.4).
	signed := bytes.Clone(p.signedAttrs)
	signed[0] = 0x31
	return verifySignature(cert, p.sigOID, p.sigParams, h, signed, p.signature)
}

// verifySignature checks sig over signed, whose digest algorithm is h, with
// cert's key.
func verifySignature(cert *x509.Certificate, oid asn1.ObjectIdentifier, params []byte, h crypto.Hash, signed, sig []byte) error {
	// RFC 5758 section 3.2: ECDSA with a hash has no parameters;
	// id-ecPublicKey has the curve's, which the certificate names anyway.
	if alg, ok := cms.LookupSignatureAlgorithm(oid); ok && alg.EC && alg.Hash != 0 && alg.Hash == h && params != nil {
		return fmt.Errorf("%w: %v with parameters", ErrUnsupportedAlgorithm, oid)
	}
	err := cms.VerifySignature(cert, oid, params, h, digestOf(h, signed), sig)
	switch {
	case errors.Is(err, cms.ErrUnsupported):
		return fmt.Errorf("%w: %w", ErrUnsupportedAlgorithm, err)
	case err != nil:
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}

// checkSigningCertificate checks that the ESS signing-certificate
// attributes name cert: signingCertificateV2 (RFC 5035, RFC 5816) or
// signingCertificate (RFC 2634); each one present must match. Only the
// first ESSCertID concerns the signer; the others name its chain.
func (p *parsedToken) checkSigningCertificate(cert *x509.Certificate) error {
	v2, has2, err := p.attr(oidAttrSigningCertV2, ErrSigningCertificate, "signingCertificateV2")
	if err != nil {
		return err
	}
	v1, has1, err := p.attr(oidAttrSigningCertV1, ErrSigningCertificate, "signingCertificate")
	if err != nil {
		return err
	}
	if !has1 && !has2 {
		return fmt.Errorf("%w: neither signingCertificateV2 nor signingCertificate is present (RFC 3161 section 2.4.2, RFC 5816)", ErrSigningCertificate)
	}
	if has2 {
		if err := checkESSCertID(v2, true, cert); err != nil {
			return err
		}
	}
	if has1 {
		return checkESSCertID(v1, false, cert)
	}
	return nil
}

// checkESSCertID checks the first ESSCertIDv2 (v2) or ESSCertID of a
// SigningCertificate[V2] against cert.
//
//	SigningCertificateV2 ::= SEQUENCE {
//	   certs        SEQUENCE OF ESSCertIDv2,
//	   policies     SEQUENCE OF PolicyInformation OPTIONAL }
//	ESSCertIDv2 ::= SEQUENCE {
//	   hashAlgorithm  AlgorithmIdentifier DEFAULT {algorithm id-sha256},
//	   certHash       OCTET STRING,
//	   issuerSerial   IssuerSerial OPTIONAL }
//	ESSCertID ::= SEQUENCE { certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }
//	IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }
func checkESSCertID(v cryptobyte.String, v2 bool, cert *x509.Certificate) error {
	name := "signingCertificate"
	if v2 {
		name = "signingCertificateV2"
	}
	bad := fmt.Errorf("%w: %s attribute is malformed", ErrSigningCertificate, name)
	var sc, ids, id, certHash cryptobyte.String
	if !v.ReadASN1(&sc, cbasn1.SEQUENCE) || !v.Empty() || !sc.ReadASN1(&ids, cbasn1.SEQUENCE) ||
		!sc.SkipOptionalASN1(cbasn1.SEQUENCE) || !sc.Empty() || !ids.ReadASN1(&id, cbasn1.SEQUENCE) {
		return bad
	}
	h := crypto.SHA1
	if v2 {
		h = crypto.SHA256
		if id.PeekASN1Tag(cbasn1.SEQUENCE) {
			oid, params, err := readAlgorithm(&id, name+" hashAlgorithm")
			if err != nil || !cms.NullOrAbsent(params) {
				return bad
			}
			if h = cms.HashFromOID(oid); h == 0 || h == crypto.MD5 {
				return fmt.Errorf("%w: %s hash algorithm %v", ErrUnsupportedAlgorithm, name, oid)
			}
		}
	}
	if !id.ReadASN1(&certHash, cbasn1.OCTET_STRING) {
		return bad
	}
	if !bytes.Equal(certHash, digestOf(h, cert.Raw)) {
		return fmt.Errorf("%w: its %v certHash is not that of the signer certificate %q", ErrSigningCertificate, h, cert.Subject)
	}
	if id.PeekASN1Tag(cbasn1.SEQUENCE) {
		var is, names cryptobyte.String
		serial := new(big.Int)
		if !id.ReadASN1(&is, cbasn1.SEQUENCE) || !is.ReadASN1(&names, cbasn1.SEQUENCE) ||
			!is.ReadASN1Integer(serial) || !is.Empty() {
			return bad
		}
		if serial.Cmp(cert.SerialNumber) != 0 {
			return fmt.Errorf("%w: its issuerSerial names serial %x, the signer certificate has %x", ErrSigningCertificate, serial, cert.SerialNumber)
		}
		issuerFound := false
		for !names.Empty() {
			var gn, dn cryptobyte.String
			var tag cbasn1.Tag
			if !names.ReadAnyASN1(&gn, &tag) {
				return bad
			}
			if tag == tagCons4 && gn.ReadASN1Element(&dn, cbasn1.SEQUENCE) && gn.Empty() && bytes.Equal(dn, cert.RawIssuer) {
				issuerFound = true
			}
		}
		if !issuerFound {
			return fmt.Errorf("%w: its issuerSerial names another issuer than %q", ErrSigningCertificate, cert.Issuer)
		}
	}
	if !id.Empty() {
		return bad
	}
	return nil
}

// checkTSAName checks the TSTInfo tsa field, when present, against the
// names of cert (RFC 3161 section 2.4.2: it MUST correspond to one of
// them).
func (p *parsedToken) checkTSAName(cert *x509.Certificate) error {
	if p.tsaName == nil {
		return nil
	}
	field := cryptobyte.String(p.tsaName)
	var v cryptobyte.String
	var tag cbasn1.Tag
	field.ReadAnyASN1(&v, &tag)
	ok := true
	switch tag {
	case tagCons4:
		rdn, err := parseName(v)
		ok = err == nil && (bytes.Equal(v, cert.RawSubject) || rdn.String() == cert.Subject.ToRDNSequence().String())
	case cbasn1.Tag(1).ContextSpecific():
		ok = slices.Contains(cert.EmailAddresses, string(v))
	case cbasn1.Tag(2).ContextSpecific():
		ok = slices.Contains(cert.DNSNames, string(v))
	case cbasn1.Tag(6).ContextSpecific():
		ok = slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == string(v) })
	case cbasn1.Tag(7).ContextSpecific():
		ok = slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IP(v)) })
	}
	if !ok {
		return fmt.Errorf("%w: %q is not a name of %q", ErrTSAName, p.tok.TSAName, cert.Subject)
	}
	return nil
}

// checkChain verifies cert's chain to opts.Roots for timeStamping.
func checkChain(cert *x509.Certificate, tok *Token, opts VerifyOptions) error {
	inter := x509.NewCertPool()
	if opts.Intermediates != nil {
		inter = opts.Intermediates.Clone()
	}
	for _, c := range slices.Concat(tok.Certificates, opts.Certificates) {
		if c != nil {
			inter.AddCert(c)
		}
	}
	at := opts.CurrentTime
	if at.IsZero() {
		at = tok.GenTime
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
	})
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrChain, at.UTC().Format(time.RFC3339), err)
	}
	// With a CurrentTime other than genTime, the certificate must still
	// have been valid when it signed.
	if tok.GenTime.Before(cert.NotBefore) || tok.GenTime.After(cert.NotAfter) {
		return fmt.Errorf("%w: genTime %s is outside its validity", ErrChain, tok.GenTime.Format(time.RFC3339))
	}
	// RFC 5280 section 4.2.1.3: a key usage, if present, allows signing.
	if cert.KeyUsage != 0 && cert.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("%w: its key usage allows neither digitalSignature nor nonRepudiation", ErrChain)
	}
	return nil
}

// checkTimeStampingEKU applies RFC 3161 section 2.3: the TSA certificate
// has one extended key usage, id-kp-timeStamping, in a critical extension.
func checkTimeStampingEKU(cert *x509.Certificate) error {
	i := slices.IndexFunc(cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidExtKeyUsage) })
	switch {
	case i < 0:
		return fmt.Errorf("%w: it has no extended key usage extension", ErrEKU)
	case !cert.Extensions[i].Critical:
		return fmt.Errorf("%w: the extended key usage extension is not critical", ErrEKU)
	case len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping || len(cert.UnknownExtKeyUsage) != 0:
		return fmt.Errorf("%w: it holds other purposes than timeStamping", ErrEKU)
	}
	return nil
}
