package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/cms"
)

// ErrMalformed: the input is not a CMS SignedData (RFC 5652 section 5) or
// a PDF that this package can read. Parse errors wrap it.
var ErrMalformed = errors.New("signing: malformed signature")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

var (
	tagCons0 = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagCons1 = cbasn1.Tag(1).Constructed().ContextSpecific()
	tagCons4 = cbasn1.Tag(4).Constructed().ContextSpecific()
	tagPrim0 = cbasn1.Tag(0).ContextSpecific()
)

// signedData is a parsed CMS SignedData; its slices alias raw.
type signedData struct {
	raw          []byte // the DER ContentInfo
	eContentType asn1.ObjectIdentifier
	content      []byte // eContent; nil when detached
	attached     bool
	certs        []*x509.Certificate
	certErr      error // why a certificate could not be parsed
	signers      []*signerInfo
}

// signerInfo is a parsed SignerInfo (RFC 5652 section 5.3).
type signerInfo struct {
	sidIssuer   []byte   // issuerAndSerialNumber: the issuer Name, DER
	sidSerial   *big.Int // issuerAndSerialNumber: the serial number
	sidKeyID    []byte   // subjectKeyIdentifier, when the sid is one
	digestOID   asn1.ObjectIdentifier
	digestPar   []byte
	signedAttrs []byte // the [0] IMPLICIT SET OF Attribute as received; nil when absent
	attrs       []cms.Attribute
	sigOID      asn1.ObjectIdentifier
	sigParams   []byte
	signature   []byte
	unsigned    []cms.Attribute
}

// cmsPEMTypes are the PEM labels of CMS signatures that tools write.
var cmsPEMTypes = []string{"CMS", "PKCS7", "PKCS #7 SIGNED DATA"}

// parseCMS reads a ContentInfo holding a SignedData, DER or BER, bare or
// in PEM.
func parseCMS(in []byte) (*signedData, error) {
	der := in
	if trimmed := bytes.TrimSpace(in); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, rest := pem.Decode(trimmed)
		if block == nil {
			return nil, malformed("bad PEM")
		}
		known := false
		for _, t := range cmsPEMTypes {
			known = known || block.Type == t
		}
		if !known {
			return nil, malformed("PEM block %q is not a CMS signature", block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, malformed("data after the PEM block")
		}
		der = block.Bytes
	}
	sd, err := parseSignedData(der)
	if err == nil {
		return sd, nil
	}
	// Not DER: BER as some signers stream it, converted then read strictly.
	converted, berErr := berToDER(der)
	if berErr != nil {
		return nil, err
	}
	return parseSignedData(converted)
}

func parseSignedData(der []byte) (*signedData, error) {
	sd := &signedData{raw: der}
	s := cryptobyte.String(der)
	var seq, content, body cryptobyte.String
	var contentType asn1.ObjectIdentifier
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&contentType) {
		return nil, malformed("not a DER ContentInfo")
	}
	if !s.Empty() {
		return nil, malformed("%d bytes after the ContentInfo", len(s))
	}
	if !contentType.Equal(oidSignedData) {
		return nil, malformed("content type %v is not signedData", contentType)
	}
	if !seq.ReadASN1(&content, tagCons0) || !seq.Empty() || !content.ReadASN1(&body, cbasn1.SEQUENCE) || !content.Empty() {
		return nil, malformed("ContentInfo content is not a SignedData")
	}
	var version int64
	if !body.ReadASN1Integer(&version) || version < 1 || version > 5 {
		return nil, malformed("SignedData version")
	}
	var digestAlgs cryptobyte.String
	if !body.ReadASN1(&digestAlgs, cbasn1.SET) {
		return nil, malformed("SignedData digestAlgorithms is not a SET")
	}
	for !digestAlgs.Empty() {
		if _, _, err := readAlgorithm(&digestAlgs, "digestAlgorithms"); err != nil {
			return nil, err
		}
	}
	var encap cryptobyte.String
	if !body.ReadASN1(&encap, cbasn1.SEQUENCE) || !encap.ReadASN1ObjectIdentifier(&sd.eContentType) {
		return nil, malformed("no EncapsulatedContentInfo")
	}
	if encap.PeekASN1Tag(tagCons0) {
		var explicit, eContent cryptobyte.String
		if !encap.ReadASN1(&explicit, tagCons0) || !explicit.ReadASN1(&eContent, cbasn1.OCTET_STRING) || !explicit.Empty() {
			return nil, malformed("eContent is not an OCTET STRING")
		}
		sd.content, sd.attached = eContent, true
	}
	if !encap.Empty() {
		return nil, malformed("unexpected field in EncapsulatedContentInfo")
	}
	var certs cryptobyte.String
	var hasCerts bool
	if !body.ReadOptionalASN1(&certs, &hasCerts, tagCons0) {
		return nil, malformed("SignedData certificates")
	}
	for i := 0; !certs.Empty(); i++ {
		var c cryptobyte.String
		var tag cbasn1.Tag
		if !certs.ReadAnyASN1Element(&c, &tag) {
			return nil, malformed("SignedData certificates")
		}
		if tag != cbasn1.SEQUENCE {
			continue // an attribute or other certificate
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			if sd.certErr == nil {
				sd.certErr = fmt.Errorf("certificate %d: %w", i, err)
			}
			continue
		}
		sd.certs = append(sd.certs, cert)
	}
	if !body.SkipOptionalASN1(tagCons1) {
		return nil, malformed("SignedData crls")
	}
	var infos cryptobyte.String
	if !body.ReadASN1(&infos, cbasn1.SET) || !body.Empty() {
		return nil, malformed("SignedData signerInfos is not a SET at its end")
	}
	for !infos.Empty() {
		var info cryptobyte.String
		if !infos.ReadASN1(&info, cbasn1.SEQUENCE) {
			return nil, malformed("a SignerInfo is not a SEQUENCE")
		}
		si, err := parseSignerInfo(info)
		if err != nil {
			return nil, err
		}
		sd.signers = append(sd.signers, si)
	}
	if len(sd.signers) == 0 {
		return nil, malformed("no SignerInfo: the SignedData holds no signature")
	}
	return sd, nil
}

func parseSignerInfo(in cryptobyte.String) (*signerInfo, error) {
	si := &signerInfo{}
	var version int64
	if !in.ReadASN1Integer(&version) {
		return nil, malformed("SignerInfo version")
	}
	switch {
	case in.PeekASN1Tag(cbasn1.SEQUENCE):
		var ias, issuer cryptobyte.String
		si.sidSerial = new(big.Int)
		if !in.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(si.sidSerial) || !ias.Empty() {
			return nil, malformed("SignerInfo sid is not an IssuerAndSerialNumber")
		}
		si.sidIssuer = issuer
	case in.PeekASN1Tag(tagPrim0):
		var keyID cryptobyte.String
		in.ReadASN1(&keyID, tagPrim0)
		if len(keyID) == 0 {
			return nil, malformed("SignerInfo sid is an empty subjectKeyIdentifier")
		}
		si.sidKeyID = keyID
	default:
		return nil, malformed("SignerInfo sid is neither issuerAndSerialNumber nor subjectKeyIdentifier")
	}
	var err error
	if si.digestOID, si.digestPar, err = readAlgorithm(&in, "SignerInfo digestAlgorithm"); err != nil {
		return nil, err
	}
	if in.PeekASN1Tag(tagCons0) {
		var element, set cryptobyte.String
		in.ReadASN1Element(&element, tagCons0)
		si.signedAttrs = element
		element.ReadASN1(&set, tagCons0)
		if si.attrs, err = parseAttributes(set); err != nil {
			return nil, err
		}
	}
	if si.sigOID, si.sigParams, err = readAlgorithm(&in, "SignerInfo signatureAlgorithm"); err != nil {
		return nil, err
	}
	var sig cryptobyte.String
	if !in.ReadASN1(&sig, cbasn1.OCTET_STRING) {
		return nil, malformed("SignerInfo signature is not an OCTET STRING")
	}
	si.signature = sig
	if in.PeekASN1Tag(tagCons1) {
		var set cryptobyte.String
		in.ReadASN1(&set, tagCons1)
		if si.unsigned, err = parseAttributes(set); err != nil {
			return nil, err
		}
	}
	if !in.Empty() {
		return nil, malformed("unexpected field at the end of a SignerInfo")
	}
	return si, nil
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

// attr returns the single value of the signed attribute oid. RFC 5652
// section 11 and RFC 5035 allow these once, with one value: a second one is
// an error.
func (si *signerInfo) attr(oid asn1.ObjectIdentifier) (v cryptobyte.String, ok bool, err error) {
	for _, a := range si.attrs {
		if !a.OID.Equal(oid) {
			continue
		}
		if ok || len(a.Values) != 1 {
			return nil, false, fmt.Errorf("attribute %v present twice or with several values", oid)
		}
		v, ok = a.Values[0], true
	}
	return v, ok, nil
}

// names tells whether the SignerInfo's sid designates c.
func (si *signerInfo) names(c *x509.Certificate) bool {
	if si.sidKeyID != nil {
		return bytes.Equal(c.SubjectKeyId, si.sidKeyID)
	}
	return bytes.Equal(c.RawIssuer, si.sidIssuer) && c.SerialNumber.Cmp(si.sidSerial) == 0
}

func (si *signerInfo) sidText() string {
	if si.sidKeyID != nil {
		return fmt.Sprintf("key identifier %x", si.sidKeyID)
	}
	return fmt.Sprintf("serial %x", si.sidSerial)
}
