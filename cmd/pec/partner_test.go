package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pec/configs"
	"pec/internal/devpki"
	"pec/middleoffice"
)

// TestDevDirectory is the contract of pec init's directory: partner-a and
// partner-b send each other the procedure dossier, both on the pull
// channel; auditor reads every proof; admin manages partners; the dev
// clients' certificates (issued as pec init issues them) resolve to them.
func TestDevDirectory(t *testing.T) {
	data, err := configs.Render(configs.Params{Dev: true, KeyDir: "keys", PolicyOID: devPolicyOID})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cfg.resolvePaths(tmp)
	now := time.Now()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ca, err := devpki.NewRootCA(key(), "PEC development root CA", now)
	if err != nil {
		t.Fatal(err)
	}
	// The partners' encryption certificates, as pec init writes them.
	if err := os.MkdirAll(filepath.Join(tmp, "pki", "clients"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"partner-a", "partner-b"} {
		if err := issueEncryption(ca, filepath.Join(tmp, "pki", "clients", name), name, "Partner", now); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := middleoffice.Open(context.Background(), cfg.Directory, nil, middleoffice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := middleoffice.NewPolicy(dir, middleoffice.Rules{SignProfiles: middleoffice.SignRules(cfg.Signing), Auditors: cfg.Proof.Auditors})
	if err != nil {
		t.Fatal(err)
	}
	other, err := devpki.NewRootCA(key(), "Another root CA", now)
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string]*x509.Certificate{}
	for _, c := range devClients {
		if certs[c.name], err = ca.IssueClient(key().Public(), c.name, c.org, now); err != nil {
			t.Fatal(err)
		}
	}
	forged, err := other.IssueClient(key().Public(), "admin", "PEC operations", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range devClients {
		pr := dir.Resolve(certs[c.name])
		if pr.ID() != c.name {
			t.Errorf("%s's certificate resolves to %q", c.name, pr.ID())
		}
	}
	for _, id := range []string{"partner-a", "partner-b"} {
		if p, _ := dir.Partner(id); p.Channel.Type != middleoffice.ChannelPull || len(p.EncryptionCertificate) == 0 {
			t.Errorf("%s: channel %q, %d bytes of encryption certificate", id, p.Channel.Type, len(p.EncryptionCertificate))
		}
	}
	if pr := dir.Resolve(forged); pr.Partner != nil {
		t.Errorf("admin's subject from another CA resolves to %q", pr.ID())
	}
	send := func(to, procedure string) middleoffice.Resource {
		return middleoffice.Resource{Recipient: to, Procedure: procedure}
	}
	for _, tc := range []struct {
		name   string
		who    string
		action middleoffice.Action
		res    middleoffice.Resource
		allow  bool
	}{
		{"a sends dossier to b", "partner-a", middleoffice.ActionSend, send("partner-b", "dossier"), true},
		{"b sends dossier to a", "partner-b", middleoffice.ActionSend, send("partner-a", "dossier"), true},
		{"a sends no other procedure", "partner-a", middleoffice.ActionSend, send("partner-b", "casier"), false},
		{"nobody sends to the auditor", "partner-a", middleoffice.ActionSend, send("auditor", "dossier"), false},
		{"the auditor sends nothing", "auditor", middleoffice.ActionSend, send("partner-a", "dossier"), false},
		{"the auditor reads every proof", "auditor", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, true},
		{"partner-a does not", "partner-a", middleoffice.ActionReadAllProofs, middleoffice.Resource{}, false},
		{"admin manages partners", "admin", middleoffice.ActionAdminister, middleoffice.Resource{}, true},
		{"partner-a does not manage partners", "partner-a", middleoffice.ActionAdminister, middleoffice.Resource{}, false},
		{"partner-a signs with pdf", "partner-a", middleoffice.ActionSign, middleoffice.Resource{Profile: "pdf"}, true},
		{"partner-b signs with cades-bb", "partner-b", middleoffice.ActionSign, middleoffice.Resource{Profile: "cades-bb"}, true},
		{"admin does not sign", "admin", middleoffice.ActionSign, middleoffice.Resource{Profile: "default"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pol.Authorize(dir.Resolve(certs[tc.who]), tc.action, tc.res)
			if (err == nil) != tc.allow {
				t.Fatalf("allowed %v, want %v (%v)", err == nil, tc.allow, err)
			}
		})
	}
}
