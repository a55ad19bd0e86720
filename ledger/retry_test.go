package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
)

// faultPlan injects errors at fault points: the next n calls at point p for op return err.
type faultPlan struct {
	mu    sync.Mutex
	rules []*faultRule
	calls atomic.Int64
}

type faultRule struct {
	op    string // "" matches every op
	point ledger.FaultPoint
	left  int
	err   error
	do    func(ctx context.Context) error // runs instead of returning err when set
}

func (p *faultPlan) add(op string, point ledger.FaultPoint, n int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &faultRule{op: op, point: point, left: n, err: err})
}

func (p *faultPlan) hook(ctx context.Context, op string, point ledger.FaultPoint) error {
	p.calls.Add(1)
	p.mu.Lock()
	var hit *faultRule
	for _, r := range p.rules {
		if r.left > 0 && r.point == point && (r.op == "" || r.op == op) {
			r.left--
			hit = r
			break
		}
	}
	p.mu.Unlock()
	if hit == nil {
		return nil
	}
	if hit.do != nil {
		return hit.do(ctx)
	}
	return hit.err
}

func (p *faultPlan) remaining() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.rules {
		n += r.left
	}
	return n
}

var (
	serializationFailure = &pgconn.PgError{Severity: "ERROR", Code: "40001", Message: "injected: could not serialize access"}
	deadlock             = &pgconn.PgError{Severity: "ERROR", Code: "40P01", Message: "injected: deadlock detected"}
	ambiguousResult      = &pgconn.PgError{Severity: "ERROR", Code: "40003", Message: "injected: result is ambiguous"}
	errConnectionLost    = fmt.Errorf("injected: read tcp: %w", io.ErrUnexpectedEOF)
)

func TestRetriesInjectedFailures(t *testing.T) {
	plan := &faultPlan{}
	f := newFixture(t, ledger.Options{Faults: plan.hook, MaxRetries: 4})
	w := addr(1)
	f.fund(w, 1000)

	t.Run("serialization failures and deadlocks before COMMIT are retried", func(t *testing.T) {
		plan.add("hold", ledger.FaultBeforeCommit, 2, serializationFailure)
		plan.add("hold", ledger.FaultBeforeCommit, 1, deadlock)
		h := f.hold("h1", w, "pw", 100, time.Minute)
		if plan.remaining() != 0 {
			t.Fatal("not every injected failure was met")
		}
		f.wantBalance(w, 1000, 100)
		if _, err := f.l.Void(t.Context(), h.ID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("retries are bounded and leave nothing behind", func(t *testing.T) {
		plan.add("charge", ledger.FaultBeforeCommit, 5, serializationFailure)
		_, err := f.l.Charge(t.Context(), ledger.ChargeRequest{Key: "ch1", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 10}})
		wantErr(t, err, ledger.ErrUnavailable)
		f.wantBalance(w, 1000, 0)
		if _, found := keyApplied(t, f.db.Pool, "ch1"); found {
			t.Fatal("a charge that gave up was applied")
		}
		// The same key succeeds once the database behaves.
		if _, err := f.l.Charge(t.Context(), ledger.ChargeRequest{Key: "ch1", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 10}}); err != nil {
			t.Fatal(err)
		}
		f.wantBalance(w, 990, 0)
	})
	t.Run("a cancelled context stops the retries", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		plan.mu.Lock()
		plan.rules = append(plan.rules, &faultRule{op: "deposit", point: ledger.FaultBeforeCommit, left: 1,
			do: func(context.Context) error { cancel(); return serializationFailure }})
		plan.mu.Unlock()
		_, err := f.l.Deposit(ctx, ledger.DepositRequest{Key: "d-cancel", ChainID: "137", Wallet: w, AmountMicro: 5})
		wantErr(t, err, context.Canceled)
		if _, found := keyApplied(t, f.db.Pool, "d-cancel"); found {
			t.Fatal("a cancelled deposit was applied")
		}
	})
	f.check()
}

// keyApplied reports whether a transfer with key exists.
func keyApplied(t *testing.T, pool *pgxpool.Pool, key string) (string, bool) {
	t.Helper()
	var id string
	err := pool.QueryRow(t.Context(), `SELECT id FROM ledger_transfers WHERE idempotency_key = $1`, key).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return id, true
}

// TestAmbiguousCommits makes every kind of write lose COMMIT's answer, both after a commit that
// happened and instead of one that did not: each must learn the truth through its key, answer
// as a replay would, and apply exactly once.
func TestAmbiguousCommits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		point ledger.FaultPoint
		err   error
	}{
		{"40003 after a real commit", ledger.FaultAfterCommit, ambiguousResult},
		{"connection lost after a real commit", ledger.FaultAfterCommit, errConnectionLost},
		{"40003 instead of a commit", ledger.FaultBeforeCommit, ambiguousResult},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := &faultPlan{}
			f := newFixture(t, ledger.Options{Faults: plan.hook, Shards: 2})
			ctx := t.Context()
			w := addr(1)
			amb := func(op string) { plan.add(op, tc.point, 1, tc.err) }
			met := func(op string) {
				t.Helper()
				if plan.remaining() != 0 {
					t.Fatalf("%s: injected fault not met", op)
				}
			}

			amb("deposit")
			dep, err := f.l.Deposit(ctx, ledger.DepositRequest{Key: "d1", ChainID: "137", Wallet: w, AmountMicro: 10_000})
			if err != nil || dep.ID == "" || len(dep.Entries) != 2 {
				t.Fatalf("deposit = %+v, %v", dep, err)
			}
			met("deposit")
			f.wantBalance(w, 10_000, 0)

			amb("hold")
			h, err := f.l.Hold(ctx, ledger.HoldRequest{Key: "h1", Wallet: w, AmountMicro: 1000, Paywall: "pw", TTL: time.Minute})
			if err != nil || h.ID == "" || h.Status != ledger.HoldOpen {
				t.Fatalf("hold = %+v, %v", h, err)
			}
			met("hold")
			f.wantBalance(w, 10_000, 1000)

			amb("capture")
			c, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "c1", HoldID: h.ID, Split: ledger.Split{FeeMicro: 100, DeveloperMicro: 500}})
			if err != nil || c.ChargedMicro != 600 || c.ReleasedMicro != 400 || c.Transfer.ID == "" {
				t.Fatalf("capture = %+v, %v", c, err)
			}
			met("capture")
			f.wantBalance(w, 9400, 0)

			h2 := f.hold("h2", w, "pw", 100, time.Minute)
			amb("void")
			v, err := f.l.Void(ctx, h2.ID)
			if err != nil || v.Status != ledger.HoldVoided {
				t.Fatalf("void = %+v, %v", v, err)
			}
			met("void")

			amb("charge")
			ch, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch1", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 400}})
			if err != nil || ch.ID == "" {
				t.Fatalf("charge = %+v, %v", ch, err)
			}
			met("charge")

			amb("request payout")
			po, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po1", Paywall: "pw", ChainID: "137", To: addr(7), AmountMicro: 300})
			if err != nil || po.Status != ledger.PayoutRequested {
				t.Fatalf("payout = %+v, %v", po, err)
			}
			met("request payout")
			amb(string(ledger.KindPayoutSettle))
			if p, err := f.l.SettlePayout(ctx, po.ID, "0xabc"); err != nil || p.Status != ledger.PayoutSettled {
				t.Fatalf("settle = %+v, %v", p, err)
			}
			met("settle")
			po2, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po2", Paywall: "pw", ChainID: "137", To: addr(7), AmountMicro: 300})
			if err != nil {
				t.Fatal(err)
			}
			amb(string(ledger.KindPayoutFail))
			if p, err := f.l.FailPayout(ctx, po2.ID, "x"); err != nil || p.Status != ledger.PayoutFailed {
				t.Fatalf("fail = %+v, %v", p, err)
			}
			met("fail")

			amb("reverse")
			rev, err := f.l.Reverse(ctx, ledger.ReverseRequest{Key: "r1", TransferID: ch.ID})
			if err != nil || rev.ID == "" {
				t.Fatalf("reverse = %+v, %v", rev, err)
			}
			met("reverse")

			f.wantBalance(w, 9400, 0)
			if e, _ := f.l.Earnings(ctx, "pw"); e.AvailableMicro != 200 || e.PaidOutMicro != 300 {
				t.Fatalf("earnings = %+v", e)
			}
			f.check()
		})
	}
}

// TestAmbiguousWhenLookupImpossible: only when the lookup itself cannot be made is the answer
// ErrAmbiguous, and then a retry with the same key tells the truth.
func TestAmbiguousWhenLookupImpossible(t *testing.T) {
	plan := &faultPlan{}
	f := newFixture(t, ledger.Options{Faults: plan.hook, ResolveTimeout: time.Nanosecond})
	w := addr(1)
	plan.add("deposit", ledger.FaultAfterCommit, 1, ambiguousResult)
	req := ledger.DepositRequest{Key: "d1", ChainID: "137", Wallet: w, AmountMicro: 10}
	_, err := f.l.Deposit(t.Context(), req)
	wantErr(t, err, ledger.ErrAmbiguous)
	tr, err := f.l.Deposit(t.Context(), req)
	if err != nil || tr.ID == "" {
		t.Fatalf("retry after ErrAmbiguous = %+v, %v", tr, err)
	}
	f.wantBalance(w, 10, 0)
	f.check()
}

// TestCancelDuringCommit cancels the caller's context while COMMIT is on its way. The answer is
// either the result (learned through the key) or a "not applied" error wrapping the
// cancellation — and the database agrees with it every time.
func TestCancelDuringCommit(t *testing.T) {
	plan := &faultPlan{}
	f := newFixture(t, ledger.Options{Faults: plan.hook})
	w := addr(1)
	f.fund(w, 1_000_000)
	var applied, notApplied int
	for i := range 40 {
		ctx, cancel := context.WithCancel(t.Context())
		delay := time.Duration(i%8) * 150 * time.Microsecond
		plan.mu.Lock()
		plan.rules = []*faultRule{{op: "charge", point: ledger.FaultBeforeCommit, left: 1, do: func(context.Context) error {
			time.AfterFunc(delay, cancel)
			return nil
		}}}
		plan.mu.Unlock()
		key := fmt.Sprintf("ch%d", i)
		tr, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: key, Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 1}})
		cancel()
		id, found := keyApplied(t, f.db.Pool, key)
		switch {
		case err == nil && found && id == tr.ID:
			applied++
		case errors.Is(err, context.Canceled) && !found:
			notApplied++
		default:
			t.Fatalf("charge %d: result %+v, err %v; database has it: %v", i, tr, err, found)
		}
	}
	t.Logf("cancelled around COMMIT 40 times: %d applied, %d not applied", applied, notApplied)
	f.wantBalance(w, 1_000_000-int64(applied), 0)
	f.check()
}

// TestKilledBackendIsRetried kills the backend that is waiting inside a hold's statement (with
// pg_terminate_backend); the hold is retried on another connection and applied once.
func TestKilledBackendIsRetried(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 1000)
	// Block the wallet row so the hold waits where we can find it.
	blocker, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 FOR UPDATE`, w); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.l.Hold(ctx, ledger.HoldRequest{Key: "h1", Wallet: w, AmountMicro: 100, Paywall: "pw", TTL: time.Minute})
		done <- err
	}()
	killed := 0
	for deadline := time.Now().Add(10 * time.Second); killed == 0 && time.Now().Before(deadline); {
		err := f.db.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&killed)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if killed == 0 {
		t.Fatal("the hold never waited on the wallet row")
	}
	time.Sleep(20 * time.Millisecond)
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("hold after its backend was killed: %v", err)
	}
	f.wantBalance(w, 1000, 100)
	f.check()
}

// TestStatementTimeoutIsRetried runs the ledger on connections with a short statement_timeout
// while a row it needs is locked: the statement times out, the transaction is retried, and it
// succeeds once the lock is gone.
func TestStatementTimeoutIsRetried(t *testing.T) {
	db := testdb.New(t, ledger.Migrations)
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "30ms"
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	retries := &logCounter{counts: map[string]int{}}
	l := ledger.New(pool, ledger.Options{MaxRetries: 20, Logger: slog.New(retries)})
	ctx := t.Context()
	w := addr(1)
	if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: "d", ChainID: "137", Wallet: w, AmountMicro: 100}); err != nil {
		t.Fatal(err)
	}
	blocker, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 FOR UPDATE`, w); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(150*time.Millisecond, func() { _ = blocker.Rollback(context.Background()) })
	start := time.Now()
	if _, err := l.Charge(ctx, ledger.ChargeRequest{Key: "c", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 30}}); err != nil {
		t.Fatalf("charge behind a lock with statement_timeout=30ms: %v", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("charge finished after %s: it did not wait for the lock", waited)
	}
	if retries.get("retry/57014") == 0 {
		t.Fatalf("no statement timeout was retried (retries: %s)", retries.summary("retry/"))
	}
	f := &fixture{t: t, db: db, l: l}
	f.wantBalance(w, 70, 0)
	f.check()
}

// TestSharedPaywallCapturesDoNotWait: while one user's capture holds its rows (paused before
// COMMIT), another user's capture on the same paywall — same earnings, fee and provider
// accounts — commits. With a single shard per shared account (the control) it has to wait.
func TestSharedPaywallCapturesDoNotWait(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     ledger.Options
		mustWait bool
	}{
		{"sharded with SKIP LOCKED", ledger.Options{Shards: 8}, false},
		{"control: one shard", ledger.Options{Shards: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paused := make(chan struct{})
			release := make(chan struct{})
			type pauseKey struct{}
			tc.opts.Faults = func(ctx context.Context, op string, p ledger.FaultPoint) error {
				if op == "capture" && p == ledger.FaultBeforeCommit && ctx.Value(pauseKey{}) != nil {
					close(paused)
					<-release
				}
				return nil
			}
			f := newFixture(t, tc.opts)
			var once sync.Once
			unpause := func() { once.Do(func() { close(release) }) }
			defer unpause()
			alice, bob := addr(1), addr(2)
			f.fund(alice, 1000)
			f.fund(bob, 1000)
			ha := f.hold("ha", alice, "pw", 500, time.Minute)
			hb := f.hold("hb", bob, "pw", 500, time.Minute)
			split := ledger.Split{ProviderMicro: 100, Provider: "openrouter", FeeMicro: 50, DeveloperMicro: 150}

			aliceDone := make(chan error, 1)
			go func() {
				ctx := context.WithValue(t.Context(), pauseKey{}, true)
				_, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "ca", HoldID: ha.ID, Split: split})
				aliceDone <- err
			}()
			<-paused
			bobDone := make(chan error, 1)
			go func() {
				_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "cb", HoldID: hb.ID, Split: split})
				bobDone <- err
			}()
			select {
			case err := <-bobDone:
				if tc.mustWait {
					t.Fatalf("bob's capture finished (%v) while alice's held the only shard: the control is broken", err)
				}
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Second):
				if !tc.mustWait {
					t.Errorf("bob's capture waited for alice's: captures on one paywall serialize")
					dumpWaits(t, f.db.Pool)
					unpause()
					t.Logf("alice: %v, bob: %v", <-aliceDone, <-bobDone)
					return
				}
			}
			unpause()
			if err := <-aliceDone; err != nil {
				t.Fatal(err)
			}
			if tc.mustWait {
				if err := <-bobDone; err != nil {
					t.Fatal(err)
				}
			}
			if got := f.sum(ledger.Earnings("pw")); got != 300 {
				t.Fatalf("earnings = %d, want 300", got)
			}
			f.check()
		})
	}
}

// dumpWaits logs what the database's sessions are waiting for.
func dumpWaits(t *testing.T, pool *pgxpool.Pool) {
	rows, err := pool.Query(context.Background(), `SELECT pid, state, COALESCE(wait_event_type, ''), COALESCE(wait_event, ''), left(query, 200)
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		v, _ := rows.Values()
		t.Logf("session %v", v)
	}
	rows2, err := pool.Query(context.Background(), `SELECT l.pid, l.locktype, l.mode, l.granted, COALESCE(c.relname, ''), l.page, l.tuple, l.transactionid::text
		FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() AND (NOT l.granted OR l.locktype IN ('tuple', 'transactionid'))`)
	if err != nil {
		t.Log(err)
		return
	}
	defer rows2.Close()
	for rows2.Next() {
		v, _ := rows2.Values()
		t.Logf("lock %v", v)
	}
}
