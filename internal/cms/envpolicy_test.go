package cms

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"testing"
)

func oidOf(o asn1.ObjectIdentifier) []byte {
	b, _ := asn1.Marshal(o)
	return b
}

// TestContentPolicy: the content-encryption half of the policy, one case
// per rule.
func TestContentPolicy(t *testing.T) {
	iv16 := AppendTLV(nil, 0x04, make([]byte, 16))
	iv8 := AppendTLV(nil, 0x04, make([]byte, 8))
	gcm := func(nonce, icv int) []byte {
		p := AppendTLV(nil, 0x04, make([]byte, nonce))
		if icv > 0 {
			p = append(p, 0x02, 0x01, byte(icv))
		}
		return AppendTLV(nil, 0x30, p)
	}
	for _, tc := range []struct {
		name         string
		oid          asn1.ObjectIdentifier
		params       []byte
		auth, legacy bool
		want         error
		tagLen       int
	}{
		{"aes256-cbc", OIDAES256CBC, iv16, false, false, nil, 0},
		{"aes128-cbc short iv", OIDAES128CBC, iv8, false, false, ErrMalformed, 0},
		{"aes256-gcm", OIDAES256GCM, gcm(12, 16), true, false, nil, 16},
		{"aes128-gcm default icv 12", OIDAES128GCM, gcm(12, 0), true, false, nil, 12},
		{"aes256-gcm icv 8", OIDAES256GCM, gcm(12, 8), true, false, ErrMalformed, 0},
		{"aes256-gcm nonce 16", OIDAES256GCM, gcm(16, 16), true, false, ErrUnsupported, 0},
		{"gcm in EnvelopedData", OIDAES256GCM, gcm(12, 16), false, false, ErrUnsupported, 0},
		{"cbc in AuthEnvelopedData", OIDAES256CBC, iv16, true, false, ErrUnsupported, 0},
		{"chacha20-poly1305", OIDChaCha20Poly1305, AppendTLV(nil, 0x04, make([]byte, 12)), true, false, nil, 16},
		{"3des", OIDDESEDE3CBC, iv8, false, false, ErrUnsupported, 0},
		{"3des legacy", OIDDESEDE3CBC, iv8, false, true, nil, 0},
		{"des", OIDDESCBC, iv8, false, true, ErrUnsupported, 0},
		{"rc2", OIDRC2CBC, iv8, false, true, ErrUnsupported, 0},
		{"unknown", asn1.ObjectIdentifier{1, 2, 3}, nil, false, true, ErrUnsupported, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := contentPolicy(tc.oid, tc.params, tc.auth, tc.legacy)
			if tc.want == nil {
				if err != nil || p.tagLen != tc.tagLen {
					t.Fatalf("%v, tag %d", err, p.tagLen)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

// TestKeyPolicy: the key-management half.
func TestKeyPolicy(t *testing.T) {
	sha := func(o asn1.ObjectIdentifier) []byte { return AppendTLV(nil, 0x30, oidOf(o), null) }
	oaep := func(h, mgf asn1.ObjectIdentifier, label []byte) []byte {
		var f []byte
		if h != nil {
			f = append(f, AppendTLV(nil, 0xa0, sha(h))...)
		}
		if mgf != nil {
			f = append(f, AppendTLV(nil, 0xa1, AppendTLV(nil, 0x30, oidOf(OIDMGF1), sha(mgf)))...)
		}
		if label != nil {
			f = append(f, AppendTLV(nil, 0xa2, AppendTLV(nil, 0x30, oidOf(OIDPSpecified), AppendTLV(nil, 0x04, label)))...)
		}
		return AppendTLV(nil, 0x30, f)
	}
	for _, tc := range []struct {
		name   string
		params []byte
		legacy bool
		want   error
	}{
		{"sha256", oaep(OIDSHA256, OIDSHA256, nil), false, nil},
		{"sha384 mgf sha256", oaep(OIDSHA384, OIDSHA256, nil), false, nil},
		{"sha256 with label", oaep(OIDSHA256, OIDSHA256, []byte("l")), false, nil},
		{"defaults: sha1", nil, false, ErrUnsupported},
		{"defaults: sha1, legacy", nil, true, nil},
		{"sha256 mgf sha1", oaep(OIDSHA256, nil, nil), false, ErrUnsupported},
		{"md5", oaep(OIDMD5, OIDMD5, nil), true, ErrUnsupported},
		{"garbage", []byte{0x30, 0x03, 0x02, 0x01, 0x00}, false, ErrMalformed},
	} {
		t.Run("oaep "+tc.name, func(t *testing.T) {
			o, err := oaepPolicy(tc.params, tc.legacy)
			if tc.want == nil {
				if err != nil || (tc.name == "sha256 with label") != (o.Label != nil) {
					t.Fatalf("%v, %+v", err, o)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		oid  asn1.ObjectIdentifier
		want error
	}{
		{OIDStdDHSHA256KDF, nil}, {OIDStdDHSHA512KDF, nil}, {OIDCofactorSHA256, nil}, {OIDStdDHHKDF256, nil},
		{OIDStdDHSHA1KDF, ErrUnsupported}, {OIDCofactorSHA1, ErrUnsupported}, {OIDStdDHSHA224KDF, ErrUnsupported},
		{asn1.ObjectIdentifier{1, 2, 3}, ErrUnsupported},
	} {
		t.Run("kdf "+tc.oid.String(), func(t *testing.T) {
			if _, err := kdfPolicy(tc.oid); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		oid    asn1.ObjectIdentifier
		params []byte
		n      int
		want   error
	}{
		{OIDAES128Wrap, nil, 16, nil}, {OIDAES192Wrap, nil, 24, nil}, {OIDAES256Wrap, nil, 32, nil},
		{OIDAES256Wrap, []byte{0x04, 0x00}, 0, ErrUnsupported}, {OID3DESWrap, nil, 0, ErrUnsupported},
	} {
		t.Run("wrap "+tc.oid.String(), func(t *testing.T) {
			n, err := wrapPolicy(tc.oid, tc.params)
			if n != tc.n || !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("%d, %v; want %d, %v", n, err, tc.n, tc.want)
			}
		})
	}
	t.Run("rsa 1024", func(t *testing.T) {
		k, _ := rsa.GenerateKey(rand.Reader, 1024)
		if err := rsaPolicy(&k.PublicKey); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("%v, want ErrUnsupported", err)
		}
	})
}

// TestKeyWrapRFC3394 runs the test vectors of RFC 3394 section 4.
func TestKeyWrapRFC3394(t *testing.T) {
	h := func(s string) []byte {
		b := make([]byte, len(s)/2)
		for i := range b {
			var v byte
			for _, c := range s[2*i : 2*i+2] {
				v <<= 4
				switch {
				case c >= '0' && c <= '9':
					v |= byte(c - '0')
				default:
					v |= byte(c-'A') + 10
				}
			}
			b[i] = v
		}
		return b
	}
	for _, tc := range []struct{ name, kek, key, wrapped string }{
		{"4.1 128 KEK 128 key", "000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF", "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
		{"4.3 256 KEK 128 key", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
		{"4.6 256 KEK 256 key", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F", "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := wrapKey(h(tc.kek), h(tc.key))
			if err != nil || string(w) != string(h(tc.wrapped)) {
				t.Fatalf("wrap: %X, %v", w, err)
			}
			k, err := unwrapKey(h(tc.kek), w)
			if err != nil || string(k) != string(h(tc.key)) {
				t.Fatalf("unwrap: %X, %v", k, err)
			}
			w[len(w)-1] ^= 1
			if _, err := unwrapKey(h(tc.kek), w); !errors.Is(err, ErrDecryption) {
				t.Fatalf("altered: %v", err)
			}
		})
	}
}
