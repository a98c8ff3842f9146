package interop

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certification authority whose database OpenSSL keeps: the
// index.txt that `openssl ca` updates (-valid, -revoke) and reads to make
// CRLs (-gencrl), and that `openssl ocsp -index` answers from. The
// certificates themselves may come from anywhere (Go tests issue them).
type CA struct {
	Dir      string
	CertFile string // the CA certificate, PEM
	KeyFile  string // its key, PKCS#8 PEM
	conf     string
}

// NewCA writes cert and key to a new directory of t.TempDir() with an
// empty database.
func NewCA(t testing.TB, cert *x509.Certificate, key crypto.Signer) *CA {
	t.Helper()
	Need(t, "openssl", "openssl")
	dir := t.TempDir()
	ca := &CA{Dir: dir, CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key"), conf: filepath.Join(dir, "ca.cnf")}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	conf := `[ ca ]
default_ca = CA_default
[ CA_default ]
dir = ` + dir + `
database = $dir/index.txt
crlnumber = $dir/crlnumber
default_md = sha256
default_crl_days = 1
unique_subject = no
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
`
	for name, data := range map[string][]byte{
		"ca.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		"ca.key":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"ca.cnf":    []byte(conf),
		"index.txt": nil,
		"crlnumber": []byte("1000\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

func (ca *CA) certFile(t testing.TB, c *x509.Certificate) string {
	t.Helper()
	f := filepath.Join(ca.Dir, "cert-"+c.SerialNumber.Text(16)+".pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Add records c as valid in the database (`openssl ca -valid`).
func (ca *CA) Add(t testing.TB, c *x509.Certificate) {
	t.Helper()
	OpenSSL(t, "ca", "-config", ca.conf, "-keyfile", ca.KeyFile, "-cert", ca.CertFile, "-valid", ca.certFile(t, c))
	ca.touch(t)
}

// Revoke records c as revoked for reason (keyCompromise, superseded, ...)
// (`openssl ca -revoke`).
func (ca *CA) Revoke(t testing.TB, c *x509.Certificate, reason string) {
	t.Helper()
	OpenSSL(t, "ca", "-config", ca.conf, "-keyfile", ca.KeyFile, "-cert", ca.CertFile, "-revoke", ca.certFile(t, c), "-crl_reason", reason)
	ca.touch(t)
}

// touch moves the database's modification time forward, so that a running
// `openssl ocsp` sees the change even within the same second.
func (ca *CA) touch(t testing.TB) {
	t.Helper()
	future := time.Now().Add(time.Duration(touches.Add(1)) * time.Second)
	if err := os.Chtimes(filepath.Join(ca.Dir, "index.txt"), future, future); err != nil {
		t.Fatal(err)
	}
}

// touches makes each touch later than the one before.
var touches atomic.Int64

// CRL makes a CRL of the database with `openssl ca -gencrl` and returns its
// DER; args add options such as "-crlhours", "1" or "-crl_lastupdate", T.
func (ca *CA) CRL(t testing.TB, args ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "crl.pem")
	OpenSSL(t, append([]string{"ca", "-config", ca.conf, "-keyfile", ca.KeyFile, "-cert", ca.CertFile, "-gencrl", "-out", out}, args...)...)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("openssl ca -gencrl wrote no PEM CRL")
	}
	return block.Bytes
}

// OCSPOptions configure an `openssl ocsp` responder.
type OCSPOptions struct {
	Port       int    // 0: a free one
	SignerCert string // PEM file; "": the CA certificate
	SignerKey  string // PEM file; "": the CA key
	NextUpdate int    // minutes (-nmin); 0: no nextUpdate
	Extra      []string
}

// OCSPResponder is an `openssl ocsp` process answering from a CA's
// database.
type OCSPResponder struct {
	URL  string
	Port int
	cmd  *exec.Cmd
	out  *syncBuffer
	once sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartOCSP runs `openssl ocsp -index` for the CA as a subprocess, waits
// until it accepts connections, and stops it when the test ends. OpenSSL
// 3.0 takes -port as a number only: it listens on every interface, and the
// tests call it on 127.0.0.1.
func (ca *CA) StartOCSP(t testing.TB, o OCSPOptions) *OCSPResponder {
	t.Helper()
	Need(t, "openssl", "openssl")
	if o.Port == 0 {
		o.Port = FreePort(t)
	}
	if o.SignerCert == "" {
		o.SignerCert, o.SignerKey = ca.CertFile, ca.KeyFile
	}
	args := []string{"ocsp", "-index", filepath.Join(ca.Dir, "index.txt"), "-port", strconv.Itoa(o.Port),
		"-CA", ca.CertFile, "-rsigner", o.SignerCert, "-rkey", o.SignerKey, "-ignore_err"}
	if o.NextUpdate > 0 {
		args = append(args, "-nmin", strconv.Itoa(o.NextUpdate))
	}
	args = append(args, o.Extra...)
	r := &OCSPResponder{URL: fmt.Sprintf("http://127.0.0.1:%d", o.Port), Port: o.Port, out: &syncBuffer{}}
	r.cmd = exec.Command("openssl", args...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("openssl ocsp: %v", err)
	}
	t.Cleanup(r.Stop)
	// Ready once it says so: probing the port with a bare connection would
	// hang it (OpenSSL 3.0 waits forever on a connection closed without a
	// request).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if strings.Contains(r.out.String(), "waiting for OCSP client connections") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("openssl %v: not listening after 10s\n%s", args, r.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// Refresh makes the responder read its database again: OpenSSL 3.0
// notices a changed index before the request after next, so a throw-away
// request is sent first.
func (r *OCSPResponder) Refresh(t testing.TB) {
	t.Helper()
	resp, err := http.Get(r.URL + "/")
	if err == nil {
		resp.Body.Close()
	}
}

// Stop kills the responder (idempotent): afterwards its port refuses
// connections.
func (r *OCSPResponder) Stop() {
	r.once.Do(func() {
		if r.cmd.Process != nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
}

// Log is what the responder printed.
func (r *OCSPResponder) Log() string { return r.out.String() }
