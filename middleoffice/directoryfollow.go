package middleoffice

import (
	"context"
	"fmt"
	"time"
)

// ChangeNotifier is a Store that several nodes share and that tells when
// another node may have changed it ([PGStore]); [Directory.Follow] loads
// the directory again then.
type ChangeNotifier interface {
	// Changes delivers a value when the store may have been changed by
	// another node; several changes may give one value.
	Changes() <-chan struct{}
}

// Reload reads the store again and publishes its partners, over
// pec.yaml's, as Open does: the changes other nodes made. A store that
// holds what the directory holds already changes nothing (the principals
// cached stay). A failure (the store unreachable, or a stored partner
// that is invalid or conflicts with another) leaves the directory as it
// was and is returned.
func (d *Directory) Reload(ctx context.Context) error {
	if d.store == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	stored, err := d.store.Load(ctx)
	if err != nil {
		return err
	}
	partners := make(map[string]*Partner, len(d.base)+len(stored))
	for id, p := range d.base {
		partners[id] = &p
	}
	for _, p := range stored {
		p.normalize()
		if err := p.Validate(); err != nil {
			return fmt.Errorf("middleoffice: stored partner %q: %w", p.ID, err)
		}
		partners[p.ID] = &p
	}
	st := d.state.Load()
	if samePartners(st.partners, partners) {
		return nil
	}
	nst, err := newState(partners, st.routes)
	if err != nil {
		return fmt.Errorf("middleoffice: the stored directory: %w", err)
	}
	for _, id := range nst.ids {
		if old := st.partners[id]; old == nil || old.Revision != nst.partners[id].Revision {
			d.log.InfoContext(ctx, "directory: partner changed on another node", "partner", id, "revision", nst.partners[id].Revision)
		}
	}
	d.state.Store(nst)
	return nil
}

// samePartners: a change always moves a partner's revision and evidence.
func samePartners(a, b map[string]*Partner) bool {
	if len(a) != len(b) {
		return false
	}
	for id, p := range a {
		q := b[id]
		if q == nil || q.Revision != p.Revision || q.EvidenceID != p.EvidenceID {
			return false
		}
	}
	return true
}

// followRetry is how long Follow waits to load again after a failure.
const followRetry = time.Second

// Follow loads the directory again each time its store tells of a change
// by another node, until ctx ends; then it returns nil. With a store that
// does not tell ([FileStore], which one node holds), it returns nil at
// once. A failed load is logged and tried again a second later.
func (d *Directory) Follow(ctx context.Context) error {
	n, ok := d.store.(ChangeNotifier)
	if !ok {
		return nil
	}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.Changes():
		case <-retry:
		}
		retry = nil
		if err := d.Reload(ctx); err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "directory: loading the changes of other nodes", "err", err)
			retry = time.After(followRetry)
		}
	}
}
