package hsm_test

import (
	"crypto"
	"errors"
	"testing"
	"time"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// TestSignFromSessionCopy: after its first signature, a key signs from a
// session copy of itself that stays in the module (CKA_TOKEN false,
// sensitive, not extractable, its label); the signatures verify, EC and
// RSA; a KeyStore finds only the token object by the label, never the
// copy; destroying the key destroys the copy.
func TestSignFromSessionCopy(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "copy")
	ks := open(t, cfg, hsm.Options{})
	for _, kt := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048} {
		label := "copy-" + kt.String()
		s, err := ks.GenerateKey(t.Context(), label, kt)
		mustDo(t, err)
		if _, ok, _ := hsm.SessionCopy(t.Context(), s); ok {
			t.Fatalf("%s: a session copy before any signature", kt)
		}
		for range 5 {
			signVerify(t, s)
		}
		attrs, ok, err := hsm.SessionCopy(t.Context(), s)
		if err != nil || !ok {
			t.Fatalf("%s: no session copy after signatures (%v)", kt, err)
		}
		if attrs[0][0] != 0 || attrs[1][0] != 1 || attrs[2][0] != 0 || string(attrs[3]) != label {
			t.Errorf("%s: the copy's CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_LABEL = %v, want false, true, false, %q", kt, attrs, label)
		}
		// Another store of the process finds the one token key by its
		// label (the copy has the same label and CKA_ID).
		other := open(t, cfg, hsm.Options{})
		o, err := other.Signer(t.Context(), label)
		mustDo(t, err)
		signVerify(t, o)
		copyHandle := hsm.CopyHandle(s)
		mustDo(t, ks.DestroyKey(t.Context(), label))
		if exists, err := hsm.ObjectExists(t.Context(), ks, copyHandle); err != nil || exists {
			t.Errorf("%s: the session copy after DestroyKey: exists %v, %v", kt, exists, err)
		}
		// The other store's key, from its own copy, fails within
		// KeyCheckEvery.
		deadline := time.Now().Add(hsm.KeyCheckEvery + time.Second)
		for {
			_, err := o.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256)
			if err != nil {
				if !errors.Is(err, hsm.ErrUnavailable) && !errors.Is(err, hsm.ErrKeyNotFound) {
					t.Errorf("%s: the other store's key after DestroyKey: %v", kt, err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the other store's key still signs %v after DestroyKey", kt, hsm.KeyCheckEvery+time.Second)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The other store, its key gone, would re-initialise the module
		// in the background until the key is back (a module recovery),
		// taking the next key's session copy with the sessions.
		mustDo(t, other.Close())
	}
}

func signVerify(t *testing.T, s crypto.Signer) {
	t.Helper()
	d := digest(crypto.SHA256, "copy")
	sig, err := s.Sign(nil, d, crypto.SHA256)
	mustDo(t, err)
	mustDo(t, verify(s.Public(), d, sig, crypto.SHA256))
}
