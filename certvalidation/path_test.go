package certvalidation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"

	"pec/certvalidation"
	"pec/internal/certtest"
)

// TestPathTable runs the path-validation table of internal/certtest (the
// one `pec validate` is also held to) through the Validator.
func TestPathTable(t *testing.T) {
	t.Parallel()
	for _, tc := range certtest.Table(t) {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			cfg := certvalidation.Config{AllowWeakAlgorithms: tc.AllowWeak, Fetch: certvalidation.FetchConfig{Offline: true}}
			v, err := certvalidation.New(cfg, certvalidation.Material{}, certvalidation.ValidatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			opts := certvalidation.Options{
				Purpose:       certvalidation.Purpose(tc.Purpose),
				At:            tc.At,
				Roots:         tc.Roots,
				Intermediates: append(tc.Chain[:len(tc.Chain):len(tc.Chain)], tc.Intermediates...),
				Revocation:    certvalidation.RevocationNone,
				Host:          tc.Host,
				Email:         tc.Email,
			}
			rep, err := v.Validate(context.Background(), tc.Leaf, opts)
			if rep == nil {
				t.Fatalf("no report: %v", err)
			}
			if tc.Want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v\ncandidates: %+v", err, rep.Candidates)
				}
				if !rep.Valid || len(rep.Chain) == 0 || !rep.Chain[len(rep.Chain)-1].TrustAnchor {
					t.Errorf("report of a valid chain: %+v", rep)
				}
			} else {
				verr, ok := errors.AsType[*certvalidation.Error](err)
				if !ok {
					t.Fatalf("want %s, got %v", tc.Want, err)
				}
				if string(verr.Reason) != tc.Want || rep.Valid || rep.Reason != verr.Reason {
					t.Fatalf("want %s, got %v (report reason %q)\ncandidates: %+v", tc.Want, err, rep.Reason, rep.Candidates)
				}
				if tc.Rule != "" && !strings.HasPrefix(verr.Detail, tc.Rule+": ") {
					t.Fatalf("want the rule %s, got %v", tc.Rule, err)
				}
			}
			if len(rep.Candidates) < tc.MinCandidates {
				t.Errorf("%d candidate paths reported, want at least %d: %+v", len(rep.Candidates), tc.MinCandidates, rep.Candidates)
			}
		})
	}
}

// TestPathTableRelaxed: each profile rule of the table can be relaxed for
// the case's trust anchor, and then only that rule lets the certificate
// through (with a warning check saying so); relaxing all the others does
// not.
func TestPathTableRelaxed(t *testing.T) {
	t.Parallel()
	for _, tc := range certtest.Table(t) {
		rule, err := certvalidation.ParseProfileCheck(tc.Rule)
		if err != nil {
			continue // not a relaxable rule (name_syntax) or not a profile case
		}
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			validate := func(checks []certvalidation.ProfileCheck) (*certvalidation.Report, error) {
				m := certvalidation.Material{Relax: []certvalidation.Relaxation{{Anchors: tc.Roots, Checks: checks}}}
				v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Offline: true}}, m, certvalidation.ValidatorOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return v.Validate(context.Background(), tc.Leaf, certvalidation.Options{
					Purpose: certvalidation.Purpose(tc.Purpose), Roots: tc.Roots, Revocation: certvalidation.RevocationNone,
					Intermediates: append(tc.Chain[:len(tc.Chain):len(tc.Chain)], tc.Intermediates...),
				})
			}
			others := slices.DeleteFunc(slices.Clone(certvalidation.AllProfileChecks), func(c certvalidation.ProfileCheck) bool { return c == rule })
			if _, err := validate(others); reasonOf(err) != certvalidation.ReasonMalformedCertificate {
				t.Fatalf("every other rule relaxed: want malformed_certificate, got %v", err)
			}
			rep, err := validate(certvalidation.AllProfileChecks)
			if err != nil {
				t.Fatalf("every rule relaxed: %v", err)
			}
			warned := false
			for _, c := range rep.Checks {
				warned = warned || c.Status == certvalidation.StatusWarning && strings.Contains(c.Detail, "relaxed for this trust anchor: "+string(rule)+": ")
			}
			if !warned {
				t.Errorf("no warning check for the relaxed rule: %+v", rep.Checks)
			}
			// Relaxed for another anchor only: refused.
			other := certtest.Root(t, certtest.CATemplate("Other anchor"), nil)
			m := certvalidation.Material{Relax: []certvalidation.Relaxation{{Anchors: []*x509.Certificate{other.Cert}, Checks: certvalidation.AllProfileChecks}}}
			v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Offline: true}}, m, certvalidation.ValidatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Validate(context.Background(), tc.Leaf, certvalidation.Options{
				Purpose: certvalidation.Purpose(tc.Purpose), Roots: tc.Roots, Revocation: certvalidation.RevocationNone,
				Intermediates: append(tc.Chain[:len(tc.Chain):len(tc.Chain)], tc.Intermediates...),
			})
			if reasonOf(err) != certvalidation.ReasonMalformedCertificate {
				t.Errorf("relaxed for another anchor: want malformed_certificate, got %v", err)
			}
		})
	}
}
