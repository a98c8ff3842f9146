package certvalidation_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
)

// pkitsDir is NIST PKITS as packaged in ../shared/testdata (read in place,
// never copied: see its README).
const pkitsDir = "../../shared/testdata/pkits"

type pkitsCase struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Cert       string   `json:"cert"`
	OtherCerts []string `json:"other_certs"`
	CRLs       []string `json:"crls"`
	Revocation *bool    `json:"revocation"`
	Error      *struct {
		Class string `json:"class"`
		Msg   string `json:"msg_regex"`
	} `json:"error"`
	Params struct {
		UserInitialPolicySet        []string `json:"user_initial_policy_set"`
		InitialExplicitPolicy       bool     `json:"initial_explicit_policy"`
		InitialPolicyMappingInhibit bool     `json:"initial_policy_mapping_inhibit"`
		InitialAnyPolicyInhibit     bool     `json:"initial_any_policy_inhibit"`
	} `json:"params"`
}

// pkitsKnownFailures lists the cases this package is known to decide
// against NIST's expected result, with why. Empty: all 246 pass.
var pkitsKnownFailures = map[string]string{}

// pkitsReasons maps the words of NIST's expected messages (as pyHanko
// words them) to the Reason this package must give.
var pkitsReasons = []struct {
	text   string
	reason certvalidation.Reason
}{
	{"signature of", certvalidation.ReasonBadSignature},
	{"is not valid until", certvalidation.ReasonNotYetValid},
	{"expired", certvalidation.ReasonExpired},
	{"issuer name could not be matched", certvalidation.ReasonNoPath},
	{"is not a CA", certvalidation.ReasonNotCA},
	{"maximum path length", certvalidation.ReasonPathLength},
	{"not allowed to sign certificates", certvalidation.ReasonKeyUsage},
	{"no valid set of policies", certvalidation.ReasonPolicy},
	{"policy mapping for the \"any policy\"", certvalidation.ReasonPolicy},
	{"namespace", certvalidation.ReasonNameConstraints},
	{"unsupported critical extension", certvalidation.ReasonCriticalExtension},
}

func readPKITS(t testing.TB) []pkitsCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pkitsDir, "pkits.json"))
	if err != nil {
		t.Fatalf("PKITS is expected in %s (../shared beside the repository): %v", pkitsDir, err)
	}
	var cases []pkitsCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

func pkitsCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	der, err := os.ReadFile(filepath.Join(pkitsDir, "certs", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := certvalidation.ParseCertificate(der)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func pkitsCRL(t testing.TB, name string) []byte {
	t.Helper()
	der, err := os.ReadFile(filepath.Join(pkitsDir, "crls", name))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// pkitsRelaxed are the issuance rules of RFC 5280 section 4 that PKITS
// certificates break, relaxed for its trust anchor as Config.Relax lets a
// legacy PKI do. PKITS tests the path validation of section 6, and these
// rules are not part of it: 16 of its CA certificates mark policy
// constraints non-critical (section 4.2.1.11 requires critical since RFC
// 5280; 53 cases go through them), test 4.6.4 expects a CA whose basic
// constraints are not critical to be accepted (section 4.2.1.9 requires
// critical), and test 4.4.15 expects a certificate with a negative serial
// number to be refused as revoked, which section 4.1.2.2 asks relying
// parties to handle "gracefully". TestPKITSStrictProfile checks that with
// no relaxation exactly those cases are refused, on exactly those rules.
var pkitsRelaxed = map[certvalidation.ProfileCheck]int{
	certvalidation.ProfilePolicyConstraints:        53,
	certvalidation.ProfileBasicConstraintsCritical: 1,
	certvalidation.ProfileSerialNumber:             1,
}

func pkitsValidator(t *testing.T, anchor *x509.Certificate, relax []certvalidation.ProfileCheck) *certvalidation.Validator {
	t.Helper()
	cfg := certvalidation.Config{
		AllowWeakAlgorithms: true, // PKITS signs with SHA-1 and RSA-1024
		Fetch:               certvalidation.FetchConfig{Offline: true},
		Cache:               certvalidation.CacheConfig{Results: -1},
	}
	var m certvalidation.Material
	if len(relax) > 0 {
		m.Relax = []certvalidation.Relaxation{{Anchors: []*x509.Certificate{anchor}, Checks: relax}}
	}
	v, err := certvalidation.New(cfg, m, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pkitsDecide validates one case and returns the error, and whether the
// decision is the one NIST expects (with why not).
func pkitsDecide(t *testing.T, v *certvalidation.Validator, anchor *x509.Certificate, tc pkitsCase) (error, string) {
	t.Helper()
	leaf := pkitsCert(t, tc.Cert)
	opts := certvalidation.Options{
		At:                    time.Date(2022, 5, 1, 0, 0, 0, 0, time.UTC),
		Roots:                 []*x509.Certificate{anchor},
		CRLs:                  [][]byte{pkitsCRL(t, "TrustAnchorRootCRL.crl")},
		Revocation:            certvalidation.RevocationRequire,
		InitialPolicies:       tc.Params.UserInitialPolicySet,
		RequireExplicitPolicy: tc.Params.InitialExplicitPolicy,
		InhibitPolicyMapping:  tc.Params.InitialPolicyMappingInhibit,
		InhibitAnyPolicy:      tc.Params.InitialAnyPolicyInhibit,
	}
	if tc.Revocation != nil && !*tc.Revocation {
		opts.Revocation = certvalidation.RevocationNone
	}
	for _, name := range tc.OtherCerts {
		opts.Intermediates = append(opts.Intermediates, pkitsCert(t, name))
	}
	for _, name := range tc.CRLs {
		opts.CRLs = append(opts.CRLs, pkitsCRL(t, name))
	}
	rep, err := v.Validate(context.Background(), leaf, opts)
	if rep == nil {
		t.Fatalf("no report: %v", err)
	}
	if tc.Error == nil {
		if err != nil {
			return err, fmt.Sprintf("want valid, got %v\ncandidates: %+v", err, rep.Candidates)
		}
		return nil, ""
	}
	if err == nil {
		return nil, fmt.Sprintf("want %s (%s), got valid", tc.Error.Class, tc.Error.Msg)
	}
	verr, ok := errors.AsType[*certvalidation.Error](err)
	if !ok {
		return err, fmt.Sprintf("error %v is not a *certvalidation.Error", err)
	}
	var want []certvalidation.Reason
	switch tc.Error.Class {
	case "RevokedError":
		want = []certvalidation.Reason{certvalidation.ReasonRevoked}
	case "InsufficientRevinfoError", "StaleRevinfoError":
		want = []certvalidation.Reason{certvalidation.ReasonRevocationUnknown}
	default:
		// A path validation error: the reason must be the one NIST's
		// message names.
		for _, m := range pkitsReasons {
			if strings.Contains(tc.Error.Msg, m.text) {
				want = append(want, m.reason)
			}
		}
		if len(want) == 0 {
			t.Fatalf("no expected reason for %q", tc.Error.Msg)
		}
	}
	if !slices.Contains(want, verr.Reason) {
		return err, fmt.Sprintf("want %s (%s), got %v", tc.Error.Class, tc.Error.Msg, err)
	}
	return err, ""
}

// TestPKITS runs the 246 path-validation cases of NIST PKITS, one t.Run
// each, policy inputs included, and reports the score. The expected error
// class is checked too: a revoked certificate must be refused as revoked,
// missing or stale revocation data as revocation_unknown.
func TestPKITS(t *testing.T) {
	cases := readPKITS(t)
	if len(cases) != 246 {
		t.Fatalf("%d PKITS cases, want 246", len(cases))
	}
	anchor := pkitsCert(t, "TrustAnchorRootCertificate.crt")
	v := pkitsValidator(t, anchor, slices.Collect(maps.Keys(pkitsRelaxed)))
	passed := 0
	var failed []string
	for _, tc := range cases {
		ok := t.Run(tc.ID+"_"+tc.Name, func(t *testing.T) {
			if why, known := pkitsKnownFailures[tc.Name]; known {
				t.Skipf("known failure: %s", why)
			}
			if _, why := pkitsDecide(t, v, anchor, tc); why != "" {
				t.Fatal(why)
			}
		})
		if ok {
			passed++
		} else {
			failed = append(failed, tc.ID+" "+tc.Name)
		}
	}
	t.Logf("PKITS: %d of %d cases decided as NIST expects (OpenSSL 3.0: 244)", passed, len(cases))
	if len(failed) > 0 {
		t.Logf("failed: %v", failed)
	}
}

// TestPKITSStrictProfile runs PKITS with every profile check on: the cases
// decided otherwise than NIST expects must be exactly those that go
// through a certificate breaking a rule of pkitsRelaxed, refused as
// malformed_certificate on that rule.
func TestPKITSStrictProfile(t *testing.T) {
	cases := readPKITS(t)
	anchor := pkitsCert(t, "TrustAnchorRootCertificate.crt")
	v := pkitsValidator(t, anchor, nil)
	got := map[certvalidation.ProfileCheck]int{}
	for _, tc := range cases {
		err, why := pkitsDecide(t, v, anchor, tc)
		if why == "" {
			continue
		}
		verr, ok := errors.AsType[*certvalidation.Error](err)
		if !ok || verr.Reason != certvalidation.ReasonMalformedCertificate {
			t.Errorf("%s %s: %s", tc.ID, tc.Name, why)
			continue
		}
		rule, _, _ := strings.Cut(verr.Detail, ":")
		if _, relaxed := pkitsRelaxed[certvalidation.ProfileCheck(rule)]; !relaxed {
			t.Errorf("%s %s: refused on a rule PKITS is not known to break: %v", tc.ID, tc.Name, err)
		}
		got[certvalidation.ProfileCheck(rule)]++
	}
	if !maps.Equal(got, pkitsRelaxed) {
		t.Errorf("cases refused by rule: %v, want %v", got, pkitsRelaxed)
	}
}
