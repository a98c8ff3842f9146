package middleoffice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"pec/evidence"
	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
)

// crashImage opens a copy of the store's bbolt file as it is on disk now:
// what a node killed at this moment would find.
func crashImage(t *testing.T, dir string) *middleoffice.BoltExchangeStore {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "exchanges.db"))
	if err != nil {
		t.Fatal(err)
	}
	img := t.TempDir()
	if err := os.WriteFile(filepath.Join(img, "exchanges.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openExchangeStore(t, img)
	t.Cleanup(func() { s.Close() })
	return s
}

func stagePayload(t *testing.T, s middleoffice.ExchangeStore, ex, name string, data []byte) {
	t.Helper()
	w, err := s.CreatePayload(t.Context(), ex, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func readStaged(s middleoffice.ExchangeStore, ex, name string) ([]byte, error) {
	p, err := s.OpenPayload(context.Background(), ex, name)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return io.ReadAll(p)
}

func mustStep(t *testing.T, s middleoffice.ExchangeStore, st *middleoffice.Step) {
	t.Helper()
	if err := s.Prepare(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), st.Exchange, st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
}

// TestStagedPayloads: a small payload's Commit costs no transaction of
// its own; it reads at once, and is in the file — what a crash leaves —
// once a step of its exchange is prepared (the step that names it), with
// that step's one transaction; a submission and its delivery take 4
// write transactions in all (prepare and commit of each), the seal and
// the envelope included.
func TestStagedPayloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	defer func() { s.Close() }()
	ctx := t.Context()
	ex := exchangetest.NewExchange("x1", "a", "b", "k1")
	tx0 := middleoffice.WriteTransactions(s)
	env := bytes.Repeat([]byte("e"), 10<<10)
	stagePayload(t, s, "x1", "document-0.p7m", env)
	stagePayload(t, s, "x1", "data-key", []byte("key"))
	if got, err := readStaged(s, "x1", "document-0.p7m"); err != nil || !bytes.Equal(got, env) {
		t.Fatalf("a staged payload reads %d bytes, %v", len(got), err)
	}
	if _, err := readStaged(crashImage(t, dir), "x1", "document-0.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Fatalf("a staged payload, no step yet, in the file: %v", err)
	}
	st := exchangetest.CreateStep(ex)
	if err := s.Prepare(ctx, st); err != nil {
		t.Fatal(err)
	}
	img := crashImage(t, dir)
	for name, want := range map[string][]byte{"document-0.p7m": env, "data-key": []byte("key")} {
		if got, err := readStaged(img, "x1", name); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the step's Prepare, in the file: %d bytes, %v", name, len(got), err)
		}
	}
	if p, err := img.Prepared(ctx, "x1"); err != nil || p.Create == nil || p.Create.Receipt == nil {
		t.Errorf("the prepared step in the file: %+v, %v (want its created exchange)", p, err)
	}
	if err := s.Commit(ctx, "x1", st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	// The delivery: a seal, then its step.
	stagePayload(t, s, "x1", "seal.p7m", []byte("seal"))
	dst := exchangetest.Step("x1", "x1-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	dst.Seal = &middleoffice.PayloadInfo{Name: "seal.p7m", Size: 4}
	dst.Finish = "x1-process"
	if err := s.Prepare(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if got, err := readStaged(crashImage(t, dir), "x1", "seal.p7m"); err != nil || string(got) != "seal" {
		t.Errorf("the seal after its step's Prepare, in the file: %q, %v", got, err)
	}
	if err := s.Commit(ctx, "x1", dst.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	if n := middleoffice.WriteTransactions(s) - tx0; n != 4 {
		t.Errorf("%d write transactions for a submission and its delivery, want 4", n)
	}
	// Claims write nothing, whether a job is due or not; the job is held
	// all the same, and given back to the next process.
	mustStep(t, s, exchangetest.CreateStep(exchangetest.NewExchange("x2", "a", "b", "")))
	before := middleoffice.WriteTransactions(s)
	if j, err := s.Claim(ctx, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute); j != nil || err != nil {
		t.Fatalf("Claim before anything is due: %v, %v", j, err)
	}
	far := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if j, err := s.Claim(ctx, far, time.Minute); j == nil || err != nil || j.ID != "x2-process" {
		t.Fatalf("Claim of x2's job: %v, %v", j, err)
	}
	if j, err := s.Claim(ctx, far, time.Minute); j != nil || err != nil {
		t.Fatalf("Claim of a held job: %v, %v", j, err)
	}
	if n := middleoffice.WriteTransactions(s) - before; n != 0 {
		t.Errorf("claims ran %d write transactions", n)
	}
	if jobs, err := s.Jobs(ctx); err != nil || len(jobs) != 1 || !jobs[0].HeldUntil.Equal(far.Add(time.Minute)) {
		t.Errorf("Jobs with x2's held: %+v, %v", jobs, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openExchangeStore(t, dir)
	if j, err := s.Claim(ctx, far, time.Minute); j == nil || err != nil || j.ID != "x2-process" {
		t.Errorf("Claim of a job held by the previous process: %v, %v", j, err)
	}
}

// TestStagedPayloadsWithoutStep: a staged payload that no step takes is
// written with the next transaction after StagedMaxAge, or by Close;
// RemovePayloads forgets one; a larger payload of the same name replaces
// a staged one.
func TestStagedPayloadsWithoutStep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	ctx := t.Context()
	stagePayload(t, s, "x1", "seal.p7m", []byte("old"))
	stagePayload(t, s, "x2", "seal.p7m", []byte("removed"))
	stagePayload(t, s, "x3", "seal.p7m", []byte("small"))
	if err := s.RemovePayloads(ctx, "x2"); err != nil {
		t.Fatal(err)
	}
	if _, err := readStaged(s, "x2", "seal.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("a staged payload removed: %v", err)
	}
	big := bytes.Repeat([]byte("b"), 100<<10)
	stagePayload(t, s, "x3", "seal.p7m", big)
	if got, _ := readStaged(s, "x3", "seal.p7m"); !bytes.Equal(got, big) {
		t.Errorf("a staged payload replaced by a file: %d bytes read", len(got))
	}
	time.Sleep(middleoffice.StagedMaxAge + 50*time.Millisecond)
	// Any write: another exchange's step.
	mustStep(t, s, exchangetest.CreateStep(exchangetest.NewExchange("y1", "a", "b", "")))
	img := crashImage(t, dir)
	if got, err := readStaged(img, "x1", "seal.p7m"); err != nil || string(got) != "old" {
		t.Errorf("a payload staged for longer than StagedMaxAge, after a write: %q, %v", got, err)
	}
	if got, _ := readStaged(img, "x3", "seal.p7m"); bytes.Equal(got, []byte("small")) {
		t.Error("a staged payload replaced by a file was written")
	}
	stagePayload(t, s, "x4", "seal.p7m", []byte("at close"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openExchangeStore(t, dir)
	defer s2.Close()
	if got, err := readStaged(s2, "x4", "seal.p7m"); err != nil || string(got) != "at close" {
		t.Errorf("a payload staged at Close, reopened: %q, %v", got, err)
	}
	if _, err := readStaged(s2, "x2", "seal.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
		t.Errorf("a staged payload removed, reopened: %v", err)
	}
}

// TestDecodedExchangesChecked: the store's decoded exchanges are taken
// only for the very bytes stored: an exchange changed behind the store's
// back (another version of the file, a write this process did not make)
// is read again, whether the change is in its state or elsewhere.
func TestDecodedExchangesChecked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	defer s.Close()
	ctx := t.Context()
	for i, change := range []func(e map[string]any){
		func(e map[string]any) { e["state"] = string(middleoffice.StateExpired) },
		func(e map[string]any) { e["recipient_subject"] = "CN=changed" },
	} {
		id := []string{"x1", "x2"}[i]
		mustStep(t, s, exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", "")))
		err := middleoffice.BoltDB(s).Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("exchanges"))
			var e map[string]any
			if err := json.Unmarshal(b.Get([]byte(id)), &e); err != nil {
				return err
			}
			change(e)
			data, err := json.Marshal(e)
			if err != nil {
				return err
			}
			return b.Put([]byte(id), data)
		})
		if err != nil {
			t.Fatal(err)
		}
		st := exchangetest.Step(id, id+"-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
		err = s.Prepare(ctx, st)
		if i == 0 {
			if !errors.Is(err, middleoffice.ErrStateChanged) {
				t.Errorf("a step from accepted, the exchange expired behind the store's back: %v, want ErrStateChanged", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, id, st.Event.EvidenceID); err != nil {
			t.Fatal(err)
		}
		e, err := s.Exchange(ctx, id)
		if err != nil || e.RecipientSubject != "CN=changed" || e.State != middleoffice.StateDelivered {
			t.Errorf("after a commit over a change made behind the store's back: %+v, %v", e, err)
		}
	}
}

// TestReceiptsApart: an exchange's receipt is stored once, apart from the
// JSON its steps rewrite, and read back with it (Exchange, Inbox, the
// prepared step); an exchange stored with the receipt in its JSON (before)
// reads the same; an aborted creation takes its receipt away.
func TestReceiptsApart(t *testing.T) {
	t.Parallel()
	s := openExchangeStore(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	receipt := bytes.Repeat([]byte{0x30}, 3000)
	ex := exchangetest.NewExchange("x1", "a", "b", "")
	ex.Receipt = receipt
	st := exchangetest.CreateStep(ex)
	if err := s.Prepare(ctx, st); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Prepared(ctx, "x1"); err != nil || !bytes.Equal(p.Create.Receipt, receipt) {
		t.Fatalf("the prepared step's exchange: %v", err)
	}
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(s.Commit(ctx, "x1", st.Event.EvidenceID))
	var stored map[string]any
	mustDo(middleoffice.BoltDB(s).View(func(tx *bolt.Tx) error {
		return json.Unmarshal(tx.Bucket([]byte("exchanges")).Get([]byte("x1")), &stored)
	}))
	if _, in := stored["receipt"]; in {
		t.Error("the receipt is in the exchange's JSON")
	}
	if e, err := s.Exchange(ctx, "x1"); err != nil || !bytes.Equal(e.Receipt, receipt) {
		t.Errorf("Exchange: the receipt back: %v", err)
	}
	mustStep(t, s, exchangetest.Step("x1", "x1-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered))
	if in, err := s.Inbox(ctx, "b", "", 10); err != nil || len(in) != 1 || !bytes.Equal(in[0].Receipt, receipt) {
		t.Errorf("Inbox: the receipt back: %v", err)
	}
	// Stored the old way: the receipt in the JSON.
	old := exchangetest.NewExchange("x2", "a", "b", "")
	old.Receipt, old.State = []byte("old receipt"), middleoffice.StateAccepted
	data, err := json.Marshal(old)
	mustDo(err)
	mustDo(middleoffice.BoltDB(s).Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("exchanges")).Put([]byte("x2"), data)
	}))
	if e, err := s.Exchange(ctx, "x2"); err != nil || string(e.Receipt) != "old receipt" {
		t.Errorf("an exchange stored with its receipt in its JSON: %q, %v", e.Receipt, err)
	}
	dst := exchangetest.Step("x2", "x2-delivered", evidence.Delivered, []middleoffice.State{middleoffice.StateAccepted}, middleoffice.StateDelivered)
	mustStep(t, s, dst)
	if e, err := s.Exchange(ctx, "x2"); err != nil || string(e.Receipt) != "old receipt" {
		t.Errorf("an exchange stored with its receipt in its JSON, after a step: %q, %v", e.Receipt, err)
	}
	// Aborted: no receipt left.
	ab := exchangetest.NewExchange("x3", "a", "b", "")
	ab.Receipt = receipt
	ast := exchangetest.CreateStep(ab)
	mustDo(s.Prepare(ctx, ast))
	mustDo(s.Abort(ctx, "x3", ast.Event.EvidenceID))
	mustDo(middleoffice.BoltDB(s).View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("receipts")).Get([]byte("x3")) != nil {
			t.Error("an aborted exchange's receipt is left")
		}
		return nil
	}))
}
