package devca

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
	"math/big"
	"os"
	"time"

	"pec/evidence"
	"pec/internal/atomicfile"
	"pec/internal/devpki"
	"pec/internal/filelock"
)

// StateVersion is the version of the state file written.
const StateVersion = 1

// maxStateBytes bounds the state file read (about 600 bytes a certificate).
const maxStateBytes = 16 << 20

// State is what the development CA issued and revoked: the contents of
// the state file.
type State struct {
	Version      int           `json:"version"`
	Certificates []Certificate `json:"certificates"`
}

// Certificate is one certificate the root issued.
type Certificate struct {
	Name     string    `json:"name"`   // the file name under pki/, and the common name of clients
	Serial   string    `json:"serial"` // lowercase hexadecimal, as `openssl x509 -serial` prints it (less the case)
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"` // of the certificate's DER
	Role     string    `json:"role,omitempty"`
	NotAfter time.Time `json:"not_after"`
	Issued   Event     `json:"issued"`
	Revoked  *Event    `json:"revoked,omitempty"`
}

// Event is an issuance or a revocation: when, by whom, under which
// evidence id ("" for what `pec init` issued), and for a revocation the
// RFC 5280 reason name.
type Event struct {
	At       time.Time `json:"at"`
	By       string    `json:"by"`
	Evidence string    `json:"evidence,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// Errors of the state.
var (
	// ErrMalformedState: a state file that does not decode, or breaks a
	// rule of State.
	ErrMalformedState = errors.New("devca: malformed state file")
	// ErrNotFound: no certificate of that name.
	ErrNotFound = errors.New("devca: no certificate of that name")
	// ErrAlreadyRevoked: every certificate of that name is revoked.
	ErrAlreadyRevoked = errors.New("devca: already revoked")
)

// ParseState decodes a state file strictly (unknown fields are errors)
// and checks it: names, serial numbers (unique), fingerprints, times,
// reasons and evidence ids. Errors wrap ErrMalformedState.
func ParseState(data []byte) (*State, error) {
	var s State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedState, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing content", ErrMalformedState)
	}
	if s.Version != StateVersion {
		return nil, fmt.Errorf("%w: version %d (this pec reads version %d)", ErrMalformedState, s.Version, StateVersion)
	}
	serials := map[string]bool{}
	for i, c := range s.Certificates {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: certificates[%d]: %s", ErrMalformedState, i, fmt.Sprintf(format, args...))
		}
		if !ValidName(c.Name) {
			return nil, bad("name %q: lowercase letters, digits, '.', '_', '-'; 63 at most", c.Name)
		}
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok || n.Sign() <= 0 || n.Text(16) != c.Serial || len(c.Serial) > 40 {
			return nil, bad("serial %q: a positive lowercase hexadecimal number of 20 octets at most", c.Serial)
		}
		if serials[c.Serial] {
			return nil, bad("serial %s twice", c.Serial)
		}
		serials[c.Serial] = true
		if b, err := hex.DecodeString(c.SHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != c.SHA256 {
			return nil, bad("sha256 %q: 64 lowercase hexadecimal digits", c.SHA256)
		}
		if c.Subject == "" || c.NotAfter.IsZero() {
			return nil, bad("subject and not_after are required")
		}
		if c.Role != "" && !ValidRole(c.Role) {
			return nil, bad("role %q: partner, agent, auditor or admin", c.Role)
		}
		if err := c.Issued.check(false); err != nil {
			return nil, bad("issued: %v", err)
		}
		if c.Revoked != nil {
			if err := c.Revoked.check(true); err != nil {
				return nil, bad("revoked: %v", err)
			}
		}
	}
	return &s, nil
}

func (e Event) check(revocation bool) error {
	switch {
	case e.At.IsZero():
		return errors.New("at: required")
	case e.By == "" || len(e.By) > 256:
		return errors.New("by: required, 256 bytes at most")
	case e.Evidence != "" && !evidence.ValidID(e.Evidence):
		return fmt.Errorf("evidence %q: not an evidence id", e.Evidence)
	case !revocation && e.Reason != "":
		return errors.New("reason: only for a revocation")
	}
	if revocation {
		if _, err := devpki.ParseReason(e.Reason); err != nil {
			return err
		}
	}
	return nil
}

// Marshal encodes the state as the file holds it.
func (s *State) Marshal() ([]byte, error) {
	s.Version = StateVersion
	if s.Certificates == nil {
		s.Certificates = []Certificate{}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Load reads the state file. A missing file is fs.ErrNotExist (wrapped);
// `pec init` writes one.
func Load(path string) (*State, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseState(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrMalformedState, maxStateBytes)
	}
	return data, nil
}

// Update changes the state file under its lock: f gets the current state
// (an empty one when the file does not exist yet) and changes it; when f
// returns nil, the state is written back whole and durably. The lock is a
// file beside the state (PATH.lock), held for the call: a second Update,
// in this process or another, waits for it (filelock.Wait at most).
func Update(path string, f func(*State) error) error {
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("devca: state lock: %w", err)
	}
	defer lf.Close() // releases the flock
	if err := filelock.Lock(lf, "CA state lock"); err != nil {
		return err
	}
	s, err := Load(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s = &State{Version: StateVersion}
	case err != nil:
		return err
	}
	if err := f(s); err != nil {
		return err
	}
	data, err := s.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("devca: write state: %w", err)
	}
	return nil
}

// Add records cert, issued under name at the time and by the actor of ev.
func (s *State) Add(cert *x509.Certificate, name, role string, ev Event) (Certificate, error) {
	if !ValidName(name) {
		return Certificate{}, fmt.Errorf("devca: %q is not a certificate name (lowercase letters, digits, '.', '_', '-'; 63 at most)", name)
	}
	if role != "" && !ValidRole(role) {
		return Certificate{}, fmt.Errorf("devca: role %q: partner, agent, auditor or admin", role)
	}
	sum := sha256.Sum256(cert.Raw)
	c := Certificate{
		Name:     name,
		Serial:   cert.SerialNumber.Text(16),
		Subject:  cert.Subject.String(),
		SHA256:   hex.EncodeToString(sum[:]),
		Role:     role,
		NotAfter: cert.NotAfter.UTC(),
		Issued:   ev,
	}
	c.Issued.At = c.Issued.At.UTC()
	if s.Lookup(cert.SerialNumber) != nil {
		return Certificate{}, fmt.Errorf("devca: serial %s already issued", c.Serial)
	}
	s.Certificates = append(s.Certificates, c)
	return c, nil
}

// Revoke revokes every certificate of name not yet revoked, with the
// reason (an RFC 5280 name), time and actor of ev, and returns them.
// ErrNotFound: no certificate of that name; ErrAlreadyRevoked: all are.
func (s *State) Revoke(name string, ev Event) ([]Certificate, error) {
	if _, err := devpki.ParseReason(ev.Reason); err != nil {
		return nil, err
	}
	var out []Certificate
	found := false
	for i := range s.Certificates {
		c := &s.Certificates[i]
		if c.Name != name {
			continue
		}
		found = true
		if c.Revoked != nil {
			continue
		}
		e := ev
		e.At = e.At.UTC()
		if len(out) > 0 && e.Evidence != "" {
			// One record per certificate: the others get ids of their own.
			e.Evidence = evidence.NewID(e.At)
		}
		c.Revoked = &e
		out = append(out, *c)
	}
	switch {
	case !found:
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	case len(out) == 0:
		return nil, fmt.Errorf("%w: every certificate named %q", ErrAlreadyRevoked, name)
	}
	return out, nil
}

// Lookup returns the certificate of serial number n, or nil.
func (s *State) Lookup(n *big.Int) *Certificate {
	if n == nil {
		return nil
	}
	hexSerial := n.Text(16)
	for i := range s.Certificates {
		if s.Certificates[i].Serial == hexSerial {
			return &s.Certificates[i]
		}
	}
	return nil
}

// Valid returns the certificates of name that are not revoked.
func (s *State) Valid(name string) []Certificate {
	var out []Certificate
	for _, c := range s.Certificates {
		if c.Name == name && c.Revoked == nil {
			out = append(out, c)
		}
	}
	return out
}

// ValidName: the names of certificates are those of partners' ids (and
// file names): 1-63 of lowercase letters, digits, '.', '_', '-', starting
// with a letter or a digit.
func ValidName(s string) bool {
	if s == "" || len(s) > 63 || !('a' <= s[0] && s[0] <= 'z' || '0' <= s[0] && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Roles are the directory roles a client certificate may be issued for.
var Roles = []string{"partner", "agent", "auditor", "admin"}

// ValidRole reports whether r is one of Roles.
func ValidRole(r string) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}
