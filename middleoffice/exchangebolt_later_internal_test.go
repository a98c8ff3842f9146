package middleoffice

import (
	"bytes"
	"context"
	"io"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestLaterPayloadsBucket: the envelopes and the data key go to the
// payloads bucket, the seal and the acknowledgment to payloads-later; a
// payload stored in payloads before (by an earlier version) is read, and
// replaced by the one committed after it, once; RemovePayloads empties
// both buckets.
func TestLaterPayloadsBucket(t *testing.T) {
	s, err := OpenBoltExchanges(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Stored as before: a seal in the payloads bucket.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPayloads).Put(payloadKey("x1", sealName), []byte("old seal"))
	}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		t.Helper()
		p, err := s.OpenPayload(ctx, "x1", name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer p.Close()
		b, _ := io.ReadAll(p)
		return string(b)
	}
	if got := read(sealName); got != "old seal" {
		t.Errorf("the seal stored before: %q", got)
	}
	for _, c := range []struct{ name, data string }{
		{"document-0.p7m", "envelope"}, {dataKeyName, "key"}, {sealName, "new seal"}, {"acknowledgment.p7m", "ack"},
	} {
		w, err := s.CreatePayload(ctx, "x1", c.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(c.data))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close() // the staged payloads written
	if s, err = OpenBoltExchanges(s.payloads[:len(s.payloads)-len("/payloads")]); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys := func(b []byte) (out []string) {
		s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(b).ForEach(func(k, _ []byte) error {
				out = append(out, string(bytes.TrimPrefix(k, []byte("x1\x00"))))
				return nil
			})
		})
		return out
	}
	if got := keys(bucketPayloads); len(got) != 2 || got[0] != dataKeyName || got[1] != "document-0.p7m" {
		t.Errorf("payloads: %q", got)
	}
	if got := keys(bucketLater); len(got) != 2 || got[0] != "acknowledgment.p7m" || got[1] != sealName {
		t.Errorf("payloads-later: %q", got)
	}
	if got := read(sealName); got != "new seal" {
		t.Errorf("the seal committed last: %q", got)
	}
	if got := read("document-0.p7m"); got != "envelope" {
		t.Errorf("the envelope: %q", got)
	}
	if err := s.RemovePayloads(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	if a, b := keys(bucketPayloads), keys(bucketLater); len(a)+len(b) != 0 {
		t.Errorf("after RemovePayloads: %q %q", a, b)
	}
}
