// Package softhsmtest gives tests real PKCS#11 tokens: SoftHSM2 tokens in a
// throw-away directory.
//
// SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, once per
// process, so a test binary calls Setup from TestMain before anything loads
// the module, then NewToken (or CreateToken) for each token it needs:
//
//	func TestMain(m *testing.M) {
//		cleanup, err := softhsmtest.Setup()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		cleanup()
//		os.Exit(code)
//	}
//
// A missing SoftHSM2 is a failure, never a skip: the tests that need it are
// the only ones that exercise the PKCS#11 code.
package softhsmtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"

	"pec/hsm"
)

// Module is where Debian and Ubuntu's softhsm2 package installs the module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

var (
	mu      sync.Mutex
	confDir string // set by Setup
	conf    string
	tokens  string       // the token directory of conf
	serial  atomic.Int64 // makes token labels unique in a test binary (-count=N reruns tests)
)

// Setup creates a temporary token directory and its softhsm2.conf and points
// SOFTHSM2_CONF at it. Call it from TestMain, before the module is loaded.
// cleanup removes the directory and restores SOFTHSM2_CONF.
func Setup() (cleanup func(), err error) {
	if _, err := os.Stat(Module); err != nil {
		return nil, fmt.Errorf("softhsmtest: %s: %w: install SoftHSM2 (apt-get install softhsm2)", Module, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if confDir != "" {
		return nil, errors.New("softhsmtest: Setup called twice")
	}
	dir, err := os.MkdirTemp("", "softhsmtest-")
	if err != nil {
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	tokensDir := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokensDir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	confPath := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokensDir + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n"
	if err := os.WriteFile(confPath, []byte(text), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	prev, hadPrev := os.LookupEnv("SOFTHSM2_CONF")
	if err := os.Setenv("SOFTHSM2_CONF", confPath); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	confDir, conf, tokens = dir, confPath, tokensDir
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if hadPrev {
			os.Setenv("SOFTHSM2_CONF", prev)
		} else {
			os.Unsetenv("SOFTHSM2_CONF")
		}
		os.RemoveAll(dir)
		confDir, conf, tokens = "", "", ""
	}, nil
}

// Conf returns the softhsm2.conf that Setup wrote ("" before Setup), for
// tools run by tests (pkcs11-tool, openssl) through SOFTHSM2_CONF.
func Conf() string {
	mu.Lock()
	defer mu.Unlock()
	return conf
}

// CreateToken initialises a new token whose label starts with label, with
// random PINs, and writes the user PIN to a file of mode 0600 in pinDir. It
// returns a Config that opens the token (selected by both label and serial)
// with that PIN file. Use it from TestMain; tests use NewToken.
func CreateToken(label, pinDir string) (hsm.Config, error) {
	confPath := Conf()
	if confPath == "" {
		return hsm.Config{}, errors.New("softhsmtest: call Setup from TestMain before creating tokens")
	}
	unique := fmt.Sprintf("%s-%d", label, serial.Add(1))
	userPIN, soPIN := randomPIN(), randomPIN()
	pinFile := filepath.Join(pinDir, unique+".pin")
	if err := os.WriteFile(pinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		return hsm.Config{}, fmt.Errorf("softhsmtest: %w", err)
	}
	tokenSerial, err := hsm.InitToken(Module, unique, soPIN, userPIN)
	if err != nil {
		return hsm.Config{}, fmt.Errorf("softhsmtest: %w", err)
	}
	return hsm.Config{
		Module:       Module,
		TokenLabel:   unique,
		TokenSerial:  tokenSerial,
		PINFile:      pinFile,
		SoftHSM2Conf: confPath,
	}, nil
}

// NewToken initialises a new token for this test: its label starts with
// label, its PINs are random, the user PIN is in a file of mode 0600 in
// t.TempDir(). The returned Config selects the token by both label and
// serial; clear one to test selection by the other.
func NewToken(t testing.TB, label string) hsm.Config {
	t.Helper()
	cfg, err := CreateToken(label, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TokenDir returns the directory in which SoftHSM2 keeps the token of cfg
// (DIR/tokens/UUID, holding token.object and one file per object), so that
// a test can take the token away, as a pulled token, by moving the
// directory or making it unreadable. The directory is the one whose
// token.object holds cfg.TokenSerial, which CreateToken always sets.
func TokenDir(t testing.TB, cfg hsm.Config) string {
	t.Helper()
	mu.Lock()
	dir := tokens
	mu.Unlock()
	if dir == "" || cfg.TokenSerial == "" {
		t.Fatal("softhsmtest: TokenDir needs Setup and a token made by CreateToken")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "token.object"))
		if err == nil && bytes.Contains(data, []byte(cfg.TokenSerial)) {
			found = append(found, filepath.Join(dir, e.Name()))
		}
	}
	if len(found) != 1 {
		t.Fatalf("softhsmtest: %d token directories hold serial %s", len(found), cfg.TokenSerial)
	}
	return found[0]
}

// PIN reads the user PIN of cfg back, for tools that need it on their
// command line (pkcs11-tool --pin).
func PIN(t testing.TB, cfg hsm.Config) string {
	t.Helper()
	data, err := os.ReadFile(cfg.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(data), "\n")
}

func randomPIN() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Main is what a package's TestMain does before m.Run: Setup, then a
// shared token whose label starts with label (PIN file in a temporary
// directory). It returns the token's Config and the cleanup to run after
// m.Run.
func Main(label string) (hsm.Config, func(), error) {
	cleanup, err := Setup()
	if err != nil {
		return hsm.Config{}, nil, err
	}
	pins, err := os.MkdirTemp("", "softhsmtest-pins-")
	if err != nil {
		cleanup()
		return hsm.Config{}, nil, fmt.Errorf("softhsmtest: %w", err)
	}
	done := func() {
		os.RemoveAll(pins)
		cleanup()
	}
	cfg, err := CreateToken(label, pins)
	if err != nil {
		done()
		return hsm.Config{}, nil, err
	}
	return cfg, done, nil
}

// RawSlot loads the module directly, bypassing package hsm, and finds the
// slot of the token labelled label: the reference of the benchmarks that
// compare hsm with the raw PKCS#11 rate. The dynamic loader hands back the
// library that package hsm already initialised and logged in to.
func RawSlot(tb testing.TB, label string) (*pkcs11.Ctx, uint) {
	tb.Helper()
	ctx := pkcs11.New(Module)
	if ctx == nil {
		tb.Fatal("softhsmtest: cannot load the module")
	}
	if err := ctx.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		tb.Fatal(err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err == nil && ti.Label == label {
			return ctx, s
		}
	}
	tb.Fatalf("softhsmtest: no token %q", label)
	return nil, 0
}
