package tsa

import (
	"bytes"
	"crypto"
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
//  1. the syntax: a SignedData (RFC 5652 section 5, read by the one CMS
//     reader of package internal/cms, strict DER) with one SignerInfo over
//     a TSTInfo (RFC 3161 section 2.4.2);
//  2. the signed attributes: content-type id-ct-TSTInfo, message-digest of
//     the TSTInfo (SHA-256, SHA-384 or SHA-512), and the signature over
//     them under internal/cms's algorithm policy (RSA PKCS #1 v1.5,
//     RSASSA-PSS, ECDSA without parameters, Ed25519);
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
	sd      *cms.SignedData
	si      *cms.SignerInfo // the one SignerInfo
	tstInfo []byte          // eContent: the DER TSTInfo
	tsaName []byte          // the TSTInfo tsa GeneralName, DER; nil when absent
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// cmsError gives an error of package cms the sentinel of this package that
// says the same.
func cmsError(err error) error {
	for _, k := range []struct{ kind, ours error }{
		{cms.ErrMalformed, ErrMalformed},
		{cms.ErrUnsupported, ErrUnsupportedAlgorithm},
		{cms.ErrInvalid, ErrBadSignature},
		{cms.ErrContentRequired, ErrBadSignature},
		{cms.ErrNoSigner, ErrNoSigner},
		{cms.ErrSigningCertificate, ErrSigningCertificate},
	} {
		if errors.Is(err, k.kind) {
			return fmt.Errorf("%w: %w", k.ours, err)
		}
	}
	return err
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
// SignedData over a TSTInfo (RFC 3161 section 2.4.2), with the one CMS
// reader; this profile adds the content type, the eContent and the single
// SignerInfo.
func parseContentInfo(ci []byte) (*parsedToken, error) {
	ci = bytes.Clone(ci) // the Token's slices alias Raw, not the caller's buffer
	sd, err := cms.ParseSignedData(ci)
	if err != nil {
		return nil, cmsError(err)
	}
	if !sd.EContentType.Equal(oidTSTInfo) {
		return nil, malformed("eContentType %v is not id-ct-TSTInfo", sd.EContentType)
	}
	if !sd.Attached {
		return nil, malformed("no eContent: the TSTInfo is missing")
	}
	switch len(sd.SignerInfos) {
	case 0:
		return nil, malformed("no SignerInfo")
	case 1:
	default:
		return nil, malformed("more than one SignerInfo (RFC 3161 section 2.4.2 allows one)")
	}
	p := &parsedToken{
		tok:     &Token{Raw: ci, Certificates: sd.Certificates},
		sd:      sd,
		si:      sd.SignerInfos[0],
		tstInfo: sd.Content,
	}
	if err := p.parseTSTInfo(); err != nil {
		return nil, err
	}
	for _, c := range p.tok.Certificates {
		if p.si.Names(c) {
			p.tok.SignerCert = c
			break
		}
	}
	return p, nil
}

// readAlgorithm reads an AlgorithmIdentifier (the TSTInfo's
// messageImprint): its OID and its parameters (a whole DER element, nil
// when absent).
func readAlgorithm(s *cryptobyte.String, what string) (asn1.ObjectIdentifier, []byte, error) {
	oid, params, err := cms.ReadAlgorithm(s, what)
	if err != nil {
		return nil, nil, malformed("%v", err)
	}
	return oid, params, nil
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
		// critical BOOLEAN DEFAULT FALSE: read as a BOOLEAN element, and
		// only TRUE may be encoded (DER). cryptobyte's
		// ReadOptionalASN1Boolean reads an EXPLICIT [n] BOOLEAN instead,
		// with which no critical extension was ever seen as one.
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) ||
			(ext.PeekASN1Tag(cbasn1.BOOLEAN) && (!ext.ReadASN1Boolean(&critical) || !critical)) ||
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

// signer finds the certificate that the sid names, among the token's then
// extra (see cms.SignedData.Signer).
func (p *parsedToken) signer(extra []*x509.Certificate) (*x509.Certificate, error) {
	c, err := p.sd.Signer(p.si, extra)
	if err != nil {
		return nil, fmt.Errorf("%w (give the TSA certificate)", cmsError(err))
	}
	return c, nil
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

// checkSignature checks the signed attributes and the signature over them
// with cert's key (RFC 5652 sections 5.4 and 5.6).
func (p *parsedToken) checkSignature(cert *x509.Certificate) error {
	h, err := p.si.Hash()
	if err != nil {
		return cmsError(err)
	}
	md, err := p.si.MessageDigest(oidTSTInfo)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if !bytes.Equal(md, cms.Digest(h, p.tstInfo)) {
		return fmt.Errorf("%w: message-digest attribute does not match the TSTInfo (the token was altered)", ErrBadSignature)
	}
	return cmsError(p.si.VerifySignature(cert, h, p.tstInfo))
}

// checkSigningCertificate checks that the ESS signing-certificate
// attributes, signingCertificateV2 (RFC 5816) or signingCertificate (RFC
// 2634), are present and name cert.
func (p *parsedToken) checkSigningCertificate(cert *x509.Certificate) error {
	present, err := p.si.CheckSigningCertificate(cert)
	if err != nil {
		return cmsError(err)
	}
	if !present {
		return fmt.Errorf("%w: neither signingCertificateV2 nor signingCertificate is present (RFC 3161 section 2.4.2, RFC 5816)", ErrSigningCertificate)
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
