package hsm_test

import (
	"context"
	"testing"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// TestKeyOfAnotherProcess: a key pkcs11-tool (another process) makes in
// the token is found by a KeyStore that made keys of its own meanwhile.
func TestKeyOfAnotherProcess(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "otherproc")
	ks := open(t, cfg, hsm.Options{})
	ctx := context.Background()
	if _, err := ks.GenerateKey(ctx, "mine-1", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	tool(t, "opensc", "pkcs11-tool", "--module", softhsmtest.Module, "--token-label", cfg.TokenLabel,
		"--login", "--pin", softhsmtest.PIN(t, cfg), "--keypairgen", "--key-type", "EC:prime256v1", "--label", "theirs", "--id", "77")
	done := make(chan error)
	go func() { _, err := ks.GenerateKey(ctx, "mine-2", hsm.RSA3072); done <- err }()
	tool(t, "opensc", "pkcs11-tool", "--module", softhsmtest.Module, "--token-label", cfg.TokenLabel,
		"--login", "--pin", softhsmtest.PIN(t, cfg), "--keypairgen", "--key-type", "EC:prime256v1", "--label", "theirs2", "--id", "78")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Signer(ctx, "theirs2"); err != nil {
		t.Fatalf("the key another process made while this one made its own: %v", err)
	}
	if _, err := ks.Signer(ctx, "theirs"); err != nil {
		t.Fatalf("the key another process made: %v", err)
	}
}
