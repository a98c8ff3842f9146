package proof

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Key rotation. The log's checkpoint key may be replaced while the node
// runs ([Log.Rotate]): checkpoints signed from then on carry the new
// key's ID in their signature line (c2sp.org/signed-note: the first four
// bytes of SHA-256 of the key), under the same name, the log's origin.
// Nothing else changes: the tree goes on, and every checkpoint signed
// before still verifies with the key that signed it. A bundle carries the
// certificate of the key that signed its tree head ([LogCerts]), so that
// the bundles of before and after a rotation verify alike, offline.

// LogCerts are the certificates of an evidence log's checkpoint keys: the
// current key's, then those of the keys it replaced, each followed by its
// chain. [Export] picks the one whose key signed the bundle's tree head.
// It is safe for concurrent use; the zero value holds none.
type LogCerts struct {
	mu     sync.RWMutex
	chains [][]*x509.Certificate
}

// NewLogCerts holds chains, the current key's first. Each must be an
// evidence log certificate (OIDEvidenceLog) of an ECDSA P-256 key,
// followed by its chain.
func NewLogCerts(chains ...[]*x509.Certificate) (*LogCerts, error) {
	c := &LogCerts{}
	for i := len(chains) - 1; i >= 0; i-- {
		if err := c.Rotate(chains[i]); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Rotate makes chain the current key's (see NewLogCerts); the chains held
// before stay, for the tree heads their keys signed. A chain of a key
// already held moves to the front, with its new certificate.
func (c *LogCerts) Rotate(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("proof: log certificates: an empty chain")
	}
	if !IsEvidenceLogCertificate(chain[0]) {
		return fmt.Errorf("proof: log certificates: %q lacks the extended key usage %s of an evidence log", chain[0].Subject, OIDEvidenceLog)
	}
	if _, err := keyInfo("log", chain[0].PublicKey); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rest := slices.DeleteFunc(slices.Clone(c.chains), func(h []*x509.Certificate) bool { return samePublicKey(h[0].PublicKey, chain[0].PublicKey) })
	c.chains = append([][]*x509.Certificate{slices.Clone(chain)}, rest...)
	return nil
}

// Current is the current key's chain; nil when there is none.
func (c *LogCerts) Current() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.chains) == 0 {
		return nil
	}
	return c.chains[0]
}

// Chains are every chain held, the current key's first.
func (c *LogCerts) Chains() [][]*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.chains)
}

// ChainFor is the chain of the key whose signature of origin on note
// verifies; nil when none does.
func (c *LogCerts) ChainFor(origin string, note []byte) []*x509.Certificate {
	ids := NoteKeyIDs(note, origin)
	for _, chain := range c.Chains() {
		v, err := NewNoteVerifier(origin, chain[0].PublicKey)
		if err != nil || !slices.Contains(ids, v.KeyID()) {
			continue
		}
		if _, err := v.Open(note); err == nil {
			return chain
		}
	}
	return nil
}

// Verifier verifies the notes of origin signed by any of the keys held,
// the current one first.
func (c *LogCerts) Verifier(origin string) (*NoteVerifier, error) {
	var pubs []crypto.PublicKey
	for _, chain := range c.Chains() {
		pubs = append(pubs, chain[0].PublicKey)
	}
	return NewNoteVerifierKeys(origin, pubs...)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// Rotate makes key the log's checkpoint key: the next checkpoint the log
// signs, and every one after, is signed by it (see [NoteSigner.Rotate]);
// the checkpoints signed before, in the store and in the checkpoint file,
// still verify, with the key they name. A seal under way finishes with the
// old key. It is safe to call while records are appended and sealed.
func (l *Log) Rotate(key crypto.Signer) error {
	return l.signer.Rotate(key)
}

// KeyID is the key ID of the log's current checkpoint key.
func (l *Log) KeyID() uint32 { return l.signer.KeyID() }
