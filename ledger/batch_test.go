package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// batchLog records the batches a ledger committed (its "ledger: batch committed" messages) and
// those that failed as a whole ("ledger: batch failed; …").
type batchLog struct {
	mu      sync.Mutex
	batches []batchRecord
	failed  []batchRecord
}

type batchRecord struct {
	op            string
	size, written int64
}

func (h *batchLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *batchLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *batchLog) WithGroup(string) slog.Handler            { return h }
func (h *batchLog) Handle(_ context.Context, r slog.Record) error {
	failed := r.Message == "ledger: batch failed; its requests run on their own"
	if r.Message != "ledger: batch committed" && !failed {
		return nil
	}
	var b batchRecord
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "op":
			b.op = a.Value.String()
		case "size":
			b.size = a.Value.Int64()
		case "written":
			b.written = a.Value.Int64()
		}
		return true
	})
	h.mu.Lock()
	if failed {
		h.failed = append(h.failed, b)
	} else {
		h.batches = append(h.batches, b)
	}
	h.mu.Unlock()
	return nil
}

// failedBatches is how many batches of op failed as a whole.
func (h *batchLog) failedBatches(op string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, b := range h.failed {
		if b.op == op {
			n++
		}
	}
	return n
}

// largest is the most requests one committed batch of op wrote.
func (h *batchLog) largest(op string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, b := range h.batches {
		if b.op == op {
			n = max(n, b.written)
		}
	}
	return n
}

// inOneBatch makes the calls of rest share a batch: first runs on its own and waits for the
// blocked wallet's row (which another transaction holds), the others queue behind it meanwhile,
// and when the row is released they are taken together. The ledger's solo grace must be long
// (SetSoloGrace), so that first keeps the batch from starting early.
func (f *fixture) inOneBatch(blocked string, first func(), rest ...func()) {
	t := f.t
	t.Helper()
	ctx := t.Context()
	blocker, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 FOR UPDATE`, blocked); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); first() }()
	waitFor(t, "the first call to wait for the blocked wallet", func() bool {
		var n int
		err := f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n > 0
	})
	for _, fn := range rest {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	waitFor(t, "the other calls to queue", func() bool {
		h, c := ledger.QueuedCalls(f.l)
		return h+c == len(rest)
	})
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// holdResult is what one Hold call answered.
type holdResult struct {
	h   ledger.Hold
	err error
}

func TestBatchedHolds(t *testing.T) {
	log := &batchLog{}
	f := newFixture(t, ledger.Options{Logger: slog.New(log)})
	ledger.SetSoloGrace(f.l, time.Minute)
	a, b, c, d, e, poor, nobody := addr(1), addr(2), addr(3), addr(4), addr(5), addr(6), addr(7)
	for _, w := range []string{a, b, c, d, e} {
		f.fund(w, 1000)
	}
	f.fund(poor, 150)
	pre := f.hold("pre", b, "pw", 100, time.Minute)

	var mu sync.Mutex
	got := map[string]holdResult{}
	hold := func(name, key, wallet string, amount int64) func() {
		return func() {
			h, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: key, Wallet: wallet, AmountMicro: amount, Paywall: "pw", TTL: time.Minute})
			mu.Lock()
			got[name] = holdResult{h, err}
			mu.Unlock()
		}
	}
	f.inOneBatch(a, hold("a", "a", a, 100),
		hold("b", "b", b, 100), hold("c", "c", c, 100), hold("d", "d", d, 100), hold("e", "e", e, 100),
		// Two holds on one wallet that cannot cover both: the batch cannot reserve them
		// together, so each runs on its own and exactly one fits.
		hold("poor1", "poor1", poor, 100), hold("poor2", "poor2", poor, 100),
		hold("nobody", "nobody", nobody, 100),
		hold("replay", "pre", b, 100),
	)
	if n := log.largest("hold batch"); n < 4 {
		t.Fatalf("largest hold batch wrote %d holds, want at least 4 (b, c, d, e): the calls were not batched", n)
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		r := got[name]
		if r.err != nil || r.h.ID == "" || r.h.Status != ledger.HoldOpen || r.h.AmountMicro != 100 || r.h.Paywall != "pw" {
			t.Fatalf("hold %s = %+v, %v", name, r.h, r.err)
		}
		stored, err := f.l.GetHold(t.Context(), r.h.ID)
		if err != nil || stored.Wallet != r.h.Wallet || !stored.ExpiresAt.Equal(r.h.ExpiresAt) {
			t.Fatalf("hold %s answered %+v, stored %+v, %v", name, r.h, stored, err)
		}
		again, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: name, Wallet: r.h.Wallet, AmountMicro: 100, Paywall: "pw", TTL: time.Minute})
		if err != nil || again.ID != r.h.ID {
			t.Fatalf("replay of hold %s = %+v, %v; first answer %s", name, again, err, r.h.ID)
		}
	}
	p1, p2 := got["poor1"], got["poor2"]
	if (p1.err == nil) == (p2.err == nil) {
		t.Fatalf("holds poor1 and poor2 (100 each on 150) = %v, %v: want exactly one to fit", p1.err, p2.err)
	}
	if err := errors.Join(p1.err, p2.err); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("the hold that did not fit: %v, want ErrInsufficientFunds", err)
	}
	wantErr(t, got["nobody"].err, ledger.ErrUnknownAccount)
	if r := got["replay"]; r.err != nil || r.h.ID != pre.ID {
		t.Fatalf("replayed hold = %+v, %v; want %s", r.h, r.err, pre.ID)
	}
	_, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: "pre", Wallet: b, AmountMicro: 101, Paywall: "pw", TTL: time.Minute})
	wantErr(t, err, ledger.ErrIdempotencyConflict)
	f.wantBalance(a, 1000, 100)
	f.wantBalance(b, 1000, 200)
	f.wantBalance(poor, 150, 100)
	f.check()
}

// captureResult is what one Capture call answered.
type captureResult struct {
	req ledger.CaptureRequest
	res ledger.CaptureResult
	err error
}

func TestBatchedCaptures(t *testing.T) {
	log := &batchLog{}
	f := newFixture(t, ledger.Options{Logger: slog.New(log)})
	ledger.SetSoloGrace(f.l, time.Minute)
	ctx := t.Context()
	a, b, c, d := addr(1), addr(2), addr(3), addr(4)
	for _, w := range []string{a, b, c, d} {
		f.fund(w, 10_000)
	}
	split := ledger.Split{ProviderMicro: 300, Provider: "openrouter", FeeMicro: 100, DeveloperMicro: 200}
	hA := f.hold("hA", a, "pw", 1000, time.Minute)
	hB1 := f.hold("hB1", b, "pw", 1000, time.Minute)
	hB2 := f.hold("hB2", b, "pw", 1000, time.Minute)
	hC := f.hold("hC", c, "pw2", 1000, time.Minute)
	hOver := f.hold("hOver", d, "pw", 100, time.Minute)
	hExp := f.hold("hExp", c, "pw", 100, 30*time.Millisecond)
	hVoid := f.hold("hVoid", c, "pw", 100, time.Minute)
	if _, err := f.l.Void(ctx, hVoid.ID); err != nil {
		t.Fatal(err)
	}
	hDone := f.hold("hDone", b, "pw", 100, time.Minute)
	done, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "done", HoldID: hDone.ID, Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 40}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // hExp expires

	var mu sync.Mutex
	got := map[string]captureResult{}
	capture := func(name string, r ledger.CaptureRequest) func() {
		return func() {
			res, err := f.l.Capture(ctx, r)
			mu.Lock()
			got[name] = captureResult{r, res, err}
			mu.Unlock()
		}
	}
	f.inOneBatch(a, capture("a", ledger.CaptureRequest{Key: "a", HoldID: hA.ID, Split: split}),
		capture("b1", ledger.CaptureRequest{Key: "b1", HoldID: hB1.ID, Split: split, Metadata: map[string]string{"model": "m"}}),
		capture("b2", ledger.CaptureRequest{Key: "b2", HoldID: hB2.ID, Split: split, Estimated: true}),
		capture("c", ledger.CaptureRequest{Key: "c", HoldID: hC.ID, Split: ledger.Split{FeeMicro: 100, DeveloperMicro: 500}}),
		capture("over", ledger.CaptureRequest{Key: "over", HoldID: hOver.ID, Split: ledger.Split{DeveloperMicro: 300}}),
		capture("expired", ledger.CaptureRequest{Key: "expired", HoldID: hExp.ID, Split: split}),
		capture("voided", ledger.CaptureRequest{Key: "voided", HoldID: hVoid.ID, Split: split}),
		capture("replay", ledger.CaptureRequest{Key: "done", HoldID: hDone.ID, Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 40}}),
		capture("nohold", ledger.CaptureRequest{Key: "nohold", HoldID: "00000000-0000-4000-8000-000000000001", Split: split}),
	)
	if n := log.largest("capture batch"); n < 3 {
		t.Fatalf("largest capture batch wrote %d captures, want at least 3 (b1, b2, c): the calls were not batched", n)
	}
	for _, name := range []string{"a", "b1", "b2", "c", "over"} {
		r := got[name]
		if r.err != nil {
			t.Fatalf("capture %s: %v", name, r.err)
		}
		// The answer is what a replay reads back from the database.
		again, err := f.l.Capture(ctx, r.req)
		if err != nil {
			t.Fatalf("replay of capture %s: %v", name, err)
		}
		if !again.Transfer.CreatedAt.Equal(r.res.Transfer.CreatedAt) {
			t.Fatalf("capture %s answered time %s, stored %s", name, r.res.Transfer.CreatedAt, again.Transfer.CreatedAt)
		}
		again.Transfer.CreatedAt = r.res.Transfer.CreatedAt
		if !reflect.DeepEqual(again, r.res) {
			t.Fatalf("capture %s answered\n%+v\nstored\n%+v", name, r.res, again)
		}
	}
	for _, name := range []string{"a", "b1", "b2"} {
		if r := got[name].res; r.ChargedMicro != 600 || r.ReleasedMicro != 400 || len(r.Transfer.Entries) != 4 {
			t.Fatalf("capture %s = %+v", name, r)
		}
	}
	if r := got["b2"].res; r.Transfer.Metadata["estimated"] != "true" {
		t.Fatalf("estimated capture's metadata = %v", r.Transfer.Metadata)
	}
	if r := got["over"].res; r.ChargedMicro != 300 || r.ReleasedMicro != 0 || r.ShortfallMicro != 0 {
		t.Fatalf("overrun capture = %+v", r)
	}
	wantErr(t, got["expired"].err, ledger.ErrHoldExpired)
	wantErr(t, got["voided"].err, ledger.ErrHoldFinished)
	wantErr(t, got["nohold"].err, ledger.ErrHoldNotFound)
	if r := got["replay"]; r.err != nil || r.res.Transfer.ID != done.Transfer.ID {
		t.Fatalf("replayed capture = %+v, %v; want %s", r.res, r.err, done.Transfer.ID)
	}
	_, err = f.l.Capture(ctx, ledger.CaptureRequest{Key: "done", HoldID: hDone.ID, Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 41}})
	wantErr(t, err, ledger.ErrIdempotencyConflict)

	f.wantBalance(a, 9400, 0)
	f.wantBalance(b, 10_000-50-600-600, 0)
	f.wantBalance(c, 9400, 100) // hExp is released by the sweeper, not by a capture
	f.wantBalance(d, 9700, 0)
	if got := f.sum(ledger.Earnings("pw")); got != 3*200+300+40 {
		t.Fatalf("earnings of pw = %d", got)
	}
	if got := f.sum(ledger.Earnings("pw2")); got != 500 {
		t.Fatalf("earnings of pw2 = %d", got)
	}
	f.check()
}

// TestBatchedCapturesEveryShardBusy: when every shard of a shared account is locked by another
// transaction, a batch of captures cannot credit it; the batch statement must then write
// nothing at all (no hold captured, no transfer, no entry), and each capture runs on its own,
// waits for a shard and is applied once.
func TestBatchedCapturesEveryShardBusy(t *testing.T) {
	log := &batchLog{}
	f := newFixture(t, ledger.Options{Shards: 2, Logger: slog.New(log)})
	ledger.SetSoloGrace(f.l, time.Minute)
	ctx := t.Context()
	first, wallets := addr(9), []string{addr(1), addr(2), addr(3)}
	split := ledger.Split{FeeMicro: 100, DeveloperMicro: 200}
	holds := map[string]ledger.Hold{}
	for _, w := range append([]string{first}, wallets...) {
		f.fund(w, 10_000)
		holds[w] = f.hold("h:"+w, w, "pw", 1000, time.Minute)
	}
	warm := f.hold("warm", first, "pw", 100, time.Minute) // creates the fee account
	if _, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "warm", HoldID: warm.ID, Split: split}); err != nil {
		t.Fatal(err)
	}
	shards, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shards.Rollback(context.WithoutCancel(ctx)) }()
	if tag, err := shards.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'platform_fees' FOR UPDATE`); err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("locking the fee shards: %v, %d rows", err, tag.RowsAffected())
	}
	// Once the batch has failed (or has not, in time), count what it left and free the shards,
	// so that the captures, now on their own, can finish.
	writtenWhileBusy := -1
	released := make(chan struct{})
	go func() {
		defer close(released)
		for deadline := time.Now().Add(10 * time.Second); log.failedBatches("capture batch") == 0 && time.Now().Before(deadline); {
			time.Sleep(2 * time.Millisecond)
		}
		_ = f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM ledger_transfers WHERE idempotency_key LIKE 'c:%'`).Scan(&writtenWhileBusy)
		_ = shards.Rollback(context.WithoutCancel(ctx))
	}()
	var mu sync.Mutex
	var errs []error
	capture := func(w string, s ledger.Split) func() {
		return func() {
			_, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "c:" + w, HoldID: holds[w].ID, Split: s})
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	// The first capture credits no fee: it only keeps the batch from starting until the other
	// three have queued.
	f.inOneBatch(first, capture(first, ledger.Split{DeveloperMicro: 200}),
		capture(wallets[0], split), capture(wallets[1], split), capture(wallets[2], split))
	<-released
	if log.failedBatches("capture batch") == 0 {
		t.Fatal("no capture batch failed while every fee shard was locked")
	}
	if writtenWhileBusy != 1 {
		t.Fatalf("%d capture transfers written while every fee shard was locked, want 1 (the first, alone)", writtenWhileBusy)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range wallets {
		f.wantBalance(w, 10_000-300, 0)
	}
	f.wantBalance(first, 10_000-300-200, 0)
	if got := f.sum(ledger.PlatformFees()); got != 4*100 {
		t.Fatalf("platform fees = %d, want 400", got)
	}
	f.check()
}

// TestBatchBusyRowDoesNotHoldUpOthers: while another transaction holds one wallet's row, holds
// and captures on other wallets go through; the busy wallet's own calls finish once it is free.
func TestBatchBusyRowDoesNotHoldUpOthers(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	busy, others := addr(1), []string{addr(2), addr(3), addr(4)}
	for _, w := range append([]string{busy}, others...) {
		f.fund(w, 10_000)
	}
	holds := map[string]ledger.Hold{}
	for _, w := range append([]string{busy}, others...) {
		holds[w] = f.hold("first:"+w, w, "pw", 1000, time.Minute)
	}
	for _, step := range []struct {
		name string
		call func(wallet string) error
	}{
		{"holds", func(w string) error {
			_, err := f.l.Hold(ctx, ledger.HoldRequest{Key: "second:" + w, Wallet: w, AmountMicro: 100, Paywall: "pw", TTL: time.Minute})
			return err
		}},
		{"captures", func(w string) error {
			_, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "capture:" + w, HoldID: holds[w].ID, Split: ledger.Split{DeveloperMicro: 500}})
			return err
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			blocker, err := f.db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = blocker.Rollback(context.WithoutCancel(ctx)) }()
			if _, err := blocker.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 FOR UPDATE`, busy); err != nil {
				t.Fatal(err)
			}
			busyDone := make(chan error, 1)
			go func() { busyDone <- step.call(busy) }()
			var wg sync.WaitGroup
			errs := make(chan error, len(others))
			for _, w := range others {
				wg.Add(1)
				go func() { defer wg.Done(); errs <- step.call(w) }()
			}
			othersDone := make(chan struct{})
			go func() { wg.Wait(); close(othersDone) }()
			select {
			case <-othersDone:
			case <-time.After(5 * time.Second):
				dumpWaits(t, f.db.Pool)
				t.Fatal("calls on other wallets waited for the busy wallet")
			}
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-busyDone:
				t.Fatalf("the call on the busy wallet finished (%v) while its row was held", err)
			default:
			}
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-busyDone; err != nil {
				t.Fatalf("the call on the busy wallet, once free: %v", err)
			}
		})
	}
	for _, w := range append([]string{busy}, others...) {
		f.wantBalance(w, 9500, 100)
	}
	f.check()
}

// TestBatchFaults injects failures into batch transactions: serialization failures are retried,
// an ambiguous commit is settled through what the batch wrote (applied or not), and when that
// lookup cannot be made the requests the batch wrote answer ErrAmbiguous, after which a retry
// with the same keys tells the truth. Every answer agrees with the database.
func TestBatchFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		point   ledger.FaultPoint
		err     error
		n       int
		blind   bool // lookups fail: ErrAmbiguous reaches the callers
		applied bool // a blind ambiguous commit had committed
	}{
		{"40001 before commit, twice", ledger.FaultBeforeCommit, serializationFailure, 2, false, false},
		{"40003 after a real commit", ledger.FaultAfterCommit, ambiguousResult, 1, false, false},
		{"connection lost after a real commit", ledger.FaultAfterCommit, errConnectionLost, 1, false, false},
		{"40003 instead of a commit", ledger.FaultBeforeCommit, ambiguousResult, 1, false, false},
		{"40003 after a real commit, lookup impossible", ledger.FaultAfterCommit, ambiguousResult, 1, true, true},
		{"40003 instead of a commit, lookup impossible", ledger.FaultBeforeCommit, ambiguousResult, 1, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := &faultPlan{}
			opts := ledger.Options{Faults: plan.hook}
			if tc.blind {
				opts.ResolveTimeout = time.Nanosecond
			}
			f := newFixture(t, opts)
			ledger.SetSoloGrace(f.l, time.Minute)
			ctx := t.Context()
			first, ws := addr(100), []string{addr(1), addr(2), addr(3)}
			for _, w := range append([]string{first}, ws...) {
				f.fund(w, 10_000)
			}

			// Holds.
			plan.add("hold batch", tc.point, tc.n, tc.err)
			var mu sync.Mutex
			holds := map[string]holdResult{}
			hold := func(w string) func() {
				return func() {
					h, err := f.l.Hold(ctx, ledger.HoldRequest{Key: "h:" + w, Wallet: w, AmountMicro: 1000, Paywall: "pw", TTL: time.Minute})
					mu.Lock()
					holds[w] = holdResult{h, err}
					mu.Unlock()
				}
			}
			f.inOneBatch(first, hold(first), hold(ws[0]), hold(ws[1]), hold(ws[2]))
			if plan.remaining() != 0 {
				t.Fatal("the injected hold batch fault was not met")
			}
			for _, w := range append([]string{first}, ws...) {
				r := holds[w]
				if tc.blind && w != first {
					wantErr(t, r.err, ledger.ErrAmbiguous)
					// Retrying with the same key tells the truth.
					r.h, r.err = f.l.Hold(ctx, ledger.HoldRequest{Key: "h:" + w, Wallet: w, AmountMicro: 1000, Paywall: "pw", TTL: time.Minute})
					holds[w] = r
				}
				if r.err != nil {
					t.Fatalf("hold on %s: %v", w, r.err)
				}
				if stored, err := f.l.GetHold(ctx, r.h.ID); err != nil || stored.Status != ledger.HoldOpen {
					t.Fatalf("hold on %s answered %s; stored %+v, %v", w, r.h.ID, stored, err)
				}
				f.wantBalance(w, 10_000, 1000)
			}

			// Captures.
			plan.add("capture batch", tc.point, tc.n, tc.err)
			caps := map[string]captureResult{}
			capture := func(w string) func() {
				return func() {
					r := ledger.CaptureRequest{Key: "c:" + w, HoldID: holds[w].h.ID, Split: ledger.Split{FeeMicro: 100, DeveloperMicro: 500}}
					res, err := f.l.Capture(ctx, r)
					mu.Lock()
					caps[w] = captureResult{r, res, err}
					mu.Unlock()
				}
			}
			f.inOneBatch(first, capture(first), capture(ws[0]), capture(ws[1]), capture(ws[2]))
			if plan.remaining() != 0 {
				t.Fatal("the injected capture batch fault was not met")
			}
			for _, w := range append([]string{first}, ws...) {
				r := caps[w]
				if tc.blind && w != first {
					wantErr(t, r.err, ledger.ErrAmbiguous)
					id, found := keyApplied(t, f.db.Pool, r.req.Key)
					if found != tc.applied {
						t.Fatalf("capture on %s: applied %v (%s), want %v", w, found, id, tc.applied)
					}
					r.res, r.err = f.l.Capture(ctx, r.req)
				}
				if r.err != nil || r.res.ChargedMicro != 600 || r.res.ReleasedMicro != 400 {
					t.Fatalf("capture on %s = %+v, %v", w, r.res, r.err)
				}
				if id, found := keyApplied(t, f.db.Pool, r.req.Key); !found || id != r.res.Transfer.ID {
					t.Fatalf("capture on %s answered %s; stored %s (%v)", w, r.res.Transfer.ID, id, found)
				}
				f.wantBalance(w, 9400, 0)
			}
			if got := f.sum(ledger.Earnings("pw")); got != 4*500 {
				t.Fatalf("earnings = %d, want %d", got, 4*500)
			}
			f.check()
		})
	}
}

// TestBatchingOff: Batch 1 runs every call on its own, as before batching existed.
func TestBatchingOff(t *testing.T) {
	log := &batchLog{}
	f := newFixture(t, ledger.Options{Batch: 1, Logger: slog.New(log)})
	w := addr(1)
	f.fund(w, 100_000)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: fmt.Sprint("h", i), Wallet: w, AmountMicro: 100, Paywall: "pw", TTL: time.Minute})
			if err == nil {
				_, err = f.l.Capture(t.Context(), ledger.CaptureRequest{Key: fmt.Sprint("c", i), HoldID: h.ID, Split: ledger.Split{DeveloperMicro: 60}})
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := len(log.batches); n != 0 {
		t.Fatalf("%d batches committed with batching off", n)
	}
	f.wantBalance(w, 100_000-16*60, 0)
	f.check()
}
