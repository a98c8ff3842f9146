package middleoffice_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestBoltPayloadsInline: payloads of up to 64 KiB are kept in the bbolt
// file, larger ones in files; either reads back the same, after
// reopening too, whatever the pieces it was written in.
func TestBoltPayloadsInline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openExchangeStore(t, dir)
	ctx := t.Context()
	content := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return b
	}
	sizes := map[string]int{"empty": 0, "one byte": 1, "10 KiB": 10 << 10, "64 KiB": 64 << 10, "64 KiB and one": 64<<10 + 1, "1 MiB": 1 << 20}
	write := func(t *testing.T, id string, data []byte) {
		t.Helper()
		w, err := s.CreatePayload(ctx, id, "document-0.p7m")
		if err != nil {
			t.Fatal(err)
		}
		for rest := data; len(rest) > 0; {
			n := min(7<<10, len(rest)) // pieces that cross the threshold
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, s *middleoffice.BoltExchangeStore, id string, want []byte) {
		t.Helper()
		p, err := s.OpenPayload(ctx, id, "document-0.p7m")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		got, err := io.ReadAll(p)
		if err != nil || !bytes.Equal(got, want) || p.Size() != int64(len(want)) {
			t.Errorf("read back %d bytes (size %d), %v; want %d", len(got), p.Size(), err, len(want))
		}
		if len(want) > 3 {
			b := make([]byte, 3)
			if _, err := p.ReadAt(b, int64(len(want)-3)); err != nil || !bytes.Equal(b, want[len(want)-3:]) {
				t.Errorf("ReadAt the end: %x, %v", b, err)
			}
		}
		_, err = os.Stat(filepath.Join(dir, "payloads", id, "document-0.p7m"))
		if file := err == nil; file != (len(want) > 64<<10) {
			t.Errorf("%d bytes: a payload file: %v", len(want), file)
		}
	}
	i := 0
	ids := map[string]string{}
	for name, n := range sizes {
		i++
		id := fmt.Sprintf("x%d", i)
		ids[name] = id
		t.Run(name, func(t *testing.T) {
			write(t, id, content(n, 1))
			check(t, s, id, content(n, 1))
		})
	}
	s.Close()
	s = openExchangeStore(t, dir)
	defer s.Close()
	for name, n := range sizes {
		t.Run(name+" reopened", func(t *testing.T) { check(t, s, ids[name], content(n, 1)) })
	}

	// The payload committed last is the one read, the other copy gone.
	for _, tc := range []struct{ name, from, to string }{
		{"inline replaced by a file", "10 KiB", "1 MiB"},
		{"a file replaced by inline", "1 MiB", "10 KiB"},
		{"inline by inline", "one byte", "64 KiB"},
		{"a file by a file", "64 KiB and one", "1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := ids[tc.from]
			want := content(sizes[tc.to], 2)
			w, _ := s.CreatePayload(ctx, id, "document-0.p7m")
			w.Write(want)
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			check(t, s, id, want)
			ids[tc.from] = "" // replaced
		})
	}
	// Aborted, spilled or not: nothing left.
	for _, n := range []int{10, 100 << 10} {
		w, _ := s.CreatePayload(ctx, "xa", "seal.p7m")
		w.Write(content(n, 3))
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.OpenPayload(ctx, "xa", "seal.p7m"); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
			t.Errorf("an aborted payload of %d bytes opens: %v", n, err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "payloads", "xa", "*")); len(left) > 0 {
			t.Errorf("an aborted payload of %d bytes left %v", n, left)
		}
	}
	// Removed: the inline ones too, and no other exchange's.
	write(t, "x10", content(100, 4))
	w, _ := s.CreatePayload(ctx, "x10", "seal.p7m")
	w.Write(content(50, 4))
	w.Commit()
	write(t, "x100", content(100, 5))
	if err := s.RemovePayloads(ctx, "x10"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"document-0.p7m", "seal.p7m"} {
		if _, err := s.OpenPayload(ctx, "x10", name); !errors.Is(err, middleoffice.ErrPayloadNotFound) {
			t.Errorf("removed payload %s opens: %v", name, err)
		}
	}
	check(t, s, "x100", content(100, 5))
}

// TestBoltGroupCommit: concurrent writes share transactions, and one that
// fails does not take the others with it: 90 exchanges created at once,
// and 10 creations of one exchange, of which one wins.
func TestBoltGroupCommit(t *testing.T) {
	t.Parallel()
	s := openExchangeStore(t, t.TempDir())
	defer s.Close()
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range 100 {
		id := fmt.Sprintf("x%d", i)
		if i >= 90 {
			id = "dup"
		}
		wg.Go(func() {
			ex := exchangetest.NewExchange(id, "a", "b", "")
			ex.SubmissionEvidence = fmt.Sprintf("ev-%d", i)
			st := exchangetest.CreateStep(ex)
			if errs[i] = s.Prepare(ctx, st); errs[i] == nil {
				errs[i] = s.Commit(ctx, id, st.Event.EvidenceID)
			}
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case i < 90 && err != nil:
			t.Errorf("x%d: %v", i, err)
		case i >= 90 && err == nil:
			won++
		case i >= 90 && !errors.Is(err, middleoffice.ErrStepPending) && !errors.Is(err, middleoffice.ErrExchangeExists):
			t.Errorf("a second creation of dup: %v, want ErrStepPending or ErrExchangeExists", err)
		}
	}
	if won != 1 {
		t.Errorf("dup created %d times, want once", won)
	}
	for i := range 90 {
		if ex, err := s.Exchange(ctx, fmt.Sprintf("x%d", i)); err != nil || ex.State != middleoffice.StateAccepted {
			t.Errorf("x%d: %+v, %v", i, ex, err)
		}
	}
	if ex, err := s.Exchange(ctx, "dup"); err != nil || len(ex.Events) != 1 {
		t.Errorf("dup: %+v, %v", ex, err)
	}
}
