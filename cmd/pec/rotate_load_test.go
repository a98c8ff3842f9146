package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/gateway/api"
	"pec/internal/devpki"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// TestRotateUnderLoad rotates every key of a running `pec serve` twice
// (pec keys rotate, then SIGHUP) while 8 clients ask it for time-stamp
// tokens and CAdES signatures for 5 s, over new TLS connections: not one
// request fails. Every token and signature verifies with the certificate
// it names, and both the first and the last certificates signed some;
// the old and the new log keys' bundles verify, and the store audits.
func TestRotateUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5 s load on pec serve")
	}
	dir := filepath.Join(t.TempDir(), "node")
	if code := run([]string{"init", "--dir", dir}, nil, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("pec init: exit %d", code)
	}
	config := filepath.Join(dir, "pec.yaml")
	pki := filepath.Join(dir, "pki")
	roots := x509.NewCertPool()
	rootCerts, err := devpki.LoadCertsPEM(filepath.Join(pki, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(rootCerts[0])
	node := startNode(t, config)
	// A new TLS connection for every signature: the handshakes meet
	// the TLS rotations.
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "clients", "partner-a.pem"), filepath.Join(pki, "clients", "partner-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := api.NewClient("https://"+node.api, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	verifier := &signing.Verifier{Chain: signing.X509Validator{Roots: roots}, TSARoots: roots}

	var (
		mu       sync.Mutex
		failures []string
		tsaCerts = map[string]int{} // sha256 of the signer certificate → tokens
		sigCerts = map[string]int{}
		ids      []string
		stop     atomic.Bool
		wg       sync.WaitGroup
		requests atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				requests.Add(1)
				if w%2 == 1 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					doc := fmt.Appendf(nil, "writer %d doc %d", w, i)
					res, err := client.Sign(ctx, api.SignatureRequest{Profile: "default", Document: doc, Detached: true})
					cancel()
					if err != nil {
						fail("signature %d/%d: %v", w, i, err)
						continue
					}
					r, err := verifier.Verify(context.Background(), res.Signature, signing.VerifyOptions{Data: doc})
					if err != nil || r.Signatures[0].Indication != signing.TotalPassed {
						fail("signature %d/%d does not verify: %v %+v", w, i, err, r)
						continue
					}
					mu.Lock()
					sigCerts[r.Signatures[0].Signer.FingerprintSHA256]++
					ids = append(ids, res.ID)
					mu.Unlock()
					continue
				}
				digest := make([]byte, 32)
				rand.Read(digest)
				id, tok, err := requestToken(node.tsa, digest)
				if err != nil {
					fail("token %d/%d: %v", w, i, err)
					continue
				}
				vt, err := tsa.Verify(tok, digest, crypto.SHA256, tsa.VerifyOptions{Roots: roots})
				if err != nil {
					fail("token %d/%d does not verify: %v", w, i, err)
					continue
				}
				mu.Lock()
				tsaCerts[certSHA256(vt.SignerCert)]++
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	rotate := func() {
		for _, k := range [][]string{{"tsa"}, {"signing", "default"}, {"tls"}, {"proof"}} {
			var out, errOut bytes.Buffer
			if code := run(append([]string{"keys", "rotate", "--config", config}, k...), nil, &out, &errOut); code != exitOK {
				t.Errorf("pec keys rotate %v: exit %d: %s", k, code, errOut.String())
			}
		}
		if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	rotate()
	time.Sleep(1500 * time.Millisecond)
	rotate()
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	node.terminate(t)

	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across the rotations; the first: %s", len(failures), requests.Load(), failures[0])
	}
	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := applyKeyState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for slot, seen := range map[string]map[string]int{"tsa": tsaCerts, "signing/default": sigCerts} {
		gens := st.Keys[slot].Generations
		if len(gens) != 3 {
			t.Fatalf("%s: %d generations, want 3", slot, len(gens))
		}
		if seen[gens[0].CertSHA256] == 0 || seen[gens[2].CertSHA256] == 0 {
			t.Errorf("%s: answers by certificate %v; want some by the first and the last of %v", slot, seen, gens)
		}
	}
	t.Logf("%d requests, none failed: tokens by TSA certificate %v, signatures by certificate %v", requests.Load(), tsaCerts, sigCerts)

	// The first answer's bundle (the first log key) and the last's (the
	// last key) both verify, each with its own log certificate.
	var logCerts []string
	for _, id := range []string{ids[0], ids[len(ids)-1]} {
		data, err := exportBundle(context.Background(), cfg, "", id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: roots})
		if err != nil {
			t.Fatalf("the bundle of %s: %v", id, err)
		}
		logCerts = append(logCerts, certSHA256(b.Certificates[0]))
	}
	if gens := st.Keys["proof"].Generations; logCerts[0] != gens[0].CertSHA256 || logCerts[1] != gens[2].CertSHA256 {
		t.Errorf("the bundles carry log certificates %v; want the first and the last of %v", logCerts, gens)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"proof", "audit", "--config", config}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("pec proof audit: exit %d: %s", code, errOut.String())
	}
}

// requestToken asks the TSA at addr for a token with its certificate on
// digest: the evidence id and the token.
func requestToken(addr string, digest []byte) (string, []byte, error) {
	req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true}).Marshal()
	if err != nil {
		return "", nil, err
	}
	resp, err := plainHTTP.Post("http://"+addr+"/tsa", "application/timestamp-query", bytes.NewReader(req))
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp.Header.Get("PEC-Evidence-ID"), body, nil
}
