package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"

	"pec/certvalidation"
	"pec/gateway"
	"pec/internal/certtest"
)

// TestMutualTLSPathTable: the gateway's mutual TLS gives the verdict of
// certvalidation (and so of pec validate and POST /v1/validations, which
// run the same table) for every class of the path table: each refused case
// is refused at the handshake with the same reason, each valid one
// accepted.
func TestMutualTLSPathTable(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, tc := range certtest.Table(t) {
		if tc.Purpose != "" && tc.Purpose != "clientAuth" || !tc.At.IsZero() || len(tc.Intermediates) > 0 || tc.AllowWeak || tc.Host != "" || tc.Email != "" {
			continue // not something a TLS client presents as it is
		}
		checked++
		t.Run(tc.Name, func(t *testing.T) {
			v := newValidator(t, certvalidation.Config{Purposes: map[string]certvalidation.PurposeConfig{"clientAuth": {Revocation: "none"}}},
				map[certvalidation.Purpose][]*x509.Certificate{certvalidation.PurposeClientAuth: tc.Roots}, nil)
			_, want := v.Validate(t.Context(), tc.Leaf, certvalidation.Options{Purpose: certvalidation.PurposeClientAuth, Intermediates: tc.Chain})
			cfg := &tls.Config{}
			gateway.ValidateClientCertificates(cfg, v, nil)
			got := cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: append([]*x509.Certificate{tc.Leaf}, tc.Chain...)})
			if (got == nil) != (want == nil) {
				t.Fatalf("handshake: %v; certvalidation: %v", got, want)
			}
			if want == nil {
				return
			}
			we, _ := errors.AsType[*certvalidation.Error](want)
			ge, ok := errors.AsType[*certvalidation.Error](got)
			if !ok || we == nil || ge.Reason != we.Reason {
				t.Fatalf("handshake refused with %v, certvalidation with %v", got, want)
			}
			if tc.Want != "" && tc.Purpose == "clientAuth" && string(ge.Reason) != tc.Want {
				t.Errorf("reason %s, the table wants %s", ge.Reason, tc.Want)
			}
		})
	}
	if checked < 20 {
		t.Fatalf("only %d cases of the path table apply to mutual TLS", checked)
	}
}
