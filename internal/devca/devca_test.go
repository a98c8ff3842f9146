package devca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"pec/evidence"
	"pec/internal/devca"
	"pec/internal/devpki"
)

// env is a development CA with a state file in a temporary directory.
type env struct {
	ca    *devpki.CA
	other *devpki.CA // another root, of the same name
	cfg   devca.Config
	now   time.Time
	mu    sync.Mutex
}

func newEnv(t testing.TB) *env {
	t.Helper()
	now := time.Now()
	ca, err := devpki.NewRootCA(p384(t), "PEC development root CA", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devpki.NewRootCA(p384(t), "PEC development root CA", now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := devca.Config{
		URL:       "http://127.0.0.1:8318",
		StateFile: filepath.Join(dir, "ca-state.json"),
		KeyLabel:  "root-ca",
		CertFile:  filepath.Join(dir, "root-ca.pem"),
	}
	ca.Revocation = devpki.RevocationURLs{CRL: cfg.CRLURL(), OCSP: cfg.OCSPURL()}
	return &env{ca: ca, other: other, cfg: cfg, now: now}
}

func p384(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// issue makes a client certificate under name and records it, with an
// evidence id.
func (e *env) issue(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.ca.IssueClientFor(key.Public(), name, "Test", e.clock(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	err = devca.Update(e.cfg.StateFile, func(s *devca.State) error {
		_, err := s.Add(cert, name, "partner", devca.Event{At: e.clock(), By: "test", Evidence: evidence.NewID(e.clock())})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (e *env) revoke(t testing.TB, name, reason string) {
	t.Helper()
	err := devca.Update(e.cfg.StateFile, func(s *devca.State) error {
		_, err := s.Revoke(name, devca.Event{At: e.clock(), By: "test", Evidence: evidence.NewID(e.clock()), Reason: reason})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) responder(t testing.TB, opts devca.Options) *devca.Responder {
	t.Helper()
	if opts.Now == nil {
		opts.Now = e.clock
	}
	r, err := devca.New(e.cfg, e.ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ask sends an OCSP request about cert (CertID hash h) and parses the
// answer, checking its signature by the CA.
func ask(t testing.TB, r *devca.Responder, cert, issuer *x509.Certificate, h crypto.Hash) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := r.OCSP(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestOCSPStatuses(t *testing.T) {
	e := newEnv(t)
	good := e.issue(t, "partner-a")
	bad := e.issue(t, "partner-b")
	r := e.responder(t, devca.Options{})

	// Good, then revoked at the next request: no cache hides the change.
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		if resp := ask(t, r, bad, e.ca.Cert, h); resp.Status != ocsp.Good {
			t.Fatalf("%v: status %d before revocation", h, resp.Status)
		}
	}
	e.revoke(t, "partner-b", "keyCompromise")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		resp := ask(t, r, bad, e.ca.Cert, h)
		if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.KeyCompromise || resp.RevokedAt.IsZero() {
			t.Errorf("%v: after revocation: status %d, reason %d, at %v", h, resp.Status, resp.RevocationReason, resp.RevokedAt)
		}
		if !resp.NextUpdate.Equal(resp.ThisUpdate.Add(devca.DefaultValidity)) {
			t.Errorf("%v: thisUpdate %v, nextUpdate %v", h, resp.ThisUpdate, resp.NextUpdate)
		}
	}
	if resp := ask(t, r, good, e.ca.Cert, crypto.SHA1); resp.Status != ocsp.Good {
		t.Errorf("partner-a: status %d", resp.Status)
	}

	// A serial number the CA never issued.
	stranger, err := e.ca.IssueClient(p384(t).Public(), "stranger", "Test", e.clock())
	if err != nil {
		t.Fatal(err)
	}
	if resp := ask(t, r, stranger, e.ca.Cert, crypto.SHA256); resp.Status != ocsp.Unknown {
		t.Errorf("unrecorded serial: status %d, want unknown", resp.Status)
	}

	// Refusals: another issuer (same name, other key), bytes that are no request.
	otherCert, err := e.other.IssueClient(p384(t).Public(), "partner-a", "Test", e.clock())
	if err != nil {
		t.Fatal(err)
	}
	otherCert.SerialNumber = good.SerialNumber // a serial this CA did issue
	req, err := ocsp.CreateRequest(otherCert, e.other.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    []byte
		want   []byte
		result string
	}{
		{"other issuer", req, ocsp.UnauthorizedErrorResponse, "unauthorized"},
		{"empty", nil, ocsp.MalformedRequestErrorResponse, "malformed"},
		{"not DER", []byte("hello"), ocsp.MalformedRequestErrorResponse, "malformed"},
		{"truncated", req[:len(req)-3], ocsp.MalformedRequestErrorResponse, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, result, err := r.OCSP(tc.req)
			if err != nil || !bytes.Equal(der, tc.want) || result != tc.result {
				t.Errorf("got %x (%s, %v), want %x (%s)", der, result, err, tc.want, tc.result)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	e := newEnv(t)
	e.issue(t, "partner-a")
	b := e.issue(t, "partner-b")
	c := e.issue(t, "partner-c")
	r := e.responder(t, devca.Options{})

	parse := func() *x509.RevocationList {
		t.Helper()
		der, err := r.CRL()
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(e.ca.Cert); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		return rl
	}
	first := parse()
	if len(first.RevokedCertificateEntries) != 0 || first.Number == nil || !first.NextUpdate.Equal(first.ThisUpdate.Add(devca.DefaultValidity)) {
		t.Fatalf("first CRL: %d entries, number %v, %v..%v", len(first.RevokedCertificateEntries), first.Number, first.ThisUpdate, first.NextUpdate)
	}
	if again := parse(); again.Number.Cmp(first.Number) != 0 {
		t.Errorf("CRL signed again with nothing changed: number %v then %v", first.Number, again.Number)
	}

	// Signed again at once when the state changes, its number grown.
	e.revoke(t, "partner-b", "superseded")
	e.revoke(t, "partner-c", "unspecified")
	second := parse()
	if second.Number.Cmp(first.Number) <= 0 {
		t.Errorf("CRL number %v after %v", second.Number, first.Number)
	}
	want := map[string]int{b.SerialNumber.String(): ocsp.Superseded, c.SerialNumber.String(): 0}
	if len(second.RevokedCertificateEntries) != 2 {
		t.Fatalf("%d entries, want 2", len(second.RevokedCertificateEntries))
	}
	for _, en := range second.RevokedCertificateEntries {
		code, ok := want[en.SerialNumber.String()]
		if !ok || en.ReasonCode != code {
			t.Errorf("entry %v reason %d (want %d, listed %v)", en.SerialNumber, en.ReasonCode, code, ok)
		}
	}

	// Signed again at half its validity.
	e.advance(devca.DefaultValidity/2 + time.Second)
	third := parse()
	if third.Number.Cmp(second.Number) <= 0 || !third.ThisUpdate.After(second.ThisUpdate) {
		t.Errorf("not signed again at half its validity: number %v, thisUpdate %v", third.Number, third.ThisUpdate)
	}

	// An expired certificate leaves the CRL.
	e.advance(48 * time.Hour)
	if n := len(parse().RevokedCertificateEntries); n != 0 {
		t.Errorf("%d entries after the certificates expired", n)
	}
}

func TestHTTP(t *testing.T) {
	e := newEnv(t)
	cert := e.issue(t, "partner-a")
	e.revoke(t, "partner-a", "cessationOfOperation")
	srv := httptest.NewServer(e.responder(t, devca.Options{}))
	defer srv.Close()

	req, err := ocsp.CreateRequest(cert, e.ca.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(resp *http.Response, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/ocsp-response" {
			t.Fatalf("%s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		r, err := ocsp.ParseResponseForCert(body, cert, e.ca.Cert)
		if err != nil || r.Status != ocsp.Revoked || r.RevocationReason != ocsp.CessationOfOperation {
			t.Fatalf("%v, %+v", err, r)
		}
	}
	check(http.Post(srv.URL+devca.OCSPPath, "application/ocsp-request", bytes.NewReader(req)))
	// RFC 6960 appendix A.1: GET of the base64 request, URL-encoded.
	enc := strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(base64.StdEncoding.EncodeToString(req))
	check(http.Get(srv.URL + devca.OCSPPath + "/" + enc))

	resp, err := http.Get(srv.URL + devca.CRLPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if _, err := x509.ParseRevocationList(body); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		method, path, ctype string
		body                []byte
		want                int
	}{
		{"POST", devca.CRLPath, "", nil, http.StatusMethodNotAllowed},
		{"DELETE", devca.OCSPPath, "", nil, http.StatusMethodNotAllowed},
		{"POST", devca.OCSPPath, "text/plain", req, http.StatusUnsupportedMediaType},
		{"POST", devca.OCSPPath, "application/ocsp-request", make([]byte, 5<<10), http.StatusRequestEntityTooLarge},
		{"GET", devca.OCSPPath + "/" + strings.Repeat("A", 9<<10), "", nil, http.StatusRequestURITooLong},
		{"GET", "/crl/other.crl", "", nil, http.StatusNotFound},
	} {
		t.Run(tc.method+" "+tc.path[:min(len(tc.path), 20)], func(t *testing.T) {
			hreq, err := http.NewRequest(tc.method, srv.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				hreq.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(hreq)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s, want %d", resp.Status, tc.want)
			}
		})
	}
	// A GET whose path is no base64 is a malformedRequest answer.
	resp, err = http.Get(srv.URL + devca.OCSPPath + "/not-base64!")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, ocsp.MalformedRequestErrorResponse) {
		t.Errorf("GET of no base64: %x", body)
	}
}

// A state file that no longer reads makes the responder fail closed: no
// answer from the state it had, until the file is fixed.
func TestFailsClosed(t *testing.T) {
	e := newEnv(t)
	cert := e.issue(t, "partner-a")
	r := e.responder(t, devca.Options{})
	if resp := ask(t, r, cert, e.ca.Cert, crypto.SHA1); resp.Status != ocsp.Good {
		t.Fatal("not good")
	}
	good, err := os.ReadFile(e.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfg.StateFile, []byte(`{"version": 1, "certificates": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	req, _ := ocsp.CreateRequest(cert, e.ca.Cert, nil)
	if der, result, err := r.OCSP(req); err == nil || !bytes.Equal(der, ocsp.TryLaterErrorResponse) || result != "error" {
		t.Errorf("OCSP from a broken state: %x %s %v", der, result, err)
	}
	if _, err := r.CRL(); !errors.Is(err, devca.ErrMalformedState) {
		t.Errorf("CRL from a broken state: %v", err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL + devca.CRLPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("CRL from a broken state: %s", resp.Status)
	}
	if err := devca.Update(e.cfg.StateFile, func(*devca.State) error { return nil }); !errors.Is(err, devca.ErrMalformedState) {
		t.Errorf("Update over a broken state: %v", err)
	}
	if err := os.WriteFile(e.cfg.StateFile, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if resp := ask(t, r, cert, e.ca.Cert, crypto.SHA1); resp.Status != ocsp.Good {
		t.Error("not good once fixed")
	}
	// Missing at start: New fails.
	os.Remove(e.cfg.StateFile)
	if _, err := devca.New(e.cfg, e.ca, devca.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New without a state file: %v", err)
	}
}

func TestRecord(t *testing.T) {
	e := newEnv(t)
	// What pec init issued has no evidence id: never recorded.
	initCert, err := e.ca.IssueClient(p384(t).Public(), "partner-a", "Test", e.clock())
	if err != nil {
		t.Fatal(err)
	}
	if err := devca.Update(e.cfg.StateFile, func(s *devca.State) error {
		_, err := s.Add(initCert, "partner-a", "partner", devca.Event{At: e.clock(), By: "pec init"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cert := e.issue(t, "partner-b")
	log := &evidence.Memory{}
	r := e.responder(t, devca.Options{Evidence: log})
	ctx := context.Background()
	if got := r.Record(ctx); len(got) != 1 {
		t.Fatalf("recorded %v, want the issuance of partner-b", got)
	}
	e.revoke(t, "partner-b", "privilegeWithdrawn")
	e.revoke(t, "partner-a", "keyCompromise")
	if got := r.Record(ctx); len(got) != 2 {
		t.Fatalf("recorded %v, want the two revocations", got)
	}
	if got := r.Record(ctx); len(got) != 0 {
		t.Errorf("recorded %v again", got)
	}
	// A node started again over the same log appends nothing twice.
	if got := e.responder(t, devca.Options{Evidence: log}).Record(ctx); len(got) != 0 {
		t.Errorf("a second responder recorded %v", got)
	}
	recs := log.Records()
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	// In the state's order: partner-a (of pec init) first.
	issued, initRevoked, revoked := recs[0], recs[1], recs[2]
	if issued.Type != evidence.AdminAction || issued.Subject != "devca.certificate-issued" || revoked.Subject != "devca.certificate-revoked" {
		t.Errorf("records %s %s, %s %s", issued.Type, issued.Subject, revoked.Type, revoked.Subject)
	}
	if len(revoked.Previous) != 1 || revoked.Previous[0] != issued.ID {
		t.Errorf("the revocation answers %v, want the issuance %s", revoked.Previous, issued.ID)
	}
	attrs := map[string]string{}
	for _, a := range revoked.Attributes {
		attrs[a.Key] = a.Value
	}
	if attrs["name"] != "partner-b" || attrs["serial"] != cert.SerialNumber.Text(16) || attrs["reason"] != "privilegeWithdrawn" || attrs["role"] != "partner" {
		t.Errorf("attributes %v", attrs)
	}
	if len(revoked.Actors) != 2 || revoked.Actors[1].Subject != cert.Subject.String() || len(revoked.Digests) != 1 {
		t.Errorf("actors %v, digests %v", revoked.Actors, revoked.Digests)
	}
	if len(initRevoked.Previous) != 0 || initRevoked.Subject != "devca.certificate-revoked" {
		t.Errorf("the revocation of a certificate of pec init: %s, answers %v", initRevoked.Subject, initRevoked.Previous)
	}

	// A log that refuses: retried at the next call.
	e.issue(t, "partner-c")
	log.Err = evidence.ErrUnavailable
	if got := r.Record(ctx); len(got) != 0 {
		t.Errorf("recorded %v into a refusing log", got)
	}
	log.Err = nil
	if got := r.Record(ctx); len(got) != 1 {
		t.Errorf("recorded %v once the log is back", got)
	}
}

// Update holds the lock over its read-modify-write: concurrent updates
// lose none of their changes.
func TestUpdateConcurrent(t *testing.T) {
	e := newEnv(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			cert, err := e.ca.IssueClient(p384(t).Public(), "partner", "Test", e.clock())
			if err != nil {
				errs <- err
				return
			}
			errs <- devca.Update(e.cfg.StateFile, func(s *devca.State) error {
				_, err := s.Add(cert, "partner-"+string(rune('a'+i)), "", devca.Event{At: e.clock(), By: "test"})
				time.Sleep(time.Millisecond) // widen the window a missing lock would leave
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := devca.Load(e.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Certificates) != n {
		t.Errorf("%d certificates after %d concurrent updates", len(s.Certificates), n)
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	e.issue(t, "partner-a")
	e.issue(t, "partner-a") // re-issued without --force: two valid
	var got []devca.Certificate
	err := devca.Update(e.cfg.StateFile, func(s *devca.State) error {
		var err error
		got, err = s.Revoke("partner-a", devca.Event{At: e.clock(), By: "test", Evidence: evidence.NewID(e.clock()), Reason: "superseded"})
		return err
	})
	if err != nil || len(got) != 2 || got[0].Revoked.Evidence == got[1].Revoked.Evidence {
		t.Fatalf("revoked %+v, %v: want two, each with its own evidence id", got, err)
	}
	for _, tc := range []struct {
		name, reason string
		want         error
	}{
		{"partner-a", "superseded", devca.ErrAlreadyRevoked},
		{"nobody", "superseded", devca.ErrNotFound},
		{"partner-a", "certificateHold", devpki.ErrUnknownReason},
		{"partner-a", "", devpki.ErrUnknownReason},
	} {
		err := devca.Update(e.cfg.StateFile, func(s *devca.State) error {
			_, err := s.Revoke(tc.name, devca.Event{At: e.clock(), By: "test", Reason: tc.reason})
			return err
		})
		if !errors.Is(err, tc.want) {
			t.Errorf("revoke %s (%s): %v, want %v", tc.name, tc.reason, err, tc.want)
		}
	}
	s, err := devca.Load(e.cfg.StateFile)
	if err != nil || len(s.Valid("partner-a")) != 0 || s.Lookup(big.NewInt(1)) != nil {
		t.Errorf("state: %v", err)
	}
}

func TestParseState(t *testing.T) {
	const cert = `{"name": "partner-a", "serial": "1f", "subject": "CN=partner-a", "sha256": "` +
		`00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "not_after": "2030-01-01T00:00:00Z", ` +
		`"issued": {"at": "2026-01-01T00:00:00Z", "by": "test", "evidence": "0123456789abcdef0123456789abcdef"}`
	wrap := func(certs ...string) string {
		return `{"version": 1, "certificates": [` + strings.Join(certs, ",") + `]}`
	}
	if s, err := devca.ParseState([]byte(wrap(cert + `}`))); err != nil || len(s.Certificates) != 1 {
		t.Fatalf("valid state: %v", err)
	}
	if _, err := devca.ParseState([]byte(wrap(cert + `, "revoked": {"at": "2026-01-02T00:00:00Z", "by": "x", "reason": "keyCompromise"}}`))); err != nil {
		t.Fatalf("valid revoked state: %v", err)
	}
	for _, tc := range []struct{ name, data string }{
		{"empty", ``},
		{"not JSON", `hello`},
		{"trailing", wrap(cert+`}`) + `{}`},
		{"unknown field", `{"version": 1, "certificates": [], "extra": 1}`},
		{"version", `{"version": 2, "certificates": []}`},
		{"bad name", wrap(strings.Replace(cert, `"partner-a"`, `"Partner A"`, 1) + `}`)},
		{"serial not hex", wrap(strings.Replace(cert, `"1f"`, `"xyz"`, 1) + `}`)},
		{"serial upper case", wrap(strings.Replace(cert, `"1f"`, `"1F"`, 1) + `}`)},
		{"serial leading zero", wrap(strings.Replace(cert, `"1f"`, `"01f"`, 1) + `}`)},
		{"serial zero", wrap(strings.Replace(cert, `"1f"`, `"0"`, 1) + `}`)},
		{"serial too long", wrap(strings.Replace(cert, `"1f"`, `"1`+strings.Repeat("0", 40)+`"`, 1) + `}`)},
		{"serial twice", wrap(cert+`}`, cert+`}`)},
		{"fingerprint short", wrap(strings.Replace(cert, `00112233`, ``, 1) + `}`)},
		{"no subject", wrap(strings.Replace(cert, `"CN=partner-a"`, `""`, 1) + `}`)},
		{"bad role", wrap(cert + `, "role": "boss"}`)},
		{"no issue time", wrap(strings.Replace(cert, `"at": "2026-01-01T00:00:00Z", `, ``, 1) + `}`)},
		{"bad evidence id", wrap(strings.Replace(cert, `0123456789abcdef0123456789abcdef`, `no spaces allowed`, 1) + `}`)},
		{"reason on issue", wrap(strings.Replace(cert, `"by": "test"`, `"by": "test", "reason": "keyCompromise"`, 1) + `}`)},
		{"unknown reason", wrap(cert + `, "revoked": {"at": "2026-01-02T00:00:00Z", "by": "x", "reason": "whim"}}`)},
		{"revocation without actor", wrap(cert + `, "revoked": {"at": "2026-01-02T00:00:00Z", "reason": "keyCompromise"}}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := devca.ParseState([]byte(tc.data)); !errors.Is(err, devca.ErrMalformedState) {
				t.Errorf("ParseState: %v, want ErrMalformedState", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := devca.Config{URL: "http://127.0.0.1:8318", StateFile: "s", KeyLabel: "k", CertFile: "c"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (devca.Config{}).Validate(); err != nil {
		t.Errorf("an absent section: %v", err)
	}
	if ok.CRLURL() != "http://127.0.0.1:8318/crl/root.crl" || ok.OCSPURL() != "http://127.0.0.1:8318/ocsp" || ok.Host() != "127.0.0.1:8318" {
		t.Errorf("URLs %s %s %s", ok.CRLURL(), ok.OCSPURL(), ok.Host())
	}
	for _, tc := range []struct {
		name string
		edit func(*devca.Config)
		want string
	}{
		{"https", func(c *devca.Config) { c.URL = "https://127.0.0.1:8318" }, "devca.url"},
		{"path", func(c *devca.Config) { c.URL = "http://127.0.0.1:8318/ca" }, "devca.url"},
		{"no host", func(c *devca.Config) { c.URL = "http://" }, "devca.url"},
		{"no url", func(c *devca.Config) { c.URL = "" }, "devca.url"},
		{"no state", func(c *devca.Config) { c.StateFile = "" }, "devca.state_file: required"},
		{"no key", func(c *devca.Config) { c.KeyLabel = "" }, "devca.key_label: required"},
		{"no cert", func(c *devca.Config) { c.CertFile = "" }, "devca.cert_file: required"},
		{"short CRL", func(c *devca.Config) { c.CRLValidity = time.Second }, "devca.crl_validity"},
		{"negative OCSP", func(c *devca.Config) { c.OCSPValidity = -time.Minute }, "devca.ocsp_validity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// Run records at once, at each change, and a last time when it is
// stopped: an event written just before the node stops is still its to
// record.
func TestRunRecordsUntilStopped(t *testing.T) {
	e := newEnv(t)
	e.issue(t, "partner-a")
	log := &evidence.Memory{}
	r := e.responder(t, devca.Options{Evidence: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(log.Records()) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(log.Records()) != 1 {
		t.Fatalf("%d records after start", len(log.Records()))
	}
	e.revoke(t, "partner-a", "superseded")
	cancel() // before the next tick
	<-done
	if n := len(log.Records()); n != 2 {
		t.Errorf("%d records after stop, want the issuance and the revocation", n)
	}
}
