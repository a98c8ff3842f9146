package gateway_test

import (
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

	"pec/gateway"
	"pec/proof"
	"pec/tsa"
)

// TestProofEndpoint: a partner reads the proof of its own exchange, not
// another's; an auditor reads all; every read is itself evidence.
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
	plog, err := proof.Open(t.Context(), store, signer, proof.AuthorityTimestamper{Authority: authority}, proof.Config{}, proof.Options{})
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
	rec, err := plog.Append(t.Context(), &proof.Record{
		Type:    proof.SubmissionAccepted,
		Subject: "exchange-1",
		Actors:  []proof.Actor{proof.ActorFromCertificate("sender", certs["partner-a"])},
		Digests: []proof.Digest{{Name: "dossier", Algorithm: "sha256", Value: make([]byte, 32)}},
	})
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
	auditorFP := sha256.Sum256(certs["auditor"].Raw)
	srv := httptest.NewUnstartedServer(gateway.NewAPIHandler(authority, 1024, gateway.Options{Proofs: &gateway.ProofReader{
		Log:     plog,
		Export:  proof.ExportOptions{LogChain: []*x509.Certificate{logCert, p.ca.Cert}},
		Auditor: func(c *x509.Certificate) bool { return sha256.Sum256(c.Raw) == auditorFP },
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
	for _, tc := range []struct {
		client, id string
		status     int
	}{
		{"partner-a", rec.ID, http.StatusOK},
		{"auditor", rec.ID, http.StatusOK},
		{"partner-b", rec.ID, http.StatusNotFound},
		{"partner-a", "nosuch", http.StatusNotFound},
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
			if b.Manifest.Evidence != rec.ID {
				t.Errorf("bundle of %s, want %s", b.Manifest.Evidence, rec.ID)
			}
			readID := resp.Header.Get("PEC-Evidence-ID")
			idx, err := store.Lookup(t.Context(), readID)
			if err != nil {
				t.Fatalf("the read's evidence %q: %v", readID, err)
			}
			stored, err := store.Record(t.Context(), idx)
			if err != nil {
				t.Fatal(err)
			}
			read, err := proof.UnmarshalRecord(stored.Data)
			if err != nil || read.Type != proof.ProofRead || read.Subject != rec.ID || !read.Involves(sha256.Sum256(certs[tc.client].Raw)) {
				t.Errorf("the read's evidence: %+v, %v", read, err)
			}
		})
	}
}
