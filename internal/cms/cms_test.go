package cms_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"testing"

	"golang.org/x/crypto/cryptobyte"

	"pec/internal/cms"
)

var (
	rsaKey, _       = rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _        = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ = ed25519.GenerateKey(rand.Reader)
	rsaCert         = &x509.Certificate{PublicKey: &rsaKey.PublicKey, PublicKeyAlgorithm: x509.RSA}
	ecCert          = &x509.Certificate{PublicKey: &ecKey.PublicKey, PublicKeyAlgorithm: x509.ECDSA}
	edCert          = &x509.Certificate{PublicKey: edPub, PublicKeyAlgorithm: x509.Ed25519}
)

var message = []byte("The signed attributes.")

func sha1Digest(m []byte) []byte {
	d := sha1.Sum(m)
	return d[:]
}

func digest(h crypto.Hash) []byte {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384(message)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(message)
		return d[:]
	}
	d := sha256.Sum256(message)
	return d[:]
}

func der(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// algID is an AlgorithmIdentifier with DER parameters params (none if nil).
func algID(oid asn1.ObjectIdentifier, params []byte) []byte {
	return cms.AppendTLV(nil, 0x30, der(oid), params)
}

var null = []byte{0x05, 0x00}

// pssParams is RSASSA-PSS-params with hash and MGF1 hash h and salt.
func pssParams(h asn1.ObjectIdentifier, mgf asn1.ObjectIdentifier, salt int) []byte {
	return cms.AppendTLV(nil, 0x30,
		cms.AppendTLV(nil, 0xa0, algID(h, null)),
		cms.AppendTLV(nil, 0xa1, algID(cms.OIDMGF1, algID(mgf, null))),
		cms.AppendTLV(nil, 0xa2, der(salt)))
}

func TestVerifySignature(t *testing.T) {
	signRSA := func(h crypto.Hash) []byte {
		sig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, h, digest(h))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	signPSS := func(h crypto.Hash, salt int) []byte {
		sig, err := rsa.SignPSS(rand.Reader, rsaKey, h, digest(h), &rsa.PSSOptions{SaltLength: salt, Hash: h})
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	signEC := func(h crypto.Hash) []byte {
		sig, err := ecdsa.SignASN1(rand.Reader, ecKey, digest(h))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	tests := []struct {
		name   string
		cert   *x509.Certificate
		oid    asn1.ObjectIdentifier
		params []byte
		h      crypto.Hash
		sig    []byte
	}{
		{"rsaEncryption", rsaCert, cms.OIDRSAEncryption, null, crypto.SHA256, signRSA(crypto.SHA256)},
		{"rsaEncryption without parameters", rsaCert, cms.OIDRSAEncryption, nil, crypto.SHA384, signRSA(crypto.SHA384)},
		{"sha256WithRSAEncryption", rsaCert, cms.OIDSHA256WithRSA, null, crypto.SHA256, signRSA(crypto.SHA256)},
		{"sha384WithRSAEncryption", rsaCert, cms.OIDSHA384WithRSA, null, crypto.SHA384, signRSA(crypto.SHA384)},
		{"sha512WithRSAEncryption", rsaCert, cms.OIDSHA512WithRSA, nil, crypto.SHA512, signRSA(crypto.SHA512)},
		{"RSASSA-PSS SHA-256", rsaCert, cms.OIDRSAPSS, pssParams(cms.OIDSHA256, cms.OIDSHA256, 32), crypto.SHA256, signPSS(crypto.SHA256, 32)},
		{"RSASSA-PSS SHA-512 salt 64", rsaCert, cms.OIDRSAPSS, pssParams(cms.OIDSHA512, cms.OIDSHA512, 64), crypto.SHA512, signPSS(crypto.SHA512, 64)},
		{"RSASSA-PSS salt 0", rsaCert, cms.OIDRSAPSS, pssParams(cms.OIDSHA384, cms.OIDSHA384, 0), crypto.SHA384, signPSS(crypto.SHA384, 20)},
		{"id-ecPublicKey", ecCert, cms.OIDECPublicKey, nil, crypto.SHA384, signEC(crypto.SHA384)},
		{"ecdsa-with-SHA256", ecCert, cms.OIDECDSAWithSHA256, nil, crypto.SHA256, signEC(crypto.SHA256)},
		{"ecdsa-with-SHA384", ecCert, cms.OIDECDSAWithSHA384, nil, crypto.SHA384, signEC(crypto.SHA384)},
		{"ecdsa-with-SHA512", ecCert, cms.OIDECDSAWithSHA512, nil, crypto.SHA512, signEC(crypto.SHA512)},
	}
	tests = append(tests, struct {
		name   string
		cert   *x509.Certificate
		oid    asn1.ObjectIdentifier
		params []byte
		h      crypto.Hash
		sig    []byte
	}{"Ed25519", edCert, cms.OIDEd25519, nil, crypto.SHA512, ed25519.Sign(edKey, message)})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := cms.VerifySignature(tc.cert, tc.oid, tc.params, tc.h, message, tc.sig); err != nil {
				t.Fatalf("a good signature: %v", err)
			}
			err := cms.VerifyDigest(tc.cert, tc.oid, tc.params, tc.h, digest(tc.h), tc.sig)
			if tc.cert == edCert {
				// Pure Ed25519 signs the message, not a digest.
				if !errors.Is(err, cms.ErrContentRequired) {
					t.Fatalf("Ed25519 given a digest: %v, want ErrContentRequired", err)
				}
			} else if err != nil {
				t.Fatalf("a good signature given its digest: %v", err)
			}
			flipped := bytes.Clone(tc.sig)
			flipped[len(flipped)-1] ^= 1
			err = cms.VerifySignature(tc.cert, tc.oid, tc.params, tc.h, message, flipped)
			if !errors.Is(err, cms.ErrInvalid) {
				t.Fatalf("a flipped signature: %v, want ErrInvalid", err)
			}
			err = cms.VerifySignature(tc.cert, tc.oid, tc.params, tc.h, []byte("Another message."), tc.sig)
			if !errors.Is(err, cms.ErrInvalid) {
				t.Fatalf("another message: %v, want ErrInvalid", err)
			}
			for _, other := range []*x509.Certificate{rsaCert, ecCert, edCert} {
				if other == tc.cert {
					continue
				}
				err = cms.VerifySignature(other, tc.oid, tc.params, tc.h, message, tc.sig)
				if !errors.Is(err, cms.ErrInvalid) {
					t.Fatalf("a %v key: %v, want ErrInvalid", other.PublicKeyAlgorithm, err)
				}
			}
		})
	}
}

func TestVerifySignatureRefuses(t *testing.T) {
	// Each case is a good signature but for the one rule it breaks.
	rsaSig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, digest(crypto.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	rsaSHA1, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA1, sha1Digest(message))
	if err != nil {
		t.Fatal(err)
	}
	ecSig, err := ecdsa.SignASN1(rand.Reader, ecKey, digest(crypto.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	edSig := ed25519.Sign(edKey, message)
	tests := []struct {
		name   string
		cert   *x509.Certificate
		oid    asn1.ObjectIdentifier
		params []byte
		h      crypto.Hash
		sig    []byte
	}{
		{"sha1WithRSAEncryption", rsaCert, cms.OIDSHA1WithRSA, null, crypto.SHA1, rsaSHA1},
		{"md5WithRSAEncryption", rsaCert, cms.OIDMD5WithRSA, null, crypto.SHA256, rsaSig},
		{"rsaEncryption with a SHA-1 digestAlgorithm", rsaCert, cms.OIDRSAEncryption, null, crypto.SHA1, rsaSHA1},
		{"ecdsa-with-SHA1", ecCert, cms.OIDECDSAWithSHA1, nil, crypto.SHA256, ecSig},
		{"unknown", rsaCert, asn1.ObjectIdentifier{1, 2, 3, 4}, nil, crypto.SHA256, rsaSig},
		{"a hash other than the digestAlgorithm", rsaCert, cms.OIDSHA384WithRSA, null, crypto.SHA256, rsaSig},
		{"RSA with parameters", rsaCert, cms.OIDSHA256WithRSA, der(42), crypto.SHA256, rsaSig},
		{"RSASSA-PSS without parameters", rsaCert, cms.OIDRSAPSS, nil, crypto.SHA256, rsaSig},
		// RFC 5758 section 3.2: the parameters MUST be absent.
		{"ecdsa-with-SHA256 with NULL parameters", ecCert, cms.OIDECDSAWithSHA256, null, crypto.SHA256, ecSig},
		{"ecdsa-with-SHA256 with a curve OID", ecCert, cms.OIDECDSAWithSHA256, der(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}), crypto.SHA256, ecSig},
		{"ecdsa-with-SHA384 over a SHA-256 digest", ecCert, cms.OIDECDSAWithSHA384, nil, crypto.SHA256, ecSig},
		{"id-ecPublicKey with NULL parameters", ecCert, cms.OIDECPublicKey, null, crypto.SHA256, ecSig},
		// RFC 8410 section 3, RFC 8419 section 3.
		{"Ed25519 with NULL parameters", edCert, cms.OIDEd25519, null, crypto.SHA512, edSig},
		{"Ed25519 with a SHA-256 digestAlgorithm", edCert, cms.OIDEd25519, nil, crypto.SHA256, edSig},
		{"Ed448", edCert, cms.OIDEd448, nil, crypto.SHA512, edSig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := cms.VerifySignature(tc.cert, tc.oid, tc.params, tc.h, message, tc.sig)
			if !errors.Is(err, cms.ErrUnsupported) {
				t.Fatalf("got %v, want ErrUnsupported", err)
			}
		})
	}
}

func TestPSSOptions(t *testing.T) {
	tests := []struct {
		name   string
		params []byte
		h      crypto.Hash
		salt   int // -2: refused
	}{
		{"SHA-256", pssParams(cms.OIDSHA256, cms.OIDSHA256, 32), crypto.SHA256, 32},
		{"SHA-512, salt 64", pssParams(cms.OIDSHA512, cms.OIDSHA512, 64), crypto.SHA512, 64},
		{"salt 0 is auto", pssParams(cms.OIDSHA256, cms.OIDSHA256, 0), crypto.SHA256, rsa.PSSSaltLengthAuto},
		{"hash without NULL", cms.AppendTLV(nil, 0x30,
			cms.AppendTLV(nil, 0xa0, algID(cms.OIDSHA256, nil)),
			cms.AppendTLV(nil, 0xa1, algID(cms.OIDMGF1, algID(cms.OIDSHA256, nil)))), crypto.SHA256, 20},
		{"all defaults: SHA-1", []byte{0x30, 0}, crypto.SHA1, 20},
		{"defaults with SHA-256 digest", []byte{0x30, 0}, crypto.SHA256, -2},
		{"hash other than digestAlgorithm", pssParams(cms.OIDSHA384, cms.OIDSHA384, 32), crypto.SHA256, -2},
		{"MGF1 hash other than the hash", pssParams(cms.OIDSHA256, cms.OIDSHA512, 32), crypto.SHA256, -2},
		{"not MGF1", cms.AppendTLV(nil, 0x30,
			cms.AppendTLV(nil, 0xa0, algID(cms.OIDSHA256, null)),
			cms.AppendTLV(nil, 0xa1, algID(cms.OIDSHA256, algID(cms.OIDSHA256, null)))), crypto.SHA256, -2},
		{"negative salt", pssParams(cms.OIDSHA256, cms.OIDSHA256, -1), crypto.SHA256, -2},
		{"huge salt", pssParams(cms.OIDSHA256, cms.OIDSHA256, 1<<17), crypto.SHA256, -2},
		{"trailer 2", cms.AppendTLV(nil, 0x30,
			cms.AppendTLV(nil, 0xa0, algID(cms.OIDSHA256, null)),
			cms.AppendTLV(nil, 0xa1, algID(cms.OIDMGF1, algID(cms.OIDSHA256, null))),
			cms.AppendTLV(nil, 0xa3, der(2))), crypto.SHA256, -2},
		{"hash with parameters", cms.AppendTLV(nil, 0x30,
			cms.AppendTLV(nil, 0xa0, algID(cms.OIDSHA256, der(1)))), crypto.SHA256, -2},
		{"trailing data", append(pssParams(cms.OIDSHA256, cms.OIDSHA256, 32), 0), crypto.SHA256, -2},
		{"extra field", cms.AppendTLV(nil, 0x30, pssParams(cms.OIDSHA256, cms.OIDSHA256, 32)[2:], der(1)), crypto.SHA256, -2},
		{"absent", nil, crypto.SHA256, -2},
		{"NULL", null, crypto.SHA256, -2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := cms.PSSOptions(tc.params, tc.h)
			if tc.salt == -2 {
				if !errors.Is(err, cms.ErrUnsupported) {
					t.Fatalf("got %+v, %v; want ErrUnsupported", opts, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.Hash != tc.h || opts.SaltLength != tc.salt {
				t.Fatalf("got hash %v salt %d, want %v %d", opts.Hash, opts.SaltLength, tc.h, tc.salt)
			}
		})
	}
}

func TestHashOIDs(t *testing.T) {
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		if got := cms.HashFromOID(cms.OIDOfHash(h)); got != h {
			t.Errorf("HashFromOID(OIDOfHash(%v)) = %v", h, got)
		}
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.MD5, crypto.SHA224, 0} {
		if oid := cms.OIDOfHash(h); oid != nil {
			t.Errorf("OIDOfHash(%v) = %v, want nil: we do not sign with it", h, oid)
		}
	}
	if cms.HashFromOID(cms.OIDSHA1) != crypto.SHA1 || cms.HashFromOID(cms.OIDMD5) != crypto.MD5 {
		t.Error("SHA-1 and MD5 must be recognised, to be refused by name")
	}
	if h := cms.HashFromOID(cms.OIDSHA256WithRSA); h != 0 {
		t.Errorf("HashFromOID(sha256WithRSAEncryption) = %v, want 0", h)
	}
}

func TestDER(t *testing.T) {
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		content := make([]byte, n)
		got := cms.AppendTLV([]byte{0xee}, 0x04, content[:n/2], content[n/2:])
		want, err := asn1.Marshal(content)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != 0xee || !bytes.Equal(got[1:], want) {
			t.Errorf("n=%d: header %x, want %x", n, got[1:min(len(got), 7)], want[:min(len(want), 6)])
		}
		if l := cms.TLVLen(n); l != len(want) {
			t.Errorf("TLVLen(%d) = %d, want %d", n, l, len(want))
		}
		if l := cms.LenOfLen(n); l != len(want)-n-1 {
			t.Errorf("LenOfLen(%d) = %d, want %d", n, l, len(want)-n-1)
		}
	}
}

func TestReadAlgorithm(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		oid    asn1.ObjectIdentifier
		params []byte
		ok     bool
	}{
		{"absent parameters", algID(cms.OIDSHA256, nil), cms.OIDSHA256, nil, true},
		{"NULL", algID(cms.OIDSHA256, null), cms.OIDSHA256, null, true},
		{"PSS", algID(cms.OIDRSAPSS, pssParams(cms.OIDSHA256, cms.OIDSHA256, 32)), cms.OIDRSAPSS, pssParams(cms.OIDSHA256, cms.OIDSHA256, 32), true},
		{"trailing data", cms.AppendTLV(nil, 0x30, der(cms.OIDSHA256), null, null), nil, nil, false},
		{"no OID", cms.AppendTLV(nil, 0x30, null), nil, nil, false},
		{"not a SEQUENCE", der(cms.OIDSHA256), nil, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := cryptobyte.String(tc.in)
			oid, params, err := cms.ReadAlgorithm(&s, "the algorithm")
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (!oid.Equal(tc.oid) || !bytes.Equal(params, tc.params) || !s.Empty()) {
				t.Fatalf("got %v %x, want %v %x", oid, params, tc.oid, tc.params)
			}
		})
	}
}

func TestSignatureAlgorithmName(t *testing.T) {
	for oid, want := range map[string]string{
		cms.OIDRSAPSS.String():          "RSA-PSS",
		cms.OIDSHA256WithRSA.String():   "RSA PKCS#1 v1.5",
		cms.OIDECDSAWithSHA384.String(): "ECDSA",
		cms.OIDEd25519.String():         "Ed25519",
		"1.2.3.4":                       "1.2.3.4",
	} {
		var o asn1.ObjectIdentifier
		for _, f := range bytes.Split([]byte(oid), []byte(".")) {
			n := 0
			for _, c := range f {
				n = n*10 + int(c-'0')
			}
			o = append(o, n)
		}
		if got := cms.SignatureAlgorithmName(o); got != want {
			t.Errorf("SignatureAlgorithmName(%v) = %q, want %q", o, got, want)
		}
	}
}

func TestParseAttributes(t *testing.T) {
	oid := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	attr := func(values ...[]byte) []byte {
		return cms.AppendTLV(nil, 0x30, der(oid), cms.AppendTLV(nil, 0x31, values...))
	}
	tests := []struct {
		name   string
		set    []byte
		values []int // the number of values of each attribute; nil: refused
	}{
		{"empty", nil, []int{}},
		{"one", attr(der(oid)), []int{1}},
		{"two, one with two values", append(attr(der(oid)), attr(null, der(1))...), []int{1, 2}},
		{"no value", attr(), nil},
		{"not a SEQUENCE", null, nil},
		{"values not a SET", cms.AppendTLV(nil, 0x30, der(oid), cms.AppendTLV(nil, 0x30, null)), nil},
		{"trailing field", cms.AppendTLV(nil, 0x30, der(oid), cms.AppendTLV(nil, 0x31, null), null), nil},
		{"truncated value", cms.AppendTLV(nil, 0x30, der(oid), cms.AppendTLV(nil, 0x31, []byte{0x04, 0x05, 0})), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			attrs, err := cms.ParseAttributes(cryptobyte.String(tc.set))
			if tc.values == nil {
				if err == nil {
					t.Fatalf("accepted: %v", attrs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(attrs) != len(tc.values) {
				t.Fatalf("%d attributes, want %d", len(attrs), len(tc.values))
			}
			for i, a := range attrs {
				if !a.OID.Equal(oid) || len(a.Values) != tc.values[i] {
					t.Errorf("attribute %d: %v with %d values, want %d", i, a.OID, len(a.Values), tc.values[i])
				}
			}
		})
	}
}
