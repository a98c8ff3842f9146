package cms_test

import (
	"bytes"
	"errors"
	"testing"

	"pec/internal/cms"
)

// cmsError tells whether err is of one of the kinds the package documents.
func cmsError(err error) bool {
	for _, kind := range []error{cms.ErrMalformed, cms.ErrUnsupported, cms.ErrInvalid, cms.ErrNoSigner, cms.ErrSigningCertificate, cms.ErrContentRequired} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// FuzzParseSignedData: whatever the bytes, the shared reader and every
// check on what it read end with a documented error or a SignedData whose
// Raw reads back the same; never a panic. The BER path converts to DER
// that the strict reader accepts.
//
// The committed corpus in testdata/fuzz/FuzzParseSignedData holds the RFC
// 9216 signed samples (RSA, RSA-PSS, Ed25519, detached, without
// certificates) and OpenSSL signatures (DER, BER streamed, PEM-less
// -nocerts, ECDSA with and without attributes); signatures built here are
// added below.
func FuzzParseSignedData(f *testing.F) {
	alice := newTestSigner(f, "Alice", 10)
	content := []byte("fuzzed content")
	for _, spec := range []sdSpec{
		{content: content, signers: []signerSpec{{s: alice}}},
		{content: content, detached: true, signers: []signerSpec{{s: alice, byKeyID: true}}},
		{content: content, noCerts: true, signers: []signerSpec{{s: alice, noAttrs: true}}},
	} {
		f.Add(spec.build(f))
	}
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		sd, err := cms.ParseSignedData(in)
		if err != nil {
			if sd != nil || !errors.Is(err, cms.ErrMalformed) {
				t.Fatalf("%v (SignedData %v), want ErrMalformed and nil", err, sd != nil)
			}
		} else {
			checkRead(t, sd, in)
		}
		ber, err := cms.ParseSignedDataBER(in)
		if err != nil {
			if !errors.Is(err, cms.ErrMalformed) {
				t.Fatalf("BER: %v, want ErrMalformed", err)
			}
			return
		}
		again, err := cms.ParseSignedData(ber.Raw)
		if err != nil {
			t.Fatalf("the DER of the BER path does not read: %v", err)
		}
		checkRead(t, again, ber.Raw)
	})
}

func checkRead(t *testing.T, sd *cms.SignedData, in []byte) {
	t.Helper()
	if !bytes.Equal(sd.Raw, in) || len(sd.EContentType) < 2 || sd.Attached != (sd.Content != nil) {
		t.Fatalf("incomplete SignedData: %+v", sd)
	}
	again, err := cms.ParseSignedData(bytes.Clone(sd.Raw))
	if err != nil || len(again.SignerInfos) != len(sd.SignerInfos) || len(again.Certificates) != len(sd.Certificates) {
		t.Fatalf("Raw reads otherwise: %v", err)
	}
	for _, si := range sd.SignerInfos {
		if (si.Serial == nil) == (si.SubjectKeyID == nil) {
			t.Fatalf("SignerInfo without one sid: %+v", si)
		}
		if (si.RawSignedAttrs == nil) != (si.SignedAttrs == nil) {
			t.Fatal("signed attributes read and raw disagree")
		}
		// Every check on what was read fails with a documented kind.
		h, err := si.Hash()
		if err != nil {
			if !errors.Is(err, cms.ErrUnsupported) {
				t.Fatalf("Hash: %v", err)
			}
			continue
		}
		if _, err := si.MessageDigest(sd.EContentType); err != nil && !errors.Is(err, cms.ErrMalformed) {
			t.Fatalf("MessageDigest: %v", err)
		}
		if _, _, err := si.SigningTime(); err != nil && !errors.Is(err, cms.ErrMalformed) {
			t.Fatalf("SigningTime: %v", err)
		}
		cert, err := sd.Signer(si, nil)
		if err != nil {
			if !errors.Is(err, cms.ErrNoSigner) {
				t.Fatalf("Signer: %v", err)
			}
			continue
		}
		if _, err := si.CheckSigningCertificate(cert); err != nil && !cmsError(err) {
			t.Fatalf("CheckSigningCertificate: %v", err)
		}
		if err := si.VerifySignature(cert, h, sd.Content); err != nil && !cmsError(err) {
			t.Fatalf("VerifySignature: %v", err)
		}
		if err := si.VerifySignatureDigest(cert, h, cms.Digest(h, sd.Content)); err != nil && !cmsError(err) {
			t.Fatalf("VerifySignatureDigest: %v", err)
		}
	}
}
