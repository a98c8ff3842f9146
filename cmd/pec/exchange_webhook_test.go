package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/gateway/api"
	"pec/internal/cms"
	"pec/internal/devpki"
	"pec/middleoffice"
	"pec/signing"
)

// TestExchangeWebhook: partner-a sends to partner-b, whose directory entry
// is now the webhook channel, while partner-b's endpoint is down: the
// node's pushes fail, each attempt recorded; the endpoint comes up and the
// next push delivers — over mutual TLS, the node authenticated by its TLS
// certificate — the seal and the encrypted documents, which partner-b
// decrypts with its key, and partner-b answers with its signed
// acknowledgment: partner-a sees the exchange acknowledged, the failed
// attempts in its history and in its proof bundle.
func TestExchangeWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pec serve")
	}
	dir := filepath.Join(t.TempDir(), "node")
	if code := run([]string{"init", "--dir", dir}, nil, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("pec init: exit %d", code)
	}
	clients := filepath.Join(dir, "pki", "clients")
	rootPEM := filepath.Join(dir, "pki", "root-ca.pem")

	// partner-b's endpoint: a server certificate of partner-b's own CA,
	// trusted by the node through exchange.webhook_roots.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca, err := devpki.NewRootCA(caKey, "Partner B CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvCert, err := ca.IssueServer(srvKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "partner-b-ca.pem"), devpki.CertPEM(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "pec.yaml")
	yaml, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	edited := string(yaml)
	for _, r := range [][2]string{
		{"      channel: {type: pull}\n      encryption_cert_file: pki/clients/partner-b-encryption.pem",
			fmt.Sprintf("      channel: {type: webhook, url: \"https://127.0.0.1:%d/pec\"}\n      encryption_cert_file: pki/clients/partner-b-encryption.pem", port)},
		{"webhook_roots: [pki/root-ca.pem]", "webhook_roots: [partner-b-ca.pem]"},
		{"retry_delay: 1s ", "retry_delay: 200ms "},
		{"max_retry_delay: 5m", "max_retry_delay: 400ms"},
		{"poll_interval: 1s ", "poll_interval: 100ms "},
	} {
		if !strings.Contains(edited, r[0]) {
			t.Fatalf("pec.yaml has no %q", r[0])
		}
		edited = strings.Replace(edited, r[0], r[1], 1)
	}
	if err := os.WriteFile(config, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	node := startNode(t, config)
	a, err := apiClient("https://"+node.api, filepath.Join(clients, "partner-a.pem"), filepath.Join(clients, "partner-a.key"), []string{rootPEM}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	doc := []byte("Demande d'extrait n° 42, poussée par webhook.\n")
	sum := sha256.Sum256(doc)
	m := middleoffice.Manifest{Recipient: "partner-b", Procedure: "dossier", Subject: "webhook",
		Documents: []middleoffice.Document{{Name: "demande.txt", MediaType: "text/plain", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(doc))}}}
	sub, err := a.Submit(t.Context(), m, "webhook-1", []api.Upload{{Name: "demande.txt", Content: bytes.NewReader(doc)}})
	if err != nil {
		t.Fatal(err)
	}
	status := func() *middleoffice.Exchange {
		ex, err := a.Exchange(t.Context(), sub.Exchange)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	count := func(ex *middleoffice.Exchange, typ string) (n int) {
		for _, e := range ex.Events {
			if string(e.Type) == typ {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, ok func(*middleoffice.Exchange) bool) *middleoffice.Exchange {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ex := status()
			if ok(ex) {
				return ex
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: state %s, events %+v\n%s", what, ex.State, ex.Events, node.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Down: the attempts fail, each recorded.
	waitFor("two failed attempts", func(ex *middleoffice.Exchange) bool { return count(ex, "delivery.attempt_failed") >= 2 })

	// Up: the endpoint checks the node's certificate, the seal and the
	// envelope, and answers with partner-b's signed acknowledgment.
	roots := x509.NewCertPool()
	rootCerts, err := devpki.LoadCertsPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(rootCerts[0])
	encPair, err := tls.LoadX509KeyPair(filepath.Join(clients, "partner-b-encryption.pem"), filepath.Join(clients, "partner-b-encryption.key"))
	if err != nil {
		t.Fatal(err)
	}
	encCert, _ := x509.ParseCertificate(encPair.Certificate[0])
	bPair, err := tls.LoadX509KeyPair(filepath.Join(clients, "partner-b.pem"), filepath.Join(clients, "partner-b.key"))
	if err != nil {
		t.Fatal(err)
	}
	bCert, _ := x509.ParseCertificate(bPair.Certificate[0])
	ackSigner, err := signing.NewSigner(bPair.PrivateKey.(*ecdsa.PrivateKey), []*x509.Certificate{bCert}, signing.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var pushes int
	var received []byte
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		pushes++
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", 401)
			return
		}
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/related" {
			http.Error(w, "not multipart/related", 400)
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		sealPart, err := mr.NextPart()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		seal, _ := io.ReadAll(sealPart)
		sd, err := cms.ParseSignedData(seal)
		if err != nil || !sd.Attached {
			http.Error(w, "no seal", 400)
			return
		}
		var sm middleoffice.SealedManifest
		if err := json.Unmarshal(sd.Content, &sm); err != nil || sm.Exchange != sub.Exchange {
			http.Error(w, "not the sealed manifest", 400)
			return
		}
		envPart, err := mr.NextPart()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		env, _ := io.ReadAll(envPart)
		plain, _, err := cms.Decrypt(env, cms.RecipientKey{Cert: encCert, Key: encPair.PrivateKey}, nil)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		received = plain
		ack, err := ackSigner.Sign(r.Context(), sd.Content, true)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/pkcs7-mime")
		w.Write(ack.DER)
	})
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw, ca.Cert.Raw}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: roots, MinVersion: tls.VersionTLS12,
	}}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	ex := waitFor("acknowledged", func(ex *middleoffice.Exchange) bool { return ex.State == middleoffice.StateAcknowledged })
	mu.Lock()
	if !bytes.Equal(received, doc) || pushes != 1 {
		t.Errorf("the endpoint received %q in %d pushes", received, pushes)
	}
	mu.Unlock()
	if count(ex, "delivery.delivered") != 1 || count(ex, "delivery.acknowledged") != 1 {
		t.Errorf("events %+v", ex.Events)
	}
	// The failed attempts are in the exchange's proof bundle.
	bundle, _, err := a.ExchangeProof(t.Context(), sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "exchange.zip")
	if err := os.WriteFile(bundleFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"proof", "show", "--roots", rootPEM, bundleFile}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("pec proof show: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "delivery.attempt_failed") || !strings.Contains(out.String(), "delivery.acknowledged") {
		t.Errorf("the bundle shows:\n%s", out.String())
	}
	node.terminate(t)
}
