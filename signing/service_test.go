package signing_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pec/evidence"

	"pec/hsm"
	"pec/internal/devpki"
	"pec/signing"
)

// service is a Service with a CAdES profile "default" (P-256, B-T) and a
// PAdES profile "pdf" (RSA-2048), both allowed to partner-a only, with
// SoftHSM2 keys and evidence in memory.
type service struct {
	*signing.Service
	pki      *pki
	evidence *evidence.Memory
	partnerA signing.Client
	partnerB signing.Client
	reg      *prometheus.Registry
}

func newService(t testing.TB, mutate func(*signing.Config)) *service {
	t.Helper()
	p := newPKI(t)
	labels := map[hsm.KeyType]string{}
	for _, kt := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048} {
		label := fmt.Sprintf("svc-%v-%d", kt, time.Now().UnixNano())
		if _, err := keys.GenerateKey(context.Background(), label, kt); err != nil {
			t.Fatal(err)
		}
		labels[kt] = label
	}
	certFile := func(kt hsm.KeyType) string {
		key, err := keys.Signer(context.Background(), labels[kt])
		if err != nil {
			t.Fatal(err)
		}
		cert, err := p.ca.IssueDocumentSigner(key.Public(), "PEC signature "+kt.String(), "PEC", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(p.dir, kt.String()+".pem")
		writeFile(t, path, devpki.CertPEM(cert, p.ca.Cert))
		return path
	}
	cfg := signing.Config{
		Profiles: []signing.ProfileConfig{
			{Name: "default", KeyLabel: labels[hsm.ECP256], CertFile: certFile(hsm.ECP256), Format: "cades", Timestamp: true, AllowedClients: []string{"partner-a"}},
			{Name: "pdf", KeyLabel: labels[hsm.RSA2048], CertFile: certFile(hsm.RSA2048), Format: "pades", Digest: "sha384", AllowedClients: []string{"partner-a"},
				PDF: signing.PDFConfig{Visible: true, Reason: "Document officiel"}},
		},
		MaxBatch: 100,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ev := &evidence.Memory{}
	reg := prometheus.NewRegistry()
	svc, err := signing.Load(context.Background(), cfg, keys, signing.Options{Timestamper: p.timestamper(), Evidence: ev, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	client := func(name string) signing.Client {
		cert, err := p.ca.IssueClient(softKey(t).Public(), name, "Partner", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return signing.Client{Certificate: cert}
	}
	return &service{Service: svc, pki: p, evidence: ev, partnerA: client("partner-a"), partnerB: client("partner-b"), reg: reg}
}

func TestServiceSign(t *testing.T) {
	s := newService(t, nil)
	ctx := context.Background()
	v := s.pki.verifier()
	doc := []byte("une décision")

	res, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "default", Document: doc})
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.Verify(ctx, res.Signature.DER, signing.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, r)
	if r.Signatures[0].Format != "CAdES-B-T" {
		t.Errorf("format %s", r.Signatures[0].Format)
	}

	sum := sha256.Sum256(doc)
	res2, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "default", Digest: sum[:]})
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Detached {
		t.Error("a signature of a digest is detached")
	}
	r, _ = v.Verify(ctx, res2.Signature.DER, signing.VerifyOptions{Data: doc})
	wantPassed(t, r)

	pdf, err := s.Sign(ctx, s.partnerA, signing.Request{Profile: "pdf", Document: samplePDF(1)})
	if err != nil {
		t.Fatal(err)
	}
	r, _ = v.Verify(ctx, pdf.Signature.DER, signing.VerifyOptions{})
	wantPassed(t, r)
	if r.Signatures[0].Format != "PAdES-B-B" || r.Signatures[0].DigestAlgorithm != "SHA-384" {
		t.Errorf("format %s, digest %s", r.Signatures[0].Format, r.Signatures[0].DigestAlgorithm)
	}

	// One evidence record per operation: who, which profile, which digest.
	recs := s.evidence.Records()
	if len(recs) != 3 {
		t.Fatalf("%d evidence records, want 3", len(recs))
	}
	e := recs[0]
	if e.ID != res.ID || e.Type != evidence.SignatureCreated || attr(e, "profile") != "default" || len(e.Actors) != 2 ||
		e.Actors[0].Role != "client" || !strings.Contains(e.Actors[0].Subject, "CN=partner-a") || e.Actors[0].Fingerprint == ([32]byte{}) ||
		e.Actors[1].Role != "signer" || !strings.Contains(e.Actors[1].Subject, "PEC signature") ||
		len(e.Digests) != 3 || e.Digests[0].Name != "document/0" || e.Digests[0].Algorithm != "sha256" || !bytes.Equal(e.Digests[0].Value, sum[:]) ||
		e.Digests[1].Name != "signature/0" || e.Digests[2].Name != "signature-timestamp/0" {
		t.Errorf("evidence %+v", e)
	}
	if tok := sha256.Sum256(res.Signature.Timestamp.Raw); !bytes.Equal(e.Digests[2].Value, tok[:]) {
		t.Errorf("the evidence names another signature timestamp")
	}
	if !bytes.Equal(recs[1].Digests[0].Value, sum[:]) {
		t.Errorf("the digest signing evidence names %x", recs[1].Digests[0].Value)
	}
	if got := counterSum(t, s.reg, "pec_signing_signatures_total"); got != 3 {
		t.Errorf("pec_signing_signatures_total = %v", got)
	}
}

// counterSum adds up every series of a counter family.
func counterSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestServiceRefuses(t *testing.T) {
	s := newService(t, func(c *signing.Config) {
		c.Profiles = append(c.Profiles, signing.ProfileConfig{Name: "by-fingerprint", KeyLabel: c.Profiles[0].KeyLabel, CertFile: c.Profiles[0].CertFile, Format: "cades"})
	})
	ctx := context.Background()
	sum := sha256.Sum256([]byte("x"))
	for _, tc := range []struct {
		name   string
		client signing.Client
		req    signing.Request
		want   any // an error sentinel or a *RequestError fragment
	}{
		{"client not allowed", s.partnerB, signing.Request{Profile: "default", Document: []byte("x")}, signing.ErrNotAllowed},
		{"client not allowed on PDF", s.partnerB, signing.Request{Profile: "pdf", Document: samplePDF(1)}, signing.ErrNotAllowed},
		{"nobody allowed", s.partnerA, signing.Request{Profile: "by-fingerprint", Document: []byte("x")}, signing.ErrNotAllowed},
		{"unknown profile", s.partnerA, signing.Request{Profile: "nosuch", Document: []byte("x")}, signing.ErrUnknownProfile},
		{"neither document nor digest", s.partnerA, signing.Request{Profile: "default"}, "one of them"},
		{"both", s.partnerA, signing.Request{Profile: "default", Document: []byte("x"), Digest: sum[:]}, "one of them"},
		{"short digest", s.partnerA, signing.Request{Profile: "default", Digest: sum[:31]}, "31"},
		{"digest for PAdES", s.partnerA, signing.Request{Profile: "pdf", Digest: sum[:]}, "need the PDF itself"},
		{"detached PAdES", s.partnerA, signing.Request{Profile: "pdf", Document: samplePDF(1), Detached: true}, "detached is for CAdES"},
		{"not a PDF", s.partnerA, signing.Request{Profile: "pdf", Document: []byte("plain text")}, "not a readable PDF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.evidence.Records())
			res, err := s.Sign(ctx, tc.client, tc.req)
			if res != nil {
				t.Fatal("signed")
			}
			switch want := tc.want.(type) {
			case error:
				if !errors.Is(err, want) {
					t.Fatalf("error %v, want %v", err, want)
				}
			case string:
				re, ok := errors.AsType[*signing.RequestError](err)
				if !ok || !strings.Contains(re.Reason, want) {
					t.Fatalf("error %v, want a *RequestError with %q", err, want)
				}
			}
			recs := s.evidence.Records()[before:]
			for _, r := range recs {
				if r.Type == evidence.SignatureCreated {
					t.Errorf("a signature was recorded: %+v", r)
				}
			}
			if errors.Is(err, signing.ErrNotAllowed) && (len(recs) != 1 || recs[0].Type != evidence.SignatureRefused) {
				t.Errorf("the refusal is not in the evidence: %+v", recs)
			}
		})
	}
	if _, err := s.SignDigests(ctx, s.partnerB, "default", [][]byte{sum[:]}); !errors.Is(err, signing.ErrNotAllowed) {
		t.Errorf("batch by a client not allowed: %v", err)
	}
}

func TestServiceAllowedClients(t *testing.T) {
	s := newService(t, nil)
	a := s.partnerA
	fp := sha256.Sum256(a.Certificate.Raw)
	for _, entry := range []string{"partner-a", a.Certificate.Subject.String(), "sha256:" + hex.EncodeToString(fp[:]), strings.ToUpper(hex.EncodeToString(fp[:]))} {
		t.Run(entry, func(t *testing.T) {
			s2 := newServiceWith(t, s, entry)
			if _, err := s2.Sign(context.Background(), a, signing.Request{Profile: "default", Document: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Sign(context.Background(), s.partnerB, signing.Request{Profile: "default", Document: []byte("x")}); !errors.Is(err, signing.ErrNotAllowed) {
				t.Fatalf("partner-b: %v", err)
			}
		})
	}
}

// newServiceWith loads a service with one CAdES profile "default" on a
// new key of the shared token, allowing only entry.
func newServiceWith(t testing.TB, s *service, entry string) *signing.Service {
	t.Helper()
	label := fmt.Sprintf("allowed-%d", labels.Add(1))
	key, err := keys.GenerateKey(context.Background(), label, hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.pki.ca.IssueDocumentSigner(key.Public(), "allowed clients", "PEC", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cert.pem")
	writeFile(t, path, devpki.CertPEM(cert))
	svc, err := signing.Load(context.Background(), signing.Config{
		Profiles: []signing.ProfileConfig{{Name: "default", KeyLabel: label, CertFile: path, Format: "cades", AllowedClients: []string{entry}}},
	}, keys, signing.Options{Evidence: &evidence.Memory{}})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestServiceBatch(t *testing.T) {
	s := newService(t, nil)
	ctx := context.Background()
	v := s.pki.verifier()
	var docs [][]byte
	var digests [][]byte
	for i := range 40 {
		d := []byte(fmt.Sprintf("document %d", i))
		sum := sha256.Sum256(d)
		docs, digests = append(docs, d), append(digests, sum[:])
	}
	res, err := s.SignDigests(ctx, s.partnerA, "default", digests)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Signatures) != len(digests) {
		t.Fatalf("%d signatures", len(res.Signatures))
	}
	for i, sig := range res.Signatures {
		r, err := v.Verify(ctx, sig.DER, signing.VerifyOptions{Data: docs[i]})
		if err != nil {
			t.Fatal(err)
		}
		wantPassed(t, r)
	}
	recs := s.evidence.Records()
	if len(recs) != 1 || len(recs[0].Digests) != 120 || recs[0].ID != res.ID {
		t.Fatalf("a batch of 40 is one evidence record with every digest (document, signature, timestamp): %+v", recs)
	}
	// A batch larger than a record holds: parts, appended together.
	big := make([][]byte, 70)
	for i := range big {
		d := sha256.Sum256([]byte{byte(i), 1})
		big[i] = d[:]
	}
	bres, err := s.SignDigests(ctx, s.partnerA, "default", big)
	if err != nil {
		t.Fatal(err)
	}
	parts := s.evidence.Records()[1:]
	if len(parts) != 2 || parts[0].ID != bres.ID || parts[0].Subject == "" || parts[0].Subject != parts[1].Subject ||
		attr(parts[0], "part") != "1/2" || attr(parts[1], "part") != "2/2" || len(parts[0].Digests)+len(parts[1].Digests) != 210 ||
		parts[1].Digests[0].Name != "document/64" {
		t.Errorf("a batch of 70: %d records %+v", len(parts), parts)
	}
	for _, tc := range []struct {
		name    string
		profile string
		digests [][]byte
		want    string
	}{
		{"empty", "default", nil, "1 to 100"},
		{"too many", "default", make([][]byte, 101), "1 to 100"},
		{"a short digest", "default", [][]byte{digests[0], digests[1][:20]}, "digest 1 has 20 bytes"},
		{"PAdES profile", "pdf", digests[:1], "CAdES profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.SignDigests(ctx, s.partnerA, tc.profile, tc.digests)
			re, ok := errors.AsType[*signing.RequestError](err)
			if !ok || !strings.Contains(re.Reason, tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func attr(r evidence.Record, key string) string {
	for _, a := range r.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// TestEvidenceFailure: a signature whose evidence cannot be recorded is not
// released.
func TestEvidenceFailure(t *testing.T) {
	s := newService(t, nil)
	s.evidence.Err = evidence.ErrUnavailable
	_, err := s.Sign(context.Background(), s.partnerA, signing.Request{Profile: "default", Document: []byte("x")})
	if !errors.Is(err, evidence.ErrUnavailable) {
		t.Fatalf("Sign with a failing log: %v, want ErrUnavailable", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := signing.ProfileConfig{Name: "default", KeyLabel: "k", CertFile: "c.pem", Format: "cades"}
	bad := []struct {
		name string
		cfg  signing.Config
		want string
	}{
		{"duplicate", signing.Config{Profiles: []signing.ProfileConfig{good, good}, EvidenceFile: "e"}, "signing.profiles[1].name: \"default\" is used"},
		{"format", signing.Config{Profiles: []signing.ProfileConfig{{Name: "x", KeyLabel: "k", CertFile: "c", Format: "xades"}}, EvidenceFile: "e"}, "signing.profiles[0].format: \"xades\""},
		{"digest", signing.Config{Profiles: []signing.ProfileConfig{{Name: "x", KeyLabel: "k", CertFile: "c", Format: "cades", Digest: "md5"}}, EvidenceFile: "e"}, "signing.profiles[0].digest"},
		{"fingerprint", signing.Config{Profiles: []signing.ProfileConfig{{Name: "x", KeyLabel: "k", CertFile: "c", Format: "cades", AllowedClients: []string{"sha256:abcd"}}}, EvidenceFile: "e"}, "allowed_clients[0]"},
		{"pdf on cades", signing.Config{Profiles: []signing.ProfileConfig{{Name: "x", KeyLabel: "k", CertFile: "c", Format: "cades", PDF: signing.PDFConfig{Visible: true}}}, EvidenceFile: "e"}, "signing.profiles[0].pdf: only with format: pades"},
		{"rect", signing.Config{Profiles: []signing.ProfileConfig{{Name: "x", KeyLabel: "k", CertFile: "c", Format: "pades", PDF: signing.PDFConfig{Rect: []float64{1, 2, 3}}}}, EvidenceFile: "e"}, "pdf.rect"},
		{"missing", signing.Config{Profiles: []signing.ProfileConfig{{}}, EvidenceFile: "e"}, "signing.profiles[0].key_label: required"},
		{"tsa url", signing.Config{TSAURL: "ftp://x"}, "signing.tsa_url"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if err := (signing.Config{Profiles: []signing.ProfileConfig{good}, EvidenceFile: "e"}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (signing.Config{}).Validate(); err != nil {
		t.Errorf("an empty section (no signing) is valid: %v", err)
	}
}
