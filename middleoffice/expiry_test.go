package middleoffice_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"pec/evidence"
	"pec/middleoffice"
)

// TestExpiry: of two exchanges delivered to b's pull inbox, b fetches one
// and acknowledges the other; expire_after later, the one fetched but not
// answered expires (evidence, out of the inbox, no longer answered), its
// sender is told, and the acknowledged one is left alone.
func TestExpiry(t *testing.T) {
	clk := &clock{}
	var notify *endpoint
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{ExpireAfter: 48 * time.Hour}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		e.now = clk.now
		notify = newEndpoint(e, "", "/pec/notify", status(http.StatusOK))
		pcs[0].Channel.NotifyURL = notify.url
	})
	ctx := t.Context()
	a, b := e.partners["a"], e.partners["b"]
	var ids []string
	for _, name := range []string{"fetched.pdf", "acknowledged.pdf"} {
		doc := newDocument(name, []byte("%PDF-1.7 "+name))
		sub, err := e.x.Submit(ctx, a.principal, manifest("b", doc), sources(doc))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.Exchange)
	}
	if errs := drain(t, e); len(errs) != 0 {
		t.Fatal(errs)
	}
	d, err := e.x.Fetch(ctx, b.principal, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := e.x.Ack(ctx, b.principal, ids[1], middleoffice.Acknowledgment{Reject: "hors délai"}); err != nil {
		t.Fatal(err)
	}
	drain(t, e)
	clk.advance(47 * time.Hour)
	if did, _ := e.x.Work(ctx); did {
		t.Fatal("a job was due before expire_after")
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 1 {
		t.Fatalf("b's inbox before expiry: %d", len(list))
	}
	clk.advance(2 * time.Hour)
	if errs := drain(t, e); len(errs) != 0 {
		t.Fatal(errs)
	}

	st, err := e.x.Status(ctx, a.principal, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []evidence.EventType{evidence.SubmissionAccepted, evidence.Delivered, evidence.Retrieved, evidence.Expired}
	if got := eventTypes(st); !slices.Equal(got, want) || st.State != middleoffice.StateExpired {
		t.Fatalf("the fetched exchange: %v, %s; want %v, expired", got, st.State, want)
	}
	if got := recordTypes(e, ids[0]); !slices.Equal(got, want) {
		t.Errorf("its records: %v", got)
	}
	r := e.record(st.Events[3].EvidenceID)
	if recAttr(r, "retrieved") != "true" || recAttr(r, "expire_after") != "48h0m0s" || !slices.Equal(r.Previous, []string{st.Events[1].EvidenceID}) {
		t.Errorf("delivery.expired: %+v, previous %v", r.Attributes, r.Previous)
	}
	if list, _ := e.x.Inbox(ctx, b.principal, "", 0); len(list) != 0 {
		t.Errorf("an expired exchange in b's inbox")
	}
	if _, err := e.x.Fetch(ctx, b.principal, ids[0]); !errors.Is(err, middleoffice.ErrExpired) {
		t.Errorf("Fetch of an expired exchange: %v, want ErrExpired", err)
	}
	if _, err := e.x.Ack(ctx, b.principal, ids[0], middleoffice.Acknowledgment{Reject: "trop tard"}); !errors.Is(err, middleoffice.ErrExpired) {
		t.Errorf("Ack of an expired exchange: %v, want ErrExpired", err)
	}
	if bs, err := e.x.Status(ctx, b.principal, ids[0]); err != nil || bs.State != middleoffice.StateExpired {
		t.Errorf("b's status of the expired exchange: %+v, %v", bs, err)
	}
	if st, _ := e.x.Status(ctx, a.principal, ids[1]); st.State != middleoffice.StateRefused || len(st.Events) != 3 {
		t.Errorf("the refused exchange: %s, %v", st.State, eventTypes(st))
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs left: %+v", jobs)
	}
	var told []string
	for _, n := range notify.got() {
		told = append(told, n.notification.Exchange[len(n.notification.Exchange)-4:]+" "+string(n.notification.State))
	}
	slices.Sort(told)
	wantTold := []string{ids[0][len(ids[0])-4:] + " delivered", ids[0][len(ids[0])-4:] + " expired", ids[1][len(ids[1])-4:] + " delivered", ids[1][len(ids[1])-4:] + " refused"}
	slices.Sort(wantTold)
	if !slices.Equal(told, wantTold) {
		t.Errorf("a was told %v, want %v", told, wantTold)
	}
	for _, n := range notify.got() {
		if n.notification.State == middleoffice.StateRefused && n.notification.Detail != "hors délai" {
			t.Errorf("the refusal's notification: %+v", n.notification)
		}
	}
}

// TestNeverExpire: with a negative expire_after, a delivery enqueues no
// expiry.
func TestNeverExpire(t *testing.T) {
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{ExpireAfter: -1})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7"))
	if _, err := e.x.Submit(ctx, e.partners["a"].principal, manifest("b", doc), sources(doc)); err != nil {
		t.Fatal(err)
	}
	drain(t, e)
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("jobs %+v, want none", jobs)
	}
}

// TestNotificationRetried: a sender's endpoint that fails is tried again
// until it answers 2xx, and given up dead_letter_after after the event.
func TestNotificationRetried(t *testing.T) {
	clk := &clock{}
	var notify *endpoint
	e := newExchangeEnv(t, middleoffice.ExchangeConfig{RetryDelay: time.Minute, MaxRetryDelay: 5 * time.Minute, DeadLetterAfter: time.Hour}, func(e *exchangeEnv, pcs []middleoffice.PartnerConfig) {
		nodeTLS(e)
		e.now = clk.now
		notify = newEndpoint(e, "", "/pec/notify", func(n int, p *pushed) (int, http.Header, []byte) {
			if n < 2 || n >= 3 {
				return http.StatusInternalServerError, nil, nil
			}
			return http.StatusOK, nil, nil
		})
		pcs[0].Channel.NotifyURL = notify.url
	})
	ctx := t.Context()
	doc := newDocument("a.pdf", []byte("%PDF-1.7"))
	sub, err := e.x.Submit(ctx, e.partners["a"].principal, manifest("b", doc), sources(doc))
	if err != nil {
		t.Fatal(err)
	}
	// The delivery's notification: 500, 500, 200.
	for range 3 {
		drain(t, e)
		clk.advance(6 * time.Minute)
	}
	got := notify.got()
	if len(got) != 3 || got[2].notification.Event != evidence.Delivered || got[0].notification != got[2].notification {
		t.Fatalf("%d notifications; want the delivery's, three times", len(got))
	}
	// The refusal's: 500 for more than an hour, then dropped.
	if _, err := e.x.Ack(ctx, e.partners["b"].principal, sub.Exchange, middleoffice.Acknowledgment{Reject: "non"}); err != nil {
		t.Fatal(err)
	}
	for range 15 {
		drain(t, e)
		clk.advance(6 * time.Minute)
	}
	if jobs, _ := e.store.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("the notification was not dropped: %+v", jobs)
	}
	n := len(notify.got())
	if n < 3+10 || n > 3+16 {
		t.Errorf("%d attempts of the refusal's notification", n-3)
	}
	if last := notify.got()[n-1].notification; last.State != middleoffice.StateRefused || !strings.Contains(last.Detail, "non") {
		t.Errorf("last notification %+v", last)
	}
	clk.advance(time.Hour)
	drain(t, e)
	if len(notify.got()) != n {
		t.Error("tried again once dropped")
	}
}

// TestExchangeConfigValidate: the new fields' faults name their paths;
// a negative expire_after is "never", not a fault.
func TestExchangeConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  middleoffice.ExchangeConfig
		want string // "": valid
	}{
		{middleoffice.ExchangeConfig{}, ""},
		{middleoffice.ExchangeConfig{ExpireAfter: -1, DeadLetterAfter: time.Minute, PushTimeout: time.Second}, ""},
		{middleoffice.ExchangeConfig{DeadLetterAfter: -time.Hour}, "exchange.dead_letter_after: not negative"},
		{middleoffice.ExchangeConfig{PushTimeout: -time.Second}, "exchange.push_timeout: not negative"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestNotifyURLValidate: a partner's notify_url is an https:// URL, on any
// channel.
func TestNotifyURLValidate(t *testing.T) {
	p := middleoffice.Partner{ID: "a", Name: "A", Certificates: []middleoffice.CertificateRule{{Subject: "CN=a"}}}
	for url, ok := range map[string]bool{
		"https://a.example/pec/notify": true,
		"http://a.example/notify":      false,
		"https://":                     false,
		"notify":                       false,
	} {
		p.Channel = middleoffice.Channel{Type: middleoffice.ChannelPull, NotifyURL: url}
		if err := p.Validate(); (err == nil) != ok {
			t.Errorf("notify_url %q: %v", url, err)
		} else if err != nil && !strings.Contains(err.Error(), "channel.notify_url") {
			t.Errorf("notify_url %q: %v, not naming the field", url, err)
		}
	}
}
