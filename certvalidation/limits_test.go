package certvalidation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
)

func validateOffline(t *testing.T, cfg certvalidation.Config, leaf *x509.Certificate, roots, inters []*x509.Certificate) (*certvalidation.Report, error, time.Duration) {
	t.Helper()
	cfg.Fetch.Offline = true
	v, err := certvalidation.New(cfg, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := v.Validate(context.Background(), leaf, certvalidation.Options{Roots: roots, Intermediates: inters, Revocation: certvalidation.RevocationNone})
	return rep, err, time.Since(start)
}

func reasonOf(err error) certvalidation.Reason {
	if e, ok := errors.AsType[*certvalidation.Error](err); ok {
		return e.Reason
	}
	return ""
}

// TestLimitsDepth: a chain longer than Limits.MaxDepth is not followed.
func TestLimitsDepth(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("Deep Root"), nil)
	ca := root
	var inters []*x509.Certificate
	for i := range 14 {
		ca = ca.Issue(t, certtest.CATemplate(fmt.Sprintf("Deep CA %d", i)), nil)
		inters = append(inters, ca.Cert)
	}
	leaf := ca.Issue(t, certtest.LeafTemplate("deep leaf"), nil)
	roots := []*x509.Certificate{root.Cert}

	rep, err, _ := validateOffline(t, certvalidation.Config{}, leaf.Cert, roots, inters)
	if reasonOf(err) != certvalidation.ReasonNoPath || !strings.Contains(rep.Detail, "longer than 10 certificates") {
		t.Fatalf("16 certificates with max depth 10: %v", err)
	}
	if _, err, _ := validateOffline(t, certvalidation.Config{Limits: certvalidation.Limits{MaxDepth: 16}}, leaf.Cert, roots, inters); err != nil {
		t.Fatalf("16 certificates with max depth 16: %v", err)
	}
}

// TestLimitsBranching: certificates that offer 4^6 = 4096 paths, none
// valid, are given up on after Limits.MaxCandidates, quickly.
func TestLimitsBranching(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("Branch Root"), nil)
	// Issuers named like the root, but with other keys: every path is
	// complete by name, and every one fails on a signature.
	fakeRoot := certtest.Root(t, certtest.CATemplate("Branch Root"), nil)
	level := []*certtest.Issued{fakeRoot}
	var inters []*x509.Certificate
	for depth := range 6 {
		var next []*certtest.Issued
		for i := range 4 {
			tmpl := certtest.CATemplate(fmt.Sprintf("Branch %d", depth))
			tmpl.SubjectKeyId = []byte(fmt.Sprintf("branch level %d", depth)) // one key identifier for all
			c := level[i%len(level)].Issue(t, tmpl, nil)
			next = append(next, c)
			inters = append(inters, c.Cert)
		}
		level = next
	}
	leaf := level[0].Issue(t, certtest.LeafTemplate("branch leaf"), nil)
	rep, err, took := validateOffline(t, certvalidation.Config{}, leaf.Cert, []*x509.Certificate{root.Cert}, inters)
	if err == nil {
		t.Fatal("valid")
	}
	if r := reasonOf(err); r != certvalidation.ReasonBadSignature && r != certvalidation.ReasonLimitExceeded {
		t.Errorf("reason %s: %v", r, err)
	}
	if n := len(rep.Candidates); n > certvalidation.DefaultMaxCandidates {
		t.Errorf("%d candidate paths validated, want at most %d", n, certvalidation.DefaultMaxCandidates)
	}
	if took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestLimitsNameConstraints: a CA with 20,000 permitted subtrees and a
// leaf with 50 names that each match only the last cost a million
// comparisons: refused at the bound.
func TestLimitsNameConstraints(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("NC Root"), nil)
	tmpl := certtest.CATemplate("Huge NC CA")
	for i := range 20000 {
		tmpl.PermittedDNSDomains = append(tmpl.PermittedDNSDomains, fmt.Sprintf("d%d.example", i))
	}
	ca := root.Issue(t, tmpl, nil)
	lt := certtest.LeafTemplate("many names")
	for i := range 50 {
		lt.DNSNames = append(lt.DNSNames, fmt.Sprintf("host%d.d19999.example", i))
	}
	leaf := ca.Issue(t, lt, nil)
	_, err, took := validateOffline(t, certvalidation.Config{}, leaf.Cert, []*x509.Certificate{root.Cert}, []*x509.Certificate{ca.Cert})
	if reasonOf(err) != certvalidation.ReasonLimitExceeded {
		t.Fatalf("want limit_exceeded, got %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}
