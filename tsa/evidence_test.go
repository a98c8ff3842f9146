package tsa_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"testing"

	"pec/evidence"
	"pec/tsa"
)

// TestEvidenceOfTokens: with an evidence appender, each granted token is
// one timestamp.issued record (the client, the TSA, the imprint, the
// token's digest, serial and policy), its id is returned, and the journal
// is not written: one durable write a token. Unrecorded tokens are not
// recorded at all; a token whose record fails is not released.
func TestEvidenceOfTokens(t *testing.T) {
	t.Parallel()
	base := newTestTSA(t, nil)
	ev := &evidence.Memory{}
	a := base.WithEvidence(ev)
	client := evidence.Actor{Role: "client", Subject: "CN=partner-a", Fingerprint: [32]byte{7}}
	req := makeRequest(t, reqOpts{nonce: big.NewInt(42), certReq: true})
	resp, id, err := a.RespondWith(context.Background(), req, tsa.RespondOptions{Client: &client})
	if err != nil || id == "" {
		t.Fatalf("RespondWith: %v, id %q", err, id)
	}
	tok, err := tsa.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	recs := ev.Records()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	r := recs[0]
	sum := sha256.Sum256(tok.Raw)
	if r.ID != id || r.Type != evidence.TimestampIssued || len(r.Actors) != 2 || r.Actors[0] != client || r.Actors[1].Role != "tsa" ||
		!bytes.Contains([]byte(r.Actors[1].Subject), []byte("tsa test TSA")) || len(r.Digests) != 2 || r.Digests[0].Name != "imprint" ||
		!bytes.Equal(r.Digests[1].Value, sum[:]) || r.Attributes[1].Value != tok.Serial.Text(16) || !r.Time.Equal(tok.GenTime) {
		t.Errorf("record %+v", r)
	}
	wantAttrs := []evidence.Attribute{{Key: "policy", Value: "2.999.3161.1"}, {Key: "serial", Value: tok.Serial.Text(16)}}
	if r.Subject != "tsa-serial-"+tok.Serial.Text(16) || r.Digests[0].Algorithm != "sha256" || !bytes.Equal(r.Digests[0].Value, tok.Imprint) ||
		r.Digests[1].Name != "token" || r.Digests[1].Algorithm != "sha256" || fmt.Sprint(r.Attributes) != fmt.Sprint(wantAttrs) {
		t.Errorf("record %+v; want subject tsa-serial-%s and attributes %v", r, tok.Serial.Text(16), wantAttrs)
	}
	// Plain RFC 3161 over HTTP: no client, the TSA alone. A policy the
	// request names is the record's.
	other := makeRequest(t, reqOpts{policy: asn1.ObjectIdentifier{2, 999, 3161, 2}})
	if _, _, err := a.RespondWith(context.Background(), other, tsa.RespondOptions{}); err != nil {
		t.Fatal(err)
	}
	if recs := ev.Records(); len(recs) != 2 || len(recs[1].Actors) != 1 || recs[1].Actors[0].Role != "tsa" || recs[1].Attributes[0].Value != "2.999.3161.2" {
		t.Errorf("a record without a client, policy 2.999.3161.2: %+v", recs[len(recs)-1])
	}
	// Unrecorded (a checkpoint's token, a signature timestamp): no record.
	if _, id, err := a.RespondWith(context.Background(), req, tsa.RespondOptions{Unrecorded: true}); err != nil || id != "" {
		t.Errorf("Unrecorded: %v, id %q", err, id)
	}
	if n := len(ev.Records()); n != 2 {
		t.Errorf("%d records after an unrecorded token, want 2", n)
	}
	// The evidence authority does not write the journal; the base one,
	// which has no evidence appender, does.
	if data, _ := os.ReadFile(base.journal); len(bytes.TrimRight(data, "\x00")) != 0 {
		t.Errorf("the journal holds %q with an evidence log", bytes.TrimRight(data, "\x00"))
	}
	// A token whose record cannot be made durable is not released.
	ev.Err = evidence.ErrUnavailable
	if resp, id, err := a.RespondWith(context.Background(), req, tsa.RespondOptions{}); !errors.Is(err, evidence.ErrUnavailable) || resp != nil || id != "" {
		t.Errorf("a failing log: %x, %q, %v; want no token and ErrUnavailable", resp, id, err)
	}
}

// TestWithEvidenceSharesOrdering: the two authorities of WithEvidence
// issue from one serial space and, with ordering, one strictly increasing
// genTime.
func TestWithEvidenceSharesOrdering(t *testing.T) {
	t.Parallel()
	base := newTestTSA(t, func(c *tsa.Config, _ *tsa.Options) { c.Ordering = true })
	ev := base.WithEvidence(&evidence.Memory{})
	var last *tsa.Token
	serials := map[string]bool{}
	for i := range 50 {
		a := base.Authority
		if i%2 == 1 {
			a = ev
		}
		resp, err := a.Respond(context.Background(), makeRequest(t, reqOpts{}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tsa.ParseToken(resp)
		if err != nil {
			t.Fatal(err)
		}
		if serials[tok.Serial.String()] {
			t.Fatalf("serial %s twice", tok.Serial)
		}
		serials[tok.Serial.String()] = true
		if last != nil && !tok.GenTime.After(last.GenTime) {
			t.Fatalf("genTime %s after %s", tok.GenTime, last.GenTime)
		}
		last = tok
	}
}

// TestRespondIntoBuf: a Buf with room holds the response, token after
// token, each recorded with its own digest; one without room is left
// alone; a rejection never uses it.
func TestRespondIntoBuf(t *testing.T) {
	t.Parallel()
	ev := &evidence.Memory{}
	a := newTestTSA(t, nil).WithEvidence(ev)
	buf := make([]byte, 0, 8192)
	var prev []byte
	for i := range 3 {
		req := makeRequest(t, reqOpts{nonce: big.NewInt(int64(i + 1)), certReq: i == 1})
		resp, _, err := a.RespondWith(context.Background(), req, tsa.RespondOptions{Buf: buf})
		if err != nil {
			t.Fatal(err)
		}
		if &resp[0] != &buf[:1][0] {
			t.Fatalf("token %d is not in Buf", i)
		}
		tok, err := tsa.ParseToken(resp)
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if tok.Nonce.Int64() != int64(i+1) {
			t.Errorf("token %d has nonce %v", i, tok.Nonce)
		}
		sum := sha256.Sum256(tok.Raw)
		if recs := ev.Records(); len(recs) != i+1 || !bytes.Equal(recs[i].Digests[1].Value, sum[:]) {
			t.Errorf("token %d: its record does not name its digest", i)
		}
		if bytes.Equal(resp, prev) {
			t.Errorf("token %d is the one before", i)
		}
		prev = bytes.Clone(resp)
	}
	small := make([]byte, 0, 16)
	resp, _, err := a.RespondWith(context.Background(), makeRequest(t, reqOpts{}), tsa.RespondOptions{Buf: small})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) <= cap(small) || &resp[0] == &small[:1][0] {
		t.Errorf("a %d-byte response in a Buf of %d", len(resp), cap(small))
	}
	if _, err := tsa.ParseToken(resp); err != nil {
		t.Error(err)
	}
	junk := bytes.Repeat([]byte{0xee}, 64)
	rej, _, err := a.RespondWith(context.Background(), []byte{0x30, 0x00}, tsa.RespondOptions{Buf: junk[:0]})
	if err != nil || &rej[0] == &junk[0] || !bytes.Equal(junk, bytes.Repeat([]byte{0xee}, 64)) {
		t.Errorf("a rejection wrote into Buf: %v", err)
	}
}
