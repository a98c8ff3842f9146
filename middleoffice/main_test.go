package middleoffice_test

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"pec/hsm"
	"pec/internal/pgtest"
	"pec/internal/softhsmtest"
)

// hsmKeys is a KeyStore on a SoftHSM2 token made by TestMain: the node's
// TLS key of the webhook tests is a real PKCS#11 key.
var hsmKeys hsm.KeyStore

// TestMain points SoftHSM2 at a throw-away token directory before the
// module loads, opens the shared token, and stops the PostgreSQL of the
// store tests (if one started) after the tests.
func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	cfg, cleanup, err := softhsmtest.Main("middleoffice")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	if hsmKeys, err = hsm.Open(context.Background(), cfg, hsm.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer hsmKeys.Close()
	// pgtest.Main stops the throw-away PostgreSQL of the store tests.
	return pgtest.Main(m)
}

var hsmLabels atomic.Int64

// hsmKey is a fresh P-256 key on the token.
func hsmKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := hsmKeys.GenerateKey(t.Context(), fmt.Sprintf("node-tls-%d", hsmLabels.Add(1)), hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
