package middleoffice_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
)

func createExchange(t *testing.T, s *middleoffice.BoltExchangeStore, id, payload string) {
	t.Helper()
	w, err := s.CreatePayload(t.Context(), id, "doc-0")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, payload)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	st := exchangetest.CreateStep(exchangetest.NewExchange(id, "a", "b", ""))
	if err := s.Prepare(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), id, st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
}

// A snapshot holds the exchanges committed before it and their payloads,
// not those created after it nor payloads being written; written out, it
// opens as a store.
func TestExchangeSnapshot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	defer s.Close()
	middleoffice.WithoutInlinePayloads(s) // the payloads as files, copied beside the database
	createExchange(t, s, "x1", "dossier one")
	createExchange(t, s, "x2", "dossier two")
	// Being written: a temporary name.
	w, err := s.CreatePayload(t.Context(), "x1", "doc-1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()

	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	createExchange(t, s, "x3", "after the snapshot")
	if err := s.RemovePayloads(t.Context(), "x2"); err != nil { // shredded meanwhile
		t.Fatal(err)
	}

	out := t.TempDir()
	f, err := os.Create(filepath.Join(out, "exchanges.db"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sn.WriteDB(f); err != nil || n != sn.DBSize() {
		t.Fatalf("WriteDB: %d of %d bytes, %v", n, sn.DBSize(), err)
	}
	f.Close()
	if sn.Exchanges() != 2 {
		t.Errorf("%d exchanges in the snapshot, want 2", sn.Exchanges())
	}
	var copied, gone []string
	for _, p := range sn.Payloads() {
		data, err := os.ReadFile(p.Path)
		if errors.Is(err, os.ErrNotExist) {
			gone = append(gone, p.Exchange+"/"+p.Name)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(out, "payloads", p.Exchange), 0o700)
		if err := os.WriteFile(filepath.Join(out, "payloads", p.Exchange, p.Name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		copied = append(copied, p.Exchange+"/"+p.Name)
	}
	sn.Close()
	if len(copied) != 1 || copied[0] != "x1/doc-0" || len(gone) != 1 || gone[0] != "x2/doc-0" {
		t.Fatalf("payloads copied %q, gone %q; want x1/doc-0, and x2/doc-0 gone", copied, gone)
	}

	r, err := middleoffice.OpenBoltExchanges(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, id := range []string{"x1", "x2"} {
		if _, err := r.Exchange(t.Context(), id); err != nil {
			t.Errorf("exchange %s: %v", id, err)
		}
	}
	if _, err := r.Exchange(t.Context(), "x3"); !errors.Is(err, middleoffice.ErrExchangeNotFound) {
		t.Errorf("exchange x3, created after the snapshot: %v", err)
	}
	p, err := r.OpenPayload(t.Context(), "x1", "doc-0")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(p)
	p.Close()
	if string(got) != "dossier one" {
		t.Errorf("payload %q", got)
	}
}
