package middleoffice

import "context"

// Admin is the directory's administration for a principal: each method
// asks the policy first (ActionAdminister), so that the gateway's
// /v1/partners and the portals refuse alike, then reads or changes the
// directory. A refusal is a *ForbiddenError; the directory's own errors
// (ErrNotFound, ErrExists, ErrConflict, ErrNoEvidence, *InvalidError)
// pass through. It is safe for concurrent use.
type Admin struct{ policy *Policy }

// NewAdmin administers the directory of pol.
func NewAdmin(pol *Policy) *Admin { return &Admin{policy: pol} }

// Authorize returns nil when by may administer the directory, a
// *ForbiddenError otherwise; every method below asks it first.
func (a *Admin) Authorize(by *Principal) error {
	return a.policy.Authorize(by, ActionAdminister, Resource{})
}

// Partners lists the directory's partners, sorted by id.
func (a *Admin) Partners(_ context.Context, by *Principal) ([]Partner, error) {
	if err := a.Authorize(by); err != nil {
		return nil, err
	}
	return a.policy.Directory().Partners(), nil
}

// Partner returns the partner id (ErrNotFound if none).
func (a *Admin) Partner(_ context.Context, by *Principal, id string) (Partner, error) {
	if err := a.Authorize(by); err != nil {
		return Partner{}, err
	}
	p, ok := a.policy.Directory().Partner(id)
	if !ok {
		return Partner{}, ErrNotFound
	}
	return p, nil
}

// Add is Directory.Add for an administrator.
func (a *Admin) Add(ctx context.Context, by *Principal, p Partner) (Partner, error) {
	if err := a.Authorize(by); err != nil {
		return Partner{}, err
	}
	return a.policy.Directory().Add(ctx, by, p)
}

// Replace is Directory.Replace for an administrator.
func (a *Admin) Replace(ctx context.Context, by *Principal, p Partner) (Partner, error) {
	if err := a.Authorize(by); err != nil {
		return Partner{}, err
	}
	return a.policy.Directory().Replace(ctx, by, p)
}

// Patch is Directory.PatchPartner for an administrator.
func (a *Admin) Patch(ctx context.Context, by *Principal, id string, patch []byte) (Partner, error) {
	if err := a.Authorize(by); err != nil {
		return Partner{}, err
	}
	return a.policy.Directory().PatchPartner(ctx, by, id, patch)
}

// SetDisabled is Directory.SetDisabled for an administrator.
func (a *Admin) SetDisabled(ctx context.Context, by *Principal, id string, disabled bool) (Partner, error) {
	if err := a.Authorize(by); err != nil {
		return Partner{}, err
	}
	return a.policy.Directory().SetDisabled(ctx, by, id, disabled)
}
