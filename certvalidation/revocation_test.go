package certvalidation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
	"pec/internal/interop"
)

// fileServer serves CRLs over HTTP on 127.0.0.1, counting requests.
type fileServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	delay time.Duration
}

func newFileServer(t testing.TB) *fileServer {
	fs := &fileServer{files: map[string][]byte{}, hits: map[string]int{}}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		body, ok := fs.files[r.URL.Path]
		fs.hits[r.URL.Path]++
		delay := fs.delay
		fs.mu.Unlock()
		time.Sleep(delay)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		_, _ = w.Write(body)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) put(path string, body []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[path] = body
}

func (fs *fileServer) count(path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.hits[path]
}

// revEnv is a two-level PKI whose databases OpenSSL keeps: the root's CRL
// covers the issuing CA, the issuing CA's CRLs and OCSP responder its
// certificates.
type revEnv struct {
	root, inter     *certtest.Issued
	rootCA, interCA *interop.CA
	files           *fileServer
	ocspPort        int
	dir             string
}

func newRevEnv(t testing.TB) *revEnv {
	t.Helper()
	interop.Need(t, "openssl", "openssl")
	e := &revEnv{files: newFileServer(t), ocspPort: interop.FreePort(t), dir: t.TempDir()}
	e.root = certtest.Root(t, certtest.CATemplate("Revocation Test Root"), nil)
	tmpl := certtest.CATemplate("Revocation Test CA")
	tmpl.CRLDistributionPoints = []string{e.files.URL + "/root.crl"}
	e.inter = e.root.Issue(t, tmpl, nil)
	e.rootCA = interop.NewCA(t, e.root.Cert, e.root.Key)
	e.interCA = interop.NewCA(t, e.inter.Cert, e.inter.Key)
	e.rootCA.Add(t, e.inter.Cert)
	e.publish(t)
	return e
}

// publish makes both CRLs with `openssl ca -gencrl` and serves them.
func (e *revEnv) publish(t testing.TB, args ...string) {
	t.Helper()
	e.files.put("/root.crl", e.rootCA.CRL(t, "-crlhours", "24"))
	e.files.put("/ca.crl", e.interCA.CRL(t, append([]string{"-crlhours", "24"}, args...)...))
}

// leaf issues a client certificate that names the OCSP responder and/or
// the CRL distribution point, recorded as valid in the database.
func (e *revEnv) leaf(t testing.TB, name string, withOCSP, withCRL bool) *x509.Certificate {
	t.Helper()
	tmpl := certtest.LeafTemplate(name)
	if withOCSP {
		tmpl.OCSPServer = []string{fmt.Sprintf("http://127.0.0.1:%d", e.ocspPort)}
	}
	if withCRL {
		tmpl.CRLDistributionPoints = []string{e.files.URL + "/ca.crl"}
	}
	c := e.inter.Issue(t, tmpl, nil).Cert
	e.interCA.Add(t, c)
	return c
}

func (e *revEnv) validator(t testing.TB, cfg certvalidation.Config, now func() time.Time) *certvalidation.Validator {
	t.Helper()
	if cfg.Fetch.Timeout == 0 {
		cfg.Fetch.Timeout = 3 * time.Second
	}
	if cfg.Cache.Results == 0 {
		cfg.Cache.Results = -1 // every call validates; the OCSP and CRL caches stay on
	}
	v, err := certvalidation.New(cfg, certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{
		certvalidation.PurposeClientAuth: {e.root.Cert},
	}}, certvalidation.ValidatorOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *revEnv) validate(v *certvalidation.Validator, leaf *x509.Certificate, policy certvalidation.RevocationPolicy, at time.Time) (*certvalidation.Report, error) {
	return v.Validate(context.Background(), leaf, certvalidation.Options{
		Purpose:       certvalidation.PurposeClientAuth,
		Intermediates: []*x509.Certificate{e.inter.Cert},
		Revocation:    policy,
		At:            at,
	})
}

func wantReason(t *testing.T, rep *certvalidation.Report, err error, want certvalidation.Reason) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("want valid, got %v\nrevocation data: %s", err, evidenceText(rep))
		}
		return
	}
	verr, ok := errors.AsType[*certvalidation.Error](err)
	if !ok || verr.Reason != want {
		t.Fatalf("want %s, got %v\nrevocation data: %s", want, err, evidenceText(rep))
	}
}

func evidenceText(rep *certvalidation.Report) string {
	if rep == nil {
		return "(no report)"
	}
	var b strings.Builder
	for _, ev := range rep.RevocationData {
		fmt.Fprintf(&b, "\n  cert %d %s %s %s %s %s", ev.Cert, ev.Type, ev.Origin, ev.URL, ev.Status, ev.Reason)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(&b, "\n  warning: %s", w)
	}
	return b.String()
}

func findEvidence(rep *certvalidation.Report, cert int, typ string) *certvalidation.Evidence {
	for i, ev := range rep.RevocationData {
		if ev.Cert == cert && ev.Type == typ {
			return &rep.RevocationData[i]
		}
	}
	return nil
}

// TestOCSPWithOpenSSL checks certificates against `openssl ocsp -index`
// on loopback: good, revoked, unknown, an expired response, responders
// that are not authorised, a delegated responder, a responder that is
// down, the nonce, and the cache.
func TestOCSPWithOpenSSL(t *testing.T) {
	t.Parallel()
	e := newRevEnv(t)
	good := e.leaf(t, "ocsp good", true, false)
	revoked := e.leaf(t, "ocsp revoked", true, false)
	e.interCA.Revoke(t, revoked, "keyCompromise")
	unknownTmpl := certtest.LeafTemplate("ocsp unknown")
	unknownTmpl.OCSPServer = []string{fmt.Sprintf("http://127.0.0.1:%d", e.ocspPort)}
	unknown := e.inter.Issue(t, unknownTmpl, nil).Cert // not in the database

	responder := e.interCA.StartOCSP(t, interop.OCSPOptions{Port: e.ocspPort, NextUpdate: 60})
	v := e.validator(t, certvalidation.Config{}, nil)

	t.Run("good", func(t *testing.T) {
		rep, err := e.validate(v, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, "")
		ev := findEvidence(rep, 0, "ocsp")
		if ev == nil || ev.Status != "good" || ev.Origin != "fetched" || len(ev.DER) == 0 || ev.SHA256 == "" || ev.NextUpdate.IsZero() {
			t.Fatalf("OCSP evidence: %+v", ev)
		}
		if ev := findEvidence(rep, 1, "crl"); ev == nil || ev.Status != "good" {
			t.Errorf("the issuing CA's CRL evidence: %+v", ev)
		}
		if rep.ValidUntil.IsZero() || rep.ValidUntil.After(ev.NextUpdate) {
			t.Errorf("valid until %v, OCSP nextUpdate %v", rep.ValidUntil, ev.NextUpdate)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		rep, err := e.validate(v, revoked, certvalidation.RevocationPrefer, time.Time{})
		wantReason(t, rep, err, certvalidation.ReasonRevoked)
		if ev := findEvidence(rep, 0, "ocsp"); ev == nil || ev.Status != "revoked" || ev.Reason != "keyCompromise" || ev.RevokedAt.IsZero() {
			t.Errorf("evidence: %+v", ev)
		}
	})
	t.Run("unknown, required", func(t *testing.T) {
		rep, err := e.validate(v, unknown, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, certvalidation.ReasonRevocationUnknown)
		if ev := findEvidence(rep, 0, "ocsp"); ev == nil || ev.Status != "unknown" {
			t.Errorf("evidence: %+v", ev)
		}
	})
	t.Run("unknown, preferred", func(t *testing.T) {
		rep, err := e.validate(v, unknown, certvalidation.RevocationPrefer, time.Time{})
		wantReason(t, rep, err, "")
		if len(rep.Warnings) == 0 {
			t.Errorf("soft-fail without a warning: %+v", rep)
		}
	})
	t.Run("cached until nextUpdate", func(t *testing.T) {
		// The responder answered "good" above; stopped, it cannot answer
		// again: the status comes from the cache.
		responder.Stop()
		rep, err := e.validate(v, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, "")
		if ev := findEvidence(rep, 0, "ocsp"); ev == nil || ev.Origin != "cache" {
			t.Errorf("evidence: %+v", ev)
		}
	})
	t.Run("responder down", func(t *testing.T) {
		fresh := e.validator(t, certvalidation.Config{}, nil)
		rep, err := e.validate(fresh, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, certvalidation.ReasonRevocationUnknown)
		if !strings.Contains(rep.Detail, "OCSP http://127.0.0.1") {
			t.Errorf("detail does not name the responder: %s", rep.Detail)
		}
		rep, err = e.validate(fresh, good, certvalidation.RevocationPrefer, time.Time{})
		wantReason(t, rep, err, "")
		if len(rep.Warnings) == 0 {
			t.Error("soft-fail without a warning")
		}
	})
}

// TestOCSPResponses checks the responses of responders set up in other
// ways: nextUpdate passed, signed by a certificate the issuer did not
// authorise, by a delegated responder, with a nonce.
func TestOCSPResponses(t *testing.T) {
	t.Parallel()
	e := newRevEnv(t)
	leaf := e.leaf(t, "ocsp", true, false)

	selfSigned := certtest.Root(t, certtest.CATemplate("Rogue Responder"), nil)
	noEKU := e.inter.Issue(t, certtest.LeafTemplate("Responder without EKU"), nil)
	delegatedTmpl := certtest.LeafTemplate("Delegated Responder")
	delegatedTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	delegated := e.inter.Issue(t, delegatedTmpl, nil)
	otherCA := e.root.Issue(t, certtest.CATemplate("Other CA"), nil)
	otherDelegated := otherCA.Issue(t, delegatedTmpl, nil)

	files := func(i *certtest.Issued, name string) (string, string) {
		return certtest.WritePEM(t, e.dir, name+".pem", i.Cert), certtest.WriteKey(t, e.dir, name+".key", i.Key)
	}
	tests := []struct {
		name   string
		opts   interop.OCSPOptions
		signer *certtest.Issued
		cfg    certvalidation.Config
		now    time.Duration // the validator's clock ahead of the responder's
		want   certvalidation.Reason
		detail string // in the report's detail
	}{
		{name: "expired response", opts: interop.OCSPOptions{NextUpdate: 1}, now: 10 * time.Minute, want: certvalidation.ReasonRevocationUnknown, detail: "OCSP response not current"},
		{name: "no nextUpdate, within max age", opts: interop.OCSPOptions{}, now: 10 * time.Minute},
		{name: "no nextUpdate, older than max age", opts: interop.OCSPOptions{}, now: 3 * time.Hour, cfg: certvalidation.Config{Revocation: certvalidation.RevocationConfig{MaxAge: time.Hour}}, want: certvalidation.ReasonRevocationUnknown, detail: "without nextUpdate, older than 1h"},
		{name: "wrong responder: self-signed", signer: selfSigned, want: certvalidation.ReasonRevocationUnknown, detail: "was not issued by the certificate's issuer"},
		{name: "wrong responder: no OCSPSigning EKU", signer: noEKU, want: certvalidation.ReasonRevocationUnknown, detail: "no id-kp-OCSPSigning"},
		{name: "wrong responder: delegated by another CA", signer: otherDelegated, want: certvalidation.ReasonRevocationUnknown, detail: "was not issued by the certificate's issuer"},
		{name: "delegated responder", signer: delegated},
		{name: "nonce", cfg: certvalidation.Config{Revocation: certvalidation.RevocationConfig{OCSPNonce: true}}},
		{name: "nonce, responder keyed by key hash", opts: interop.OCSPOptions{Extra: []string{"-resp_key_id"}}, cfg: certvalidation.Config{Revocation: certvalidation.RevocationConfig{OCSPNonce: true}}},
	}
	// One responder at a time on the port the certificate names.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Port = e.ocspPort
			if tc.signer != nil {
				o.SignerCert, o.SignerKey = files(tc.signer, strings.ReplaceAll(tc.name, " ", "_"))
			}
			r := e.interCA.StartOCSP(t, o)
			defer r.Stop()
			now := func() time.Time { return time.Now().Add(tc.now) }
			v := e.validator(t, tc.cfg, now)
			rep, err := e.validate(v, leaf, certvalidation.RevocationRequire, time.Time{})
			wantReason(t, rep, err, tc.want)
			if !strings.Contains(rep.Detail, tc.detail) {
				t.Errorf("detail %q does not say %q", rep.Detail, tc.detail)
			}
			if tc.want == "" {
				ev := findEvidence(rep, 0, "ocsp")
				if ev == nil || ev.Status != "good" {
					t.Fatalf("evidence: %+v", ev)
				}
				if tc.signer != nil && !strings.Contains(ev.Issuer, tc.signer.Cert.Subject.CommonName) {
					t.Errorf("responder %q, want %q", ev.Issuer, tc.signer.Cert.Subject.CommonName)
				}
			}
		})
	}
}

// TestCRLWithOpenSSL checks certificates against CRLs made by `openssl ca
// -gencrl` and fetched from the distribution point, or given locally.
func TestCRLWithOpenSSL(t *testing.T) {
	t.Parallel()
	e := newRevEnv(t)
	good := e.leaf(t, "crl good", false, true)
	revoked := e.leaf(t, "crl revoked", false, true)
	e.interCA.Revoke(t, revoked, "superseded")
	e.publish(t)

	t.Run("good, then cached", func(t *testing.T) {
		v := e.validator(t, certvalidation.Config{}, nil)
		before := e.files.count("/ca.crl")
		rep, err := e.validate(v, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, "")
		ev := findEvidence(rep, 0, "crl")
		if ev == nil || ev.Status != "good" || ev.Origin != "fetched" || !strings.HasSuffix(ev.URL, "/ca.crl") || len(ev.DER) == 0 {
			t.Fatalf("evidence: %+v", ev)
		}
		rep, err = e.validate(v, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, "")
		if ev := findEvidence(rep, 0, "crl"); ev == nil || ev.Origin != "fetched" && ev.Origin != "cache" {
			t.Fatalf("evidence: %+v", ev)
		}
		if n := e.files.count("/ca.crl") - before; n != 1 {
			t.Errorf("the CRL was fetched %d times, want once (cached until nextUpdate)", n)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		v := e.validator(t, certvalidation.Config{}, nil)
		rep, err := e.validate(v, revoked, certvalidation.RevocationPrefer, time.Time{})
		wantReason(t, rep, err, certvalidation.ReasonRevoked)
		if ev := findEvidence(rep, 0, "crl"); ev == nil || ev.Status != "revoked" || ev.Reason != "superseded" {
			t.Errorf("evidence: %+v", ev)
		}
	})
	t.Run("local CRL used before any fetch", func(t *testing.T) {
		v := e.validator(t, certvalidation.Config{}, nil)
		before := e.files.count("/ca.crl")
		rep, err := v.Validate(context.Background(), revoked, certvalidation.Options{
			Purpose: certvalidation.PurposeClientAuth, Intermediates: []*x509.Certificate{e.inter.Cert},
			Revocation: certvalidation.RevocationRequire, CRLs: [][]byte{e.interCA.CRL(t)},
		})
		wantReason(t, rep, err, certvalidation.ReasonRevoked)
		if n := e.files.count("/ca.crl") - before; n != 0 {
			t.Errorf("fetched the CRL %d times despite a local one", n)
		}
		if ev := findEvidence(rep, 0, "crl"); ev == nil || ev.Origin != "request" {
			t.Errorf("evidence: %+v", ev)
		}
	})
	t.Run("size bound", func(t *testing.T) {
		v := e.validator(t, certvalidation.Config{Fetch: certvalidation.FetchConfig{MaxCRLBytes: 64}}, nil)
		rep, err := e.validate(v, good, certvalidation.RevocationRequire, time.Time{})
		wantReason(t, rep, err, certvalidation.ReasonRevocationUnknown)
		if !strings.Contains(rep.Detail, "limit") {
			t.Errorf("detail: %s", rep.Detail)
		}
	})
	t.Run("validation at a time T", func(t *testing.T) {
		// A certificate revoked now was not revoked an hour ago: the
		// current CRL, issued after T while the certificate was valid,
		// says so.
		v := e.validator(t, certvalidation.Config{}, nil)
		rep, err := e.validate(v, revoked, certvalidation.RevocationRequire, time.Now().Add(-time.Hour))
		wantReason(t, rep, err, "")
		if len(rep.Warnings) == 0 {
			t.Error("no warning about the later revocation")
		}
		rep, err = e.validate(v, revoked, certvalidation.RevocationRequire, time.Now().Add(time.Hour))
		wantReason(t, rep, err, certvalidation.ReasonRevoked)
	})
}

// TestCRLFaults: CRLs that must not be used.
func TestCRLFaults(t *testing.T) {
	t.Parallel()
	e := newRevEnv(t)
	leaf := e.leaf(t, "crl faults", false, true)
	ts := func(d time.Duration) string { return time.Now().Add(d).UTC().Format("20060102150405Z") }

	// Another CA under the same name, with another key.
	impostor := certtest.Root(t, certtest.CATemplate("Revocation Test CA"), nil)
	impostorCA := interop.NewCA(t, impostor.Cert, impostor.Key)

	tests := []struct {
		name   string
		crl    func(t *testing.T) []byte
		want   certvalidation.Reason
		detail string
	}{
		{"current", func(t *testing.T) []byte { return e.interCA.CRL(t) }, "", ""},
		{"past nextUpdate", func(t *testing.T) []byte {
			return e.interCA.CRL(t, "-crl_lastupdate", ts(-3*time.Hour), "-crl_nextupdate", ts(-time.Hour))
		}, certvalidation.ReasonRevocationUnknown, "CRL not current"},
		{"signed by the wrong key", func(t *testing.T) []byte { return impostorCA.CRL(t) }, certvalidation.ReasonRevocationUnknown, "CRL signature does not verify"},
		{"not a CRL", func(t *testing.T) []byte { return []byte("<html>maintenance</html>") }, certvalidation.ReasonRevocationUnknown, "malformed crl"},
		{"no CRL number (openssl ca without a crlnumber file)", func(t *testing.T) []byte { return crlWithoutNumber(t, e.interCA) }, certvalidation.ReasonMalformedCRL, "crl_number: the CRL has no CRL number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.files.put("/ca.crl", tc.crl(t))
			v := e.validator(t, certvalidation.Config{}, nil)
			rep, err := e.validate(v, leaf, certvalidation.RevocationRequire, time.Time{})
			wantReason(t, rep, err, tc.want)
			if !strings.Contains(rep.Detail, tc.detail) {
				t.Errorf("detail %q does not say %q", rep.Detail, tc.detail)
			}
		})
	}
}

// TestFetchesAreShared: many validations needing the same CRL at once
// cost the distribution point one request.
func TestFetchesAreShared(t *testing.T) {
	t.Parallel()
	e := newRevEnv(t)
	leaf := e.leaf(t, "shared", false, true)
	e.publish(t)
	v := e.validator(t, certvalidation.Config{}, nil)
	e.files.mu.Lock()
	e.files.delay = 200 * time.Millisecond
	e.files.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := e.validate(v, leaf, certvalidation.RevocationRequire, time.Time{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.files.count("/ca.crl"); n != 1 {
		t.Errorf("the CRL was fetched %d times by 20 concurrent validations, want 1", n)
	}
}
