package certvalidation_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
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

// boundCase is a validation that exceeds one bound of the work a
// validation may cause: it must fail closed, as limit_exceeded with the
// bound named in the detail, quickly; with the bound raised (within),
// the same validation gives the verdict the bound kept from it.
type boundCase struct {
	name    string
	bound   string // in the detail
	run     func(t *testing.T, within bool) (*certvalidation.Report, error)
	verdict certvalidation.Reason // within the bound: "" (valid) or this reason
}

// TestLimits: each bound of certvalidation.Limits, and the fixed ones
// (the policy graph, the intermediates a request may give), stops a
// pathological input with a named reason, never with a valid verdict.
func TestLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []boundCase{
		{name: "max_depth", bound: "limits.max_depth", run: deepChain(false)},
		{name: "max_depth behind a wrong guess", bound: "limits.max_depth", run: deepChain(true)},
		{name: "max_candidates", bound: "limits.max_candidates: more than 16 candidate paths", run: crossCertifiedMesh},
		{name: "max_candidates path-building steps", bound: "limits.max_candidates: more than 64 path-building steps", run: deadEndMesh, verdict: certvalidation.ReasonNoPath},
		{name: "max_name_comparisons", bound: "limits.max_name_comparisons: more than 100000 name constraint comparisons", run: subtreesTimesNames},
		{name: "policy graph", bound: "policy graph bound: more than 1000 certificate policies", run: manyPolicies},
		{name: "policy graph through mappings", bound: "policy graph bound: more than 1000 certificate policies", run: mappedPolicies},
		{name: "given intermediates", bound: "intermediates bound: only the first 64 of 65", run: manyIntermediates},
		{name: "max_fetches", bound: "limits.max_fetches: fetch budget exhausted", run: fetchBudget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			rep, err := tc.run(t, false)
			took := time.Since(start)
			if err == nil || rep.Valid {
				t.Fatalf("valid beyond the bound (%+v)", rep.Chain)
			}
			if r := reasonOf(err); r != certvalidation.ReasonLimitExceeded || rep.Reason != r {
				t.Fatalf("reason %s (report %s), want %s: %v", r, rep.Reason, certvalidation.ReasonLimitExceeded, err)
			}
			if !strings.Contains(err.Error(), tc.bound) || !strings.Contains(rep.Detail, tc.bound) {
				t.Errorf("the detail does not name the bound %q: %v", tc.bound, err)
			}
			if took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			rep, err = tc.run(t, true)
			if got := reasonOf(err); got != tc.verdict || (err == nil) != rep.Valid {
				t.Errorf("within the bound: %v, want %q", err, tc.verdict)
			}
		})
	}
}

// deepChain: root, 14 CAs, leaf: 16 certificates, over the default depth
// of 10. With wrongGuess, a certificate of the leaf's issuer name with
// another key gives a short complete path whose signature fails: the
// verdict is still the bound, not that failure.
func deepChain(wrongGuess bool) func(t *testing.T, within bool) (*certvalidation.Report, error) {
	return func(t *testing.T, within bool) (*certvalidation.Report, error) {
		root := certtest.Root(t, certtest.CATemplate("Deep Root"), nil)
		ca := root
		var inters []*x509.Certificate
		for i := range 14 {
			ca = ca.Issue(t, certtest.CATemplate(fmt.Sprintf("Deep CA %d", i)), nil)
			inters = append(inters, ca.Cert)
		}
		leaf := ca.Issue(t, certtest.LeafTemplate("deep leaf"), nil)
		if wrongGuess {
			inters = append(inters, root.Issue(t, certtest.CATemplate("Deep CA 13"), nil).Cert)
		}
		cfg := certvalidation.Config{}
		if within {
			cfg.Limits.MaxDepth = 16
		}
		rep, err, _ := validateOffline(t, cfg, leaf.Cert, []*x509.Certificate{root.Cert}, inters)
		if wrongGuess && !within && !strings.Contains(rep.Detail, "the closest candidate path failed: bad_signature: signature by") {
			t.Errorf("the closest candidate is not reported: %s", rep.Detail)
		}
		return rep, err
	}
}

// crossCertifiedMesh: the leaf's CA is certified by five CAs B1..B5,
// each of them by four CAs C1..C4, each of those by the root: twenty
// candidate paths. The certificates of B1..B4 have expired, so the first
// valid path is the seventeenth, one past the default of 16.
func crossCertifiedMesh(t *testing.T, within bool) (*certvalidation.Report, error) {
	root := certtest.Root(t, certtest.CATemplate("Mesh Root"), nil)
	var cs []*certtest.Issued
	var inters []*x509.Certificate
	for k := range 4 {
		c := root.Issue(t, certtest.CATemplate(fmt.Sprintf("Mesh C%d", k+1)), nil)
		cs = append(cs, c)
		inters = append(inters, c.Cert)
	}
	aKey := certtest.Key(t)
	var a *certtest.Issued
	for j := range 5 {
		bKey := certtest.Key(t)
		var b *certtest.Issued
		for _, c := range cs {
			tmpl := certtest.CATemplate(fmt.Sprintf("Mesh B%d", j+1))
			if j < 4 {
				tmpl.NotAfter = time.Now().Add(-time.Hour)
			}
			b = c.Issue(t, tmpl, bKey)
			inters = append(inters, b.Cert)
		}
		a = b.Issue(t, certtest.CATemplate("Mesh A"), aKey)
		inters = append(inters, a.Cert)
	}
	leaf := a.Issue(t, certtest.LeafTemplate("mesh leaf"), nil)
	cfg := certvalidation.Config{}
	if within {
		cfg.Limits.MaxCandidates = 17
	}
	rep, err, _ := validateOffline(t, cfg, leaf.Cert, []*x509.Certificate{root.Cert}, inters)
	if !within && len(rep.Candidates) != certvalidation.DefaultMaxCandidates {
		t.Errorf("%d candidate paths tried, want %d", len(rep.Candidates), certvalidation.DefaultMaxCandidates)
	}
	return rep, err
}

// deadEndMesh: four levels of three CAs under one name each, the top
// level issued by a CA nobody has: 3+9+27+81 = 120 partial paths, none
// complete. With max_candidates 1 the search stops after 64 steps;
// within the default bound (1024 steps) it ends as no_path.
func deadEndMesh(t *testing.T, within bool) (*certvalidation.Report, error) {
	nowhere := certtest.Root(t, certtest.CATemplate("Nowhere"), nil)
	level := []*certtest.Issued{nowhere}
	var inters []*x509.Certificate
	for d := 4; d >= 1; d-- {
		var next []*certtest.Issued
		for i := range 3 {
			c := level[i%len(level)].Issue(t, certtest.CATemplate(fmt.Sprintf("Dead End %d", d)), nil)
			next = append(next, c)
			inters = append(inters, c.Cert)
		}
		level = next
	}
	leaf := level[0].Issue(t, certtest.LeafTemplate("dead-end leaf"), nil)
	cfg := certvalidation.Config{Limits: certvalidation.Limits{MaxCandidates: 1}}
	if within {
		cfg = certvalidation.Config{}
	}
	other := certtest.Root(t, certtest.CATemplate("Unrelated Root"), nil)
	rep, err, _ := validateOffline(t, cfg, leaf.Cert, []*x509.Certificate{other.Cert}, inters)
	return rep, err
}

// subtreesTimesNames: a CA with 200 permitted DNS subtrees and a leaf
// with 600 names, each within only the last subtree: 120,000 comparisons,
// over the default of 100,000.
func subtreesTimesNames(t *testing.T, within bool) (*certvalidation.Report, error) {
	root := certtest.Root(t, certtest.CATemplate("NC Root"), nil)
	tmpl := certtest.CATemplate("Many Subtrees CA")
	for i := range 200 {
		tmpl.PermittedDNSDomains = append(tmpl.PermittedDNSDomains, fmt.Sprintf("d%d.example", i))
	}
	ca := root.Issue(t, tmpl, nil)
	lt := certtest.LeafTemplate("many names")
	for i := range 600 {
		lt.DNSNames = append(lt.DNSNames, fmt.Sprintf("host%d.d199.example", i))
	}
	leaf := ca.Issue(t, lt, nil)
	cfg := certvalidation.Config{}
	if within {
		cfg.Limits.MaxNameComparisons = 120000
	}
	rep, err, _ := validateOffline(t, cfg, leaf.Cert, []*x509.Certificate{root.Cert}, []*x509.Certificate{ca.Cert})
	return rep, err
}

// policy is the certificate policy 1.2.3.arc.i, in both forms.
func policy(t *testing.T, arc, i uint64) (x509.OID, asn1.ObjectIdentifier) {
	t.Helper()
	oid, err := x509.OIDFromInts([]uint64{1, 2, 3, arc, i})
	if err != nil {
		t.Fatal(err)
	}
	return oid, asn1.ObjectIdentifier{1, 2, 3, int(arc), int(i)}
}

func policyOIDs(t *testing.T, arc uint64, n int) []x509.OID {
	var out []x509.OID
	for i := range n {
		oid, _ := policy(t, arc, uint64(i))
		out = append(out, oid)
	}
	return out
}

// manyPolicies: a CA asserting 1001 certificate policies puts 1001 nodes
// at one depth of the valid_policy_graph; 1000 are within the bound.
func manyPolicies(t *testing.T, within bool) (*certvalidation.Report, error) {
	root := certtest.Root(t, certtest.CATemplate("Policy Root"), nil)
	tmpl := certtest.CATemplate("Many Policies CA")
	tmpl.Policies = policyOIDs(t, 1, 1001)
	if within {
		tmpl.Policies = tmpl.Policies[:1000]
	}
	ca := root.Issue(t, tmpl, nil)
	lt := certtest.LeafTemplate("policy leaf")
	lt.Policies = tmpl.Policies[:1]
	leaf := ca.Issue(t, lt, nil)
	rep, err, _ := validateOffline(t, certvalidation.Config{}, leaf.Cert, []*x509.Certificate{root.Cert}, []*x509.Certificate{ca.Cert})
	return rep, err
}

// mappedPolicies: the growth RFC 9618 bounds. A CA with 40 policies maps
// each to 30 others (1200 expected policies); the CA below it asserts
// anyPolicy, which gives each expected policy a node: 1200. With 33
// policies (990 nodes) it is within the bound.
func mappedPolicies(t *testing.T, within bool) (*certvalidation.Report, error) {
	n := 40
	if within {
		n = 33
	}
	issuerPolicies := policyOIDs(t, 2, n)
	type mapping struct{ Issuer, Subject asn1.ObjectIdentifier }
	var mappings []mapping
	var subjects []x509.OID
	for i := range issuerPolicies {
		_, ip := policy(t, 2, uint64(i))
		for k := range 30 {
			s, sp := policy(t, uint64(100+i), uint64(k))
			mappings = append(mappings, mapping{ip, sp})
			subjects = append(subjects, s)
		}
	}
	der, err := asn1.Marshal(mappings)
	if err != nil {
		t.Fatal(err)
	}
	root := certtest.Root(t, certtest.CATemplate("Mapping Root"), nil)
	tmpl := certtest.CATemplate("Mapping CA")
	tmpl.Policies = issuerPolicies
	tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 33}, Critical: true, Value: der}}
	mapper := root.Issue(t, tmpl, nil)
	anyTmpl := certtest.CATemplate("Any Policy CA")
	anyPolicy, _ := x509.OIDFromInts([]uint64{2, 5, 29, 32, 0})
	anyTmpl.Policies = []x509.OID{anyPolicy}
	anyCA := mapper.Issue(t, anyTmpl, nil)
	lt := certtest.LeafTemplate("mapped policy leaf")
	lt.Policies = subjects[:1]
	leaf := anyCA.Issue(t, lt, nil)
	rep, err, _ := validateOffline(t, certvalidation.Config{}, leaf.Cert, []*x509.Certificate{root.Cert}, []*x509.Certificate{mapper.Cert, anyCA.Cert})
	return rep, err
}

// manyIntermediates: the leaf's issuer comes 65th of the intermediates a
// request gives; only 64 are read.
func manyIntermediates(t *testing.T, within bool) (*certvalidation.Report, error) {
	root := certtest.Root(t, certtest.CATemplate("Crowd Root"), nil)
	other := root.Issue(t, certtest.CATemplate("Crowd Other CA"), nil)
	var inters []*x509.Certificate
	for range 64 {
		inters = append(inters, other.Cert)
	}
	if within {
		inters = inters[:63]
	}
	ca := root.Issue(t, certtest.CATemplate("Crowd CA"), nil)
	inters = append(inters, ca.Cert)
	leaf := ca.Issue(t, certtest.LeafTemplate("crowd leaf"), nil)
	rep, err, _ := validateOffline(t, certvalidation.Config{}, leaf.Cert, []*x509.Certificate{root.Cert}, inters)
	return rep, err
}

// fetchBudget: under RevocationRequire, a leaf and its CA each name a
// CRL distribution point on 127.0.0.1; with max_fetches 1 the second
// CRL is not fetched. (Under RevocationPrefer a missing CRL is a
// warning, the soft failure that policy stands for; the warning names
// the bound.)
func fetchBudget(t *testing.T, within bool) (*certvalidation.Report, error) {
	files := newFileServer(t)
	root := certtest.Root(t, certtest.CATemplate("Budget Root"), nil)
	tmpl := certtest.CATemplate("Budget CA")
	tmpl.CRLDistributionPoints = []string{files.URL + "/root.crl"}
	ca := root.Issue(t, tmpl, nil)
	lt := certtest.LeafTemplate("budget leaf")
	lt.CRLDistributionPoints = []string{files.URL + "/ca.crl"}
	leaf := ca.Issue(t, lt, nil)
	files.put("/root.crl", root.CRL(t, certtest.CRLTemplate{Number: big.NewInt(1)}))
	files.put("/ca.crl", ca.CRL(t, certtest.CRLTemplate{Number: big.NewInt(1)}))
	cfg := certvalidation.Config{Limits: certvalidation.Limits{MaxFetches: 1}}
	if within {
		cfg.Limits.MaxFetches = 2
	}
	cfg.Fetch.Timeout = 3 * time.Second
	cfg.Cache.Results = -1
	v, err := certvalidation.New(cfg, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts := certvalidation.Options{Roots: []*x509.Certificate{root.Cert}, Intermediates: []*x509.Certificate{ca.Cert}}
	if !within {
		opts.Revocation = certvalidation.RevocationPrefer
		rep, err := v.Validate(context.Background(), leaf.Cert, opts)
		if err != nil || !strings.Contains(strings.Join(rep.Warnings, "\n"), "limits.max_fetches") {
			t.Errorf("prefer: %v, warnings %q", err, rep.Warnings)
		}
	}
	v, err = certvalidation.New(cfg, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Revocation = certvalidation.RevocationRequire
	return v.Validate(context.Background(), leaf.Cert, opts)
}
