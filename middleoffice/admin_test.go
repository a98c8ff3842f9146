package middleoffice_test

import (
	"context"
	"errors"
	"testing"

	"pec/evidence"
	"pec/middleoffice"
)

// TestAdmin: every method of the administration asks the policy first: a
// partner without the admin role is refused with a *ForbiddenError and
// changes nothing (no evidence); the admin reads and changes the
// directory, as the gateway and the portals do through it.
func TestAdmin(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	adminCert := p.client(t, p.ca, "admin", "Ops")
	aCert := p.client(t, p.ca, "partner-a", "A")
	ev := &evidence.Memory{}
	d := openDir(t, middleoffice.Config{Partners: []middleoffice.PartnerConfig{
		partner("admin", []middleoffice.Role{middleoffice.RoleAdmin}, byFingerprint(adminCert)),
		partner("partner-a", nil, byFingerprint(aCert)),
	}}, nil, ev)
	pol, err := middleoffice.NewPolicy(d, middleoffice.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	adm := middleoffice.NewAdmin(pol)
	ctx := context.Background()
	admin, a := d.Resolve(adminCert), d.Resolve(aCert)
	newPartner := middleoffice.Partner{ID: "partner-c", Name: "Partner C"}

	for name, call := range map[string]func(*middleoffice.Principal) error{
		"Partners": func(by *middleoffice.Principal) error { _, err := adm.Partners(ctx, by); return err },
		"Partner":  func(by *middleoffice.Principal) error { _, err := adm.Partner(ctx, by, "partner-a"); return err },
		"Add":      func(by *middleoffice.Principal) error { _, err := adm.Add(ctx, by, newPartner); return err },
		"Replace": func(by *middleoffice.Principal) error {
			_, err := adm.Replace(ctx, by, middleoffice.Partner{ID: "partner-a", Name: "x"})
			return err
		},
		"Patch": func(by *middleoffice.Principal) error {
			_, err := adm.Patch(ctx, by, "partner-a", []byte(`{"name":"y"}`))
			return err
		},
		"SetDisabled": func(by *middleoffice.Principal) error { _, err := adm.SetDisabled(ctx, by, "admin", true); return err },
	} {
		t.Run(name, func(t *testing.T) {
			err := call(a)
			if fe, ok := errors.AsType[*middleoffice.ForbiddenError](err); !ok || fe.Action != middleoffice.ActionAdminister {
				t.Fatalf("partner-a: %v, want a refusal of %s", err, middleoffice.ActionAdminister)
			}
		})
	}
	if n := len(ev.Records()); n != 0 {
		t.Fatalf("refused changes left %d records", n)
	}

	list, err := adm.Partners(ctx, admin)
	if err != nil || len(list) != 2 {
		t.Fatalf("Partners: %d, %v", len(list), err)
	}
	if _, err := adm.Partner(ctx, admin, "nosuch"); !errors.Is(err, middleoffice.ErrNotFound) {
		t.Fatalf("Partner(nosuch): %v", err)
	}
	added, err := adm.Add(ctx, admin, newPartner)
	if err != nil || added.EvidenceID == "" {
		t.Fatalf("Add: %+v, %v", added, err)
	}
	if _, err := adm.Patch(ctx, admin, "partner-c", []byte(`{"name":"C"}`)); err != nil {
		t.Fatal(err)
	}
	if p, err := adm.SetDisabled(ctx, admin, "partner-c", true); err != nil || !p.Disabled {
		t.Fatalf("SetDisabled: %+v, %v", p, err)
	}
	if n := len(ev.Records()); n != 3 {
		t.Errorf("%d records for 3 changes", n)
	}
}
