package pec_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedImports is ARCHITECTURE.md's dependency direction: each package may
// import only the project packages listed here (tests aside). The capability
// packages form a chain — hsm ◄ certvalidation ◄ tsa ◄ signing ◄ proof ◄
// securemail — so that a lower one never needs a higher one: where it does,
// it declares a one-method interface and cmd/pec wires it.
var allowedImports = map[string][]string{
	"pec/hsm":            {"pec/internal/promreg"},
	"pec/certvalidation": {"pec/internal/promreg", "pec/hsm"},
	"pec/tsa":            {"pec/evidence", "pec/internal/filelock", "pec/internal/promreg", "pec/internal/cms", "pec/hsm", "pec/certvalidation"},
	"pec/signing":        {"pec/evidence", "pec/internal/promreg", "pec/internal/cms", "pec/hsm", "pec/certvalidation", "pec/tsa"},
	"pec/proof":          {"pec/evidence", "pec/proof/wal", "pec/internal/atomicfile", "pec/internal/promreg", "pec/internal/cms", "pec/hsm", "pec/certvalidation", "pec/tsa", "pec/signing"},
	"pec/securemail":     {"pec/evidence", "pec/internal/promreg", "pec/internal/cms", "pec/hsm", "pec/certvalidation", "pec/tsa", "pec/signing", "pec/proof"},
	// evidence is the vocabulary of records and the Appender through
	// which every capability package emits them: it needs nothing of ours,
	// so that any package may use it without learning about the log.
	"pec/evidence": {},
	// wal is the write-ahead log of the embedded store: a file format.
	"pec/proof/wal": {"pec/internal/filelock"},
	// atomicfile replaces state files whole and durably; every layer may use it.
	"pec/internal/atomicfile": {},
	// filelock takes the flock of files one process writes.
	"pec/internal/filelock": {},
	"pec/middleoffice":      capabilities,
	// The edges adapt HTTP to plain calls; they may skip the middle office.
	"pec/gateway": append([]string{"pec/gateway/api", "pec/middleoffice"}, capabilities...),
	// api is the wire: the types the gateway serves and its typed Go
	// client, which the CLI uses; it names the services' own types
	// (partners, reports) and never imports the server.
	"pec/gateway/api": append([]string{"pec/middleoffice"}, capabilities...),
	"pec/frontoffice": append([]string{"pec/middleoffice"}, capabilities...),
	// configs is the embedded pec.yaml: imported by cmd/pec only.
	"pec/configs": {},
	// devpki issues the development PKI of `pec init`; it needs nothing of ours.
	"pec/internal/devpki": {},
	// devca keeps the development CA's state and serves its CRL and OCSP
	// answers (cmd/pec mounts them); its events are evidence records.
	"pec/internal/devca": {"pec/evidence", "pec/internal/atomicfile", "pec/internal/devpki", "pec/internal/filelock", "pec/internal/promreg"},
	// cms holds the CMS primitives of tsa and signing; it needs nothing of ours.
	"pec/internal/cms": {},
	// promreg registers Prometheus collectors; every layer may use it.
	"pec/internal/promreg": {},
	// yamlpath names the paths and lines of pec.yaml; it needs nothing of ours.
	"pec/internal/yamlpath": {},
	// The node's components, started and stopped in order (cmd/pec).
	"pec/internal/lifecycle": {},
	// Test helpers: they may use what they help test.
	"pec/internal/softhsmtest": {"pec/hsm"},
	"pec/internal/interop":     {},
	"pec/internal/certtest":    {},
	// A throw-away PostgreSQL for the stores' tests.
	"pec/internal/pgtest": {},
	// The conformance suite of proof.Store.
	"pec/proof/prooftest": {"pec/evidence", "pec/proof"},
	// The conformance suite of middleoffice.ExchangeStore.
	"pec/middleoffice/exchangetest": {"pec/evidence", "pec/middleoffice"},
	// Benchmarks drive the production path from outside, like cmd/pec.
	"pec/bench/tsaload": {"pec/gateway", "pec/hsm", "pec/tsa", "pec/internal/devpki"},
	// edgeload runs the real pec binary; it shares only the API's wire
	// types (the manifest is middleoffice's), and reads the acknowledgments
	// of receipt it gets with the CMS and record parsers.
	"pec/bench/edgeload": {"pec/gateway/api", "pec/middleoffice", "pec/evidence", "pec/internal/cms"},
	"pec/cmd/pec":        append([]string{"pec/gateway", "pec/gateway/api", "pec/frontoffice", "pec/middleoffice", "pec/configs", "pec/internal/devpki", "pec/internal/devca", "pec/internal/yamlpath", "pec/internal/lifecycle"}, capabilities...),
}

var capabilities = []string{"pec/evidence", "pec/internal/atomicfile", "pec/internal/filelock", "pec/internal/promreg", "pec/internal/cms", "pec/hsm", "pec/certvalidation", "pec/tsa", "pec/signing", "pec/proof", "pec/securemail"}

// testExtra are what the tests of a package may import beyond its table
// row and the test helpers, with the reason.
var testExtra = map[string][]string{}

// testOnly packages serve tests: no production code may import them.
var testOnly = []string{"pec/internal/softhsmtest", "pec/internal/interop", "pec/internal/certtest", "pec/internal/pgtest", "pec/proof/prooftest", "pec/middleoffice/exchangetest"}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath   string
			Imports      []string
			TestImports  []string
			XTestImports []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.ImportPath == "pec" {
			continue // this test
		}
		seen++
		allowed, known := allowedImports[p.ImportPath]
		if !known {
			t.Errorf("%s: not in the dependency table of deps_test.go: add it with its place in ARCHITECTURE.md", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if imp != "pec" && !strings.HasPrefix(imp, "pec/") {
				continue
			}
			if slices.Contains(testOnly, imp) && !slices.Contains(testOnly, p.ImportPath) {
				t.Errorf("%s imports %s, a test helper, outside tests", p.ImportPath, imp)
				continue
			}
			if !slices.Contains(allowed, imp) {
				t.Errorf("%s imports %s: against the dependency direction (allowed: %v)", p.ImportPath, imp, allowed)
			}
		}
		// Tests follow the same direction: they may add the test helpers
		// and their own package (and devpki's throw-away PKI), never a package above them (a tsa test
		// that needed proof would hide the cycle the table forbids).
		testAllowed := append(append(slices.Clone(allowed), testOnly...), p.ImportPath, "pec/internal/devpki")
		testAllowed = append(testAllowed, testExtra[p.ImportPath]...)
		for _, imp := range append(slices.Clone(p.TestImports), p.XTestImports...) {
			if imp != "pec" && !strings.HasPrefix(imp, "pec/") {
				continue
			}
			if !slices.Contains(testAllowed, imp) {
				t.Errorf("a test of %s imports %s: against the dependency direction (allowed: %v)", p.ImportPath, imp, testAllowed)
			}
		}
	}
	if seen < 5 {
		t.Fatalf("go list saw only %d packages", seen)
	}
}
