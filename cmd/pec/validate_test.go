package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"pec/internal/certtest"
)

// TestValidateTable holds `pec validate` to the path-validation table that
// package certvalidation passes: every case decided the same way, with the
// same reason, exit 0 or 1.
func TestValidateTable(t *testing.T) {
	t.Parallel()
	for _, tc := range certtest.Table(t) {
		if tc.AllowWeak {
			continue // the CLI always refuses weak algorithms
		}
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := []string{"validate", "--roots", certtest.WritePEM(t, dir, "roots.pem", tc.Roots...), "--revocation", "none", "--json"}
			if len(tc.Intermediates) > 0 {
				args = append(args, "--intermediates", certtest.WritePEM(t, dir, "inter.pem", tc.Intermediates...))
			}
			if tc.Purpose != "" {
				args = append(args, "--purpose", tc.Purpose)
			}
			if !tc.At.IsZero() {
				args = append(args, "--at", tc.At.UTC().Format(time.RFC3339))
			}
			if tc.Host != "" {
				args = append(args, "--host", tc.Host)
			}
			if tc.Email != "" {
				args = append(args, "--email", tc.Email)
			}
			args = append(args, certtest.WritePEM(t, dir, "cert.pem", append(append(tc.Chain[:0:0], tc.Leaf), tc.Chain...)...))
			var stdout, stderr bytes.Buffer
			code := run(args, strings.NewReader(""), &stdout, &stderr)
			var rep struct {
				Valid  bool   `json:"valid"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatalf("exit %d, stdout not a JSON report: %v\n%s\nstderr: %s", code, err, stdout.String(), stderr.String())
			}
			want := exitOK
			if tc.Want != "" {
				want = exitFailure
			}
			if code != want || rep.Reason != tc.Want || rep.Valid != (tc.Want == "") {
				t.Fatalf("exit %d, reason %q; want exit %d, reason %q\nstderr: %s", code, rep.Reason, want, tc.Want, stderr.String())
			}
			if tc.Want != "" && !strings.Contains(stderr.String(), "invalid ("+tc.Want+")") {
				t.Errorf("stderr does not give the reason: %s", stderr.String())
			}
		})
	}
}
