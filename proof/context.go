package proof

import (
	"context"
	"slices"
	"sync"
)

type idsKey struct{}

// EvidenceIDs collects the ids of the records appended under a context,
// so that an edge (an API answer, a command) gives its caller the ids of
// the evidence it produced. It is safe for concurrent use.
type EvidenceIDs struct {
	mu  sync.Mutex
	ids []string
}

// WithEvidenceIDs returns a context under which every [Log.Append] adds
// the id it appended to the returned collector.
func WithEvidenceIDs(ctx context.Context) (context.Context, *EvidenceIDs) {
	e := &EvidenceIDs{}
	return context.WithValue(ctx, idsKey{}, e), e
}

// IDs are the ids appended so far, in order.
func (e *EvidenceIDs) IDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ids)
}

func noteEvidenceID(ctx context.Context, id string) {
	if e, ok := ctx.Value(idsKey{}).(*EvidenceIDs); ok {
		e.mu.Lock()
		e.ids = append(e.ids, id)
		e.mu.Unlock()
	}
}
