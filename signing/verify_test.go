package signing_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/certvalidation"
	"pec/hsm"
	"pec/internal/certtest"
	"pec/signing"
)

// TestVerifyFailures: each way a signature can be wrong gives its
// indication and sub-indication (ETSI EN 319 102-1), never a crash.
func TestVerifyFailures(t *testing.T) {
	p := newPKI(t)
	v := p.verifier()
	ctx := context.Background()
	key := hsmKey(t, hsm.ECP256)
	s, cert := p.signer(t, key, time.Time{}, signing.SignerOptions{})
	sT, _ := p.signer(t, key, time.Time{}, signing.SignerOptions{Timestamper: p.timestamper()})
	doc := []byte("the original decision")
	attached := mustSign(t, s, doc, false)
	detached := mustSign(t, s, doc, true)

	// Another certificate with the same issuer and serial: the ESS
	// signing-certificate attribute tells it from the signer's.
	impostorKey := softKey(t)
	impostorDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: cert.SerialNumber, Subject: cert.Subject, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, p.ca.Cert, impostorKey.Public(), p.ca.Signer)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := p.ca.IssueDocumentSigner(softKey(t).Public(), "someone else", "PEC", time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// A certificate that expired a day ago, with signatures made while it
	// was valid (B-B), or stamped after it expired (B-T).
	now := time.Now()
	oldCert, err := p.ca.IssueDocumentSigner(key.Public(), "expired signer", "PEC", now.Add(-2*365*24*time.Hour-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	clock := now.Add(-365 * 24 * time.Hour)
	oldSigner, err := signing.NewSigner(key, []*x509.Certificate{oldCert}, signing.SignerOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	expiredBB := mustSign(t, oldSigner, doc, false)
	oldStamped, err := signing.NewSigner(key, []*x509.Certificate{oldCert}, signing.SignerOptions{Now: func() time.Time { return clock }, Timestamper: p.timestamper()})
	if err != nil {
		t.Fatal(err)
	}
	expiredBT := mustSign(t, oldStamped, doc, false)

	pdf, err := s.SignPDF(ctx, samplePDF(1), signing.PDFOptions{Visible: true})
	if err != nil {
		t.Fatal(err)
	}
	modifiedPDF := bytes.Replace(pdf.DER, []byte("(Bulletin"), []byte("(Bulletan"), 1)
	appendedPDF := append(bytes.Clone(pdf.DER), "\n% appended after signing\n"...)

	lastFlipped := bytes.Clone(attached)
	lastFlipped[len(lastFlipped)-1] ^= 1

	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherCert)

	for _, tc := range []struct {
		name   string
		signed []byte
		opts   signing.VerifyOptions
		v      *signing.Verifier
		ind    signing.Indication
		sub    signing.SubIndication
	}{
		{"modified attached content", bytes.Replace(attached, doc, []byte("the modified decision"), 1), signing.VerifyOptions{}, v, signing.TotalFailed, signing.HashFailure},
		{"detached over other data", detached, signing.VerifyOptions{Data: []byte("other")}, v, signing.TotalFailed, signing.HashFailure},
		{"attached with other data given", attached, signing.VerifyOptions{Data: []byte("other")}, v, signing.TotalFailed, signing.HashFailure},
		// RFC 5758 section 3.2: ecdsa-with-SHA256 has no parameters, in
		// signing as in tsa (the one policy of internal/cms).
		{"ECDSA algorithm with NULL parameters", certtest.SwapLast(t, attached, ecdsaWithSHA256, ecdsaWithSHA256Null), signing.VerifyOptions{}, v, signing.Indeterminate, signing.CryptoConstraintsFailure},
		{"ECDSA algorithm with a curve as parameters", certtest.SwapLast(t, attached, ecdsaWithSHA256, ecdsaWithSHA256Curve), signing.VerifyOptions{}, v, signing.Indeterminate, signing.CryptoConstraintsFailure},
		{"signature value altered", lastFlipped, signing.VerifyOptions{}, v, signing.TotalFailed, signing.SigCryptoFailure},
		{"certificate swapped for another", swapDER(t, attached, cert.Raw, otherCert.Raw), signing.VerifyOptions{}, v, signing.Indeterminate, signing.NoSigningCertificateFound},
		{"certificate swapped, same serial", swapDER(t, attached, cert.Raw, impostorDER), signing.VerifyOptions{}, v, signing.Indeterminate, signing.NoSigningCertificateFound},
		{"untrusted root", attached, signing.VerifyOptions{}, &signing.Verifier{Chain: signing.X509Validator{Roots: otherRoots}}, signing.Indeterminate, signing.NoCertificateChainFound},
		{"no trust anchors", attached, signing.VerifyOptions{}, &signing.Verifier{Chain: signing.X509Validator{}}, signing.Indeterminate, signing.NoCertificateChainFound},
		{"certificate expired since, no POE", expiredBB, signing.VerifyOptions{}, v, signing.Indeterminate, signing.OutOfBoundsNoPOE},
		{"certificate expired at signing time", expiredBT, signing.VerifyOptions{}, v, signing.Indeterminate, signing.OutOfBoundsNoPOE},
		{"truncated CMS", attached[:len(attached)/2], signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"garbage", []byte("garbage garbage garbage"), signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"empty", nil, signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"a certificate, not a signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"modified PDF", modifiedPDF, signing.VerifyOptions{}, v, signing.TotalFailed, signing.HashFailure},
		{"PDF changed after signing", appendedPDF, signing.VerifyOptions{}, v, signing.Indeterminate, signing.SigConstraintsFailure},
		{"truncated PDF", pdf.DER[:len(pdf.DER)-200], signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"unsigned PDF", samplePDF(2), signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
		{"PDF garbage", []byte("%PDF-1.7\n garbage"), signing.VerifyOptions{}, v, signing.TotalFailed, signing.FormatFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.v.Verify(ctx, tc.signed, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, r, tc.ind, tc.sub)
			if _, err := json.Marshal(r); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Proof of existence: the certificate expired after a timestamped
	// signature; validated three years later, it passes at the
	// timestamp's time.
	t.Run("expired since, timestamp before", func(t *testing.T) {
		sig := mustSign(t, sT, doc, false)
		later := &signing.Verifier{Chain: signing.X509Validator{Roots: p.roots}, TSARoots: p.roots, Now: func() time.Time { return now.Add(3 * 365 * 24 * time.Hour) }}
		r, err := later.Verify(ctx, sig, signing.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantPassed(t, r)
		// Without the timestamp, the same validation has no proof.
		r, err = later.Verify(ctx, attached, signing.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, r, signing.Indeterminate, signing.OutOfBoundsNoPOE)
	})

	// Revocation, through a ChainValidator that says so (certvalidation
	// will): revoked before the proven time fails, after it passes.
	t.Run("revoked", func(t *testing.T) {
		stamped := mustSign(t, sT, doc, false)
		for _, tc := range []struct {
			name      string
			sig       []byte
			revokedAt time.Time
			ind       signing.Indication
			sub       signing.SubIndication
		}{
			{"before signing", attached, now.Add(-time.Hour), signing.TotalFailed, signing.Revoked},
			{"after the timestamp", stamped, now.Add(time.Hour), signing.TotalPassed, ""},
			{"no proof of existence", attached, now.Add(time.Hour), signing.Indeterminate, signing.RevokedNoPOE},
			{"before the timestamp", stamped, now.Add(-time.Hour), signing.TotalFailed, signing.Revoked},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rv := &signing.Verifier{Chain: revokedValidator{tc.revokedAt}, TSARoots: p.roots}
				r, err := rv.Verify(ctx, tc.sig, signing.VerifyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				wantResult(t, r, tc.ind, tc.sub)
				// The report carries the revocation evidence it rests on.
				if cv := r.Signatures[0].ChainValidation; cv == nil || len(cv.RevocationData) != 1 {
					t.Errorf("chain validation in the report: %+v", cv)
				}
			})
		}
	})

	t.Run("validator unavailable", func(t *testing.T) {
		rv := &signing.Verifier{Chain: failingValidator{}}
		r, err := rv.Verify(ctx, attached, signing.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, r, signing.Indeterminate, signing.TryLater)
	})

	t.Run("PDF with separate data", func(t *testing.T) {
		_, err := v.Verify(ctx, pdf.DER, signing.VerifyOptions{Data: []byte("x")})
		if _, ok := errors.AsType[*signing.RequestError](err); !ok {
			t.Errorf("error %v, want a *RequestError", err)
		}
	})
}

// The signatureAlgorithm of a P-256 signer, and the same with parameters
// that RFC 5758 forbids.
var (
	ecdsaWithSHA256      = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	ecdsaWithSHA256Null  = []byte{0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00}
	ecdsaWithSHA256Curve = []byte{0x30, 0x14, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
)

type revokedValidator struct{ at time.Time }

func (r revokedValidator) ValidateChain(context.Context, *x509.Certificate, []*x509.Certificate, time.Time) (signing.ChainResult, error) {
	return signing.ChainResult{Status: signing.ChainRevoked, RevokedAt: r.at, Detail: "revoked (keyCompromise)",
		Validation: &certvalidation.Report{RevocationData: []certvalidation.Evidence{{Type: "crl", Status: "revoked", SHA256: "00"}}}}, nil
}

type failingValidator struct{}

func (failingValidator) ValidateChain(context.Context, *x509.Certificate, []*x509.Certificate, time.Time) (signing.ChainResult, error) {
	return signing.ChainResult{}, errors.New("OCSP responder unreachable")
}

func mustSign(t testing.TB, s *signing.Signer, doc []byte, detached bool) []byte {
	t.Helper()
	sig, err := s.Sign(context.Background(), doc, detached)
	if err != nil {
		t.Fatal(err)
	}
	return sig.DER
}

// swapDER replaces the DER element old by new inside der, re-encoding the
// lengths of every element around it.
func swapDER(t testing.TB, der, old, new []byte) []byte {
	t.Helper()
	out, found := swapElement(der, old, new)
	if !found {
		t.Fatal("element to swap not found")
	}
	return out
}

func swapElement(elem, old, new []byte) ([]byte, bool) {
	if bytes.Equal(elem, old) {
		return new, true
	}
	s := cryptobyte.String(elem)
	var content cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&content, &tag) || tag&0x20 == 0 {
		return elem, false
	}
	var children [][]byte
	found := false
	for !content.Empty() {
		var child cryptobyte.String
		var ct cbasn1.Tag
		if !content.ReadAnyASN1Element(&child, &ct) {
			return elem, false
		}
		c, f := swapElement(child, old, new)
		found = found || f
		children = append(children, c)
	}
	if !found {
		return elem, false
	}
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, c := range children {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic(), true
}
