package proof_test

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/devpki"
	"pec/proof"
)

// crlServer serves the root's CRL at /root.crl on 127.0.0.1.
type crlServer struct {
	*httptest.Server
	mu  sync.Mutex
	crl []byte
}

func newCRLServer(t *testing.T) *crlServer {
	s := &crlServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.URL.Path != "/root.crl" || s.crl == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(s.crl)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *crlServer) set(crl []byte) {
	s.mu.Lock()
	s.crl = crl
	s.mu.Unlock()
}

// rootCRL is a CRL of e's root issued at thisUpdate (zero: a minute ago),
// revoking the certificates of revoked (at the time given).
func rootCRL(t *testing.T, e *env, number int64, thisUpdate time.Time, revoked map[*x509.Certificate]time.Time) []byte {
	t.Helper()
	if thisUpdate.IsZero() {
		thisUpdate = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: thisUpdate,
		NextUpdate: thisUpdate.Add(time.Hour),
	}
	for cert, at := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: cert.SerialNumber, RevocationTime: at})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, e.root.Cert, e.root.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// cdpLog appends a few records to a log whose key's certificate names the
// CRL distribution point of srv, and returns its store, the certificate
// and the id of the last record.
func cdpLog(t *testing.T, e *env, srv *crlServer) (proof.Store, *x509.Certificate, string) {
	t.Helper()
	now := time.Now()
	cert, err := e.root.Issue(&x509.Certificate{
		SerialNumber:          big.NewInt(20),
		Subject:               pkix.Name{CommonName: "PEC proof log with a CRL", Organization: []string{"PEC test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
		CRLDistributionPoints: []string{srv.URL + "/root.crl"},
	}, e.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	t.Cleanup(func() { s.Close() })
	l := e.openLog(t, s, fastSeal)
	var id string
	for i := range 3 {
		id, _ = appendSealed(t, l, sampleRecord(i))
	}
	l.Close()
	return s, cert, id
}

// validator is a fetching validator (no configured anchors: Export takes
// the chain's root).
func validator(t *testing.T, srv *crlServer) *certvalidation.Validator {
	t.Helper()
	v, err := certvalidation.New(certvalidation.Config{}, certvalidation.Material{}, certvalidation.ValidatorOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantCheck(t *testing.T, what string, err error, check string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if be, ok := errors.AsType[*proof.BundleError](err); !ok || be.Check != check {
		t.Errorf("%s: %v, want the %s check to fail", what, err, check)
	}
}

// rezip rebuilds a bundle in canonical form after edit has changed its
// files (nil: the file is dropped) and the manifest's revocation list is
// recomputed from the revocation files left, and add appended: what a
// forger would do.
func rezip(t *testing.T, data []byte, edit func(name string, content []byte) []byte, add ...proof.RevocationData) []byte {
	t.Helper()
	return rezipManifest(t, data, edit, func(*proof.Manifest) {}, add...)
}

// rezipManifest is rezip with editManifest applied to the manifest last.
func rezipManifest(t *testing.T, data []byte, edit func(name string, content []byte) []byte, editManifest func(*proof.Manifest), add ...proof.RevocationData) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	type file struct {
		name string
		data []byte
		time time.Time
	}
	var files []file
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.Name != "manifest.json" {
			content = edit(f.Name, content)
			if content == nil {
				continue
			}
		}
		files = append(files, file{f.Name, content, f.Modified})
	}
	var m proof.Manifest
	if err := json.Unmarshal(files[0].data, &m); err != nil {
		t.Fatal(err)
	}
	var kept []proof.ManifestRevocation
	for _, mr := range m.Revocation {
		for _, f := range files {
			if f.name == mr.File {
				sum := sha256.Sum256(f.data)
				mr.SHA256 = hex.EncodeToString(sum[:])
				kept = append(kept, mr)
			}
		}
	}
	for _, a := range add {
		name := fmt.Sprintf("revocation/%d.der", len(kept))
		sum := sha256.Sum256(a.Data)
		kept = append(kept, proof.ManifestRevocation{File: name, Kind: a.Kind, SHA256: hex.EncodeToString(sum[:])})
		files = append(files, file{name, a.Data, files[0].time})
	}
	m.Revocation = append([]proof.ManifestRevocation{}, kept...)
	editManifest(&m)
	if files[0].data, err = json.MarshalIndent(m, "", "  "); err != nil {
		t.Fatal(err)
	}
	files[0].data = append(files[0].data, '\n')
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store, Modified: f.time})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestBundleRevocation(t *testing.T) {
	e := newEnv(t)
	srv := newCRLServer(t)
	s, logCert, id := cdpLog(t, e, srv)
	verify := func(data []byte) error {
		_, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots})
		return err
	}
	chain := []*x509.Certificate{logCert, e.root.Cert}

	good := rootCRL(t, e, 1, time.Time{}, nil)
	srv.set(good)
	data, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: chain, Validator: validator(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proof.ReadBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(good)
	want := proof.ManifestRevocation{File: "revocation/0.der", Kind: proof.RevocationCRL, SHA256: hex.EncodeToString(sum[:])}
	if len(b.Revocation) != 1 || !bytes.Equal(b.Revocation[0].Data, good) || b.Manifest.Revocation[0] != want {
		t.Fatalf("revocation data: %+v, want the CRL served (%+v)", b.Manifest.Revocation, want)
	}
	// Offline: the server is gone, the bundle suffices.
	srv.Close()
	if err := verify(data); err != nil {
		t.Fatalf("the bundle with its CRL: %v", err)
	}

	// Without the CRL, the status of a certificate naming a distribution
	// point is not established.
	stripped := rezip(t, data, func(name string, c []byte) []byte {
		if strings.HasPrefix(name, "revocation/") {
			return nil
		}
		return c
	})
	wantCheck(t, "the CRL removed", verify(stripped), "revocation")
	// A CRL whose signature no longer verifies, or that does not parse.
	badSig := rezip(t, data, func(name string, c []byte) []byte {
		if strings.HasPrefix(name, "revocation/") {
			c = bytes.Clone(c)
			c[len(c)-1] ^= 1
		}
		return c
	})
	wantCheck(t, "a tampered CRL", verify(badSig), "revocation")
	garbled := rezip(t, data, func(name string, c []byte) []byte {
		if strings.HasPrefix(name, "revocation/") {
			c = bytes.Clone(c)
			c[0] ^= 0x20
		}
		return c
	})
	wantCheck(t, "a garbled CRL", verify(garbled), "revocation")
	// A CRL of another CA concerns neither certificate.
	other := newEnv(t)
	foreign := rezip(t, data, func(name string, c []byte) []byte {
		if strings.HasPrefix(name, "revocation/") {
			return rootCRL(t, other, 1, time.Time{}, nil)
		}
		return c
	})
	wantCheck(t, "another CA's CRL", verify(foreign), "revocation")
	// A CRL that concerns neither chain, beside the right one.
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := devpki.NewRootCA(otherKey, "another root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	unrelated := rezip(t, data, func(_ string, c []byte) []byte { return c }, proof.RevocationData{Kind: proof.RevocationCRL, Data: rootCRL(t, &env{root: otherCA}, 1, time.Time{}, nil)})
	wantCheck(t, "an unrelated CRL added", verify(unrelated), "revocation")
	// An OCSP response that is none.
	notOCSP := rezip(t, data, func(_ string, c []byte) []byte { return c }, proof.RevocationData{Kind: proof.RevocationOCSP, Data: good})
	wantCheck(t, "a CRL as an OCSP response", verify(notOCSP), "revocation")
	// The rebuild itself is canonical: unchanged, the bundle verifies.
	if err := verify(rezip(t, data, func(_ string, c []byte) []byte { return c })); err != nil {
		t.Errorf("rebuilt unchanged: %v", err)
	}
	// And any single byte changed still fails.
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		if verify(bad) == nil {
			t.Fatalf("byte %d changed: the bundle still verifies", i)
		}
	}
}

func TestBundleRevoked(t *testing.T) {
	e := newEnv(t)
	srv := newCRLServer(t)
	s, logCert, id := cdpLog(t, e, srv)
	chain := []*x509.Certificate{logCert, e.root.Cert}

	// Revoked before the time-stamp: the bundle carries the CRL that says
	// so, and fails.
	srv.set(rootCRL(t, e, 2, time.Time{}, map[*x509.Certificate]time.Time{logCert: time.Now().Add(-30 * time.Minute)}))
	data, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: chain, Validator: validator(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proof.ReadBundle(data)
	if err != nil || len(b.Revocation) != 1 {
		t.Fatalf("read: %v, %d items of revocation data", err, len(b.Revocation))
	}
	_, err = proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots})
	wantCheck(t, "a revoked log certificate", err, "revocation")
	if err != nil && !strings.Contains(err.Error(), "revoked") {
		t.Errorf("error %q does not say revoked", err)
	}

	// Revoked after the time-stamp, on a CRL issued later still (beyond
	// certvalidation's clock skew of the time-stamp, so dated ahead here):
	// the tree head was signed while the key was good.
	later := time.Now().Add(certvalidation.DefaultClockSkew + time.Minute)
	srv.set(rootCRL(t, e, 3, later, map[*x509.Certificate]time.Time{logCert: later.Add(-time.Second)}))
	data, err = proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: chain, Validator: validator(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{Roots: e.roots}); err != nil {
		t.Errorf("revoked after the time-stamp: %v", err)
	}
}

// TestBundleRevocationNoSource: with a validator but certificates that
// name no distribution point and no responder (the dev PKI), the list is
// empty and the bytes are those of an export without a validator.
func TestBundleRevocationNoSource(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	id, _ := appendSealed(t, l, sampleRecord(1))
	l.Close()
	chain := []*x509.Certificate{e.cert, e.root.Cert}
	v, err := certvalidation.New(certvalidation.Config{}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	with, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: chain, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	without, err := proof.Export(t.Context(), s, id, proof.ExportOptions{LogChain: chain})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(with, without) {
		t.Error("an export with a validator but nothing to fetch differs from one without")
	}
	if _, err := proof.VerifyBundle(with, proof.BundleVerifyOptions{Roots: e.roots}); err != nil {
		t.Error(err)
	}
}
