package signing_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pec/hsm"
	"pec/internal/devpki"
	"pec/internal/interop"
	"pec/signing"
)

// TestOpenSSLVerifiesOurCAdES: `openssl cms -verify` accepts our attached
// and detached signatures for every key type, and `openssl cms -cmsout
// -print` shows the CAdES signed attributes and the signature timestamp.
func TestOpenSSLVerifiesOurCAdES(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	p := newPKI(t)
	dir := t.TempDir()
	doc := filepath.Join(dir, "doc.txt")
	writeFile(t, doc, []byte("Décision de la commission, séance du 12 mars.\n"))
	data, _ := os.ReadFile(doc)
	for _, kc := range keyCases {
		for _, bt := range []bool{false, true} {
			opts := signing.SignerOptions{Hash: crypto.SHA256, PSS: kc.pss}
			if bt {
				opts.Timestamper = p.timestamper()
			}
			if kc.kt == hsm.ECP384 {
				opts.Hash = crypto.SHA384
			}
			s, _ := p.signer(t, hsmKey(t, kc.kt), time.Time{}, opts)
			for _, detached := range []bool{false, true} {
				name := kc.name
				if bt {
					name += "/B-T"
				}
				if detached {
					name += "/detached"
				}
				t.Run(name, func(t *testing.T) {
					sig, err := s.Sign(context.Background(), data, detached)
					if err != nil {
						t.Fatal(err)
					}
					path := filepath.Join(t.TempDir(), "sig.p7s")
					writeFile(t, path, sig.DER)
					out := filepath.Join(t.TempDir(), "out.txt")
					args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", path, "-CAfile", p.rootPEM, "-out", out}
					if detached {
						args = append(args, "-content", doc)
					}
					interop.OpenSSL(t, args...)
					if got, _ := os.ReadFile(out); string(got) != string(data) {
						t.Errorf("openssl extracted %q", got)
					}
					printed := string(interop.OpenSSL(t, "cms", "-cmsout", "-print", "-inform", "DER", "-in", path))
					want := []string{"contentType (1.2.840.113549.1.9.3)", "messageDigest (1.2.840.113549.1.9.4)",
						"signingTime (1.2.840.113549.1.9.5)", "id-smime-aa-signingCertificateV2 (1.2.840.113549.1.9.16.2.47)"}
					if bt {
						want = append(want, "id-smime-aa-timeStampToken (1.2.840.113549.1.9.16.2.14)")
					}
					for _, w := range want {
						if !strings.Contains(printed, w) {
							t.Errorf("openssl cms -print lacks %q", w)
						}
					}
				})
			}
		}
	}
}

// TestWeVerifyOpenSSLSignatures: our verifier accepts what `openssl cms
// -sign` makes: with and without -cades, attached, detached, streamed
// (BER), PEM, without attributes, RSA-PSS, SHA-512.
func TestWeVerifyOpenSSLSignatures(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	p := newPKI(t)
	dir := t.TempDir()
	ecKey := softKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][2]string{}
	for name, key := range map[string]crypto.Signer{"ec": ecKey, "rsa": rsaKey} {
		cert, err := p.ca.IssueDocumentSigner(key.Public(), "OpenSSL signer "+name, "Elsewhere", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := devpki.KeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		writeFile(t, c, devpki.CertPEM(cert))
		writeFile(t, k, keyPEM)
		files[name] = [2]string{c, k}
	}
	doc := filepath.Join(dir, "doc.txt")
	data := []byte("A tele-dossier signed by another tool.\n")
	writeFile(t, doc, data)
	v := p.verifier()
	for _, tc := range []struct {
		name     string
		key      string
		args     []string
		detached bool
		format   string
	}{
		{"ECDSA attached", "ec", []string{"-nodetach", "-outform", "DER"}, false, "CMS"},
		{"ECDSA detached", "ec", []string{"-outform", "DER"}, true, "CMS"},
		{"ECDSA CAdES", "ec", []string{"-cades", "-nodetach", "-outform", "DER"}, false, "CAdES-B-B"},
		{"ECDSA PEM", "ec", []string{"-cades", "-outform", "PEM"}, true, "CAdES-B-B"},
		{"ECDSA streamed BER", "ec", []string{"-nodetach", "-stream", "-outform", "DER"}, false, "CMS"},
		{"RSA SHA-512", "rsa", []string{"-md", "sha512", "-cades", "-outform", "DER"}, true, "CAdES-B-B"},
		{"RSA-PSS", "rsa", []string{"-keyopt", "rsa_padding_mode:pss", "-nodetach", "-outform", "DER"}, false, "CMS"},
		{"RSA without attributes", "rsa", []string{"-noattr", "-nodetach", "-outform", "DER"}, false, "CMS"},
		{"ECDSA key identifier", "ec", []string{"-keyid", "-cades", "-outform", "DER"}, true, "CAdES-B-B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "sig")
			args := append([]string{"cms", "-sign", "-binary", "-in", doc, "-signer", files[tc.key][0], "-inkey", files[tc.key][1], "-out", out}, tc.args...)
			interop.OpenSSL(t, args...)
			sig, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var opts signing.VerifyOptions
			if tc.detached {
				opts.Data = data
			}
			r, err := v.Verify(context.Background(), sig, opts)
			if err != nil {
				t.Fatal(err)
			}
			wantPassed(t, r)
			if f := r.Signatures[0].Format; f != tc.format {
				t.Errorf("format %q, want %q", f, tc.format)
			}
			// The same signature over other data fails.
			opts.Data = []byte("other data")
			if !tc.detached {
				opts.Data = nil
				sig = tamperContent(t, sig, data)
				if sig == nil {
					return // streamed or PEM: the content is not findable as is
				}
			}
			r, err = v.Verify(context.Background(), sig, opts)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, r, signing.TotalFailed, signing.HashFailure)
		})
	}
}

// tamperContent changes one byte of the attached content in a DER CMS, or
// returns nil when the content is not there verbatim.
func tamperContent(t testing.TB, der, content []byte) []byte {
	t.Helper()
	i := strings.Index(string(der), string(content))
	if i < 0 {
		return nil
	}
	out := append([]byte(nil), der...)
	out[i] ^= 0x20
	return out
}

// TestOpenSSLCertificateChain: a signer under an intermediate CA, the
// intermediate carried in the signature, verifies with only the root.
func TestIntermediateCA(t *testing.T) {
	p := newPKI(t)
	interKey := softKey(t)
	interCert, err := p.ca.Issue(&x509.Certificate{
		Subject: p.ca.Cert.Subject, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	inter := &devpki.CA{Cert: interCert, Signer: interKey}
	key := hsmKey(t, hsm.ECP256)
	cert, err := inter.IssueDocumentSigner(key.Public(), "under an intermediate", "PEC", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(key, []*x509.Certificate{cert, interCert, p.ca.Cert}, signing.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(context.Background(), []byte("x"), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.verifier().Verify(context.Background(), sig.DER, signing.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, r)
}
