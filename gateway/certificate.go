package gateway

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// ServerCertificate is the certificate and key a TLS listener presents,
// replaced while it serves ([ServerCertificate.Set]) without a restart:
// a handshake after Set gets the new certificate; connections already
// open keep theirs (TLS authenticates the server once, at the
// handshake). It is safe for concurrent use.
type ServerCertificate struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewServerCertificate presents chain (the certificate, then its chain)
// with key, an HSM key: see Set.
func NewServerCertificate(chain []*x509.Certificate, key crypto.Signer) (*ServerCertificate, error) {
	c := &ServerCertificate{}
	if _, err := c.Set(chain, key); err != nil {
		return nil, err
	}
	return c, nil
}

// Set makes chain and key the certificate of every later handshake. The
// key must be chain[0]'s, the certificate valid now and, if it has
// extended key usages, good for serverAuth. It returns the certificate
// replaced (nil the first time); on error nothing changes.
func (c *ServerCertificate) Set(chain []*x509.Certificate, key crypto.Signer) (old *x509.Certificate, err error) {
	if len(chain) == 0 || key == nil {
		return nil, errors.New("gateway: TLS needs a certificate and its key")
	}
	leaf := chain[0]
	if k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("gateway: the TLS certificate %q is not that of the key", leaf.Subject)
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("gateway: the TLS certificate %q is valid from %s to %s, not now", leaf.Subject,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, fmt.Errorf("gateway: the TLS certificate %q is not for serverAuth (extended key usage)", leaf.Subject)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range chain {
		cert.Certificate = append(cert.Certificate, x.Raw)
	}
	if prev := c.cur.Swap(cert); prev != nil {
		return prev.Leaf, nil
	}
	return nil, nil
}

// Certificate is the certificate presented now.
func (c *ServerCertificate) Certificate() *x509.Certificate { return c.cur.Load().Leaf }

// GetCertificate is the tls.Config hook: the certificate presented now.
func (c *ServerCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// GetClientCertificate is the tls.Config hook of a client that
// authenticates as the node (the webhook pushes to partners): the
// certificate presented now, so that a rotated TLS key is the one the next
// handshake proves.
func (c *ServerCertificate) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Serve makes cfg present c's certificate at each handshake, in place of
// cfg.Certificates. Call it before cfg serves: a tls.Config must not be
// changed once in use.
func (c *ServerCertificate) Serve(cfg *tls.Config) {
	cfg.Certificates = nil
	cfg.GetCertificate = c.GetCertificate
}
