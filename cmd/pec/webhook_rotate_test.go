package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"pec/hsm"
)

// TestWebhookClientFollowsTLSRotation: the client that pushes to partners'
// endpoints authenticates with the node's TLS key, the one its listeners
// present: after pec keys rotate tls and a reload, the next push proves
// the new key and certificate — not the key the node started with, which
// a partner may have been told is retired (or its CA revoked).
func TestWebhookClientFollowsTLSRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	var stderr strings.Builder
	if code := run([]string{"init", "--dir", dir, "--software-keys"}, nil, io.Discard, &stderr); code != exitOK {
		t.Fatalf("pec init: exit %d: %s", code, stderr.String())
	}
	config := filepath.Join(dir, "pec.yaml")
	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	cert, err := nodeCertificate(ctx, cfg, keys)
	if err != nil || cert == nil {
		t.Fatalf("nodeCertificate: %v, %v", cert, err)
	}
	first := cert.Certificate()

	// The partner's endpoint: the node's own dev listener certificate will
	// do as its server certificate; it requires a client certificate of the
	// dev root and keeps the serial of each one it saw.
	roots := x509.NewCertPool()
	if err := addPEMFiles(roots, []string{filepath.Join(dir, "pki", "root-ca.pem")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []*big.Int
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.TLS.PeerCertificates[0].SerialNumber)
			mu.Unlock()
		}),
		TLSConfig: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots, GetCertificate: cert.GetCertificate},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	cfg.Exchange.WebhookRoots = []string{filepath.Join(dir, "pki", "root-ca.pem")}
	client, err := webhookClient(cfg, cert)
	if err != nil || client == nil {
		t.Fatalf("webhookClient: %v, %v", client, err)
	}
	push := func() *big.Int {
		t.Helper()
		resp, err := client.Post(fmt.Sprintf("https://%s/pec", ln.Addr()), "application/octet-stream", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	if got := push(); got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("the first push proved serial %x, want the node's certificate %x", got, first.SerialNumber)
	}

	stderr.Reset()
	if code := run([]string{"keys", "rotate", "--config", config, "tls"}, nil, io.Discard, &stderr); code != exitOK {
		t.Fatalf("pec keys rotate tls: exit %d: %s", code, stderr.String())
	}
	rl := &reloader{cfg: cfg, keys: keys, r: reloadable{cert: cert, webhook: client}, tlsCert: cert,
		log: slog.New(slog.DiscardHandler), live: map[string]string{}, recorded: map[string]bool{}}
	for _, ref := range cfg.keyRefs() {
		rl.live[ref.slot] = *ref.label
	}
	if err := rl.reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	rotated := cert.Certificate()
	if rotated.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the reload kept the first TLS certificate")
	}
	st, err := loadKeyState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := st.current("tls"); !ok || g.CertSHA256 != certSHA256(rotated) {
		t.Fatalf("the certificate in use is not keys.json's current tls generation (%+v)", g)
	}
	// The same client, its keep-alive connection of the first push
	// included: the next push proves the rotated certificate.
	if got := push(); got.Cmp(rotated.SerialNumber) != 0 {
		t.Fatalf("after the rotation the push proved serial %x, want the rotated certificate %x (the first was %x)", got, rotated.SerialNumber, first.SerialNumber)
	}
}
