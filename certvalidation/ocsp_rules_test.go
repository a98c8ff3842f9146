package certvalidation_test

import (
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pec/certvalidation"
	"pec/internal/certtest"
)

// TestOCSPRules: the checks of an OCSP response about a certificate (RFC
// 6960: the CertID, who signed, the responder's authorisation, the
// ResponderID, the times, the status), one broken rule a case, named
// after it; beside each refusal, the valid response it was made from.
// Each response is built by certtest's OCSP builder, signed by the CA or
// its delegated responder unless the rule is the signature.
func TestOCSPRules(t *testing.T) {
	t.Parallel()
	p := newRulesPKI(t, certvalidation.Config{})
	ca := p.ca
	now := time.Now()
	serial := p.leaf.Cert.SerialNumber
	resp := func(s certtest.OCSPSpec) [][]byte {
		if s.Serial == nil {
			s.Serial = serial
		}
		return [][]byte{ca.OCSP(t, s)}
	}
	delegated := ca.Issue(t, certtest.OCSPResponderTemplate("Rules Responder"), nil)
	byOther := p.other.Issue(t, certtest.OCSPResponderTemplate("Rules Responder"), nil)
	byImpostor := p.impostor.Issue(t, certtest.OCSPResponderTemplate("Rules Responder"), nil)
	noEKU := ca.Issue(t, certtest.LeafTemplate("Responder without OCSPSigning"), nil)
	encipherOnly := certtest.OCSPResponderTemplate("Responder that may not sign")
	encipherOnly.KeyUsage = x509.KeyUsageKeyEncipherment
	cannotSign := ca.Issue(t, encipherOnly, nil)
	criticalTmpl := certtest.OCSPResponderTemplate("Responder with an unknown critical extension")
	criticalTmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 8}, Critical: true, Value: []byte{5, 0}}}
	unknownCritical := ca.Issue(t, criticalTmpl, nil)
	caKeyHash := sha1.Sum(certtest.SubjectPublicKeyBits(t, ca.Cert))
	otherKeyHash := sha1.Sum(certtest.SubjectPublicKeyBits(t, p.other.Cert))
	earlier := now.Add(-30 * time.Minute)
	const (
		valid   = ""
		revoked = certvalidation.ReasonRevoked
		unknown = certvalidation.ReasonRevocationUnknown
	)

	p.run(t, []revocationCase{
		// Valid.
		{name: "valid/good, signed by the CA", ocsp: resp(certtest.OCSPSpec{})},
		{name: "valid/good, the CA named by key hash", ocsp: resp(certtest.OCSPSpec{ResponderKeyHash: caKeyHash[:]})},
		{name: "valid/good, by a delegated responder", ocsp: resp(certtest.OCSPSpec{Responder: delegated})},
		{name: "valid/CertID hashed with SHA-256", ocsp: resp(certtest.OCSPSpec{CertIDHash: crypto.SHA256})},
		{name: "valid/no nextUpdate, within the maximum age", ocsp: resp(certtest.OCSPSpec{NoNextUpdate: true})},
		{name: "valid/revoked after the validation time, by a later response", at: earlier, ocsp: resp(certtest.OCSPSpec{Status: 1, ThisUpdate: now.Add(-5 * time.Minute), RevokedAt: now.Add(-10 * time.Minute)})},

		// Status.
		{name: "status/revoked", ocsp: resp(certtest.OCSPSpec{Status: 1, Reason: certtest.ReasonKeyCompromise}), want: revoked, detail: "keyCompromise"},
		{name: "status/revoked before the validation time, by a later response", at: earlier, ocsp: resp(certtest.OCSPSpec{Status: 1, ThisUpdate: now.Add(-5 * time.Minute), RevokedAt: now.Add(-40 * time.Minute)}), want: revoked},
		{name: "status/unknown", ocsp: resp(certtest.OCSPSpec{Status: 2}), want: unknown, detail: "does not know the certificate"},
		{name: "response/not successful (tryLater)", ocsp: resp(certtest.OCSPSpec{ResponseStatus: 3}), want: unknown},
		{name: "response/about another serial number", ocsp: resp(certtest.OCSPSpec{Serial: big.NewInt(4242)}), want: unknown},

		// The CertID (RFC 6960 section 4.1.1).
		// golang.org/x/crypto/ocsp refuses the response before
		// certvalidation's own check of the CertID hash can.
		{name: "CertID/an unsupported hash", ocsp: resp(certtest.OCSPSpec{CertIDHashOID: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}}), want: unknown},
		{name: "CertID/the name hash of another issuer", ocsp: resp(certtest.OCSPSpec{NameHash: sha1Of(p.other.Cert.RawSubject)}), want: unknown, detail: "about a certificate of another issuer"},
		{name: "CertID/the key hash of another issuer", ocsp: resp(certtest.OCSPSpec{KeyHash: otherKeyHash[:]}), want: unknown, detail: "about a certificate of another issuer"},

		// Who signed (section 4.2.2.2).
		{name: "signature/another key, no certificate", ocsp: resp(certtest.OCSPSpec{Signer: p.impostor.Key}), want: unknown, detail: "does not verify with the issuer's key"},
		{name: "signature/ECDSA with SHA-1", ocsp: resp(certtest.OCSPSpec{SignatureHash: crypto.SHA1}), want: unknown, detail: "refused as weak"},
		{name: "responder/issued by another CA", ocsp: resp(certtest.OCSPSpec{Responder: byOther}), want: unknown, detail: "was not issued by the certificate's issuer"},
		{name: "responder/under the CA's name, by another key", ocsp: resp(certtest.OCSPSpec{Responder: byImpostor}), want: unknown, detail: "was not issued by the certificate's issuer"},
		{name: "responder/no id-kp-OCSPSigning", ocsp: resp(certtest.OCSPSpec{Responder: noEKU}), want: unknown, detail: "no id-kp-OCSPSigning"},
		{name: "responder/key usage keyEncipherment only", ocsp: resp(certtest.OCSPSpec{Responder: cannotSign}), want: unknown, detail: "key usage does not allow signing"},
		{name: "responder/an unknown critical extension", ocsp: resp(certtest.OCSPSpec{Responder: unknownCritical}), want: unknown, detail: "unsupported critical extension"},
		{name: "responder/not valid when the response was produced", ocsp: resp(certtest.OCSPSpec{Responder: delegated, ProducedAt: now.Add(-3 * time.Hour)}), want: unknown, detail: "not valid when the response was produced"},
		{name: "responder/response not signed by its certificate", ocsp: resp(certtest.OCSPSpec{Responder: delegated, Signer: p.impostor.Key}), want: unknown},
		{name: "ResponderID/another name", ocsp: resp(certtest.OCSPSpec{ResponderName: p.other.Cert.RawSubject}), want: unknown, detail: "responder name does not match"},
		{name: "ResponderID/another key hash", ocsp: resp(certtest.OCSPSpec{ResponderKeyHash: otherKeyHash[:]}), want: unknown, detail: "responder key hash does not match"},
		{name: "ResponderID/the CA, for a delegated responder", ocsp: resp(certtest.OCSPSpec{Responder: delegated, ResponderName: ca.Cert.RawSubject}), want: unknown, detail: "responder name does not match"},

		// Time.
		{name: "time/past nextUpdate", ocsp: resp(certtest.OCSPSpec{ThisUpdate: now.Add(-3 * time.Hour), NextUpdate: now.Add(-time.Hour)}), want: unknown, detail: "OCSP response not current"},
		{name: "time/no nextUpdate, older than the maximum age", ocsp: resp(certtest.OCSPSpec{NoNextUpdate: true, ThisUpdate: now.Add(-25 * time.Hour)}), want: unknown, detail: "without nextUpdate, older than"},
		{name: "time/issued after the certificate expired", ocsp: resp(certtest.OCSPSpec{ThisUpdate: p.leafValidUntil.Add(time.Hour), NextUpdate: p.leafValidUntil.Add(48 * time.Hour)}), want: unknown, detail: "after the certificate expired"},
	})
}

func sha1Of(b []byte) []byte {
	s := sha1.Sum(b)
	return s[:]
}

// TestOCSPNonceRules: a response fetched from the responder the
// certificate names must echo the request's nonce (RFC 8954) when the
// validator sends one.
func TestOCSPNonceRules(t *testing.T) {
	t.Parallel()
	root := certtest.Root(t, certtest.CATemplate("Nonce Root"), nil)
	ca := root.Issue(t, certtest.CATemplate("Nonce CA"), nil)
	rootCRL := root.CRLOf(t, certtest.CRLSpec{Number: big.NewInt(1)})
	for _, tc := range []struct {
		name  string
		nonce func(req []byte) []pkix.Extension // the response's extensions
		want  certvalidation.Reason
	}{
		{"valid/echoed", func(n []byte) []pkix.Extension { return []pkix.Extension{{Id: certtest.OIDOCSPNonce, Value: n}} }, ""},
		{"nonce/not echoed", func([]byte) []pkix.Extension { return nil }, certvalidation.ReasonRevocationUnknown},
		{"nonce/another", func([]byte) []pkix.Extension {
			return []pkix.Extension{{Id: certtest.OIDOCSPNonce, Value: []byte{4, 2, 1, 2}}}
		}, certvalidation.ReasonRevocationUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var leaf *certtest.Issued
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err != nil {
					t.Error(err)
					return
				}
				var req struct {
					TBS struct {
						Version    int           `asn1:"optional,explicit,tag:0,default:0"`
						Requestor  asn1.RawValue `asn1:"optional,explicit,tag:1"`
						List       []asn1.RawValue
						Extensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
					}
				}
				if _, err := asn1.Unmarshal(body, &req); err != nil {
					t.Errorf("the validator's OCSP request: %v", err)
					return
				}
				var nonce []byte
				for _, e := range req.TBS.Extensions {
					if e.Id.Equal(certtest.OIDOCSPNonce) {
						nonce = e.Value
					}
				}
				if nonce == nil {
					t.Error("the request has no nonce")
				}
				w.Header().Set("Content-Type", "application/ocsp-response")
				w.Write(ca.OCSP(t, certtest.OCSPSpec{Serial: leaf.Cert.SerialNumber, Extensions: tc.nonce(nonce)}))
			}))
			defer srv.Close()
			tmpl := certtest.LeafTemplate("nonce leaf")
			tmpl.OCSPServer = []string{srv.URL}
			leaf = ca.Issue(t, tmpl, nil)
			v, err := certvalidation.New(certvalidation.Config{
				Revocation: certvalidation.RevocationConfig{OCSPNonce: true},
				Fetch:      certvalidation.FetchConfig{Timeout: 3 * time.Second},
			}, certvalidation.Material{Roots: map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeClientAuth: {root.Cert}}}, certvalidation.ValidatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := v.Validate(context.Background(), leaf.Cert, certvalidation.Options{
				Purpose:       certvalidation.PurposeClientAuth,
				Intermediates: []*x509.Certificate{ca.Cert},
				CRLs:          [][]byte{rootCRL},
				Revocation:    certvalidation.RevocationRequire,
			})
			wantReason(t, rep, err, tc.want)
			if tc.want != "" && !strings.Contains(rep.Detail, "does not echo the request's nonce") {
				t.Errorf("detail %q does not name the nonce", rep.Detail)
			}
		})
	}
}
