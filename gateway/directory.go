package gateway

import (
	"net/http"

	"pec/gateway/api"
	"pec/middleoffice"
)

// Principals: every /v1 request's client certificate, once the TLS layer
// and certvalidation have verified it, is resolved to a directory
// principal (middleoffice.Directory.Resolve: once per connection, until the
// directory changes). A disabled partner is refused in requireClientCert,
// at its next request on any connection; every other decision is the
// services' (they ask the policy).

// policy is the node's policy, or that of an empty directory (nobody has a
// role; the profiles' allowed_clients decide in package signing).
func (o Options) policy() *middleoffice.Policy {
	if o.Policy != nil {
		return o.Policy
	}
	return middleoffice.EmptyPolicy()
}

// principal is the principal of a request that requireClientCert let in.
func principal(pol *middleoffice.Policy, r *http.Request) *middleoffice.Principal {
	return pol.Directory().Resolve(r.TLS.PeerCertificates[0])
}

func whoami(pol *middleoffice.Policy) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pr := principal(pol, r)
		c := pr.Certificate
		id := api.Identity{
			Subject:           pr.Subject,
			Issuer:            pr.Issuer,
			SerialNumber:      c.SerialNumber.Text(16),
			FingerprintSHA256: pr.FingerprintHex(),
			NotAfter:          c.NotAfter.UTC(),
			Roles:             []middleoffice.Role{},
		}
		if pr.Partner != nil {
			id.Partner, id.Name, id.Roles = pr.Partner.ID, pr.Partner.Name, pr.Partner.Roles
		}
		writeJSON(w, http.StatusOK, id)
	}
}
