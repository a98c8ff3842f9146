package middleoffice

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"pec/evidence"
	"pec/signing"
)

// Action is what a principal asks to do.
type Action string

// The actions the policy decides on.
const (
	// ActionSign: sign with the signature profile Resource.Profile.
	ActionSign Action = "sign"
	// ActionReadProof: read the proof of Resource.Record.
	ActionReadProof Action = "proof.read"
	// ActionReadAllProofs: read the proof of any record (auditors).
	ActionReadAllProofs Action = "proof.read-all"
	// ActionSend: send Resource.Procedure (and Resource.DocumentType) to
	// Resource.Recipient.
	ActionSend Action = "exchange.send"
	// ActionAdminister: list, read and change the directory's partners.
	ActionAdminister Action = "directory.admin"
)

// Resource is what an action applies to; each action reads its fields.
type Resource struct {
	Profile      string           // ActionSign
	Record       *evidence.Record // ActionReadProof
	Recipient    string           // ActionSend: a partner id
	Procedure    string           // ActionSend
	DocumentType string           // ActionSend; "": the procedure alone
}

// ForbiddenError is a refusal of the policy. Reason is ours, safe to show
// the principal it concerns: it names the rule that is missing, nothing of
// other partners. The gateway answers it with 403.
type ForbiddenError struct {
	Principal string // the partner id, or the certificate's subject
	Action    Action
	Reason    string
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("middleoffice: %s may not %s: %s", e.Principal, e.Action, e.Reason)
}

// Rules are the policy's rules that live outside the directory: the
// signature profiles' allowed_clients (the signing section) and the
// proof.auditors list of earlier configurations.
type Rules struct {
	// SignProfiles maps each signature profile to its allowed_clients
	// entries (signing.ParseClientRule syntax). A name entry matches a
	// partner id or a certificate's common name.
	SignProfiles map[string][]string
	// Auditors read every proof, as the auditor role does: certificates
	// by SHA-256 fingerprint (hex) or subject.
	Auditors []string
}

// SignRules takes the allowed_clients of the signing section's profiles.
func SignRules(cfg signing.Config) map[string][]string {
	out := map[string][]string{}
	for _, p := range cfg.Profiles {
		out[p.Name] = slices.Clone(p.AllowedClients)
	}
	return out
}

// Policy answers every authorization decision of the node from the
// directory and the rules. It is safe for concurrent use; a change of the
// directory holds from the next decision.
type Policy struct {
	dir      *Directory
	sign     map[string][]signing.ClientRule
	auditors []string
}

var _ signing.Authorizer = (*Policy)(nil)

// NewPolicy is the policy of dir with rules.
func NewPolicy(dir *Directory, rules Rules) (*Policy, error) {
	p := &Policy{dir: dir, sign: map[string][]signing.ClientRule{}, auditors: slices.Clone(rules.Auditors)}
	for profile, entries := range rules.SignProfiles {
		for i, e := range entries {
			r, err := signing.ParseClientRule(e)
			if err != nil {
				return nil, fmt.Errorf("middleoffice: signing profile %q: allowed_clients[%d]: %w", profile, i, err)
			}
			p.sign[profile] = append(p.sign[profile], r)
		}
	}
	return p, nil
}

// EmptyPolicy is the policy of an empty directory without rules: nobody
// has a role, a client reads the proofs of records naming it, and nothing
// else is granted (the signature service, given no policy, keeps its
// profiles' allowed_clients).
func EmptyPolicy() *Policy {
	d := &Directory{base: map[string]Partner{}, log: slog.New(slog.DiscardHandler), now: time.Now}
	st, _ := newState(map[string]*Partner{}, nil) // nothing can conflict
	d.state.Store(st)
	return &Policy{dir: d, sign: map[string][]signing.ClientRule{}}
}

// Directory is the directory the policy reads.
func (p *Policy) Directory() *Directory { return p.dir }

// Authorize returns nil when pr may do a on r, and a *ForbiddenError
// saying why not otherwise. A disabled partner may do nothing.
func (p *Policy) Authorize(pr *Principal, a Action, r Resource) error {
	deny := func(format string, args ...any) error {
		name := pr.ID()
		if name == "" {
			name = pr.Subject
		}
		return &ForbiddenError{Principal: name, Action: a, Reason: fmt.Sprintf(format, args...)}
	}
	if pr.Disabled() {
		return deny("the partner is disabled")
	}
	switch a {
	case ActionSign:
		return p.authorizeSign(pr, r.Profile, deny)
	case ActionReadAllProofs:
		if pr.Has(RoleAuditor) || p.listedAuditor(pr) {
			return nil
		}
		return deny("only auditors read every proof")
	case ActionReadProof:
		if p.Authorize(pr, ActionReadAllProofs, r) == nil {
			return nil
		}
		if r.Record != nil {
			for _, fp := range pr.Fingerprints() {
				if r.Record.Involves(fp) {
					return nil
				}
			}
		}
		return deny("the record does not name this client")
	case ActionSend:
		return p.authorizeSend(pr, r, deny)
	case ActionAdminister:
		if pr.Has(RoleAdmin) {
			return nil
		}
		return deny("partner administration needs the admin role")
	}
	return deny("unknown action")
}

func (p *Policy) authorizeSign(pr *Principal, profile string, deny func(string, ...any) error) error {
	if pr.Partner != nil && (slices.Contains(pr.Partner.SignatureProfiles, profile) || slices.Contains(pr.Partner.SignatureProfiles, "*")) {
		return nil
	}
	cn := pr.Certificate.Subject.CommonName
	for _, rule := range p.sign[profile] {
		if rule.MatchesCertificate(pr.Fingerprint, pr.Subject, cn) {
			return nil
		}
		if rule.Name != "" && rule.Name == pr.ID() {
			return nil
		}
	}
	return deny("no rule grants the signature profile %q (its allowed_clients, or the partner's signature_profiles)", profile)
}

func (p *Policy) listedAuditor(pr *Principal) bool {
	hexFP := pr.FingerprintHex()
	for _, a := range p.auditors {
		if strings.EqualFold(a, hexFP) || a == pr.Subject {
			return true
		}
	}
	return false
}

func (p *Policy) authorizeSend(pr *Principal, r Resource, deny func(string, ...any) error) error {
	if !pr.Has(RolePartner) && !pr.Has(RoleAgent) {
		return deny("only partners and agents of the directory send")
	}
	st := p.dir.state.Load()
	to := st.partners[r.Recipient]
	if to == nil || to.Disabled || !(to.Has(RolePartner) || to.Has(RoleAgent)) {
		return deny("no recipient %q in the directory", r.Recipient)
	}
	from := pr.ID()
	for _, rt := range st.routes {
		if matches(rt.From, from) && matches(rt.To, r.Recipient) && matches(rt.Procedures, r.Procedure) &&
			(len(rt.DocumentTypes) == 0 || matches(rt.DocumentTypes, r.DocumentType)) {
			return nil
		}
	}
	if r.DocumentType != "" {
		return deny("no routing rule lets it send procedure %q, document type %q to %q", r.Procedure, r.DocumentType, r.Recipient)
	}
	return deny("no routing rule lets it send procedure %q to %q", r.Procedure, r.Recipient)
}

func matches(values []string, v string) bool {
	return v != "" && (slices.Contains(values, v) || slices.Contains(values, "*"))
}

// AuthorizeSign implements signing.Authorizer: the profiles of the
// signature service ask the policy.
func (p *Policy) AuthorizeSign(_ context.Context, cert *x509.Certificate, profile string) error {
	return p.Authorize(p.dir.Resolve(cert), ActionSign, Resource{Profile: profile})
}
