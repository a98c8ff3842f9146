package gateway_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/evidence"
	"pec/gateway"
	"pec/middleoffice"
	"pec/proof"
	"pec/tsa"
)

// TestProofEndpoint: a partner reads the proof of its own exchange and of
// its own time-stamp, not another's; an auditor reads all; every read is
// itself evidence.
func TestProofEndpoint(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	authority := newAuthority(t, p, tsa.Options{})
	logKey := mustKey(t)
	logCert, err := p.ca.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "PEC evidence log"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, logKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := proof.NewNoteSigner("pec.test/proof", logKey)
	if err != nil {
		t.Fatal(err)
	}
	store, err := proof.OpenBolt(filepath.Join(t.TempDir(), "proof.db"), proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	plog, err := proof.Open(t.Context(), store, signer, proof.AuthorityTimestamper{Authority: authority}, proof.Config{SealInterval: 20 * time.Millisecond}, proof.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plog.Close()

	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	clients := map[string]*http.Client{}
	certs := map[string]*x509.Certificate{}
	for _, name := range []string{"partner-a", "partner-b", "auditor"} {
		k := mustKey(t)
		c, err := p.ca.IssueClient(k.Public(), name, "Test", now)
		if err != nil {
			t.Fatal(err)
		}
		certs[name] = c
		clients[name] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: "localhost",
			Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}},
		}}}
	}
	recIDs, err := plog.Append(t.Context(), &evidence.Record{
		Type:    evidence.SubmissionAccepted,
		Subject: "exchange-1",
		Actors:  []evidence.Actor{evidence.ActorFromCertificate("sender", certs["partner-a"])},
		Digests: []evidence.Digest{{Name: "dossier", Algorithm: "sha256", Value: make([]byte, 32)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := struct{ ID string }{recIDs[0]}

	serverKey := mustKey(t)
	serverCert, err := p.ca.IssueServer(serverKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := gateway.ServerTLSConfig([]*x509.Certificate{serverCert, p.ca.Cert}, serverKey, roots)
	if err != nil {
		t.Fatal(err)
	}
	// The auditor is one by its role in the directory.
	dir, err := middleoffice.Open(t.Context(), middleoffice.Config{Partners: []middleoffice.PartnerConfig{{Partner: middleoffice.Partner{
		ID: "auditor", Name: "Audit", Roles: []middleoffice.Role{middleoffice.RoleAuditor},
		Certificates: []middleoffice.CertificateRule{{Subject: certs["auditor"].Subject.String(), Issuer: p.ca.Cert.Subject.String()}},
	}}}}, nil, middleoffice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := middleoffice.NewPolicy(dir, middleoffice.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	// The API's authority records its tokens in the log, which stamps its
	// own checkpoints with the plain one.
	srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(authority.WithEvidence(plog), 1024, gateway.Options{Policy: pol, Proofs: &gateway.ProofReader{
		Log:    plog,
		Export: proof.ExportOptions{LogChain: []*x509.Certificate{logCert, p.ca.Cert}},
	}}))
	srv.TLS = tlsCfg
	srv.StartTLS()
	defer srv.Close()

	get := func(client, id string) (*http.Response, []byte) {
		t.Helper()
		resp, err := clients[client].Get(srv.URL + "/v1/proofs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	// partner-b's own time-stamp, through the API: its record names it.
	tsq, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: make([]byte, 32), Certificates: true}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tsResp, err := clients["partner-b"].Post(srv.URL+"/v1/timestamps", "application/timestamp-query", bytes.NewReader(tsq))
	if err != nil {
		t.Fatal(err)
	}
	tsResp.Body.Close()
	tsID := tsResp.Header.Get("PEC-Evidence-ID")
	if tsResp.StatusCode != http.StatusOK || tsID == "" {
		t.Fatalf("POST /v1/timestamps: %s, evidence %q", tsResp.Status, tsID)
	}
	for _, tc := range []struct {
		client, id string
		status     int
	}{
		{"partner-a", rec.ID, http.StatusOK},
		{"auditor", rec.ID, http.StatusOK},
		{"partner-b", rec.ID, http.StatusNotFound},
		{"partner-a", "nosuch", http.StatusNotFound},
		{"partner-b", tsID, http.StatusOK},
		{"partner-a", tsID, http.StatusNotFound},
		{"auditor", tsID, http.StatusOK},
	} {
		t.Run(tc.client+"/"+tc.id, func(t *testing.T) {
			resp, body := get(tc.client, tc.id)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != http.StatusOK {
				return
			}
			b, err := proof.VerifyBundle(body, proof.BundleVerifyOptions{Roots: roots})
			if err != nil {
				t.Fatalf("the bundle does not verify: %v", err)
			}
			if b.Manifest.Evidence != tc.id {
				t.Errorf("bundle of %s, want %s", b.Manifest.Evidence, tc.id)
			}
			readID := resp.Header.Get("PEC-Evidence-ID")
			idx, _, err := plog.WaitSealed(t.Context(), readID)
			if err != nil {
				t.Fatalf("the read's evidence %q: %v", readID, err)
			}
			stored, err := store.Record(t.Context(), idx)
			if err != nil {
				t.Fatal(err)
			}
			read, err := evidence.UnmarshalRecord(stored.Data)
			if err != nil || read.Type != evidence.ProofRead || read.Subject != tc.id || !read.Involves(sha256.Sum256(certs[tc.client].Raw)) {
				t.Errorf("the read's evidence: %+v, %v", read, err)
			}
		})
	}
}
