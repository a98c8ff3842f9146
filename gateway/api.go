package gateway

import (
	"errors"
	"net/http"

	"pec/certvalidation"
	"pec/gateway/api"
	"pec/middleoffice"
)

// requireClientCert refuses a request that did not come over TLS with a
// valid client certificate. The TLS layer already demands one; this is the
// second lock, should a listener ever be misconfigured. With a validator,
// the certificate is validated again at each request (a cache hit, most of
// the time): a connection kept open does not outlive a revocation.
//
// The certificate's principal is resolved then (once per connection, see
// middleoffice.Directory.Resolve): a disabled partner is refused with 403.
func requireClientCert(next http.Handler, v *certvalidation.Validator, pol *middleoffice.Policy, e *edge) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || (v == nil && len(r.TLS.VerifiedChains) == 0) {
			writeProblem(w, api.NewProblem(api.TypeClientCertificateRequired, "a client certificate is required (mutual TLS)"))
			return
		}
		if v != nil {
			if _, err := validateClient(r.Context(), v, r.TLS.PeerCertificates); err != nil {
				e.log.InfoContext(r.Context(), "client certificate refused", "subject", r.TLS.PeerCertificates[0].Subject.String(), "err", err)
				detail := "the client certificate is not valid"
				if ce, ok := errors.AsType[*certvalidation.Error](err); ok {
					detail += " (" + string(ce.Reason) + ")"
				}
				writeProblem(w, api.NewProblem(api.TypeClientCertificateInvalid, detail))
				return
			}
		}
		if pr := pol.Directory().Resolve(r.TLS.PeerCertificates[0]); pr.Disabled() {
			writeProblem(w, api.NewProblem(api.TypePartnerDisabled, "the partner "+pr.ID()+" is disabled"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
