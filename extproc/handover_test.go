package extproc

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/ledger"
)

// waitFor polls cond until it holds or within runs out.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// journalLen reads how many settlements j holds.
func journalLen(t *testing.T, j *journal.Journal) int64 {
	t.Helper()
	n, err := j.Len(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// recovering runs s.RecoverSettlements until the test ends.
func recovering(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.RecoverSettlements(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// TestSettlementTakenOverByAnotherReplica: the real ledger on PostgreSQL and the journal on
// Redis. A replica's capture fails during a database outage and is retried in the background;
// the replica shuts down before the database is back and leaves it in the journal; another
// replica takes it over once the database is back and captures it, exactly once.
func TestSettlementTakenOverByAnotherReplica(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	a, ca := e.outageReplica(t)
	b, _, _ := e.replicaWith(t, 2, func(c *Config) {
		c.SettleRecoverEvery, c.SettleRetryBackoff, c.SettleRetryMaxBackoff = 50*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond
	})
	allow := e.captureDuringOutage(t, a, ca)
	j := e.journal()
	if n := journalLen(t, j); n != 1 {
		t.Fatalf("%d settlements journaled, want the capture", n)
	}

	// Replica a stops while the database is still down.
	a.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if n := a.WaitSettlements(ctx); n != 0 {
		t.Fatalf("replica a gave up %d settlements; want them handed over", n)
	}
	if got := value(t, a.metrics.settleBackground.WithLabelValues("capture", "handed_over")); got != 1 {
		t.Fatalf("handed over %v, want 1", got)
	}
	if n := journalLen(t, j); n != 1 {
		t.Fatalf("%d settlements journaled after a stopped, want 1", n)
	}

	allow(true) // the database is back
	if b := e.balance(t); b.HeldMicro == 0 || b.PostedMicro != 1_000_000 {
		t.Fatalf("balance %+v before the takeover: want the hold still open, nothing charged", b)
	}
	recovering(t, b)
	waitFor(t, "replica b to settle the capture", 30*time.Second, func() bool {
		return value(t, b.metrics.settleBackground.WithLabelValues("capture", "settled")) == 1 && journalLen(t, j) == 0
	})
	e.chargedOnce(t, 84)
	if got := value(t, b.metrics.requests.WithLabelValues(string(OutcomeCharged))); got != 1 {
		t.Errorf("replica b counted %v charged requests, want 1", got)
	}
}

// severableJournal passes calls to the real journal until severed; then every call fails, as
// for a replica whose process died (it no longer renews its leases or finishes anything).
type severableJournal struct {
	*journal.Journal
	severed atomic.Bool
}

var errSevered = errors.New("severed: the replica is gone")

func (s *severableJournal) Renew(ctx context.Context, id string, lease time.Duration) error {
	if s.severed.Load() {
		return errSevered
	}
	return s.Journal.Renew(ctx, id, lease)
}

func (s *severableJournal) Release(ctx context.Context, id string) error {
	if s.severed.Load() {
		return errSevered
	}
	return s.Journal.Release(ctx, id)
}

func (s *severableJournal) Done(ctx context.Context, id string) error {
	if s.severed.Load() {
		return errSevered
	}
	return s.Journal.Done(ctx, id)
}

// TestSettlementTakenOverWhenItsReplicaDies: a replica retrying a capture stops renewing its
// lease (it died, as far as the journal can tell); once the lease runs out another replica takes
// the capture over and makes it with the same idempotency key, so that the capture lands once
// even though the first replica, a zombie, keeps trying too.
func TestSettlementTakenOverWhenItsReplicaDies(t *testing.T) {
	shared := testJournal(t)
	dying := &severableJournal{Journal: shared}
	short := func(c *Config, _ *Deps) {
		c.SettleLease, c.SettleRecoverEvery = 300*time.Millisecond, 50*time.Millisecond
	}
	fa := funded(&flakyLedger{failCaptures: 1 << 30})
	a := newFlakyReplica(t, 10*time.Minute, fa, dying, short)
	run(t, a.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: okStream})
	waitFor(t, "the capture to be journaled", 5*time.Second, func() bool { return journalLen(t, shared) == 1 })
	dying.severed.Store(true)

	b := newFlakyReplica(t, 10*time.Minute, &flakyLedger{fakeLedger: fa.fakeLedger}, shared, short)
	recovering(t, b.server)
	waitFor(t, "replica b to take the capture over and settle it", 10*time.Second, func() bool {
		return value(t, b.metrics.settleBackground.WithLabelValues("capture", "settled")) == 1 && journalLen(t, shared) == 0
	})
	capt, ok := fa.onlyCapture()
	if !ok || capt.Split.TotalMicro() != 84 {
		t.Fatalf("capture %+v (%v): want one of 84", capt, ok)
	}
	for _, k := range fa.captureKeys() {
		if k != capt.Key {
			t.Fatalf("replica a tried key %q, replica b captured with %q: the takeover must keep the key", k, capt.Key)
		}
	}
	if posted, held, open := fa.state(testWallet); posted != 1_000_000-84 || held != 0 || open != 0 {
		t.Errorf("wallet posted %d held %d, %d holds open: want 84 charged once", posted, held, open)
	}
	if !strings.Contains(b.logs.String(), "taking over a settlement from another replica") {
		t.Error("the takeover was not logged")
	}
	// The zombie's next attempt is a replay of the same capture: it settles without charging
	// again once its ledger answers.
	fa.mu.Lock()
	fa.failCaptures = 0
	fa.mu.Unlock()
	a.settled(t, 10*time.Second)
	if posted, _, _ := fa.state(testWallet); posted != 1_000_000-84 {
		t.Errorf("wallet posted %d after the zombie's replay: charged twice", posted)
	}
}

// slowReplyJournal is the real journal whose answer to a Release is slow to come back, as over
// a congested link: the lease is already released while the settler still waits.
type slowReplyJournal struct {
	*journal.Journal
}

func (s slowReplyJournal) Release(ctx context.Context, id string) error {
	err := s.Journal.Release(ctx, id)
	time.Sleep(150 * time.Millisecond)
	return err
}

// TestHandedOverSettlementClaimableAtOnce: a settlement handed over at shutdown can be claimed
// as soon as WaitSettlements returns; no renewal of the lease lands after its release (the
// lease renews every 10 ms here, so one would lease it again).
func TestHandedOverSettlementClaimableAtOnce(t *testing.T) {
	shared := testJournal(t)
	a := newFlakyReplica(t, 10*time.Minute, funded(&flakyLedger{failCaptures: 1 << 30}), slowReplyJournal{shared},
		func(c *Config, _ *Deps) { c.SettleLease = 30 * time.Millisecond })
	run(t, a.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: okStream})
	waitFor(t, "the capture to be journaled", 5*time.Second, func() bool { return journalLen(t, shared) == 1 })
	a.server.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if n := a.server.WaitSettlements(ctx); n != 0 {
		t.Fatalf("gave up %d settlements; want them handed over", n)
	}
	if got, err := shared.Claim(t.Context(), 10, time.Hour); err != nil || len(got) != 1 {
		t.Fatalf("claimed %+v, %v right after the hand-over; want the capture", got, err)
	}
}

// TestUnreadableJournalEntryDropped: an entry no replica could attempt (not JSON, or a capture
// without its request) is dropped with an error naming it, and nothing is charged.
func TestUnreadableJournalEntryDropped(t *testing.T) {
	shared := testJournal(t)
	fl := funded(&flakyLedger{})
	b := newFlakyReplica(t, 10*time.Minute, fl, shared, func(c *Config, _ *Deps) { c.SettleRecoverEvery = 50 * time.Millisecond })
	for id, data := range map[string]string{
		"capture:garbled": `{"op":"capture",`,
		"capture:bare":    `{"op":"capture","request_id":"r1","hold_id":"hold-1","deadline":"2099-01-01T00:00:00Z"}`,
	} {
		if err := shared.Put(t.Context(), id, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	recovering(t, b.server)
	waitFor(t, "the entries to be dropped", 5*time.Second, func() bool { return journalLen(t, shared) == 0 })
	logs := b.logs.String()
	for _, id := range []string{"capture:garbled", "capture:bare"} {
		if !strings.Contains(logs, `"id":"`+id+`"`) {
			t.Errorf("dropping %s was not logged:\n%s", id, logs)
		}
	}
	if keys := fl.captureKeys(); len(keys) != 0 {
		t.Errorf("captures attempted: %q", keys)
	}
}

// TestJournaledGauge: every recovery poll reports how many settlements the journal holds,
// including those another replica is retrying.
func TestJournaledGauge(t *testing.T) {
	shared := testJournal(t)
	b := newFlakyReplica(t, 10*time.Minute, funded(&flakyLedger{}), shared, func(c *Config, _ *Deps) { c.SettleRecoverEvery = 20 * time.Millisecond })
	for _, id := range []string{"capture:r1", "void:r2"} { // leased elsewhere for an hour
		if err := shared.Put(t.Context(), id, []byte(`{}`), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	recovering(t, b.server)
	waitFor(t, "the gauge to count both", 5*time.Second, func() bool { return value(t, b.metrics.journaled) == 2 })
	if err := shared.Done(t.Context(), "void:r2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gauge to count one", 5*time.Second, func() bool { return value(t, b.metrics.journaled) == 1 })
	if got := value(t, b.metrics.settlePending); got != 0 {
		t.Errorf("%v settlements retrying here: the leased ones belong to another replica", got)
	}
}

// FuzzDecodeSettlement: a journal entry is Redis's to return and anyone's with access to write.
// Whatever the bytes, decoding either refuses them or yields a settlement that can be attempted
// as it says — a capture of its own hold with a key — and that encodes back to itself.
func FuzzDecodeSettlement(f *testing.F) {
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, st := range []*settlement{
		{Op: opCapture, RequestID: "r1", HoldID: "h1", Deadline: deadline, Reason: "client_gone",
			Capture: &ledger.CaptureRequest{Key: "tg:capture:r1", HoldID: "h1", Estimated: true,
				Split:    ledger.Split{ProviderMicro: 40, Provider: "openrouter", FeeMicro: 4, DeveloperMicro: 40},
				Metadata: map[string]string{"model": "m1"}}},
		{Op: opVoid, RequestID: "r2", HoldID: "h2", Deadline: deadline},
	} {
		data, err := encodeSettlement(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"op":"capture","request_id":"r","hold_id":"h","deadline":"2030-01-01T00:00:00Z","capture":{"key":"k","hold_id":"other"}}`))
	f.Add([]byte(`{"op":"refund"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeSettlement(data)
		if err != nil {
			if st != nil {
				t.Fatal("a settlement beside an error")
			}
			return
		}
		switch {
		case st.Op != opCapture && st.Op != opVoid, st.RequestID == "", st.HoldID == "", st.Deadline.IsZero():
			t.Fatalf("accepted %+v", st)
		case st.Op == opCapture && (st.Capture == nil || st.Capture.HoldID != st.HoldID || st.Capture.Key == ""):
			t.Fatalf("accepted a capture that is not its hold's: %+v", st)
		case st.Op == opVoid && st.Capture != nil:
			t.Fatalf("accepted a void with a capture: %+v", st)
		}
		again, err := encodeSettlement(st)
		if err != nil {
			t.Fatal(err)
		}
		// Encoding is the fixed point: decoding what was encoded gives the same encoding (an
		// empty map and no map, say, both encode to nothing).
		back, err := decodeSettlement(again)
		if err != nil {
			t.Fatalf("its own encoding was refused: %s: %v", again, err)
		}
		if twice, err := encodeSettlement(back); err != nil || !bytes.Equal(twice, again) {
			t.Fatalf("did not survive a round trip: %s → %s (%v)", again, twice, err)
		}
	})
}
