package signing_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/internal/certtest"
	"pec/internal/cms"
	"pec/signing"
	"pec/tsa"
)

// sigPDF is a one-page PDF with one signature field whose signature
// dictionary the case writes: its /Type, /SubFilter and more entries, a
// /ByteRange and the DER in /Contents, which contents makes from the
// digest of the bytes the byte range names. Only what a case changes
// differs from a valid PAdES signature.
type sigPDF struct {
	typ       string // "": /Sig
	subFilter string // "": /ETSI.CAdES.detached; "-": none
	// byteRange is the /ByteRange array from the offsets of the /Contents
	// string ('<' at a, just after '>' at b) and the file size n; nil:
	// [0 a b n-b]. raw, when set, is written instead, and the standard
	// ranges are hashed.
	byteRange func(a, b, n int) []int
	raw       string
	contents  func(digest []byte) []byte
	hash      crypto.Hash  // of the range; 0: SHA-256
	decoy     bool         // a /Decoy hexadecimal string after /Contents, which the standard byte range skips instead
	after     []byte       // appended to the file once signed
	tamper    func([]byte) // changes the file once signed
}

const sigReserve = 12 << 10

func (p sigPDF) build(t testing.TB) []byte {
	t.Helper()
	typ, sub := p.typ, p.subFilter
	if typ == "" {
		typ = "/Sig"
	}
	switch sub {
	case "":
		sub = "/SubFilter /ETSI.CAdES.detached"
	case "-":
		sub = ""
	default:
		sub = "/SubFilter " + sub
	}
	decoy := ""
	if p.decoy {
		decoy = " /Decoy <" + strings.Repeat("0", 32) + ">"
	}
	const placeholder = "[0 0000000000 0000000000 0000000000 0000000000]"
	w := newPDFWriter("1.7")
	w.obj(1, "<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] /SigFlags 3 >> >>")
	w.obj(2, "<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	w.obj(3, "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [4 0 R] >>")
	w.obj(4, "<< /Type /Annot /Subtype /Widget /FT /Sig /T (Sig1) /V 5 0 R /P 3 0 R /Rect [0 0 0 0] >>")
	w.obj(5, "<< /Type "+typ+" /Filter /Adobe.PPKLite "+sub+" /ByteRange "+placeholder+" /Contents <"+strings.Repeat("0", 2*sigReserve)+">"+decoy+" /M (D:20260101120000Z) >>")
	pdf := bytes.Clone(w.xrefTable(6, "/Root 1 0 R"))
	a := bytes.Index(pdf, []byte("/Contents <")) + len("/Contents ")
	b := a + 2*sigReserve + 2
	if p.decoy {
		a = bytes.Index(pdf, []byte("/Decoy <")) + len("/Decoy ")
		b = a + 34
	}
	n := len(pdf)
	std := []int{0, a, b, n - b}
	br := std
	if p.byteRange != nil {
		br = p.byteRange(a, b, n)
	}
	text := p.raw
	if text == "" {
		text = fmt.Sprint(br)
	}
	if len(text) > len(placeholder) {
		t.Fatalf("byte range %s too long", text)
	}
	at := bytes.Index(pdf, []byte(placeholder))
	copy(pdf[at:], text+strings.Repeat(" ", len(placeholder)-len(text)))
	ranges := br
	if p.raw != "" || len(ranges)%2 != 0 {
		ranges = std
	}
	hash := p.hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	h := hash.New()
	for i := 0; i+1 < len(ranges); i += 2 {
		from, size := ranges[i], ranges[i+1]
		if from < 0 || size < 0 || from+size > n {
			from, size = 0, 0
		}
		h.Write(pdf[from : from+size])
	}
	var der []byte
	if p.contents != nil {
		der = p.contents(h.Sum(nil))
	}
	if len(der) > sigReserve {
		t.Fatalf("the signature (%d bytes) does not fit", len(der))
	}
	if !p.decoy {
		hex.Encode(pdf[a+1:], der)
	}
	if p.tamper != nil {
		p.tamper(pdf)
	}
	return append(pdf, p.after...)
}

// TestPAdESRules: PDF signatures and document timestamps (ISO 32000-1
// section 12.8, ETSI EN 319 142-1), each breaking one rule of the
// verifier, named after it: the byte range (the whole file but the
// /Contents string, around one gap), the /SubFilter, the CMS in /Contents
// (detached, one signer, nothing after it), the digest over the range,
// the signing-certificate-v2 attribute, the signature timestamp over the
// signature value, the document timestamp's imprint and trust. Each file
// is signed over exactly the bytes its /ByteRange names, so that only the
// rule under test can refuse it.
func TestPAdESRules(t *testing.T) {
	p := newPKI(t)
	ctx := context.Background()
	key := softKey(t)
	s, cert := p.signer(t, key, time.Time{}, signing.SignerOptions{})
	sT, _ := p.signer(t, key, time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	sign := func(s *signing.Signer) func([]byte) []byte {
		return func(d []byte) []byte {
			sig, err := s.SignDigest(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			return sig.DER
		}
	}
	stamp := func(d []byte) []byte {
		res, err := p.timestamper().Request(ctx, crypto.SHA256, d, tsa.RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Token.Raw
	}
	// Another certificate with the signer's issuer and serial: only the
	// signing-certificate-v2 attribute tells it from the signer's.
	impostor, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: cert.SerialNumber, Subject: cert.Subject, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, p.ca.Cert, key.Public(), p.ca.Signer)
	if err != nil {
		t.Fatal(err)
	}
	// A signature timestamp of another signature value.
	otherToken := func() []byte {
		sd, err := cms.ParseSignedData(sign(sT)(digest(crypto.SHA256, []byte("another document"))))
		if err != nil {
			t.Fatal(err)
		}
		return sd.SignerInfos[0].UnsignedAttrs[0].Values[0]
	}()
	otherTSA := newPKI(t)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherTSA.ca.Cert)

	type check func(t *testing.T, sr signing.SignatureReport)
	for _, tc := range []struct {
		name   string
		pdf    sigPDF
		v      *signing.Verifier // nil: p.verifier()
		ind    signing.Indication
		sub    signing.SubIndication
		detail string // in the signature's detail
		check  check
	}{
		// Valid.
		{name: "valid/ETSI.CAdES.detached", pdf: sigPDF{contents: sign(s)}, ind: signing.TotalPassed, check: func(t *testing.T, sr signing.SignatureReport) {
			if sr.Format != "PAdES-B-B" || sr.CoversDocument == nil || !*sr.CoversDocument {
				t.Errorf("format %q, covers %v", sr.Format, sr.CoversDocument)
			}
		}},
		{name: "valid/adbe.pkcs7.detached", pdf: sigPDF{subFilter: "/adbe.pkcs7.detached", contents: sign(s)}, ind: signing.TotalPassed},
		{name: "valid/B-T", pdf: sigPDF{contents: sign(sT)}, ind: signing.TotalPassed, check: func(t *testing.T, sr signing.SignatureReport) {
			if sr.Format != "PAdES-B-T" || sr.Timestamp == nil || !sr.Timestamp.Valid {
				t.Errorf("format %q, timestamp %+v", sr.Format, sr.Timestamp)
			}
		}},
		{name: "valid/document timestamp", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: stamp}, ind: signing.TotalPassed, check: func(t *testing.T, sr signing.SignatureReport) {
			if sr.Format != "PAdES document timestamp" || sr.Timestamp == nil || !sr.Timestamp.Valid {
				t.Errorf("format %q, timestamp %+v", sr.Format, sr.Timestamp)
			}
		}},

		// The byte range: [0 a b c] around the /Contents string, to the end.
		{name: "byte range/not integers", pdf: sigPDF{raw: "[0 1 2 /Three]", contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "something else than integers"},
		{name: "byte range/three numbers", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/six numbers", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b, 1, b + 1, n - b - 1} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/not from the start", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{1, a - 1, b, n - b} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/a negative length", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, -1, b, n - b} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/a negative last length", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b, -1} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/a gap of one byte", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, a + 1, n - a - 1} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/beyond the file", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b, n - b + 1} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/second range past the end", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, n + 1, 0} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not [0 a b c]"},
		{name: "byte range/gap starting before the /Contents string", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a - 1, b, n - b} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not the /Contents hexadecimal string"},
		{name: "byte range/gap ending inside the /Contents string", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b - 1, n - b + 1} }, contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not the /Contents hexadecimal string"},
		{name: "byte range/gap another hexadecimal string than /Contents", pdf: sigPDF{decoy: true}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "is not this signature's /Contents"},
		{name: "byte range/the end of the file left out", pdf: sigPDF{byteRange: func(a, b, n int) []int { return []int{0, a, b, n - b - 10} }, contents: sign(s)}, ind: signing.Indeterminate, sub: signing.SigConstraintsFailure, detail: "10 bytes are not covered"},
		{name: "byte range/bytes appended after signing", pdf: sigPDF{contents: sign(s), after: []byte("% more\n")}, ind: signing.Indeterminate, sub: signing.SigConstraintsFailure, detail: "7 bytes are not covered"},

		// The /SubFilter.
		{name: "subfilter/adbe.x509.rsa_sha1", pdf: sigPDF{subFilter: "/adbe.x509.rsa_sha1", contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "unsupported /SubFilter"},
		{name: "subfilter/none", pdf: sigPDF{subFilter: "-", contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "unsupported /SubFilter"},
		{name: "subfilter/ETSI.RFC3161 on a CMS signature", pdf: sigPDF{subFilter: "/ETSI.RFC3161", contents: sign(s)}, ind: signing.TotalFailed, sub: signing.FormatFailure},
		{name: "subfilter/ETSI.CAdES.detached on a time-stamp token", pdf: sigPDF{contents: stamp}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "must be detached"},

		// The CMS in /Contents.
		{name: "contents/not DER", pdf: sigPDF{contents: func([]byte) []byte { return []byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff} }}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "not a DER or BER element"},
		{name: "contents/data after the CMS", pdf: sigPDF{contents: func(d []byte) []byte { return append(sign(s)(d), 1) }}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "data after the signature"},
		{name: "valid/zeros after the CMS", pdf: sigPDF{contents: func(d []byte) []byte { return append(sign(s)(d), 0, 0, 0) }}, ind: signing.TotalPassed},
		{name: "contents/an attached CMS", pdf: sigPDF{contents: func(d []byte) []byte { return mustSign(t, s, []byte("the document"), false) }}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "must be detached"},
		{name: "contents/two SignerInfos", pdf: sigPDF{contents: func(d []byte) []byte { return twoSigners(t, sign(s)(d)) }}, ind: signing.TotalFailed, sub: signing.FormatFailure, detail: "2 SignerInfos"},

		// The signature over the range.
		{name: "digest/of other bytes", pdf: sigPDF{contents: func([]byte) []byte { return sign(s)(digest(crypto.SHA256, []byte("other"))) }}, ind: signing.TotalFailed, sub: signing.HashFailure},
		{name: "digest/a signed byte changed", pdf: sigPDF{contents: sign(s), tamper: func(pdf []byte) { pdf[bytes.Index(pdf, []byte("D:2026"))+2] = '3' }}, ind: signing.TotalFailed, sub: signing.HashFailure},
		{name: "signature/value altered", pdf: sigPDF{contents: func(d []byte) []byte {
			der := sign(s)(d)
			der[len(der)-1] ^= 1
			return der
		}}, ind: signing.TotalFailed, sub: signing.SigCryptoFailure},
		{name: "signing-certificate-v2/of another certificate", pdf: sigPDF{contents: func(d []byte) []byte { return swapDER(t, sign(s)(d), cert.Raw, impostor) }}, ind: signing.Indeterminate, sub: signing.NoSigningCertificateFound},
		{name: "signature timestamp/of another signature value", pdf: sigPDF{contents: func(d []byte) []byte {
			der := sign(sT)(d)
			sd, err := cms.ParseSignedData(der)
			if err != nil {
				t.Fatal(err)
			}
			return swapDER(t, der, sd.SignerInfos[0].UnsignedAttrs[0].Values[0], otherToken)
		}}, ind: signing.TotalPassed, check: func(t *testing.T, sr signing.SignatureReport) {
			if sr.Format != "PAdES-B-B" || sr.Timestamp == nil || sr.Timestamp.Valid {
				t.Errorf("format %q, timestamp %+v: want B-B, the timestamp not valid", sr.Format, sr.Timestamp)
			}
		}},

		// Document timestamps.
		{name: "valid/document timestamp with a SHA-512 imprint", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", hash: crypto.SHA512, contents: func(d []byte) []byte {
			res, err := p.timestamper().Request(ctx, crypto.SHA512, d, tsa.RequestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return res.Token.Raw
		}}, ind: signing.TotalPassed},
		{name: "document timestamp/of other bytes", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: func([]byte) []byte { return stamp(digest(crypto.SHA256, []byte("other"))) }}, ind: signing.TotalFailed, sub: signing.HashFailure},
		{name: "document timestamp/by an untrusted TSA", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: stamp}, v: &signing.Verifier{Chain: signing.X509Validator{Roots: p.roots}, TSARoots: otherRoots}, ind: signing.Indeterminate, sub: signing.NoCertificateChainFound},
		{name: "document timestamp/no trust anchors for timestamps", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: stamp}, v: &signing.Verifier{Chain: signing.X509Validator{Roots: p.roots}}, ind: signing.Indeterminate, sub: signing.NoCertificateChainFound, detail: "no trust anchors for timestamps"},
		{name: "document timestamp/its signature altered", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: func(d []byte) []byte {
			tok := stamp(d)
			tok[len(tok)-3] ^= 1
			return tok
		}}, ind: signing.TotalFailed, sub: signing.SigCryptoFailure},
		{name: "document timestamp/not a token", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", contents: func([]byte) []byte { return []byte{0x30, 0x03, 0x02, 0x01, 0x01} }}, ind: signing.TotalFailed, sub: signing.FormatFailure},
		{name: "document timestamp/the end of the file left out", pdf: sigPDF{typ: "/DocTimeStamp", subFilter: "/ETSI.RFC3161", byteRange: func(a, b, n int) []int { return []int{0, a, b, n - b - 10} }, contents: stamp}, ind: signing.Indeterminate, sub: signing.SigConstraintsFailure, detail: "10 bytes are not covered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pdf := tc.pdf.build(t)
			v := tc.v
			if v == nil {
				v = p.verifier()
			}
			r, err := v.Verify(ctx, pdf, signing.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Indication != tc.ind || r.SubIndication != tc.sub {
				t.Fatalf("%s/%s (%s), want %s/%s\n%s", r.Indication, r.SubIndication, r.Detail, tc.ind, tc.sub, checksText(r))
			}
			if len(r.Signatures) != 1 {
				t.Fatalf("%d signatures", len(r.Signatures))
			}
			if !strings.Contains(r.Detail, tc.detail) && !strings.Contains(checksText(r), tc.detail) {
				t.Errorf("the report does not say %q:\n%s", tc.detail, checksText(r))
			}
			if tc.check != nil {
				tc.check(t, r.Signatures[0])
			}
		})
	}
}

// twoSigners is a SignedData with its one SignerInfo twice.
func twoSigners(t testing.TB, der []byte) []byte {
	t.Helper()
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(sd.SignerInfos) != 1 {
		t.Fatalf("%d SignerInfos", len(sd.SignerInfos))
	}
	// ContentInfo { contentType, [0] { SignedData { ..., signerInfos SET } } }
	in := cryptobyte.String(der)
	var ci, explicit, signed cryptobyte.String
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.SkipASN1(cbasn1.OBJECT_IDENTIFIER) ||
		!ci.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) || !explicit.ReadASN1(&signed, cbasn1.SEQUENCE) {
		t.Fatal("not a SignedData")
	}
	var set cryptobyte.String
	for !signed.Empty() {
		var tag cbasn1.Tag
		if !signed.ReadAnyASN1Element(&set, &tag) {
			t.Fatal("not a SignedData")
		}
	}
	content := set[2:] // a short SignerInfos: one-byte length
	if set[1]&0x80 != 0 {
		content = set[2+int(set[1]&0x7f):]
	}
	return certtest.SwapLast(t, der, set, cms.AppendTLV(nil, 0x31, content, content))
}
