package signing

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/tsa"
)

// SignPDF signs a PDF in the PAdES baseline profile (ETSI EN 319 142-1):
// an incremental update (ISO 32000-1 section 7.5.6) adds a signature
// field and a signature dictionary with the ETSI.CAdES.detached subfilter,
// whose /Contents is a detached CAdES signature over the bytes that
// /ByteRange names — the whole file but /Contents itself. The signer's
// certificate and chain are in the CMS; with a Timestamper, the signature
// timestamp makes it B-T. The original bytes are kept unchanged, so
// earlier signatures stay valid. Signature.DER is the signed PDF.
//
// A file that is not a PDF this reader understands, or that is encrypted,
// is a *RequestError.
func (s *Signer) SignPDF(ctx context.Context, pdf []byte, opts PDFOptions) (*Signature, error) {
	return s.current().signPDF(ctx, pdf, opts)
}

func (s *signerKey) signPDF(ctx context.Context, pdf []byte, opts PDFOptions) (*Signature, error) {
	doc, err := readPDF(pdf)
	if err != nil {
		return nil, badRequest("the document is not a readable PDF: %s", pdfReason(err))
	}
	now := s.now().UTC().Truncate(time.Second)
	reserve := s.contentsReserve()
	for range 2 {
		plan, err := s.planPDF(doc, opts, now, reserve)
		if err != nil {
			if _, ok := errors.AsType[*RequestError](err); ok {
				return nil, err
			}
			return nil, badRequest("the document is not a readable PDF: %s", pdfReason(err))
		}
		out := plan.out
		gapEnd := plan.contentsAt + 2*plan.reserve + 2
		br := fmt.Appendf(nil, "[0 %d %d %d", plan.contentsAt, gapEnd, len(out)-gapEnd)
		if len(br) >= len(byteRangePlaceholder) {
			return nil, badRequest("the PDF is too large to sign")
		}
		for len(br) < len(byteRangePlaceholder)-1 {
			br = append(br, ' ')
		}
		copy(out[plan.byteRangeAt:], append(br, ']'))

		h := s.hash.New()
		h.Write(out[:plan.contentsAt])
		h.Write(out[gapEnd:])
		sig, err := s.sign(ctx, h.Sum(nil), nil, false, now)
		if err != nil {
			return nil, err
		}
		if len(sig.DER) > plan.reserve {
			// The TSA's token was larger than foreseen: once more, with room.
			reserve = len(sig.DER) + 1024
			continue
		}
		hexPad(out[plan.contentsAt+1:gapEnd-1], sig.DER)
		sig.DER = out
		return sig, nil
	}
	return nil, errors.New("signing: the signature does not fit its reserved space")
}

// contentsReserve is the room left for the CMS in /Contents: the
// certificates, the attributes, a signature of up to RSA-4096, and a
// timestamp token with its TSA certificate.
func (s *signerKey) contentsReserve() int {
	n := len(s.certs) + len(s.sid) + len(s.attrSigningCert) + 1024
	if s.ts != nil {
		n += 6 << 10
	}
	return n
}

// pdfReason is a parse error without its package prefixes, for callers.
func pdfReason(err error) string {
	msg := err.Error()
	for _, p := range []string{ErrMalformed.Error() + ": ", "PDF: "} {
		if i := bytes.Index([]byte(msg), []byte(p)); i >= 0 {
			msg = msg[i+len(p):]
		}
	}
	return msg
}

// sigField is a signature field of a PDF and its signature dictionary.
type sigField struct {
	name string
	dict pdfDict
}

// signatureFields lists the signed signature fields of the interactive
// form (ISO 32000-1 section 12.7.4.5), walking /Kids with inherited /FT.
func (d *pdfDoc) signatureFields() ([]sigField, error) {
	_, cat, err := d.catalog()
	if err != nil {
		return nil, err
	}
	form, err := d.dict(cat["AcroForm"])
	if err != nil || form == nil {
		return nil, err
	}
	fields, err := d.resolve(form["Fields"])
	if err != nil {
		return nil, err
	}
	var out []sigField
	seen := map[pdfRef]bool{}
	var walk func(list pdfArray, prefix string, ft pdfObj, depth int) error
	walk = func(list pdfArray, prefix string, ft pdfObj, depth int) error {
		if depth > maxPDFDepth {
			return pdfErr("form fields nested too deep")
		}
		for _, f := range list {
			if r, ok := f.(pdfRef); ok {
				if seen[r] || len(seen) > maxPageTreeVisits {
					continue
				}
				seen[r] = true
			}
			fd, err := d.dict(f)
			if err != nil {
				return err
			}
			if fd == nil {
				continue
			}
			name := prefix
			if t, ok := fd["T"].(pdfString); ok {
				if name != "" {
					name += "."
				}
				name += decodeTextString(t)
			}
			fieldType := ft
			if t, ok := fd["FT"]; ok {
				fieldType = t
			}
			if fieldType == pdfName("Sig") {
				if v, err := d.dict(fd["V"]); err != nil {
					return err
				} else if v != nil {
					out = append(out, sigField{name: name, dict: v})
				}
			}
			if kids, err := d.resolve(fd["Kids"]); err != nil {
				return err
			} else if k, ok := kids.(pdfArray); ok {
				if err := walk(k, name, fieldType, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	list, _ := fields.(pdfArray)
	if err := walk(list, "", nil, 0); err != nil {
		return nil, err
	}
	return out, nil
}

// rangeDigester hashes the bytes a /ByteRange names.
type rangeDigester struct {
	data   []byte
	ranges []int64
}

func (r rangeDigester) digest(h crypto.Hash) ([]byte, error) {
	d := h.New()
	for i := 0; i < len(r.ranges); i += 2 {
		d.Write(r.data[r.ranges[i] : r.ranges[i]+r.ranges[i+1]])
	}
	return d.Sum(nil), nil
}

// verifyPDF checks every signature of a PDF, then that the last one
// covers the whole file.
func (v *Verifier) verifyPDF(ctx context.Context, data []byte, r *Report, opts VerifyOptions) {
	doc, err := readPDF(data)
	if err != nil {
		r.Indication, r.SubIndication, r.Detail = TotalFailed, FormatFailure, "not a readable PDF: "+pdfReason(err)
		return
	}
	fields, err := doc.signatureFields()
	if err != nil {
		r.Indication, r.SubIndication, r.Detail = TotalFailed, FormatFailure, "unreadable form fields: "+pdfReason(err)
		return
	}
	if len(fields) == 0 {
		r.Indication, r.SubIndication, r.Detail = TotalFailed, FormatFailure, "the PDF holds no signature"
		return
	}
	for _, f := range fields {
		r.Signatures = append(r.Signatures, v.verifyPDFSignature(ctx, data, f, opts, r.ValidationTime))
	}
	// In the order of the revisions they sign.
	sort.SliceStable(r.Signatures, func(i, j int) bool { return rangeEnd(r.Signatures[i]) < rangeEnd(r.Signatures[j]) })
	last := &r.Signatures[len(r.Signatures)-1]
	covers := rangeEnd(*last) == int64(len(data))
	last.CoversDocument = &covers
	if covers {
		last.check(checkWholeDocument, CheckPassed, "the last signature covers the whole file")
	} else if len(last.ByteRange) > 0 {
		detail := fmt.Sprintf("the document was changed after its last signature: %d bytes are not covered", int64(len(data))-rangeEnd(*last))
		last.check(checkWholeDocument, CheckFailed, detail)
		r.Indication, r.SubIndication, r.Detail = Indeterminate, SigConstraintsFailure, detail
	}
}

func rangeEnd(s SignatureReport) int64 {
	if n := len(s.ByteRange); n >= 2 {
		return s.ByteRange[n-2] + s.ByteRange[n-1]
	}
	return -1
}

// verifyPDFSignature checks one signature dictionary (ISO 32000-1 section
// 12.8.1, ETSI EN 319 142-1 section 5).
func (v *Verifier) verifyPDFSignature(ctx context.Context, data []byte, f sigField, opts VerifyOptions, now time.Time) SignatureReport {
	bad := func(detail string) SignatureReport {
		r := SignatureReport{Field: f.name, Checks: []Check{}}
		r.check(checkByteRange, CheckFailed, detail)
		r.fail(TotalFailed, FormatFailure, detail)
		return r
	}
	arr, _ := f.dict["ByteRange"].(pdfArray)
	var br []int64
	for _, x := range arr {
		n, ok := x.(int64)
		if !ok {
			return bad("/ByteRange holds something else than integers")
		}
		br = append(br, n)
	}
	if len(br) != 4 || br[0] != 0 || br[1] < 0 || br[2] < br[1]+2 || br[3] < 0 || br[2] > int64(len(data)) || br[3] > int64(len(data))-br[2] {
		return bad(fmt.Sprintf("/ByteRange %v is not [0 a b c] within the file around one gap", br))
	}
	contents, _ := f.dict["Contents"].(pdfString)
	gap := data[br[1]:br[2]]
	if gap[0] != '<' || gap[len(gap)-1] != '>' {
		return bad("the byte range gap is not the /Contents hexadecimal string")
	}
	decoded, ok := decodeHexGap(gap[1 : len(gap)-1])
	if !ok || !bytes.Equal(decoded, contents) {
		return bad("the byte range gap is not this signature's /Contents")
	}
	content := rangeDigester{data: data, ranges: br}
	subFilter, _ := f.dict["SubFilter"].(pdfName)
	var r SignatureReport
	switch subFilter {
	case "ETSI.CAdES.detached", "adbe.pkcs7.detached":
		der, err := cmsInContents(contents)
		var sd *signedData
		if err == nil {
			sd, err = parseCMS(der)
		}
		if err == nil && sd.attached {
			err = errors.New("the CMS holds a content: a PDF signature must be detached")
		}
		if err == nil && len(sd.signers) != 1 {
			err = fmt.Errorf("%d SignerInfos, a PDF signature has one", len(sd.signers))
		}
		if err != nil {
			r = SignatureReport{Checks: []Check{}}
			r.check(checkFormat, CheckFailed, err.Error())
			r.fail(TotalFailed, FormatFailure, err.Error())
			break
		}
		family := "PAdES"
		if subFilter == "adbe.pkcs7.detached" {
			family = "PDF"
		}
		r = v.verifySigner(ctx, sd, sd.signers[0], content, opts, family, now)
		if r.Format == "PDF-B-B" || r.Format == "PDF-B-T" {
			r.Format = "PDF (adbe.pkcs7.detached)"
		}
		if r.SigningTime.IsZero() {
			if m, ok := f.dict["M"].(pdfString); ok {
				if t, ok := parsePDFDate(string(m)); ok {
					r.SigningTime = t
				}
			}
		}
		r.Detached = false
	case "ETSI.RFC3161":
		r = v.verifyDocumentTimestamp(contents, content)
	default:
		r = SignatureReport{Checks: []Check{}}
		detail := fmt.Sprintf("unsupported /SubFilter %q", string(subFilter))
		r.check(checkFormat, CheckFailed, detail)
		r.fail(TotalFailed, FormatFailure, detail)
	}
	r.Field, r.ByteRange = f.name, br
	r.Checks = append([]Check{{Name: checkByteRange, Status: CheckPassed, Detail: "[0 a b c] around the /Contents string"}}, r.Checks...)
	return r
}

// verifyDocumentTimestamp checks a document timestamp (ETSI EN 319 142-1
// section 5.4): an RFC 3161 token over the byte range.
func (v *Verifier) verifyDocumentTimestamp(contents []byte, content rangeDigester) SignatureReport {
	r := SignatureReport{Format: "PAdES document timestamp", Checks: []Check{}}
	token, err := cmsInContents(contents)
	var h crypto.Hash
	if err == nil {
		h, err = tsa.TokenHash(token)
	}
	if err != nil {
		r.check(checkFormat, CheckFailed, err.Error())
		r.fail(TotalFailed, FormatFailure, err.Error())
		return r
	}
	if v.TSARoots == nil {
		r.check(checkTimestamp, CheckFailed, "no trust anchors for timestamps")
		r.fail(Indeterminate, NoCertificateChainFound, "no trust anchors for timestamps")
		return r
	}
	digest, _ := content.digest(h)
	tok, err := tsa.Verify(token, digest, h, tsa.VerifyOptions{Roots: v.TSARoots})
	ts := &Timestamp{Valid: err == nil}
	if tok != nil {
		ts.Time, ts.Serial = tok.GenTime.UTC(), tok.Serial.Text(16)
		if tok.SignerCert != nil {
			ts.TSA = tok.SignerCert.Subject.String()
			r.Signer = certificateOf(tok.SignerCert)
		}
	}
	r.Timestamp = ts
	switch {
	case err == nil:
		r.Indication = TotalPassed
		r.check(checkTimestamp, CheckPassed, "the document existed at "+ts.Time.Format(time.RFC3339Nano))
	case errors.Is(err, tsa.ErrImprintMismatch):
		r.check(checkMessage, CheckFailed, err.Error())
		r.fail(TotalFailed, HashFailure, "the document was changed after its timestamp")
	case errors.Is(err, tsa.ErrChain):
		r.check(checkChain, CheckFailed, err.Error())
		r.fail(Indeterminate, NoCertificateChainFound, err.Error())
	case errors.Is(err, tsa.ErrBadSignature):
		r.check(checkSignature, CheckFailed, err.Error())
		r.fail(TotalFailed, SigCryptoFailure, err.Error())
	default:
		ts.Detail = err.Error()
		r.check(checkTimestamp, CheckFailed, err.Error())
		r.fail(TotalFailed, FormatFailure, err.Error())
	}
	return r
}

// cmsInContents returns the DER (or BER) element at the start of
// /Contents; what follows must be the zero padding.
func cmsInContents(c []byte) ([]byte, error) {
	s := cryptobyte.String(c)
	var elem cryptobyte.String
	var tag cbasn1.Tag
	var rest []byte
	if s.ReadAnyASN1Element(&elem, &tag) {
		rest = s
	} else {
		_, r, err := berElement(c, 0)
		if err != nil {
			return nil, malformed("/Contents is not a DER or BER element")
		}
		elem, rest = c[:len(c)-len(r)], r
	}
	for _, b := range rest {
		if b != 0 {
			return nil, malformed("/Contents has data after the signature")
		}
	}
	return elem, nil
}

// decodeHexGap decodes the hexadecimal digits of the /Contents gap.
func decodeHexGap(h []byte) ([]byte, bool) {
	out := make([]byte, 0, len(h)/2)
	var hi byte
	half := false
	for _, c := range h {
		if isSpace(c) {
			continue
		}
		v, ok := hexVal(c)
		if !ok {
			return nil, false
		}
		if half {
			out = append(out, hi<<4|v)
		} else {
			hi = v
		}
		half = !half
	}
	if half {
		out = append(out, hi<<4)
	}
	return out, true
}

// parsePDFDate reads D:YYYYMMDDHHmmSSOHH'mm' (section 7.9.4), the fields
// after the year optional.
func parsePDFDate(s string) (time.Time, bool) {
	if len(s) >= 2 && s[:2] == "D:" {
		s = s[2:]
	}
	digits := 0
	for digits < len(s) && digits < 14 && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits < 4 || digits%2 != 0 {
		return time.Time{}, false
	}
	full := s[:digits] + "0101000000"[max(0, digits-4):]
	if len(full) > 14 {
		full = full[:14]
	}
	t, err := time.Parse("20060102150405", full)
	if err != nil {
		return time.Time{}, false
	}
	rest := s[digits:]
	if len(rest) >= 3 && (rest[0] == '+' || rest[0] == '-') {
		hh, err1 := strconv.Atoi(rest[1:3])
		mm := 0
		var err2 error
		if len(rest) >= 6 && rest[3] == '\'' {
			mm, err2 = strconv.Atoi(rest[4:6])
		}
		if err1 != nil || err2 != nil {
			return time.Time{}, false
		}
		off := time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute
		if rest[0] == '+' {
			t = t.Add(-off)
		} else {
			t = t.Add(off)
		}
	}
	return t.UTC(), true
}
