// Package hsm gives the rest of PEC a [crypto.Signer] and a [crypto.Decrypter]
// by key label, backed either by a PKCS#11 token (OASIS PKCS#11 Cryptographic
// Token Interface Base Specification v2.40; SoftHSM2 in tests and in
// `pec init`, a hardware HSM in production) or by software keys kept as
// PKCS#8 (RFC 5208) PEM files.
//
// # Keys
//
// With a PKCS#11 module, private keys are generated on the token as token
// objects with CKA_SENSITIVE true and CKA_EXTRACTABLE false: they never leave
// it. A key is found by CKA_LABEL; its public half is read from the public-key
// object that shares its CKA_ID (CKA_MODULUS and CKA_PUBLIC_EXPONENT for RSA,
// CKA_EC_PARAMS and CKA_EC_POINT for EC), so no certificate needs to be
// stored on the token.
//
// Signatures: RSA PKCS#1 v1.5 (RFC 8017 section 8.2, CKM_RSA_PKCS over the
// DigestInfo), RSA-PSS (RFC 8017 section 8.1, CKM_RSA_PKCS_PSS) and ECDSA
// (FIPS 186-4, CKM_ECDSA, the raw r||s result re-encoded as the ASN.1
// Ecdsa-Sig-Value of RFC 3279 that Go and X.509 expect). Decryption: RSA-OAEP
// (RFC 8017 section 7.1, CKM_RSA_PKCS_OAEP) and RSAES-PKCS1-v1_5
// (CKM_RSA_PKCS). Where a module refuses the OAEP parameters, or ignores the
// OAEP label (SoftHSM2 2.6 does SHA-1 only, and drops the label without a
// word), the token computes the raw RSA decryption (CKM_RSA_X_509) and the
// OAEP decoding is done here, in constant time: the private key still never
// leaves the token.
//
// # Sessions and recovery
//
// A [KeyStore] on a token logs in once (CKU_USER): a login puts every session
// the application has open on the token in the user state (PKCS#11 v2.40
// section 5.6, C_Login), and the state ends with the last of them. One
// read-only session, the anchor, stays open for the life of the KeyStore so
// that the login does too; operations run on a pool of read-only sessions
// opened lazily up to [Config.Sessions]. Every wait of a call, for a free
// session, for a recovery under way or for a re-initialisation of the
// module, honours its context; Sign and Decrypt, which have none, wait at
// most [Config.Wait] ([Key.SignContext] takes one).
//
// The pool recovers by itself, without a restart, from the faults below,
// listed from the least to the most thorough recovery:
//
//   - session (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//     CKR_OPERATION_ACTIVE): that session is dropped and a new one opened,
//     unless the anchor session is gone too (a token pulled and put back),
//     which calls for the token recovery at once;
//   - login (CKR_USER_NOT_LOGGED_IN): the KeyStore logs in again;
//   - key (CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID): the key's
//     object handle is found again by label and CKA_ID;
//   - token (CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, CKR_SLOT_ID_INVALID,
//     CKR_TOKEN_NOT_RECOGNIZED): the slot is found again by token label or
//     serial, a new anchor session logs in, every key handed out is found
//     again, and the pooled sessions and key handles of before are replaced
//     on their next use; if the token or a key is not found so, the module
//     is re-initialised as below;
//   - module (CKR_DEVICE_ERROR, CKR_GENERAL_ERROR,
//     CKR_CRYPTOKI_NOT_INITIALIZED, and a key handed out that is not found
//     any more): the module is finalised and initialised again (C_Finalize,
//     C_Initialize), then as for the token. SoftHSM2 reads its token
//     directory in C_Initialize only: a token directory moved away and put
//     back, or made unreadable and readable again, is seen only so. Every
//     KeyStore on that module notices at its next call and recovers too.
//
// After a recovery the operation is retried. Retries are bounded: a call
// recovers at most once from each kind, each more thorough than the last, so
// a fault that persists fails the call, with an error wrapping
// [ErrUnavailable], and the next call tries again. Each recovery is logged
// once, by whoever made it, and counted in pec_hsm_recoveries_total{kind}.
// One exception: CKR_GENERAL_ERROR from C_Decrypt is a bad ciphertext
// (SoftHSM2 answers so), not a sick module: whoever can send a ciphertext
// must not be able to re-initialise the module.
//
// Token and module recoveries run one at a time per KeyStore; the callers
// that meet the fault meanwhile wait for that one, each with its context.
// If it fails (the token is still away), the token is unavailable: every
// call fails at once with [ErrUnavailable], [KeyStore.Ready] says so, and
// the KeyStore alone tries again, re-initialising the module, with backoff
// up to 2 s, until the token and every key it handed out are back. Keys
// handed out before keep working afterwards: a [Key] finds its handle again
// by itself. A key missing from a token that is otherwise back is
// unavailable alone. Only the changes are logged (unavailable, available
// again); pec_hsm_available{token} is 0 meanwhile, and
// pec_hsm_reinit_total{result} counts the re-initialisations.
//
// A module is loaded and initialised once per process per path, shared with
// reference counts by every KeyStore and by [InitToken], and finalised when
// its last user closes: PKCS#11 allows one C_Initialize per application.
//
// # Keys another process makes
//
// A key that another process (pec keys rotate, another node on the same
// token) makes is found by label like any other. SoftHSM2 notices other
// processes' changes through a generation counter in the token directory,
// and loses one when this process writes to the token at the same time:
// its own write then takes the other's count for its own, and the module
// never rescans the directory (seen with a key made by pkcs11-tool while a
// KeyStore generated an RSA key: TestKeyOfAnotherProcess). So a key not
// found after this KeyStore made or destroyed a token object is looked for
// once more after the module read the token again (C_Finalize,
// C_Initialize, as a module recovery: keys handed out find their objects
// again, operations under way are retried); a lookup that finds nothing
// with no write since costs nothing more.
//
// # Signing from a session copy
//
// SoftHSM2 re-reads, in C_SignInit and again in C_Sign, the token's
// generation file and the key object's file (open, lock, fstat, read,
// unlock, close each) to see whether another process changed them, and
// rebuilds the OpenSSL key from its attributes in every C_SignInit: the
// file checks are about a third of a signature's cost. So a key that
// signed once from its token object gets a session copy of itself
// (C_CopyObject with CKA_TOKEN false, PKCS#11 v2.40 section 5.7: a session
// object in the module's memory, sensitive and not extractable like the
// token object, made in the anchor session and gone with it), which signs
// without those checks; every keyCheckEvery (100 ms) the token object
// signs again, and so is checked to be there. A key whose token object
// went away (its files, its token, another process's destruction) thus
// fails within 100 ms, the time its copy signs on, instead of at once.
// Only signatures use copies: decryptions, for which crypto-shredding
// counts on the destruction of the key taking effect at once, always go
// to the token object. Lookups by label ask for token objects only, so a
// copy is never taken for the key itself; DestroyKey destroys the copy
// too. A module that refuses to copy a key (CKA_COPYABLE false, or no
// C_CopyObject) signs from the token object.
//
// # Destroying keys
//
// [KeyStore.DestroyKey] destroys a key pair for good (C_DestroyObject on both
// halves, in a read/write session): crypto-shredding, where the destruction of
// a key-encryption key makes what it wrapped unreadable, relies on it. A key
// handed out before keeps failing afterwards with ErrKeyNotFound, without
// touching the token, and leaves the keys a recovery looks for: a destroyed key
// is never taken for a key gone with its token (which would make the KeyStore
// re-initialise the module and report itself unavailable). A KeyStore of
// another process that had handed the key out too sees it gone with its
// token at its next use of it (of its token object, within 100 ms for a
// signing key: see "Signing from a session copy"): destroy only keys no
// other node still uses.
// What a token keeps
// of a destroyed object, in its own backups or its storage, is the token's
// business: SoftHSM2 unlinks the object's file. A software key's file is
// overwritten with zeros, synced, and removed; on a copy-on-write or
// flash file system the old blocks may survive, which is one more reason for
// software keys to be a fallback only.
//
// # Software keys
//
// Without a module, keys are PKCS#8 PEM files KEY_DIR/LABEL.key of mode 0600,
// written atomically; the Go key itself signs and decrypts. They are the
// fallback for machines without any PKCS#11 module.
package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrKeyNotFound is returned (wrapped) when no key has the label asked for.
var ErrKeyNotFound = errors.New("hsm: no key with this label")

// ErrKeyExists is returned (wrapped) by GenerateKey when a key already has
// the label: a label names one key, and a new key never replaces an old one.
var ErrKeyExists = errors.New("hsm: a key with this label already exists")

// ErrUnavailable is returned (wrapped) while the token, or the key asked
// for, is temporarily unavailable: pulled (SoftHSM2: its token directory
// moved away or unreadable), failing, re-initialising, or too slow to
// answer within [Config.Wait]. The KeyStore recovers by itself; the call
// may succeed later unchanged. It is not ErrKeyNotFound: a key that was
// found once and goes away with its token is unavailable, not unknown.
// Edges answer it as a temporary failure: HTTP 503 with Retry-After,
// RFC 3161 systemFailure, SMTP 4xx.
var ErrUnavailable = errors.New("hsm: temporarily unavailable")

// errClosed is returned by a KeyStore, and by its keys, after Close.
var errClosed = errors.New("hsm: key store is closed")

// Config is the hsm section of pec.yaml. Either Module (a PKCS#11 token) or
// KeyDir (software keys) is set, never both. The PIN is never in the file
// itself: PINFile or PINEnv says where to read it.
type Config struct {
	Module       string        `yaml:"module"`        // PKCS#11 module path; empty: software keys in KeyDir
	TokenLabel   string        `yaml:"token_label"`   // select the token by label ...
	TokenSerial  string        `yaml:"token_serial"`  // ... or by serial (both set: both must match)
	PINFile      string        `yaml:"pin_file"`      // user PIN from this file, trailing newline trimmed ...
	PINEnv       string        `yaml:"pin_env"`       // ... or from this environment variable
	SoftHSM2Conf string        `yaml:"softhsm2_conf"` // SoftHSM2 only: SOFTHSM2_CONF for the module's initialisation
	Sessions     int           `yaml:"sessions"`      // session pool size; 0: 2*GOMAXPROCS, at least 8
	Wait         time.Duration `yaml:"wait"`          // longest a Sign or Decrypt waits for a session, a recovery or the module; 0: 10s
	KeyDir       string        `yaml:"key_dir"`       // software keys: PKCS#8 PEM files KEY_DIR/LABEL.key, mode 0600
}

// PKCS#11 v2.40 section 3.2 (CK_TOKEN_INFO): fixed-size, blank-padded fields.
const (
	maxTokenLabel  = 32
	maxTokenSerial = 16
)

// Validate reports every fault of the section at once (errors.Join), one per
// line, each prefixed with its path in pec.yaml: "hsm.pin_file: ...". It
// checks the shape of the section only; Open finds out whether the module,
// the token and the files exist.
func (c Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("hsm.%s: "+format, append([]any{field}, args...)...))
	}
	switch {
	case c.Module != "" && c.KeyDir != "":
		add("key_dir", "set together with hsm.module: choose a PKCS#11 module or software keys")
	case c.Module == "" && c.KeyDir == "":
		add("module", "required (a PKCS#11 module), or hsm.key_dir for software keys")
	}
	if c.Sessions < 0 {
		add("sessions", "%d is negative (0 picks a size from the CPU count)", c.Sessions)
	}
	if c.Wait < 0 {
		add("wait", "%v is negative (0: 10s)", c.Wait)
	}
	if c.Module == "" {
		// Software keys: the token fields would be silently ignored, which
		// hides a configuration mistake (a module line commented out).
		for _, f := range []struct{ name, value string }{
			{"token_label", c.TokenLabel}, {"token_serial", c.TokenSerial},
			{"pin_file", c.PINFile}, {"pin_env", c.PINEnv}, {"softhsm2_conf", c.SoftHSM2Conf},
		} {
			if f.value != "" {
				add(f.name, "only with hsm.module (software keys in hsm.key_dir need none)")
			}
		}
		if c.Sessions > 0 {
			add("sessions", "only with hsm.module")
		}
		if c.Wait > 0 {
			add("wait", "only with hsm.module")
		}
		return errors.Join(errs...)
	}
	if c.TokenLabel == "" && c.TokenSerial == "" {
		add("token_label", "required with hsm.module (or hsm.token_serial)")
	}
	if len(c.TokenLabel) > maxTokenLabel || !utf8.ValidString(c.TokenLabel) {
		add("token_label", "%q is not a PKCS#11 token label (UTF-8, at most %d bytes)", c.TokenLabel, maxTokenLabel)
	}
	if len(c.TokenSerial) > maxTokenSerial {
		add("token_serial", "%q is longer than a PKCS#11 token serial (%d characters)", c.TokenSerial, maxTokenSerial)
	}
	switch {
	case c.PINFile == "" && c.PINEnv == "":
		add("pin_file", "required with hsm.module (or hsm.pin_env); the PIN itself never goes in pec.yaml")
	case c.PINFile != "" && c.PINEnv != "":
		add("pin_env", "set together with hsm.pin_file: choose one")
	}
	if c.PINEnv != "" && strings.ContainsAny(c.PINEnv, "= \t\n") {
		add("pin_env", "%q is not an environment variable name", c.PINEnv)
	}
	return errors.Join(errs...)
}

// readPIN returns the user PIN from the file or the environment variable.
// Errors name where the PIN was looked for, never the PIN.
func (c Config) readPIN() (string, error) {
	if c.PINEnv != "" {
		pin, ok := os.LookupEnv(c.PINEnv)
		if !ok || pin == "" {
			return "", fmt.Errorf("hsm: pin_env: environment variable %s is not set (export it with the token's user PIN, or give hsm.pin_file)", c.PINEnv)
		}
		return pin, nil
	}
	data, err := os.ReadFile(c.PINFile)
	if err != nil {
		// The *PathError names the file only.
		return "", fmt.Errorf("hsm: pin_file: %w (write the token's user PIN in it, mode 0600; pec init makes one for a development token)", err)
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pin == "" {
		return "", fmt.Errorf("hsm: pin_file: %s is empty (write the token's user PIN in it)", c.PINFile)
	}
	return pin, nil
}

// Options hold optional collaborators; the zero value works.
type Options struct {
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: no metrics
}

// KeyType is the algorithm and size of a key to generate.
type KeyType int

// The key types GenerateKey makes.
const (
	RSA2048 KeyType = iota + 1
	RSA3072
	ECP256
	ECP384
)

func (kt KeyType) String() string {
	switch kt {
	case RSA2048:
		return "RSA-2048"
	case RSA3072:
		return "RSA-3072"
	case ECP256:
		return "ECDSA-P256"
	case ECP384:
		return "ECDSA-P384"
	}
	return fmt.Sprintf("KeyType(%d)", int(kt))
}

// KeyStore holds keys by label. It is safe for concurrent use, and so are the
// signers and decrypters it returns; they stop working when it is closed.
type KeyStore interface {
	// Signer returns the key labelled label. The error wraps ErrKeyNotFound
	// if there is none.
	Signer(ctx context.Context, label string) (crypto.Signer, error)
	// Decrypter returns the RSA key labelled label. The error wraps
	// ErrKeyNotFound if there is none; an EC key is an error.
	Decrypter(ctx context.Context, label string) (crypto.Decrypter, error)
	// GenerateKey makes a new key pair labelled label. The error wraps
	// ErrKeyExists if a key already has the label.
	GenerateKey(ctx context.Context, label string, kt KeyType) (crypto.Signer, error)
	// DestroyKey destroys the key pair labelled label: both halves on a
	// token, the key file of software keys. The error wraps ErrKeyNotFound
	// if there is none. The keys handed out for the label stop working:
	// their calls fail with an error wrapping ErrKeyNotFound, and a
	// recovery does not look for them (see "Destroying keys" in the
	// package doc).
	DestroyKey(ctx context.Context, label string) error
	// Ready returns nil while the keys can be used, and an error wrapping
	// ErrUnavailable, naming the token or the keys handed out that are
	// missing, while they cannot: a readiness check (/readyz). It may ask
	// the token, at most once a second, and then bounds its wait.
	Ready() error
	// Close waits for the operations under way, then releases the sessions
	// and the module (or nothing, for software keys). Later calls fail.
	Close() error
}

// Open opens the key store that cfg describes: the PKCS#11 token of
// cfg.Module, logged in with the PIN, or the software keys of cfg.KeyDir.
// ctx bounds the opening only.
func Open(ctx context.Context, cfg Config, opts Options) (KeyStore, error) {
	return open(ctx, cfg, opts, nil)
}

// open is Open with a hook that tests use to wrap the PKCS#11 binding and
// inject the faults SoftHSM2 cannot produce.
func open(ctx context.Context, cfg Config, opts Options, wrap func(p11) p11) (KeyStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(opts.Registry)
	if cfg.Module == "" {
		return openSoftware(cfg.KeyDir, log, m)
	}
	return openToken(ctx, cfg, log, m, wrap)
}
