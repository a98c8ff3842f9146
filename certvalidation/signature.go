package certvalidation

import (
	"crypto"
	"crypto/dsa" //nolint:staticcheck // DSA only to verify old certificates (PKITS 4.1.4-4.1.6)
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	_ "crypto/sha1" // SHA-1 signatures are refused by policy, but must be checkable when allowed
	_ "crypto/sha256"
	_ "crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// minKeyBits is the smallest RSA or DSA modulus accepted unless weak
// algorithms are allowed (ANSSI RGS B1, ETSI TS 119 312: 2048 bits).
const minKeyBits = 2048

// weakSignature reports whether a signature algorithm is refused by the
// weak-algorithm policy: MD2, MD5 and SHA-1 digests.
func weakSignature(alg x509.SignatureAlgorithm) bool {
	switch alg {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

// weakKey describes why a public key is refused by the weak-algorithm
// policy, or returns "".
func weakKey(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minKeyBits {
			return fmt.Sprintf("RSA key of %d bits (minimum %d)", n, minKeyBits)
		}
	case *dsa.PublicKey:
		if k.P != nil && k.P.BitLen() < minKeyBits {
			return fmt.Sprintf("DSA key of %d bits (minimum %d)", k.P.BitLen(), minKeyBits)
		}
	}
	return ""
}

// keyDescription names a public key for reports: "ECDSA P-256", "RSA 2048".
func keyDescription(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *dsa.PublicKey:
		if k.P == nil {
			return "DSA (inherited parameters)"
		}
		return fmt.Sprintf("DSA %d", k.P.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// checkSignature verifies signature over signed with pub, for any
// algorithm crypto/x509 verifies plus DSA (which crypto/x509 no longer
// does). The weak-algorithm policy is the caller's: SHA-1 is verified here.
func checkSignature(alg x509.SignatureAlgorithm, signed, signature []byte, pub any) error {
	switch alg {
	case x509.DSAWithSHA1, x509.DSAWithSHA256:
		k, ok := pub.(*dsa.PublicKey)
		if !ok {
			return errors.New("a DSA signature from a non-DSA key")
		}
		return checkDSA(alg, signed, signature, k)
	}
	if _, ok := pub.(*dsa.PublicKey); ok {
		return fmt.Errorf("signature algorithm %v does not match a DSA key", alg)
	}
	// A certificate value holding only the key: CheckSignature uses nothing
	// else, and unlike CheckSignatureFrom it does not refuse SHA-1 itself.
	return (&x509.Certificate{PublicKey: pub}).CheckSignature(alg, signed, signature)
}

func checkDSA(alg x509.SignatureAlgorithm, signed, signature []byte, k *dsa.PublicKey) error {
	if k.P == nil || k.Q == nil || k.G == nil {
		return errors.New("DSA key without domain parameters")
	}
	// Parameters come from certificates: bound the modular arithmetic an
	// attacker can ask for (FIPS 186-4 stops at 3072/256).
	if k.P.BitLen() > 4096 || k.Q.BitLen() > 256 || k.P.Sign() <= 0 || k.Q.Sign() <= 0 || k.G.Sign() <= 0 {
		return errors.New("DSA parameters out of bounds")
	}
	h := crypto.SHA1
	if alg == x509.DSAWithSHA256 {
		h = crypto.SHA256
	}
	hh := h.New()
	hh.Write(signed)
	digest := hh.Sum(nil)
	// FIPS 186-4 section 4.6: the digest is truncated to the size of q.
	if n := (k.Q.BitLen() + 7) / 8; len(digest) > n {
		digest = digest[:n]
	}
	in := cryptobyte.String(signature)
	var seq cryptobyte.String
	r, s := new(big.Int), new(big.Int)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(r) || !seq.ReadASN1Integer(s) || !seq.Empty() {
		return errors.New("malformed DSA signature")
	}
	if r.Sign() <= 0 || s.Sign() <= 0 {
		return errors.New("invalid DSA signature")
	}
	if !dsa.Verify(k, digest, r, s) {
		return errors.New("DSA signature verification failed")
	}
	return nil
}

// inheritParams returns pub with DSA domain parameters taken from the
// issuer's working key when pub has none (RFC 5280 section 6.1.4 (f)).
func inheritParams(pub, working any) any {
	k, ok := pub.(*dsa.PublicKey)
	if !ok || k.P != nil {
		return pub
	}
	w, ok := working.(*dsa.PublicKey)
	if !ok || w.P == nil {
		return pub
	}
	return &dsa.PublicKey{Parameters: w.Parameters, Y: k.Y}
}
