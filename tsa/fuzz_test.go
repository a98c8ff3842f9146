package tsa_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"

	"github.com/digitorus/timestamp"
	"github.com/google/go-cmp/cmp"

	"pec/tsa"
)

// FuzzRespond: whatever the bytes, Respond answers with a DER TimeStampResp
// and no error; a token is granted only for a request that
// digitorus/timestamp also reads the same way (differential check of our
// parser), and it carries that request's imprint and nonce.
//
// The committed corpus is in testdata/fuzz/FuzzRespond; more seeds are
// added below.
func FuzzRespond(f *testing.F) {
	a := newTestTSA(f, nil)
	sum := make([]byte, 32)
	for _, o := range []reqOpts{
		{},
		{nonce: big.NewInt(1), certReq: true},
		{nonce: new(big.Int).Lsh(big.NewInt(1), 200)},
		{hash: crypto.SHA512, digest: make([]byte, 64)},
		{hash: crypto.SHA1, digest: make([]byte, 20)},
		{policy: asn1.ObjectIdentifier{2, 999, 3161, 2}},
		{policy: asn1.ObjectIdentifier{1, 2, 3}},
		{exts: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2}, Critical: true, Value: []byte{5, 0}}}},
		{digest: sum[:20]},
	} {
		f.Add(makeRequest(f, o))
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, req []byte) {
		resp, err := a.Respond(context.Background(), req)
		if err != nil {
			t.Fatalf("Respond failed on a client's bytes: %v", err)
		}
		// RespondToken's token is what ParseToken reads from its response.
		resp2, tok, _, err := a.RespondToken(context.Background(), req, tsa.RespondOptions{Unrecorded: true})
		if _, refused := errors.AsType[*tsa.RejectError](err); err != nil && !refused {
			t.Fatalf("RespondToken failed on a client's bytes: %v", err)
		}
		if tok != nil {
			want, perr := tsa.ParseToken(resp2)
			if perr != nil {
				t.Fatalf("RespondToken's response does not parse: %v", perr)
			}
			if d := cmp.Diff(want, tok, bigIntComparer); d != "" {
				t.Fatalf("RespondToken's token against ParseToken's (-want +got):\n%s", d)
			}
		}
		status, _, _ := pkiStatus(t, resp)
		if status != tsa.StatusGranted {
			if status != tsa.StatusRejection {
				t.Fatalf("status %d", status)
			}
			return
		}
		lib, err := timestamp.ParseRequest(req)
		if err != nil {
			t.Fatalf("granted a request the library rejects (%v): %x", err, req)
		}
		ts, err := libParseResponse(resp)
		if err != nil {
			t.Fatalf("granted response does not parse: %v", err)
		}
		if ts.HashAlgorithm != lib.HashAlgorithm || !bytes.Equal(ts.HashedMessage, lib.HashedMessage) {
			t.Fatalf("imprint %v %x, request %v %x", ts.HashAlgorithm, ts.HashedMessage, lib.HashAlgorithm, lib.HashedMessage)
		}
		if (ts.Nonce == nil) != (lib.Nonce == nil) || (ts.Nonce != nil && ts.Nonce.Cmp(lib.Nonce) != 0) {
			t.Fatalf("nonce %v, request %v", ts.Nonce, lib.Nonce)
		}
		if _, err := tsa.Verify(resp, lib.HashedMessage, lib.HashAlgorithm, tsa.VerifyOptions{Roots: a.roots, Certificates: []*x509.Certificate{a.cert}}); err != nil {
			t.Fatalf("granted token does not verify: %v", err)
		}
	})
}
