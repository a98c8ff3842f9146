// Package exchangetest is the conformance suite of
// middleoffice.ExchangeStore: every implementation passes RunStore.
package exchangetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"pec/evidence"
	"pec/middleoffice"
)

// Factory makes stores for the suite.
type Factory struct {
	// New returns a fresh, empty store, closed by the suite.
	New func(t *testing.T) middleoffice.ExchangeStore
	// Reopen opens again the store that s was (the suite closed it):
	// everything committed must be there. nil: the test is skipped.
	Reopen func(t *testing.T, s middleoffice.ExchangeStore) middleoffice.ExchangeStore
}

// RunStore runs the suite.
func RunStore(t *testing.T, f Factory) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, middleoffice.ExchangeStore)
	}{
		{"CreateAndCommit", testCreate},
		{"OneStepAtATime", testOneStep},
		{"IdempotencyKeys", testKeys},
		{"StateGuard", testGuard},
		{"Abort", testAbort},
		{"PreparedBefore", testPreparedBefore},
		{"Inbox", testInbox},
		{"Queue", testQueue},
		{"ConcurrentClaims", testConcurrentClaims},
		{"Payloads", testPayloads},
		{"JobsOfAStep", testJobsOfAStep},
		{"Done", testDone},
		{"DeadLetterAndExpiry", testDeadLetterAndExpiry},
		{"Shredded", testShredded},
		{"LifecycleJobs", testLifecycleJobs},
		{"Backlog", testBacklog},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t, f.New)) })
	}
	if f.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, f) })
	}
}

func open(t *testing.T, newStore func(*testing.T) middleoffice.ExchangeStore) middleoffice.ExchangeStore {
	t.Helper()
	s := newStore(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

// NewExchange is an exchange as Submit creates it, in StatePending.
func NewExchange(id, sender, recipient, key string) *middleoffice.Exchange {
	return &middleoffice.Exchange{
		ID: id, Sender: sender, Recipient: recipient, State: middleoffice.StatePending,
		Manifest: middleoffice.Manifest{
			Recipient: recipient, Procedure: "dossier", IdempotencyKey: key,
			Documents: []middleoffice.Document{{Name: "a.pdf", MediaType: "application/pdf", SHA256: fmt.Sprintf("%064x", 1), Size: 1}},
		},
		SubmittedAt: t0, UpdatedAt: t0, SubmissionEvidence: id + "-accepted", Receipt: []byte("receipt"),
		Envelopes: []middleoffice.PayloadInfo{{Name: "document-0.p7m", Size: 10, SHA256: fmt.Sprintf("%064x", 2)}},
	}
}

// CreateStep is the step that creates ex and enqueues its processing job.
func CreateStep(ex *middleoffice.Exchange) *middleoffice.Step {
	ev := ex.SubmissionEvidence
	return &middleoffice.Step{
		Exchange: ex.ID, Prepared: t0, Record: []byte("record " + ev),
		Event:   middleoffice.Event{Type: evidence.SubmissionAccepted, EvidenceID: ev, Time: t0, By: ex.Sender},
		Create:  ex,
		To:      middleoffice.StateAccepted,
		Enqueue: []*middleoffice.Job{{ID: ex.ID + "-process", Kind: middleoffice.JobProcess, Exchange: ex.ID, NotBefore: t0}},
	}
}

// Step is a step of exchange id from the states from to to, evidence ev.
func Step(id, ev string, typ evidence.EventType, from []middleoffice.State, to middleoffice.State) *middleoffice.Step {
	return &middleoffice.Step{
		Exchange: id, Prepared: t0, Record: []byte("record " + ev),
		Event: middleoffice.Event{Type: typ, EvidenceID: ev, Time: t0.Add(time.Minute)},
		From:  from, To: to,
	}
}

func mustDo(t *testing.T, s middleoffice.ExchangeStore, st *middleoffice.Step) {
	t.Helper()
	if err := s.Prepare(t.Context(), st); err != nil {
		t.Fatalf("Prepare %s: %v", st.Event.EvidenceID, err)
	}
	if err := s.Commit(t.Context(), st.Exchange, st.Event.EvidenceID); err != nil {
		t.Fatalf("Commit %s: %v", st.Event.EvidenceID, err)
	}
}

func mustExchange(t *testing.T, s middleoffice.ExchangeStore, id string) *middleoffice.Exchange {
	t.Helper()
	ex, err := s.Exchange(t.Context(), id)
	if err != nil {
		t.Fatalf("Exchange(%s): %v", id, err)
	}
	return ex
}

// deliver creates exchange id and moves it to StateDelivered.
func deliver(t *testing.T, s middleoffice.ExchangeStore, id, recipient string) {
	t.Helper()
	ex := NewExchange(id, "a", recipient, "")
	mustDo(t, s, CreateStep(ex))
	st := Step(id, id+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	st.Finish = id + "-process"
	st.Seal = &middleoffice.PayloadInfo{Name: "seal.p7m", Size: 3, SHA256: fmt.Sprintf("%064x", 3)}
	mustDo(t, s, st)
}

func testCreate(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	ex := NewExchange("x1", "a", "b", "key-1")
	st := CreateStep(ex)
	if err := s.Prepare(ctx, st); err != nil {
		t.Fatal(err)
	}
	// Prepared: the exchange is there, pending, its key taken.
	if got := mustExchange(t, s, "x1"); got.State != middleoffice.StatePending || len(got.Events) != 0 {
		t.Errorf("prepared: state %s, %d events; want pending, none", got.State, len(got.Events))
	}
	if id, err := s.ByIdempotencyKey(ctx, "a", "key-1"); err != nil || id != "x1" {
		t.Errorf("ByIdempotencyKey = %q, %v", id, err)
	}
	p, err := s.Prepared(ctx, "x1")
	if err != nil || p.Event.EvidenceID != st.Event.EvidenceID || !bytes.Equal(p.Record, st.Record) || p.Create == nil {
		t.Fatalf("Prepared = %+v, %v", p, err)
	}
	if jobs, _ := s.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("a job before the commit: %+v", jobs)
	}
	if err := s.Commit(ctx, "x1", st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	got := mustExchange(t, s, "x1")
	if got.State != middleoffice.StateAccepted || len(got.Events) != 1 || got.Events[0].EvidenceID != st.Event.EvidenceID {
		t.Errorf("committed: state %s, events %+v", got.State, got.Events)
	}
	if !bytes.Equal(got.Receipt, ex.Receipt) || got.Manifest.IdempotencyKey != "key-1" || len(got.Envelopes) != 1 {
		t.Errorf("committed exchange lost fields: %+v", got)
	}
	if _, err := s.Prepared(ctx, "x1"); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("Prepared after the commit: %v, want ErrStepNotFound", err)
	}
	jobs, err := s.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != "x1-process" || jobs[0].Exchange != "x1" {
		t.Errorf("Jobs = %+v, %v", jobs, err)
	}
	// Committing again (a recovery racing the caller) changes nothing.
	if err := s.Commit(ctx, "x1", st.Event.EvidenceID); err != nil {
		t.Errorf("second Commit: %v", err)
	}
	if got := mustExchange(t, s, "x1"); len(got.Events) != 1 {
		t.Errorf("second Commit added an event: %+v", got.Events)
	}
	if err := s.Commit(ctx, "x1", "no-such-evidence"); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("Commit of an unknown step: %v, want ErrStepNotFound", err)
	}
	if _, err := s.Exchange(ctx, "x2"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("Exchange(unknown): %v", err)
	}
	if err := s.Prepare(ctx, CreateStep(NewExchange("x1", "a", "b", ""))); !errors.Is(err, middleoffice.ErrExchangeExists) {
		t.Errorf("creating x1 again: %v, want ErrExchangeExists", err)
	}
}

func testOneStep(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	deliver(t, s, "x1", "b")
	in := []middleoffice.State{middleoffice.StateDelivered, middleoffice.StateRetrieved}
	first := Step("x1", "ev-1", evidence.Retrieved, in, middleoffice.StateRetrieved)
	if err := s.Prepare(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(ctx, Step("x1", "ev-2", evidence.Acknowledged, in, middleoffice.StateAcknowledged)); !errors.Is(err, middleoffice.ErrStepPending) {
		t.Errorf("a second prepared step: %v, want ErrStepPending", err)
	}
	if err := s.Commit(ctx, "x1", "ev-2"); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("Commit of the refused step: %v, want ErrStepNotFound", err)
	}
	if err := s.Commit(ctx, "x1", "ev-1"); err != nil {
		t.Fatal(err)
	}
	mustDo(t, s, Step("x1", "ev-2", evidence.Acknowledged, in, middleoffice.StateAcknowledged))
	got := mustExchange(t, s, "x1")
	var ids []string
	for _, e := range got.Events {
		ids = append(ids, e.EvidenceID)
	}
	if want := []string{"x1-accepted", "x1-delivered", "ev-1", "ev-2"}; !slices.Equal(ids, want) || got.State != middleoffice.StateAcknowledged {
		t.Errorf("events %v, state %s; want %v, acknowledged", ids, got.State, want)
	}
	if got.Seal == nil || got.Seal.Name != "seal.p7m" {
		t.Errorf("the seal of the delivered step was not kept: %+v", got.Seal)
	}
}

func testKeys(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	mustDo(t, s, CreateStep(NewExchange("x1", "a", "b", "k")))
	err := s.Prepare(ctx, CreateStep(NewExchange("x2", "a", "b", "k")))
	if kt, ok := errors.AsType[*middleoffice.KeyTakenError](err); !ok || kt.Exchange != "x1" {
		t.Fatalf("the same sender and key: %v, want *KeyTakenError naming x1", err)
	}
	if _, err := s.Exchange(ctx, "x2"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("the refused exchange was created: %v", err)
	}
	// Keys are per sender.
	mustDo(t, s, CreateStep(NewExchange("x3", "c", "b", "k")))
	for sender, want := range map[string]string{"a": "x1", "c": "x3"} {
		if id, err := s.ByIdempotencyKey(ctx, sender, "k"); err != nil || id != want {
			t.Errorf("ByIdempotencyKey(%s) = %q, %v; want %s", sender, id, err, want)
		}
	}
	if _, err := s.ByIdempotencyKey(ctx, "a", "other"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("unknown key: %v", err)
	}
}

func testGuard(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	mustDo(t, s, CreateStep(NewExchange("x1", "a", "b", "")))
	if err := s.Prepare(ctx, Step("x1", "ev", evidence.Retrieved, []middleoffice.State{middleoffice.StateDelivered}, middleoffice.StateRetrieved)); !errors.Is(err, middleoffice.ErrStateChanged) {
		t.Errorf("a step from another state: %v, want ErrStateChanged", err)
	}
	if err := s.Prepare(ctx, Step("x9", "ev", evidence.Retrieved, []middleoffice.State{middleoffice.StateDelivered}, "")); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("a step of no exchange: %v, want ErrExchangeNotFound", err)
	}
	for name, st := range map[string]*middleoffice.Step{
		"no evidence": {Exchange: "x1", From: []middleoffice.State{middleoffice.StateAccepted}},
		"no states":   Step("x1", "ev", evidence.Retrieved, nil, ""),
		"bad id":      Step("../x1", "ev", evidence.Retrieved, []middleoffice.State{middleoffice.StateAccepted}, ""),
		"create, settled": func() *middleoffice.Step {
			s := CreateStep(NewExchange("x5", "a", "b", ""))
			s.Create.State = middleoffice.StateAccepted
			return s
		}(),
	} {
		if err := s.Prepare(ctx, st); err == nil {
			t.Errorf("%s: prepared", name)
		}
	}
	if _, err := s.Prepared(ctx, "x1"); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("a refused step was prepared: %v", err)
	}
}

func testAbort(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	st := CreateStep(NewExchange("x1", "a", "b", "k"))
	if err := s.Prepare(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, "x1", st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exchange(ctx, "x1"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("aborted creation left the exchange: %v", err)
	}
	if _, err := s.ByIdempotencyKey(ctx, "a", "k"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("aborted creation left the key: %v", err)
	}
	if err := s.Commit(ctx, "x1", st.Event.EvidenceID); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("Commit after Abort: %v, want ErrStepNotFound", err)
	}
	// The key is free again; a committed step cannot be aborted.
	mustDo(t, s, CreateStep(NewExchange("x2", "a", "b", "k")))
	if err := s.Abort(ctx, "x2", "x2-accepted"); !errors.Is(err, middleoffice.ErrStepCommitted) {
		t.Errorf("Abort after Commit: %v, want ErrStepCommitted", err)
	}
	// Aborting a later step leaves the exchange as it was.
	next := Step("x2", "ev", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	if err := s.Prepare(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, "x2", "ev"); err != nil {
		t.Fatal(err)
	}
	if got := mustExchange(t, s, "x2"); got.State != middleoffice.StateAccepted || len(got.Events) != 1 {
		t.Errorf("after an aborted step: %s, %d events", got.State, len(got.Events))
	}
	if err := s.Abort(ctx, "x2", "nothing"); !errors.Is(err, middleoffice.ErrStepNotFound) {
		t.Errorf("Abort of nothing: %v", err)
	}
}

func testPreparedBefore(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	for i, id := range []string{"x3", "x1", "x2"} {
		st := CreateStep(NewExchange(id, "a", "b", ""))
		st.Prepared = t0.Add(time.Duration(i) * time.Second)
		if err := s.Prepare(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.PreparedBefore(ctx, t0.Add(1500*time.Millisecond), 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, st := range got {
		ids = append(ids, st.Exchange)
	}
	if !slices.Equal(ids, []string{"x3", "x1"}) {
		t.Errorf("PreparedBefore = %v, want [x3 x1] (oldest first)", ids)
	}
	if got, _ := s.PreparedBefore(ctx, t0.Add(time.Hour), 1); len(got) != 1 || got[0].Exchange != "x3" {
		t.Errorf("PreparedBefore limit 1 = %v", got)
	}
}

func testInbox(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	for _, id := range []string{"x3", "x1", "x2"} {
		deliver(t, s, id, "b")
	}
	deliver(t, s, "x4", "c")
	mustDo(t, s, CreateStep(NewExchange("x5", "a", "b", ""))) // accepted: not in the inbox yet
	ids := func(list []*middleoffice.Exchange, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range list {
			out = append(out, e.ID)
		}
		return out
	}
	if got := ids(s.Inbox(ctx, "b", "", 10)); !slices.Equal(got, []string{"x1", "x2", "x3"}) {
		t.Errorf("Inbox(b) = %v", got)
	}
	if got := ids(s.Inbox(ctx, "b", "x1", 1)); !slices.Equal(got, []string{"x2"}) {
		t.Errorf("Inbox(b, after x1, 1) = %v", got)
	}
	if got := ids(s.Inbox(ctx, "c", "", 10)); !slices.Equal(got, []string{"x4"}) {
		t.Errorf("Inbox(c) = %v", got)
	}
	// Retrieved stays; acknowledged and refused leave.
	in := []middleoffice.State{middleoffice.StateDelivered, middleoffice.StateRetrieved}
	mustDo(t, s, Step("x1", "r1", evidence.Retrieved, in, middleoffice.StateRetrieved))
	mustDo(t, s, Step("x2", "a2", evidence.Acknowledged, in, middleoffice.StateAcknowledged))
	mustDo(t, s, Step("x3", "a3", evidence.Acknowledged, in, middleoffice.StateRefused))
	if got := ids(s.Inbox(ctx, "b", "", 10)); !slices.Equal(got, []string{"x1"}) {
		t.Errorf("Inbox(b) after answers = %v", got)
	}
	if got := ids(s.Inbox(ctx, "nobody", "", 10)); len(got) != 0 {
		t.Errorf("Inbox(nobody) = %v", got)
	}
}

func testQueue(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	if j, err := s.Claim(ctx, t0, time.Minute); j != nil || err != nil {
		t.Fatalf("Claim on an empty queue = %+v, %v", j, err)
	}
	for i, id := range []string{"x1", "x2"} {
		st := CreateStep(NewExchange(id, "a", "b", ""))
		st.Enqueue[0].NotBefore = t0.Add(time.Duration(i) * time.Minute)
		mustDo(t, s, st)
	}
	j, err := s.Claim(ctx, t0, 5*time.Minute)
	if err != nil || j == nil || j.Exchange != "x1" {
		t.Fatalf("Claim = %+v, %v; want x1's job", j, err)
	}
	// x1's is held, x2's not due yet.
	if j2, err := s.Claim(ctx, t0.Add(30*time.Second), 5*time.Minute); j2 != nil || err != nil {
		t.Fatalf("second Claim = %+v, %v; want none", j2, err)
	}
	j2, err := s.Claim(ctx, t0.Add(90*time.Second), time.Hour)
	if err != nil || j2 == nil || j2.Exchange != "x2" {
		t.Fatalf("Claim at +90s = %+v, %v; want x2's job", j2, err)
	}
	// A held job whose lease passed is claimed again.
	j3, err := s.Claim(ctx, t0.Add(6*time.Minute), 5*time.Minute)
	if err != nil || j3 == nil || j3.Exchange != "x1" {
		t.Fatalf("Claim after x1's lease = %+v, %v", j3, err)
	}
	// Released with an error and a delay: due then, the attempt counted.
	if err := s.Release(ctx, j3, t0.Add(10*time.Minute), "sealing failed"); err != nil {
		t.Fatal(err)
	}
	if j, err := s.Claim(ctx, t0.Add(9*time.Minute), time.Minute); j != nil || err != nil {
		t.Errorf("Claim before x1's retry time (x2 held) = %+v, %v", j, err)
	}
	j4, err := s.Claim(ctx, t0.Add(11*time.Minute), time.Minute)
	if err != nil || j4 == nil || j4.Exchange != "x1" || j4.Attempts != 1 || j4.LastError != "sealing failed" {
		t.Fatalf("Claim at +11m = %+v, %v; want x1's job, 1 attempt, its error", j4, err)
	}
	// A step finishing a job removes it; releasing it then is a no-op.
	st := Step("x1", "x1-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	st.Finish = "x1-process"
	mustDo(t, s, st)
	if err := s.Release(ctx, &middleoffice.Job{ID: "x1-process"}, t0, "late"); err != nil {
		t.Errorf("Release of a finished job: %v", err)
	}
	jobs, err := s.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].Exchange != "x2" {
		t.Errorf("Jobs = %+v, %v; want x2's only", jobs, err)
	}
}

func testConcurrentClaims(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	const n = 40
	for i := range n {
		mustDo(t, s, CreateStep(NewExchange(fmt.Sprintf("x%02d", i), "a", "b", "")))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				j, err := s.Claim(ctx, t0.Add(time.Second), time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if j == nil {
					return
				}
				mu.Lock()
				seen[j.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("%d jobs claimed, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("job %s claimed %d times", id, c)
		}
	}
}

func testPayloads(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	w, err := s.CreatePayload(ctx, "x1", "document-0.p7m")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("envelope "), 10000)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenPayload(ctx, "x1", "document-0.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("an uncommitted payload opens: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPayload(ctx, "x1", "document-0.p7m")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(p)
	if err != nil || !bytes.Equal(got, data) || p.Size() != int64(len(data)) {
		t.Errorf("payload read back: %d bytes (size %d), %v", len(got), p.Size(), err)
	}
	buf := make([]byte, 8)
	if _, err := p.ReadAt(buf, 9); err != nil || string(buf) != "envelope" {
		t.Errorf("ReadAt = %q, %v", buf, err)
	}
	p.Close()
	// Replaced only when the new one is committed; an aborted one leaves nothing.
	w2, _ := s.CreatePayload(ctx, "x1", "document-0.p7m")
	w2.Write([]byte("other"))
	if err := w2.Abort(); err != nil {
		t.Fatal(err)
	}
	if p, err := s.OpenPayload(ctx, "x1", "document-0.p7m"); err != nil || p.Size() != int64(len(data)) {
		t.Errorf("an aborted write replaced the payload")
	} else {
		p.Close()
	}
	w3, _ := s.CreatePayload(ctx, "x1", "seal.p7m")
	w3.Write([]byte("seal"))
	w3.Abort()
	if _, err := s.OpenPayload(ctx, "x1", "seal.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("an aborted payload opens: %v", err)
	}
	for _, bad := range [][2]string{{"../x", "a"}, {"x1", "../../exchanges.db"}, {"x1", ""}, {"", "a"}, {"x1", "a/b"}, {"X1", "a"}} {
		if _, err := s.CreatePayload(ctx, bad[0], bad[1]); err == nil {
			t.Errorf("CreatePayload(%q, %q) accepted", bad[0], bad[1])
		}
		if _, err := s.OpenPayload(ctx, bad[0], bad[1]); err == nil {
			t.Errorf("OpenPayload(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if err := s.RemovePayloads(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenPayload(ctx, "x1", "document-0.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("a removed payload opens: %v", err)
	}
	if err := s.RemovePayloads(context.Background(), "x-none"); err != nil {
		t.Errorf("RemovePayloads of an exchange without payloads: %v", err)
	}
}

func testReopen(t *testing.T, f Factory) {
	s := f.New(t)
	ctx := t.Context()
	deliver(t, s, "x1", "b")
	mustDo(t, s, CreateStep(NewExchange("x2", "a", "b", "k")))
	prepared := Step("x1", "r1", evidence.Retrieved, []middleoffice.State{middleoffice.StateDelivered}, middleoffice.StateRetrieved)
	if err := s.Prepare(ctx, prepared); err != nil {
		t.Fatal(err)
	}
	w, _ := s.CreatePayload(ctx, "x1", "seal.p7m")
	w.Write([]byte("seal"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = f.Reopen(t, s)
	defer s.Close()
	if got := mustExchange(t, s, "x1"); got.State != middleoffice.StateDelivered || len(got.Events) != 2 {
		t.Errorf("x1 after reopening: %s, %d events", got.State, len(got.Events))
	}
	if st, err := s.Prepared(ctx, "x1"); err != nil || !bytes.Equal(st.Record, prepared.Record) {
		t.Errorf("the prepared step after reopening: %+v, %v", st, err)
	}
	if err := s.Commit(ctx, "x1", "r1"); err != nil {
		t.Errorf("committing the prepared step after reopening: %v", err)
	}
	if id, err := s.ByIdempotencyKey(ctx, "a", "k"); err != nil || id != "x2" {
		t.Errorf("the key after reopening: %q, %v", id, err)
	}
	if list, err := s.Inbox(ctx, "b", "", 10); err != nil || len(list) != 1 {
		t.Errorf("the inbox after reopening: %d, %v", len(list), err)
	}
	if jobs, err := s.Jobs(ctx); err != nil || len(jobs) != 1 || jobs[0].Exchange != "x2" {
		t.Errorf("the queue after reopening: %+v, %v", jobs, err)
	}
	if bs, ok := s.(middleoffice.BacklogStore); ok {
		backlogIs(t, bs, 1, "after reopening (x2 waits)")
	}
	p, err := s.OpenPayload(ctx, "x1", "seal.p7m")
	if err != nil {
		t.Fatalf("the payload after reopening: %v", err)
	}
	p.Close()
}

// testJobsOfAStep: a step enqueues several jobs and finishes another (one
// not there is no error); a job of the same id replaces the queued one;
// every field of a job comes back.
func testJobsOfAStep(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	deliver(t, s, "x1", "b")
	in := []middleoffice.State{middleoffice.StateDelivered, middleoffice.StateRetrieved}
	st := Step("x1", "ev-ack", evidence.Acknowledged, in, middleoffice.StateAcknowledged)
	st.Enqueue = []*middleoffice.Job{
		{ID: "x1-notify-ev-ack", Kind: middleoffice.JobNotify, Exchange: "x1", Evidence: "ev-ack", NotBefore: t0.Add(time.Minute)},
		{ID: "x1-expire", Kind: middleoffice.JobExpire, Exchange: "x1", NotBefore: t0.Add(48 * time.Hour)},
	}
	st.Finish = "x1-nothing"
	mustDo(t, s, st)
	jobs, err := s.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*middleoffice.Job{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	if n := byID["x1-notify-ev-ack"]; len(jobs) != 2 || n == nil || n.Kind != middleoffice.JobNotify || n.Evidence != "ev-ack" || n.Exchange != "x1" || !n.NotBefore.Equal(t0.Add(time.Minute)) || byID["x1-expire"] == nil {
		t.Fatalf("Jobs = %+v, want the notification and the expiry", jobs)
	}
	// The same id again: replaced, not doubled.
	again := Step("x1", "ev-again", evidence.Retrieved, []middleoffice.State{middleoffice.StateAcknowledged}, "")
	again.Enqueue = []*middleoffice.Job{{ID: "x1-expire", Kind: middleoffice.JobExpire, Exchange: "x1", NotBefore: t0.Add(time.Hour)}}
	again.Finish = "x1-notify-ev-ack"
	mustDo(t, s, again)
	jobs, _ = s.Jobs(ctx)
	if len(jobs) != 1 || jobs[0].ID != "x1-expire" || !jobs[0].NotBefore.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Jobs = %+v, want the expiry only, due at +1h", jobs)
	}
	if j, err := s.Claim(ctx, t0.Add(30*time.Minute), time.Minute); j != nil || err != nil {
		t.Errorf("the replaced job is due at its old time: %+v, %v", j, err)
	}
	if j, err := s.Claim(ctx, t0.Add(2*time.Hour), time.Minute); err != nil || j == nil || j.ID != "x1-expire" {
		t.Errorf("Claim at +2h = %+v, %v", j, err)
	}
}

// testDone: Done removes a job, held or not; a job gone is no error.
func testDone(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	mustDo(t, s, CreateStep(NewExchange("x1", "a", "b", "")))
	mustDo(t, s, CreateStep(NewExchange("x2", "a", "b", "")))
	j, err := s.Claim(ctx, t0, time.Minute)
	if err != nil || j == nil {
		t.Fatalf("Claim = %+v, %v", j, err)
	}
	if err := s.Done(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Done(ctx, j.ID); err != nil {
		t.Errorf("Done of a job done: %v", err)
	}
	if err := s.Release(ctx, j, t0, "late"); err != nil {
		t.Errorf("Release of a job done: %v", err)
	}
	if err := s.Done(ctx, "x2-process"); err != nil { // not held
		t.Fatal(err)
	}
	if jobs, err := s.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("Jobs = %+v, %v; want none", jobs, err)
	}
	if j, err := s.Claim(ctx, t0.Add(time.Hour), time.Minute); j != nil || err != nil {
		t.Errorf("Claim after Done = %+v, %v", j, err)
	}
}

// testDeadLetterAndExpiry: the states of a push that failed for good and
// of an exchange left unanswered: a dead letter was never in the inbox,
// an expired exchange leaves it; both are kept.
func testDeadLetterAndExpiry(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	mustDo(t, s, CreateStep(NewExchange("x1", "a", "b", "")))
	accepted := []middleoffice.State{middleoffice.StateAccepted}
	mustDo(t, s, Step("x1", "f1", evidence.DeliveryAttemptFailed, accepted, "")) // an attempt: no change of state
	dead := Step("x1", "f2", evidence.DeliveryFailed, accepted, middleoffice.StateDeadLetter)
	dead.Finish = "x1-process"
	mustDo(t, s, dead)
	deliver(t, s, "x2", "b")
	in := []middleoffice.State{middleoffice.StateDelivered, middleoffice.StateRetrieved}
	mustDo(t, s, Step("x2", "e2", evidence.Expired, in, middleoffice.StateExpired))
	deliver(t, s, "x3", "b")
	if list, err := s.Inbox(ctx, "b", "", 10); err != nil || len(list) != 1 || list[0].ID != "x3" {
		t.Errorf("Inbox(b) = %v, %v; want x3 only", list, err)
	}
	x1 := mustExchange(t, s, "x1")
	if x1.State != middleoffice.StateDeadLetter || len(x1.Events) != 3 || x1.Events[1].Type != evidence.DeliveryAttemptFailed {
		t.Errorf("x1: %s, %+v", x1.State, x1.Events)
	}
	if x2 := mustExchange(t, s, "x2"); x2.State != middleoffice.StateExpired || x2.Seal == nil {
		t.Errorf("x2: %s, seal %v", x2.State, x2.Seal)
	}
	if err := s.Prepare(ctx, Step("x2", "late", evidence.Acknowledged, in, middleoffice.StateAcknowledged)); !errors.Is(err, middleoffice.ErrStateChanged) {
		t.Errorf("acknowledging an expired exchange: %v, want ErrStateChanged", err)
	}
	if jobs, _ := s.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs left: %+v", jobs)
	}
}

// testShredded: a step to StateShredded takes an exchange out of its
// recipient's inbox, from any state it applies to; the exchange, its
// events and its idempotency key stay, its payloads go.
func testShredded(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	shreddable := []middleoffice.State{middleoffice.StateAccepted, middleoffice.StateDelivered, middleoffice.StateRetrieved,
		middleoffice.StateAcknowledged, middleoffice.StateRefused, middleoffice.StateDeadLetter, middleoffice.StateExpired}
	deliver(t, s, "x1", "b")
	mustDo(t, s, Step("x1", "r1", evidence.Retrieved, []middleoffice.State{middleoffice.StateDelivered}, middleoffice.StateRetrieved))
	mustDo(t, s, CreateStep(NewExchange("x2", "a", "b", "k2"))) // accepted, never delivered
	for _, id := range []string{"x1", "x2"} {
		w, err := s.CreatePayload(ctx, id, "document-0.p7m")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("envelope"))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		st := Step(id, id+"-destroyed", evidence.PayloadDestroyed, shreddable, middleoffice.StateShredded)
		if err := s.Prepare(ctx, st); err != nil {
			t.Fatal(err)
		}
		if err := s.RemovePayloads(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, id, st.Event.EvidenceID); err != nil {
			t.Fatal(err)
		}
		ex := mustExchange(t, s, id)
		if ex.State != middleoffice.StateShredded || ex.Events[len(ex.Events)-1].Type != evidence.PayloadDestroyed || ex.Manifest.Procedure != "dossier" {
			t.Errorf("%s shredded: state %s, events %+v", id, ex.State, ex.Events)
		}
		if _, err := s.OpenPayload(ctx, id, "document-0.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
			t.Errorf("%s: a payload after the shredding: %v", id, err)
		}
	}
	if list, err := s.Inbox(ctx, "b", "", 10); err != nil || len(list) != 0 {
		t.Errorf("Inbox(b) after the shredding: %d, %v", len(list), err)
	}
	if id, err := s.ByIdempotencyKey(ctx, "a", "k2"); err != nil || id != "x2" {
		t.Errorf("the idempotency key of a shredded exchange: %q, %v", id, err)
	}
	if err := s.Prepare(ctx, Step("x1", "again", evidence.PayloadDestroyed, shreddable, middleoffice.StateShredded)); !errors.Is(err, middleoffice.ErrStateChanged) {
		t.Errorf("shredding twice: %v, want ErrStateChanged", err)
	}
}

// testLifecycleJobs: the jobs of the retention lifecycle, among them one
// that names no exchange (a key's destruction), enqueued by several
// exchanges under one id: one job, due when said.
func testLifecycleJobs(t *testing.T, s middleoffice.ExchangeStore) {
	ctx := t.Context()
	kek := &middleoffice.Job{ID: "destroy-kek-pec-atrest-30d-202611", Kind: middleoffice.JobDestroyKEK, NotBefore: t0.Add(36 * 24 * time.Hour)}
	for i, id := range []string{"x1", "x2"} {
		st := CreateStep(NewExchange(id, "a", "b", ""))
		st.Enqueue = append(st.Enqueue,
			&middleoffice.Job{ID: id + "-shred", Kind: middleoffice.JobShred, Exchange: id, NotBefore: t0.Add(time.Duration(30+i) * 24 * time.Hour)},
			kek)
		mustDo(t, s, st)
	}
	jobs, err := s.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 5 {
		t.Fatalf("%d jobs, want 2 process, 2 shred, 1 KEK", len(jobs))
	}
	var got []string
	for {
		j, err := s.Claim(ctx, t0.Add(40*24*time.Hour), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			break
		}
		got = append(got, j.ID)
		if j.Kind == middleoffice.JobDestroyKEK && (j.Exchange != "" || !j.NotBefore.Equal(kek.NotBefore)) {
			t.Errorf("the KEK job back: %+v", j)
		}
		if err := s.Done(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"x1-process", "x2-process", "x1-shred", "x2-shred", kek.ID}; !slices.Equal(got, want) {
		t.Errorf("claimed %v, want %v", got, want)
	}
}

// backlogIs waits (2 s at most: a count may be cached) for the store's
// backlog to be want.
func backlogIs(t *testing.T, s middleoffice.BacklogStore, want int, when string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := s.Backlog(t.Context())
		if err == nil && n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Backlog %s = %d, %v; want %d", when, n, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testBacklog: the backlog counts the process jobs never attempted — not
// a prepared step's, not an aborted one's, not a job released after a
// failed attempt, nor one finished, done, or of another kind.
func testBacklog(t *testing.T, st middleoffice.ExchangeStore) {
	s, ok := st.(middleoffice.BacklogStore)
	if !ok {
		t.Skip("the store does not count its backlog")
	}
	ctx := t.Context()
	backlogIs(t, s, 0, "of an empty store")
	for _, id := range []string{"x1", "x2", "x3"} {
		mustDo(t, st, CreateStep(NewExchange(id, "a", "b", "")))
	}
	backlogIs(t, s, 3, "after three submissions")
	x4 := CreateStep(NewExchange("x4", "a", "b", ""))
	if err := st.Prepare(ctx, x4); err != nil {
		t.Fatal(err)
	}
	backlogIs(t, s, 3, "with a submission prepared")
	if err := st.Abort(ctx, "x4", x4.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	backlogIs(t, s, 3, "after an aborted submission")
	j, err := st.Claim(ctx, t0, time.Minute)
	if err != nil || j == nil {
		t.Fatalf("Claim = %+v, %v", j, err)
	}
	backlogIs(t, s, 3, "with a job held")
	if err := st.Release(ctx, j, t0.Add(time.Hour), "push failed"); err != nil {
		t.Fatal(err)
	}
	backlogIs(t, s, 2, "after a failed attempt")
	// Enqueued again by a step (a redelivery): a fresh job, counted.
	re := Step(j.Exchange, j.Exchange+"-redeliver", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateAccepted)
	re.Enqueue = []*middleoffice.Job{{ID: j.Exchange + "-process", Kind: middleoffice.JobProcess, Exchange: j.Exchange, NotBefore: t0}}
	mustDo(t, st, re)
	backlogIs(t, s, 3, "after a job enqueued again")
	var rest []string
	for _, id := range []string{"x1", "x2", "x3"} {
		if id != j.Exchange {
			rest = append(rest, id)
		}
	}
	d := Step(rest[0], rest[0]+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	d.Finish = rest[0] + "-process"
	d.Enqueue = []*middleoffice.Job{{ID: rest[0] + "-notify-x", Kind: middleoffice.JobNotify, Exchange: rest[0], NotBefore: t0}}
	mustDo(t, st, d)
	backlogIs(t, s, 2, "after a delivery (and a notification enqueued)")
	if err := st.Done(ctx, rest[1]+"-process"); err != nil {
		t.Fatal(err)
	}
	if err := st.Done(ctx, rest[1]+"-process"); err != nil {
		t.Fatal(err)
	}
	backlogIs(t, s, 1, "after a job done (twice)")
}
