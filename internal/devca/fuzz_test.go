package devca_test

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/crypto/ocsp"

	"pec/internal/devca"
)

// FuzzOCSP: whatever a client sends, the responder answers an OCSP
// response (a signed one, or an error status) and never fails on its own.
func FuzzOCSP(f *testing.F) {
	e := newEnv(f)
	cert := e.issue(f, "partner-a")
	r := e.responder(f, devca.Options{})
	req, err := ocsp.CreateRequest(cert, e.ca.Cert, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		der, result, err := r.OCSP(data)
		if err != nil {
			t.Fatalf("our own failure on outside input: %v", err)
		}
		switch result {
		case "malformed", "unauthorized":
			if !bytes.Equal(der, ocsp.MalformedRequestErrorResponse) && !bytes.Equal(der, ocsp.UnauthorizedErrorResponse) {
				t.Fatalf("%s: answered %x", result, der)
			}
			return
		case "good", "revoked", "unknown":
		default:
			t.Fatalf("result %q", result)
		}
		if _, err := ocsp.ParseResponse(der, e.ca.Cert); err != nil {
			t.Fatalf("%s: the answer does not parse: %v", result, err)
		}
	})
}

// FuzzParseState: a state file decodes to a checked state that encodes and
// decodes again to the same, or is refused as ErrMalformedState.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version": 1, "certificates": []}`))
	f.Add([]byte(`{"version": 1, "certificates": [{"name": "partner-a", "serial": "1f", "subject": "CN=partner-a", "sha256": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "not_after": "2030-01-01T00:00:00Z", "issued": {"at": "2026-01-01T00:00:00Z", "by": "test", "evidence": "0123456789abcdef0123456789abcdef"}, "revoked": {"at": "2026-01-02T00:00:00Z", "by": "x", "reason": "keyCompromise"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := devca.ParseState(data)
		if err != nil {
			if !errors.Is(err, devca.ErrMalformedState) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		enc, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := devca.ParseState(enc)
		if err != nil {
			t.Fatalf("a state written does not read back: %v\n%s", err, enc)
		}
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(enc, again) {
			t.Fatalf("not stable: %v\n%s\n%s", err, enc, again)
		}
	})
}
