package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/webhook"
)

// env is one test database with the ledger, a secrets key and a receiver.
type env struct {
	t       *testing.T
	db      *testdb.DB
	l       *ledger.Ledger
	secrets *paywall.SecretsKey
	recv    *receiver
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := testdb.New(t, ledger.Migrations, webhook.Migrations)
	k, err := paywall.NewSecretsKey(make([]byte, paywall.SecretsKeySize))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, l: ledger.New(db.Pool, ledger.Options{Batch: 1}), secrets: k, recv: &receiver{t: t}}
	srv := httptest.NewServer(e.recv)
	t.Cleanup(srv.Close)
	e.recv.url = srv.URL
	return e
}

func (e *env) outbox(opts webhook.Options) *webhook.Outbox {
	if opts.BackoffMin == 0 {
		opts.BackoffMin = time.Millisecond
	}
	return webhook.New(e.db.Pool, e.l, e.secrets, opts)
}

// receiver is the app: it checks every request's signature with the docs' code and keeps the
// events it accepted; fail makes it answer 500 that many times first.
type receiver struct {
	t      *testing.T
	url    string
	mu     sync.Mutex
	secret string
	fail   int
	tries  map[string]int
	got    []map[string]any
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := verifyTollgateSignature(r.secret, req.Header.Get("Tollgate-Signature"), body, time.Now()); err != nil {
		r.t.Errorf("signature: %v", err)
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil || ev["id"] != req.Header.Get("Tollgate-Event-Id") {
		r.t.Errorf("body %s, Tollgate-Event-Id %q: %v", body, req.Header.Get("Tollgate-Event-Id"), err)
	}
	if r.tries == nil {
		r.tries = map[string]int{}
	}
	r.tries[req.Header.Get("Tollgate-Event-Id")]++
	if r.fail > 0 {
		r.fail--
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	r.got = append(r.got, ev)
}

func (r *receiver) events() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.got...)
}

func addr(i int) string { return fmt.Sprintf("0x%040x", i) }

// fund credits a wallet.
func (e *env) fund(wallet string, micro int64) {
	e.t.Helper()
	if _, err := e.l.Deposit(e.t.Context(), ledger.DepositRequest{Key: "dep:" + wallet, ChainID: "137", Wallet: wallet, AmountMicro: micro}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) charge(key, paywallID, wallet string, dev int64) ledger.Transfer {
	e.t.Helper()
	tr, err := e.l.Charge(e.t.Context(), ledger.ChargeRequest{Key: key, Wallet: wallet, Paywall: paywallID,
		Split:    ledger.Split{FeeMicro: 100, DeveloperMicro: dev},
		Metadata: map[string]string{"paywall": paywallID, "user": "alice", "description": "Pro plan", "app.order": "42"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return tr
}

// setWebhook points paywallID at the receiver and lets it check the secret.
func (e *env) setWebhook(o *webhook.Outbox, paywallID string) {
	e.t.Helper()
	secret, err := o.SetEndpoint(e.t.Context(), paywallID, e.recv.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.recv.mu.Lock()
	e.recv.secret = secret
	e.recv.mu.Unlock()
}

// refusedCharge points pw1's webhook at the receiver, makes it answer 500 to the next fails
// requests and charges addr(1) once ("c1").
func (e *env) refusedCharge(o *webhook.Outbox, fails int) ledger.Transfer {
	e.t.Helper()
	e.setWebhook(o, "pw1")
	e.fund(addr(1), 1_000_000)
	ch := e.charge("c1", "pw1", addr(1), 900)
	e.recv.mu.Lock()
	e.recv.fail = fails
	e.recv.mu.Unlock()
	return ch
}

// oneAttempt points pw1's webhook at url, records one charge's event and delivers until nothing
// is due, and returns the event's state (lastError "" for none).
func (e *env) oneAttempt(o *webhook.Outbox, url string) (status string, attempts int, lastError string) {
	e.t.Helper()
	if _, err := o.SetEndpoint(e.t.Context(), "pw1", url); err != nil {
		e.t.Fatal(err)
	}
	e.fund(addr(1), 1_000_000)
	e.charge("c1", "pw1", addr(1), 900)
	drain(e.t, o)
	if err := e.db.Pool.QueryRow(e.t.Context(), `SELECT status, attempts, COALESCE(last_error, '') FROM webhook_events`).Scan(&status, &attempts, &lastError); err != nil {
		e.t.Fatal(err)
	}
	return status, attempts, lastError
}

// drain scans and delivers until nothing is due.
func drain(t *testing.T, o *webhook.Outbox) {
	t.Helper()
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		n, err := o.Deliver(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("deliveries did not end")
}

func byType(evs []map[string]any) map[string][]map[string]any {
	m := map[string][]map[string]any{}
	for _, ev := range evs {
		m[ev["type"].(string)] = append(m[ev["type"].(string)], ev)
	}
	return m
}

// TestWebhookEvents moves money every way an app hears of and checks each event arrives
// once, signed, with its data; another paywall without a webhook records nothing.
func TestWebhookEvents(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	o := e.outbox(webhook.Options{})
	e.setWebhook(o, "pw1")
	w := addr(1)
	e.fund(w, 100_000_000)

	ch := e.charge("c1", "pw1", w, 900)
	e.charge("c-other", "pw2", w, 900) // no webhook: nothing
	h, err := e.l.Hold(ctx, ledger.HoldRequest{Key: "h1", Wallet: w, AmountMicro: 5000, Paywall: "pw1", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	capt, err := e.l.Capture(ctx, ledger.CaptureRequest{Key: "cap1", HoldID: h.ID,
		Split: ledger.Split{FeeMicro: 300, DeveloperMicro: 2700},
		Metadata: map[string]string{"paywall": "pw1", "user": "bob", "model": "m/x", "request_id": "r1", "api": "completions",
			"prompt_tokens": "12", "completion_tokens": "34"}})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.l.Reverse(ctx, ledger.ReverseRequest{Key: "rev1", TransferID: ch.ID, Reason: "changed mind",
		Metadata: map[string]string{"paywall": "pw1", "user": "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := e.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "p1", Paywall: "pw1", ChainID: "137", To: addr(9), AmountMicro: 1000})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := e.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "p2", Paywall: "pw1", ChainID: "137", To: addr(9), AmountMicro: 500})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.SettlePayout(ctx, p1.ID, "0xabc"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.FailPayout(ctx, p2.ID, "reverted"); err != nil {
		t.Fatal(err)
	}

	drain(t, o)
	drain(t, o) // a second round finds nothing new
	got := byType(e.recv.events())
	want := map[string]map[string]any{
		webhook.EventChargeCreated: {"charge_id": ch.ID, "user": "alice", "wallet": w, "amount": "0.001", "amount_micro": 1000.0,
			"developer_amount_micro": 900.0, "description": "Pro plan", "metadata": map[string]any{"order": "42"}},
		webhook.EventRequestCharged: {"charge_id": capt.Transfer.ID, "user": "bob", "model": "m/x", "api": "completions", "prompt_tokens": 12.0,
			"completion_tokens": 34.0, "amount_micro": 3000.0, "developer_amount_micro": 2700.0, "estimated": false},
		webhook.EventChargeRefunded: {"refund_id": rev.ID, "charge_id": ch.ID, "amount_micro": 1000.0, "developer_amount_micro": 900.0,
			"reason": "changed mind", "user": "alice"},
		webhook.EventPayoutSettled: {"payout_id": p1.ID, "amount_micro": 1000.0, "tx_hash": "0xabc", "to": addr(9)},
		webhook.EventPayoutFailed:  {"payout_id": p2.ID, "amount_micro": 500.0, "reason": "reverted"},
	}
	if len(got) != len(want) {
		t.Errorf("event types %v, want %d types", got, len(want))
	}
	for typ, fields := range want {
		evs := got[typ]
		if len(evs) != 1 {
			t.Errorf("%s: %d events, want 1", typ, len(evs))
			continue
		}
		ev := evs[0]
		if ev["paywall"] != "pw1" || ev["id"] == "" || ev["created_at"] == "" {
			t.Errorf("%s: envelope %v", typ, ev)
		}
		data := ev["data"].(map[string]any)
		for k, v := range fields {
			if fmt.Sprint(data[k]) != fmt.Sprint(v) {
				t.Errorf("%s: data.%s = %v, want %v", typ, k, data[k], v)
			}
		}
	}
}

// TestWebhookRetries: a receiver failing twice gets the event a third time, and once more
// never after it accepted it; one that never accepts has the event given up.
func TestWebhookRetries(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond})
	ch := e.refusedCharge(o, 2)
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := webhook.EventChargeCreated + ":" + ch.ID
	deadline := time.Now().Add(5 * time.Second)
	for len(e.recv.events()) == 0 && time.Now().Before(deadline) {
		if _, err := o.Deliver(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for range 5 { // nothing more is sent once it was accepted
		time.Sleep(5 * time.Millisecond)
		if _, err := o.Deliver(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	e.recv.mu.Lock()
	tries := e.recv.tries[id]
	e.recv.mu.Unlock()
	if tries != 3 || len(e.recv.events()) != 1 {
		t.Fatalf("tries %d, accepted %d; want 3 tries, accepted once", tries, len(e.recv.events()))
	}

	// Given up: GiveUpAfter shorter than the first backoff.
	short := e.outbox(webhook.Options{BackoffMin: time.Hour, GiveUpAfter: time.Minute})
	e.charge("c2", "pw1", addr(1), 900)
	e.recv.fail = 1
	drain(t, short)
	var status string
	var attempts int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT status, attempts FROM webhook_events WHERE type = 'charge.created' AND id <> $1`, id).Scan(&status, &attempts); err != nil {
		t.Fatal(err)
	}
	if status != "failed" || attempts != 1 {
		t.Fatalf("status %s after %d attempts, want failed after 1", status, attempts)
	}
}

// TestWebhookConcurrentProducers: two replicas scanning the same ledger at once record each
// event once.
func TestWebhookConcurrentProducers(t *testing.T) {
	e := newEnv(t)
	a, b := e.outbox(webhook.Options{}), e.outbox(webhook.Options{})
	e.setWebhook(a, "pw1")
	e.fund(addr(1), 100_000_000)
	for i := range 40 {
		e.charge(fmt.Sprintf("c%d", i), "pw1", addr(1), 900)
	}
	var wg sync.WaitGroup
	for _, o := range []*webhook.Outbox{a, b, a, b} {
		wg.Go(func() {
			if _, err := o.Scan(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var n int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 40 {
		t.Fatalf("%d events, want 40", n)
	}
	var wg2 sync.WaitGroup
	for _, o := range []*webhook.Outbox{a, b} {
		wg2.Go(func() { drain(t, o) })
	}
	wg2.Wait()
	if got := len(e.recv.events()); got != 40 {
		t.Fatalf("%d deliveries, want 40", got)
	}
}

// TestScanOverlap: a transfer that commits after a scan moved the cursor past its created_at
// (its transaction started earlier) is found by the next scan thanks to the overlap; without
// an overlap (the negative control) it is missed.
func TestScanOverlap(t *testing.T) {
	for _, tc := range []struct {
		overlap time.Duration
		want    int
	}{{30 * time.Second, 2}, {time.Microsecond, 1}} {
		t.Run(tc.overlap.String(), func(t *testing.T) {
			e := newEnv(t)
			o := e.outbox(webhook.Options{Overlap: tc.overlap})
			e.setWebhook(o, "pw1")
			e.fund(addr(1), 100_000_000)
			e.charge("c1", "pw1", addr(1), 900)
			if _, err := o.Scan(t.Context()); err != nil {
				t.Fatal(err)
			}
			// Committed now, dated 10 s ago: as a transaction that began before the scan.
			late := e.charge("late", "pw1", addr(1), 900)
			e.db.Must(t, `UPDATE ledger_entries SET created_at = created_at - INTERVAL '10 seconds' WHERE transfer_id = '`+late.ID+`'`)
			e.db.Must(t, `UPDATE ledger_transfers SET created_at = created_at - INTERVAL '10 seconds' WHERE id = '`+late.ID+`'`)
			drain(t, o)
			if got := len(e.recv.events()); got != tc.want {
				t.Fatalf("%d events, want %d", got, tc.want)
			}
		})
	}
}

// TestWebhookTurnedOff: turning the webhook off cancels what was not delivered and records
// nothing more.
func TestWebhookTurnedOff(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{})
	e.setWebhook(o, "pw1")
	e.fund(addr(1), 100_000_000)
	e.charge("c1", "pw1", addr(1), 900)
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if removed, err := o.RemoveEndpoint(t.Context(), "pw1"); err != nil || !removed {
		t.Fatal(removed, err)
	}
	cancelled := func() int {
		t.Helper()
		var n int
		if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_events WHERE status = 'cancelled'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Cancelled by RemoveEndpoint itself, before any deliverer runs: a webhook set again at
	// once must not receive them.
	if n := cancelled(); n != 1 {
		t.Fatalf("%d cancelled events right after RemoveEndpoint, want 1", n)
	}
	e.charge("c2", "pw1", addr(1), 900)
	// A scan that read the endpoints before the removal records its events after it: the
	// deliverer finds no webhook and cancels them.
	e.db.Must(t, `INSERT INTO webhook_events (id, paywall, type, body) VALUES ('charge.created:raced', 'pw1', 'charge.created', '{}')`)
	drain(t, o)
	if got := len(e.recv.events()); got != 0 {
		t.Fatalf("%d deliveries after the webhook was turned off", got)
	}
	if n := cancelled(); n != 2 {
		t.Fatalf("%d cancelled events, want 2 (the pending one and the raced one)", n)
	}
}

// TestWebhookTurnedOffWhileSending: an event the app accepted (2xx) while its webhook was being
// turned off was delivered, and is recorded so, not as cancelled.
func TestWebhookTurnedOffWhileSending(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{})
	app := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		if removed, err := o.RemoveEndpoint(context.Background(), "pw1"); err != nil || !removed {
			t.Errorf("turning the webhook off: %v, %v", removed, err)
		}
	}))
	t.Cleanup(app.Close)
	if status, _, _ := e.oneAttempt(o, app.URL); status != "delivered" {
		t.Fatalf("status %s, want delivered: the app answered 200", status)
	}
}

// TestWebhookFailedAnswers: a redirect is an answer other than 2xx, retried and never followed
// (the signed body would go elsewhere); a receiver slower than Timeout is retried too. Each
// records why on the event.
func TestWebhookFailedAnswers(t *testing.T) {
	followed := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the redirect was followed")
	}))
	t.Cleanup(followed.Close)
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, followed.URL, http.StatusTemporaryRedirect)
		}, "answered 307"},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // so that the server sees the client hang up
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, "no answer within 50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			o := e.outbox(webhook.Options{BackoffMin: time.Hour, Timeout: 50 * time.Millisecond})
			if status, attempts, lastError := e.oneAttempt(o, srv.URL); status != "pending" || attempts != 1 || lastError != tc.want {
				t.Fatalf("status %s, attempts %d, last_error %q; want pending after 1 attempt, %q", status, attempts, lastError, tc.want)
			}
		})
	}
}

// TestWebhookOwnClientNoRedirects: an Options.Client of the caller's does not follow
// redirects either (it would send the signed body elsewhere and take that answer).
func TestWebhookOwnClientNoRedirects(t *testing.T) {
	followed := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the redirect was followed")
	}))
	t.Cleanup(followed.Close)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, followed.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	e := newEnv(t)
	o := e.outbox(webhook.Options{BackoffMin: time.Hour, Client: &http.Client{Transport: http.DefaultTransport}})
	if status, _, lastError := e.oneAttempt(o, redirect.URL); status != "pending" || lastError != "answered 307" {
		t.Fatalf("status %s, last_error %q; want pending, answered 307", status, lastError)
	}
}

// TestWebhookUnreachable: an attempt that gets no answer records why (an untrusted
// certificate, a refused connection), so that the operator can tell the app's developer what
// to fix.
func TestWebhookUnreachable(t *testing.T) {
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a server with an untrusted certificate was sent the event")
	}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake it refuses
	untrusted.StartTLS()
	t.Cleanup(untrusted.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct{ name, url, want string }{
		{"untrusted certificate", untrusted.URL, "x509: certificate signed by unknown authority"},
		{"refused", closed.URL, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			o := e.outbox(webhook.Options{BackoffMin: time.Hour})
			if status, _, lastError := e.oneAttempt(o, tc.url); status != "pending" || !strings.HasPrefix(lastError, "could not reach the URL: ") || !strings.Contains(lastError, tc.want) {
				t.Fatalf("status %s, last_error %q; want pending, could not reach the URL: …%s…", status, lastError, tc.want)
			}
		})
	}
}

// TestWebhookLeaseCoversTimeout: a Lease shorter than twice Timeout is raised to it, so that
// another deliverer does not take an event whose POST is still waiting for its answer (the
// app would get it twice at once).
func TestWebhookLeaseCoversTimeout(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	tries := 0
	arrived, answer := make(chan struct{}, 2), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tries++
		mu.Unlock()
		arrived <- struct{}{}
		select { // answers once the test has tried the second Deliver
		case <-answer:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	o := e.outbox(webhook.Options{Timeout: 5 * time.Second, Lease: 10 * time.Millisecond})
	if _, err := o.SetEndpoint(t.Context(), "pw1", slow.URL); err != nil {
		t.Fatal(err)
	}
	e.fund(addr(1), 1_000_000)
	e.charge("c1", "pw1", addr(1), 900)
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if n, err := o.Deliver(t.Context()); n != 1 || err != nil {
			t.Errorf("first Deliver = %d, %v; want the event", n, err)
		}
	})
	<-arrived                         // the first POST is waiting for its answer
	time.Sleep(50 * time.Millisecond) // past the 10ms Lease as given
	if n, err := o.Deliver(t.Context()); n != 0 || err != nil {
		t.Errorf("second Deliver = %d, %v; want nothing (the event is leased)", n, err)
	}
	close(answer)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if tries != 1 {
		t.Fatalf("the app got the event %d times, want once", tries)
	}
}

// TestWebhookRun: Run scans and delivers on its own, counts each attempt's result and keeps
// the backlog gauge: the receiver's first refusal leaves the event pending (backlog 1, one
// retried); its acceptance after the backoff delivers it (backlog 0).
func TestWebhookRun(t *testing.T) {
	e := newEnv(t)
	m := webhook.NewMetrics(prometheus.NewRegistry())
	o := e.outbox(webhook.Options{Interval: 10 * time.Millisecond, BackoffMin: 300 * time.Millisecond, Metrics: m})
	e.refusedCharge(o, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	metrics := func() (delivered, retried, failed, backlog float64) {
		return testutil.ToFloat64(m.Deliveries.WithLabelValues("delivered")), testutil.ToFloat64(m.Deliveries.WithLabelValues("retried")),
			testutil.ToFloat64(m.Deliveries.WithLabelValues("failed")), testutil.ToFloat64(m.Backlog)
	}
	until := func(what string, ok func(delivered, retried, failed, backlog float64) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(metrics()); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				d, r, f, b := metrics()
				t.Fatalf("%s: delivered %v, retried %v, failed %v, backlog %v", what, d, r, f, b)
			}
		}
	}
	until("after the refusal", func(d, r, f, b float64) bool { return d == 0 && r == 1 && f == 0 && b == 1 })
	until("after the delivery", func(d, r, f, b float64) bool { return d == 1 && r == 1 && f == 0 && b == 0 })
	if got := len(e.recv.events()); got != 1 {
		t.Fatalf("%d events accepted, want 1", got)
	}
}

// TestWebhookBackoff: each failed attempt waits twice as long as the one before, from
// BackoffMin up to BackoffMax; the attempt that would come later than GiveUpAfter after the
// event was recorded is not made: the event is given up.
func TestWebhookBackoff(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{BackoffMin: time.Hour, BackoffMax: 4 * time.Hour, GiveUpAfter: 24 * time.Hour})
	e.refusedCharge(o, 1000)
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	attempt := func() (status string, wait time.Duration) {
		t.Helper()
		if n, err := o.Deliver(t.Context()); err != nil || n != 1 {
			t.Fatalf("Deliver = %d, %v; want the one event", n, err)
		}
		var secs float64
		if err := e.db.Pool.QueryRow(t.Context(), `SELECT status, EXTRACT(EPOCH FROM next_attempt_at - now())::FLOAT8 FROM webhook_events`).Scan(&status, &secs); err != nil {
			t.Fatal(err)
		}
		e.db.Must(t, `UPDATE webhook_events SET next_attempt_at = now()`) // due again
		return status, time.Duration(secs * float64(time.Second))
	}
	for i, want := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 4 * time.Hour} {
		if status, wait := attempt(); status != "pending" || wait < want-time.Minute || wait > want {
			t.Fatalf("after attempt %d: %s, next in %s; want pending, next in %s", i+1, status, wait, want)
		}
	}
	// Recorded 21 h ago: the next attempt, 4 h on, would be past the day.
	e.db.Must(t, `UPDATE webhook_events SET created_at = now() - INTERVAL '21 hours'`)
	if status, _ := attempt(); status != "failed" {
		t.Fatalf("after the last attempt of the day: %s, want failed", status)
	}
}

// TestScanPages: a scan reads past its first page (500 entries) to the end.
func TestScanPages(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{})
	e.setWebhook(o, "pw1")
	e.fund(addr(1), 100_000_000)
	const charges = 501
	for i := range charges {
		e.charge(fmt.Sprintf("c%d", i), "pw1", addr(1), 900)
	}
	if n, err := o.Scan(t.Context()); err != nil || n != charges {
		t.Fatalf("Scan = %d, %v; want %d events", n, err, charges)
	}
	if n, err := o.Scan(t.Context()); err != nil || n != 0 {
		t.Fatalf("a second Scan = %d, %v; want nothing new", n, err)
	}
}

// TestResealSecrets: during a rotation of paywall.secrets_key, ResealSecrets seals every
// signing secret only a previous key opens again with the new key (the secret itself
// unchanged), leaves one no key opens as it is — sealing those after it all the same — and
// names it, and only it; a second run seals nothing and names it again.
func TestResealSecrets(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	key := func(seed byte) *paywall.SecretsKey {
		k, err := paywall.NewSecretsKey(bytes.Repeat([]byte{seed}, paywall.SecretsKeySize))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	oldKey, newKey, lostKey := key(1), key(2), key(3)
	const old1, lost, old2, fresh = "paywall-old-1", "paywall-lost", "paywall-old-2", "paywall-new"
	secrets := map[string]string{}
	stored := func(paywallID string) string {
		var v string
		if err := e.db.Pool.QueryRow(ctx, `SELECT secret_sealed FROM webhook_endpoints WHERE paywall = $1`, paywallID).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, ep := range []struct {
		paywall string
		key     *paywall.SecretsKey
	}{{old1, oldKey}, {lost, lostKey}, {old2, oldKey}, {fresh, newKey}} {
		secret, err := webhook.New(e.db.Pool, e.l, ep.key, webhook.Options{}).SetEndpoint(ctx, ep.paywall, e.recv.url)
		if err != nil {
			t.Fatal(err)
		}
		secrets[ep.paywall] = secret
	}
	sealedLost, sealedFresh := stored(lost), stored(fresh)

	if n, err := webhook.New(e.db.Pool, e.l, newKey, webhook.Options{}).ResealSecrets(ctx); n != 0 || err != nil {
		t.Errorf("ResealSecrets without previous keys = %d, %v; want nothing done", n, err)
	}
	rotating := webhook.New(e.db.Pool, e.l, newKey, webhook.Options{PreviousSecretsKeys: []*paywall.SecretsKey{key(4), oldKey}})
	onlyLost := func(call string, err error) {
		t.Helper()
		noKey, ok := errors.AsType[*paywall.NoKeyOpensError](err)
		if !ok || !errors.Is(err, paywall.ErrSealedCredential) || !slices.Equal(noKey.Paywalls, []string{lost}) ||
			!strings.Contains(err.Error(), "webhook signing secret") {
			t.Fatalf("%s: error %v; want a NoKeyOpensError (ErrSealedCredential) naming %s alone", call, err, lost)
		}
	}
	n, err := rotating.ResealSecrets(ctx)
	onlyLost("ResealSecrets", err)
	if n != 2 {
		t.Errorf("ResealSecrets sealed %d again; want 2 (%s and %s)", n, old1, old2)
	}
	for _, id := range []string{old1, old2, fresh} {
		// "webhook signing_secret" is the purpose the package seals secrets for.
		if got, _, err := paywall.OpenSealed(newKey, nil, "webhook signing_secret", id, stored(id)); err != nil || got != secrets[id] {
			t.Errorf("%s's secret with the new key alone = %q, %v; want the secret it had", id, got, err)
		}
	}
	if stored(lost) != sealedLost || stored(fresh) != sealedFresh {
		t.Errorf("a secret no key opens, or one already under the new key, was sealed again")
	}

	n, err = rotating.ResealSecrets(ctx)
	onlyLost("ResealSecrets again", err)
	if n != 0 {
		t.Errorf("ResealSecrets again sealed %d; want 0", n)
	}
}

// TestWebhookPrune: events finished more than Keep ago are deleted, whatever way they finished;
// recent ones and pending ones (however old) stay, and a scan after pruning records nothing
// again.
func TestWebhookPrune(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{Keep: time.Hour})
	e.setWebhook(o, "pw1")
	e.fund(addr(1), 100_000_000)
	e.charge("c1", "pw1", addr(1), 900)
	drain(t, o) // delivered now
	for _, ev := range []struct {
		id, status, finishedAgo string // finishedAgo: an interval, or "" for not finished
	}{
		{"old-delivered", "delivered", "2 hours"},
		{"old-failed", "failed", "3 hours"},
		{"old-cancelled", "cancelled", "2 hours"},
		{"recent-failed", "failed", "10 minutes"},
		{"old-pending", "pending", ""},
	} {
		e.db.Must(t, `INSERT INTO webhook_events (id, paywall, type, body, status, created_at, finished_at)
			VALUES ($1, 'pw1', 'charge.created', '{}', $2, now() - INTERVAL '5 hours', now() - NULLIF($3, '')::INTERVAL)`,
			ev.id, ev.status, ev.finishedAgo)
	}
	n, err := o.Prune(t.Context())
	if err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want the 3 old finished events", n, err)
	}
	rows, err := e.db.Pool.Query(t.Context(), `SELECT id FROM webhook_events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 || left[1] != "old-pending" || left[2] != "recent-failed" || !strings.HasPrefix(left[0], "charge.created:") {
		t.Fatalf("left %v: want the delivered charge, the old pending event and the recent failed one", left)
	}
	if n, err := o.Prune(t.Context()); err != nil || n != 0 {
		t.Fatalf("a second prune deleted %d, %v", n, err)
	}
}

// TestScanOnePaywallFailing: a paywall whose scan fails (a fault injected by a test trigger that
// refuses its events) keeps its cursor, so its events are recorded by a later scan, and does not
// hold up the other paywalls' events.
func TestScanOnePaywallFailing(t *testing.T) {
	e := newEnv(t)
	o := e.outbox(webhook.Options{})
	e.setWebhook(o, "pw-bad") // scanned first: the endpoints are read in order
	e.setWebhook(o, "pw-good")
	e.fund(addr(1), 100_000_000)
	e.charge("c1", "pw-bad", addr(1), 900)
	e.charge("c2", "pw-good", addr(1), 900)
	e.db.Must(t, `CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.paywall = 'pw-bad' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$`)
	e.db.Must(t, `CREATE TRIGGER refuse_bad BEFORE INSERT ON webhook_events FOR EACH ROW EXECUTE FUNCTION refuse_bad()`)
	events := func(paywallID string) int {
		t.Helper()
		var n int
		if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_events WHERE paywall = $1`, paywallID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := o.Scan(t.Context()); err == nil || !strings.Contains(err.Error(), "pw-bad") {
		t.Fatalf("scan: %v, want pw-bad's failure", err)
	}
	if bad, good := events("pw-bad"), events("pw-good"); bad != 0 || good != 1 {
		t.Fatalf("after the failed scan: %d events of pw-bad, %d of pw-good; want 0 and 1", bad, good)
	}
	e.db.Must(t, `DROP TRIGGER refuse_bad ON webhook_events`)
	if _, err := o.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if bad, good := events("pw-bad"), events("pw-good"); bad != 1 || good != 1 {
		t.Fatalf("after the fault: %d events of pw-bad, %d of pw-good; want 1 and 1", bad, good)
	}
}
