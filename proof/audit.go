package proof

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"pec/evidence"
	"pec/tsa"
)

// AuditOptions are the keys an audit trusts.
type AuditOptions struct {
	Verifier *NoteVerifier  // the log's tree-head key; required
	TSARoots *x509.CertPool // roots of the TSA certificates; required
	// TSAIntermediates are untrusted certificates for the TSA chains.
	TSAIntermediates *x509.CertPool
	// CheckpointFile is the node's saved newest checkpoint: the store
	// must hold its tree or one that extends it (see CheckAgainstSaved).
	// Empty: not checked.
	CheckpointFile string
}

// AuditError names the first place of the store that does not check.
type AuditError struct {
	Place string // "record 17 (id ...)", "tree node (level 2, index 3)", "tree head 1024"
	Err   error
}

func (e *AuditError) Error() string { return "proof: audit: " + e.Place + ": " + e.Err.Error() }
func (e *AuditError) Unwrap() error { return e.Err }

// AuditReport sums up a successful audit.
type AuditReport struct {
	Records  uint64 // sealed records checked
	Heads    uint64 // tree heads checked
	Pending  uint64 // records of the pending tree (integrated, not yet signed), checked
	Unsealed int    // records durable and not yet integrated, checked
}

type auditHead struct {
	size uint64
	root []byte
}

// Audit walks the whole store and checks every tree head (checkpoint
// signature, root, RFC 3161 token on it, tokens in time order), every
// record (canonical encoding, id index), every stored tree node against
// the tree computed from the records, every head's root against that tree,
// and the consistency proof between consecutive heads; a pending tree (a
// sequencer stopped between integrating it and writing its head) is
// checked as a head would be, but for the signature. The first fault is
// an *AuditError naming its place.
//
// Before, a store that can check its own file (the embedded store's page
// walk) does; after, the unsealed records are checked, and the store
// against the saved checkpoint (a rollback or fork is an *AuditError
// wrapping a *RollbackError).
func Audit(ctx context.Context, s Store, opts AuditOptions) (rep AuditReport, err error) {
	if opts.Verifier == nil || opts.TSARoots == nil {
		return rep, errors.New("proof: audit: a note verifier and TSA roots are required")
	}
	if c, ok := s.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			return rep, &AuditError{Place: "store file", Err: err}
		}
	}
	if rep, err = audit(ctx, s, opts); err != nil {
		return rep, err
	}
	unsealed, err := s.Unsealed(ctx, MaxUnsealed)
	if err != nil {
		return rep, auditErr("unsealed records", err)
	}
	for i, r := range unsealed {
		rec, err := evidence.UnmarshalRecord(r.Data)
		if err == nil && rec.ID != r.ID {
			err = fmt.Errorf("kept under id %q", r.ID)
		}
		if err != nil {
			return rep, &AuditError{Place: fmt.Sprintf("unsealed record %d (id %s)", i, r.ID), Err: err}
		}
	}
	rep.Unsealed = len(unsealed)
	if opts.CheckpointFile != "" {
		if _, err := CheckAgainstSaved(ctx, s, opts.Verifier, opts.CheckpointFile); err != nil {
			return rep, &AuditError{Place: "the node's newest checkpoint", Err: err}
		}
	}
	return rep, nil
}

func audit(ctx context.Context, s Store, opts AuditOptions) (AuditReport, error) {
	var rep AuditReport
	var heads []auditHead
	var lastGen time.Time
	err := s.Heads(ctx, func(h *Head) error {
		place := fmt.Sprintf("tree head %d", h.Size)
		if err := checkHead(h, opts); err != nil {
			return &AuditError{Place: place, Err: err}
		}
		tok, _ := tsa.ParseToken(h.Token)
		if tok.GenTime.Before(lastGen) {
			return &AuditError{Place: place, Err: errors.New("its time-stamp is older than the previous head's")}
		}
		lastGen = tok.GenTime
		if n := len(heads); n > 0 && heads[n-1].size >= h.Size {
			return &AuditError{Place: place, Err: errors.New("tree heads out of order")}
		}
		heads = append(heads, auditHead{size: h.Size, root: h.Root})
		return nil
	})
	if err != nil {
		return rep, auditErr("tree heads", err)
	}
	rep.Heads = uint64(len(heads))
	// Read after the heads: a tree integrated meanwhile is above them.
	pend, err := s.Pending(ctx)
	if errors.Is(err, ErrNotFound) {
		pend = nil
	} else if err != nil {
		return rep, auditErr("pending tree", err)
	}
	if pend != nil {
		if n := len(heads); n > 0 && heads[n-1].size >= pend.Size {
			return rep, &AuditError{Place: fmt.Sprintf("pending tree %d", pend.Size), Err: fmt.Errorf("not above the last tree head (size %d)", heads[n-1].size)}
		}
		heads = append(heads, auditHead{size: pend.Size, root: pend.Root})
	}
	// Every head has its tree, of its root; above the last head, the
	// pending tree alone (trees integrated after the heads were read are
	// not looked at).
	ti := 0
	err = s.Trees(ctx, func(tr *Tree) error {
		place := fmt.Sprintf("tree %d", tr.Size)
		switch {
		case len(heads) > 0 && tr.Size > heads[len(heads)-1].size:
			return nil
		case ti < len(heads) && tr.Size < heads[ti].size:
			return &AuditError{Place: place, Err: errors.New("an integrated tree below the newest head, with no head")}
		case ti < len(heads) && tr.Size > heads[ti].size:
			return &AuditError{Place: fmt.Sprintf("tree head %d", heads[ti].size), Err: errors.New("no integrated tree of its size")}
		case ti < len(heads) && !bytes.Equal(tr.Root, heads[ti].root):
			return &AuditError{Place: place, Err: fmt.Errorf("its root is not that of its tree head (or of the pending tree)")}
		}
		ti++
		return nil
	})
	if err != nil {
		return rep, auditErr("trees", err)
	}
	if ti < len(heads) {
		return rep, &AuditError{Place: fmt.Sprintf("tree head %d", heads[ti].size), Err: errors.New("no integrated tree of its size")}
	}
	headPlace := func(i int) string {
		if pend != nil && i == len(heads)-1 {
			return fmt.Sprintf("pending tree %d", heads[i].size)
		}
		return fmt.Sprintf("tree head %d", heads[i].size)
	}

	rng := rangeFactory.NewEmptyRange(0)
	var ids []compact.NodeID
	var computed [][]byte
	visit := func(id compact.NodeID, hash []byte) {
		ids = append(ids, id)
		computed = append(computed, hash)
	}
	// checkNodes compares the nodes computed since the last head with
	// the stored ones, then the root with the head's.
	next := 0
	checkHeadRoot := func() error {
		stored, err := s.Nodes(ctx, ids)
		if err != nil {
			// Name the missing node.
			for i, id := range ids {
				if _, err := s.Nodes(ctx, ids[i:i+1]); err != nil {
					return &AuditError{Place: fmt.Sprintf("tree node (level %d, index %d)", id.Level, id.Index), Err: err}
				}
			}
			return auditErr("tree nodes", err)
		}
		for i, id := range ids {
			if !bytes.Equal(stored[i], computed[i]) {
				place := fmt.Sprintf("tree node (level %d, index %d)", id.Level, id.Index)
				if id.Level == 0 {
					place = fmt.Sprintf("tree node (level 0, index %d: the leaf hash of record %d)", id.Index, id.Index)
				}
				return &AuditError{Place: place, Err: errors.New("the stored hash is not the one computed from the records")}
			}
		}
		ids, computed = ids[:0], computed[:0]
		h := heads[next]
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return auditErr(headPlace(next), err)
		}
		if !bytes.Equal(root, h.root) {
			return &AuditError{Place: headPlace(next), Err: errors.New("its root hash is not the root of the stored records")}
		}
		if next > 0 {
			prev := heads[next-1]
			p, err := ConsistencyProof(ctx, s, prev.size, h.size)
			if err == nil {
				err = VerifyConsistency(prev.size, h.size, p, prev.root, h.root)
			}
			if err != nil {
				return &AuditError{Place: fmt.Sprintf("consistency of tree heads %d and %d", prev.size, h.size), Err: err}
			}
		}
		next++
		return nil
	}
	var want uint64
	checkRecord := func(i uint64, r *StoredRecord, sealed bool) error {
		place := fmt.Sprintf("record %d", i)
		if i != want {
			return &AuditError{Place: fmt.Sprintf("record %d", want), Err: errors.New("missing")}
		}
		want++
		if next == len(heads) {
			return &AuditError{Place: place, Err: errors.New("not covered by any tree head")}
		}
		rec, err := evidence.UnmarshalRecord(r.Data)
		if err != nil {
			return &AuditError{Place: place, Err: err}
		}
		place += " (id " + rec.ID + ")"
		idx, err := s.Lookup(ctx, rec.ID)
		switch {
		case !sealed && errors.Is(err, ErrNotSealed):
		case !sealed && err == nil:
			return &AuditError{Place: place, Err: errors.New("id index: of the pending tree, yet sealed")}
		case err != nil:
			return &AuditError{Place: place, Err: fmt.Errorf("id index: %w", err)}
		case idx != i:
			return &AuditError{Place: place, Err: fmt.Errorf("id index: the id points to record %d", idx)}
		}
		if err := rng.Append(LeafHash(r.Data), visit); err != nil {
			return auditErr(place, err)
		}
		if rng.End() == heads[next].size {
			return checkHeadRoot()
		}
		return nil
	}
	err = s.Records(ctx, 0, func(i uint64, r *StoredRecord) error { return checkRecord(i, r, true) })
	if err != nil {
		return rep, auditErr("records", err)
	}
	rep.Records = want
	if pend != nil {
		for i := want; i < pend.Size; i++ {
			r, err := s.Record(ctx, i)
			if err == nil {
				err = checkRecord(i, r, false)
			}
			if err != nil {
				return rep, auditErr(fmt.Sprintf("record %d of the pending tree", i), err)
			}
		}
		rep.Pending = pend.Size - rep.Records
	}
	if next < len(heads) {
		return rep, &AuditError{Place: headPlace(next), Err: fmt.Errorf("the store holds only %d records", want)}
	}
	return rep, nil
}

func auditErr(place string, err error) error {
	if _, ok := errors.AsType[*AuditError](err); ok {
		return err
	}
	return &AuditError{Place: place, Err: err}
}

// checkHead checks a head on its own: its checkpoint's signature, size and
// root, and the RFC 3161 token on the checkpoint.
func checkHead(h *Head, opts AuditOptions) error {
	cp, err := OpenCheckpoint(opts.Verifier, "", h.Checkpoint)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Size != h.Size || !bytes.Equal(cp.Root, h.Root) {
		return errors.New("the signed checkpoint is of another tree")
	}
	digest := sha256.Sum256(h.Checkpoint)
	if _, err := tsa.Verify(h.Token, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: opts.TSARoots, Intermediates: opts.TSAIntermediates}); err != nil {
		return fmt.Errorf("time-stamp token: %w", err)
	}
	return nil
}
