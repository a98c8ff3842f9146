package tsa_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pec/internal/devpki"
	"pec/tsa"
)

// testTSA is an authority with a software key, a dev PKI, real serial
// numbers and a journal in a temporary directory.
type testTSA struct {
	*tsa.Authority
	roots   *x509.CertPool
	cert    *x509.Certificate
	ca      *devpki.CA
	key     crypto.Signer
	journal string // its path
	reg     *prometheus.Registry
}

func testConfig(dir string) tsa.Config {
	return tsa.Config{
		KeyLabel:         "tsa",
		CertFile:         "tsa.pem",
		PolicyOID:        "2.999.3161.1",
		AcceptedPolicies: []string{"2.999.3161.2"},
		Accuracy:         time.Second,
		SerialFile:       filepath.Join(dir, "serials"),
		JournalFile:      filepath.Join(dir, "journal.jsonl"),
	}
}

func newTestTSA(t testing.TB, mutate func(*tsa.Config, *tsa.Options)) *testTSA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newTestTSAKey(t, key, mutate)
}

func newTestTSAKey(t testing.TB, key crypto.Signer, mutate func(*tsa.Config, *tsa.Options)) *testTSA {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca, err := devpki.NewRootCA(rootKey, "tsa test root", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueTSA(key.Public(), "tsa test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := testConfig(dir)
	serials, err := tsa.OpenFileSerials(cfg.SerialFile, 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	journal, err := tsa.OpenJournal(cfg.JournalFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	reg := prometheus.NewRegistry()
	opts := tsa.Options{Registry: reg, Recorder: journal}
	if mutate != nil {
		mutate(&cfg, &opts)
	}
	a, err := tsa.New(cfg, key, []*x509.Certificate{cert, ca.Cert}, serials, opts)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &testTSA{Authority: a, roots: roots, cert: cert, ca: ca, key: key, journal: cfg.JournalFile, reg: reg}
}

type reqOpts struct {
	hash    crypto.Hash
	digest  []byte
	nonce   *big.Int
	certReq bool
	policy  asn1.ObjectIdentifier
	exts    []pkix.Extension
}

func makeRequest(t testing.TB, o reqOpts) []byte {
	t.Helper()
	if o.hash == 0 {
		o.hash = crypto.SHA256
	}
	if o.digest == nil {
		h := o.hash.New()
		h.Write([]byte("a tele-dossier"))
		o.digest = h.Sum(nil)
	}
	r := timestamp.Request{HashAlgorithm: o.hash, HashedMessage: o.digest, Nonce: o.nonce, Certificates: o.certReq, TSAPolicyOID: o.policy, ExtraExtensions: o.exts}
	der, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// libMu serialises calls into digitorus/pkcs7, whose BER reader keeps a
// package-level counter that the race detector (rightly) flags when
// parallel tests parse at once.
var libMu sync.Mutex

// libParseResponse is digitorus/timestamp's reading of a response: the
// independent check of our encoding.
func libParseResponse(resp []byte) (*timestamp.Timestamp, error) {
	libMu.Lock()
	defer libMu.Unlock()
	return timestamp.ParseResponse(resp)
}

// rawRequest is a TimeStampReq for any hash algorithm, known or not.
func rawRequest(t testing.TB, hashOID asn1.ObjectIdentifier, digest []byte) []byte {
	t.Helper()
	type imprint struct {
		Alg    pkix.AlgorithmIdentifier
		Digest []byte
	}
	der, err := asn1.Marshal(struct {
		Version int
		Imprint imprint
	}{1, imprint{pkix.AlgorithmIdentifier{Algorithm: hashOID, Parameters: asn1.NullRawValue}, digest}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// pkiStatus decodes the PKIStatusInfo of a TimeStampResp.
func pkiStatus(t testing.TB, resp []byte) (status int, fail asn1.BitString, text string) {
	t.Helper()
	var r struct {
		Status struct {
			Status       int
			StatusString []string       `asn1:"optional,utf8"`
			FailInfo     asn1.BitString `asn1:"optional"`
		}
		Token asn1.RawValue `asn1:"optional"`
	}
	if rest, err := asn1.Unmarshal(resp, &r); err != nil || len(rest) != 0 {
		t.Fatalf("not a DER TimeStampResp (%v): %x", err, resp)
	}
	return r.Status.Status, r.Status.FailInfo, strings.Join(r.Status.StatusString, " ")
}

func TestRespondGranted(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		for _, certReq := range []bool{true, false} {
			t.Run(h.String()+map[bool]string{true: "/certReq", false: ""}[certReq], func(t *testing.T) {
				digest := h.New()
				digest.Write([]byte("dossier"))
				nonce := big.NewInt(0x0102030405060708)
				resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{hash: h, digest: digest.Sum(nil), nonce: nonce, certReq: certReq}))
				if err != nil {
					t.Fatal(err)
				}
				ts, err := libParseResponse(resp)
				if err != nil {
					t.Fatalf("library cannot parse our response: %v", err)
				}
				if ts.HashAlgorithm != h || !bytes.Equal(ts.HashedMessage, digest.Sum(nil)) {
					t.Errorf("imprint %v %x", ts.HashAlgorithm, ts.HashedMessage)
				}
				if ts.Nonce == nil || ts.Nonce.Cmp(nonce) != 0 {
					t.Errorf("nonce %v, want %v", ts.Nonce, nonce)
				}
				if !ts.Policy.Equal(asn1.ObjectIdentifier{2, 999, 3161, 1}) {
					t.Errorf("policy %v", ts.Policy)
				}
				if ts.Accuracy != time.Second {
					t.Errorf("accuracy %v", ts.Accuracy)
				}
				if d := time.Since(ts.Time); d < 0 || d > time.Minute {
					t.Errorf("genTime %v", ts.Time)
				}
				if got := len(ts.Certificates) > 0; got != certReq {
					t.Errorf("certificates in token: %v, certReq %v", got, certReq)
				}
				if certReq {
					// The root is left out: a verifier must already hold it.
					if len(ts.Certificates) != 1 || !ts.Certificates[0].Equal(a.cert) {
						t.Errorf("certificates %d", len(ts.Certificates))
					}
				}
				tok, err := tsa.Verify(resp, digest.Sum(nil), h, tsa.VerifyOptions{Roots: a.roots, Certificates: []*x509.Certificate{a.cert}})
				if err != nil {
					t.Fatalf("our verifier refuses our token: %v", err)
				}
				if tok.Serial.Rsh(tok.Serial, 64).Int64() != 7 {
					t.Errorf("serial %x does not carry node 7", tok.Serial)
				}
			})
		}
	}
	if n := testutil.ToFloat64(counter(t, a.reg, "granted")); n != 6 {
		t.Errorf("pec_tsa_requests_total{status=granted} = %v", n)
	}
}

func counter(t testing.TB, reg *prometheus.Registry, status string) prometheus.Collector {
	t.Helper()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_tsa_requests_total", Help: "Time-stamp requests answered, by outcome: granted, a failInfo name, or error."}, []string{"status"})
	if err := reg.Register(c); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			t.Fatal(err)
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return c.WithLabelValues(status)
}

// TestRespondRejects: every client mistake is a rejection TimeStampResp with
// the right failInfo, and a nil error.
func TestRespondRejects(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	good := makeRequest(t, reqOpts{nonce: big.NewInt(42), certReq: true})
	sha1sum := make([]byte, 20)
	md5sum := make([]byte, 16)
	version2 := bytes.Clone(good)
	version2[4] = 2 // SEQUENCE { INTEGER 1 → 2
	unknownHash := bytes.Clone(good)
	copy(unknownHash[bytes.Index(unknownHash, []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}):], []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x7f})
	for _, tc := range []struct {
		name string
		req  []byte
		fail tsa.FailInfo
	}{
		{"empty", nil, tsa.FailBadDataFormat},
		{"garbage", []byte("hello, TSA"), tsa.FailBadDataFormat},
		{"truncated", good[:len(good)-1], tsa.FailBadDataFormat},
		{"trailing garbage", append(bytes.Clone(good), 0), tsa.FailBadDataFormat},
		{"indefinite length", append([]byte{0x30, 0x80}, append(bytes.Clone(good[2:]), 0, 0)...), tsa.FailBadDataFormat},
		{"version 2", version2, tsa.FailBadRequest},
		{"unknown hash OID", unknownHash, tsa.FailBadAlg},
		{"SHA-1", makeRequest(t, reqOpts{hash: crypto.SHA1, digest: sha1sum}), tsa.FailBadAlg},
		{"MD5", rawRequest(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}, md5sum), tsa.FailBadAlg},
		{"imprint too short", makeRequest(t, reqOpts{digest: make([]byte, 31)}), tsa.FailBadDataFormat},
		{"imprint too long", makeRequest(t, reqOpts{hash: crypto.SHA384, digest: make([]byte, 64)}), tsa.FailBadDataFormat},
		{"unknown policy", makeRequest(t, reqOpts{policy: asn1.ObjectIdentifier{1, 2, 3}}), tsa.FailUnacceptedPolicy},
		{"extension", makeRequest(t, reqOpts{exts: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Value: []byte{5, 0}}}}), tsa.FailUnacceptedExtension},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := a.Respond(context.Background(), tc.req)
			if err != nil {
				t.Fatalf("a client's mistake is not an error: %v", err)
			}
			status, fail, text := pkiStatus(t, resp)
			if status != tsa.StatusRejection || fail.At(int(tc.fail)) != 1 || fail.BitLength != int(tc.fail)+1 {
				t.Errorf("status %d failInfo %x (%d bits), want rejection with %v", status, fail.Bytes, fail.BitLength, tc.fail)
			}
			if text == "" {
				t.Error("no statusString says why")
			}
		})
	}
	// The accepted second policy is granted and written in the token.
	resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{policy: asn1.ObjectIdentifier{2, 999, 3161, 2}}))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := libParseResponse(resp)
	if err != nil || !ts.Policy.Equal(asn1.ObjectIdentifier{2, 999, 3161, 2}) {
		t.Errorf("accepted policy: %v %v", err, ts)
	}
}

type clockStatus struct {
	mu  sync.Mutex
	err error
}

func (c *clockStatus) Err() error { c.mu.Lock(); defer c.mu.Unlock(); return c.err }
func (c *clockStatus) set(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// TestClockGuardStopsIssuing: while the clock is out of bounds the authority
// answers timeNotAvailable and is not ready; it resumes by itself.
func TestClockGuardStopsIssuing(t *testing.T) {
	t.Parallel()
	clock := &clockStatus{}
	a := newTestTSA(t, func(_ *tsa.Config, o *tsa.Options) { o.Clock = clock })
	req := makeRequest(t, reqOpts{})
	respond := func() int {
		resp, err := a.Respond(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		status, fail, _ := pkiStatus(t, resp)
		if status != 0 && fail.At(int(tsa.FailTimeNotAvailable)) != 1 {
			t.Fatalf("failInfo %x", fail.Bytes)
		}
		return status
	}
	if respond() != tsa.StatusGranted || a.Ready() != nil {
		t.Fatal("not granted while in sync")
	}
	clock.set(errors.New("clock offset 3s exceeds the declared accuracy 1s"))
	if respond() != tsa.StatusRejection || a.Ready() == nil {
		t.Fatal("granted while the clock is out of bounds")
	}
	clock.set(nil)
	if respond() != tsa.StatusGranted || a.Ready() != nil {
		t.Fatal("did not resume")
	}
}

type failingRecorder struct{}

func (failingRecorder) Record(context.Context, *tsa.Issued) error { return errors.New("disk full") }

// TestUnrecordedTokenIsNotReleased: a token that cannot be recorded is an
// error, and no token leaves.
func TestUnrecordedTokenIsNotReleased(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, func(_ *tsa.Config, o *tsa.Options) { o.Recorder = failingRecorder{} })
	resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{}))
	if err == nil || resp != nil {
		t.Fatalf("resp %x, err %v", resp, err)
	}
}

// TestJournalHoldsEveryToken: each granted token's serial, imprint and
// digest is in the journal, once.
func TestJournalHoldsEveryToken(t *testing.T) {
	t.Parallel()
	a := newTestTSA(t, nil)
	const n = 200
	responses := make(chan []byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			digest := sha512.Sum512([]byte{byte(i), byte(i >> 8)})
			resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{hash: crypto.SHA512, digest: digest[:]}))
			if err != nil {
				t.Error(err)
				return
			}
			responses <- resp
		})
	}
	wg.Wait()
	close(responses)
	serials := make(chan string, n)
	for resp := range responses {
		ts, err := libParseResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		serials <- ts.SerialNumber.Text(16)
	}
	close(serials)
	want := map[string]bool{}
	for s := range serials {
		want[s] = true
	}
	if len(want) != n {
		t.Fatalf("%d distinct serials for %d tokens", len(want), n)
	}
	f, err := os.Open(a.journal)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]int{}
	if err := tsa.ReadJournal(f, func(e tsa.JournalEntry) error {
		got[e.Serial.Text(16)]++
		if len(e.Imprint) != 64 || e.Hash != "sha512" || len(e.TokenSHA256) != 32 {
			t.Errorf("entry %+v", e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for s := range want {
		if got[s] != 1 {
			t.Errorf("serial %s recorded %d times", s, got[s])
		}
	}
}

// TestNewRefusesBadCertificates: the TSA does not start with a certificate
// that a verifier would refuse.
func TestNewRefusesBadCertificates(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	ca, err := devpki.NewRootCA(key, "root", now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(tmpl *x509.Certificate) *x509.Certificate {
		tmpl.Subject = pkix.Name{CommonName: "TSA"}
		if tmpl.NotBefore.IsZero() {
			tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		}
		c, err := ca.Issue(tmpl, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	critical, _ := devpki.TimeStampingEKUExtension()
	nonCritical := critical
	nonCritical.Critical = false
	good, _ := ca.IssueTSA(key.Public(), "TSA", now)
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		signer crypto.Signer
		want   string
	}{
		{"EKU not critical", issue(&x509.Certificate{ExtraExtensions: []pkix.Extension{nonCritical}}), key, "critical"},
		{"no EKU", issue(&x509.Certificate{}), key, "critical"},
		{"serverAuth EKU", issue(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), key, "timeStamping"},
		{"expired", issue(&x509.Certificate{ExtraExtensions: []pkix.Extension{critical}, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}), key, "not now"},
		{"key usage keyEncipherment", issue(&x509.Certificate{ExtraExtensions: []pkix.Extension{critical}, KeyUsage: x509.KeyUsageKeyEncipherment}), key, "key usage"},
		{"other key", good, other, "not the certificate of the TSA key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serials, err := tsa.OpenFileSerials(filepath.Join(t.TempDir(), "s"), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer serials.Close()
			_, err = tsa.New(testConfig(t.TempDir()), tc.signer, []*x509.Certificate{tc.cert}, serials, tsa.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := testConfig("/data")
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bad := good
	bad.PolicyOID = "1.2.x"
	bad.AcceptedPolicies = []string{"3.1"}
	bad.Accuracy = 0
	bad.Hashes = []string{"md5"}
	bad.SignatureHash = "sha1"
	bad.NodeID = 70000
	bad.SerialFile = ""
	err := bad.Validate()
	for _, want := range []string{
		`tsa.policy_oid: "1.2.x" is not an OID`,
		`tsa.accepted_policies[0]: "3.1" is not an OID`,
		"tsa.accuracy:",
		`tsa.hashes[0]: "md5"`,
		`tsa.signature_hash: "sha1"`,
		"tsa.node_id: 70000",
		"tsa.serial_file: required",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want %q", err, want)
		}
	}
}

// TestOrdering: with ordering, genTimes strictly increase even when the
// clock stands still.
func TestOrdering(t *testing.T) {
	t.Parallel()
	fixed := time.Now().Truncate(time.Second)
	a := newTestTSA(t, func(c *tsa.Config, o *tsa.Options) {
		c.Ordering = true
		o.Now = func() time.Time { return fixed }
	})
	var last time.Time
	for range 5 {
		resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{}))
		if err != nil {
			t.Fatal(err)
		}
		ts, err := libParseResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		if !ts.Ordering || !ts.Time.After(last) {
			t.Fatalf("ordering %v, genTime %v after %v", ts.Ordering, ts.Time, last)
		}
		last = ts.Time
	}
}
