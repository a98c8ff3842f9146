package tsa_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/internal/certtest"
	"pec/internal/devpki"
	"pec/internal/interop"
	"pec/tsa"
)

// osslTSA is a time-stamping authority run by OpenSSL (`openssl ts -reply`,
// and `openssl cms -sign` for what ts cannot make): the independent
// producer of the tokens that Verify judges. Its certificates come from
// devpki.
type osslTSA struct {
	root      *x509.Certificate
	rootFile  string
	cert      *x509.Certificate
	certFile  string
	keyFile   string
	chainFile string // certificates the token carries after the TSA's; "" for none
	ca        *devpki.CA
	key       crypto.Signer
	mu        sync.Mutex // `openssl ts -reply` rewrites the serial file of its config
}

type osslOpts struct {
	name         string        // the TSA certificate's common name; "": "Interop TSA"
	key          crypto.Signer // nil: a fresh ECDSA P-256 key
	intermediate bool          // issue the TSA certificate under an intermediate CA
	// issue makes the TSA certificate; nil: devpki's IssueTSA.
	issue func(ca *devpki.CA, pub crypto.PublicKey) (*x509.Certificate, error)
}

func osslECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func osslRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func putFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newOSSLTSA(t testing.TB, o osslOpts) *osslTSA {
	t.Helper()
	interop.Need(t, "openssl", "openssl")
	now := time.Now()
	dir := t.TempDir()
	root, err := devpki.NewRootCA(osslECKey(t, elliptic.P256()), "Interop Root", now)
	if err != nil {
		t.Fatal(err)
	}
	s := &osslTSA{root: root.Cert, rootFile: putFile(t, dir, "root.pem", devpki.CertPEM(root.Cert)), ca: root}
	if o.intermediate {
		key := osslECKey(t, elliptic.P256())
		cert, err := root.Issue(&x509.Certificate{
			Subject:               pkix.Name{CommonName: "Interop Intermediate"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(devpki.LeafValidity),
			KeyUsage:              x509.KeyUsageCertSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		s.ca = &devpki.CA{Cert: cert, Signer: key}
		s.chainFile = putFile(t, dir, "chain.pem", devpki.CertPEM(cert))
	}
	key := o.key
	if key == nil {
		key = osslECKey(t, elliptic.P256())
	}
	name := o.name
	if name == "" {
		name = "Interop TSA"
	}
	issue := o.issue
	if issue == nil {
		issue = func(ca *devpki.CA, pub crypto.PublicKey) (*x509.Certificate, error) {
			return ca.IssueTSA(pub, name, now)
		}
	}
	s.key = key
	if s.cert, err = issue(s.ca, key.Public()); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := devpki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	s.certFile = putFile(t, dir, "tsa.pem", devpki.CertPEM(s.cert))
	s.keyFile = putFile(t, dir, "tsa.key", keyPEM)
	return s
}

// config writes the [tsa] section of an openssl.cnf (see openssl-ts(1)).
// Each setting "name = value" replaces a default; "name = -" removes it.
func (s *osslTSA) config(t testing.TB, settings ...string) string {
	t.Helper()
	dir := t.TempDir()
	conf := [][2]string{
		{"serial", filepath.Join(dir, "serial")},
		{"crypto_device", "builtin"},
		{"signer_cert", s.certFile},
		{"signer_key", s.keyFile},
		{"signer_digest", "sha256"},
		{"default_policy", "1.2.3.4.1"},
		{"other_policies", "1.2.3.4.5"},
		{"digests", "sha1, sha256, sha384, sha512"},
		{"accuracy", "secs:1, millisecs:500, microsecs:100"},
		{"clock_precision_digits", "3"},
		{"ordering", "yes"},
		{"tsa_name", "yes"},
		{"ess_cert_id_chain", "no"},
		{"ess_cert_id_alg", "sha256"},
	}
	if s.chainFile != "" {
		conf = append(conf, [2]string{"certs", s.chainFile})
	}
	for _, set := range settings {
		name, value, ok := strings.Cut(set, " = ")
		if !ok {
			t.Fatalf("setting %q is not name = value", set)
		}
		found := false
		for i := range conf {
			if conf[i][0] == name {
				conf[i][1], found = value, true
			}
		}
		if !found {
			conf = append(conf, [2]string{name, value})
		}
	}
	var b strings.Builder
	b.WriteString("[ tsa ]\ndefault_tsa = tsa_config\n\n[ tsa_config ]\n")
	for _, kv := range conf {
		if kv[1] != "-" {
			b.WriteString(kv[0] + " = " + kv[1] + "\n")
		}
	}
	return putFile(t, dir, "tsa.cnf", []byte(b.String()))
}

// stamp has OpenSSL time-stamp data: `openssl ts -query` with the query
// options ("-sha384", "-cert", "-no_nonce", "-tspolicy OID"), then `openssl
// ts -reply` with conf. It returns the TimeStampResp and the bare token.
func (s *osslTSA) stamp(t testing.TB, data []byte, conf string, query ...string) (resp, token []byte) {
	t.Helper()
	resp = s.respond(t, data, conf, query...)
	dir := t.TempDir()
	tok := filepath.Join(dir, "t.tst")
	interop.OpenSSL(t, "ts", "-reply", "-in", putFile(t, dir, "r.tsr", resp), "-token_out", "-out", tok)
	return resp, readFile(t, tok)
}

// respond is stamp without the token: for a response that grants none.
func (s *osslTSA) respond(t testing.TB, data []byte, conf string, query ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	q, r := filepath.Join(dir, "q.tsq"), filepath.Join(dir, "r.tsr")
	interop.OpenSSL(t, append([]string{"ts", "-query", "-data", putFile(t, dir, "data", data), "-out", q}, query...)...)
	s.mu.Lock()
	defer s.mu.Unlock()
	interop.OpenSSL(t, "ts", "-reply", "-config", conf, "-queryfile", q, "-out", r)
	return readFile(t, r)
}

// reply answers a DER TimeStampReq with `openssl ts -reply`. It may run on
// any goroutine.
func (s *osslTSA) reply(query []byte, conf string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "ossl-reply")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	q, r := filepath.Join(dir, "q.tsq"), filepath.Join(dir, "r.tsr")
	if err := os.WriteFile(q, query, 0o600); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := interop.Run("openssl", "ts", "-reply", "-config", conf, "-queryfile", q, "-out", r); err != nil {
		return nil, err
	}
	return os.ReadFile(r)
}

// cmsSign signs the TSTInfo of token again with `openssl cms -sign`, as a
// TSA built on a general CMS signer would, with s's key and certificate;
// args add options: "-cades" (the signingCertificateV2 attribute),
// "-keyid", "-nocerts", "-md sha1", "-keyopt rsa_padding_mode:pss".
func (s *osslTSA) cmsSign(t testing.TB, token []byte, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	tst, out := filepath.Join(dir, "tstinfo.der"), filepath.Join(dir, "signed.der")
	interop.OpenSSL(t, "cms", "-verify", "-noverify", "-inform", "DER", "-in", putFile(t, dir, "token.der", token), "-out", tst)
	interop.OpenSSL(t, append([]string{"cms", "-sign", "-binary", "-nodetach", "-in", tst,
		"-econtent_type", "1.2.840.113549.1.9.16.1.4", "-signer", s.certFile, "-inkey", s.keyFile,
		"-outform", "DER", "-out", out}, args...)...)
	return readFile(t, out)
}

func (s *osslTSA) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.root)
	return p
}

func digestOf(h crypto.Hash, data []byte) []byte {
	switch h {
	case crypto.SHA1:
		d := sha1.Sum(data)
		return d[:]
	case crypto.SHA256:
		d := sha256.Sum256(data)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(data)
		return d[:]
	}
	d := sha512.Sum512(data)
	return d[:]
}

// flip returns a copy of b with the byte at i inverted.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}

var stampedData = []byte("The tele-dossier of a citizen.\n")

// TestVerifyOpenSSLTokens: tokens made by OpenSSL — responses and bare
// tokens, DER and PEM, ECDSA, RSA PKCS #1 v1.5 and RSASSA-PSS signatures,
// ESSCertIDv2 and ESSCertID, issuerAndSerialNumber and subjectKeyIdentifier
// signer identifiers, with and without certificates — are valid, and read
// as OpenSSL wrote them.
func TestVerifyOpenSSLTokens(t *testing.T) {
	t.Parallel()
	ec := newOSSLTSA(t, osslOpts{})
	p384 := newOSSLTSA(t, osslOpts{key: osslECKey(t, elliptic.P384())})
	rsaTSA := newOSSLTSA(t, osslOpts{key: osslRSAKey(t)})
	chain := newOSSLTSA(t, osslOpts{intermediate: true})

	ecResp, ecToken := ec.stamp(t, stampedData, ec.config(t), "-sha256", "-cert")
	_, p384Token := p384.stamp(t, stampedData, p384.config(t, "signer_digest = sha384"), "-sha384")
	rsaV1Resp, _ := rsaTSA.stamp(t, stampedData, rsaTSA.config(t, "ess_cert_id_alg = sha1", "signer_digest = sha512"), "-sha512", "-cert", "-no_nonce")
	chainResp, _ := chain.stamp(t, stampedData, chain.config(t, "ess_cert_id_chain = yes"), "-sha256", "-cert")
	// For openssl cms to sign again, as another TSA: a TSTInfo without the
	// tsa name.
	_, unnamed := ec.stamp(t, stampedData, ec.config(t, "tsa_name = no"), "-sha256", "-cert")
	plainResp, _ := ec.stamp(t, stampedData, ec.config(t, "tsa_name = no", "ordering = no", "accuracy = -", "clock_precision_digits = 0"),
		"-sha384", "-cert", "-tspolicy", "1.2.3.4.5")

	type check func(t *testing.T, tok *tsa.Token)
	for _, tc := range []struct {
		name   string
		tsa    *osslTSA
		in     []byte
		hash   crypto.Hash
		certs  []*x509.Certificate // VerifyOptions.Certificates
		checks []check
	}{
		{name: "P-256/response", tsa: ec, in: ecResp, hash: crypto.SHA256, checks: []check{
			func(t *testing.T, tok *tsa.Token) {
				if !tok.Policy.Equal(asn1.ObjectIdentifier{1, 2, 3, 4, 1}) {
					t.Errorf("Policy = %v, want the default policy 1.2.3.4.1", tok.Policy)
				}
				if tok.Nonce == nil || tok.Nonce.Sign() <= 0 {
					t.Errorf("Nonce = %v, want the request's", tok.Nonce)
				}
				if want := 1500100 * time.Microsecond; tok.Accuracy != want {
					t.Errorf("Accuracy = %v, want %v", tok.Accuracy, want)
				}
				if !tok.Ordering {
					t.Error("Ordering = false, want true")
				}
				if want := ec.cert.Subject.String(); tok.TSAName != want {
					t.Errorf("TSAName = %q, want %q", tok.TSAName, want)
				}
				if tok.Serial == nil || tok.Serial.Sign() <= 0 {
					t.Errorf("Serial = %v", tok.Serial)
				}
				if d := time.Since(tok.GenTime); d < -time.Minute || d > time.Minute || tok.GenTime.Location() != time.UTC {
					t.Errorf("GenTime = %v, want about now, UTC", tok.GenTime)
				}
				if len(tok.Certificates) != 1 || !tok.Certificates[0].Equal(ec.cert) {
					t.Errorf("the token carries %d certificates, want the TSA's", len(tok.Certificates))
				}
				if !bytes.Equal(tok.Raw, ecToken) {
					t.Error("Raw is not the token of the response")
				}
			},
		}},
		{name: "P-256/token", tsa: ec, in: ecToken, hash: crypto.SHA256},
		{name: "P-256/token/PEM", tsa: ec, in: pem.EncodeToMemory(&pem.Block{Type: "TIME-STAMP TOKEN", Bytes: ecToken}), hash: crypto.SHA256},
		{name: "P-256/response/PEM", tsa: ec, in: append([]byte("issued by the interop TSA\n"), pem.EncodeToMemory(&pem.Block{Type: "TSA RESPONSE", Bytes: ecResp})...), hash: crypto.SHA256},
		{name: "P-384/sha384/no certificate in the token", tsa: p384, in: p384Token, hash: crypto.SHA384, certs: []*x509.Certificate{p384.cert}, checks: []check{
			func(t *testing.T, tok *tsa.Token) {
				if len(tok.Certificates) != 0 {
					t.Errorf("the token carries %d certificates, want none (no certReq)", len(tok.Certificates))
				}
			},
		}},
		{name: "RSA/sha512/ESSCertID v1/no nonce", tsa: rsaTSA, in: rsaV1Resp, hash: crypto.SHA512, checks: []check{
			func(t *testing.T, tok *tsa.Token) {
				if tok.Nonce != nil {
					t.Errorf("Nonce = %v, want none", tok.Nonce)
				}
			},
		}},
		{name: "intermediate CA in the token", tsa: chain, in: chainResp, hash: crypto.SHA256, checks: []check{
			func(t *testing.T, tok *tsa.Token) {
				if len(tok.Certificates) != 2 {
					t.Errorf("the token carries %d certificates, want the TSA's and the intermediate", len(tok.Certificates))
				}
			},
		}},
		{name: "intermediate CA given", tsa: chain, in: chain.cmsSign(t, unnamed, "-cades", "-nocerts"), hash: crypto.SHA256,
			certs: []*x509.Certificate{chain.ca.Cert, chain.cert}},
		{name: "no tsa name, accuracy or ordering/asked policy", tsa: ec, in: plainResp, hash: crypto.SHA384, checks: []check{
			func(t *testing.T, tok *tsa.Token) {
				if tok.TSAName != "" || tok.Accuracy != 0 || tok.Ordering {
					t.Errorf("TSAName %q, Accuracy %v, Ordering %v; want none", tok.TSAName, tok.Accuracy, tok.Ordering)
				}
				if !tok.Policy.Equal(asn1.ObjectIdentifier{1, 2, 3, 4, 5}) {
					t.Errorf("Policy = %v, want 1.2.3.4.5", tok.Policy)
				}
				if tok.GenTime.Nanosecond() != 0 {
					t.Errorf("GenTime = %v, want whole seconds", tok.GenTime)
				}
			},
		}},
		{name: "RSASSA-PSS (openssl cms)", tsa: rsaTSA, hash: crypto.SHA256,
			in: rsaTSA.cmsSign(t, unnamed, "-cades", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32")},
		{name: "RSASSA-PSS/sha512/digest-length salt (openssl cms)", tsa: rsaTSA, hash: crypto.SHA256,
			in: rsaTSA.cmsSign(t, unnamed, "-cades", "-md", "sha512", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:digest")},
		{name: "RSA/sha384/issuerSerial in ESSCertIDv2 (openssl cms)", tsa: rsaTSA, hash: crypto.SHA256,
			in: rsaTSA.cmsSign(t, unnamed, "-cades", "-md", "sha384")},
		{name: "subjectKeyIdentifier sid (openssl cms)", tsa: p384, hash: crypto.SHA256,
			in: p384.cmsSign(t, unnamed, "-cades", "-keyid", "-md", "sha384")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tsa.VerifyOptions{Roots: tc.tsa.roots(), Certificates: tc.certs}
			tok, err := tsa.Verify(tc.in, digestOf(tc.hash, stampedData), tc.hash, opts)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tok.Hash != tc.hash || !bytes.Equal(tok.Imprint, digestOf(tc.hash, stampedData)) {
				t.Errorf("imprint %v %x, want the data's", tok.Hash, tok.Imprint)
			}
			if tok.SignerCert == nil || !tok.SignerCert.Equal(tc.tsa.cert) {
				t.Errorf("SignerCert is not the TSA certificate")
			}
			for _, c := range tc.checks {
				c(t, tok)
			}
			// ParseToken reads the same, without checking.
			parsed, err := tsa.ParseToken(tc.in)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if !parsed.GenTime.Equal(tok.GenTime) || parsed.Serial.Cmp(tok.Serial) != 0 || !bytes.Equal(parsed.Raw, tok.Raw) {
				t.Errorf("ParseToken read %v/%v, Verify %v/%v", parsed.GenTime, parsed.Serial, tok.GenTime, tok.Serial)
			}
			if h, err := tsa.TokenHash(tc.in); err != nil || h != tc.hash {
				t.Errorf("TokenHash = %v, %v; want %v", h, err, tc.hash)
			}
		})
	}
}

var (
	ecdsaWithSHA256     = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	ecdsaWithSHA256Null = []byte{0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00}
	signerInfoV1        = []byte{0x02, 0x01, 0x01}
)

// TestVerifyRejects: each fault is reported as the check that failed.
func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	ec := newOSSLTSA(t, osslOpts{})
	other := newOSSLTSA(t, osslOpts{name: "Other TSA"})
	resp, token := ec.stamp(t, stampedData, ec.config(t), "-sha256", "-cert")
	_, unnamed := ec.stamp(t, stampedData, ec.config(t, "tsa_name = no"), "-sha256", "-cert")
	_, noCertToken := ec.stamp(t, stampedData, ec.config(t), "-sha256")
	sha1Resp, _ := ec.stamp(t, stampedData, ec.config(t), "-sha1", "-cert")
	sum := digestOf(crypto.SHA256, stampedData)

	// Certificates that OpenSSL's ts refuses to sign with, so openssl cms
	// signs with them.
	ekuCert := func(critical bool, usages ...asn1.ObjectIdentifier) func(*devpki.CA, crypto.PublicKey) (*x509.Certificate, error) {
		return func(ca *devpki.CA, pub crypto.PublicKey) (*x509.Certificate, error) {
			tmpl := &x509.Certificate{
				Subject:   pkix.Name{CommonName: "Interop TSA"},
				NotBefore: time.Now().Add(-time.Hour),
				NotAfter:  time.Now().Add(time.Hour),
				KeyUsage:  x509.KeyUsageDigitalSignature,
			}
			if usages != nil {
				v, err := asn1.Marshal(usages)
				if err != nil {
					return nil, err
				}
				tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: critical, Value: v}}
			}
			return ca.Issue(tmpl, pub)
		}
	}
	serverAuth := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	nonCritical := newOSSLTSA(t, osslOpts{issue: ekuCert(false, devpki.OIDTimeStamping)})
	noEKU := newOSSLTSA(t, osslOpts{issue: ekuCert(false)})
	twoEKUs := newOSSLTSA(t, osslOpts{issue: ekuCert(true, devpki.OIDTimeStamping, serverAuth)})
	serverOnly := newOSSLTSA(t, osslOpts{issue: ekuCert(true, serverAuth)})

	// A second certificate for ec's key: the same key identifier, another
	// certificate hash.
	twin, err := ec.ca.IssueTSA(ec.key.Public(), "Interop TSA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rejection, err := timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadAlgorithm)
	if err != nil {
		t.Fatal(err)
	}
	imprintAt := bytes.Index(token, sum)
	if imprintAt < 0 {
		t.Fatal("imprint not found in the token")
	}

	for _, tc := range []struct {
		name   string
		in     []byte
		digest []byte
		hash   crypto.Hash
		tsa    *osslTSA // whose roots; nil: ec
		opts   func(*tsa.VerifyOptions)
		want   error
	}{
		{name: "other data", in: resp, digest: digestOf(crypto.SHA256, []byte("Another document.\n")), hash: crypto.SHA256, want: tsa.ErrImprintMismatch},
		{name: "other hash", in: resp, digest: digestOf(crypto.SHA512, stampedData), hash: crypto.SHA512, want: tsa.ErrImprintMismatch},
		{name: "wrong root", in: resp, tsa: other, want: tsa.ErrChain},
		{name: "after the certificate expired", in: resp, opts: func(o *tsa.VerifyOptions) { o.CurrentTime = time.Now().Add(3 * devpki.LeafValidity) }, want: tsa.ErrChain},
		{name: "flipped signature byte", in: flip(resp, len(resp)-5), want: tsa.ErrBadSignature},
		// RFC 5758 section 3.2, the one policy of internal/cms: signing
		// refuses the same.
		{name: "ECDSA algorithm with NULL parameters", in: certtest.SwapLast(t, token, ecdsaWithSHA256, ecdsaWithSHA256Null), want: tsa.ErrUnsupportedAlgorithm},
		{name: "SignerInfo version 3 with issuerAndSerialNumber", in: certtest.SwapLast(t, token, signerInfoV1, []byte{0x02, 0x01, 0x03}), want: tsa.ErrMalformed},
		{name: "flipped TSTInfo byte", in: flip(token, imprintAt+3), want: tsa.ErrBadSignature},
		{name: "no certificate anywhere", in: noCertToken, want: tsa.ErrNoSigner},
		{name: "no certificate, another given", in: noCertToken, opts: func(o *tsa.VerifyOptions) { o.Certificates = []*x509.Certificate{other.cert} }, want: tsa.ErrNoSigner},
		{name: "non-critical EKU", in: nonCritical.cmsSign(t, unnamed, "-cades"), tsa: nonCritical, want: tsa.ErrEKU},
		{name: "no EKU", in: noEKU.cmsSign(t, unnamed, "-cades"), tsa: noEKU, want: tsa.ErrEKU},
		{name: "timeStamping and serverAuth", in: twoEKUs.cmsSign(t, unnamed, "-cades"), tsa: twoEKUs, want: tsa.ErrEKU},
		{name: "serverAuth only", in: serverOnly.cmsSign(t, unnamed, "-cades"), tsa: serverOnly, want: tsa.ErrChain},
		{name: "no signing-certificate attribute", in: ec.cmsSign(t, token), want: tsa.ErrSigningCertificate},
		{name: "signing-certificate names another certificate", in: ec.cmsSign(t, token, "-cades", "-keyid", "-nocerts"),
			opts: func(o *tsa.VerifyOptions) { o.Certificates = []*x509.Certificate{twin} }, want: tsa.ErrSigningCertificate},
		{name: "tsa name of another TSA", in: other.cmsSign(t, token, "-cades"), tsa: other, want: tsa.ErrTSAName},
		{name: "SHA-1 signature digest", in: ec.cmsSign(t, token, "-cades", "-md", "sha1"), want: tsa.ErrUnsupportedAlgorithm},
		{name: "SHA-1 imprint", in: sha1Resp, digest: digestOf(crypto.SHA1, stampedData), hash: crypto.SHA1, want: tsa.ErrUnsupportedAlgorithm},
		{name: "truncated", in: resp[:len(resp)-10], want: tsa.ErrMalformed},
		{name: "trailing garbage", in: append(bytes.Clone(resp), 0, 0), want: tsa.ErrMalformed},
		{name: "trailing garbage after PEM", in: append(pem.EncodeToMemory(&pem.Block{Type: "TOKEN", Bytes: token}), "garbage"...), want: tsa.ErrMalformed},
		{name: "bad PEM", in: []byte("-----BEGIN TOKEN-----\n!!!!\n-----END TOKEN-----\n"), want: tsa.ErrMalformed},
		{name: "empty", in: nil, want: tsa.ErrMalformed},
		{name: "a certificate", in: ec.cert.Raw, want: tsa.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.tsa
			if s == nil {
				s = ec
			}
			opts := tsa.VerifyOptions{Roots: s.roots()}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			digest, hash := tc.digest, tc.hash
			if digest == nil {
				digest, hash = sum, crypto.SHA256
			}
			_, err := tsa.Verify(tc.in, digest, hash, opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v; want %v", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}

	t.Run("rejection response", func(t *testing.T) {
		_, err := tsa.Verify(rejection, sum, crypto.SHA256, tsa.VerifyOptions{Roots: ec.roots()})
		rej, ok := errors.AsType[*tsa.RejectError](err)
		if !ok || rej.Status != tsa.StatusRejection || rej.FailInfo != tsa.FailBadAlg {
			t.Fatalf("Verify: %v; want a rejection with badAlg", err)
		}
	})
	t.Run("no roots", func(t *testing.T) {
		if _, err := tsa.Verify(resp, sum, crypto.SHA256, tsa.VerifyOptions{}); err == nil {
			t.Fatal("Verify without roots succeeded")
		}
	})
	t.Run("TokenHash refuses SHA-1", func(t *testing.T) {
		if h, err := tsa.TokenHash(sha1Resp); !errors.Is(err, tsa.ErrUnsupportedAlgorithm) {
			t.Fatalf("TokenHash = %v, %v; want ErrUnsupportedAlgorithm", h, err)
		}
	})
}

// TestParseToken: ParseToken reads a response, its bare token and PEM the
// same way, and reports a rejection as the TSA's failInfo and text.
func TestParseToken(t *testing.T) {
	t.Parallel()
	ec := newOSSLTSA(t, osslOpts{})
	resp, token := ec.stamp(t, stampedData, ec.config(t), "-sha512", "-cert")
	want, err := tsa.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	if want.Hash != crypto.SHA512 || want.SignerCert == nil || !want.SignerCert.Equal(ec.cert) {
		t.Errorf("ParseToken: hash %v, signer %v", want.Hash, want.SignerCert)
	}
	for name, in := range map[string][]byte{
		"token":     token,
		"token PEM": pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: token}),
		"resp PEM":  pem.EncodeToMemory(&pem.Block{Type: "TIMESTAMP RESPONSE", Bytes: resp}),
	} {
		got, err := tsa.ParseToken(in)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got.Raw, want.Raw) || !got.GenTime.Equal(want.GenTime) || got.Nonce.Cmp(want.Nonce) != 0 ||
			got.Serial.Cmp(want.Serial) != 0 || !got.Policy.Equal(want.Policy) || got.TSAName != want.TSAName ||
			!bytes.Equal(got.Imprint, want.Imprint) || got.Accuracy != want.Accuracy {
			t.Errorf("%s: read %+v, the response %+v", name, got, want)
		}
	}

	// OpenSSL refuses a policy it does not know, with unacceptedPolicy.
	rejected := ec.respond(t, stampedData, ec.config(t), "-sha256", "-tspolicy", "1.2.3.4.99")
	_, err = tsa.ParseToken(rejected)
	rej, ok := errors.AsType[*tsa.RejectError](err)
	if !ok || rej.Status != tsa.StatusRejection || rej.FailInfo != tsa.FailUnacceptedPolicy || rej.Reason == "" {
		t.Fatalf("ParseToken(rejection) = %v; want a rejection with unacceptedPolicy and a reason", err)
	}
	t.Log(err)
}
