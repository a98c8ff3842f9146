package proof_test

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/evidence"
	"pec/proof"
	"pec/tsa"
)

// zipEntry is one file of a bundle's ZIP, as rewriteZip rewrites it.
type zipEntry struct {
	header zip.FileHeader
	data   []byte
}

// rewriteZip rewrites the ZIP of a bundle after change has edited its
// entries: for the rules about the container that no re-encoding of a
// Bundle can break.
func rewriteZip(t testing.TB, data []byte, change func([]zipEntry) []zipEntry) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var entries []zipEntry
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, zipEntry{f.FileHeader, b})
	}
	entries = change(entries)
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, e := range entries {
		h := e.header
		w, err := zw.CreateHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestBundleRules: the checks of ReadBundle and VerifyBundle, one broken
// rule a case, named after it. A bundle of the log is read, one thing in
// it changed, and written again in the canonical form (the checkpoint
// signed again by the log key, and stamped again by the TSA, where the
// rule is not theirs), so that only the rule under test can refuse it.
func TestBundleRules(t *testing.T) {
	e := newEnv(t)
	data, _ := exportSample(t, e)
	opts := proof.BundleVerifyOptions{Roots: e.roots}
	read := func() *proof.Bundle {
		b, err := proof.ReadBundle(data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if n := len(read().Records); n < 2 {
		t.Fatalf("the sample bundle has %d records, want several", n)
	}
	encode := func(b *proof.Bundle) []byte {
		out, err := proof.EncodeBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	with := func(change func(b *proof.Bundle)) []byte {
		b := read()
		change(b)
		return encode(b)
	}
	stampOf := func(d []byte) []byte {
		req, err := (&timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: d, Certificates: true}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.tsa.Respond(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tsa.ParseToken(resp)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Raw
	}
	// restamp gives b a checkpoint and a token over it.
	restamp := func(b *proof.Bundle, note []byte) {
		b.Checkpoint = note
		sum := sha256.Sum256(note)
		b.Token = stampOf(sum[:])
	}
	signCheckpoint := func(s *proof.NoteSigner, cp proof.Checkpoint) []byte {
		note, err := s.Sign(cp.Text())
		if err != nil {
			t.Fatal(err)
		}
		return note
	}
	head := func(b *proof.Bundle) proof.Checkpoint {
		return proof.Checkpoint{Origin: b.Manifest.Origin, Size: b.Manifest.TreeHead.Size, Root: b.Root}
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := proof.NewNoteSigner(origin, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	other := newEnv(t)
	logCert := func(ca *env, ekus ...asn1.ObjectIdentifier) *x509.Certificate {
		c, err := ca.root.Issue(&x509.Certificate{
			SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "PEC proof log"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: ekus,
		}, e.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	flip := func(h []byte) []byte {
		c := bytes.Clone(h)
		c[0] ^= 1
		return c
	}

	for _, tc := range []struct {
		name  string
		in    []byte
		opts  *proof.BundleVerifyOptions
		check string // the BundleError's check; "malformed": ErrMalformedBundle; "": valid
		msg   string // in the error
	}{
		{name: "valid/as exported", in: data},
		{name: "valid/written again unchanged", in: with(func(*proof.Bundle) {})},
		{name: "valid/checkpoint signed and stamped again", in: with(func(b *proof.Bundle) { restamp(b, signCheckpoint(e.signer, head(b))) })},

		// The container (ReadBundle).
		{name: "bundle/over the size bound", in: make([]byte, proof.MaxBundleSize+1), check: "malformed", msg: "over"},
		{name: "bundle/not a ZIP", in: []byte("not a zip"), check: "malformed", msg: "not a ZIP"},
		{name: "bundle/manifest not first", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry { return append(es[1:], es[0]) }), check: "malformed", msg: "manifest.json is not the first file"},
		{name: "bundle/a file twice", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry { return append(es, es[len(es)-1]) }), check: "bundle", msg: "twice"},
		{name: "bundle/a compressed file", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry { es[1].header.Method = zip.Deflate; return es }), check: "bundle", msg: "not stored"},
		{name: "bundle/an extra file", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry {
			return append(es, zipEntry{zip.FileHeader{Name: "extra", Method: zip.Store, Modified: es[0].header.Modified}, []byte("x")})
		}), check: "bundle", msg: "not in canonical form"},
		{name: "bundle/too many files", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry {
			for i := range 170 {
				es = append(es, zipEntry{zip.FileHeader{Name: "extra" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Method: zip.Store}, nil})
			}
			return es
		}), check: "malformed", msg: "files"},
		{name: "bundle/an unknown manifest field", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry {
			es[0].data = bytes.Replace(es[0].data, []byte("{"), []byte(`{"extra": 1,`), 1)
			return es
		}), check: "malformed", msg: "manifest.json"},
		{name: "bundle/another format", in: with(func(b *proof.Bundle) { b.Manifest.Format = "pec-proof-bundle/9" }), check: "malformed", msg: "format"},
		{name: "bundle/no record", in: with(func(b *proof.Bundle) {
			b.Manifest.Format = proof.BundleFormatV1
			b.Manifest.Records, b.Records, b.RecordData, b.Inclusion = nil, nil, nil, nil
		}), check: "bundle", msg: "0 records"},
		{name: "bundle/a record file missing", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry {
			return slices.DeleteFunc(es, func(e zipEntry) bool { return strings.HasSuffix(e.header.Name, ".bin") })
		}), check: "bundle", msg: "no file"},
		{name: "bundle/a readable copy that is not its record", in: rewriteZip(t, data, func(es []zipEntry) []zipEntry {
			for i := range es {
				if strings.HasSuffix(es[i].header.Name, ".json") && es[i].header.Name != "manifest.json" {
					es[i].data = bytes.Replace(es[i].data, []byte(`"subject": "dossier-`), []byte(`"subject": "dossieR-`), 1)
					break
				}
			}
			return es
		}), check: "bundle", msg: "not in canonical form"},

		// Records.
		{name: "record/not a canonical record", in: with(func(b *proof.Bundle) { b.RecordData[0] = append(bytes.Clone(b.RecordData[0]), 0) }), check: "record", msg: "record"},
		{name: "record/another id than the manifest's", in: with(func(b *proof.Bundle) { b.Manifest.Records[0].ID = b.Manifest.Records[1].ID }), check: "record", msg: "the record's id is"},
		{name: "record/the first is not the evidence", in: with(func(b *proof.Bundle) { b.Manifest.Evidence = b.Records[1].ID }), check: "record", msg: "the first record is not the evidence"},
		{name: "record/an inclusion hash of 31 bytes", in: with(func(b *proof.Bundle) { b.Inclusion[0][0] = b.Inclusion[0][0][:31] }), check: "record", msg: "not 32 bytes"},
		{name: "inclusion/an element flipped", in: with(func(b *proof.Bundle) { b.Inclusion[0][0] = flip(b.Inclusion[0][0]) }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/the last element flipped", in: with(func(b *proof.Bundle) { p := b.Inclusion[0]; p[len(p)-1] = flip(p[len(p)-1]) }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/one element short", in: with(func(b *proof.Bundle) { b.Inclusion[0] = b.Inclusion[0][:len(b.Inclusion[0])-1] }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/one element more", in: with(func(b *proof.Bundle) { b.Inclusion[0] = append(b.Inclusion[0], b.Root) }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/the indexes of two records swapped", in: with(func(b *proof.Bundle) {
			r := b.Manifest.Records
			r[0].Index, r[1].Index = r[1].Index, r[0].Index
		}), check: "record", msg: "inclusion proof"},
		{name: "inclusion/index at the tree size", in: with(func(b *proof.Bundle) { b.Manifest.Records[0].Index = b.Manifest.TreeHead.Size }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/the proofs of two records swapped", in: with(func(b *proof.Bundle) { b.Inclusion[0], b.Inclusion[1] = b.Inclusion[1], b.Inclusion[0] }), check: "record", msg: "inclusion proof"},
		{name: "inclusion/another record's data under its id", in: with(func(b *proof.Bundle) {
			r := *b.Records[1]
			r.ID = b.Records[0].ID
			enc, err := r.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			dec, err := evidence.UnmarshalRecord(enc)
			if err != nil {
				t.Fatal(err)
			}
			b.Records[0], b.RecordData[0] = dec, enc
		}), check: "record", msg: "inclusion proof"},

		// The tree head.
		{name: "tree head/a root of 31 bytes", in: with(func(b *proof.Bundle) { b.Root = b.Root[:31] }), check: "tree head", msg: "not 32 bytes"},
		{name: "tree head/manifest size not the checkpoint's", in: with(func(b *proof.Bundle) { b.Manifest.TreeHead.Size++ }), check: "tree head", msg: "of another tree"},
		{name: "tree head/manifest root not the checkpoint's", in: with(func(b *proof.Bundle) { b.Root = flip(b.Root) }), check: "tree head", msg: "of another tree"},
		{name: "tree head/checkpoint of another size, signed", in: with(func(b *proof.Bundle) {
			cp := head(b)
			cp.Size++
			restamp(b, signCheckpoint(e.signer, cp))
		}), check: "tree head", msg: "of another tree"},
		{name: "tree head/checkpoint of another root, signed", in: with(func(b *proof.Bundle) {
			cp := head(b)
			cp.Root = flip(cp.Root)
			restamp(b, signCheckpoint(e.signer, cp))
		}), check: "tree head", msg: "of another tree"},
		{name: "tree head/checkpoint signed by another key", in: with(func(b *proof.Bundle) { restamp(b, signCheckpoint(otherSigner, head(b))) }), check: "tree head", msg: "no valid signature"},
		{name: "tree head/checkpoint of another origin", in: with(func(b *proof.Bundle) { b.Manifest.Origin = "pec.test/other" }), check: "tree head", msg: "no valid signature"},
		{name: "tree head/origin not a key name", in: with(func(b *proof.Bundle) { b.Manifest.Origin = "pec test" }), check: "certificates", msg: "key name"},

		// The timestamp.
		{name: "timestamp/over another checkpoint", in: with(func(b *proof.Bundle) { b.Token = stampOf(make([]byte, 32)) }), check: "timestamp", msg: "message imprint does not match"},
		{name: "timestamp/the checkpoint changed after stamping", in: with(func(b *proof.Bundle) { b.Checkpoint = signCheckpoint(e.signer, head(b)) }), check: "timestamp", msg: "message imprint does not match"},
		{name: "timestamp/a TSA of another root", in: data, opts: &proof.BundleVerifyOptions{Roots: other.roots}, check: "timestamp"},

		// The certificates.
		{name: "certificates/none", in: with(func(b *proof.Bundle) { b.Certificates = nil }), check: "certificates", msg: "no certificate"},
		{name: "certificates/log key's without the evidence-log EKU", in: with(func(b *proof.Bundle) { b.Certificates = []*x509.Certificate{logCert(e), e.root.Cert} }), check: "certificates", msg: "not an evidence log's"},
		{name: "certificates/log key's under another root", in: with(func(b *proof.Bundle) {
			b.Certificates = []*x509.Certificate{logCert(other, proof.OIDEvidenceLog), other.root.Cert}
		}), check: "certificates", msg: "the log key's certificate"},
		{name: "certificates/another key's certificate", in: with(func(b *proof.Bundle) {
			b.Certificates = []*x509.Certificate{other.cert, e.root.Cert}
		}), check: "certificates", msg: "the log key's certificate"},
		{name: "valid/another certificate of the log key", in: with(func(b *proof.Bundle) {
			b.Certificates = []*x509.Certificate{logCert(e, proof.OIDEvidenceLog), e.root.Cert}
		})},

		// Revocation data.
		{name: "revocation/an unknown kind", in: with(func(b *proof.Bundle) { b.Revocation = []proof.RevocationData{{Kind: "ldap", Data: []byte{1}}} }), check: "revocation", msg: "kind"},
		{name: "revocation/too many items", in: with(func(b *proof.Bundle) {
			for range 33 {
				b.Revocation = append(b.Revocation, proof.RevocationData{Kind: proof.RevocationCRL, Data: []byte{1}})
			}
		}), check: "revocation", msg: "over 32"},
		{name: "revocation/not a CRL", in: with(func(b *proof.Bundle) {
			b.Revocation = []proof.RevocationData{{Kind: proof.RevocationCRL, Data: []byte{0x30, 0}}}
		}), check: "revocation", msg: "not a CRL"},
		{name: "revocation/not an OCSP response", in: with(func(b *proof.Bundle) {
			b.Revocation = []proof.RevocationData{{Kind: proof.RevocationOCSP, Data: []byte{0x30, 0}}}
		}), check: "revocation", msg: "not an OCSP response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			if tc.opts != nil {
				o = *tc.opts
			}
			_, err := proof.VerifyBundle(tc.in, o)
			switch tc.check {
			case "":
				if err != nil {
					t.Fatalf("VerifyBundle: %v", err)
				}
				return
			case "malformed":
				if !errors.Is(err, proof.ErrMalformedBundle) {
					t.Fatalf("VerifyBundle: %v; want ErrMalformedBundle", err)
				}
			default:
				be, ok := errors.AsType[*proof.BundleError](err)
				if !ok || !strings.HasPrefix(be.Check, tc.check) {
					t.Fatalf("VerifyBundle: %v; want the %s check to fail", err, tc.check)
				}
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("VerifyBundle: %v; want it to say %q", err, tc.msg)
			}
		})
	}
	t.Run("no roots", func(t *testing.T) {
		if _, err := proof.VerifyBundle(data, proof.BundleVerifyOptions{}); err == nil {
			t.Fatal("VerifyBundle without roots succeeded")
		}
	})
}
