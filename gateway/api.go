package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"
)

// requireClientCert refuses a request that did not come over TLS with a
// verified client certificate. ServerTLSConfig already demands one; this is
// the second lock, should a listener ever be misconfigured.
func requireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
			writeProblem(w, http.StatusUnauthorized, "a client certificate is required (mutual TLS)")
			return
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
