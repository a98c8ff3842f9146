package gateway_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/gateway"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

// TestServerCertificateRotation: a TLS listener whose certificate is
// replaced by Set presents the new one at the next handshake, while
// clients keep connecting without a failure; Set refuses a certificate
// that is not the key's, expired, or not for serverAuth, changing
// nothing.
func TestServerCertificateRotation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	now := time.Now()
	issue := func() ([]*x509.Certificate, *keyPair) {
		k := mustKey(t)
		c, err := p.ca.IssueServer(k.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{c, p.ca.Cert}, &keyPair{k}
	}
	chain1, k1 := issue()
	chain2, k2 := issue()
	src, err := gateway.NewServerCertificate(chain1, k1.key)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.ServerTLSConfig(chain1, k1.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.Serve(cfg)
	srv := httptest.NewUnstartedServer(gateway.NewTSAHandler(newAuthority(t, p, tsa.Options{}), 1024, gateway.Options{}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)

	// served is the certificate of a new connection.
	served := func() (*x509.Certificate, error) {
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	if c, err := served(); err != nil || !c.Equal(chain1[0]) {
		t.Fatalf("before: %v", err)
	}
	var stop atomic.Bool
	var failed, ok atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, DisableKeepAlives: true}, Timeout: 10 * time.Second}
			for !stop.Load() {
				resp, err := client.Get(srv.URL + "/healthz")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok.Add(1)
			}
		})
	}
	for i := range 10 {
		chain, k := chain2, k2
		if i%2 == 1 {
			chain, k = chain1, k1
		}
		old, err := src.Set(chain, k.key)
		if err != nil {
			t.Fatal(err)
		}
		if old == nil || old.Equal(chain[0]) {
			t.Errorf("Set returned %v", old)
		}
		if c, err := served(); err != nil || !c.Equal(chain[0]) {
			t.Errorf("after Set %d: %v, served the other certificate", i, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d requests failed across the rotations, %d passed", failed.Load(), ok.Load())
	}

	client, err := p.ca.IssueClient(k2.key.Public(), "a client", "PEC", now)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := p.ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "old"}, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, k2.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	current := src.Certificate()
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		want  string
	}{
		{"another key's certificate", chain1, "not that of the key"},
		{"expired", []*x509.Certificate{expired}, "not now"},
		{"a client certificate", []*x509.Certificate{client}, "serverAuth"},
		{"none", nil, "needs a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := src.Set(tc.chain, k2.key); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
			if !src.Certificate().Equal(current) {
				t.Error("a refused certificate is served")
			}
		})
	}
}

type keyPair struct{ key *ecdsa.PrivateKey }

// TestLogCertificates: GET /log-certificates publishes the certificate of
// every checkpoint key of the log, the current one first, and follows
// their rotation; without certificates it is 404.
func TestLogCertificates(t *testing.T) {
	n := newTlogNode(t)
	srv := httptest.NewServer(gateway.NewTSAHandler(n.auth, 1024, gateway.Options{Proofs: &gateway.ProofReader{Log: n.log}}))
	defer srv.Close()
	if resp, err := http.Get(srv.URL + "/log-certificates"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("without certificates: %v %v", resp.Status, err)
	}
	logCert := func(serial int64) *x509.Certificate {
		c, err := n.p.ca.Issue(&x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "log"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
		}, mustKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first, second := logCert(10), logCert(11)
	certs, err := proof.NewLogCerts([]*x509.Certificate{first, n.p.ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(gateway.NewTSAHandler(n.auth, 1024, gateway.Options{Proofs: &gateway.ProofReader{Log: n.log, Export: proof.ExportOptions{LogCerts: certs}}}))
	defer srv2.Close()
	get := func() []*x509.Certificate {
		resp, err := http.Get(srv2.URL + "/log-certificates")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pem-certificate-chain" {
			t.Fatalf("%s %s: %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		got, err := devpki.ParseCertsPEM(body)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := get(); len(got) != 2 || !got[0].Equal(first) || !got[1].Equal(n.p.ca.Cert) {
		t.Errorf("before the rotation: %d certificates", len(got))
	}
	if err := certs.Rotate([]*x509.Certificate{second, n.p.ca.Cert}); err != nil {
		t.Fatal(err)
	}
	// The root once, the new key's certificate first.
	got := get()
	if len(got) != 3 || !got[0].Equal(second) || !got[1].Equal(n.p.ca.Cert) || !got[2].Equal(first) {
		t.Errorf("after the rotation: %d certificates, the first %q", len(got), got[0].Subject)
	}
}
