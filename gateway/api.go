package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"pec/certvalidation"
)

// requireClientCert refuses a request that did not come over TLS with a
// valid client certificate. The TLS layer already demands one; this is the
// second lock, should a listener ever be misconfigured. With a validator,
// the certificate is validated again at each request (a cache hit, most of
// the time): a connection kept open does not outlive a revocation.
func requireClientCert(next http.Handler, v *certvalidation.Validator, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || (v == nil && len(r.TLS.VerifiedChains) == 0) {
			writeProblem(w, http.StatusUnauthorized, "a client certificate is required (mutual TLS)")
			return
		}
		if v != nil {
			if _, err := validateClient(r.Context(), v, r.TLS.PeerCertificates); err != nil {
				log.InfoContext(r.Context(), "client certificate refused", "subject", r.TLS.PeerCertificates[0].Subject.String(), "err", err)
				detail := "the client certificate is not valid"
				if e, ok := errors.AsType[*certvalidation.Error](err); ok {
					detail += " (" + string(e.Reason) + ")"
				}
				writeProblem(w, http.StatusUnauthorized, detail)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Identity is how the platform names an authenticated client.
type Identity struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	SerialNumber      string    `json:"serial_number"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotAfter          time.Time `json:"not_after"`
}

func whoami(w http.ResponseWriter, r *http.Request) {
	c := r.TLS.PeerCertificates[0]
	sum := sha256.Sum256(c.Raw)
	writeJSON(w, http.StatusOK, Identity{
		Subject:           c.Subject.String(),
		Issuer:            c.Issuer.String(),
		SerialNumber:      c.SerialNumber.Text(16),
		FingerprintSHA256: hex.EncodeToString(sum[:]),
		NotAfter:          c.NotAfter.UTC(),
	})
}
