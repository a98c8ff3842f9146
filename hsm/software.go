package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// softStore is the KeyStore of software keys: PKCS#8 PEM files
// DIR/LABEL.key, mode 0600.
type softStore struct {
	dir    string
	log    *slog.Logger
	met    *metrics
	closed atomic.Bool

	mu   sync.Mutex // keys, and GenerateKey's check-then-create
	keys map[string]*softKey
}

func openSoftware(dir string, log *slog.Logger, met *metrics) (KeyStore, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("hsm: key_dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("hsm: key_dir: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("hsm: key_dir is open to other users: chmod 700", "dir", dir, "mode", fi.Mode().Perm().String())
	}
	return &softStore{dir: dir, log: log, met: met, keys: make(map[string]*softKey)}, nil
}

// validLabel keeps a label a plain file name in the key directory: 1 to 128
// of [A-Za-z0-9._-], not starting with a dot (no "..", no hidden files,
// which is also how temporary files stay apart).
func validLabel(label string) error {
	if label == "" || len(label) > 128 || label[0] == '.' {
		return fmt.Errorf("hsm: key label %q: 1 to 128 characters of A-Z a-z 0-9 . _ -, not starting with a dot", label)
	}
	for _, c := range []byte(label) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("hsm: key label %q: only A-Z a-z 0-9 . _ - are allowed", label)
		}
	}
	return nil
}

func (s *softStore) path(label string) string { return filepath.Join(s.dir, label+".key") }

func (s *softStore) Signer(ctx context.Context, label string) (crypto.Signer, error) {
	return s.key(label)
}

func (s *softStore) Decrypter(ctx context.Context, label string) (crypto.Decrypter, error) {
	k, err := s.key(label)
	if err != nil {
		return nil, err
	}
	if _, ok := k.priv.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("hsm: key %q is not an RSA key: it cannot decrypt", label)
	}
	return k, nil
}

func (s *softStore) key(label string) (*softKey, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if err := validLabel(label); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.keys[label]; k != nil {
		return k, nil
	}
	priv, err := readKeyFile(s.path(label))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrKeyNotFound, label)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: key %q: %w", label, err)
	}
	k := s.newKey(label, priv)
	s.keys[label] = k
	return k, nil
}

func readKeyFile(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// Like ssh, refuse a private key that others may read: it may
	// already have leaked, and using it would hide that.
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v: others may read it (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM PRIVATE KEY block (PKCS#8)", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%s: %T keys are not supported (RSA and ECDSA are)", path, key)
}

func (s *softStore) GenerateKey(ctx context.Context, label string, kt KeyType) (crypto.Signer, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if err := validLabel(label); err != nil {
		return nil, err
	}
	var priv crypto.Signer
	var err error
	switch kt {
	case RSA2048:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	case ECP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		return nil, fmt.Errorf("hsm: generate key: unknown key type %v", kt)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kt, label, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kt, label, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeKeyFile(s.path(label), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %q", ErrKeyExists, label)
		}
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kt, label, err)
	}
	k := s.newKey(label, priv)
	s.keys[label] = k
	s.log.Info("hsm: key generated", "key_label", label, "key_type", kt.String())
	return k, nil
}

// writeKeyFile writes data to path, mode 0600, atomically and never over an
// existing file: a temporary file in the same directory, synced, then
// hard-linked to its name (link(2) fails if the name exists; rename(2)
// would replace it).
func writeKeyFile(path string, data []byte) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return fs.ErrExist
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-*.key") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		// A file system without hard links: the Lstat above, under the
		// store's lock, already checked that the name is free.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return err
		}
	}
	// The new name must survive a crash too.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Ready: keys in files need nothing that can go away once they are read.
func (s *softStore) Ready() error {
	if s.closed.Load() {
		return errClosed
	}
	return nil
}

func (s *softStore) Close() error {
	s.closed.Store(true)
	return nil
}

// softKey is a software key, wrapped to count its signatures and to stop
// working when its KeyStore closes, as a token key does.
type softKey struct {
	store   *softStore
	label   string
	priv    crypto.Signer // *rsa.PrivateKey or *ecdsa.PrivateKey
	observe prometheus.Observer
	// destroyed: by DestroyKey; the key fails from then on.
	destroyed atomic.Bool
}

var (
	_ crypto.Signer    = (*softKey)(nil)
	_ crypto.Decrypter = (*softKey)(nil)
)

func (s *softStore) newKey(label string, priv crypto.Signer) *softKey {
	return &softKey{store: s, label: label, priv: priv, observe: s.met.signSeconds.WithLabelValues(label)}
}

func (k *softKey) Public() crypto.PublicKey { return k.priv.Public() }

// Sign signs digest with the Go key, with the same digest checks as a token
// key.
func (k *softKey) Sign(random io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.store.closed.Load() {
		return nil, errClosed
	}
	if k.destroyed.Load() {
		return nil, fmt.Errorf("hsm: sign: %w", destroyedError(k.label))
	}
	if _, err := checkDigest(digest, opts); err != nil {
		k.store.met.errors.WithLabelValues("sign").Inc()
		return nil, fmt.Errorf("hsm: sign with key %q: %w", k.label, err)
	}
	if random == nil {
		random = rand.Reader
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		// As a token key does: a salt as long as the hash, which TLS 1.3
		// requires, rather than crypto/rsa's longest possible one.
		opts = &rsa.PSSOptions{Hash: pss.Hash, SaltLength: rsa.PSSSaltLengthEqualsHash}
	}
	start := time.Now()
	sig, err := k.priv.Sign(random, digest, opts)
	if err != nil {
		k.store.met.errors.WithLabelValues("sign").Inc()
		return nil, fmt.Errorf("hsm: sign with key %q: %w", k.label, err)
	}
	k.observe.Observe(time.Since(start).Seconds())
	return sig, nil
}

// Decrypt is rsa.PrivateKey.Decrypt: OAEP or PKCS#1 v1.5 by opts.
func (k *softKey) Decrypt(random io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	if k.store.closed.Load() {
		return nil, errClosed
	}
	if k.destroyed.Load() {
		return nil, fmt.Errorf("hsm: decrypt: %w", destroyedError(k.label))
	}
	priv, ok := k.priv.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("hsm: decrypt with key %q: %w", k.label, errNotRSAKey)
	}
	if random == nil {
		random = rand.Reader
	}
	pt, err := priv.Decrypt(random, ciphertext, opts)
	if err != nil {
		k.store.met.errors.WithLabelValues("decrypt").Inc()
		if errors.Is(err, rsa.ErrDecryption) {
			return nil, rsa.ErrDecryption
		}
		return nil, fmt.Errorf("hsm: decrypt with key %q: %w", k.label, err)
	}
	return pt, nil
}
