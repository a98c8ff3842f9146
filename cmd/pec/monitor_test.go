package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

// monitorNode is a real evidence log (bbolt, an in-process TSA, a note
// key with its certificate) published by the gateway's handler, behind a
// proxy that a test may have rewrite answers: a node that lies.
type monitorNode struct {
	dir     string
	logCert string // PEM files
	roots   string
	log     *proof.Log
	srv     *httptest.Server

	mu     sync.Mutex
	tamper func(path string, body []byte) []byte
}

func newMonitorNode(t *testing.T) *monitorNode {
	t.Helper()
	now := time.Now()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ca, err := devpki.NewRootCA(key(), "monitor test root", now)
	if err != nil {
		t.Fatal(err)
	}
	logKey, tsaKey := key(), key()
	logCert, err := ca.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "PEC evidence log"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, logKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	tsaCert, err := ca.IssueTSA(tsaKey.Public(), "monitor test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	n := &monitorNode{dir: t.TempDir()}
	n.logCert, n.roots = filepath.Join(n.dir, "proof.pem"), filepath.Join(n.dir, "root.pem")
	for file, data := range map[string][]byte{n.logCert: devpki.CertPEM(logCert, ca.Cert), n.roots: devpki.CertPEM(ca.Cert)} {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	serials, err := tsa.OpenFileSerials(filepath.Join(n.dir, "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	authority, err := tsa.New(tsa.Config{KeyLabel: "tsa", PolicyOID: "2.999.3161.1", Accuracy: time.Second}, tsaKey, []*x509.Certificate{tsaCert, ca.Cert}, serials, tsa.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := proof.NewNoteSigner("pec.test/proof", logKey)
	if err != nil {
		t.Fatal(err)
	}
	store, err := proof.OpenBolt(filepath.Join(n.dir, "proof.db"), proof.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if n.log, err = proof.Open(t.Context(), store, signer, proof.AuthorityTimestamper{Authority: authority}, proof.Config{}, proof.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.log.Close() })
	h := gateway.NewTSAHandler(authority, 1024, gateway.Options{Proofs: &gateway.ProofReader{Log: n.log}})
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		n.mu.Lock()
		if n.tamper != nil {
			body = n.tamper(r.URL.RequestURI(), body)
		}
		n.mu.Unlock()
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *monitorNode) setTamper(f func(path string, body []byte) []byte) {
	n.mu.Lock()
	n.tamper = f
	n.mu.Unlock()
}

// grow appends count records and waits until they are sealed.
func (n *monitorNode) grow(t *testing.T, count int) {
	t.Helper()
	before := uint64(0)
	if h := n.log.Latest(); h != nil {
		before = h.Size
	}
	for i := range count {
		if _, err := n.log.Append(t.Context(), sampleMonitorRecord(int(before)+i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for h := n.log.Latest(); h == nil || h.Size < before+uint64(count); h = n.log.Latest() {
		if time.Now().After(deadline) {
			t.Fatal("records not sealed within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sampleMonitorRecord(i int) *evidence.Record {
	return &evidence.Record{
		Type:    evidence.SubmissionAccepted,
		Subject: "dossier-" + big.NewInt(int64(i)).String(),
		Digests: []evidence.Digest{{Name: "dossier", Algorithm: "sha256", Value: make([]byte, 32)}},
	}
}

// monitor runs pec proof monitor against the node; it returns the exit
// status, stdout and stderr.
func (n *monitorNode) monitor(t *testing.T, state string, extra ...string) (int, string, string) {
	t.Helper()
	args := append([]string{"proof", "monitor", "--url", n.srv.URL, "--state", state, "--log-cert", n.logCert, "--roots", n.roots}, extra...)
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func (n *monitorNode) wantExit(t *testing.T, state string, want int, stderrHas string, extra ...string) string {
	t.Helper()
	code, stdout, stderr := n.monitor(t, state, extra...)
	if code != want || !strings.Contains(stderr, stderrHas) {
		t.Fatalf("monitor %v: exit %d, stdout %q, stderr %q; want exit %d and %q", extra, code, stdout, stderr, want, stderrHas)
	}
	return stdout
}

// flipByte changes one byte of body at offset from its end.
func flipByte(body []byte, fromEnd int) []byte {
	out := bytes.Clone(body)
	if len(out) > fromEnd {
		out[len(out)-1-fromEnd] ^= 1
	}
	return out
}

// TestMonitorRefusesALyingNode: every answer of the node that does not
// check — a signature, a token, a consistency proof, a tile — is exit 1
// and leaves the state file as it was.
func TestMonitorRefusesALyingNode(t *testing.T) {
	n := newMonitorNode(t)
	n.grow(t, 3)
	state := filepath.Join(t.TempDir(), "state.json")
	if out := n.wantExit(t, state, 0, ""); !strings.HasPrefix(out, "first use: trusting checkpoint 3 of pec.test/proof") {
		t.Fatalf("first use: %q", out)
	}
	seen, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	n.grow(t, 5)
	resp, err := http.Get(n.srv.URL + "/checkpoints/3.tst")
	if err != nil {
		t.Fatal(err)
	}
	var token3 bytes.Buffer
	_, _ = token3.ReadFrom(resp.Body)
	resp.Body.Close()

	for _, c := range []struct {
		name   string
		tamper func(path string, body []byte) []byte
		flags  []string
		want   string
	}{
		{"checkpoint signature", func(p string, b []byte) []byte {
			if p == "/checkpoint" {
				return flipByte(b, 5) // in the signature's base64
			}
			return b
		}, nil, "invalid: the checkpoint served"},
		{"checkpoint size", func(p string, b []byte) []byte {
			if p == "/checkpoint" {
				return bytes.Replace(b, []byte("\n8\n"), []byte("\n9\n"), 1) // another size, same signature
			}
			return b
		}, nil, "invalid: the checkpoint served"},
		{"token of another checkpoint", func(p string, b []byte) []byte {
			if p == "/checkpoints/8.tst" {
				return token3.Bytes()
			}
			return b
		}, nil, "invalid: the time-stamp token of checkpoint 8"},
		{"token changed", func(p string, b []byte) []byte {
			if strings.HasSuffix(p, ".tst") {
				return flipByte(b, 10)
			}
			return b
		}, nil, "invalid: the time-stamp token of checkpoint 8"},
		{"consistency proof changed", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/proof/consistency") {
				var cp api.ConsistencyProof
				_ = json.Unmarshal(b, &cp)
				cp.Proof[0] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
				out, _ := json.Marshal(cp)
				return out
			}
			return b
		}, nil, "fork: checkpoint 8"},
		{"consistency proof of other sizes", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/proof/consistency") {
				return bytes.Replace(b, []byte(`"old":3`), []byte(`"old":2`), 1)
			}
			return b
		}, nil, "invalid: the consistency proof 3→8: not a proof of these sizes"},
		{"consistency proof not JSON", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/proof/consistency") {
				return []byte("<html>")
			}
			return b
		}, nil, "invalid: the consistency proof 3→8"},
		{"a hash short", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/proof/consistency") {
				var cp api.ConsistencyProof
				_ = json.Unmarshal(b, &cp)
				cp.Proof[0] = "AAAA"
				out, _ := json.Marshal(cp)
				return out
			}
			return b
		}, nil, "hash 0 is not 32 bytes"},
		{"tile changed", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/tile/") {
				return flipByte(b, 0)
			}
			return b
		}, []string{"--tiles"}, "invalid: the hash tiles do not give the root of checkpoint 8"},
		{"tile short", func(p string, b []byte) []byte {
			if strings.HasPrefix(p, "/tile/") {
				return b[:len(b)-1]
			}
			return b
		}, []string{"--tiles"}, "invalid: the hash tiles do not give the root of checkpoint 8"},
		{"checkpoint too large", func(p string, b []byte) []byte {
			if p == "/checkpoint" {
				return bytes.Repeat([]byte("a"), 65<<10)
			}
			return b
		}, nil, "invalid: GET /checkpoint: over 65536 bytes"},
		{"not published", func(p string, b []byte) []byte {
			if p == "/checkpoint" {
				return nil
			}
			return b
		}, nil, "invalid: the checkpoint served"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n.setTamper(c.tamper)
			defer n.setTamper(nil)
			n.wantExit(t, state, 1, c.want, c.flags...)
			if now, _ := os.ReadFile(state); !bytes.Equal(now, seen) {
				t.Error("the state file changed")
			}
		})
	}
	// The honest node: consistent, both ways.
	n.wantExit(t, state, 0, "", "--tiles")
	if out := n.wantExit(t, state, 0, ""); !strings.Contains(out, "checkpoint 8 of pec.test/proof") || !strings.HasSuffix(out, ": unchanged\n") {
		t.Errorf("after the honest run: %q", out)
	}
	entries, _ := os.ReadDir(filepath.Dir(state))
	for _, e := range entries {
		if e.Name() != "state.json" && e.Name() != "state.json.conflict" {
			t.Errorf("left in the state's directory: %s", e.Name())
		}
	}
}

// TestMonitorState: a state file that cannot tell what was seen is exit
// 2, never a silent first use.
func TestMonitorState(t *testing.T) {
	n := newMonitorNode(t)
	n.grow(t, 2)
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	n.wantExit(t, state, 0, "")
	good, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st monitorState
	if err := json.Unmarshal(good, &st); err != nil || st.Size != 2 || st.Format != monitorStateFormat || st.Origin != "pec.test/proof" {
		t.Fatalf("state %s (%v)", good, err)
	}
	edit := func(f func(*monitorState)) []byte {
		s := st
		f(&s)
		out, _ := json.Marshal(s)
		return out
	}
	other := newMonitorNode(t) // another log key
	other.grow(t, 2)
	otherState := filepath.Join(dir, "other.json")
	other.wantExit(t, otherState, 0, "")
	foreign, err := os.ReadFile(otherState)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("{"), "not a state file"},
		{"unknown field", []byte(`{"format":"pec-monitor-state/1","extra":1}`), "not a state file"},
		{"other format", edit(func(s *monitorState) { s.Format = "pec-monitor-state/2" }), "format"},
		{"size edited", edit(func(s *monitorState) { s.Size = 1 }), "size and root do not match its checkpoint"},
		{"root edited", edit(func(s *monitorState) { s.Root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }), "size and root do not match its checkpoint"},
		{"checkpoint edited", edit(func(s *monitorState) { s.Checkpoint = strings.Replace(s.Checkpoint, "\n2\n", "\n1\n", 1) }), "does not verify with the key of --log-cert"},
		{"another log's", foreign, "does not verify with the key of --log-cert"},
		{"too large", bytes.Repeat([]byte(" "), 1<<20+1), "over"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(state, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			n.wantExit(t, state, 2, c.want)
			if now, _ := os.ReadFile(state); !bytes.Equal(now, c.data) {
				t.Error("the state file was rewritten")
			}
		})
	}
	// An unreadable state file (a directory).
	n.wantExit(t, dir, 2, "--state")
	// --origin must be the state's.
	if err := os.WriteFile(state, good, 0o644); err != nil {
		t.Fatal(err)
	}
	n.wantExit(t, state, 2, `the state file`, "--origin", "other.example/log")
	n.wantExit(t, state, 0, "", "--origin", "pec.test/proof")
	// On first use, --origin must be the log's.
	n.wantExit(t, filepath.Join(dir, "new.json"), 1, "invalid: the checkpoint served", "--origin", "other.example/log")
}

// fuzzLogKey is a fixed note key, so that the committed corpus holds
// state files whose checkpoint verifies. A test key: it signs nothing else.
const fuzzLogKey = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgK7UabJ8RXGtDFQrU
c56Frt8fVrVPC7NykVfKL+BZI2ahRANCAAT06ORnxmkb/1LUpHxjC3fu6+oeOekj
AP9RAYdm9GASmcvkfe3tazzuHJSqadfT5lBIlY71HfquJI1mbJSjFVUG
-----END PRIVATE KEY-----
`

func fuzzSigner(t testing.TB) *proof.NoteSigner {
	block, _ := pem.Decode([]byte(fuzzLogKey))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := proof.NewNoteSigner("pec.test/proof", k.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzMonitorState: a state file is read or refused with an error, never
// a panic; what is read agrees with its signed checkpoint.
func FuzzMonitorState(f *testing.F) {
	signer := fuzzSigner(f)
	note, err := signer.Sign(proof.Checkpoint{Origin: "pec.test/proof", Size: 3, Root: make([]byte, 32)}.Text())
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := json.Marshal(monitorState{Format: monitorStateFormat, Origin: "pec.test/proof", Size: 3, Root: base64.StdEncoding.EncodeToString(make([]byte, 32)), Checkpoint: string(note), Token: "AAAA"})
	f.Add(valid)
	f.Add([]byte(`{"format":"pec-monitor-state/1"}`))
	f.Add([]byte(`{}{}`))
	pub := signer.Public()
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parseMonitorState(data, pub)
		if err != nil {
			return
		}
		var st monitorState
		if json.Unmarshal(data, &st) != nil || v.cp.Size != st.Size || base64.StdEncoding.EncodeToString(v.cp.Root) != st.Root || v.cp.Origin != st.Origin {
			t.Fatalf("read %+v from %q", v.cp, data)
		}
		if _, err := signer.Verifier().Open(v.note); err != nil {
			t.Fatalf("read a state whose checkpoint does not verify: %v", err)
		}
	})
}

// FuzzConsistencyProof: a node's consistency proof is read or refused,
// never a panic; what is read is a list of 32-byte hashes.
func FuzzConsistencyProof(f *testing.F) {
	f.Add([]byte(`{"old":3,"new":8,"proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`), uint64(3), uint64(8))
	f.Add([]byte(`{"old":0,"new":8,"proof":[]}`), uint64(0), uint64(8))
	f.Add([]byte(`{"old":3,"new":8,"proof":null}`), uint64(3), uint64(8))
	f.Fuzz(func(t *testing.T, body []byte, oldSize, newSize uint64) {
		hashes, err := parseConsistencyProof(body, oldSize, newSize)
		if err != nil {
			return
		}
		if len(hashes) > 128 {
			t.Fatalf("%d hashes", len(hashes))
		}
		for _, h := range hashes {
			if len(h) != 32 {
				t.Fatalf("a hash of %d bytes", len(h))
			}
		}
		_ = proof.VerifyConsistency(oldSize, newSize, hashes, make([]byte, 32), make([]byte, 32)) // no panic
	})
}

// TestMonitorHTTPS: a tsa listener with TLS (tls.tsa_tls), its server
// certificate under one of --roots.
func TestMonitorHTTPS(t *testing.T) {
	n := newMonitorNode(t)
	n.grow(t, 2)
	srv := httptest.NewTLSServer(n.srv.Config.Handler)
	defer srv.Close()
	roots := filepath.Join(t.TempDir(), "roots.pem")
	data, err := os.ReadFile(n.roots)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(roots, append(data, devpki.CertPEM(srv.Certificate())...), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"proof", "monitor", "--url", srv.URL, "--state", state, "--log-cert", n.logCert, "--roots", roots}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 || !strings.HasPrefix(stdout.String(), "first use: trusting checkpoint 2") {
		t.Fatalf("over HTTPS: exit %d, %q %q", code, stdout.String(), stderr.String())
	}
	// Without the server's root: the node is unavailable, exit 1.
	code = run([]string{"proof", "monitor", "--url", srv.URL, "--state", state, "--log-cert", n.logCert, "--roots", n.roots}, strings.NewReader(""), &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "unavailable: ") {
		t.Fatalf("over HTTPS with an unknown server certificate: exit %d, %q", code, stderr.String())
	}
}
