package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/internal/devpki"
	"pec/middleoffice"
	"pec/signing"
	"pec/tsa"
)

// adminAPI is the API over real mutual TLS on 127.0.0.1 with a directory
// (admin, partner-a, auditor) kept in a file store, the policy asked by the
// signature service too, and clients for each certificate.
type adminAPI struct {
	t        *testing.T
	url      string
	storeDir string
	evidence *evidence.Memory
	certs    map[string]*x509.Certificate
	clients  map[string]*http.Client
	caName   string
}

func newAdminAPI(t *testing.T) *adminAPI {
	t.Helper()
	p := newPKI(t)
	now := time.Now()
	a := &adminAPI{t: t, storeDir: t.TempDir(), evidence: &evidence.Memory{}, certs: map[string]*x509.Certificate{}, clients: map[string]*http.Client{}, caName: p.ca.Cert.Subject.String()}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	for _, name := range []string{"admin", "partner-a", "auditor", "partner-c", "stranger"} {
		k := mustKey(t)
		c, err := p.ca.IssueClient(k.Public(), name, "Org "+name, now)
		if err != nil {
			t.Fatal(err)
		}
		a.certs[name] = c
		a.clients[name] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: "localhost",
			Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}},
		}}}
	}
	store, err := middleoffice.OpenFile(filepath.Join(a.storeDir, "directory.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := a.config()
	dir, err := middleoffice.Open(t.Context(), cfg, store, middleoffice.Options{Evidence: a.evidence})
	if err != nil {
		t.Fatal(err)
	}
	sigKey := mustKey(t)
	sigCert, err := p.ca.IssueDocumentSigner(sigKey.Public(), "PEC signature", "PEC", now)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "signing.pem")
	writeTestFile(t, certFile, devpki.CertPEM(sigCert, p.ca.Cert))
	sigCfg := signing.Config{Profiles: []signing.ProfileConfig{{Name: "default", KeyLabel: "signing", CertFile: certFile, Format: "cades", AllowedClients: []string{"partner-a"}}}}
	pol, err := middleoffice.NewPolicy(dir, middleoffice.Rules{SignProfiles: middleoffice.SignRules(sigCfg)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := signing.Load(t.Context(), sigCfg, softKeys{"signing": sigKey}, signing.Options{Evidence: a.evidence, Authorizer: pol})
	if err != nil {
		t.Fatal(err)
	}
	serverKey := mustKey(t)
	serverCert, err := p.ca.IssueServer(serverKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := gateway.ServerTLSConfig([]*x509.Certificate{serverCert, p.ca.Cert}, serverKey, roots)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{Policy: pol, Signing: svc}))
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func (a *adminAPI) config() middleoffice.Config {
	rule := func(name string) []middleoffice.CertificateRule {
		return []middleoffice.CertificateRule{{Subject: a.certs[name].Subject.String(), Issuer: a.caName}}
	}
	return middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		{Partner: middleoffice.Partner{ID: "admin", Name: "Operations", Roles: []middleoffice.Role{middleoffice.RoleAdmin}, Certificates: rule("admin")}},
		{Partner: middleoffice.Partner{ID: "partner-a", Name: "Partner A", Roles: []middleoffice.Role{middleoffice.RolePartner}, Certificates: rule("partner-a")}},
		{Partner: middleoffice.Partner{ID: "auditor", Name: "Audit", Roles: []middleoffice.Role{middleoffice.RoleAuditor}, Certificates: rule("auditor")}},
	}}
}

// do sends a request as client (body: a string sent as is, or a value
// sent as JSON) and returns the response and its body.
func (a *adminAPI) do(client, method, path, contentType string, body any) (*http.Response, []byte) {
	a.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.url+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.clients[client].Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func (a *adminAPI) whoami(client string) api.Identity {
	a.t.Helper()
	resp, body := a.do(client, "GET", "/v1/whoami", "", nil)
	var id api.Identity
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &id) != nil {
		a.t.Fatalf("whoami as %s: %s %s", client, resp.Status, body)
	}
	return id
}

func (a *adminAPI) sign(client string) int {
	a.t.Helper()
	resp, _ := a.do(client, "POST", "/v1/signatures", "application/json", api.SignatureRequest{Profile: "default", Document: []byte("x")})
	return resp.StatusCode
}

func wantAdminProblem(t *testing.T, resp *http.Response, body []byte, status int, detail string) {
	t.Helper()
	p := wantTypedProblem(t, resp.StatusCode, resp.Header, body, "")
	if resp.StatusCode != status || !strings.Contains(p.Detail, detail) {
		t.Fatalf("%s %q %s; want %d with %q", resp.Status, resp.Header.Get("Content-Type"), body, status, detail)
	}
}

// TestPartnersAPI: the administration API end to end over mutual TLS.
func TestPartnersAPI(t *testing.T) {
	a := newAdminAPI(t)
	partnerC := map[string]any{
		"id": "partner-c", "name": "Partner C",
		"certificates":       []map[string]string{{"subject": a.certs["partner-c"].Subject.String(), "issuer": a.caName}},
		"signature_profiles": []string{"default"},
	}

	t.Run("whoami names the principal", func(t *testing.T) {
		if id := a.whoami("partner-a"); id.Partner != "partner-a" || id.Name != "Partner A" || len(id.Roles) != 1 || id.Roles[0] != "partner" {
			t.Errorf("%+v", id)
		}
		if id := a.whoami("stranger"); id.Partner != "" || id.Roles == nil || len(id.Roles) != 0 || !strings.Contains(id.Subject, "CN=stranger") {
			t.Errorf("an unknown certificate: %+v", id)
		}
	})
	t.Run("only admin administers", func(t *testing.T) {
		for _, who := range []string{"partner-a", "auditor", "stranger"} {
			resp, body := a.do(who, "GET", "/v1/partners", "", nil)
			wantAdminProblem(t, resp, body, http.StatusForbidden, "admin role")
			resp, body = a.do(who, "POST", "/v1/partners", "application/json", partnerC)
			wantAdminProblem(t, resp, body, http.StatusForbidden, "admin role")
		}
		if len(a.evidence.Records()) != 0 {
			t.Fatal("a refused change left evidence")
		}
	})
	// partner-c's connection is open before it is added: the next request
	// on the same connection sees the change.
	if id := a.whoami("partner-c"); id.Partner != "" {
		t.Fatalf("partner-c before it is added: %+v", id)
	}
	resp, body := a.do("partner-c", "POST", "/v1/signatures", "application/json", api.SignatureRequest{Profile: "default", Document: []byte("x")})
	wantAdminProblem(t, resp, body, http.StatusForbidden, `no rule grants the signature profile "default"`)

	var added middleoffice.Partner
	t.Run("add", func(t *testing.T) {
		resp, body := a.do("admin", "POST", "/v1/partners", "application/json", partnerC)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v1/partners/partner-c" || json.Unmarshal(body, &added) != nil {
			t.Fatalf("%s %s", resp.Status, body)
		}
		recs := a.evidence.Records()
		last := recs[len(recs)-1]
		if added.Revision != 1 || added.EvidenceID == "" || resp.Header.Get("PEC-Evidence-ID") != added.EvidenceID || last.ID != added.EvidenceID ||
			last.Type != evidence.AdminAction || !last.Involves(sha256.Sum256(a.certs["admin"].Raw)) || !bytes.Equal(last.Digests[0].Value, middleoffice.EntryDigest(added)) {
			t.Fatalf("added %+v, evidence %+v", added, last)
		}
	})
	if id := a.whoami("partner-c"); id.Partner != "partner-c" {
		t.Fatalf("partner-c after it was added, same connection: %+v", id)
	}
	if code := a.sign("partner-c"); code != http.StatusOK {
		t.Fatalf("partner-c signs with its signature_profiles: %d", code)
	}

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path, ctype string
			body                      any
			status                    int
			detail                    string
		}{
			{"exists", "POST", "/v1/partners", "application/json", partnerC, http.StatusConflict, "exists"},
			{"invalid", "POST", "/v1/partners", "application/json", map[string]any{"id": "Bad Id", "name": ""}, http.StatusBadRequest, `id: "Bad Id" is not a partner id`},
			{"unknown field", "POST", "/v1/partners", "application/json", `{"id": "x", "name": "x", "colour": 1}`, http.StatusBadRequest, "unknown field"},
			{"wrong content type", "POST", "/v1/partners", "text/plain", `{}`, http.StatusUnsupportedMediaType, "application/json"},
			{"certificate of another partner", "POST", "/v1/partners", "application/json", map[string]any{"id": "thief", "name": "x",
				"certificates": []map[string]string{{"subject": a.certs["partner-a"].Subject.String(), "issuer": a.caName}}}, http.StatusConflict, `"partner-a"`},
			{"no such partner", "GET", "/v1/partners/nosuch", "", nil, http.StatusNotFound, `"nosuch"`},
			{"disable no such partner", "POST", "/v1/partners/nosuch/disable", "", nil, http.StatusNotFound, `"nosuch"`},
			{"PUT of another id", "PUT", "/v1/partners/partner-a", "application/json", partnerC, http.StatusBadRequest, "the one of the URL"},
			{"PATCH of the id", "PATCH", "/v1/partners/partner-c", "application/merge-patch+json", `{"id": "partner-d"}`, http.StatusBadRequest, "does not change"},
			{"PATCH that breaks the partner", "PATCH", "/v1/partners/partner-c", "application/merge-patch+json", `{"channel": {"type": "carrier pigeon"}}`, http.StatusBadRequest, "channel.type"},
			{"too large", "POST", "/v1/partners", "application/json", strings.Repeat(" ", 2<<20), http.StatusRequestEntityTooLarge, "larger"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := len(a.evidence.Records())
				resp, body := a.do("admin", tc.method, tc.path, tc.ctype, tc.body)
				wantAdminProblem(t, resp, body, tc.status, tc.detail)
				if len(a.evidence.Records()) != before {
					t.Error("a refused change left evidence")
				}
			})
		}
		resp, _ := a.do("admin", "DELETE", "/v1/partners/partner-c", "", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
			t.Errorf("DELETE: %s", resp.Status)
		}
	})
	t.Run("patch, put, get, list", func(t *testing.T) {
		resp, body := a.do("admin", "PATCH", "/v1/partners/partner-c", "application/merge-patch+json", `{"name": "Partner C administration", "mail": ["greffe@c.example"]}`)
		var p middleoffice.Partner
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &p) != nil || p.Name != "Partner C administration" || p.Revision != 2 || p.Mail[0] != "greffe@c.example" {
			t.Fatalf("PATCH: %s %s", resp.Status, body)
		}
		full := partnerC
		full["name"] = "Partner C, replaced"
		resp, body = a.do("admin", "PUT", "/v1/partners/partner-c", "application/json", full)
		p = middleoffice.Partner{}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &p) != nil || p.Mail != nil || p.Revision != 3 {
			t.Fatalf("PUT: %s %s", resp.Status, body)
		}
		resp, body = a.do("admin", "GET", "/v1/partners/partner-c", "", nil)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &p) != nil || p.Name != "Partner C, replaced" {
			t.Fatalf("GET: %s %s", resp.Status, body)
		}
		var list api.PartnerList
		resp, body = a.do("admin", "GET", "/v1/partners", "", nil)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Partners) != 4 || list.Partners[3].ID != "partner-c" {
			t.Fatalf("list: %s %s", resp.Status, body)
		}
	})
	t.Run("disable, enable", func(t *testing.T) {
		resp, body := a.do("admin", "POST", "/v1/partners/partner-c/disable", "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("PEC-Evidence-ID") == "" {
			t.Fatalf("%s %s", resp.Status, body)
		}
		// The same connection, at its next request.
		resp, body = a.do("partner-c", "GET", "/v1/whoami", "", nil)
		wantAdminProblem(t, resp, body, http.StatusForbidden, "partner-c is disabled")
		if code := a.sign("partner-c"); code != http.StatusForbidden {
			t.Fatalf("a disabled partner signs: %d", code)
		}
		resp, _ = a.do("admin", "POST", "/v1/partners/partner-c/enable", "", nil)
		if resp.StatusCode != http.StatusOK || a.sign("partner-c") != http.StatusOK {
			t.Fatalf("enable: %s", resp.Status)
		}
		if resp, _ := a.do("admin", "POST", "/v1/partners/partner-c/disable", "", nil); resp.StatusCode != http.StatusOK {
			t.Fatal(resp.Status)
		}
	})
	t.Run("the evidence of every change", func(t *testing.T) {
		var subjects []string
		for _, r := range a.evidence.Records() {
			if r.Type == evidence.AdminAction {
				subjects = append(subjects, r.Subject)
			}
		}
		want := "directory.partner-added directory.partner-updated directory.partner-updated directory.partner-disabled directory.partner-enabled directory.partner-disabled"
		if strings.Join(subjects, " ") != want {
			t.Errorf("admin.action records:\n%s\nwant\n%s", strings.Join(subjects, " "), want)
		}
	})
	t.Run("a restart keeps the changes", func(t *testing.T) {
		// The running node holds the store's lock: read its file as the
		// next process would, from a copy.
		data, err := os.ReadFile(filepath.Join(a.storeDir, "directory.json"))
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(a.storeDir, "copy.json"), data)
		store, err := middleoffice.OpenFile(filepath.Join(a.storeDir, "copy.json"))
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		dir, err := middleoffice.Open(context.Background(), a.config(), store, middleoffice.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := dir.Partner("partner-c")
		if !ok || !p.Disabled || p.Revision != 6 || !dir.Resolve(a.certs["partner-c"]).Disabled() {
			t.Fatalf("after restart: %+v", p)
		}
	})
}
