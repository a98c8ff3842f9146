package proof

import (
	"errors"
	"fmt"
	"time"
)

// Config is the proof section of pec.yaml.
type Config struct {
	File string `yaml:"file"` // the embedded store (relative paths: to pec.yaml's directory)
	// PostgresURLEnv names the environment variable holding the URL of a
	// PostgreSQL database shared by several nodes; set, it replaces File.
	// The URL holds a password: never in pec.yaml itself.
	PostgresURLEnv string `yaml:"postgres_url_env"`
	Origin         string `yaml:"origin"`    // the log's name, in its checkpoints and as the note key name
	KeyLabel       string `yaml:"key_label"` // the tree-head key in hsm (ECDSA P-256); never a PIN
	CertFile       string `yaml:"cert_file"` // its certificate, then its chain (PEM)
	// CheckpointFile keeps the newest checkpoint this node sealed or saw,
	// outside the store: a store that is behind it or disagrees with it
	// (an old copy put back, a rolled-back file) is refused at start and
	// by audit. Empty: none (tests); pec.yaml sets one.
	CheckpointFile string `yaml:"checkpoint_file"`
	// SealInterval is the longest time between two checkpoints while
	// records wait to be sealed: every acknowledged record is covered by
	// a signed, time-stamped checkpoint within about this delay. 0: 250ms.
	SealInterval time.Duration `yaml:"seal_interval"`
	BatchSize    int           `yaml:"batch_size"` // records per durable write at most; 0: 4096
	BatchWait    time.Duration `yaml:"batch_wait"` // how long a write waits for more records; 0: no wait
	// Auditors read every proof through the API: client certificates
	// named by their SHA-256 fingerprint (hex) or their subject (RFC
	// 4514, as crypto/x509 prints it). Other clients read the proofs of
	// the records that name them.
	Auditors []string `yaml:"auditors"`
}

// Configured reports whether the section is present at all: a node may
// keep no evidence log.
func (c Config) Configured() bool {
	return c.File != "" || c.PostgresURLEnv != "" || c.Origin != "" || c.KeyLabel != "" || c.CertFile != "" ||
		c.BatchSize != 0 || c.BatchWait != 0 || c.SealInterval != 0 || c.CheckpointFile != "" || len(c.Auditors) > 0
}

// Defaults of the proof section.
const (
	DefaultBatchSize    = 4096
	DefaultSealInterval = 250 * time.Millisecond
	// MaxSealInterval bounds seal_interval: ARCHITECTURE.md promises a
	// record sealed within a second.
	MaxSealInterval = time.Second
)

// Interval is the seal interval in effect.
func (c Config) Interval() time.Duration {
	if c.SealInterval == 0 {
		return DefaultSealInterval
	}
	return c.SealInterval
}

// Validate reports every invalid field by path: "proof.origin: ...".
func (c Config) Validate() error {
	var errs []error
	fault := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.File == "" && c.PostgresURLEnv == "" {
		fault("proof.file: required (or proof.postgres_url_env)")
	}
	if !validKeyName(c.Origin) {
		fault("proof.origin: %q: a name with no space or + (a schema-less URL such as pec.example.org/proof)", c.Origin)
	}
	if c.KeyLabel == "" {
		fault("proof.key_label: required")
	}
	if c.CertFile == "" {
		fault("proof.cert_file: required")
	}
	if c.BatchSize < 0 || c.BatchSize > 1<<20 {
		fault("proof.batch_size: %d is not within 0-1048576", c.BatchSize)
	}
	for i, a := range c.Auditors {
		if a == "" {
			fault("proof.auditors[%d]: empty", i)
		}
	}
	if c.BatchWait < 0 || c.BatchWait > time.Second {
		fault("proof.batch_wait: %s is not within 0-1s", c.BatchWait)
	}
	if c.SealInterval < 0 || c.SealInterval > MaxSealInterval || (c.SealInterval != 0 && c.SealInterval < 10*time.Millisecond) {
		fault("proof.seal_interval: %s is not within 10ms-%s", c.SealInterval, MaxSealInterval)
	}
	return errors.Join(errs...)
}
