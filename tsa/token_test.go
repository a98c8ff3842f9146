package tsa_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/tsa"
)

// TestRespondTokenIsParseToken: the token RespondToken returns is, field
// by field, the one ParseToken reads from the same response — for every
// shape of request (hashes, nonces positive, negative and absent, certReq
// or not, the default or an accepted policy, a caller's buffer) and of
// token profile (accuracy, ordering), unrecorded or journalled; a refused
// request is the *RejectError ParseToken reads from the rejection.
func TestRespondTokenIsParseToken(t *testing.T) {
	t.Parallel()
	for _, prof := range []struct {
		name     string
		accuracy time.Duration
		ordering bool
	}{
		{"accuracy 1s", time.Second, false},
		{"accuracy 1ms, ordering", time.Millisecond, true},
		{"accuracy 1.5ms, ordering", 1500 * time.Microsecond, true},
		{"accuracy 2s 3us", 2*time.Second + 3*time.Microsecond, false},
	} {
		t.Run(prof.name, func(t *testing.T) {
			t.Parallel()
			a := newTestTSA(t, func(c *tsa.Config, _ *tsa.Options) { c.Accuracy, c.Ordering = prof.accuracy, prof.ordering })
			for _, tc := range []struct {
				name string
				o    reqOpts
				opts tsa.RespondOptions
			}{
				{"SHA-256, nonce, certReq", reqOpts{nonce: big.NewInt(42), certReq: true}, tsa.RespondOptions{}},
				{"SHA-384, no nonce, no certReq", reqOpts{hash: crypto.SHA384}, tsa.RespondOptions{}},
				{"SHA-512, a large nonce", reqOpts{hash: crypto.SHA512, nonce: new(big.Int).Lsh(big.NewInt(1), 70), certReq: true}, tsa.RespondOptions{}},
				{"negative nonce", reqOpts{nonce: big.NewInt(-129)}, tsa.RespondOptions{Unrecorded: true}},
				{"accepted policy", reqOpts{policy: asn1.ObjectIdentifier{2, 999, 3161, 2}, certReq: true}, tsa.RespondOptions{Unrecorded: true}},
				{"the default policy asked", reqOpts{policy: asn1.ObjectIdentifier{2, 999, 3161, 1}}, tsa.RespondOptions{}},
				{"in the caller's buffer", reqOpts{nonce: big.NewInt(7), certReq: true}, tsa.RespondOptions{Buf: make([]byte, 0, 8192)}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, tok, _, err := a.RespondToken(context.Background(), makeRequest(t, tc.o), tc.opts)
					if err != nil {
						t.Fatal(err)
					}
					want, err := tsa.ParseToken(resp)
					if err != nil {
						t.Fatal(err)
					}
					if d := cmp.Diff(want, tok, bigIntComparer); d != "" {
						t.Errorf("RespondToken's token against ParseToken's (-want +got):\n%s", d)
					}
					if tc.opts.Buf != nil {
						clear(tc.opts.Buf[:cap(tc.opts.Buf)]) // the caller reuses its buffer
						if d := cmp.Diff(want.Raw, tok.Raw); d != "" {
							t.Errorf("the token's Raw aliases the caller's buffer")
						}
					}
					if _, err := tsa.Verify(tok.Raw, tok.Imprint, tok.Hash, tsa.VerifyOptions{Roots: a.roots, Certificates: []*x509.Certificate{a.cert}}); err != nil {
						t.Errorf("the token does not verify: %v", err)
					}
				})
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		a := newTestTSA(t, nil)
		for _, tc := range []struct {
			name string
			o    reqOpts
			fail tsa.FailInfo
		}{
			{"unknown policy", reqOpts{policy: asn1.ObjectIdentifier{1, 2, 3}}, tsa.FailUnacceptedPolicy},
			{"imprint too short", reqOpts{digest: make([]byte, 31)}, tsa.FailBadDataFormat},
			{"SHA-1", reqOpts{hash: crypto.SHA1, digest: make([]byte, 20)}, tsa.FailBadAlg},
		} {
			resp, tok, _, err := a.RespondToken(context.Background(), makeRequest(t, tc.o), tsa.RespondOptions{})
			re, ok := errors.AsType[*tsa.RejectError](err)
			if !ok || tok != nil || re.FailInfo != tc.fail {
				t.Errorf("%s: %v, %v; want a *RejectError with %v", tc.name, tok, err, tc.fail)
			}
			if _, perr := tsa.ParseToken(resp); perr == nil || perr.Error() != err.Error() {
				t.Errorf("%s: ParseToken of the rejection: %v, RespondToken: %v", tc.name, perr, err)
			}
		}
	})
}

var bigIntComparer = cmp.Comparer(func(a, b *big.Int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Cmp(b) == 0
})
