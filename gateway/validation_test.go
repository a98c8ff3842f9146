package gateway_test

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/gateway"
	"pec/gateway/api"
	"pec/internal/certtest"
	"pec/internal/interop"
)

// mtlsServer serves the API over real TLS on 127.0.0.1, client
// certificates decided by v.
type mtlsServer struct {
	*httptest.Server
	root *certtest.Issued
}

func newMTLSServer(t *testing.T, root *certtest.Issued, v *certvalidation.Validator) *mtlsServer {
	t.Helper()
	serverTmpl := certtest.LeafTemplate("localhost")
	serverTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverTmpl.DNSNames = []string{"localhost"}
	serverTmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	server := root.Issue(t, serverTmpl, nil)
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	cfg, err := gateway.ServerTLSConfig([]*x509.Certificate{server.Cert, root.Cert}, server.Key, pool)
	if err != nil {
		t.Fatal(err)
	}
	gateway.ValidateClientCertificates(cfg, v, nil)
	srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(failingResponder{}, 1024, gateway.Options{Validator: v}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &mtlsServer{Server: srv, root: root}
}

// client returns an HTTP client presenting chain (leaf first) with key;
// its connections are kept alive between requests.
func (s *mtlsServer) client(chain []*x509.Certificate, key crypto.Signer) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(s.root.Cert)
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert},
	}}}
}

func newValidator(t *testing.T, cfg certvalidation.Config, roots map[certvalidation.Purpose][]*x509.Certificate, crls [][]byte) *certvalidation.Validator {
	t.Helper()
	v, err := certvalidation.New(cfg, certvalidation.Material{Roots: roots, CRLs: crls}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func postJSON(t *testing.T, c *http.Client, url string, body any) (*http.Response, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

// TestValidationsAPI: POST /v1/validations answers a report for any
// certificate it can read, and a problem for requests it cannot process.
func TestValidationsAPI(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("API Root"), nil)
	inter := root.Issue(t, certtest.CATemplate("API Issuing CA"), nil)
	partner := inter.Issue(t, certtest.LeafTemplate("partner-a"), nil)
	expiredTmpl := certtest.LeafTemplate("expired")
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	expired := inter.Issue(t, expiredTmpl, nil)
	roots := map[certvalidation.Purpose][]*x509.Certificate{
		certvalidation.PurposeClientAuth:      {root.Cert},
		certvalidation.PurposeAny:             {root.Cert},
		certvalidation.PurposeDocumentSigning: {root.Cert},
	}
	v := newValidator(t, certvalidation.Config{Purposes: map[string]certvalidation.PurposeConfig{"clientAuth": {Revocation: "none"}, "any": {Revocation: "none"}}}, roots, nil)
	s := newMTLSServer(t, root, v)
	c := s.client([]*x509.Certificate{partner.Cert, inter.Cert}, partner.Key)
	url := s.URL + "/v1/validations"

	type report struct {
		Valid            bool   `json:"valid"`
		Reason           string `json:"reason"`
		Purpose          string `json:"purpose"`
		RevocationPolicy string `json:"revocation_policy"`
		Chain            []struct {
			Subject     string `json:"subject"`
			TrustAnchor bool   `json:"trust_anchor"`
			DER         []byte `json:"der"`
		} `json:"chain"`
	}
	tests := []struct {
		name       string
		body       any
		status     int
		valid      bool
		reason     string
		revocation string
	}{
		{"valid, DER", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}, Purpose: "clientAuth"}, 200, true, "", "none"},
		{"valid, PEM with its chain", api.ValidationRequest{Certificate: certtest.PEM(partner.Cert, inter.Cert)}, 200, true, "", "none"},
		{"invalid: expired", api.ValidationRequest{Certificate: expired.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}}, 200, false, "expired", "none"},
		{"invalid: wrong purpose", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}, Purpose: "documentSigning"}, 200, false, "ext_key_usage", "prefer"},
		{"invalid at a past time", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}, At: ptr(time.Now().Add(-30 * 24 * time.Hour))}, 200, false, "not_yet_valid", "none"},
		{"revocation can only be made stricter", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}, Purpose: "documentSigning", Revocation: "none"}, 200, false, "ext_key_usage", "prefer"},
		{"stricter revocation", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{inter.Cert.Raw}, Revocation: "require"}, 200, false, "revocation_unknown", "require"},
		{"no certificate", api.ValidationRequest{}, 400, false, "", ""},
		{"not a certificate", api.ValidationRequest{Certificate: []byte("hello")}, 400, false, "", ""},
		{"bad intermediate", api.ValidationRequest{Certificate: partner.Cert.Raw, Intermediates: [][]byte{{0x30, 0x00}}}, 400, false, "", ""},
		{"unknown purpose", api.ValidationRequest{Certificate: partner.Cert.Raw, Purpose: "codeSigning"}, 400, false, "", ""},
		{"no anchors for the purpose", api.ValidationRequest{Certificate: partner.Cert.Raw, Purpose: "timeStamping"}, 400, false, "", ""},
		{"bad revocation policy", api.ValidationRequest{Certificate: partner.Cert.Raw, Revocation: "sometimes"}, 400, false, "", ""},
		{"bad host", api.ValidationRequest{Certificate: partner.Cert.Raw, Host: "not a host"}, 400, false, "", ""},
		{"bad CRL", api.ValidationRequest{Certificate: partner.Cert.Raw, CRLs: [][]byte{[]byte("x")}}, 400, false, "", ""},
		{"malformed JSON", `{"certificate": `, 400, false, "", ""},
		{"unknown field", `{"certificat": "AAAA"}`, 400, false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, c, url, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				if p := wantTypedProblem(t, resp.StatusCode, resp.Header, body, ""); p.Detail == "" {
					t.Fatalf("not a problem: %q %s", resp.Header.Get("Content-Type"), body)
				}
				return
			}
			var rep report
			if err := json.Unmarshal(body, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Valid != tc.valid || rep.Reason != tc.reason || rep.RevocationPolicy != tc.revocation {
				t.Fatalf("valid %v reason %q revocation %q, want %v %q %q: %s", rep.Valid, rep.Reason, rep.RevocationPolicy, tc.valid, tc.reason, tc.revocation, body)
			}
			if tc.valid && (len(rep.Chain) != 3 || !rep.Chain[2].TrustAnchor || len(rep.Chain[0].DER) == 0) {
				t.Errorf("chain: %+v", rep.Chain)
			}
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		resp, err := c.Post(url, "text/plain", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("HTTP %d", resp.StatusCode)
		}
	})
	t.Run("too large", func(t *testing.T) {
		resp, _ := postJSON(t, c, url, api.ValidationRequest{Certificate: make([]byte, 5<<20)})
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("HTTP %d", resp.StatusCode)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestMutualTLSRefusals: certificates refused at the handshake.
func TestMutualTLSRefusals(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("mTLS Root"), nil)
	other := certtest.Root(t, certtest.CATemplate("mTLS Other Root"), nil)
	partner := root.Issue(t, certtest.LeafTemplate("partner-a"), nil)
	stranger := other.Issue(t, certtest.LeafTemplate("stranger"), nil)
	serverTmpl := certtest.LeafTemplate("server as client")
	serverTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverCert := root.Issue(t, serverTmpl, nil)
	v := newValidator(t, certvalidation.Config{Purposes: map[string]certvalidation.PurposeConfig{"clientAuth": {Revocation: "none"}}},
		map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeClientAuth: {root.Cert}}, nil)
	s := newMTLSServer(t, root, v)

	resp, err := s.client([]*x509.Certificate{partner.Cert}, partner.Key).Get(s.URL + "/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("valid partner: HTTP %d", resp.StatusCode)
	}
	for name, cl := range map[string]*http.Client{
		"another root":       s.client([]*x509.Certificate{stranger.Cert}, stranger.Key),
		"not for clientAuth": s.client([]*x509.Certificate{serverCert.Cert}, serverCert.Key),
	} {
		if resp, err := cl.Get(s.URL + "/v1/whoami"); err == nil {
			resp.Body.Close()
			t.Errorf("%s: served (%s)", name, resp.Status)
		}
	}
}

// TestMutualTLSRevokedWhileRunning: a partner calls the API over a kept-
// alive connection; its certificate is revoked in the CA's database, which
// `openssl ocsp` answers from; once the cached status expires the partner
// is refused, on the open connection and on new ones.
func TestMutualTLSRevokedWhileRunning(t *testing.T) {
	t.Parallel()
	interop.Need(t, "openssl", "openssl")
	root := certtest.Root(t, certtest.CATemplate("Live Root"), nil)
	inter := root.Issue(t, certtest.CATemplate("Live Issuing CA"), nil)
	rootCA := interop.NewCA(t, root.Cert, root.Key)
	rootCA.Add(t, inter.Cert)
	interCA := interop.NewCA(t, inter.Cert, inter.Key)
	port := interop.FreePort(t)
	tmpl := certtest.LeafTemplate("partner-live")
	tmpl.OCSPServer = []string{fmt.Sprintf("http://127.0.0.1:%d", port)}
	partner := inter.Issue(t, tmpl, nil)
	interCA.Add(t, partner.Cert)
	responder := interCA.StartOCSP(t, interop.OCSPOptions{Port: port, NextUpdate: 60})

	const maxAge = time.Second
	v := newValidator(t, certvalidation.Config{
		Purposes: map[string]certvalidation.PurposeConfig{"clientAuth": {Revocation: "require"}},
		Cache:    certvalidation.CacheConfig{MaxAge: maxAge},
	}, map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeClientAuth: {root.Cert}},
		[][]byte{rootCA.CRL(t, "-crlhours", "24")}) // the issuing CA's status, kept locally
	s := newMTLSServer(t, root, v)
	c := s.client([]*x509.Certificate{partner.Cert, inter.Cert}, partner.Key)
	whoami := func(c *http.Client) (int, error) {
		resp, err := c.Get(s.URL + "/v1/whoami")
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := whoami(c); err != nil || code != 200 {
		t.Fatalf("before revocation: %d %v\n%s", code, err, responder.Log())
	}

	interCA.Revoke(t, partner.Cert, "keyCompromise")
	responder.Refresh(t)
	revokedAt := time.Now()
	deadline := revokedAt.Add(10 * maxAge)
	for {
		code, err := whoami(c)
		if err == nil && code == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still served %v after the revocation (HTTP %d, %v)", time.Since(revokedAt), code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("refused %v after the revocation (cache max age %v)", time.Since(revokedAt).Round(10*time.Millisecond), maxAge)
	// A new connection is refused at the handshake.
	if code, err := whoami(s.client([]*x509.Certificate{partner.Cert, inter.Cert}, partner.Key)); err == nil {
		t.Errorf("new connection served: HTTP %d", code)
	}
}
