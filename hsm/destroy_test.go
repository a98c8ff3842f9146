package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/pkcs11"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// TestDestroyKey: on a token and with software keys, a destroyed key is
// gone for good — not found again, its handed-out decrypter and signer
// fail with ErrKeyNotFound, a second destruction is ErrKeyNotFound — and
// the label can name a new key, which the old handle does not reach.
func TestDestroyKey(t *testing.T) {
	for name, cfg := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			ks := open(t, cfg, hsm.Options{})
			label := uniqueLabel(t, "kek")
			signer, err := ks.GenerateKey(ctx, label, hsm.RSA2048)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := ks.Decrypter(ctx, label)
			if err != nil {
				t.Fatal(err)
			}
			pub := dec.Public().(*rsa.PublicKey)
			oaep := &rsa.OAEPOptions{Hash: crypto.SHA256, Label: []byte("pec test")}
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, []byte("data key"), oaep.Label)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := dec.Decrypt(nil, ct, oaep); err != nil || string(pt) != "data key" {
				t.Fatalf("Decrypt before: %q, %v", pt, err)
			}
			other := uniqueLabel(t, "kept")
			kept, err := ks.GenerateKey(ctx, other, hsm.ECP256)
			if err != nil {
				t.Fatal(err)
			}

			if err := ks.DestroyKey(ctx, label); err != nil {
				t.Fatalf("DestroyKey: %v", err)
			}
			if _, err := dec.Decrypt(nil, ct, oaep); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("the handed-out decrypter after destruction: %v, want ErrKeyNotFound", err)
			}
			d := digest(crypto.SHA256, "after")
			if _, err := signer.Sign(nil, d, crypto.SHA256); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("the handed-out signer after destruction: %v, want ErrKeyNotFound", err)
			}
			if _, err := ks.Decrypter(ctx, label); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("Decrypter after destruction: %v, want ErrKeyNotFound", err)
			}
			if err := ks.DestroyKey(ctx, label); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("DestroyKey again: %v, want ErrKeyNotFound", err)
			}
			if err := ks.DestroyKey(ctx, uniqueLabel(t, "never")); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("DestroyKey of a label never used: %v, want ErrKeyNotFound", err)
			}
			if err := ks.Ready(); err != nil {
				t.Errorf("Ready after destroying a key handed out: %v", err)
			}
			if _, err := kept.Sign(nil, d, crypto.SHA256); err != nil {
				t.Errorf("another key after the destruction: %v", err)
			}

			// The label is free again; the old handle stays dead.
			if _, err := ks.GenerateKey(ctx, label, hsm.RSA2048); err != nil {
				t.Fatalf("GenerateKey of the label again: %v", err)
			}
			if _, err := dec.Decrypt(nil, ct, oaep); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("the old decrypter with a new key of its label: %v, want ErrKeyNotFound", err)
			}
			fresh, err := ks.Decrypter(ctx, label)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fresh.Decrypt(nil, ct, oaep); err == nil {
				t.Error("the new key of the label decrypts what the destroyed one encrypted")
			}
			if err := ks.DestroyKey(ctx, label); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDestroyKeySurvivesRecovery: a key destroyed after it was handed out
// is not one a recovery misses: a module re-initialisation afterwards
// leaves the KeyStore ready and its other keys working.
func TestDestroyKeySurvivesRecovery(t *testing.T) {
	ks, faults, signer, _ := faulty(t)
	ctx := t.Context()
	label := uniqueLabel(t, "shredded")
	if _, err := ks.GenerateKey(ctx, label, hsm.RSA2048); err != nil {
		t.Fatal(err)
	}
	if err := ks.DestroyKey(ctx, label); err != nil {
		t.Fatal(err)
	}
	before := hsm.ModuleGeneration(softhsmtest.Module)
	faults.FailCall("Sign", 1, pkcs11.CKR_DEVICE_ERROR)
	mustSign(t, signer)
	if hsm.ModuleGeneration(softhsmtest.Module) == before {
		t.Fatal("the injected device error did not re-initialise the module")
	}
	if err := ks.Ready(); err != nil {
		t.Errorf("Ready after a recovery: %v; a destroyed key counts as missing", err)
	}
	mustSign(t, signer)
}

// TestDestroyKeyFault: a session fault on the destruction is recovered
// from (a new session, the destruction again); a failure to destroy the
// public half leaves the private key destroyed all the same.
func TestDestroyKeyFault(t *testing.T) {
	ks, faults, _, _ := faulty(t)
	ctx := t.Context()
	label := uniqueLabel(t, "fault")
	if _, err := ks.GenerateKey(ctx, label, hsm.RSA2048); err != nil {
		t.Fatal(err)
	}
	faults.FailCall("DestroyObject", 1, pkcs11.CKR_SESSION_CLOSED)
	if err := ks.DestroyKey(ctx, label); err != nil {
		t.Fatalf("DestroyKey with a session closed under it: %v", err)
	}
	if _, err := ks.Decrypter(ctx, label); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Decrypter after destruction: %v", err)
	}
	label = uniqueLabel(t, "fault")
	if _, err := ks.GenerateKey(ctx, label, hsm.RSA2048); err != nil {
		t.Fatal(err)
	}
	faults.FailCall("DestroyObject", 2, pkcs11.CKR_DEVICE_ERROR) // the public half
	if err := ks.DestroyKey(ctx, label); err != nil {
		t.Fatalf("DestroyKey with the public half's destruction failing: %v", err)
	}
	if _, err := ks.Decrypter(ctx, label); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Decrypter after destruction: %v", err)
	}
}

// TestDestroySoftwareKeyFile: the key file is gone, not left beside.
func TestDestroySoftwareKeyFile(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, hsm.Config{KeyDir: dir}, hsm.Options{})
	if _, err := ks.GenerateKey(t.Context(), "kek-1", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	if err := ks.DestroyKey(t.Context(), "kek-1"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left in the key directory: %s", filepath.Join(dir, e.Name()))
	}
	if err := ks.DestroyKey(t.Context(), "../kek-1"); err == nil || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("DestroyKey of a path: %v, want a label error", err)
	}
}
