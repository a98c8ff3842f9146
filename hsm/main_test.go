package hsm_test

import (
	"fmt"
	"os"
	"testing"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// shared is a token made by TestMain for the tests that only need keys on
// some token; tests that close, break or log in differently make their own
// with softhsmtest.NewToken.
var shared hsm.Config

// TestMain points SoftHSM2 at a throw-away token directory before any test
// loads the module (SoftHSM2 reads SOFTHSM2_CONF only then), and creates the
// shared token.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var cleanup func()
	var err error
	if shared, cleanup, err = softhsmtest.Main("shared"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}
