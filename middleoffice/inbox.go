package middleoffice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"pec/evidence"
	"pec/internal/cms"
	"pec/signing"
)

// The pull channel and tracking. Only an exchange's recipient lists,
// fetches and acknowledges it, once it is delivered; its sender and its
// recipient read its status; to everyone else it does not exist
// (ErrExchangeNotFound), so that ids reveal nothing.
//
// The check is the service's own, not the Policy's: it needs the
// exchange, which the policy does not read (ActionReadProof's record is
// the same kind of check). A disabled partner is refused everything.

// maxAcknowledgment bounds a recipient's signed acknowledgment.
const maxAcknowledgment = 1 << 20

// maxSeal bounds the seal read back for a fetch.
const maxSeal = 4 << 20

// party reports whether p may see ex as its sender or its recipient.
func party(p *Principal, ex *Exchange, asSender, asRecipient bool) bool {
	if p == nil || p.Partner == nil || p.Disabled() || !(p.Has(RolePartner) || p.Has(RoleAgent)) {
		return false
	}
	if asSender && ex.Sender == p.ID() && ex.State != StatePending {
		return true
	}
	// A dead letter never reached its recipient; a shredded exchange did
	// if it was delivered first.
	delivered := !slices.Contains([]State{StatePending, StateAccepted, StateDeadLetter, StateShredded}, ex.State)
	if ex.State == StateShredded {
		_, delivered = ex.event(evidence.Delivered)
	}
	return asRecipient && ex.Recipient == p.ID() && delivered
}

func (x *Exchanges) visible(ctx context.Context, p *Principal, id string, asSender, asRecipient bool) (*Exchange, error) {
	if !validExchangeID(id) {
		return nil, ErrExchangeNotFound
	}
	ex, err := x.store.Exchange(ctx, id)
	if err != nil {
		return nil, err
	}
	if !party(p, ex, asSender, asRecipient) {
		if asRecipient && ex.State == StateAccepted && !pushing(ex) && party(p, &Exchange{Recipient: ex.Recipient, State: StateDelivered}, false, true) {
			// Its recipient, a moment before the queue delivers it (the
			// submission answered, the seal not made yet): try again,
			// rather than "no such exchange" to the one it is for. (A
			// sealed exchange still accepted is being pushed to a
			// webhook: not for the pull API.)
			return nil, ErrNotSealedYet
		}
		return nil, ErrExchangeNotFound
	}
	return ex, nil
}

// pushing reports whether a channel has tried to push ex already.
func pushing(ex *Exchange) bool {
	_, failed := ex.event(evidence.DeliveryAttemptFailed)
	return failed
}

// forRecipient is the exchange as its recipient sees it: without the
// sender's idempotency key and receipt.
func forRecipient(ex *Exchange) *Exchange {
	c := ex.clone()
	c.Manifest.IdempotencyKey = ""
	c.Receipt = nil
	return c
}

// MaxInboxPage bounds a page of Inbox.
const MaxInboxPage = 1000

// Inbox lists the exchanges delivered to recipient and not yet
// acknowledged or refused, oldest first: those whose id comes after after
// ("": from the first), limit at most (0: 100; at most MaxInboxPage).
func (x *Exchanges) Inbox(ctx context.Context, recipient *Principal, after string, limit int) ([]*Exchange, error) {
	if recipient == nil || recipient.Partner == nil || recipient.Disabled() || !(recipient.Has(RolePartner) || recipient.Has(RoleAgent)) {
		return nil, nil
	}
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxInboxPage)
	list, err := x.store.Inbox(ctx, recipient.ID(), after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*Exchange, 0, len(list))
	for _, ex := range list {
		out = append(out, forRecipient(ex))
	}
	return out, nil
}

// Delivery is a fetched exchange: its sealed manifest and its documents'
// envelopes, to read before Close.
type Delivery struct {
	Exchange *Exchange // as the recipient sees it
	// Seal is the platform's CAdES signature with the sealed manifest
	// attached (`openssl cms -verify` gives it back); Manifest is that
	// sealed manifest.
	Seal     []byte
	Manifest SealedManifest
	// Documents are in the manifest's order.
	Documents []DeliveredDocument
	// EvidenceID is the delivery.retrieved record of this fetch.
	EvidenceID string
}

// DeliveredDocument is one document of a fetched exchange.
type DeliveredDocument struct {
	Document
	// Envelope is the CMS AuthEnvelopedData (DER, AES-256-GCM) of the
	// document for the recipient's encryption certificate: cms.DecryptTo
	// or `openssl cms -decrypt` opens it. EnvelopeSHA256 is the digest
	// the submission.accepted record names.
	Envelope       Payload
	EnvelopeSHA256 string
}

// Close closes the envelopes.
func (d *Delivery) Close() error {
	var errs []error
	for _, doc := range d.Documents {
		if doc.Envelope != nil {
			errs = append(errs, doc.Envelope.Close())
		}
	}
	return errors.Join(errs...)
}

// Fetch gives an exchange's recipient its seal and its encrypted
// documents, and records delivery.retrieved (each fetch is one, naming
// what was handed out) before it returns them. The first fetch moves a
// delivered exchange to StateRetrieved; an acknowledged one may be
// fetched again.
func (x *Exchanges) Fetch(ctx context.Context, recipient *Principal, id string) (*Delivery, error) {
	for attempt := 0; ; attempt++ {
		d, err := x.fetch(ctx, recipient, id)
		if errors.Is(err, ErrStateChanged) && attempt < 3 {
			continue // acknowledged meanwhile: fetched all the same
		}
		return d, err
	}
}

func (x *Exchanges) fetch(ctx context.Context, recipient *Principal, id string) (*Delivery, error) {
	ex, err := x.visible(ctx, recipient, id, false, true)
	if err != nil {
		return nil, err
	}
	switch ex.State {
	case StateExpired:
		return nil, ErrExpired
	case StateShredded:
		return nil, ErrShredded
	}
	seal, _, manifest, err := x.readSeal(ctx, ex)
	if err != nil {
		return nil, err
	}
	d := &Delivery{Exchange: forRecipient(ex), Seal: seal, Manifest: manifest}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	sealSum := sha256.Sum256(seal)
	digests := []evidence.Digest{{Name: "seal", Algorithm: "sha256", Value: sealSum[:]}}
	for i, env := range ex.Envelopes {
		p, err := x.store.OpenPayload(ctx, ex.ID, env.Name)
		if err != nil {
			return nil, err
		}
		d.Documents = append(d.Documents, DeliveredDocument{Document: ex.Manifest.Documents[i], Envelope: p, EnvelopeSHA256: env.SHA256})
		v, _ := hex.DecodeString(env.SHA256)
		digests = append(digests, evidence.Digest{Name: "envelope/" + strconv.Itoa(i), Algorithm: "sha256", Value: v})
	}
	now := x.now().UTC()
	rec := &evidence.Record{
		ID:         evidence.NewID(now),
		Type:       evidence.Retrieved,
		Time:       now,
		Subject:    ex.ID,
		Actors:     []evidence.Actor{recipient.Actor("recipient")},
		Digests:    digests,
		Previous:   previous(ex, evidence.Delivered),
		Attributes: []evidence.Attribute{{Key: "channel", Value: ChannelPull}, {Key: "recipient", Value: ex.Recipient}},
	}
	to := State("")
	if ex.State == StateDelivered {
		to = StateRetrieved
	}
	if err := x.record(ctx, ex, rec, Event{By: recipient.ID()}, []State{ex.State}, to, nil); err != nil {
		return nil, err
	}
	d.EvidenceID = rec.ID
	ok = true
	return d, nil
}

// Seal returns an exchange's seal (the platform's CAdES signature with
// the sealed manifest attached) to its sender or, once delivered, its
// recipient: what a recipient signs its acknowledgment over, and what a
// sender keeps of what was delivered. Before the exchange is sealed it is
// ErrNotSealedYet.
func (x *Exchanges) Seal(ctx context.Context, p *Principal, id string) ([]byte, error) {
	ex, err := x.visible(ctx, p, id, true, true)
	if err != nil {
		return nil, err
	}
	if ex.State == StateShredded {
		return nil, ErrShredded
	}
	if ex.Seal == nil {
		return nil, ErrNotSealedYet
	}
	seal, _, _, err := x.readSeal(ctx, ex)
	return seal, err
}

// readSeal reads an exchange's seal, the sealed manifest's JSON it holds,
// and that manifest.
func (x *Exchanges) readSeal(ctx context.Context, ex *Exchange) (seal, content []byte, sm SealedManifest, err error) {
	if ex.Seal == nil {
		return nil, nil, sm, fmt.Errorf("middleoffice: exchange %s is delivered without a seal", ex.ID)
	}
	p, err := x.store.OpenPayload(ctx, ex.ID, ex.Seal.Name)
	if err != nil {
		return nil, nil, sm, err
	}
	defer p.Close()
	seal, err = io.ReadAll(io.LimitReader(p, maxSeal))
	if err != nil {
		return nil, nil, sm, err
	}
	if sum := sha256.Sum256(seal); hex.EncodeToString(sum[:]) != ex.Seal.SHA256 {
		return nil, nil, sm, fmt.Errorf("middleoffice: the seal of exchange %s is not the one its evidence names", ex.ID)
	}
	sd, err := cms.ParseSignedData(seal)
	if err != nil || !sd.Attached {
		return nil, nil, sm, fmt.Errorf("middleoffice: the seal of exchange %s: not an attached signature: %v", ex.ID, err)
	}
	if err := json.Unmarshal(sd.Content, &sm); err != nil {
		return nil, nil, sm, fmt.Errorf("middleoffice: the seal of exchange %s: %w", ex.ID, err)
	}
	return seal, sd.Content, sm, nil
}

// previous names the exchange's last event of type t as what a record
// answers.
func previous(ex *Exchange, t evidence.EventType) []string {
	if e, ok := ex.event(t); ok {
		return []string{e.EvidenceID}
	}
	return nil
}

// record runs the step of rec on ex: from the states from, to to ("":
// unchanged), the event ev completed with rec's type, id and time.
func (x *Exchanges) record(ctx context.Context, ex *Exchange, rec *evidence.Record, ev Event, from []State, to State, ack *PayloadInfo) error {
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	ev.Type, ev.EvidenceID, ev.Time = rec.Type, rec.ID, rec.Time
	return x.runStep(ctx, &Step{Exchange: ex.ID, Prepared: rec.Time, Record: data, Event: ev, From: from, To: to, Acknowledgment: ack})
}

// Acknowledgment is a recipient's answer to an exchange.
type Acknowledgment struct {
	// Signed is the recipient's CMS SignedData (DER) over the sealed
	// manifest — the content of the seal, byte for byte — attached or
	// detached. Required unless Reject is given.
	Signed []byte
	// Reject, when not empty, refuses the dossier for this reason (at
	// most 1024 bytes of text); Signed may sign the refusal too.
	Reject string
}

// Ack records the recipient's acknowledgment (delivery.acknowledged,
// naming the SHA-256 of its signed acknowledgment, outcome "acknowledged")
// or its refusal (the same record type with outcome "refused" and the
// reason) of a delivered exchange, which leaves the inbox. An
// acknowledgment it refuses is an *AckError. An exchange already answered
// is ErrAlreadyAcknowledged, unless the same signed acknowledgment comes
// again (a retry): then its event is returned.
func (x *Exchanges) Ack(ctx context.Context, recipient *Principal, id string, a Acknowledgment) (*Event, error) {
	ex, err := x.visible(ctx, recipient, id, false, true)
	if err != nil {
		return nil, err
	}
	switch {
	case len(a.Signed) == 0 && a.Reject == "":
		return nil, &AckError{Reason: "a signed acknowledgment, or a reason to refuse the exchange"}
	case len(a.Signed) > maxAcknowledgment:
		return nil, &AckError{Reason: fmt.Sprintf("the signed acknowledgment is larger than %d bytes", maxAcknowledgment)}
	case !validText(a.Reject, maxReason, true):
		return nil, &AckError{Reason: fmt.Sprintf("the reason: at most %d bytes of text without control characters", maxReason)}
	}
	switch ex.State {
	case StateExpired:
		return nil, ErrExpired
	case StateShredded:
		return nil, ErrShredded
	}
	ackSum := sha256.Sum256(a.Signed)
	if ex.State == StateAcknowledged || ex.State == StateRefused {
		if e, ok := ex.event(evidence.Acknowledged); ok && ex.Acknowledgment != nil && len(a.Signed) > 0 &&
			ex.Acknowledgment.SHA256 == hex.EncodeToString(ackSum[:]) && e.Detail == a.Reject {
			return &e, nil
		}
		return nil, ErrAlreadyAcknowledged
	}
	_, content, _, err := x.readSeal(ctx, ex)
	if err != nil {
		return nil, err
	}
	if len(a.Signed) > 0 {
		if _, err := x.checkAck(ctx, recipient, a.Signed, content); err != nil {
			return nil, err
		}
	}
	return x.acknowledge(ctx, ex, recipient.Actor("recipient"), recipient.ID(), a, content, ChannelPull)
}

// acknowledge records the recipient's answer a, checked already, to ex
// (delivered or retrieved), by actor (the partner by): the signed
// acknowledgment stored, delivery.acknowledged recorded, the exchange out
// of the inbox, its expiry dropped, its sender's notification enqueued.
// content is the sealed manifest; channel the one the answer came by.
func (x *Exchanges) acknowledge(ctx context.Context, ex *Exchange, actor evidence.Actor, by string, a Acknowledgment, content []byte, channel string) (*Event, error) {
	ackSum := sha256.Sum256(a.Signed)
	var info *PayloadInfo
	now := x.now().UTC()
	rec := &evidence.Record{
		ID:       evidence.NewID(now),
		Type:     evidence.Acknowledged,
		Time:     now,
		Subject:  ex.ID,
		Actors:   []evidence.Actor{actor},
		Previous: previous(ex, evidence.Delivered),
	}
	if len(a.Signed) > 0 {
		name := "acknowledgment.p7m"
		w, err := x.store.CreatePayload(ctx, ex.ID, name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(a.Signed); err != nil {
			w.Abort()
			return nil, err
		}
		if err := w.Commit(); err != nil {
			return nil, err
		}
		info = &PayloadInfo{Name: name, Size: int64(len(a.Signed)), SHA256: hex.EncodeToString(ackSum[:])}
		rec.Digests = append(rec.Digests, evidence.Digest{Name: "acknowledgment", Algorithm: "sha256", Value: ackSum[:]})
	}
	contentSum := sha256.Sum256(content)
	rec.Digests = append(rec.Digests, evidence.Digest{Name: "sealed-manifest", Algorithm: "sha256", Value: contentSum[:]})
	outcome, to := "acknowledged", StateAcknowledged
	if a.Reject != "" {
		outcome, to = "refused", StateRefused
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "reason", Value: a.Reject})
	}
	rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "outcome", Value: outcome}, evidence.Attribute{Key: "recipient", Value: ex.Recipient})
	if channel != ChannelPull {
		rec.Attributes = append(rec.Attributes, evidence.Attribute{Key: "channel", Value: channel})
	}
	rec.SortAttributes()
	data, err := rec.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ev := Event{Type: rec.Type, EvidenceID: rec.ID, Time: rec.Time, By: by, Detail: a.Reject}
	err = x.runStep(ctx, &Step{
		Exchange: ex.ID, Prepared: now, Record: data, Event: ev,
		From: []State{StateDelivered, StateRetrieved}, To: to, Acknowledgment: info,
		Enqueue: x.notifyJobs(ex, rec.ID, now),
		Finish:  expireJobID(ex.ID),
	})
	if errors.Is(err, ErrStateChanged) {
		if cur, cerr := x.store.Exchange(ctx, ex.ID); cerr == nil && cur.State == StateExpired {
			return nil, ErrExpired
		}
		return nil, ErrAlreadyAcknowledged
	}
	if err != nil {
		return nil, err
	}
	x.log.InfoContext(ctx, "exchange: "+outcome, "exchange_id", ex.ID, "partner", ex.Recipient, "channel", channel, "evidence_id", rec.ID)
	return &ev, nil
}

// checkAck checks a signed acknowledgment: a CMS SignedData whose content
// is the sealed manifest; with an AckVerifier, its signature valid and
// by a certificate of the recipient, which it returns as the actor
// "recipient" (nil without an AckVerifier).
func (x *Exchanges) checkAck(ctx context.Context, recipient *Principal, signed, content []byte) (*evidence.Actor, error) {
	sd, err := cms.ParseSignedData(signed)
	if err != nil {
		sd, err = cms.ParseSignedDataBER(signed)
	}
	if err != nil {
		return nil, &AckError{Reason: "the signed acknowledgment is not a CMS SignedData"}
	}
	if sd.Attached && !bytes.Equal(sd.Content, content) {
		return nil, &AckError{Reason: "the signed acknowledgment does not sign the sealed manifest (the content of the seal)"}
	}
	if len(sd.SignerInfos) == 0 {
		return nil, &AckError{Reason: "the signed acknowledgment has no signer"}
	}
	if x.verifier == nil {
		return nil, nil
	}
	rep, err := x.verifier.Verify(ctx, signed, signing.VerifyOptions{Data: content})
	if err != nil {
		return nil, &AckError{Reason: "the signed acknowledgment cannot be verified: " + err.Error()}
	}
	if !rep.Passed() {
		return nil, &AckError{Reason: fmt.Sprintf("the signed acknowledgment does not verify: %s %s %s", rep.Indication, rep.SubIndication, rep.Detail)}
	}
	var actor *evidence.Actor
	for _, s := range rep.Signatures {
		if s.Signer == nil {
			return nil, &AckError{Reason: "the signed acknowledgment names no signer certificate"}
		}
		if !signedByPartner(recipient, s.Signer) {
			return nil, &AckError{Reason: fmt.Sprintf("the signed acknowledgment is signed by %q, not by the recipient", s.Signer.Subject)}
		}
		if actor == nil {
			actor = &evidence.Actor{Role: "recipient", Subject: s.Signer.Subject}
			if fp, err := hex.DecodeString(s.Signer.FingerprintSHA256); err == nil && len(fp) == len(actor.Fingerprint) {
				copy(actor.Fingerprint[:], fp)
			}
		}
	}
	return actor, nil
}

// signedByPartner reports whether a signer certificate is the principal's
// own, or one its partner's certificate rules name (by fingerprint, or by
// subject and issuer): the same rules that authenticate it.
func signedByPartner(p *Principal, c *signing.Certificate) bool {
	fp, _ := hex.DecodeString(c.FingerprintSHA256)
	if c.Subject == p.Subject && c.Issuer == p.Issuer || slices.ContainsFunc(p.Fingerprints(), func(f [32]byte) bool { return bytes.Equal(f[:], fp) }) {
		return true
	}
	for _, r := range p.Partner.Certificates {
		if r.Fingerprint == "" && r.Subject == c.Subject && (r.Issuer == "" || r.Issuer == c.Issuer) {
			return true
		}
	}
	return false
}

// Status returns an exchange and its events (each with its evidence id)
// to its sender or, once delivered, its recipient; to anyone else
// ErrExchangeNotFound.
func (x *Exchanges) Status(ctx context.Context, p *Principal, id string) (*Exchange, error) {
	ex, err := x.visible(ctx, p, id, true, true)
	if err != nil {
		return nil, err
	}
	if ex.Sender == p.ID() {
		return ex.clone(), nil
	}
	return forRecipient(ex), nil
}
