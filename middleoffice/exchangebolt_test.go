package middleoffice_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pec/middleoffice"
	"pec/middleoffice/exchangetest"
)

func openExchangeStore(t *testing.T, dir string) *middleoffice.BoltExchangeStore {
	t.Helper()
	s, err := middleoffice.OpenBoltExchanges(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBoltExchangeStore(t *testing.T) {
	t.Parallel()
	dirs := map[middleoffice.ExchangeStore]string{}
	exchangetest.RunStore(t, exchangetest.Factory{
		New: func(t *testing.T) middleoffice.ExchangeStore {
			dir := t.TempDir()
			s := openExchangeStore(t, dir)
			dirs[s] = dir
			return s
		},
		Reopen: func(t *testing.T, s middleoffice.ExchangeStore) middleoffice.ExchangeStore {
			return openExchangeStore(t, dirs[s])
		},
	})
}

// TestBoltExchangeStoreOneProcess: the file is locked while open; opening
// it again gives back the jobs the previous opener held (the embedded
// store serves one node).
func TestBoltExchangeStoreOneProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	if _, err := middleoffice.OpenBoltExchanges(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second opener: %v, want the store in use", err)
	}
	ex := exchangetest.NewExchange("x1", "a", "b", "")
	st := exchangetest.CreateStep(ex)
	if err := s.Prepare(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), "x1", st.Event.EvidenceID); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if j, err := s.Claim(t.Context(), now, time.Hour); err != nil || j == nil {
		t.Fatalf("Claim: %+v, %v", j, err)
	}
	s.Close()
	s = openExchangeStore(t, dir)
	defer s.Close()
	if j, err := s.Claim(t.Context(), now, time.Hour); err != nil || j == nil || j.Exchange != "x1" {
		t.Errorf("the held job after reopening: %+v, %v; want it due again", j, err)
	}
	if _, err := filepath.Glob(filepath.Join(dir, "payloads")); err != nil {
		t.Fatal(err)
	}
}
