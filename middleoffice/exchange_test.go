package middleoffice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/evidence"
	"pec/internal/cms"
	"pec/internal/interop"
	"pec/middleoffice"
	"pec/signing"
)

func recAttr(r *evidence.Record, key string) string {
	for _, a := range r.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

func digest(r *evidence.Record, name string) string {
	for _, d := range r.Digests {
		if d.Name == name {
			return hex.EncodeToString(d.Value)
		}
	}
	return ""
}

func eventTypes(ex *middleoffice.Exchange) []evidence.EventType {
	var out []evidence.EventType
	for _, e := range ex.Events {
		out = append(out, e.Type)
	}
	return out
}

// TestExchangeEndToEnd: partner a sends b two documents; b lists its
// inbox, fetches, decrypts (with its key through internal/cms, and with
// `openssl cms -decrypt`), checks the seal with `openssl cms -verify`,
// and acknowledges with a signature openssl makes; a follows every step,
// each with evidence that is in the log; c, a party to nothing, sees
// nothing.
func TestExchangeEndToEnd(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	ctx := t.Context()
	a, b, c := e.partners["a"], e.partners["b"], e.partners["c"]
	docs := []document{
		newDocument("demande.pdf", bytes.Repeat([]byte("%PDF-1.7 demande "), 20000)),
		newDocument("pièce jointe.xml", []byte("<piece>justificatif</piece>")),
	}
	m := manifest("b", docs...)
	m.IdempotencyKey = "a-2026-0001"

	sub, err := e.x.Submit(ctx, a.principal, m, sources(docs...))
	if err != nil {
		t.Fatal(err)
	}
	if sub.Replayed || sub.Exchange == "" || sub.EvidenceID == "" {
		t.Fatalf("Submit = %+v", sub)
	}

	// The acknowledgment of receipt: openssl verifies it and gives back
	// the submission.accepted record, which is in the log.
	receipt := e.writeFile("receipt.p7m", sub.Receipt)
	recordFile := filepath.Join(e.dir, "receipt-record.bin")
	interop.OpenSSL(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", receipt, "-CAfile", e.rootPEM, "-out", recordFile)
	data, err := os.ReadFile(recordFile)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := evidence.UnmarshalRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != sub.EvidenceID || rec.Type != evidence.SubmissionAccepted || rec.Subject != sub.Exchange {
		t.Errorf("receipt record: id %s type %s subject %s", rec.ID, rec.Type, rec.Subject)
	}
	if logged := e.record(sub.EvidenceID); !bytes.Equal(mustMarshal(t, logged), data) {
		t.Error("the receipt's record is not the log's")
	}
	for i, d := range docs {
		if got := digest(rec, "document/"+string(rune('0'+i))); got != d.d.SHA256 {
			t.Errorf("document/%d digest %s, want %s", i, got, d.d.SHA256)
		}
	}
	if digest(rec, "manifest") != hex.EncodeToString(middleoffice.ManifestDigest(m)) || digest(rec, "envelope/1") == "" {
		t.Error("the record does not name the manifest's and the envelopes' digests")
	}
	if rec.Actors[0].Role != "sender" || rec.Actors[0].Fingerprint != a.principal.Fingerprint || rec.Actors[1].Role != "recipient" || rec.Actors[1].Subject != b.encCert.Subject.String() {
		t.Errorf("actors %+v", rec.Actors)
	}

	// No plaintext at rest: the documents are encrypted as they come.
	filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(path); bytes.Contains(data, []byte("%PDF-1.7 demande")) || bytes.Contains(data, []byte("justificatif")) {
				t.Errorf("%s holds a document's plaintext", path)
			}
		}
		return nil
	})

	// Before processing: accepted, not in b's inbox.
	st, err := e.x.Status(ctx, a.principal, sub.Exchange)
	if err != nil || st.State != middleoffice.StateAccepted {
		t.Fatalf("Status before processing: %+v, %v", st, err)
	}
	// To b it is on its way (try again); to c it does not exist.
	if _, err := e.x.Fetch(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrNotSealedYet) {
		t.Errorf("b fetches before delivery: %v", err)
	}
	if _, err := e.x.Status(ctx, b.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrNotSealedYet) {
		t.Errorf("b reads the status before delivery: %v", err)
	}
	if _, err := e.x.Status(ctx, c.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("c reads the status: %v", err)
	}

	// A retry with the same key: the same exchange and receipt; the
	// documents are not read again.
	again, err := e.x.Submit(ctx, a.principal, m, middleoffice.DocumentSourceFunc(func(context.Context, int, middleoffice.Document) (io.Reader, error) {
		t.Error("a replayed submission read its documents")
		return nil, errors.New("not again")
	}))
	if err != nil || !again.Replayed || again.Exchange != sub.Exchange || !bytes.Equal(again.Receipt, sub.Receipt) || again.EvidenceID != sub.EvidenceID {
		t.Fatalf("retry: %+v, %v", again, err)
	}

	// Processing: sealed and delivered, once.
	if did, err := e.x.Work(ctx); !did || err != nil {
		t.Fatalf("Work = %v, %v", did, err)
	}
	if did, err := e.x.Work(ctx); did || err != nil {
		t.Fatalf("second Work = %v, %v; want nothing to do", did, err)
	}

	inbox, err := e.x.Inbox(ctx, b.principal, "", 0)
	if err != nil || len(inbox) != 1 || inbox[0].ID != sub.Exchange || inbox[0].State != middleoffice.StateDelivered {
		t.Fatalf("b's inbox: %+v, %v", inbox, err)
	}
	if inbox[0].Manifest.IdempotencyKey != "" || inbox[0].Receipt != nil {
		t.Error("the recipient sees the sender's idempotency key or receipt")
	}
	for _, p := range []*testPartner{a, c} {
		if list, err := e.x.Inbox(ctx, p.principal, "", 0); err != nil || len(list) != 0 {
			t.Errorf("%s's inbox: %d, %v", p.id, len(list), err)
		}
	}

	// Nobody but b fetches; nobody but a and b reads the status.
	for _, p := range []*testPartner{a, c} {
		if _, err := e.x.Fetch(ctx, p.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
			t.Errorf("%s fetches: %v", p.id, err)
		}
		if _, err := e.x.Ack(ctx, p.principal, sub.Exchange, middleoffice.Acknowledgment{Reject: "no"}); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
			t.Errorf("%s acknowledges: %v", p.id, err)
		}
	}
	if _, err := e.x.Status(ctx, c.principal, sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("c reads the status: %v", err)
	}
	unknown := e.newPartner("stranger")
	if _, err := e.x.Status(ctx, e.policy.Directory().Resolve(unknown.cert), sub.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("a certificate no partner claims reads the status: %v", err)
	}

	// b fetches: the seal verifies with openssl and holds the manifest;
	// each envelope decrypts with b's key, through internal/cms and openssl.
	d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sealFile := e.writeFile("seal.p7m", d.Seal)
	sealed := interop.OpenSSL(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", sealFile, "-CAfile", e.rootPEM)
	var sm middleoffice.SealedManifest
	if err := json.Unmarshal(sealed, &sm); err != nil {
		t.Fatal(err)
	}
	if sm.Exchange != sub.Exchange || sm.Sender != "a" || sm.SubmissionEvidence != sub.EvidenceID || len(sm.Manifest.Documents) != 2 || sm.Manifest.IdempotencyKey != "" || sm.Manifest.Subject != m.Subject {
		t.Errorf("sealed manifest: %+v", sm)
	}
	if d.Manifest.Exchange != sm.Exchange {
		t.Error("Delivery.Manifest is not the seal's")
	}
	for i, doc := range d.Documents {
		var plain bytes.Buffer
		env, err := cms.DecryptTo(&plain, doc.Envelope, doc.Envelope.Size(), cms.RecipientKey{Cert: b.encCert, Key: b.encKey}, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if !env.Authenticated || env.Algorithm != "AES-256-GCM" || !bytes.Equal(plain.Bytes(), docs[i].content) {
			t.Errorf("document %d: %s, authenticated %v, %d bytes", i, env.Algorithm, env.Authenticated, plain.Len())
		}
		if sum := sha256.Sum256(plain.Bytes()); hex.EncodeToString(sum[:]) != sm.Manifest.Documents[i].SHA256 || doc.Name != docs[i].d.Name {
			t.Errorf("document %d does not match the sealed manifest", i)
		}
		der, err := io.ReadAll(io.NewSectionReader(doc.Envelope, 0, doc.Envelope.Size()))
		if err != nil {
			t.Fatal(err)
		}
		in := e.writeFile("envelope.der", der)
		if got := interop.OpenSSL(t, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-recip", b.encFile, "-inkey", b.encKeyPEM); !bytes.Equal(got, docs[i].content) {
			t.Errorf("openssl decrypted document %d to %d bytes, want %d", i, len(got), len(docs[i].content))
		}
	}
	// a's envelopes open with a's key for nobody else.
	var sink bytes.Buffer
	if _, err := cms.DecryptTo(&sink, d.Documents[0].Envelope, d.Documents[0].Envelope.Size(), cms.RecipientKey{Cert: c.encCert, Key: c.encKey}, nil); !errors.Is(err, cms.ErrNoRecipient) {
		t.Errorf("c's key opens b's envelope: %v", err)
	}

	// b acknowledges with its own CMS signature over the sealed manifest
	// (openssl signs it); a wrong one is refused first.
	sealedFile := e.writeFile("sealed.json", sealed)
	signedAck := interop.OpenSSL(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-in", sealedFile, "-signer", b.certFile, "-inkey", b.keyFile)
	otherFile := e.writeFile("other.json", []byte(`{"not":"the manifest"}`))
	for name, bad := range map[string][]byte{
		"signed by c":      interop.OpenSSL(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-in", sealedFile, "-signer", c.certFile, "-inkey", c.keyFile),
		"another content":  interop.OpenSSL(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-in", otherFile, "-signer", b.certFile, "-inkey", b.keyFile),
		"not a signature":  []byte("merci"),
		"nothing, no text": nil,
	} {
		if _, err := e.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Signed: bad}); err == nil {
			t.Errorf("%s: acknowledgment taken", name)
		} else if _, ok := errors.AsType[*middleoffice.AckError](err); !ok {
			t.Errorf("%s: %v, want an *AckError", name, err)
		}
	}
	ev, err := e.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Signed: signedAck})
	if err != nil {
		t.Fatal(err)
	}
	ackRec := e.record(ev.EvidenceID)
	ackSum := sha256.Sum256(signedAck)
	if ackRec.Type != evidence.Acknowledged || digest(ackRec, "acknowledgment") != hex.EncodeToString(ackSum[:]) || recAttr(ackRec, "outcome") != "acknowledged" {
		t.Errorf("acknowledgment record: %+v", ackRec)
	}
	if again, err := e.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Signed: signedAck}); err != nil || again.EvidenceID != ev.EvidenceID {
		t.Errorf("the same acknowledgment again: %+v, %v; want the first event", again, err)
	}
	if _, err := e.x.Ack(ctx, b.principal, sub.Exchange, middleoffice.Acknowledgment{Reject: "changed my mind"}); !errors.Is(err, middleoffice.ErrAlreadyAcknowledged) {
		t.Errorf("refusing after acknowledging: %v", err)
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 0 {
		t.Errorf("acknowledged, still in the inbox: %d", len(list))
	}

	// a's status: every step, each with evidence in the log about this
	// exchange; the log holds nothing else about it.
	st, err = e.x.Status(ctx, a.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	want := []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered, evidence.Retrieved, evidence.Acknowledged}
	if got := eventTypes(st); !slices.Equal(got, want) || st.State != middleoffice.StateAcknowledged {
		t.Fatalf("a's status: %v, %s; want %v, acknowledged", got, st.State, want)
	}
	var ids []string
	for _, ev := range st.Events {
		r := e.record(ev.EvidenceID)
		if r.Type != ev.Type || r.Subject != sub.Exchange || !r.Time.Equal(ev.Time) {
			t.Errorf("event %s: the log's record %s is %s about %s", ev.Type, ev.EvidenceID, r.Type, r.Subject)
		}
		ids = append(ids, ev.EvidenceID)
	}
	var logged []string
	for _, r := range e.records(sub.Exchange) {
		logged = append(logged, r.ID)
	}
	if !slices.Equal(ids, logged) {
		t.Errorf("the log's records about the exchange: %v, want the events' %v", logged, ids)
	}
	if delivered := e.record(st.Events[1].EvidenceID); digest(delivered, "seal") != st.Seal.SHA256 || !slices.Equal(delivered.Previous, []string{sub.EvidenceID}) {
		t.Errorf("delivery.delivered: seal %s (want %s), previous %v", digest(delivered, "seal"), st.Seal.SHA256, delivered.Previous)
	}
	if bs, err := e.x.Status(ctx, b.principal, sub.Exchange); err != nil || len(bs.Events) != 4 || bs.Receipt != nil {
		t.Errorf("b's status: %+v, %v", bs, err)
	}
}

func mustMarshal(t testing.TB, r *evidence.Record) []byte {
	t.Helper()
	data, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSubmissionRefused: each refusal is a *RejectedError with its
// reason, recorded as submission.rejected, leaving no exchange and no
// payload behind.
func TestSubmissionRefused(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{MaxDocumentSize: 1 << 20})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7 the document"))
	stranger := e.newPartner("stranger")
	strangerPrincipal := e.policy.Directory().Resolve(stranger.cert)
	tampered := doc
	tampered.content = []byte("%PDF-1.7 the d0cument")
	typed := manifest("b", doc)
	typed.Procedure = "typed"

	// An exchange whose idempotency key the conflict case reuses.
	first := manifest("b", doc)
	first.IdempotencyKey = "k-1"
	if _, err := e.x.Submit(ctx, e.partners["a"].principal, first, sources(doc)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		from   *middleoffice.Principal
		m      func() middleoffice.Manifest
		docs   middleoffice.DocumentSource
		reason middleoffice.Reason
	}{
		{"no route for c", e.partners["c"].principal, func() middleoffice.Manifest { return manifest("b", doc) }, sources(doc), middleoffice.ReasonForbidden},
		{"not to itself", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("a", doc) }, sources(doc), middleoffice.ReasonForbidden},
		{"unknown recipient", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("nobody", doc) }, sources(doc), middleoffice.ReasonForbidden},
		{"certificate of no partner", strangerPrincipal, func() middleoffice.Manifest { return manifest("b", doc) }, sources(doc), middleoffice.ReasonForbidden},
		{"document type not routed", e.partners["a"].principal, func() middleoffice.Manifest { return typed }, sources(doc), middleoffice.ReasonForbidden},
		{"digest mismatch", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("b", doc) }, sources(tampered), middleoffice.ReasonDigestMismatch},
		{"shorter than declared", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("b", doc) }, sources(newDocument("a.pdf", doc.content[:5])), middleoffice.ReasonSizeMismatch},
		{"longer than declared", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("b", doc) }, sources(newDocument("a.pdf", append(bytes.Clone(doc.content), 'x'))), middleoffice.ReasonSizeMismatch},
		{"no documents", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("b") }, sources(), middleoffice.ReasonInvalidManifest},
		{"bad digest syntax", e.partners["a"].principal, func() middleoffice.Manifest {
			m := manifest("b", doc)
			m.Documents[0].SHA256 = "zz"
			return m
		}, sources(doc), middleoffice.ReasonInvalidManifest},
		{"over the size limit", e.partners["a"].principal, func() middleoffice.Manifest {
			m := manifest("b", doc)
			m.Documents[0].Size = 2 << 20
			return m
		}, sources(doc), middleoffice.ReasonTooLarge},
		{"recipient without encryption certificate", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("d", doc) }, sources(doc), middleoffice.ReasonUnreachable},
		{"idempotency key of another manifest", e.partners["a"].principal, func() middleoffice.Manifest {
			m := manifest("b", doc)
			m.IdempotencyKey, m.Reference = "k-1", "another reference"
			return m
		}, sources(doc), middleoffice.ReasonIdempotencyConflict},
		{"the sender's reader fails", e.partners["a"].principal, func() middleoffice.Manifest { return manifest("b", doc) },
			middleoffice.DocumentSourceFunc(func(context.Context, int, middleoffice.Document) (io.Reader, error) {
				return io.MultiReader(strings.NewReader("%PDF"), errReader{}), nil
			}), middleoffice.ReasonIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m()
			sub, err := e.x.Submit(ctx, tc.from, m, tc.docs)
			re, ok := errors.AsType[*middleoffice.RejectedError](err)
			if !ok {
				t.Fatalf("Submit = %+v, %v; want a *RejectedError", sub, err)
			}
			if re.Reason != tc.reason || re.EvidenceID == "" || re.Exchange == "" || re.Detail == "" {
				t.Fatalf("refusal %+v, want reason %s with evidence", re, tc.reason)
			}
			r := e.record(re.EvidenceID)
			if r.Type != evidence.SubmissionRejected || r.Subject != re.Exchange || recAttr(r, "reason") != string(tc.reason) || recAttr(r, "detail") != re.Detail {
				t.Errorf("record %+v", r)
			}
			if r.Actors[0].Fingerprint != tc.from.Fingerprint {
				t.Error("the record does not name the sender")
			}
			if tc.reason == middleoffice.ReasonDigestMismatch {
				sum := sha256.Sum256(tampered.content)
				if digest(r, "document/0") != hex.EncodeToString(sum[:]) {
					t.Error("the refusal does not name the digest received")
				}
			}
			if _, err := e.store.Exchange(ctx, re.Exchange); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
				t.Errorf("a refused exchange is stored: %v", err)
			}
			if _, err := os.Stat(filepath.Join(e.dir, "payloads", re.Exchange)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused exchange left payloads: %v", err)
			}
		})
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 1 {
		t.Errorf("%d jobs, want the first exchange's only", len(jobs))
	}
	// The recipient's principal must be a directory's partner to send.
	if _, err := e.x.Submit(ctx, nil, manifest("b", doc), sources(doc)); err == nil {
		t.Error("a submission without a sender")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestRefusedByRecipient: b refuses a dossier with a reason; a sees it.
func TestRefusedByRecipient(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7"))
	sub, err := e.x.Submit(ctx, e.partners["a"].principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.x.Work(ctx); err != nil {
		t.Fatal(err)
	}
	b := e.partners["b"].principal
	if _, err := e.x.Ack(ctx, b, sub.Exchange, middleoffice.Acknowledgment{Reject: "bad\x00reason"}); err == nil {
		t.Error("a reason with a control character taken")
	}
	ev, err := e.x.Ack(ctx, b, sub.Exchange, middleoffice.Acknowledgment{Reject: "pièce manquante : justificatif de domicile"})
	if err != nil {
		t.Fatal(err)
	}
	r := e.record(ev.EvidenceID)
	if recAttr(r, "outcome") != "refused" || recAttr(r, "reason") != "pièce manquante : justificatif de domicile" {
		t.Errorf("refusal record: %+v", r.Attributes)
	}
	st, err := e.x.Status(ctx, e.partners["a"].principal, sub.Exchange)
	if err != nil || st.State != middleoffice.StateRefused || st.Events[len(st.Events)-1].Detail == "" {
		t.Errorf("a's status: %+v, %v", st, err)
	}
	// Refused without being fetched: only submission, delivery, refusal.
	if got := eventTypes(st); !slices.Equal(got, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered, evidence.Acknowledged}) {
		t.Errorf("events %v", got)
	}
}

// TestRestartFinishesOnce: a crash at each point of a step — before the
// step is prepared, after it is prepared, after its record is appended
// with the answer lost, after the record is durable and before the commit
// — then a restart (every part reopened) and Run: the exchange is
// delivered exactly once, with exactly one record per step in the log.
func TestRestartFinishesOnce(t *testing.T) {
	isDelivered := func(st *middleoffice.Step) bool { return st.Event.Type == evidence.Delivered }
	isAccepted := func(st *middleoffice.Step) bool { return st.Event.Type == evidence.SubmissionAccepted }
	for _, tc := range []struct {
		name string
		wrap func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender)
		// submitFails: the crash is in the submission's step.
		submitFails bool
	}{
		{"delivery: before the step is prepared", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return &faultStore{ExchangeStore: s, failPrepare: isDelivered}, nil
		}, false},
		{"delivery: prepared, record never appended", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return nil, &faultAppender{Appender: ev, fail: func(r *evidence.Record) bool { return r.Type == evidence.Delivered }}
		}, false},
		{"delivery: record appended, answer lost", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return nil, &faultAppender{Appender: ev, append: true, fail: func(r *evidence.Record) bool { return r.Type == evidence.Delivered }}
		}, false},
		{"delivery: record durable, commit lost", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return &faultStore{ExchangeStore: s, failCommit: isDelivered}, nil
		}, false},
		{"submission: record durable, commit lost", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return &faultStore{ExchangeStore: s, failCommit: isAccepted}, nil
		}, true},
		{"submission: record appended, answer lost", func(s middleoffice.ExchangeStore, ev evidence.Appender) (*faultStore, *faultAppender) {
			return nil, &faultAppender{Appender: ev, append: true, fail: func(r *evidence.Record) bool { return r.Type == evidence.SubmissionAccepted }}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newExchangeEnv(t, middleoffice.ExchangeConfig{PollInterval: 20 * time.Millisecond})
			ctx := t.Context()
			var fired func() bool
			e.wrap = func(s middleoffice.ExchangeStore, ev evidence.Appender) (middleoffice.ExchangeStore, evidence.Appender) {
				fs, fa := tc.wrap(s, ev)
				if fs != nil {
					fired = fs.fired.Load
					s = fs
				}
				if fa != nil {
					fired = fa.fired.Load
					ev = fa
				}
				return s, ev
			}
			e.restart() // with the fault
			a, b := e.partners["a"], e.partners["b"]
			doc := newDocument("a.pdf", []byte("%PDF-1.7 restart"))
			m := manifest("b", doc)
			m.IdempotencyKey = "restart-1"
			sub, err := e.x.Submit(ctx, a.principal, m, sources(doc))
			if tc.submitFails {
				if err == nil || !fired() {
					t.Fatalf("Submit = %+v, %v; want the injected crash", sub, err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if did, err := e.x.Work(ctx); !did || err == nil || !fired() {
					t.Fatalf("Work = %v, %v; want the injected crash", did, err)
				}
			}

			e.restart() // without
			if tc.submitFails {
				// The sender retries: the same exchange, accepted once.
				sub, err = e.x.Submit(ctx, a.principal, m, sources(doc))
				if err != nil || !sub.Replayed {
					t.Fatalf("retry after the restart: %+v, %v", sub, err)
				}
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error)
			go func() { done <- e.x.Run(runCtx) }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, err := e.x.Status(ctx, a.principal, sub.Exchange)
				if err == nil && st.State == middleoffice.StateDelivered {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not delivered after the restart: %+v, %v", st, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			st, _ := e.x.Status(ctx, a.principal, sub.Exchange)
			if got := eventTypes(st); !slices.Equal(got, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered}) {
				t.Errorf("events %v", got)
			}
			var types []evidence.EventType
			for _, r := range e.records(sub.Exchange) {
				types = append(types, r.Type)
			}
			if !slices.Equal(types, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered}) {
				t.Errorf("the log's records about the exchange: %v, want one accepted, one delivered", types)
			}
			if r := e.record(st.Events[1].EvidenceID); digest(r, "seal") != st.Seal.SHA256 {
				t.Error("the delivered record names another seal than the stored one")
			}
			// Left: its expiry only.
			if jobs, _ := e.store.Jobs(ctx); len(jobs) != 1 || jobs[0].Kind != middleoffice.JobExpire || jobs[0].Exchange != sub.Exchange {
				t.Errorf("jobs left: %+v, want the exchange's expiry", jobs)
			}
			if steps, _ := e.store.PreparedBefore(ctx, time.Now().Add(time.Hour), 10); len(steps) != 0 {
				t.Errorf("steps left prepared: %d", len(steps))
			}
			if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 1 {
				t.Errorf("b's inbox holds %d exchanges, want 1", len(list))
			}
			d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			plain, _, err := decryptAll(d.Documents[0].Envelope, b)
			if err != nil || !bytes.Equal(plain, doc.content) {
				t.Errorf("decrypted after the restart: %q, %v", plain, err)
			}
		})
	}
}

func decryptAll(p middleoffice.Payload, to *testPartner) ([]byte, *cms.Envelope, error) {
	var out bytes.Buffer
	env, err := cms.DecryptTo(&out, p, p.Size(), cms.RecipientKey{Cert: to.encCert, Key: to.encKey}, nil)
	return out.Bytes(), env, err
}

// patternReader gives n bytes of a pattern without holding them.
type patternReader struct{ n, off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), r.n-r.off))
	for i := range k {
		p[i] = byte((r.off + int64(i)) * 7)
	}
	r.off += int64(k)
	return k, nil
}

// TestSubmitStreams: a large document goes through in constant memory —
// hashed and encrypted as it is read, never held whole — and decrypts to
// what was sent.
func TestSubmitStreams(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	ctx := t.Context()
	const size = 64 << 20
	h := sha256.New()
	io.Copy(h, &patternReader{n: size})
	m := manifest("b", document{d: middleoffice.Document{Name: "big.bin", MediaType: "application/octet-stream", SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sub, err := e.x.Submit(ctx, e.partners["a"].principal, m, middleoffice.Readers(&patternReader{n: size}))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d MiB submission allocated %d KiB", size>>20, allocated>>10)
	if allocated > 8<<20 {
		t.Errorf("a %d MiB submission allocated %d MiB: not streamed", size>>20, allocated>>20)
	}
	if _, err := e.x.Work(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := e.x.Fetch(ctx, e.partners["b"].principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := sha256.New()
	b := e.partners["b"]
	if _, err := cms.DecryptTo(got, d.Documents[0].Envelope, d.Documents[0].Envelope.Size(), cms.RecipientKey{Cert: b.encCert, Key: b.encKey}, nil); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(got.Sum(nil)) != m.Documents[0].SHA256 {
		t.Error("the large document decrypts to other bytes")
	}
}

// TestConcurrentSubmissions: submissions from several goroutines while
// Run's workers deliver: each exchange is delivered exactly once, with
// one record per step; retries with the same key race into one exchange.
func TestConcurrentSubmissions(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{Workers: 4, PollInterval: 20 * time.Millisecond})
	ctx := t.Context()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.x.Run(runCtx) }()
	a := e.partners["a"].principal
	const n = 24
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			doc := newDocument("d.pdf", []byte("%PDF dossier "+strconv.Itoa(i/2)))
			m := manifest("b", doc)
			m.IdempotencyKey = "key-" + strconv.Itoa(i/2) // two submissions per key
			m.Reference = "REF-" + strconv.Itoa(i/2)
			s, err := e.x.Submit(ctx, a, m, sources(doc))
			if err != nil {
				t.Errorf("submission %d: %v", i, err)
				return
			}
			ids[i] = s.Exchange
		})
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := e.x.Inbox(ctx, e.partners["b"].principal, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == n/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d exchanges in the inbox, want %d", len(list), n/2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	for i := 0; i < n; i += 2 {
		if ids[i] != ids[i+1] {
			t.Errorf("one key, two exchanges: %s and %s", ids[i], ids[i+1])
		}
		var types []evidence.EventType
		for _, r := range e.records(ids[i]) {
			types = append(types, r.Type)
		}
		if !slices.Equal(types, []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered}) {
			t.Errorf("exchange %s: records %v", ids[i], types)
		}
		if st, err := e.x.Status(ctx, a, ids[i]); err != nil || !slices.Equal(eventTypes(st), types) {
			t.Errorf("exchange %s: status %v, %v", ids[i], err, st)
		}
	}
}

// TestRefuseManifest: a manifest that does not decode is refused with
// evidence naming the bytes received.
func TestRefuseManifest(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	raw := []byte(`{"recipient": "b", "documents": "none"}`)
	_, derr := middleoffice.DecodeManifest(raw)
	err := e.x.RefuseManifest(t.Context(), e.partners["a"].principal, raw, derr)
	re, ok := errors.AsType[*middleoffice.RejectedError](err)
	if !ok || re.Reason != middleoffice.ReasonInvalidManifest {
		t.Fatalf("RefuseManifest = %v", err)
	}
	if _, ok := errors.AsType[*middleoffice.ManifestError](err); !ok {
		t.Error("the cause is not kept")
	}
	sum := sha256.Sum256(raw)
	if r := e.record(re.EvidenceID); r.Type != evidence.SubmissionRejected || digest(r, "manifest-received") != hex.EncodeToString(sum[:]) {
		t.Errorf("record %+v", r)
	}
}

// TestContentEncryptionCBC: a recipient whose directory entry asks for
// aes-256-cbc (its tools cannot read AuthEnvelopedData) gets EnvelopedData
// AES-256-CBC, which internal/cms and openssl both decrypt; the others
// keep AES-256-GCM.
func TestContentEncryptionCBC(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{}, func(_ *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		pcs[1].ContentEncryption = middleoffice.ContentAES256CBC // b
	})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	doc := newDocument("extrait.txt", bytes.Repeat([]byte("bulletin n° 3 "), 5000))
	sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	if did, err := e.x.Work(ctx); !did || err != nil {
		t.Fatalf("Work = %v, %v", did, err)
	}
	d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	env := d.Documents[0].Envelope
	var plain bytes.Buffer
	info, err := cms.DecryptTo(&plain, env, env.Size(), cms.RecipientKey{Cert: b.encCert, Key: b.encKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Authenticated || info.Algorithm != "AES-256-CBC" || !bytes.Equal(plain.Bytes(), doc.content) {
		t.Errorf("%s, authenticated %v, %d bytes", info.Algorithm, info.Authenticated, plain.Len())
	}
	der, err := io.ReadAll(io.NewSectionReader(env, 0, env.Size()))
	if err != nil {
		t.Fatal(err)
	}
	in := e.writeFile("cbc.der", der)
	if got := interop.OpenSSL(t, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-recip", b.encFile, "-inkey", b.encKeyPEM); !bytes.Equal(got, doc.content) {
		t.Errorf("openssl decrypted %d bytes, want %d", len(got), len(doc.content))
	}
	// A value the directory does not know is refused.
	bad := middleoffice.Partner{ID: "x", Name: "X", ContentEncryption: "des"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "content_encryption") {
		t.Errorf("content_encryption des: %v", err)
	}
}

// TestSenderSignatures: a document may carry its sender's detached CMS
// signatures (here one by signing, SHA-256, one by openssl, SHA-384):
// each is checked over the content received before the submission is
// accepted, travels in the sealed manifest, and its digest is in the
// submission.accepted record. A signature of other content, one by a
// certificate of another CA, a mangled one: refused, with evidence.
func TestSenderSignatures(t *testing.T) {
	interop.Need(t, "openssl", "openssl")
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	content := bytes.Repeat([]byte("arrêté préfectoral n° 2026-118 "), 3000)
	signer, err := signing.NewSigner(a.key, []*x509.Certificate{a.cert}, signing.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sig256, err := signer.Sign(ctx, content, true)
	if err != nil {
		t.Fatal(err)
	}
	docFile := e.writeFile("arrete.txt", content)
	sig384 := interop.OpenSSL(t, "cms", "-sign", "-binary", "-md", "sha384", "-in", docFile, "-signer", a.certFile, "-inkey", a.keyFile, "-outform", "DER")

	doc := newDocument("arrete.txt", content)
	doc.d.Signatures = [][]byte{sig256.DER, sig384}
	sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.record(sub.EvidenceID)
	names := map[string]bool{}
	for _, d := range rec.Digests {
		names[d.Name] = true
	}
	if !names["signature/0/0"] || !names["signature/0/1"] {
		t.Errorf("the record names %v, want the signatures' digests", names)
	}
	if did, err := e.x.Work(ctx); !did || err != nil {
		t.Fatalf("Work = %v, %v", did, err)
	}
	d, err := e.x.Fetch(ctx, b.principal, sub.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if got := d.Manifest.Manifest.Documents[0].Signatures; len(got) != 2 || !bytes.Equal(got[1], sig384) {
		t.Errorf("the sealed manifest holds %d signatures", len(got))
	}

	other := newExchangeEnv(t, middleoffice.ExchangeConfig{}) // another CA
	stranger, err := signing.NewSigner(other.partners["a"].key, []*x509.Certificate{other.partners["a"].cert}, signing.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	strangerSig, err := stranger.Sign(ctx, content, true)
	if err != nil {
		t.Fatal(err)
	}
	wrongSig, err := signer.Sign(ctx, []byte("another document"), true)
	if err != nil {
		t.Fatal(err)
	}
	mangled := bytes.Clone(sig256.DER)
	mangled[len(mangled)-3] ^= 0x40
	for name, sig := range map[string][]byte{"other content": wrongSig.DER, "unknown CA": strangerSig.DER, "mangled": mangled} {
		doc := newDocument("arrete.txt", content)
		doc.d.Signatures = [][]byte{sig}
		_, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
		re, ok := errors.AsType[*middleoffice.RejectedError](err)
		if !ok || re.Reason != middleoffice.ReasonInvalidSignature || re.EvidenceID == "" {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if r := e.record(re.EvidenceID); r.Type != evidence.SubmissionRejected {
			t.Errorf("%s: the refusal's record is %s", name, r.Type)
		}
	}
	// Not a signature at all: the manifest is refused before any document.
	doc = newDocument("arrete.txt", content)
	doc.d.Signatures = [][]byte{[]byte("not CMS")}
	if _, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc)); err == nil || !strings.Contains(err.Error(), "signatures[0]: not a DER CMS SignedData") {
		t.Errorf("garbage signature: %v", err)
	}
}
