package signing_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// B-T, and has our verifier and pdfsig (poppler, over an NSS database that
// trusts the test root) check them.
func TestPAdES(t *testing.T) {
	interop.Need(t, "pdfsig", "poppler-utils")
	p := newPKI(t)
	v := p.verifier()
	nss := interop.NSSDB(t, p.ca.Cert)
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
			out := pdfsig(t, nss, signed)
			for _, want := range []string{"Signature #1", "Signature Validation: Signature is Valid.", "Certificate Validation: Certificate is Trusted.", "Total document signed", "Signer Certificate Common Name: " + cert.Subject.CommonName, "ETSI.CAdES.detached"} {
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
			wantPdfsigTrusts(t, nss, twice.DER, []string{"Signature1", "Signature2"}, nil)
		})
	}
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
	nss := interop.NSSDB(t, p.ca.Cert)
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
			wantPdfsigTrusts(t, nss, sig.DER, []string{"Signature1"}, nil)
		})
	}
}

// TestPAdESMultipleSignatures signs one PDF several times — B-T after B-T
// with the same certificate (the case of issue 9), B-B, the two mixed,
// two signers, a signer under a root nobody trusts — and has our
// verifier, pdfsig over an NSS database that trusts the test root, and
// `openssl cms -verify` over each signature's byte range check every
// signature: valid, and trusted exactly when its root is.
//
// pdfsig checks each signature once as the first one it reads (see
// wantPdfsigTrusts), because of a use after free in poppler (22.12; later
// versions still import the same way): it imports the CMS certificates with
// CERT_NewTempCertificate(..., copyDER=PR_FALSE), so NSS's temporary
// certificate keeps pointing at the DER inside the decoded CMS, which
// poppler frees after the signature while a reference in NSS keeps the
// certificate. The next signature carrying the same certificate is
// compared with that freed memory: when the heap has put something else
// there — after a CMS with a timestamp token it usually has, between two
// B-B signatures it usually has not — NSS refuses the certificate with
// SEC_ERROR_REUSED_ISSUER_AND_SERIAL and pdfsig says "Unknown issue with
// Certificate or corrupted data." for a sound signature; the failure
// drops the stale certificate, so the one after passes again. Our files
// are not the cause: the same bytes pass or fail with the allocator's
// settings (GLIBC_TUNABLES=glibc.malloc.tcache_count=0 makes B-B fail
// too), and every signature passes once poppler's import copies the DER.
func TestPAdESMultipleSignatures(t *testing.T) {
	interop.Need(t, "pdfsig", "poppler-utils")
	interop.Need(t, "openssl", "openssl")
	p := newPKI(t)
	v := p.verifier()
	nss := interop.NSSDB(t, p.ca.Cert)

	key := hsmKey(t, hsm.ECP256)
	bt, cert := p.signer(t, key, time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	bb, err := signing.NewSigner(key, []*x509.Certificate{cert, p.ca.Cert}, signing.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rsaBT, _ := p.signer(t, hsmKey(t, hsm.RSA2048), time.Time{}, signing.SignerOptions{Timestamper: p.timestamper(), Hash: crypto.SHA384})
	stranger := newPKI(t) // a root that neither NSS nor our verifier trusts
	strangerBT, _ := stranger.signer(t, hsmKey(t, hsm.ECP384), time.Time{}, signing.SignerOptions{Timestamper: stranger.timestamper()})

	type step struct {
		s       *signing.Signer
		level   string
		trusted bool
		opts    signing.PDFOptions
	}
	T := step{bt, "B-T", true, signing.PDFOptions{}}
	B := step{bb, "B-B", true, signing.PDFOptions{}}
	visible := step{bt, "B-T", true, signing.PDFOptions{Visible: true, Rect: [4]float64{300, 40, 560, 110}, Reason: "Visa"}}
	for _, tc := range []struct {
		name  string
		pdf   []byte
		steps []step
	}{
		{"B-T twice, one certificate", samplePDF(1), []step{T, T}},
		{"B-T four times, one certificate", samplePDF(2), []step{T, T, T, T}},
		{"B-B three times, one certificate", samplePDF(1), []step{B, B, B}},
		{"B-T, B-B, B-T, one certificate", samplePDF(1), []step{T, B, T}},
		{"B-B, B-T, B-B, one certificate", samplePDF(1), []step{B, T, B}},
		{"B-T by two signers, alternating", samplePDF(1), []step{T, {rsaBT, "B-T", true, signing.PDFOptions{}}, T, {rsaBT, "B-T", true, signing.PDFOptions{}}}},
		{"B-T three times, compressed, visible", sampleCompressedPDF(), []step{visible, T, visible}},
		{"B-T, an untrusted signer, B-T", samplePDF(1), []step{T, {strangerBT, "B-T", false, signing.PDFOptions{}}, T}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pdf := tc.pdf
			var fields []string
			untrusted := map[string]bool{}
			for i, st := range tc.steps {
				sig, err := st.s.SignPDF(context.Background(), pdf, st.opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(sig.DER, pdf) {
					t.Fatalf("signature %d rewrote the file: not an incremental update", i+1)
				}
				pdf = sig.DER
				name := fmt.Sprintf("Signature%d", i+1)
				fields = append(fields, name)
				untrusted[name] = !st.trusted
			}

			r, err := v.Verify(context.Background(), pdf, signing.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Signatures) != len(tc.steps) {
				t.Fatalf("%d signatures, want %d", len(r.Signatures), len(tc.steps))
			}
			for i, sr := range r.Signatures {
				want, format := signing.TotalPassed, "PAdES-"+tc.steps[i].level
				if !tc.steps[i].trusted {
					want, format = signing.Indeterminate, sr.Format // its timestamp does not count either
				}
				if sr.Field != fields[i] || sr.Indication != want || sr.Format != format {
					t.Errorf("our verifier, signature %d: field %q, %s/%s (%s), format %q; want %q, %s, %s",
						i+1, sr.Field, sr.Indication, sr.SubIndication, sr.Detail, sr.Format, fields[i], want, format)
				}
			}
			wantPdfsigTrusts(t, nss, pdf, fields, untrusted)
			wantOpenSSLVerifiesEach(t, p.rootPEM, pdf, r, untrusted)
		})
	}
}

// pdfsigSignature is pdfsig's report of one signature.
type pdfsigSignature struct {
	Field       string // "Signature Field Name"
	Signature   string // "Signature Validation"
	Certificate string // "Certificate Validation"
	Total       bool   // "Total document signed"
}

// parsePdfsig reads pdfsig's report: one "Signature #N:" block per
// signature, with "  - Key: value" lines.
func parsePdfsig(out string) []pdfsigSignature {
	var sigs []pdfsigSignature
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Signature #") {
			sigs = append(sigs, pdfsigSignature{})
			continue
		}
		if len(sigs) == 0 {
			continue
		}
		s := &sigs[len(sigs)-1]
		item := strings.TrimPrefix(strings.TrimSpace(line), "- ")
		key, val, _ := strings.Cut(item, ": ")
		switch key {
		case "Signature Field Name":
			s.Field = val
		case "Signature Validation":
			s.Signature = val
		case "Certificate Validation":
			s.Certificate = val
		case "Total document signed":
			s.Total = true
		}
	}
	return sigs
}

// pdfsig runs poppler's pdfsig on a PDF with the NSS database nss (see
// interop.NSSDB) and returns its report. OCSP stays on, as by default:
// with -no-ocsp, poppler 22.12 reads NSS's error code after a successful
// verification and reports a stale SEC_ERROR_EXTENSION_NOT_FOUND as
// "Unknown issue with Certificate or corrupted data." for every signature.
// (The test certificates name no OCSP responder: nothing is fetched.)
func pdfsig(t testing.TB, nss string, pdf []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signed.pdf")
	writeFile(t, path, pdf)
	out, err := interop.Run("pdfsig", "-nssdir", "sql:"+nss, path)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

const (
	pdfsigValid   = "Signature is Valid."
	pdfsigTrusted = "Certificate is Trusted."
)

// wantPdfsigTrusts has pdfsig check a PDF whose signature fields are fields,
// in order: every signature is valid, the last covers the whole file, and
// every certificate is trusted but those of untrusted fields. pdfsig checks
// the whole file once, then each signature again as the first it reads,
// in a copy with one more incremental update that lists that field first
// in /Fields (the signed bytes unchanged): poppler's NSS state is only
// sound for the first signature of a run (see TestPAdESMultipleSignatures),
// so that is the one whose certificate verdict is asserted.
func wantPdfsigTrusts(t testing.TB, nss string, pdf []byte, fields []string, untrusted map[string]bool) {
	t.Helper()
	out := pdfsig(t, nss, pdf)
	got := parsePdfsig(out)
	if len(got) != len(fields) {
		t.Fatalf("pdfsig finds %d signatures, want %d:\n%s", len(got), len(fields), out)
	}
	for i, s := range got {
		if s.Field != fields[i] || s.Signature != pdfsigValid || s.Total != (i == len(got)-1) {
			t.Errorf("pdfsig, signature #%d: %+v; want field %q, %q, total document signed only for the last", i+1, s, fields[i], pdfsigValid)
		}
		if wantTrusted := !untrusted[s.Field]; i > 0 && (s.Certificate == pdfsigTrusted) != wantTrusted {
			t.Logf("pdfsig, signature #%d (%s), not the first of its run: %q (poppler's stale NSS certificate, checked on its own below)", i+1, s.Field, s.Certificate)
		}
	}
	for i, name := range fields {
		first, out := got, out
		if i > 0 {
			moved, err := signing.FieldFirst(pdf, name)
			if err != nil {
				t.Fatal(err)
			}
			out = pdfsig(t, nss, moved)
			first = parsePdfsig(out)
		}
		if len(first) != len(fields) || first[0].Field != name {
			t.Fatalf("pdfsig does not read %s first:\n%s", name, out)
		}
		s := first[0]
		if s.Signature != pdfsigValid {
			t.Errorf("pdfsig, %s: %q, want %q", name, s.Signature, pdfsigValid)
		}
		if untrusted[name] {
			if s.Certificate == pdfsigTrusted {
				t.Errorf("pdfsig trusts %s, whose root is not in the NSS database", name)
			}
		} else if s.Certificate != pdfsigTrusted {
			t.Errorf("pdfsig, %s: %q, want %q:\n%s", name, s.Certificate, pdfsigTrusted, out)
		}
	}
}

// wantOpenSSLVerifiesEach has `openssl cms -verify` check the CMS of every
// signature of r over the bytes its /ByteRange names, with the root
// rootPEM: verified and chained to the root, but for untrusted fields,
// which must fail.
func wantOpenSSLVerifiesEach(t testing.TB, rootPEM string, pdf []byte, r *signing.Report, untrusted map[string]bool) {
	t.Helper()
	dir := t.TempDir()
	for _, s := range r.Signatures {
		br := s.ByteRange
		if len(br) != 4 {
			t.Fatalf("%s: byte range %v", s.Field, br)
		}
		gap := pdf[br[1]+1 : br[2]-1]
		der := make([]byte, len(gap)/2)
		if _, err := hex.Decode(der, gap); err != nil {
			t.Fatalf("%s: /Contents: %v", s.Field, err)
		}
		der = der[:derLength(t, der)]
		sigFile, content := filepath.Join(dir, s.Field+".p7s"), filepath.Join(dir, s.Field+".signed")
		writeFile(t, sigFile, der)
		writeFile(t, content, slices.Concat(pdf[br[0]:br[0]+br[1]], pdf[br[2]:br[2]+br[3]]))
		args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile, "-content", content, "-CAfile", rootPEM, "-out", os.DevNull}
		if untrusted[s.Field] {
			if _, err := interop.Run("openssl", args...); err == nil {
				t.Errorf("openssl cms -verify accepts %s, whose root is another", s.Field)
			}
			continue
		}
		interop.OpenSSL(t, args...)
	}
}

// derLength is the length of the DER element at the start of b (the
// /Contents of a signature, followed by its zero padding).
func derLength(t testing.TB, b []byte) int {
	t.Helper()
	if len(b) < 2 || b[0] != 0x30 {
		t.Fatalf("/Contents does not start with a SEQUENCE")
	}
	if b[1] < 0x80 {
		return 2 + int(b[1])
	}
	n := int(b[1] & 0x7f)
	if n == 0 || n > 4 || len(b) < 2+n {
		t.Fatalf("/Contents: length of %d octets", n)
	}
	l := 0
	for _, c := range b[2 : 2+n] {
		l = l<<8 | int(c)
	}
	if 2+n+l > len(b) {
		t.Fatalf("/Contents: a DER element of %d bytes in %d", 2+n+l, len(b))
	}
	return 2 + n + l
}
