package tsa

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"pec/internal/devpki"
)

// TestEncoderMatchesLibrary: the fast path writes, byte for byte, what
// digitorus/timestamp writes for the same token. RSA PKCS#1 v1.5 signatures
// are deterministic, so whole responses compare; the library picks its own
// serial number and signing time, which are read back from its output and
// given to ours.
func TestEncoderMatchesLibrary(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, tsaCert := testTSACert(t, key)
	for _, tc := range []struct {
		name     string
		nonce    *big.Int
		certReq  bool
		accuracy time.Duration
		ordering bool
		policy   asn1.ObjectIdentifier
	}{
		{"plain", nil, false, time.Second, false, asn1.ObjectIdentifier{2, 999, 1}},
		{"nonce and certificates", big.NewInt(0x1234567890), true, time.Second, false, asn1.ObjectIdentifier{2, 999, 1}},
		{"high-bit nonce", new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 8)), true, 1500 * time.Millisecond, false, asn1.ObjectIdentifier{1, 2, 3, 4, 5, 6}},
		{"sub-second accuracy, ordering", big.NewInt(1), false, 250*time.Millisecond + 7*time.Microsecond, true, asn1.ObjectIdentifier{2, 999, 3161, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := sha256.Sum256([]byte(tc.name))
			genTime := time.Now().UTC().Truncate(time.Second)
			lib := timestamp.Timestamp{
				HashAlgorithm:     crypto.SHA256,
				HashedMessage:     sum[:],
				Time:              genTime,
				Accuracy:          tc.accuracy,
				Policy:            tc.policy,
				Ordering:          tc.ordering,
				Nonce:             tc.nonce,
				AddTSACertificate: tc.certReq,
			}
			var extra []*x509.Certificate
			if tc.certReq {
				// An intermediate stands in for the chain: the root itself,
				// which New would leave out, is fine for the encoder.
				extra = []*x509.Certificate{root}
				lib.Certificates = extra
			}
			want, err := lib.CreateResponseWithOpts(tsaCert, key, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := timestamp.ParseResponse(want)
			if err != nil {
				t.Fatal(err)
			}
			signingTime := librarySigningTime(t, parsed.RawToken)

			enc, err := newEncoder(key, tsaCert, extra, crypto.SHA256, tc.accuracy, tc.ordering)
			if err != nil {
				t.Fatal(err)
			}
			req := timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: sum[:], Nonce: tc.nonce, Certificates: tc.certReq}
			reqDER, err := req.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			r, err := parseRequest(reqDER)
			if err != nil {
				t.Fatal(err)
			}
			got, tokenAt, err := enc.encode(&tokenFields{
				policyDER:   mustMarshal(tc.policy),
				imprintDER:  r.imprintDER,
				serial:      serialContents(parsed.SerialNumber),
				genTime:     genTime,
				signingTime: signingTime,
				nonce:       r.nonce,
				certReq:     r.certReq,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("fast path differs from digitorus/timestamp:\n got %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
			}
			if !bytes.Equal(got[tokenAt:], parsed.RawToken) {
				t.Errorf("token offset %d does not start the TimeStampToken", tokenAt)
			}
		})
	}
}

// librarySigningTime digs the signing-time attribute out of a token.
func librarySigningTime(t *testing.T, token []byte) time.Time {
	t.Helper()
	oid := mustMarshal(oidAttrSigningTime)
	i := bytes.Index(token, oid)
	if i < 0 {
		t.Fatal("no signing-time attribute")
	}
	var set asn1.RawValue
	if _, err := asn1.Unmarshal(token[i+len(oid):], &set); err != nil {
		t.Fatal(err)
	}
	var st time.Time
	if _, err := asn1.Unmarshal(set.Bytes, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func testTSACert(t testing.TB, key crypto.Signer) (root, tsaCert *x509.Certificate) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca, err := devpki.NewRootCA(rootKey, "encoder test root", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueTSA(key.Public(), "encoder test TSA", now)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Cert, cert
}

func TestGeneralizedTime(t *testing.T) {
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 11, 24, 9, 5, 7, 0, time.UTC), "20261124090507Z"},
		{time.Date(2026, 11, 24, 9, 5, 7, 500e6, time.UTC), "20261124090507.5Z"},
		{time.Date(2026, 11, 24, 9, 5, 7, 120e6, time.UTC), "20261124090507.12Z"},
		{time.Date(2026, 11, 24, 9, 5, 7, 123456789, time.UTC), "20261124090507.123Z"},
		{time.Date(2026, 11, 24, 10, 5, 7, 0, time.FixedZone("CET", 3600)), "20261124090507Z"},
	} {
		got := appendGeneralizedTime(nil, tc.in)
		if string(got[2:]) != tc.want || int(got[1]) != len(tc.want) {
			t.Errorf("%v: %q, want %q", tc.in, got[2:], tc.want)
		}
		var back time.Time
		if _, err := asn1.UnmarshalWithParams(got, &back, "generalized"); err != nil || !back.Equal(tc.in.Truncate(time.Millisecond)) {
			t.Errorf("%q decodes to %v (%v)", got[2:], back, err)
		}
	}
}

func TestRejectionEncoding(t *testing.T) {
	for _, fail := range []FailInfo{FailBadAlg, FailBadRequest, FailBadDataFormat, FailTimeNotAvailable, FailUnacceptedPolicy, FailUnacceptedExtension, FailAddInfoNotAvailable, FailSystemFailure} {
		want, err := timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.FailureInfo(fail))
		if err != nil {
			t.Fatal(err)
		}
		got := Reject(fail, "")
		if fail%8 == 7 {
			// The library pads these with a zero byte, which DER forbids
			// (X.690 section 11.2.2): compare the bits only.
			var g, w struct {
				Status struct {
					Status int
					Fail   asn1.BitString
				}
			}
			if _, err := asn1.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if _, err := asn1.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if g.Status.Fail.At(int(fail)) != 1 || w.Status.Fail.At(int(fail)) != 1 || g.Status.Fail.BitLength != int(fail)+1 {
				t.Errorf("%v: %x, library %x", fail, got, want)
			}
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: %x, library %x", fail, got, want)
		}
	}
}
