package gateway

import (
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"pec/middleoffice"
)

// Principals: every /v1 request's client certificate, once the TLS layer
// and certvalidation have verified it, is resolved to a directory
// principal (middleoffice.Directory.Resolve: once per connection, until the
// directory changes). A disabled partner is refused here, at its next
// request on any connection; every other decision asks the policy.

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

// refuseDisabled answers 403 when cert belongs to a disabled partner.
func refuseDisabled(w http.ResponseWriter, pol *middleoffice.Policy, cert *x509.Certificate) bool {
	if pr := pol.Directory().Resolve(cert); pr.Disabled() {
		writeProblem(w, http.StatusForbidden, "the partner "+pr.ID()+" is disabled")
		return true
	}
	return false
}

// writeForbidden answers a refusal of the policy with 403 and its reason
// (ours, about the caller only), anything else with 500.
func writeForbidden(w http.ResponseWriter, err error) {
	if fe, ok := errors.AsType[*middleoffice.ForbiddenError](err); ok {
		writeProblem(w, http.StatusForbidden, fe.Reason)
		return
	}
	writeProblem(w, http.StatusInternalServerError, "internal failure")
}

// Identity is how the platform names an authenticated client: its
// certificate, and the directory's partner it stands for.
type Identity struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	SerialNumber      string    `json:"serial_number"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotAfter          time.Time `json:"not_after"`
	// Partner is the directory's id of the client; empty: no partner
	// claims the certificate (it has no role).
	Partner string              `json:"partner,omitempty"`
	Name    string              `json:"name,omitempty"`
	Roles   []middleoffice.Role `json:"roles"`
}

func whoami(pol *middleoffice.Policy) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pr := principal(pol, r)
		c := pr.Certificate
		id := Identity{
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
