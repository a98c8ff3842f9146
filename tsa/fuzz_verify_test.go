package tsa_test

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"pec/tsa"
)

// tokenError tells whether err is one of the errors ParseToken and Verify
// document: a sentinel or a *RejectError.
func tokenError(err error) bool {
	if _, ok := errors.AsType[*tsa.RejectError](err); ok {
		return true
	}
	for _, sentinel := range []error{
		tsa.ErrMalformed, tsa.ErrUnsupportedAlgorithm, tsa.ErrBadSignature, tsa.ErrNoSigner,
		tsa.ErrSigningCertificate, tsa.ErrTSAName, tsa.ErrChain, tsa.ErrEKU, tsa.ErrImprintMismatch,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// fuzzSeeds are tokens made by OpenSSL: responses and bare tokens, ECDSA
// and RSA, ESSCertIDv2 and v1, with and without certificates, PEM.
func fuzzSeeds(f *testing.F) (*osslTSA, [][]byte) {
	ec := newOSSLTSA(f, osslOpts{})
	rsaTSA := newOSSLTSA(f, osslOpts{key: osslRSAKey(f)})
	resp, token := ec.stamp(f, stampedData, ec.config(f), "-sha256", "-cert")
	_, noCert := ec.stamp(f, stampedData, ec.config(f, "tsa_name = no", "accuracy = -"), "-sha256", "-no_nonce")
	v1, _ := rsaTSA.stamp(f, stampedData, rsaTSA.config(f, "ess_cert_id_alg = sha1"), "-sha384", "-cert")
	rejected := ec.respond(f, stampedData, ec.config(f), "-sha256", "-tspolicy", "1.2.3.4.99")
	return ec, [][]byte{resp, token, noCert, v1, rejected,
		pem.EncodeToMemory(&pem.Block{Type: "TSA TOKEN", Bytes: token}),
		rsaTSA.cmsSign(f, token, "-cades", "-keyopt", "rsa_padding_mode:pss", "-keyid"),
	}
}

// FuzzParseToken: whatever the bytes, ParseToken does not panic and fails
// with a documented error, or returns a complete Token whose Raw reads
// back the same.
//
// The committed corpus is in testdata/fuzz/FuzzParseToken; tokens made by
// OpenSSL now are added below.
func FuzzParseToken(f *testing.F) {
	_, seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := tsa.ParseToken(in)
		if err != nil {
			if tok != nil {
				t.Fatal("a Token with an error")
			}
			if !tokenError(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if tok.Serial == nil || len(tok.Policy) < 2 || tok.GenTime.IsZero() || tok.GenTime.Location() != time.UTC ||
			tok.Hash == 0 || len(tok.Imprint) != tok.Hash.Size() || len(tok.Raw) == 0 {
			t.Fatalf("incomplete token: %+v", tok)
		}
		if tok.Accuracy < 0 {
			t.Fatalf("negative accuracy %v", tok.Accuracy)
		}
		again, err := tsa.ParseToken(tok.Raw)
		if err != nil {
			t.Fatalf("Raw does not parse again: %v", err)
		}
		if !bytes.Equal(again.Raw, tok.Raw) || !again.GenTime.Equal(tok.GenTime) || again.Serial.Cmp(tok.Serial) != 0 ||
			!bytes.Equal(again.Imprint, tok.Imprint) || again.TSAName != tok.TSAName || again.Accuracy != tok.Accuracy {
			t.Fatalf("Raw reads otherwise: %+v, then %+v", tok, again)
		}
		if h, err := tsa.TokenHash(in); err == nil && h != tok.Hash {
			t.Fatalf("TokenHash %v, Hash %v", h, tok.Hash)
		}
	})
}

// FuzzVerify: whatever the bytes, Verify does not panic and fails with a
// documented error; it succeeds only for a token of the fuzz TSA over the
// stamped data.
func FuzzVerify(f *testing.F) {
	ec, seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	// A second key and certificate that the corpus never signed with.
	stranger := newOSSLTSA(f, osslOpts{key: osslECKey(f, elliptic.P384())})
	roots := ec.roots()
	roots.AddCert(stranger.root)
	opts := tsa.VerifyOptions{Roots: roots, Certificates: []*x509.Certificate{ec.cert, stranger.cert}}
	digest := digestOf(crypto.SHA256, stampedData)
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := tsa.Verify(in, digest, crypto.SHA256, opts)
		if err != nil {
			if !tokenError(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if !bytes.Equal(tok.Imprint, digest) || tok.SignerCert == nil || !tok.SignerCert.Equal(ec.cert) {
			t.Fatalf("valid token with imprint %x by %v", tok.Imprint, tok.SignerCert)
		}
	})
}
