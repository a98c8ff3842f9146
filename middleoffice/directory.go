package middleoffice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pec/evidence"
)

// Errors of the directory's changes; an invalid partner is an *InvalidError.
var (
	ErrNotFound = errors.New("middleoffice: no such partner")
	ErrExists   = errors.New("middleoffice: a partner with this id exists")
	// ErrConflict: the partner's certificates would authenticate another
	// partner too (the same fingerprint, or the same subject and issuer).
	ErrConflict = errors.New("middleoffice: certificate rule of another partner")
	// ErrNoEvidence: the directory has no evidence log, so it takes no
	// changes (each one is evidence).
	ErrNoEvidence = errors.New("middleoffice: changes to the directory need the evidence log")
)

// Options hold the collaborators of a Directory.
type Options struct {
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
	// Evidence records every change (admin.action) before it is stored
	// and applied; nil: the directory takes no changes (ErrNoEvidence).
	Evidence evidence.Appender
}

// Directory is the node's directory of partners and routing rules. Reads
// are lock-free over an immutable snapshot; changes are serialized, each
// recorded as evidence, stored, then published as a new snapshot, so that
// the next request of any connection sees it. It is safe for concurrent
// use.
type Directory struct {
	mu       sync.Mutex // serializes changes
	state    atomic.Pointer[state]
	base     map[string]Partner // pec.yaml's partners
	store    Store
	evidence evidence.Appender
	log      *slog.Logger
	now      func() time.Time

	principals sync.Map // *x509.Certificate → *cachedPrincipal
	cached     atomic.Int64
}

// state is one version of the directory, never modified once published.
type state struct {
	partners map[string]*Partner
	ids      []string // sorted
	routes   []Route
	// Indexes of the certificate rules.
	byFingerprint   map[[32]byte]string
	bySubjectIssuer map[[2]string]string
	bySubject       map[string]string
}

// Open builds the directory from its pec.yaml section (cfg, which Validate
// has checked; the files it names are read here) and the partners kept in
// store, which win over pec.yaml's for the same id. A nil store keeps
// changes in memory only (tests). Conflicting certificate rules between
// the two are an error naming both partners.
func Open(ctx context.Context, cfg Config, store Store, opts Options) (*Directory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Directory{base: map[string]Partner{}, store: store, evidence: opts.Evidence, log: opts.Logger, now: opts.Now}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	partners := map[string]*Partner{}
	for i, pc := range cfg.Partners {
		p, err := pc.fromConfig(fmt.Sprintf("directory.partners[%d]", i))
		if err != nil {
			return nil, err
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("directory.partners[%d]: %w", i, err)
		}
		d.base[p.ID] = p
		partners[p.ID] = &p
	}
	if store != nil {
		stored, err := store.Load(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range stored {
			p.normalize()
			if err := p.Validate(); err != nil {
				return nil, fmt.Errorf("middleoffice: stored partner %q: %w", p.ID, err)
			}
			if _, ok := d.base[p.ID]; ok {
				d.log.Info("directory: the partner changed through the API wins over pec.yaml's", "partner", p.ID, "revision", p.Revision)
			}
			partners[p.ID] = &p
		}
	}
	st, err := newState(partners, cfg.Routes)
	if err != nil {
		return nil, err
	}
	for _, r := range cfg.Routes {
		for _, id := range slices.Concat(r.From, r.To) {
			if id != "*" && st.partners[id] == nil {
				d.log.Warn("directory: a route names a partner the directory does not hold", "partner", id)
			}
		}
	}
	d.state.Store(st)
	return d, nil
}

func newState(partners map[string]*Partner, routes []Route) (*state, error) {
	st := &state{
		partners:        partners,
		ids:             slices.Sorted(maps.Keys(partners)),
		routes:          routes,
		byFingerprint:   map[[32]byte]string{},
		bySubjectIssuer: map[[2]string]string{},
		bySubject:       map[string]string{},
	}
	for _, id := range st.ids {
		for _, r := range partners[id].Certificates {
			var other string
			var taken bool
			switch {
			case r.Fingerprint != "":
				fp, _ := parseFingerprint(r.Fingerprint)
				if other, taken = st.byFingerprint[fp]; !taken || other == id {
					st.byFingerprint[fp] = id
					continue
				}
			case r.Issuer != "":
				k := [2]string{r.Subject, r.Issuer}
				if other, taken = st.bySubjectIssuer[k]; !taken || other == id {
					st.bySubjectIssuer[k] = id
					continue
				}
			default:
				if other, taken = st.bySubject[r.Subject]; !taken || other == id {
					st.bySubject[r.Subject] = id
					continue
				}
			}
			return nil, fmt.Errorf("%w: partners %q and %q both claim %s", ErrConflict, other, id, r.describe())
		}
	}
	return st, nil
}

func (r CertificateRule) describe() string {
	switch {
	case r.Fingerprint != "":
		return "the certificate sha256:" + r.Fingerprint
	case r.Issuer != "":
		return fmt.Sprintf("subject %q from issuer %q", r.Subject, r.Issuer)
	}
	return fmt.Sprintf("subject %q", r.Subject)
}

// Partners returns every partner, sorted by id.
func (d *Directory) Partners() []Partner {
	st := d.state.Load()
	out := make([]Partner, 0, len(st.ids))
	for _, id := range st.ids {
		out = append(out, st.partners[id].clone())
	}
	return out
}

// Partner returns the partner called id.
func (d *Directory) Partner(id string) (Partner, bool) {
	p := d.state.Load().partners[id]
	if p == nil {
		return Partner{}, false
	}
	return p.clone(), true
}

// Routes returns the routing rules.
func (d *Directory) Routes() []Route { return slices.Clone(d.state.Load().routes) }

// Add creates a partner (ErrExists if its id is taken). by is the
// administrator making the change, named in its evidence. The partner
// returned carries its revision and the id of the evidence.
func (d *Directory) Add(ctx context.Context, by *Principal, p Partner) (Partner, error) {
	return d.change(ctx, by, p.ID, "added", func(cur *Partner) (Partner, error) {
		if cur != nil {
			return Partner{}, fmt.Errorf("%w: %q", ErrExists, p.ID)
		}
		return p, nil
	})
}

// Replace replaces the whole partner with p's id (ErrNotFound if none).
func (d *Directory) Replace(ctx context.Context, by *Principal, p Partner) (Partner, error) {
	return d.change(ctx, by, p.ID, "updated", func(cur *Partner) (Partner, error) {
		if cur == nil {
			return Partner{}, fmt.Errorf("%w: %q", ErrNotFound, p.ID)
		}
		return p, nil
	})
}

// PatchPartner applies a JSON merge patch (RFC 7396) to the partner id.
func (d *Directory) PatchPartner(ctx context.Context, by *Principal, id string, patch []byte) (Partner, error) {
	return d.change(ctx, by, id, "updated", func(cur *Partner) (Partner, error) {
		if cur == nil {
			return Partner{}, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		return cur.Patch(patch)
	})
}

// SetDisabled disables or enables the partner id: a disabled partner's
// certificates are refused at its next request, on every connection.
func (d *Directory) SetDisabled(ctx context.Context, by *Principal, id string, disabled bool) (Partner, error) {
	verb := "disabled"
	if !disabled {
		verb = "enabled"
	}
	return d.change(ctx, by, id, verb, func(cur *Partner) (Partner, error) {
		if cur == nil {
			return Partner{}, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		q := cur.clone()
		q.Disabled = disabled
		return q, nil
	})
}

// change makes one change under the lock: the new partner is checked
// against the others, recorded as evidence (an admin.action naming the
// administrator, the partner and the SHA-256 of its new entry), stored,
// and published. A change whose evidence or storage fails is not applied.
func (d *Directory) change(ctx context.Context, by *Principal, id, verb string, next func(cur *Partner) (Partner, error)) (Partner, error) {
	if d.evidence == nil {
		return Partner{}, ErrNoEvidence
	}
	if by == nil {
		return Partner{}, errors.New("middleoffice: a change needs the principal who makes it")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state.Load()
	cur := st.partners[id]
	p, err := next(cur)
	if err != nil {
		return Partner{}, err
	}
	p = p.clone()
	p.normalize()
	if err := p.Validate(); err != nil {
		return Partner{}, err
	}
	if p.ID != id {
		return Partner{}, &InvalidError{Faults: []string{"id: a partner's id does not change"}}
	}
	var prevEvidence string
	var changed []string
	if cur != nil {
		p.Revision, prevEvidence = cur.Revision, cur.EvidenceID
		changed = changedFields(*cur, p)
		if len(changed) == 0 {
			return cur.clone(), nil // nothing to change, nothing to record
		}
	}
	p.Revision++
	p.UpdatedAt = d.now().UTC().Truncate(time.Millisecond)
	p.EvidenceID = ""
	partners := maps.Clone(st.partners)
	partners[id] = &p
	nst, err := newState(partners, st.routes)
	if err != nil {
		return Partner{}, err
	}
	rec := &evidence.Record{
		Type:    evidence.AdminAction,
		Time:    p.UpdatedAt,
		Subject: "directory.partner-" + verb,
		Actors:  []evidence.Actor{by.Actor("admin")},
		Digests: []evidence.Digest{{Name: "partner", Algorithm: "sha256", Value: EntryDigest(p)}},
		Attributes: []evidence.Attribute{
			{Key: "partner", Value: id},
			{Key: "revision", Value: strconv.FormatInt(p.Revision, 10)},
		},
	}
	if len(changed) > 0 {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "changed", Value: strings.Join(changed, ",")})
	}
	slices.SortFunc(rec.Attributes, func(a, b evidence.Attribute) int { return strings.Compare(a.Key, b.Key) })
	if prevEvidence != "" {
		rec.Previous = []string{prevEvidence}
	}
	ids, err := d.evidence.Append(ctx, rec)
	if err != nil {
		return Partner{}, fmt.Errorf("middleoffice: record the change: %w", err)
	}
	p.EvidenceID = ids[0]
	if d.store != nil {
		if err := d.store.Put(ctx, p); err != nil {
			// The evidence says a change was made that is not: it names
			// the digest of an entry the directory never held, which an
			// audit sees as an attempt.
			return Partner{}, fmt.Errorf("middleoffice: store the change (evidence %s): %w", ids[0], err)
		}
	}
	d.state.Store(nst)
	d.log.InfoContext(ctx, "directory: partner "+verb, "partner", id, "revision", p.Revision, "by", by.Subject, "evidence_id", ids[0])
	return p.clone(), nil
}

// EntryDigest is the SHA-256 of a partner's entry as its admin.action
// evidence names it: its JSON (encoding/json, fields in declaration order)
// with evidence_id left out, the only field the evidence cannot cover.
// A stored or listed partner is checked against its evidence by blanking
// evidence_id and hashing again.
func EntryDigest(p Partner) []byte {
	p.EvidenceID = ""
	data, _ := json.Marshal(p)
	sum := sha256.Sum256(data)
	return sum[:]
}

// changedFields names the top-level JSON fields that differ.
func changedFields(a, b Partner) []string {
	var am, bm map[string]json.RawMessage
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	_ = json.Unmarshal(ja, &am)
	_ = json.Unmarshal(jb, &bm)
	var out []string
	for k := range maps.Keys(am) {
		if _, ok := bm[k]; !ok {
			bm[k] = nil // removed: differs
		}
	}
	for _, k := range slices.Sorted(maps.Keys(bm)) {
		if k == "revision" || k == "updated_at" || k == "evidence_id" {
			continue
		}
		if !bytes.Equal(am[k], bm[k]) {
			out = append(out, k)
		}
	}
	return out
}
