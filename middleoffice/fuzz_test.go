package middleoffice_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"pec/middleoffice"
)

// FuzzDecodePartner: the body of POST and PUT /v1/partners. A partner is
// taken or refused with an *InvalidError, never a panic; one taken
// survives a round trip through its JSON.
func FuzzDecodePartner(f *testing.F) {
	f.Add([]byte(`{"id": "partner-a", "name": "A", "roles": ["partner"], "certificates": [{"subject": "CN=a,O=A", "issuer": "CN=root"}]}`))
	f.Add([]byte(`{"id": "b", "name": "B", "certificates": [{"fingerprint": "sha256:` + "AB" + `"}], "channel": {"type": "webhook", "url": "https://b.example/in"}}`))
	f.Add([]byte(`{"id": "m", "name": "M", "channel": {"type": "mail"}, "mail": ["greffe@m.example"], "encryption_certificate": "MIIB"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := middleoffice.DecodePartner(data)
		if err != nil {
			if _, ok := errors.AsType[*middleoffice.InvalidError](err); !ok {
				t.Fatalf("not an *InvalidError: %T %v", err, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded, then invalid: %v", err)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := middleoffice.DecodePartner(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if diff := cmp.Diff(p, q); diff != "" {
			t.Fatalf("round trip changed the partner:\n%s", diff)
		}
	})
}

// FuzzPatch: the body of PATCH /v1/partners/{id} (RFC 7396).
func FuzzPatch(f *testing.F) {
	f.Add([]byte(`{"name": "renamed", "mail": null}`))
	f.Add([]byte(`{"channel": {"type": "webhook", "url": "https://p.example/hook"}}`))
	f.Add([]byte(`{"disabled": true, "roles": ["agent"]}`))
	base := middleoffice.Partner{ID: "p", Name: "P", Roles: []middleoffice.Role{"partner"}, Mail: []string{"a@p.example"}, Channel: middleoffice.Channel{Type: "pull"}}
	f.Fuzz(func(t *testing.T, patch []byte) {
		q, err := base.Patch(patch)
		if err != nil {
			if _, ok := errors.AsType[*middleoffice.InvalidError](err); !ok {
				t.Fatalf("not an *InvalidError: %T %v", err, err)
			}
			return
		}
		if q.ID != base.ID || q.Validate() != nil {
			t.Fatalf("patched into %+v", q)
		}
	})
}
