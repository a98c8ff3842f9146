package certvalidation_test

import (
	"context"
	"errors"
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
			}
			if len(rep.Candidates) < tc.MinCandidates {
				t.Errorf("%d candidate paths reported, want at least %d: %+v", len(rep.Candidates), tc.MinCandidates, rep.Candidates)
			}
		})
	}
}
