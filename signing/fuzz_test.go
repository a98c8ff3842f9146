package signing_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"pec/signing"
)

// The committed corpora are in testdata/fuzz/Fuzz*: signatures made by
// this package and by OpenSSL (DER, BER, PEM), signed and unsigned PDFs
// with classic and compressed cross-references. Seeds made now are added
// below.

// checkReport asserts what every report must hold, whatever the input.
func checkReport(t *testing.T, r *signing.Report) {
	t.Helper()
	switch r.Indication {
	case signing.TotalPassed, signing.TotalFailed, signing.Indeterminate:
	default:
		t.Fatalf("indication %q", r.Indication)
	}
	if r.Indication != signing.TotalPassed && r.SubIndication == "" {
		t.Fatalf("%s without a sub-indication", r.Indication)
	}
	for _, s := range r.Signatures {
		if s.Indication == "" {
			t.Fatal("a signature without an indication")
		}
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
}

// FuzzVerifyCMS: whatever the bytes, Verify reports (or says the data is
// missing) and never panics.
func FuzzVerifyCMS(f *testing.F) {
	p := newPKI(f)
	s, _ := p.signer(f, softKey(f), time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	data := []byte("fuzzed content")
	f.Add(mustSign(f, s, data, false))
	f.Add(mustSign(f, s, data, true))
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0, 0, 0, 0})
	v := p.verifier()
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, opts := range []signing.VerifyOptions{{}, {Data: data}} {
			r, err := v.Verify(context.Background(), in, opts)
			if err != nil {
				if !errors.Is(err, signing.ErrDataRequired) && !isRequestError(err) {
					t.Fatalf("unexpected error %v", err)
				}
				continue
			}
			checkReport(t, r)
		}
	})
}

// FuzzVerifyPDF: whatever the bytes after a PDF header, Verify reports and
// never panics.
func FuzzVerifyPDF(f *testing.F) {
	p := newPKI(f)
	s, _ := p.signer(f, softKey(f), time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	for _, pdf := range [][]byte{samplePDF(1), sampleCompressedPDF()} {
		f.Add(pdf)
		sig, err := s.SignPDF(context.Background(), pdf, signing.PDFOptions{Visible: true})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sig.DER)
	}
	v := p.verifier()
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := v.Verify(context.Background(), in, signing.VerifyOptions{})
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		checkReport(t, r)
	})
}

// FuzzSignPDF: whatever the PDF, SignPDF refuses it with a *RequestError
// or signs it so that the new signature, which covers the whole result,
// verifies.
func FuzzSignPDF(f *testing.F) {
	p := newPKI(f)
	s, _ := p.signer(f, softKey(f), time.Time{}, signing.SignerOptions{})
	f.Add(samplePDF(1))
	f.Add(samplePDF(2))
	f.Add(sampleCompressedPDF())
	v := p.verifier()
	f.Fuzz(func(t *testing.T, in []byte) {
		sig, err := s.SignPDF(context.Background(), in, signing.PDFOptions{Visible: len(in)%2 == 0})
		if err != nil {
			if !isRequestError(err) {
				t.Fatalf("error %T %v, want a *RequestError", err, err)
			}
			return
		}
		r, err := v.Verify(context.Background(), sig.DER, signing.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, r)
		for _, sr := range r.Signatures {
			if sr.CoversDocument != nil && *sr.CoversDocument {
				if sr.Indication != signing.TotalPassed {
					t.Fatalf("our new signature does not verify: %s/%s %s", sr.Indication, sr.SubIndication, sr.Detail)
				}
				return
			}
		}
		t.Fatalf("the new signature is not found or does not cover the document:\n%s", checksText(r))
	})
}

func isRequestError(err error) bool {
	_, ok := errors.AsType[*signing.RequestError](err)
	return ok
}
