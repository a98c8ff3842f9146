package certvalidation_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/certvalidation"
	"pec/internal/certtest"
)

type smallPKI struct {
	root, inter, leaf *certtest.Issued
}

func newSmallPKI(t testing.TB) smallPKI {
	root := certtest.Root(t, certtest.CATemplate("Unit Root"), nil)
	inter := root.Issue(t, certtest.CATemplate("Unit CA"), nil)
	return smallPKI{root: root, inter: inter, leaf: inter.Issue(t, certtest.LeafTemplate("unit leaf"), nil)}
}

func TestResultCache(t *testing.T) {
	t.Parallel()
	p := newSmallPKI(t)
	reg := prometheus.NewRegistry()
	v, err := certvalidation.New(certvalidation.Config{Purposes: map[string]certvalidation.PurposeConfig{"clientAuth": {Revocation: "none"}}},
		certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeClientAuth: {p.root.Cert}}},
		certvalidation.ValidatorOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	opts := certvalidation.Options{Purpose: certvalidation.PurposeClientAuth, Intermediates: []*x509.Certificate{p.inter.Cert}}
	first, err := v.Validate(context.Background(), p.leaf.Cert, opts)
	if err != nil || first.Cached {
		t.Fatalf("%v %+v", err, first)
	}
	// The same certificate parsed again, as a new TLS handshake would.
	again, err := x509.ParseCertificate(p.leaf.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.Validate(context.Background(), again, opts)
	if err != nil || !second.Cached || !second.Valid {
		t.Fatalf("second validation: %v %+v", err, second)
	}
	if len(second.Path) != 3 || second.Path[0] != again || second.Path[1] != p.inter.Cert || !second.Path[2].Equal(p.root.Cert) {
		t.Errorf("cached report's path: %v", second.Path)
	}
	if second.ValidUntil.IsZero() || second.ValidUntil.After(p.leaf.Cert.NotAfter) {
		t.Errorf("valid until %v", second.ValidUntil)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	if got["pec_certvalidation_cache_total,cache=results,result=hit"] != 1 || got["pec_certvalidation_validations_total,purpose=clientAuth,result=valid"] != 2 {
		t.Errorf("metrics: %v", got)
	}
	// At a given time, never from the cache.
	third, err := v.Validate(context.Background(), again, certvalidation.Options{Purpose: certvalidation.PurposeClientAuth, Intermediates: opts.Intermediates, At: time.Now()})
	if err != nil || third.Cached {
		t.Fatalf("%v %+v", err, third)
	}
}

func TestCallErrors(t *testing.T) {
	t.Parallel()
	p := newSmallPKI(t)
	v, err := certvalidation.New(certvalidation.Config{}, certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeAny: {p.root.Cert}}}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		leaf *x509.Certificate
		opts certvalidation.Options
		want error
	}{
		"no certificate":   {nil, certvalidation.Options{}, certvalidation.ErrBadOptions},
		"unknown purpose":  {p.leaf.Cert, certvalidation.Options{Purpose: "codeSigning"}, certvalidation.ErrBadOptions},
		"unknown policy":   {p.leaf.Cert, certvalidation.Options{Revocation: "maybe"}, certvalidation.ErrBadOptions},
		"no trust anchors": {p.leaf.Cert, certvalidation.Options{Purpose: certvalidation.PurposeTimeStamping}, certvalidation.ErrNoTrustAnchors},
	} {
		rep, err := v.Validate(context.Background(), tc.leaf, tc.opts)
		if !errors.Is(err, tc.want) || rep != nil {
			t.Errorf("%s: %v (report %v), want %v", name, err, rep != nil, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (certvalidation.Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	bad := certvalidation.Config{
		Purposes:   map[string]certvalidation.PurposeConfig{"codeSigning": {}, "clientAuth": {Revocation: "sometimes"}},
		Fetch:      certvalidation.FetchConfig{Timeout: -time.Second, MaxCRLBytes: -1},
		Revocation: certvalidation.RevocationConfig{MaxAge: -time.Hour},
		Cache:      certvalidation.CacheConfig{Results: -2},
		Limits:     certvalidation.Limits{MaxDepth: 1, MaxCandidates: -1},
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`certvalidation.purposes.codeSigning: unknown purpose "codeSigning"`,
		`certvalidation.purposes.clientAuth.revocation: unknown revocation policy "sometimes"`,
		"certvalidation.fetch.timeout: must not be negative",
		"certvalidation.fetch.max_crl_bytes: must not be negative",
		"certvalidation.revocation.max_age: must not be negative",
		"certvalidation.cache.results:",
		"certvalidation.limits.max_depth: must be at least 2",
		"certvalidation.limits.max_candidates: must not be negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	p := newSmallPKI(t)
	dir := t.TempDir()
	rootsDir := filepath.Join(dir, "roots")
	if err := os.Mkdir(rootsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	certtest.WritePEM(t, rootsDir, "root.pem", p.root.Cert)
	if err := os.WriteFile(filepath.Join(rootsDir, "README"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "inter.der"), p.inter.Cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := certvalidation.Config{
		Purposes:      map[string]certvalidation.PurposeConfig{"clientAuth": {Roots: []string{"roots"}, Revocation: "none"}},
		Intermediates: []string{"inter.der"},
	}
	cfg.ResolvePaths(dir)
	v, err := certvalidation.Load(cfg, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Anchors(certvalidation.PurposeClientAuth); len(got) != 1 || !got[0].Equal(p.root.Cert) {
		t.Fatalf("anchors: %v", got)
	}
	// The intermediate comes from the configuration, not the request.
	if _, err := v.Validate(context.Background(), p.leaf.Cert, certvalidation.Options{Purpose: certvalidation.PurposeClientAuth}); err != nil {
		t.Fatal(err)
	}

	missing := certvalidation.Config{Purposes: map[string]certvalidation.PurposeConfig{"timeStamping": {Roots: []string{filepath.Join(dir, "nosuch.pem")}}}, CRLs: []string{filepath.Join(dir, "inter.der")}}
	_, err = certvalidation.Load(missing, certvalidation.ValidatorOptions{})
	if err == nil || !strings.Contains(err.Error(), "certvalidation.purposes.timeStamping.roots:") || !strings.Contains(err.Error(), "certvalidation.crls:") {
		t.Fatalf("faults not named: %v", err)
	}
}

func TestParseInputs(t *testing.T) {
	t.Parallel()
	p := newSmallPKI(t)
	certs, err := certvalidation.ParseCertificates(certtest.PEM(p.leaf.Cert, p.inter.Cert))
	if err != nil || len(certs) != 2 || !certs[0].Equal(p.leaf.Cert) {
		t.Fatalf("PEM chain: %v %d", err, len(certs))
	}
	if certs, err := certvalidation.ParseCertificates(p.leaf.Cert.Raw); err != nil || len(certs) != 1 {
		t.Fatalf("DER: %v", err)
	}
	for name, data := range map[string][]byte{
		"empty":         nil,
		"garbage":       []byte("hello"),
		"PEM, no cert":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"truncated DER": p.leaf.Cert.Raw[:40],
	} {
		if _, err := certvalidation.ParseCertificates(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := certvalidation.ParseCRLs(data); err == nil {
			t.Errorf("%s: accepted as a CRL", name)
		}
	}
}

func TestReportJSON(t *testing.T) {
	t.Parallel()
	p := newSmallPKI(t)
	v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Offline: true}}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := v.Validate(context.Background(), p.leaf.Cert, certvalidation.Options{
		Roots: []*x509.Certificate{p.root.Cert}, Intermediates: []*x509.Certificate{p.inter.Cert}, Purpose: certvalidation.PurposeClientAuth,
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Valid bool `json:"valid"`
		Chain []struct {
			DER         []byte `json:"der"`
			TrustAnchor bool   `json:"trust_anchor"`
		} `json:"chain"`
		Checks []certvalidation.Check `json:"checks"`
		Warn   []string               `json:"warnings"`
	}
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Valid || len(back.Chain) != 3 || string(back.Chain[0].DER) != string(p.leaf.Cert.Raw) || !back.Chain[2].TrustAnchor {
		t.Fatalf("%s", data)
	}
	// Revocation prefer, offline, nothing at hand: a warning per certificate.
	if len(back.Warn) != 2 {
		t.Errorf("warnings: %v", back.Warn)
	}
	names := map[string]int{}
	for _, c := range back.Checks {
		names[c.Name]++
	}
	for _, want := range []string{"signature", "validity", "basic_constraints", "ext_key_usage", "revocation"} {
		if names[want] == 0 {
			t.Errorf("no %s check in %s", want, data)
		}
	}
}

// TestFetchHonoursContext: a caller that gives up does not wait for a
// slow distribution point.
func TestFetchHonoursContext(t *testing.T) {
	t.Parallel()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	root := certtest.Root(t, certtest.CATemplate("Slow Root"), nil)
	tmpl := certtest.LeafTemplate("slow")
	tmpl.CRLDistributionPoints = []string{slow.URL + "/ca.crl"}
	leaf := root.Issue(t, tmpl, nil)
	// The shared fetch itself stops at the fetch timeout, whoever waits.
	v, err := certvalidation.New(certvalidation.Config{Fetch: certvalidation.FetchConfig{Timeout: time.Second}}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = v.Validate(ctx, leaf.Cert, certvalidation.Options{Roots: []*x509.Certificate{root.Cert}, Revocation: certvalidation.RevocationRequire})
	if reasonOf(err) != certvalidation.ReasonRevocationUnknown {
		t.Fatalf("want revocation_unknown, got %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}
