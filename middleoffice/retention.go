package middleoffice

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"pec/evidence"
	"pec/hsm"
)

// Retention: how long the payloads of an exchange are kept, per
// procedure, before they are shredded (see [AtRest], which says why the
// retention counts from the submission).

// Period is a retention period in whole days: "3650d" in pec.yaml, or
// "keep" (the zero value): kept until a period is set.
type Period int

// MaxPeriod bounds a retention period: a century.
const MaxPeriod Period = 36500

// Duration is the period as a time.Duration.
func (p Period) Duration() time.Duration { return time.Duration(p) * 24 * time.Hour }

func (p Period) String() string {
	if p == 0 {
		return "keep"
	}
	return strconv.Itoa(int(p)) + "d"
}

// label is the period's part of a KEK label.
func (p Period) label() string { return p.String() }

// MarshalText implements encoding.TextMarshaler.
func (p Period) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: "3650d" (1 to 36500
// days), or "keep".
func (p *Period) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "keep" {
		*p = 0
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
	if !strings.HasSuffix(s, "d") || err != nil || n < 1 || Period(n) > MaxPeriod || strings.HasPrefix(s, "+") || strings.HasPrefix(s, "0") {
		return fmt.Errorf("%q is not a retention period: whole days, such as \"3650d\" (1d to %dd), or \"keep\"", s, int(MaxPeriod))
	}
	*p = Period(n)
	return nil
}

// RetentionConfig is exchange.retention of pec.yaml: the retention of
// each procedure's payloads, counted from the submission, after which
// they are shredded.
//
//	retention:
//	  default: 3650d          # the procedures not named below; "keep" (the default): never shredded
//	  procedures:
//	    dossier: 3650d
//	    casier-judiciaire: 90d
//
// The zero value keeps every payload (encrypted at rest all the same).
// Each period gets its own key-encryption keys, one a month: a short
// period's copies become unreadable soon, whatever the longest period is.
type RetentionConfig struct {
	Default    Period            `yaml:"default"`
	Procedures map[string]Period `yaml:"procedures"`
}

// Validate reports every invalid field by path:
// "exchange.retention.procedures.x: ...".
func (c RetentionConfig) Validate() error {
	var errs []error
	check := func(path string, p Period) {
		if p < 0 || p > MaxPeriod {
			errs = append(errs, fmt.Errorf("exchange.retention.%s: %d days is not between 1 and %d (or keep)", path, int(p), int(MaxPeriod)))
		}
	}
	check("default", c.Default)
	names := make([]string, 0, len(c.Procedures))
	for name := range c.Procedures {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !validName(name) {
			errs = append(errs, fmt.Errorf("exchange.retention.procedures: %q is not a procedure name (lowercase letters, digits, '.', '_', '-')", name))
			continue
		}
		check("procedures."+name, c.Procedures[name])
	}
	return errors.Join(errs...)
}

// For is the retention of a procedure's payloads.
func (c RetentionConfig) For(procedure string) Period {
	if p, ok := c.Procedures[procedure]; ok {
		return p
	}
	return c.Default
}

// periods are the distinct periods configured, shortest first.
func (c RetentionConfig) periods() []Period {
	out := []Period{c.Default}
	for _, p := range c.Procedures {
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// StateShredded: the exchange's retention ended and its payloads were
// destroyed (payload.destroyed); its metadata, events and evidence stay,
// and its sender and recipient still read its status.
const StateShredded State = "shredded"

// The jobs of the retention lifecycle, enqueued by [AtRest] with the
// exchange that needs them.
const (
	// JobShred shreds an exchange at the end of its retention (id: the
	// exchange id + "-shred").
	JobShred = "shred"
	// JobDestroyKEK destroys a key-encryption key once every data key it
	// wraps is past retention (id: "destroy-kek-" + its label).
	JobDestroyKEK = "destroy-kek"
)

// Shredder is the capability of an ExchangeStore that keeps each
// exchange's payloads under a data key of its own ([AtRest]): the work
// queue shreds through it.
type Shredder interface {
	// DataKey describes the data key of an exchange: ErrShredded once
	// destroyed, ErrPayloadNotFound when there is none.
	DataKey(ctx context.Context, exchange string) (*DataKeyInfo, error)
	// Shred destroys the data key of an exchange and its payloads; it is
	// idempotent.
	Shred(ctx context.Context, exchange string) error
	// DestroyKEK destroys a key-encryption key; gone already: an error
	// wrapping hsm.ErrKeyNotFound.
	DestroyKEK(ctx context.Context, label string) error
}

var _ Shredder = (*AtRest)(nil)

// shreddable are the states a shredding applies to: every state but
// pending (not accepted yet) and shredded.
var shreddable = []State{StateAccepted, StateDelivered, StateRetrieved, StateAcknowledged, StateRefused, StateDeadLetter, StateExpired}

// shred does a JobShred: payload.destroyed prepared in the outbox, then
// the data key and the payloads destroyed, then the record appended and
// the step committed; and, whatever the state found, the destruction made
// sure of before the job is done. A crash at any point leaves the step to
// the recovery and the job to a retry, so that the destruction and its
// evidence both happen, or neither yet.
func (x *Exchanges) shred(ctx context.Context, job *Job) error {
	sh, ok := x.store.(Shredder)
	if !ok {
		x.log.WarnContext(ctx, "exchange: a shred job on a store without payloads at rest: dropped", "exchange_id", job.Exchange)
		return x.store.Done(ctx, job.ID)
	}
	ex, err := x.settled(ctx, job.Exchange)
	if errors.Is(err, ErrExchangeNotFound) {
		return x.store.Done(ctx, job.ID)
	} else if err != nil {
		return err
	}
	if ex.State != StateShredded {
		if later, err := x.shredExchange(ctx, sh, ex, job); err != nil || later {
			return err
		}
	}
	if err := sh.Shred(ctx, ex.ID); err != nil {
		return err
	}
	return x.store.Done(ctx, job.ID)
}

// shredExchange records and makes the destruction of ex's payloads. When
// the retention is not over (a clock set back), the job is handed back
// until it is (later).
func (x *Exchanges) shredExchange(ctx context.Context, sh Shredder, ex *Exchange, job *Job) (later bool, err error) {
	now := x.now().UTC()
	info, err := sh.DataKey(ctx, ex.ID)
	switch {
	case err == nil:
		if !info.ShredAt.IsZero() && now.Before(info.ShredAt) {
			return true, x.store.Release(ctx, job, info.ShredAt, "")
		}
	case errors.Is(err, ErrShredded), errors.Is(err, ErrPayloadNotFound):
		info = nil // destroyed already, or never had one: recorded all the same
	default:
		return false, err
	}
	if ex.Seal == nil {
		// A seal made for pushes that all failed (a dead letter) is on
		// disk, though the exchange names none: destroyed, and named, too.
		if seal, err := x.payloadInfo(ctx, ex.ID, sealName, maxSeal); err == nil {
			ex.Seal = seal
		}
	}
	rec := shredRecord(ex, info, x.signer.Certificate(), now)
	data, err := rec.MarshalBinary()
	if err != nil {
		return false, err
	}
	st := &Step{
		Exchange: ex.ID, Prepared: now, Record: data,
		Event: Event{Type: rec.Type, EvidenceID: rec.ID, Time: now},
		From:  shreddable, To: StateShredded,
	}
	err = x.store.Prepare(ctx, st)
	if errors.Is(err, ErrStepPending) {
		if p, perr := x.store.Prepared(ctx, ex.ID); perr == nil {
			if ferr := x.finish(ctx, p); ferr != nil {
				return false, ferr
			}
		}
		err = x.store.Prepare(ctx, st)
	}
	if err != nil {
		return false, fmt.Errorf("middleoffice: shred exchange %s: %w", ex.ID, err)
	}
	// From here the step is never aborted: once the payloads may be
	// gone, only their evidence can follow.
	bg := context.WithoutCancel(ctx)
	if err := sh.Shred(bg, ex.ID); err != nil {
		return false, fmt.Errorf("middleoffice: shred exchange %s (its payload.destroyed is prepared; the recovery records it and the job destroys again): %w", ex.ID, err)
	}
	if err := x.appendRecord(bg, st.Record); err != nil {
		return false, fmt.Errorf("middleoffice: record %s of exchange %s (the recovery records it): %w", st.Event.Type, ex.ID, err)
	}
	if err := x.store.Commit(bg, ex.ID, rec.ID); err != nil {
		return false, fmt.Errorf("middleoffice: commit %s of exchange %s (evidence %s is durable; the recovery commits it): %w", st.Event.Type, ex.ID, rec.ID, err)
	}
	x.log.InfoContext(ctx, "exchange: payloads shredded at the end of retention", "exchange_id", ex.ID, "evidence_id", rec.ID)
	return false, nil
}

// payloadInfo reads the payload name of an exchange, at most limit
// bytes, for its digest.
func (x *Exchanges) payloadInfo(ctx context.Context, exchange, name string, limit int64) (*PayloadInfo, error) {
	p, err := x.store.OpenPayload(ctx, exchange, name)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(p, limit))
	if err != nil {
		return nil, err
	}
	return &PayloadInfo{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// shredRecord is the payload.destroyed record of ex: the digests of every
// payload destroyed, as the exchange's earlier records name them, and of
// the wrapped data key; the key-encryption key, the retention and its end
// (info nil: not known any more).
func shredRecord(ex *Exchange, info *DataKeyInfo, platform *x509.Certificate, now time.Time) *evidence.Record {
	rec := &evidence.Record{
		ID:       evidence.NewID(now),
		Type:     evidence.PayloadDestroyed,
		Time:     now,
		Subject:  ex.ID,
		Actors:   []evidence.Actor{evidence.ActorFromCertificate("platform", platform)},
		Previous: []string{ex.SubmissionEvidence},
		Attributes: []evidence.Attribute{
			{Key: "state", Value: string(ex.State)},
		},
	}
	add := func(name, sum string) {
		if v, err := hex.DecodeString(sum); err == nil && len(v) == sha256.Size {
			rec.Digests = append(rec.Digests, evidence.Digest{Name: name, Algorithm: "sha256", Value: v})
		}
	}
	for i, e := range ex.Envelopes {
		add("envelope/"+strconv.Itoa(i), e.SHA256)
	}
	if ex.Seal != nil {
		add("seal", ex.Seal.SHA256)
	}
	if ex.Acknowledgment != nil {
		add("acknowledgment", ex.Acknowledgment.SHA256)
	}
	if info != nil {
		rec.Digests = append(rec.Digests, evidence.Digest{Name: "wrapped-data-key", Algorithm: "sha256", Value: info.WrappedSHA256})
		rec.Attributes = append(rec.Attributes,
			evidence.Attribute{Key: "key_label", Value: info.KEK},
			evidence.Attribute{Key: "retention", Value: info.Retention.String()})
		if !info.ShredAt.IsZero() {
			rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "retained_until", Value: info.ShredAt.UTC().Format(time.RFC3339)})
		}
	}
	rec.SortAttributes()
	return rec
}

// destroyKEK does a JobDestroyKEK: the key-encryption key destroyed in
// the HSM, then key.destroyed recorded, under an id made of the key's
// label, so that a retry after a crash (the key gone already) records it
// once.
func (x *Exchanges) destroyKEK(ctx context.Context, job *Job) error {
	sh, ok := x.store.(Shredder)
	label, found := strings.CutPrefix(job.ID, "destroy-kek-")
	if !ok || !found || label == "" {
		x.log.WarnContext(ctx, "exchange: a KEK job this node cannot do: dropped", "job", job.ID)
		return x.store.Done(ctx, job.ID)
	}
	err := sh.DestroyKEK(ctx, label)
	if err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
		return err
	}
	now := x.now().UTC()
	rec := &evidence.Record{
		ID:      kekRecordID(label, job.NotBefore),
		Type:    evidence.KeyDestroyed,
		Time:    now,
		Subject: label,
		Actors:  []evidence.Actor{evidence.ActorFromCertificate("platform", x.signer.Certificate())},
		Attributes: []evidence.Attribute{
			{Key: "destroy_after", Value: job.NotBefore.UTC().Format(time.RFC3339)},
			{Key: "key_label", Value: label},
			{Key: "purpose", Value: "at-rest key-encryption key"},
		},
	}
	if _, err := x.evidence.Append(context.WithoutCancel(ctx), rec); err != nil && !errors.Is(err, evidence.ErrDuplicateID) {
		return fmt.Errorf("middleoffice: record the destruction of key %s (destroyed; the job records it again): %w", label, err)
	}
	x.log.InfoContext(ctx, "exchange: key-encryption key destroyed: its dossiers are past retention", "key_label", label, "evidence_id", rec.ID)
	return x.store.Done(ctx, job.ID)
}

// kekRecordID is the evidence id of a KEK's key.destroyed: the form of
// evidence.NewID (the milliseconds of its due time, then 20 hexadecimal
// digits), the digits from the label's SHA-256.
func kekRecordID(label string, due time.Time) string {
	var b [16]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(max(due.UnixMilli(), 0)))
	copy(b[:6], ms[2:])
	sum := sha256.Sum256([]byte("pec key.destroyed\x00" + label))
	copy(b[6:], sum[:10])
	return hex.EncodeToString(b[:])
}
