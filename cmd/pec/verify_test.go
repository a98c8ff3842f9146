package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rfc9216 is the shared copy of the RFC 9216 samples, read in place.
const rfc9216 = "../../../shared/testdata/cms-rfc9216"

// TestVerifyRFC9216: pec verify, with certvalidation's documentSigning
// check as the API has it, passes every signed sample of RFC 9216 (made
// by another implementation), Ed25519 included; the sample without
// certificates passes once --certs gives them, and not before.
func TestVerifyRFC9216(t *testing.T) {
	roots := []string{
		"--roots", filepath.Join(rfc9216, "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem"),
		"--roots", filepath.Join(rfc9216, "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem"),
		"--revocation", "none",
	}
	certs := []string{
		"--certs", filepath.Join(rfc9216, "certs-and-keys/lamps-alice.crt"),
		"--certs", filepath.Join(rfc9216, "certs-and-keys/lamps-carlos.crt"),
	}
	content := filepath.Join(t.TempDir(), "content.txt")
	if err := writeString(content, "This is some sample content."); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout (exit 0) or stderr
	}{
		{"signedByAliceRSA", []string{"pem-encoded/signedByAliceRSA.pem"}, 0, "TOTAL-PASSED (CMS, 1 signature(s)"},
		{"signedByAliceRSAPSS", []string{"binary-files/signedByAliceRSAPSS.p7m"}, 0, "algorithms: SHA-256, RSA-PSS"},
		{"signedByCarlosEd25519", []string{"binary-files/signedByCarlosEd25519.p7m"}, 0, "algorithms: SHA-512, Ed25519"},
		{"signedByCarlosDetached", []string{"--data", content, "binary-files/signedByCarlosDetached.p7m"}, 0, "TOTAL-PASSED"},
		{"signedByAliceAndCarlosNoCerts", append(append([]string{}, certs...), "binary-files/signedByAliceAndCarlosNoCerts.p7m"), 0, "TOTAL-PASSED (CMS, 2 signature(s)"},
		{"signedByAliceAndCarlosNoCerts without --certs", []string{"binary-files/signedByAliceAndCarlosNoCerts.p7m"}, 1, "INDETERMINATE/NO_SIGNING_CERTIFICATE_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"verify"}, roots...)
			args = append(args, tc.args[:len(tc.args)-1]...)
			args = append(args, filepath.Join(rfc9216, tc.args[len(tc.args)-1]))
			var stdout, stderr bytes.Buffer
			code := run(args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			got := stdout.String()
			if tc.code != 0 {
				got = stderr.String()
			}
			if !strings.Contains(got, tc.out) {
				t.Fatalf("%q not in\n%s", tc.out, got)
			}
		})
	}
}

func writeString(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
