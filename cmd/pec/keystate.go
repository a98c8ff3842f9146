package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"pec/evidence"
	"pec/internal/atomicfile"
	"pec/internal/devpki"
	"pec/internal/filelock"
	"pec/proof"
)

// The key state: which generation of each node key is current.
//
// pec.yaml names each key of the node by key_label and its certificate by
// cert_file (tsa, proof, tls, each signing profile). A rotation never
// rewrites pec.yaml (its comments are the operator's): it makes a new key
// labelled BASE.GEN, where BASE is pec.yaml's key_label and GEN the UTC
// time of the rotation (tsa.20261201T101500Z), writes the new certificate
// beside the first one (pki/tsa.20261201T101500Z.pem), and records both in
// DATA_DIR/keys.json. The node reads that file at start and on SIGHUP:
// for every key it lists, the last generation is current, whatever
// pec.yaml says; pec.yaml's key_label and cert_file are the first
// generation, generation 0, which the file repeats. Earlier generations
// stay listed: the evidence log's old checkpoints are verified with the
// keys they name, and its bundles carry their certificates. Paths in the
// file are relative to the directory of pec.yaml, like pec.yaml's own.

// keyStateFormat names version 1 of keys.json.
const keyStateFormat = "pec-keys/1"

// keyStateName is the file, in data_dir.
const keyStateName = "keys.json"

// maxKeyState bounds the file (a few hundred bytes per rotation).
const maxKeyState = 1 << 20

// keyState is keys.json.
type keyState struct {
	Format string `json:"format"`
	// Keys by slot: "tsa", "proof", "tls", "signing/PROFILE".
	Keys map[string]*keySlot `json:"keys"`
}

// keySlot is the history of one key of the node.
type keySlot struct {
	// Generations, oldest first: the first is pec.yaml's, the last the
	// current one.
	Generations []keyGeneration `json:"generations"`
	// Pending is a key made by `pec keys csr` whose certificate `pec
	// keys install` has not brought yet.
	Pending *pendingKey `json:"pending,omitempty"`
}

// keyGeneration is one key of a slot and its certificate.
type keyGeneration struct {
	Label       string    `json:"label"`
	CertFile    string    `json:"cert_file"`
	CertSHA256  string    `json:"cert_sha256"` // of the first certificate of CertFile, hex
	CertSubject string    `json:"cert_subject"`
	At          time.Time `json:"at,omitzero"`        // when it became current (rotated); zero for generation 0
	By          string    `json:"by,omitempty"`       // who rotated
	Via         string    `json:"via,omitempty"`      // "devca" (pec keys rotate) or "csr" (pec keys install)
	Evidence    string    `json:"evidence,omitempty"` // the id of the keys.rotated record of the rotation to it
	// Profiles are the signature profiles that share the key (signing
	// slots), sorted: one rotation, one record.
	Profiles []string `json:"profiles,omitempty"`
}

// pendingKey is a new key waiting for its certificate.
type pendingKey struct {
	Label     string    `json:"label"`
	Created   time.Time `json:"created"`
	CSRSHA256 string    `json:"csr_sha256"`
	Profiles  []string  `json:"profiles,omitempty"`
}

// keyStatePath is where cfg's key state is kept.
func keyStatePath(cfg *File) string { return filepath.Join(cfg.DataDir, keyStateName) }

// configDir is the directory the key state's paths are relative to.
func configDir(cfg *File) string { return filepath.Dir(cfg.path) }

// parseKeyState reads keys.json strictly.
func parseKeyState(data []byte) (*keyState, error) {
	if len(data) > maxKeyState {
		return nil, fmt.Errorf("over %d bytes", maxKeyState)
	}
	var st keyState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("not a key state file: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not a key state file: data after the JSON object")
	}
	if st.Format != keyStateFormat {
		return nil, fmt.Errorf("format %q, not %q", st.Format, keyStateFormat)
	}
	if st.Keys == nil {
		st.Keys = map[string]*keySlot{}
	}
	for name, s := range st.Keys {
		if !validSlot(name) {
			return nil, fmt.Errorf("key %q: not tsa, proof, tls or signing/PROFILE", name)
		}
		if s == nil || len(s.Generations) == 0 && s.Pending == nil {
			return nil, fmt.Errorf("key %q: no generation", name)
		}
		for i, g := range s.Generations {
			if g.Label == "" || g.CertFile == "" || len(g.CertSHA256) != 64 {
				return nil, fmt.Errorf("key %q: generation %d: label, cert_file and cert_sha256 are required", name, i)
			}
			if _, err := hex.DecodeString(g.CertSHA256); err != nil {
				return nil, fmt.Errorf("key %q: generation %d: cert_sha256 is not hex", name, i)
			}
			if g.Evidence != "" && !evidence.ValidID(g.Evidence) {
				return nil, fmt.Errorf("key %q: generation %d: %q is not an evidence id", name, i, g.Evidence)
			}
			if i > 0 && (g.Evidence == "" || g.At.IsZero()) {
				return nil, fmt.Errorf("key %q: generation %d: the time and the evidence id of its rotation are required", name, i)
			}
			if i > 0 {
				// What the node will record: refused now rather than
				// then.
				if _, err := rotationRecord(name, s, i); err != nil {
					return nil, fmt.Errorf("key %q: generation %d: %w", name, i, err)
				}
			}
		}
		if p := s.Pending; p != nil && p.Label == "" {
			return nil, fmt.Errorf("key %q: pending: a label is required", name)
		}
	}
	return &st, nil
}

func validSlot(name string) bool {
	switch name {
	case "tsa", "proof", "tls":
		return true
	}
	p, ok := strings.CutPrefix(name, "signing/")
	return ok && p != "" && !strings.ContainsAny(p, "/ \n")
}

// loadKeyState reads cfg's key state; an empty one when there is none.
func loadKeyState(cfg *File) (*keyState, error) {
	path := keyStatePath(cfg)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &keyState{Format: keyStateFormat, Keys: map[string]*keySlot{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyState+1))
	if err != nil {
		return nil, fmt.Errorf("key state: %w", err)
	}
	st, err := parseKeyState(data)
	if err != nil {
		return nil, fmt.Errorf("key state %s: %w", path, err)
	}
	return st, nil
}

// updateKeyState changes cfg's key state under its lock (PATH.lock), as
// devca.Update does: f gets the state and changes it; on nil the state is
// written back whole, atomically and durably.
func updateKeyState(cfg *File, f func(*keyState) error) error {
	path := keyStatePath(cfg)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("key state: %w", err)
	}
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("key state lock: %w", err)
	}
	defer lf.Close()
	if err := filelock.Lock(lf, "key state lock"); err != nil {
		return err
	}
	st, err := loadKeyState(cfg)
	if err != nil {
		return err
	}
	if err := f(st); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("key state: %w", err)
	}
	return nil
}

// keyPath resolves a path of the key state.
func (cfg *File) keyPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(configDir(cfg), p)
}

// relPath is p as the key state writes it: relative to pec.yaml's
// directory when inside it.
func (cfg *File) relPath(p string) string {
	if r, err := filepath.Rel(configDir(cfg), p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// keyRef is where a slot's key and certificate are named in the
// configuration.
type keyRef struct {
	slot  string
	label *string
	cert  *string
}

// keyRefs are the node's keys: tsa, proof (with a proof section), tls
// (with a certificate), each signing profile.
func (cfg *File) keyRefs() []keyRef {
	refs := []keyRef{{"tsa", &cfg.TSA.KeyLabel, &cfg.TSA.CertFile}}
	if cfg.Proof.Configured() {
		refs = append(refs, keyRef{"proof", &cfg.Proof.KeyLabel, &cfg.Proof.CertFile})
	}
	if cfg.TLS.CertFile != "" {
		refs = append(refs, keyRef{"tls", &cfg.TLS.KeyLabel, &cfg.TLS.CertFile})
	}
	for i := range cfg.Signing.Profiles {
		p := &cfg.Signing.Profiles[i]
		refs = append(refs, keyRef{"signing/" + p.Name, &p.KeyLabel, &p.CertFile})
	}
	return refs
}

func (cfg *File) keyRef(slot string) (keyRef, bool) {
	i := slices.IndexFunc(cfg.keyRefs(), func(r keyRef) bool { return r.slot == slot })
	if i < 0 {
		return keyRef{}, false
	}
	return cfg.keyRefs()[i], true
}

// current is the slot's current generation; ok false when the key state
// says nothing of it (pec.yaml's key is current).
func (st *keyState) current(slot string) (keyGeneration, bool) {
	s := st.Keys[slot]
	if s == nil || len(s.Generations) == 0 {
		return keyGeneration{}, false
	}
	return s.Generations[len(s.Generations)-1], true
}

// applyKeyState makes cfg name the current generation of each key the
// key state lists (DATA_DIR/keys.json): what the node opens. It returns
// the state.
func applyKeyState(cfg *File) (*keyState, error) {
	st, err := loadKeyState(cfg)
	if err != nil {
		return nil, err
	}
	for _, r := range cfg.keyRefs() {
		if g, ok := st.current(r.slot); ok {
			*r.label, *r.cert = g.Label, cfg.keyPath(g.CertFile)
		}
	}
	return st, nil
}

// logChains are the certificate chains of the evidence log's keys, the
// current one first, then those rotated out, newest first: what bundles
// carry and audits verify with. cfg names the current one (after
// applyKeyState).
func logChains(cfg *File, st *keyState) ([][]*x509.Certificate, error) {
	current, err := devpki.LoadCertsPEM(cfg.Proof.CertFile)
	if err != nil || len(current) == 0 {
		return nil, fmt.Errorf("proof.cert_file: %v", err)
	}
	chains := [][]*x509.Certificate{current}
	if s := st.Keys["proof"]; s != nil {
		for i := len(s.Generations) - 1; i >= 0; i-- {
			g := s.Generations[i]
			if cfg.keyPath(g.CertFile) == cfg.Proof.CertFile {
				continue
			}
			chain, err := devpki.LoadCertsPEM(cfg.keyPath(g.CertFile))
			if err != nil || len(chain) == 0 {
				return nil, fmt.Errorf("key state: proof generation %d (%s): %v", i, g.Label, err)
			}
			chains = append(chains, chain)
		}
	}
	return chains, nil
}

func certSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// rotationRecord is the admin.action evidence of the rotation of slot to
// generation i of s: who rotated, the old and the new certificate (as
// actors and by digest), the old and new labels, and the profiles that
// share a signing key.
func rotationRecord(slot string, s *keySlot, i int) (*evidence.Record, error) {
	if i < 1 || i >= len(s.Generations) {
		return nil, fmt.Errorf("key %s: no rotation to generation %d", slot, i)
	}
	old, cur := s.Generations[i-1], s.Generations[i]
	oldFP, err1 := hex.DecodeString(old.CertSHA256)
	newFP, err2 := hex.DecodeString(cur.CertSHA256)
	if err1 != nil || err2 != nil || len(oldFP) != 32 || len(newFP) != 32 {
		return nil, fmt.Errorf("key %s: bad certificate fingerprints", slot)
	}
	oldActor := evidence.Actor{Role: "old-key", Subject: old.CertSubject}
	newActor := evidence.Actor{Role: "new-key", Subject: cur.CertSubject}
	copy(oldActor.Fingerprint[:], oldFP)
	copy(newActor.Fingerprint[:], newFP)
	kind := slot
	if strings.HasPrefix(slot, "signing/") {
		kind = "signing"
	}
	rec := &evidence.Record{
		ID:      cur.Evidence,
		Type:    evidence.AdminAction,
		Time:    cur.At.UTC(),
		Subject: "keys.rotated",
		Actors:  []evidence.Actor{{Role: "operator", Subject: cur.By}, oldActor, newActor},
		Digests: []evidence.Digest{
			{Name: "old-certificate", Algorithm: "sha256", Value: oldFP},
			{Name: "new-certificate", Algorithm: "sha256", Value: newFP},
		},
		Attributes: []evidence.Attribute{
			{Key: "key", Value: kind},
			{Key: "new_label", Value: cur.Label},
			{Key: "old_label", Value: old.Label},
			{Key: "via", Value: cur.Via},
		},
	}
	if len(cur.Profiles) > 0 {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "profiles", Value: strings.Join(cur.Profiles, ",")})
	}
	rec.SortAttributes()
	return rec, rec.Validate()
}

// logCertsOf are the certificates of the evidence log's keys, current
// and rotated out (see logChains).
func logCertsOf(cfg *File) (*proof.LogCerts, error) {
	st, err := loadKeyState(cfg)
	if err != nil {
		return nil, err
	}
	chains, err := logChains(cfg, st)
	if err != nil {
		return nil, err
	}
	return proof.NewLogCerts(chains...)
}

// acceptRetiredLogKeys makes signer accept the checkpoints of the log's
// keys rotated out: the store's heads and the checkpoint file of before
// the rotation.
func acceptRetiredLogKeys(cfg *File, signer *proof.NoteSigner) error {
	certs, err := logCertsOf(cfg)
	if err != nil {
		return err
	}
	for _, chain := range certs.Chains()[1:] {
		if err := signer.AcceptRetired(chain[0].PublicKey); err != nil {
			return fmt.Errorf("key state: a proof key rotated out: %w", err)
		}
	}
	return nil
}
