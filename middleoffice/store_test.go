package middleoffice_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"pec/middleoffice"
)

// storeSuite is the conformance suite of a Store: open gives a store over
// the same data each time it is called (after the previous one is
// closed). The embedded FileStore runs it; a PostgreSQL store would too.
func storeSuite(t *testing.T, open func(t *testing.T) middleoffice.Store) {
	ctx := context.Background()
	s := open(t)
	got, err := s.Load(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("a new store: %v, %v", got, err)
	}
	at := time.Date(2026, 3, 2, 9, 15, 0, 123e6, time.UTC)
	b := middleoffice.Partner{ID: "b", Name: "B", Roles: []middleoffice.Role{"partner"}, Certificates: []middleoffice.CertificateRule{{Subject: "CN=b", Issuer: "CN=root"}},
		Channel: middleoffice.Channel{Type: "webhook", URL: "https://b.example/in"}, Mail: []string{"b@b.example"}, EncryptionCertificate: []byte{0x30, 0x03, 1, 2, 3},
		Revision: 1, UpdatedAt: at, EvidenceID: "e1"}
	a := middleoffice.Partner{ID: "a", Name: "A", Roles: []middleoffice.Role{"admin"}, Certificates: []middleoffice.CertificateRule{}, Channel: middleoffice.Channel{Type: "pull"}, Revision: 1, UpdatedAt: at, EvidenceID: "e2"}
	for _, p := range []middleoffice.Partner{b, a} {
		if err := s.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	b2 := b
	b2.Name, b2.Disabled, b2.Revision, b2.EvidenceID = "B renamed", true, 2, "e3"
	if err := s.Put(ctx, b2); err != nil {
		t.Fatal(err)
	}
	want := []middleoffice.Partner{a, b2}
	check := func(s middleoffice.Store, when string) {
		t.Helper()
		got, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: Load (-want +got):\n%s", when, diff)
		}
	}
	check(s, "before closing")
	// What Load returns is a copy.
	got, _ = s.Load(ctx)
	got[1].Mail[0] = "changed@b.example"
	check(s, "after the caller changed its copy")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t)
	defer s.Close()
	check(s, "after reopening")
}

func TestFileStore(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "directory.json")
	storeSuite(t, func(t *testing.T) middleoffice.Store {
		s, err := middleoffice.OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
