package gateway_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	"pec/signing"
	"pec/tsa"
)

// softKeys is a signing.KeyStore of software keys, for tests that do not
// need a token.
type softKeys map[string]crypto.Signer

func (k softKeys) Signer(_ context.Context, label string) (crypto.Signer, error) {
	if s, ok := k[label]; ok {
		return s, nil
	}
	return nil, errors.New("no key " + label)
}

type failingTimestamper struct{}

func (failingTimestamper) Request(context.Context, crypto.Hash, []byte, tsa.RequestOptions) (*tsa.Result, error) {
	return nil, errors.New("tsa: journal: disk full at /var/lib/pec")
}

// signingAPI serves the API over mutual TLS with a CAdES profile "default"
// (B-T) and a PAdES profile "pdf", both for partner-a, a profile "broken"
// whose TSA fails, and the verification endpoint.
type signingAPI struct {
	url       string
	brokenURL string
	pki       *pki
	evidence  *evidence.Memory
	verifier  *signing.Verifier
	clients   map[string]*http.Client
}

func newSigningAPI(t *testing.T) *signingAPI {
	t.Helper()
	p := newPKI(t)
	now := time.Now()
	dir := t.TempDir()
	key := mustKey(t)
	cert, err := p.ca.IssueDocumentSigner(key.Public(), "PEC signature", "PEC", now)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "signing.pem")
	writeTestFile(t, certFile, devpki.CertPEM(cert, p.ca.Cert))
	authority := newAuthority(t, p, tsa.Options{})
	ev := &evidence.Memory{}
	cfg := signing.Config{
		Profiles: []signing.ProfileConfig{
			{Name: "default", KeyLabel: "signing", CertFile: certFile, Format: "cades", Timestamp: true, AllowedClients: []string{"partner-a"}},
			{Name: "pdf", KeyLabel: "signing", CertFile: certFile, Format: "pades", AllowedClients: []string{"partner-a"}, PDF: signing.PDFConfig{Visible: true}},
		},
		EvidenceFile: "unused", MaxDocumentBytes: 64 << 10, MaxBatch: 20,
	}
	svc, err := signing.Load(context.Background(), cfg, softKeys{"signing": key}, signing.Options{Timestamper: signing.LocalTSA{Authority: authority}, Evidence: ev})
	if err != nil {
		t.Fatal(err)
	}
	broken, err := signing.Load(context.Background(), signing.Config{
		Profiles:     []signing.ProfileConfig{{Name: "broken", KeyLabel: "signing", CertFile: certFile, Format: "cades", Timestamp: true, AllowedClients: []string{"partner-a"}}},
		EvidenceFile: "unused",
	}, softKeys{"signing": key}, signing.Options{Timestamper: failingTimestamper{}, Evidence: ev})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	verifier := &signing.Verifier{Chain: signing.X509Validator{Roots: roots}, TSARoots: roots}

	serverKey := mustKey(t)
	serverCert, err := p.ca.IssueServer(serverKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := gateway.ServerTLSConfig([]*x509.Certificate{serverCert, p.ca.Cert}, serverKey, roots)
	if err != nil {
		t.Fatal(err)
	}
	start := func(svc *signing.Service) string {
		srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(authority, 1024, gateway.Options{Signing: svc, Verifier: verifier}))
		srv.TLS = tlsCfg
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	api := &signingAPI{url: start(svc), pki: p, evidence: ev, verifier: verifier, clients: map[string]*http.Client{}}
	brokenURL := start(broken)
	for _, name := range []string{"partner-a", "partner-b"} {
		k := mustKey(t)
		c, err := p.ca.IssueClient(k.Public(), name, "Partner", now)
		if err != nil {
			t.Fatal(err)
		}
		api.clients[name] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: "localhost",
			Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}},
		}}}
	}
	api.clients["broken"] = api.clients["partner-a"]
	api.brokenURL = brokenURL
	return api
}

func writeTestFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// post sends a JSON body (a string is sent as is) and returns the status,
// the content type and the body.
func (a *signingAPI) post(t *testing.T, client, base, path string, body any) (int, string, []byte) {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	default:
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	if base == "" {
		base = a.url
	}
	resp, err := a.clients[client].Post(base+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), out
}

func TestSigningAPI(t *testing.T) {
	t.Parallel()
	a := newSigningAPI(t)
	ctx := context.Background()
	doc := []byte("Extrait n°3 du casier judiciaire")

	t.Run("CAdES attached", func(t *testing.T) {
		st, _, body := a.post(t, "partner-a", "", "/v1/signatures", api.SignatureRequest{Profile: "default", Document: doc})
		if st != 200 {
			t.Fatalf("HTTP %d: %s", st, body)
		}
		var res api.SignatureResponse
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		if res.MediaType != "application/pkcs7-mime" || res.Format != "cades" || res.Detached || res.TimestampTime.IsZero() || res.ID == "" {
			t.Errorf("%+v", res)
		}
		sum := sha256.Sum256(doc)
		if res.Digest != hex.EncodeToString(sum[:]) {
			t.Errorf("digest %s", res.Digest)
		}
		r, err := a.verifier.Verify(ctx, res.Signature, signing.VerifyOptions{})
		if err != nil || !r.Passed() {
			t.Fatalf("%v %+v", err, r)
		}
		// The verification endpoint says the same.
		st, _, body = a.post(t, "partner-b", "", "/v1/verifications", api.VerificationRequest{Signature: res.Signature})
		if st != 200 || !strings.Contains(string(body), `"indication":"TOTAL-PASSED"`) || !strings.Contains(string(body), `"format":"CAdES-B-T"`) {
			t.Errorf("HTTP %d: %s", st, body)
		}
		tampered := bytes.Replace(res.Signature, doc[:8], []byte("EXTRAIT "), 1)
		st, _, body = a.post(t, "partner-b", "", "/v1/verifications", api.VerificationRequest{Signature: tampered})
		if st != 200 || !strings.Contains(string(body), `"sub_indication":"HASH_FAILURE"`) {
			t.Errorf("tampered: HTTP %d: %s", st, body)
		}
	})

	t.Run("CAdES of a digest", func(t *testing.T) {
		sum := sha256.Sum256(doc)
		st, _, body := a.post(t, "partner-a", "", "/v1/signatures", api.SignatureRequest{Profile: "default", Digest: hex.EncodeToString(sum[:])})
		var res api.SignatureResponse
		if st != 200 || json.Unmarshal(body, &res) != nil || !res.Detached || res.MediaType != "application/pkcs7-signature" {
			t.Fatalf("HTTP %d: %s", st, body)
		}
		st, _, body = a.post(t, "partner-a", "", "/v1/verifications", api.VerificationRequest{Signature: res.Signature, Digest: hex.EncodeToString(sum[:])})
		if st != 200 || !strings.Contains(string(body), `"indication":"TOTAL-PASSED"`) {
			t.Errorf("hash-only verification: HTTP %d: %s", st, body)
		}
		st, _, body = a.post(t, "partner-a", "", "/v1/verifications", api.VerificationRequest{Signature: res.Signature, Data: doc})
		if st != 200 || !strings.Contains(string(body), `"indication":"TOTAL-PASSED"`) {
			t.Errorf("verification with data: HTTP %d: %s", st, body)
		}
	})

	t.Run("PAdES", func(t *testing.T) {
		st, _, body := a.post(t, "partner-a", "", "/v1/signatures", api.SignatureRequest{Profile: "pdf", Document: testPDF()})
		var res api.SignatureResponse
		if st != 200 || json.Unmarshal(body, &res) != nil || res.MediaType != "application/pdf" || !bytes.HasPrefix(res.Signature, []byte("%PDF-")) {
			t.Fatalf("HTTP %d: %.300s", st, body)
		}
		r, err := a.verifier.Verify(ctx, res.Signature, signing.VerifyOptions{})
		if err != nil || !r.Passed() || r.Signatures[0].Format != "PAdES-B-B" {
			t.Fatalf("%v %+v", err, r)
		}
	})

	t.Run("batch", func(t *testing.T) {
		var req api.BatchRequest
		req.Profile = "default"
		var docs [][]byte
		for i := range 12 {
			d := []byte(fmt.Sprint("document ", i))
			sum := sha256.Sum256(d)
			docs = append(docs, d)
			req.Digests = append(req.Digests, hex.EncodeToString(sum[:]))
		}
		st, _, body := a.post(t, "partner-a", "", "/v1/signatures/batch", req)
		var res api.BatchResponse
		if st != 200 || json.Unmarshal(body, &res) != nil || len(res.Signatures) != 12 {
			t.Fatalf("HTTP %d: %.300s", st, body)
		}
		for i, s := range res.Signatures {
			if s.Digest != req.Digests[i] {
				t.Errorf("signature %d is for digest %s", i, s.Digest)
			}
			r, err := a.verifier.Verify(ctx, s.Signature, signing.VerifyOptions{Data: docs[i]})
			if err != nil || !r.Passed() {
				t.Fatalf("signature %d: %v %+v", i, err, r)
			}
		}
	})

	// Every mistake of the client is a problem with a 4xx status, never a
	// 500, and nothing is signed.
	sum := sha256.Sum256(doc)
	for _, tc := range []struct {
		name   string
		client string
		path   string
		body   any
		status int
		detail string
	}{
		{"client not allowed", "partner-b", "/v1/signatures", api.SignatureRequest{Profile: "default", Document: doc}, 403, "may not use"},
		{"client not allowed, PDF", "partner-b", "/v1/signatures", api.SignatureRequest{Profile: "pdf", Document: testPDF()}, 403, "may not use"},
		{"client not allowed, batch", "partner-b", "/v1/signatures/batch", api.BatchRequest{Profile: "default", Digests: []string{hex.EncodeToString(sum[:])}}, 403, "may not use"},
		{"unknown profile", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "nosuch", Document: doc}, 404, "no such signature profile"},
		{"not JSON", "partner-a", "/v1/signatures", "profile=default", 400, "malformed JSON"},
		{"unknown field", "partner-a", "/v1/signatures", `{"profile":"default","document":"eA==","colour":"blue"}`, 400, "unknown field"},
		{"trailing data", "partner-a", "/v1/signatures", `{"profile":"default","document":"eA=="} {}`, 400, "after the JSON"},
		{"bad base64", "partner-a", "/v1/signatures", `{"profile":"default","document":"%%%"}`, 400, "malformed JSON"},
		{"digest not hex", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "default", Digest: "xyz"}, 400, "not hexadecimal"},
		{"digest too short", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "default", Digest: "abcd"}, 400, "digest has 32 bytes, not 2"},
		{"document and digest", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "default", Document: doc, Digest: hex.EncodeToString(sum[:])}, 400, "one of them"},
		{"not a PDF", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "pdf", Document: doc}, 400, "not a readable PDF"},
		{"truncated PDF", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "pdf", Document: testPDF()[:300]}, 400, "not a readable PDF"},
		{"too large", "partner-a", "/v1/signatures", api.SignatureRequest{Profile: "default", Document: make([]byte, 200<<10)}, 413, "larger than"},
		{"empty batch", "partner-a", "/v1/signatures/batch", api.BatchRequest{Profile: "default"}, 400, "1 to 20 digests"},
		{"batch too large", "partner-a", "/v1/signatures/batch", api.BatchRequest{Profile: "default", Digests: make([]string, 21)}, 400, "1 to 20"},
		{"verify without signature", "partner-a", "/v1/verifications", api.VerificationRequest{}, 400, "signature: required"},
		{"verify detached without data", "partner-a", "/v1/verifications", api.VerificationRequest{Signature: a.detached(t, doc)}, 400, "give the signed data"},
		{"verify PDF with data", "partner-a", "/v1/verifications", api.VerificationRequest{Signature: testPDF(), Data: doc}, 400, "give no separate data"},
		{"verify with a bad digest", "partner-a", "/v1/verifications", api.VerificationRequest{Signature: a.detached(t, doc), Digest: "00", DigestAlgorithm: "md5"}, 400, "digest_algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(a.evidence.Records())
			st, ct, body := a.post(t, tc.client, "", tc.path, tc.body)
			// The type each kind of mistake is documented with.
			want := map[int]api.ProblemType{403: api.TypeNotAllowed, 404: api.TypeUnknownProfile, 413: api.TypePayloadTooLarge}[tc.status]
			switch {
			case strings.Contains(tc.detail, "JSON") || tc.detail == "unknown field":
				want = api.TypeMalformedRequest
			case tc.detail == "give the signed data":
				want = api.TypeDataRequired
			case want == "":
				want = api.TypeInvalidRequest
			}
			p := wantTypedProblem(t, st, http.Header{"Content-Type": {ct}}, body, want)
			if st != tc.status || !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("HTTP %d %s %+v, want %d with %q", st, ct, p, tc.status, tc.detail)
			}
			for _, r := range a.evidence.Records()[before:] {
				if r.Type == evidence.SignatureCreated {
					t.Errorf("something was signed: %+v", r)
				}
			}
		})
	}

	t.Run("wrong content type", func(t *testing.T) {
		resp, err := a.clients["partner-a"].Post(a.url+"/v1/signatures", "application/octet-stream", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("HTTP %d", resp.StatusCode)
		}
	})

	t.Run("garbage is a FORMAT_FAILURE report", func(t *testing.T) {
		st, _, body := a.post(t, "partner-a", "", "/v1/verifications", api.VerificationRequest{Signature: []byte("garbage")})
		if st != 200 || !strings.Contains(string(body), `"sub_indication":"FORMAT_FAILURE"`) {
			t.Errorf("HTTP %d: %s", st, body)
		}
	})

	// Our own failure (the TSA): 503 without the internal text, nothing
	// signed.
	t.Run("TSA down", func(t *testing.T) {
		st, _, body := a.post(t, "broken", a.brokenURL, "/v1/signatures", api.SignatureRequest{Profile: "broken", Document: doc})
		if st != http.StatusServiceUnavailable || strings.Contains(string(body), "disk full") || strings.Contains(string(body), "/var/lib") {
			t.Errorf("HTTP %d: %s", st, body)
		}
	})
}

// detached returns a detached signature of doc by the "default" profile.
func (a *signingAPI) detached(t *testing.T, doc []byte) []byte {
	t.Helper()
	st, _, body := a.post(t, "partner-a", "", "/v1/signatures", api.SignatureRequest{Profile: "default", Document: doc, Detached: true})
	var res api.SignatureResponse
	if st != 200 || json.Unmarshal(body, &res) != nil {
		t.Fatalf("HTTP %d: %s", st, body)
	}
	return res.Signature
}

// testPDF is a minimal one-page PDF with a classic cross-reference table.
func testPDF() []byte {
	var b bytes.Buffer
	off := map[int]int{}
	obj := func(n int, body string) { off[n] = b.Len(); fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", n, body) }
	b.WriteString("%PDF-1.7\n")
	obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
	obj(2, "<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	obj(3, "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>")
	content := "BT /F1 18 Tf 72 760 Td (Decision) Tj ET"
	obj(4, fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(content), content))
	start := b.Len()
	fmt.Fprintf(&b, "xref\n0 5\n0000000000 65535 f \n")
	for i := 1; i < 5; i++ {
		fmt.Fprintf(&b, "%010d 00000 n \n", off[i])
	}
	fmt.Fprintf(&b, "trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", start)
	return b.Bytes()
}
