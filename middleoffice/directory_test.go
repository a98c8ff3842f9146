package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pec/evidence"
	"pec/internal/devpki"
	"pec/internal/filelock"
	"pec/middleoffice"
)

// testPKI is two CAs (the node's clients and another administration's)
// that issue client certificates.
type testPKI struct {
	ca, other *devpki.CA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	mk := func(name string) *devpki.CA {
		ca, err := devpki.NewRootCA(mustKey(t), name, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	return &testPKI{ca: mk("directory test root"), other: mk("other root")}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (p *testPKI) client(t testing.TB, ca *devpki.CA, cn, org string) *x509.Certificate {
	t.Helper()
	c, err := ca.IssueClient(mustKey(t).Public(), cn, org, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func partner(id string, roles []middleoffice.Role, rules ...middleoffice.CertificateRule) middleoffice.PartnerConfig {
	return middleoffice.PartnerConfig{Partner: middleoffice.Partner{ID: id, Name: "Partner " + id, Roles: roles, Certificates: rules}}
}

func bySubject(c *x509.Certificate, withIssuer bool) middleoffice.CertificateRule {
	r := middleoffice.CertificateRule{Subject: c.Subject.String()}
	if withIssuer {
		r.Issuer = c.Issuer.String()
	}
	return r
}

func byFingerprint(c *x509.Certificate) middleoffice.CertificateRule {
	return middleoffice.CertificateRule{Fingerprint: "sha256:" + strings.ToUpper(fingerprint(c))}
}

func openDir(t testing.TB, cfg middleoffice.Config, store middleoffice.Store, ev evidence.Appender) *middleoffice.Directory {
	t.Helper()
	d, err := middleoffice.Open(context.Background(), cfg, store, middleoffice.Options{Evidence: ev})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestResolve: each kind of rule, and their precedence.
func TestResolve(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	a := p.client(t, p.ca, "partner-a", "A")
	aElsewhere := p.client(t, p.other, "partner-a", "A") // the same subject from another CA
	b := p.client(t, p.ca, "partner-b", "B")
	bSameSubject := p.client(t, p.ca, "partner-b", "B") // renewed: another key
	c := p.client(t, p.other, "partner-c", "C")
	cFromCA := p.client(t, p.ca, "partner-c", "C")
	e := p.client(t, p.ca, "partner-c", "C") // claimed by e by fingerprint, though c claims its subject
	stranger := p.client(t, p.ca, "stranger", "S")
	gone := p.client(t, p.ca, "gone", "G")
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("partner-a", nil, bySubject(a, true)),
		partner("partner-b", nil, byFingerprint(b)),
		partner("partner-c", nil, bySubject(c, false)),
		partner("partner-e", nil, byFingerprint(e)),
		partner("gone", nil, byFingerprint(gone)),
	}}
	cfg.Partners[4].Disabled = true
	d := openDir(t, cfg, nil, nil)
	for _, tc := range []struct {
		name     string
		cert     *x509.Certificate
		want     string
		disabled bool
	}{
		{"subject and issuer", a, "partner-a", false},
		{"same subject, another issuer", aElsewhere, "", false},
		{"fingerprint", b, "partner-b", false},
		{"same subject, another certificate than the fingerprint's", bSameSubject, "", false},
		{"subject alone, from any issuer", c, "partner-c", false},
		{"subject alone, from the other issuer", cFromCA, "partner-c", false},
		{"a fingerprint wins over a subject", e, "partner-e", false},
		{"unknown certificate", stranger, "", false},
		{"disabled partner", gone, "gone", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := d.Resolve(tc.cert)
			if pr.ID() != tc.want || pr.Disabled() != tc.disabled {
				t.Fatalf("resolved to %q (disabled %v), want %q (disabled %v)", pr.ID(), pr.Disabled(), tc.want, tc.disabled)
			}
			if pr.Subject != tc.cert.Subject.String() || pr.Fingerprint != sha256.Sum256(tc.cert.Raw) {
				t.Errorf("principal names %q %x", pr.Subject, pr.Fingerprint)
			}
			if tc.want == "" && (pr.Has(middleoffice.RolePartner) || pr.Partner != nil) {
				t.Error("an unknown certificate has no partner and no role")
			}
		})
	}
}

// TestResolveCache: one certificate (one connection) resolves once, until
// the directory changes; then the next request sees the change.
func TestResolveCache(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	a := p.client(t, p.ca, "partner-a", "A")
	admin := p.client(t, p.ca, "admin", "Ops")
	d := openDir(t, middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("partner-a", nil, bySubject(a, true)),
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(admin)),
	}}, nil, &evidence.Memory{})
	first := d.Resolve(a)
	if d.Resolve(a) != first {
		t.Fatal("a second request of the same connection resolved again")
	}
	if _, err := d.SetDisabled(context.Background(), d.Resolve(admin), "partner-a", true); err != nil {
		t.Fatal(err)
	}
	after := d.Resolve(a)
	if after == first || !after.Disabled() {
		t.Fatalf("after disabling: %+v", after.Partner)
	}
	if first.Disabled() {
		t.Error("a principal already handed out changed under its holder")
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	certs := map[string]*x509.Certificate{}
	for _, n := range []string{"partner-a", "partner-b", "partner-c", "auditor", "admin", "agent", "gone", "stranger", "listed-auditor", "old-a"} {
		certs[n] = p.client(t, p.ca, n, "Org "+n)
	}
	cfg := middleoffice.Config{
		Partners: []middleoffice.PartnerConfig{
			partner("partner-a", []middleoffice.Role{middleoffice.RolePartner}, bySubject(certs["partner-a"], true), byFingerprint(certs["old-a"])),
			partner("partner-b", []middleoffice.Role{middleoffice.RolePartner}, bySubject(certs["partner-b"], true)),
			partner("partner-c", []middleoffice.Role{middleoffice.RolePartner}, bySubject(certs["partner-c"], true)),
			partner("agent", []middleoffice.Role{middleoffice.RoleAgent}, bySubject(certs["agent"], true)),
			partner("auditor", []middleoffice.Role{middleoffice.RoleAuditor}, bySubject(certs["auditor"], true)),
			partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, bySubject(certs["admin"], true)),
			partner("gone", []middleoffice.Role{middleoffice.RolePartner, middleoffice.RoleAdmin, middleoffice.RoleAuditor}, bySubject(certs["gone"], true)),
		},
		Routes: []middleoffice.Route{
			{From: []string{"partner-a"}, To: []string{"partner-b"}, Procedures: []string{"dossier"}},
			{From: []string{"partner-b"}, To: []string{"partner-a"}, Procedures: []string{"dossier"}},
			{From: []string{"*"}, To: []string{"agent"}, Procedures: []string{"casier"}, DocumentTypes: []string{"pdf"}},
			{From: []string{"partner-a", "partner-b", "partner-c"}, To: []string{"gone"}, Procedures: []string{"*"}},
		},
	}
	cfg.Partners[2].SignatureProfiles = []string{"pdf"}
	cfg.Partners[6].Disabled = true
	cfg.Partners[6].SignatureProfiles = []string{"*"}
	d := openDir(t, cfg, nil, nil)
	pol, err := middleoffice.NewPolicy(d, middleoffice.Rules{
		SignProfiles: map[string][]string{
			"default": {"partner-a", "stranger", "gone"}, // a partner id, a common name, a disabled partner
			"subject": {certs["partner-b"].Subject.String()},
			"fp":      {"sha256:" + fingerprint(certs["stranger"])},
			"pdf":     {},
		},
		Auditors: []string{certs["listed-auditor"].Subject.String(), strings.ToUpper(fingerprint(certs["stranger"]))[:10]},
	})
	if err != nil {
		t.Fatal(err)
	}
	naming := func(names ...string) *evidence.Record {
		r := &evidence.Record{Type: evidence.SubmissionAccepted}
		for _, n := range names {
			r.Actors = append(r.Actors, evidence.ActorFromCertificate("sender", certs[n]))
		}
		return r
	}
	M := middleoffice.ActionSign
	for _, tc := range []struct {
		name   string
		who    string
		action middleoffice.Action
		res    middleoffice.Resource
		allow  bool
	}{
		{"allowed_clients names the partner id", "partner-a", M, middleoffice.Resource{Profile: "default"}, true},
		{"allowed_clients names an unknown certificate's common name", "stranger", M, middleoffice.Resource{Profile: "default"}, true},
		{"allowed_clients by subject", "partner-b", M, middleoffice.Resource{Profile: "subject"}, true},
		{"allowed_clients by fingerprint", "stranger", M, middleoffice.Resource{Profile: "fp"}, true},
		{"the partner's signature_profiles", "partner-c", M, middleoffice.Resource{Profile: "pdf"}, true},
		{"no rule for the profile", "partner-b", M, middleoffice.Resource{Profile: "default"}, false},
		{"unknown profile", "partner-a", M, middleoffice.Resource{Profile: "nosuch"}, false},
		{"a disabled partner, though named and with *", "gone", M, middleoffice.Resource{Profile: "default"}, false},
		{"auditor role reads all", "auditor", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, true},
		{"proof.auditors reads all", "listed-auditor", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, true},
		{"a partner does not read all", "partner-a", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, false},
		{"a partial fingerprint is no auditor", "stranger", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, false},
		{"a disabled auditor", "gone", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, false},
		{"a partner reads a record naming it", "partner-a", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("partner-b", "partner-a")}, true},
		{"a partner reads a record naming its older certificate", "partner-a", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("old-a")}, true},
		{"a partner does not read another's", "partner-b", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("partner-a")}, false},
		{"an auditor reads another's", "auditor", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("partner-a")}, true},
		{"an unknown certificate reads a record naming it", "stranger", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("stranger")}, true},
		{"an unknown certificate reads no other", "stranger", middleoffice.ActionReadProof, middleoffice.Resource{Record: naming("partner-a")}, false},
		{"route a to b", "partner-a", middleoffice.ActionSend, middleoffice.Resource{Recipient: "partner-b", Procedure: "dossier"}, true},
		{"route b to a", "partner-b", middleoffice.ActionSend, middleoffice.Resource{Recipient: "partner-a", Procedure: "dossier"}, true},
		{"another procedure", "partner-a", middleoffice.ActionSend, middleoffice.Resource{Recipient: "partner-b", Procedure: "casier"}, false},
		{"a sender no route names", "partner-c", middleoffice.ActionSend, middleoffice.Resource{Recipient: "partner-b", Procedure: "dossier"}, false},
		{"to oneself, no route", "partner-a", middleoffice.ActionSend, middleoffice.Resource{Recipient: "partner-a", Procedure: "dossier"}, false},
		{"any sender, the right document type", "partner-c", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier", DocumentType: "pdf"}, true},
		{"any sender, another document type", "partner-c", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier", DocumentType: "xml"}, false},
		{"a document type is required by the route", "partner-c", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier"}, false},
		{"an agent sends too", "agent", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier", DocumentType: "pdf"}, true},
		{"an unknown recipient", "partner-a", middleoffice.ActionSend, middleoffice.Resource{Recipient: "nobody", Procedure: "dossier"}, false},
		{"a disabled recipient", "partner-a", middleoffice.ActionSend, middleoffice.Resource{Recipient: "gone", Procedure: "dossier"}, false},
		{"an unknown certificate sends nothing", "stranger", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier", DocumentType: "pdf"}, false},
		{"an auditor sends nothing", "auditor", middleoffice.ActionSend, middleoffice.Resource{Recipient: "agent", Procedure: "casier", DocumentType: "pdf"}, false},
		{"admin administers", "admin", middleoffice.ActionAdminister, middleoffice.Resource{}, true},
		{"a partner does not administer", "partner-a", middleoffice.ActionAdminister, middleoffice.Resource{}, false},
		{"an unknown certificate does not administer", "stranger", middleoffice.ActionAdminister, middleoffice.Resource{}, false},
		{"a disabled admin does not administer", "gone", middleoffice.ActionAdminister, middleoffice.Resource{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pol.Authorize(d.Resolve(certs[tc.who]), tc.action, tc.res)
			if tc.allow {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			fe, ok := errors.AsType[*middleoffice.ForbiddenError](err)
			if !ok || fe.Action != tc.action || fe.Reason == "" {
				t.Fatalf("want a *ForbiddenError for %s, got %v", tc.action, err)
			}
		})
	}
	// The signature service's view: the same decision through
	// signing.Authorizer.
	if err := pol.AuthorizeSign(context.Background(), certs["partner-a"], "default"); err != nil {
		t.Error(err)
	}
	if err := pol.AuthorizeSign(context.Background(), certs["partner-b"], "default"); err == nil {
		t.Error("AuthorizeSign let partner-b use default")
	}
	if _, err := middleoffice.NewPolicy(d, middleoffice.Rules{SignProfiles: map[string][]string{"x": {"sha256:12"}}}); err == nil {
		t.Error("a malformed allowed_clients entry was taken")
	}
}

// TestChanges: every change is evidence (who, which partner, the digest of
// its new entry, the previous change), returned with its id; refused
// changes record nothing and change nothing.
func TestChanges(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	admin := p.client(t, p.ca, "admin", "Ops")
	c := p.client(t, p.ca, "partner-c", "C")
	ev := &evidence.Memory{}
	d := openDir(t, middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(admin)),
	}}, nil, ev)
	ctx := context.Background()
	by := d.Resolve(admin)

	added, err := d.Add(ctx, by, middleoffice.Partner{ID: "partner-c", Name: "Partner C", Certificates: []middleoffice.CertificateRule{bySubject(c, true)}})
	if err != nil {
		t.Fatal(err)
	}
	if added.Revision != 1 || added.EvidenceID == "" || !slices.Equal(added.Roles, []middleoffice.Role{middleoffice.RolePartner}) || added.Channel.Type != "pull" {
		t.Fatalf("added: %+v", added)
	}
	recs := ev.Records()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.ID != added.EvidenceID || r.Type != evidence.AdminAction || r.Subject != "directory.partner-added" ||
		len(r.Actors) != 1 || r.Actors[0].Role != "admin" || r.Actors[0].Fingerprint != sha256.Sum256(admin.Raw) ||
		len(r.Digests) != 1 || !bytes.Equal(r.Digests[0].Value, middleoffice.EntryDigest(added)) || attr(r, "partner") != "partner-c" {
		t.Fatalf("evidence of the addition: %+v", r)
	}
	if d.Resolve(c).ID() != "partner-c" {
		t.Fatal("the added partner's certificate does not resolve to it")
	}

	t.Run("exists", func(t *testing.T) {
		if _, err := d.Add(ctx, by, middleoffice.Partner{ID: "partner-c", Name: "again"}); !errors.Is(err, middleoffice.ErrExists) {
			t.Fatal(err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := d.Replace(ctx, by, middleoffice.Partner{ID: "nobody", Name: "x"}); !errors.Is(err, middleoffice.ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := d.SetDisabled(ctx, by, "nobody", true); !errors.Is(err, middleoffice.ErrNotFound) {
			t.Fatal(err)
		}
	})
	t.Run("conflicting rule", func(t *testing.T) {
		_, err := d.Add(ctx, by, middleoffice.Partner{ID: "thief", Name: "x", Certificates: []middleoffice.CertificateRule{bySubject(c, true)}})
		if !errors.Is(err, middleoffice.ErrConflict) {
			t.Fatal(err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		_, err := d.Add(ctx, by, middleoffice.Partner{ID: "Bad ID", Name: ""})
		if e, ok := errors.AsType[*middleoffice.InvalidError](err); !ok || len(e.Faults) != 2 {
			t.Fatal(err)
		}
	})
	if n := len(ev.Records()); n != 1 {
		t.Fatalf("refused changes recorded evidence: %d records", n)
	}

	patched, err := d.PatchPartner(ctx, by, "partner-c", []byte(`{"name": "Partner C administration", "mail": ["greffe@c.example"]}`))
	if err != nil {
		t.Fatal(err)
	}
	r = ev.Records()[1]
	if patched.Revision != 2 || patched.Name != "Partner C administration" || r.Subject != "directory.partner-updated" ||
		!slices.Equal(r.Previous, []string{added.EvidenceID}) || attr(r, "changed") != "mail,name" || attr(r, "revision") != "2" {
		t.Fatalf("patched %+v, evidence %+v", patched, r)
	}
	if same, err := d.PatchPartner(ctx, by, "partner-c", []byte(`{"name": "Partner C administration"}`)); err != nil || same.EvidenceID != patched.EvidenceID || len(ev.Records()) != 2 {
		t.Fatalf("a change that changes nothing: %v, %d records", err, len(ev.Records()))
	}
	disabled, err := d.SetDisabled(ctx, by, "partner-c", true)
	if err != nil || !disabled.Disabled || ev.Records()[2].Subject != "directory.partner-disabled" {
		t.Fatalf("disable: %v %+v", err, disabled)
	}

	t.Run("evidence refused: nothing changes", func(t *testing.T) {
		ev.Err = evidence.ErrUnavailable
		defer func() { ev.Err = nil }()
		if _, err := d.SetDisabled(ctx, by, "partner-c", false); !errors.Is(err, evidence.ErrUnavailable) {
			t.Fatal(err)
		}
		if !d.Resolve(c).Disabled() {
			t.Fatal("a change without evidence was applied")
		}
	})
	t.Run("no evidence log: no changes", func(t *testing.T) {
		ro := openDir(t, middleoffice.Config{}, nil, nil)
		if _, err := ro.Add(ctx, by, middleoffice.Partner{ID: "x", Name: "x"}); !errors.Is(err, middleoffice.ErrNoEvidence) {
			t.Fatal(err)
		}
	})
}

func attr(r evidence.Record, key string) string {
	for _, a := range r.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// TestPatch: RFC 7396 merge patches of a partner.
func TestPatch(t *testing.T) {
	t.Parallel()
	base := middleoffice.Partner{ID: "p", Name: "P", Roles: []middleoffice.Role{"partner"}, Mail: []string{"a@p.example"},
		Channel: middleoffice.Channel{Type: "webhook", URL: "https://p.example/hook"}, Certificates: []middleoffice.CertificateRule{}}
	for _, tc := range []struct {
		name, patch string
		check       func(middleoffice.Partner) bool
		fault       string
	}{
		{"null removes", `{"mail": null}`, func(p middleoffice.Partner) bool { return p.Mail == nil }, ""},
		{"objects merge", `{"channel": {"url": "https://p.example/v2"}}`, func(p middleoffice.Partner) bool {
			return p.Channel.Type == "webhook" && p.Channel.URL == "https://p.example/v2"
		}, ""},
		{"arrays replace", `{"roles": ["agent", "partner"]}`, func(p middleoffice.Partner) bool { return len(p.Roles) == 2 }, ""},
		{"read-only fields are ignored", `{"revision": 99, "evidence_id": "x"}`, func(p middleoffice.Partner) bool { return p.Revision == 0 && p.EvidenceID == "" }, ""},
		{"the id does not change", `{"id": "q"}`, nil, "id:"},
		{"unknown field", `{"colour": "blue"}`, nil, "unknown field"},
		{"not an object", `["name"]`, nil, "JSON object"},
		{"trailing data", `{} {}`, nil, "data after"},
		{"the result is checked", `{"channel": {"type": "pull"}}`, nil, "channel.url: only with type webhook"},
		{"too deep", strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), nil, "nested too deeply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := base.Patch([]byte(tc.patch))
			if tc.fault != "" {
				if e, ok := errors.AsType[*middleoffice.InvalidError](err); !ok || !strings.Contains(e.Error(), tc.fault) {
					t.Fatalf("want an *InvalidError with %q, got %v", tc.fault, err)
				}
				return
			}
			if err != nil || !tc.check(got) {
				t.Fatalf("%v: %+v", err, got)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cfg := middleoffice.Config{
		Partners: []middleoffice.PartnerConfig{
			{Partner: middleoffice.Partner{ID: "a", Name: "A", Roles: []middleoffice.Role{"boss"}}},
			{Partner: middleoffice.Partner{ID: "a", Name: "A again", Certificates: []middleoffice.CertificateRule{{Issuer: "CN=x"}}, Channel: middleoffice.Channel{Type: "webhook", URL: "http://a"}}},
			{Partner: middleoffice.Partner{ID: "m", Name: "M", Channel: middleoffice.Channel{Type: "mail"}, Mail: []string{"not an address"}}},
		},
		Routes: []middleoffice.Route{{From: []string{"a"}, Procedures: []string{"Dossier"}}},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`directory.partners[0].roles[0]: "boss"`,
		`directory.partners[1].id: "a" is used by another partner`,
		`directory.partners[1].certificates[0].subject: required with an issuer`,
		`directory.partners[1].channel.url: "http://a" is not an https:// URL`,
		`directory.partners[2].mail[0]`,
		`directory.routes[0].to: required`,
		`directory.routes[0].procedures[0]: "Dossier"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}

// TestConfigFiles: pec.yaml's partners may name certificate files.
func TestConfigFiles(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	c := p.client(t, p.ca, "partner-a", "A")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.pem"), devpki.CertPEM(c), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{{
		Partner:            middleoffice.Partner{ID: "partner-a", Name: "A", Certificates: []middleoffice.CertificateRule{{File: "a.pem"}}},
		EncryptionCertFile: "a.pem",
	}}}
	cfg.ResolvePaths(dir)
	d := openDir(t, cfg, nil, nil)
	got, _ := d.Partner("partner-a")
	if d.Resolve(c).ID() != "partner-a" || !bytes.Equal(got.EncryptionCertificate, c.Raw) || got.Certificates[0].Fingerprint != fingerprint(c) {
		t.Fatalf("%+v", got)
	}
	cfg.Partners[0].Certificates[0].File = filepath.Join(dir, "nosuch.pem")
	if _, err := middleoffice.Open(context.Background(), cfg, nil, middleoffice.Options{}); err == nil || !strings.Contains(err.Error(), "directory.partners[0].certificates[0].file") {
		t.Fatalf("a missing file: %v", err)
	}
}

// TestStoreRestart: changes survive a restart and win over pec.yaml's
// partner of the same id; the store refuses a second process and a file
// it did not write.
func TestStoreRestart(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	admin := p.client(t, p.ca, "admin", "Ops")
	a := p.client(t, p.ca, "partner-a", "A")
	c := p.client(t, p.ca, "partner-c", "C")
	path := filepath.Join(t.TempDir(), "data", "directory.json")
	cfg := middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(admin)),
		partner("partner-a", nil, bySubject(a, true)),
	}}
	ctx := context.Background()
	store, err := middleoffice.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := openDir(t, cfg, store, &evidence.Memory{})
	by := d.Resolve(admin)
	if _, err := d.Add(ctx, by, middleoffice.Partner{ID: "partner-c", Name: "C", Certificates: []middleoffice.CertificateRule{bySubject(c, true)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetDisabled(ctx, by, "partner-c", true); err != nil {
		t.Fatal(err)
	}
	if _, err := d.PatchPartner(ctx, by, "partner-a", []byte(`{"name": "A, renamed"}`)); err != nil {
		t.Fatal(err)
	}
	t.Run("second process", func(t *testing.T) {
		if _, err := middleoffice.OpenFile(path); !errors.Is(err, filelock.ErrInUse) {
			t.Fatalf("a second store on the same file: %v", err)
		}
	})
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store2, err := middleoffice.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	cfg.Partners[1].Name = "A, as pec.yaml says"
	d2 := openDir(t, cfg, store2, &evidence.Memory{})
	pc, ok := d2.Partner("partner-c")
	if !ok || !pc.Disabled || pc.Revision != 2 || !d2.Resolve(c).Disabled() {
		t.Fatalf("after restart: %+v", pc)
	}
	pa, _ := d2.Partner("partner-a")
	if pa.Name != "A, renamed" {
		t.Errorf("the API's change lost to pec.yaml: %q", pa.Name)
	}
	if ids := len(d2.Partners()); ids != 3 {
		t.Errorf("%d partners", ids)
	}

	t.Run("corrupt file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "directory.json")
		for _, content := range []string{"{", `{"version": 2, "partners": []}`, `{"version": 1, "partners": [{"id": "a"}, {"id": "a"}]}`, `{"version": 1, "extra": 1}`} {
			if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := middleoffice.OpenFile(bad)
			if !errors.Is(err, middleoffice.ErrStoreCorrupt) {
				if s != nil {
					s.Close()
				}
				t.Errorf("%s: %v", content, err)
			}
		}
	})
	t.Run("a stored partner that conflicts with pec.yaml", func(t *testing.T) {
		conflicting := cfg
		conflicting.Partners = append(slices.Clone(cfg.Partners), partner("c-again", nil, bySubject(c, true)))
		if _, err := middleoffice.Open(ctx, conflicting, store2, middleoffice.Options{}); !errors.Is(err, middleoffice.ErrConflict) {
			t.Fatalf("%v", err)
		}
	})
}
