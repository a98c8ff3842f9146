package middleoffice

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	"pec/evidence"
)

// Principal is who a verified client certificate stands for: a partner of
// the directory, or nobody the directory knows.
//
// A certificate that chains to the client roots but that no partner claims
// is a principal without a partner and without roles: it may ask who it is
// (/v1/whoami), read the proofs of records naming its own certificate, and
// use what a rule grants its certificate by name (a signature profile's
// allowed_clients entry with its fingerprint, subject or common name).
// Everything granted to partners or to roles (exchanges, auditors' reads,
// partner administration) is refused to it.
type Principal struct {
	// Partner is the directory's entry (a copy, never modified); nil: a
	// certificate no partner claims.
	Partner     *Partner
	Certificate *x509.Certificate
	Fingerprint [32]byte // SHA-256 of the certificate
	Subject     string   // RFC 4514, as crypto/x509 prints it
	Issuer      string
}

// ID is the partner's id, or "" for a certificate no partner claims.
func (p *Principal) ID() string {
	if p.Partner == nil {
		return ""
	}
	return p.Partner.ID
}

// Has reports whether the principal is an enabled partner with role r.
func (p *Principal) Has(r Role) bool {
	return p.Partner != nil && !p.Partner.Disabled && p.Partner.Has(r)
}

// Disabled reports whether the principal is a disabled partner: its
// certificate is refused everywhere.
func (p *Principal) Disabled() bool { return p.Partner != nil && p.Partner.Disabled }

// Actor names the principal in role in evidence.
func (p *Principal) Actor(role string) evidence.Actor {
	return evidence.Actor{Role: role, Fingerprint: p.Fingerprint, Subject: p.Subject}
}

// Fingerprints are the SHA-256 fingerprints that name the principal in
// evidence: its certificate's, and those its partner's rules list (its
// earlier or other certificates).
func (p *Principal) Fingerprints() [][32]byte {
	out := [][32]byte{p.Fingerprint}
	if p.Partner == nil {
		return out
	}
	for _, r := range p.Partner.Certificates {
		if fp, err := parseFingerprint(r.Fingerprint); err == nil && r.Fingerprint != "" && fp != p.Fingerprint {
			out = append(out, fp)
		}
	}
	return out
}

// FingerprintHex is the certificate's fingerprint in hexadecimal.
func (p *Principal) FingerprintHex() string { return hex.EncodeToString(p.Fingerprint[:]) }

type cachedPrincipal struct {
	st *state
	p  *Principal
}

// maxCachedPrincipals bounds the cache; when full, it starts over.
const maxCachedPrincipals = 4096

// Resolve maps a client certificate, already verified (chain, validity,
// revocation) by the TLS layer, to its principal: the partner claiming its
// SHA-256 fingerprint, else the one claiming its subject and issuer, else
// the one claiming its subject alone; else a principal with no partner.
// A disabled partner resolves to itself, Disabled.
//
// The result is cached by certificate: the requests of one TLS connection
// share one parsed certificate, so a connection resolves once; a change of
// the directory makes every cached principal stale, so the next request
// sees it. cert must not be modified afterwards.
func (d *Directory) Resolve(cert *x509.Certificate) *Principal {
	st := d.state.Load()
	if v, ok := d.principals.Load(cert); ok {
		if c := v.(*cachedPrincipal); c.st == st {
			return c.p
		}
	}
	p := &Principal{
		Certificate: cert,
		Fingerprint: sha256.Sum256(cert.Raw),
		Subject:     cert.Subject.String(),
		Issuer:      cert.Issuer.String(),
	}
	id, ok := st.byFingerprint[p.Fingerprint]
	if !ok {
		id, ok = st.bySubjectIssuer[[2]string{p.Subject, p.Issuer}]
	}
	if !ok {
		id, ok = st.bySubject[p.Subject]
	}
	if ok {
		partner := st.partners[id].clone()
		p.Partner = &partner
	}
	if d.cached.Add(1) > maxCachedPrincipals {
		d.principals.Clear()
		d.cached.Store(1)
	}
	d.principals.Store(cert, &cachedPrincipal{st: st, p: p})
	return p
}
