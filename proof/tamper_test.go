package proof_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"pec/proof"
)

// TestAuditFindsEveryFlippedByte flips one byte of every value and every
// key of the store, in turn: the audit must fail and name the place.
func TestAuditFindsEveryFlippedByte(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, fastSeal)
	for i := range 11 {
		appendSealed(t, l, sampleRecord(i))
	}
	l.Close()
	if _, err := proof.Audit(t.Context(), s, e.auditOptions()); err != nil {
		t.Fatalf("audit of the intact store: %v", err)
	}
	type entry struct{ bucket, key, value []byte }
	var entries []entry
	err := s.DB().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				entries = append(entries, entry{append([]byte(nil), name...), append([]byte(nil), k...), append([]byte(nil), v...)})
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// place is what the audit must name for a change to this entry.
	place := func(en entry) string {
		switch string(en.bucket) {
		case "records":
			return fmt.Sprintf("record %d", binary.BigEndian.Uint64(en.key))
		case "heads":
			return "tree head "
		case "trees":
			return fmt.Sprintf("tree %d", binary.BigEndian.Uint64(en.key))
		case "nodes":
			return fmt.Sprintf("(level %d, index %d", en.key[0], binary.BigEndian.Uint64(en.key[1:]))
		case "ids":
			return "(id " + string(en.key) + ")"
		}
		return "?"
	}
	put := func(bucket, k, v []byte) {
		t.Helper()
		if err := s.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, v) }); err != nil {
			t.Fatal(err)
		}
	}
	del := func(bucket, k []byte) {
		t.Helper()
		if err := s.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(k) }); err != nil {
			t.Fatal(err)
		}
	}
	audit := func(what string, want string) {
		t.Helper()
		_, err := proof.Audit(t.Context(), s, e.auditOptions())
		ae, ok := errors.AsType[*proof.AuditError](err)
		if !ok {
			t.Errorf("%s: audit: %v, want an AuditError", what, err)
			return
		}
		// A changed id key or index names the record it belongs to.
		ok = strings.Contains(ae.Place, want) || strings.HasPrefix(want, "(id ") && strings.HasPrefix(ae.Place, "record ")
		if !ok || ae.Place == "" {
			t.Errorf("%s: audit names %q, want a place with %q (%v)", what, ae.Place, want, err)
		}
	}
	flips := 0
	for _, en := range entries {
		positions := []int{0, len(en.value) / 2, len(en.value) - 1}
		for _, pos := range positions {
			v := append([]byte(nil), en.value...)
			v[pos] ^= 0x01
			put(en.bucket, en.key, v)
			audit(fmt.Sprintf("%s %x: value byte %d", en.bucket, en.key, pos), place(en))
			put(en.bucket, en.key, en.value)
			flips++
		}
		// The same value under a flipped key.
		k := append([]byte(nil), en.key...)
		k[0] ^= 0x80 // no collision with another key
		del(en.bucket, en.key)
		put(en.bucket, k, en.value)
		audit(fmt.Sprintf("%s %x: key flipped", en.bucket, en.key), "")
		del(en.bucket, k)
		put(en.bucket, en.key, en.value)
		flips++
	}
	if _, err := proof.Audit(t.Context(), s, e.auditOptions()); err != nil {
		t.Fatalf("audit after restoring: %v", err)
	}
	t.Logf("%d entries, %d changes, every one found", len(entries), flips)
}
