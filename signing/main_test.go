package signing_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pec/hsm"
	"pec/internal/devpki"
	"pec/internal/softhsmtest"
	"pec/signing"
	"pec/tsa"
)

// keys is a KeyStore on a SoftHSM2 token made by TestMain: the signing
// keys of the tests are real PKCS#11 keys.
var (
	keys      hsm.KeyStore
	tokenConf hsm.Config
)

// TestMain points SoftHSM2 at a throw-away token directory before the
// module loads, and opens the shared token.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var cleanup func()
	var err error
	if tokenConf, cleanup, err = softhsmtest.Main("signing"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	if keys, err = hsm.Open(context.Background(), tokenConf, hsm.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer keys.Close()
	return m.Run()
}

var (
	keyMu    sync.Mutex
	keyCache = map[hsm.KeyType]crypto.Signer{}
	labels   atomic.Int64
)

// hsmKey returns a key of type kt on the shared token, made once per test
// binary (RSA key generation is slow).
func hsmKey(t testing.TB, kt hsm.KeyType) crypto.Signer {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[kt]; ok {
		return k
	}
	k, err := keys.GenerateKey(context.Background(), fmt.Sprintf("sign-%v-%d", kt, labels.Add(1)), kt)
	if err != nil {
		t.Fatal(err)
	}
	keyCache[kt] = k
	return k
}

// pki is a test PKI: a root CA, a TSA answering in-process, and the files
// the command-line tools need.
type pki struct {
	ca      *devpki.CA
	roots   *x509.CertPool
	tsa     *tsa.Authority
	dir     string
	rootPEM string // the root certificate, for openssl -CAfile
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	now := time.Now()
	ca, err := devpki.NewRootCA(softKey(t), "signing test root", now)
	if err != nil {
		t.Fatal(err)
	}
	tsaKey := softKey(t)
	tsaCert, err := ca.IssueTSA(tsaKey.Public(), "signing test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	serials, err := tsa.OpenFileSerials(filepath.Join(dir, "serials"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serials.Close() })
	cfg := tsa.Config{KeyLabel: "tsa", PolicyOID: "2.999.3161.1", Accuracy: time.Second}
	a, err := tsa.New(cfg, tsaKey, []*x509.Certificate{tsaCert, ca.Cert}, serials, tsa.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{ca: ca, roots: x509.NewCertPool(), tsa: a, dir: dir, rootPEM: filepath.Join(dir, "root.pem")}
	p.roots.AddCert(ca.Cert)
	writeFile(t, p.rootPEM, devpki.CertPEM(ca.Cert))
	return p
}

func softKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signer makes a Signer for key with a document-signing certificate of
// the PKI, issued as at issued (the zero time: now).
func (p *pki) signer(t testing.TB, key crypto.Signer, issued time.Time, opts signing.SignerOptions) (*signing.Signer, *x509.Certificate) {
	t.Helper()
	if issued.IsZero() {
		issued = time.Now()
	}
	cert, err := p.ca.IssueDocumentSigner(key.Public(), "PEC test signer", "PEC tests", issued)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(key, []*x509.Certificate{cert, p.ca.Cert}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, cert
}

// timestamper is the PKI's TSA in-process.
func (p *pki) timestamper() signing.Timestamper { return signing.LocalTSA{Authority: p.tsa} }

func (p *pki) verifier() *signing.Verifier {
	return &signing.Verifier{Chain: signing.X509Validator{Roots: p.roots}, TSARoots: p.roots}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pdfWriter builds test PDFs (ISO 32000-1) with exact offsets.
type pdfWriter struct {
	buf     bytes.Buffer
	offsets map[int]int
}

func newPDFWriter(version string) *pdfWriter {
	w := &pdfWriter{offsets: map[int]int{}}
	fmt.Fprintf(&w.buf, "%%PDF-%s\n%%\xe2\xe3\xcf\xd3\n", version)
	return w
}

func (w *pdfWriter) obj(num int, body string) {
	w.offsets[num] = w.buf.Len()
	fmt.Fprintf(&w.buf, "%d 0 obj\n%s\nendobj\n", num, body)
}

func (w *pdfWriter) stream(num int, dict string, data []byte) {
	w.offsets[num] = w.buf.Len()
	fmt.Fprintf(&w.buf, "%d 0 obj\n<< %s /Length %d >>\nstream\n", num, dict, len(data))
	w.buf.Write(data)
	w.buf.WriteString("\nendstream\nendobj\n")
}

// xrefTable ends the file with a classic cross-reference table.
func (w *pdfWriter) xrefTable(size int, trailer string) []byte {
	start := w.buf.Len()
	fmt.Fprintf(&w.buf, "xref\n0 %d\n0000000000 65535 f \n", size)
	for i := 1; i < size; i++ {
		fmt.Fprintf(&w.buf, "%010d 00000 n \n", w.offsets[i])
	}
	fmt.Fprintf(&w.buf, "trailer\n<< /Size %d %s >>\nstartxref\n%d\n%%%%EOF\n", size, trailer, start)
	return w.buf.Bytes()
}

// samplePDF is a small valid PDF of pages A4 pages of text with a classic
// cross-reference table.
func samplePDF(pages int) []byte {
	w := newPDFWriter("1.7")
	kids := ""
	for i := range pages {
		kids += fmt.Sprintf("%d 0 R ", 5+2*i)
	}
	w.obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
	w.obj(2, fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", kids, pages))
	w.obj(3, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
	w.obj(4, "<< /Title (Extrait de casier judiciaire) /Producer (PEC tests) >>")
	for i := range pages {
		content := fmt.Appendf(nil, "BT /F1 18 Tf 72 760 Td (Bulletin n\\2603 - page %d) Tj ET", i+1)
		w.obj(5+2*i, fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>", 6+2*i))
		w.stream(6+2*i, "", content)
	}
	return bytes.Clone(w.xrefTable(5+2*pages, "/Root 1 0 R /Info 4 0 R /ID [<0123456789abcdef0123456789abcdef> <0123456789abcdef0123456789abcdef>]"))
}

// sampleCompressedPDF is a PDF 1.5 whose catalog, page tree and page are
// in an object stream, indexed by a cross-reference stream compressed
// with FlateDecode and the PNG Up predictor (what most producers write).
func sampleCompressedPDF() []byte {
	w := newPDFWriter("1.5")
	content := []byte("BT /F1 18 Tf 72 760 Td (Compressed) Tj ET")
	w.stream(1, "", content)
	// Objects 2-5 go into object stream 6.
	objs := []string{
		"<< /Type /Catalog /Pages 3 0 R >>",
		"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 1 0 R >>",
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var header, body bytes.Buffer
	for i, o := range objs {
		fmt.Fprintf(&header, "%d %d ", 2+i, body.Len())
		body.WriteString(o + "\n")
	}
	stm := append(header.Bytes(), body.Bytes()...)
	w.stream(6, fmt.Sprintf("/Type /ObjStm /N %d /First %d /Filter /FlateDecode", len(objs), header.Len()), deflate(stm))
	// Cross-reference stream 7: W [1 2 1], rows predicted with PNG Up.
	xrefAt := w.buf.Len()
	rows := [][]int{{0, 0, 255}, {1, w.offsets[1], 0}}
	for i := range objs {
		rows = append(rows, []int{2, 6, i})
	}
	rows = append(rows, []int{1, w.offsets[6], 0}, []int{1, xrefAt, 0})
	var raw []byte
	prev := make([]byte, 4)
	for _, r := range rows {
		row := []byte{byte(r[0]), byte(r[1] >> 8), byte(r[1]), byte(r[2])}
		raw = append(raw, 2) // PNG Up
		for i := range row {
			raw = append(raw, row[i]-prev[i])
		}
		prev = row
	}
	w.stream(7, fmt.Sprintf("/Type /XRef /Size 8 /W [1 2 1] /Root 2 0 R /Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 4 >>"), deflate(raw))
	fmt.Fprintf(&w.buf, "startxref\n%d\n%%%%EOF\n", xrefAt)
	return bytes.Clone(w.buf.Bytes())
}

func deflate(b []byte) []byte {
	var out bytes.Buffer
	zw := zlib.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}
