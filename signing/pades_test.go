package signing_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pec/hsm"
	"pec/internal/interop"
	"pec/signing"
	"pec/tsa"
)

// TestPAdES signs PDFs (a classic cross-reference table, a compressed one
// with object streams, one signed twice), visible and invisible, B-B and
// B-T, and has our verifier and pdfsig (poppler, over NSS) check them.
func TestPAdES(t *testing.T) {
	interop.Need(t, "pdfsig", "poppler-utils")
	p := newPKI(t)
	v := p.verifier()
	for _, tc := range []struct {
		name string
		kt   hsm.KeyType
		pss  bool
		h    crypto.Hash
		ts   bool
		pdf  []byte
		opts signing.PDFOptions
	}{
		{"P-256/B-B/invisible", hsm.ECP256, false, crypto.SHA256, false, samplePDF(1), signing.PDFOptions{}},
		{"P-256/B-T/visible", hsm.ECP256, false, crypto.SHA256, true, samplePDF(1), signing.PDFOptions{Visible: true, Reason: "Délivrance de l'extrait", Location: "Nantes"}},
		{"RSA-2048/B-T/visible last page", hsm.RSA2048, false, crypto.SHA384, true, samplePDF(3), signing.PDFOptions{Visible: true, Page: -1, Rect: [4]float64{300, 40, 560, 110}}},
		{"RSA-PSS/B-B/compressed", hsm.RSA2048, true, crypto.SHA256, false, sampleCompressedPDF(), signing.PDFOptions{Visible: true}},
		{"P-384/B-T/compressed", hsm.ECP384, false, crypto.SHA512, true, sampleCompressedPDF(), signing.PDFOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := signing.SignerOptions{Hash: tc.h, PSS: tc.pss}
			level := "B-B"
			if tc.ts {
				opts.Timestamper, level = p.timestamper(), "B-T"
			}
			s, cert := p.signer(t, hsmKey(t, tc.kt), time.Time{}, opts)
			sig, err := s.SignPDF(context.Background(), tc.pdf, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			signed := sig.DER
			if !bytes.HasPrefix(signed, tc.pdf) {
				t.Fatal("the original bytes were not kept: not an incremental update")
			}
			r, err := v.Verify(context.Background(), signed, signing.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantPassed(t, r)
			sr := r.Signatures[0]
			if sr.Format != "PAdES-"+level || sr.CoversDocument == nil || !*sr.CoversDocument || sr.Field != "Signature1" {
				t.Errorf("format %q, covers %v, field %q", sr.Format, sr.CoversDocument, sr.Field)
			}
			if !sr.SigningTime.Equal(sig.SigningTime) {
				t.Errorf("signing time %v (from /M), want %v", sr.SigningTime, sig.SigningTime)
			}
			out := pdfsig(t, signed)
			for _, want := range []string{"Signature #1", "Signature Validation: Signature is Valid.", "Total document signed", "Signer Certificate Common Name: " + cert.Subject.CommonName, "ETSI.CAdES.detached"} {
				if !strings.Contains(out, want) {
					t.Errorf("pdfsig lacks %q:\n%s", want, out)
				}
			}

			// A second signature on the signed PDF: both stay valid.
			twice, err := s.SignPDF(context.Background(), signed, signing.PDFOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r, err = v.Verify(context.Background(), twice.DER, signing.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantPassed(t, r)
			if len(r.Signatures) != 2 || r.Signatures[1].Field != "Signature2" || *r.Signatures[1].CoversDocument != true || r.Signatures[0].CoversDocument != nil {
				t.Errorf("second signature: %+v", r.Signatures)
			}
			out = pdfsig(t, twice.DER)
			if strings.Count(out, "Signature Validation: Signature is Valid.") != 2 {
				t.Errorf("pdfsig does not find two valid signatures:\n%s", out)
			}
		})
	}
}

// pdfsig runs poppler's pdfsig on a PDF and returns its report.
func pdfsig(t testing.TB, pdf []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signed.pdf")
	writeFile(t, path, pdf)
	out, err := interop.Run("pdfsig", path)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestPAdESRefusesBadPDFs: what cannot be signed is a *RequestError, never
// a crash.
func TestPAdESRefusesBadPDFs(t *testing.T) {
	p := newPKI(t)
	s, _ := p.signer(t, hsmKey(t, hsm.ECP256), time.Time{}, signing.SignerOptions{})
	good := samplePDF(1)
	encrypted := bytes.Replace(good, []byte("/Root 1 0 R"), []byte("/Encrypt 4 0 R /Root 1 0 R"), 1)
	for _, tc := range []struct {
		name string
		pdf  []byte
		opts signing.PDFOptions
		want string
	}{
		{"garbage", []byte("not a PDF at all"), signing.PDFOptions{}, "not a readable PDF"},
		{"truncated", good[:len(good)/2], signing.PDFOptions{}, "not a readable PDF"},
		{"bad startxref", bytes.Replace(good, []byte("startxref\n"), []byte("startxref\n9"), 1), signing.PDFOptions{}, "not a readable PDF"},
		{"encrypted", encrypted, signing.PDFOptions{}, "encrypted"},
		{"no such page", good, signing.PDFOptions{Visible: true, Page: 7}, "has 1 pages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.SignPDF(context.Background(), tc.pdf, tc.opts)
			re, ok := err.(*signing.RequestError)
			if !ok || !strings.Contains(re.Reason, tc.want) {
				t.Fatalf("error %T %v, want a *RequestError with %q", err, err, tc.want)
			}
		})
	}
}

// TestDocumentTimestamp: a PDF document timestamp (ETSI.RFC3161 subfilter,
// ETSI EN 319 142-1 section 5.4) verifies, and fails once the file changes.
func TestDocumentTimestamp(t *testing.T) {
	p := newPKI(t)
	w := newPDFWriter("1.7")
	w.obj(1, "<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] /SigFlags 3 >> >>")
	w.obj(2, "<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	w.obj(3, "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [4 0 R] >>")
	w.obj(4, "<< /Type /Annot /Subtype /Widget /FT /Sig /T (DocTS) /V 5 0 R /P 3 0 R /Rect [0 0 0 0] >>")
	const reserve = 8192
	w.obj(5, "<< /Type /DocTimeStamp /Filter /Adobe.PPKLite /SubFilter /ETSI.RFC3161 /ByteRange [0 0000000000 0000000000 0000000000] /Contents <"+strings.Repeat("0", 2*reserve)+"> >>")
	pdf := w.xrefTable(6, "/Root 1 0 R")
	contentsAt := bytes.Index(pdf, []byte("/Contents <")) + len("/Contents ")
	gapEnd := contentsAt + 2*reserve + 2
	br := fmt.Sprintf("[0 %d %d %d]", contentsAt, gapEnd, len(pdf)-gapEnd)
	brAt := bytes.Index(pdf, []byte("[0 0000000000"))
	copy(pdf[brAt:], br+strings.Repeat(" ", len("[0 0000000000 0000000000 0000000000]")-len(br)))
	h := crypto.SHA256.New()
	h.Write(pdf[:contentsAt])
	h.Write(pdf[gapEnd:])
	res, err := p.timestamper().Request(context.Background(), crypto.SHA256, h.Sum(nil), tsa.RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hex.Encode(pdf[contentsAt+1:], res.Token.Raw)

	r, err := p.verifier().Verify(context.Background(), pdf, signing.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, r)
	if s := r.Signatures[0]; s.Format != "PAdES document timestamp" || s.Timestamp == nil || !s.Timestamp.Time.Equal(res.Token.GenTime) || s.Field != "DocTS" {
		t.Errorf("%+v", s)
	}
	modified := bytes.Replace(pdf, []byte("/MediaBox [0 0 595 842]"), []byte("/MediaBox [0 0 842 595]"), 1)
	r, err = p.verifier().Verify(context.Background(), modified, signing.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, r, signing.TotalFailed, signing.HashFailure)
}

// TestPAdESOtherProducers signs PDFs written by other programs — cairo
// (pdftocairo: indirect stream lengths, embedded fonts) and pdfunite — and
// has pdfsig check them.
func TestPAdESOtherProducers(t *testing.T) {
	interop.Need(t, "pdfsig", "poppler-utils")
	p := newPKI(t)
	s, _ := p.signer(t, hsmKey(t, hsm.ECP256), time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.pdf")
	writeFile(t, src, samplePDF(2))
	for _, tc := range []struct {
		name string
		tool string
		args []string
	}{
		{"pdftocairo", "pdftocairo", []string{"-pdf", src}},
		{"pdfunite", "pdfunite", []string{src, src}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".pdf")
			if _, err := interop.Run(tc.tool, append(tc.args, out)...); err != nil {
				t.Fatal(err)
			}
			pdf, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := s.SignPDF(context.Background(), pdf, signing.PDFOptions{Visible: true, Page: -1})
			if err != nil {
				t.Fatal(err)
			}
			r, err := p.verifier().Verify(context.Background(), sig.DER, signing.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantPassed(t, r)
			if out := pdfsig(t, sig.DER); !strings.Contains(out, "Signature is Valid.") || !strings.Contains(out, "Total document signed") {
				t.Errorf("pdfsig:\n%s", out)
			}
		})
	}
}
