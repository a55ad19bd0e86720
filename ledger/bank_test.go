package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
)

// The bank test, after Jepsen's (../shared/reference/ledger.md §5): many workers call the real
// ledger API with a skewed mix of every operation, duplicates included, while backends are
// killed, serialization failures and ambiguous commits are injected, and statements time out
// (a nemesis holds random wallet rows longer than the faulty pool's statement_timeout).
// A checker reads consistent snapshots during the run and at the end; every operation whose
// outcome the client could not know is resolved through its key; and the money the database
// holds is compared, account by account, with a model replayed from what the clients were told.

const (
	bankWorkers  = 32
	bankWallets  = 48
	bankPaywalls = 3
)

var bankChains = []string{"137", "80002"}

// outcome is what a client learned from one call.
type outcome int

const (
	outOK      outcome = iota // acknowledged
	outFailed                 // refused with a domain error (or any error but ErrAmbiguous): not applied
	outUnknown                // ErrAmbiguous: resolved through the key at the end
)

// effects is how an operation moves money, by account (summed over shards).
type effects map[ledger.Account]int64

func (e effects) add(a ledger.Account, v int64) {
	if v != 0 {
		e[a] += v
	}
}

// record is one call and what came of it.
type record struct {
	kind    string // deposit, hold, capture, void, charge, payout, settle, fail, reverse
	key     string // idempotency key (hold keys for holds; derived keys for settle and fail)
	dup     bool   // a duplicate of an earlier acknowledged call
	wallet  string
	paywall string
	chain   string
	amount  int64
	split   ledger.Split
	target  string // hold id (capture, void), payout id (settle, fail), transfer id (reverse)
	out     outcome
	err     error
	result  string // transfer, hold or payout id
	charged int64  // capture
	fx      effects
	applied bool // after resolution
}

// bank is the test's world.
type bank struct {
	t        *testing.T
	db       *testdb.DB
	fast     *ledger.Ledger // no hook, no statement_timeout
	faulty   *ledger.Ledger // injected faults, statement_timeout
	blind    *ledger.Ledger // like faulty, but its lookups never succeed: ambiguity reaches the client
	faults   *randomFaults
	logs     *logCounter
	calls    atomic.Int64
	limit    int64
	mu       sync.Mutex
	records  []*record
	acked    []*record // acknowledged first calls, for duplicates and reversals
	byResult map[string]*record
	failures []string
}

func (b *bank) violation(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = append(b.failures, fmt.Sprintf(format, args...))
}

func (b *bank) add(r *record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records = append(b.records, r)
	if r.out == outOK && !r.dup {
		b.acked = append(b.acked, r)
		if r.result != "" {
			b.byResult[r.result] = r
		}
	}
}

func (b *bank) randomAcked(rnd *rand.Rand, kinds ...string) *record {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range 8 {
		if len(b.acked) == 0 {
			return nil
		}
		r := b.acked[rnd.IntN(len(b.acked))]
		for _, k := range kinds {
			if r.kind == k {
				return r
			}
		}
	}
	return nil
}

// classify turns a call's error into an outcome.
func classify(err error) outcome {
	switch {
	case err == nil:
		return outOK
	case errors.Is(err, ledger.ErrAmbiguous):
		return outUnknown
	default:
		return outFailed
	}
}

// domainErrs are the refusals a correct ledger gives in this workload.
var domainErrs = []error{ledger.ErrInsufficientFunds, ledger.ErrHoldExpired, ledger.ErrHoldFinished,
	ledger.ErrAlreadyReversed, ledger.ErrIdempotencyConflict, ledger.ErrPayoutFinished}

func isDomain(err error) bool {
	for _, d := range domainErrs {
		if errors.Is(err, d) {
			return true
		}
	}
	return false
}

func TestBankInvariantsUnderFaults(t *testing.T) {
	ops := int64(10_000)
	if v, err := strconv.Atoi(os.Getenv("TOLLGATE_BANK_OPS")); err == nil && v > 0 {
		ops = int64(v)
	}
	db := testdb.NewWithPool(t, 4, ledger.Migrations)
	logs := &logCounter{counts: map[string]int{}}
	logger := slog.New(logs)
	faults := &randomFaults{serialization: 0.03, ambiguousBefore: 0.01, ambiguousAfter: 0.01, lostAfter: 0.01}
	b := &bank{
		t: t, db: db, logs: logs, faults: faults, limit: ops, byResult: map[string]*record{},
		fast: ledger.New(bankPool(t, db.URL, 18, ""), ledger.Options{Logger: logger}),
	}
	slow := bankPool(t, db.URL, 18, "200ms")
	b.faulty = ledger.New(slow, ledger.Options{Logger: logger, Faults: faults.hook})
	b.blind = ledger.New(slow, ledger.Options{Logger: logger, Faults: faults.hook, ResolveTimeout: time.Nanosecond})
	ctx := t.Context()
	for i := range bankWallets {
		r := &record{kind: "deposit", key: fmt.Sprintf("seed:%d", i), wallet: addr(i), chain: "137", amount: 20_000 + int64(i)*500}
		b.deposit(ctx, b.fast, r)
		if r.out != outOK {
			t.Fatalf("seed deposit: %v", r.err)
		}
	}

	start := time.Now()
	stop := make(chan struct{})
	var bg sync.WaitGroup
	var kills, checks, sweeps, swept atomic.Int64
	// nemesis: kill a random worker session every ~200ms, mostly mid-transaction
	bg.Go(every(stop, 100, 300, func() {
		var n int64
		err := db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM (
			SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tollgate-bank'
			  AND state IN ('active', 'idle in transaction', 'idle')
			ORDER BY state = 'idle', random() LIMIT 1) AS victim`).Scan(&n)
		if err == nil {
			kills.Add(n)
		}
	}))
	// nemesis: hold a random wallet's row for longer than the faulty pool's statement_timeout,
	// so that statements waiting for it time out (57014) and are retried
	bg.Go(every(stop, 150, 300, func() {
		lockWalletRow(db.Pool, addr(rand.IntN(bankWallets)), 350*time.Millisecond)
	}))
	// checker: consistent snapshots during the run
	bg.Go(every(stop, 750, 750, func() {
		v, err := ledgercheck.Check(context.Background(), db.Pool)
		if err != nil {
			b.violation("checker could not read a snapshot: %v", err)
			return
		}
		checks.Add(1)
		for _, s := range v {
			b.violation("during the run: %s", s)
		}
	}))
	for range 2 { // two sweeping "replicas"
		bg.Go(every(stop, 40, 40, func() {
			n, err := b.fast.SweepExpiredHolds(context.Background(), 50)
			if err == nil {
				sweeps.Add(1)
				swept.Add(int64(n))
			}
		}))
	}

	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Second):
				t.Logf("bank: %d of %d calls after %s", b.calls.Load(), b.limit, time.Since(start).Round(time.Second))
			}
		}
	}()
	var workers sync.WaitGroup
	for w := range bankWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for b.calls.Load() < b.limit {
				b.step(rnd)
			}
		}()
	}
	workers.Wait()
	close(stop)
	bg.Wait()
	elapsed := time.Since(start)

	// Let the short holds expire and every abandoned server session finish (a client that gave
	// up leaves its backend running until it reads the closed socket), then sweep everything
	// that expired by now and check the final state.
	time.Sleep(600 * time.Millisecond)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var busy int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND application_name = 'tollgate-bank' AND state <> 'idle'`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if busy == 0 {
			break
		}
	}
	var sweptUntil time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&sweptUntil); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := b.fast.SweepExpiredHolds(ctx, 500)
		if err != nil {
			t.Fatalf("final sweep: %v", err)
		}
		swept.Add(int64(n))
		if n == 0 {
			break
		}
	}
	final, err := ledgercheck.Check(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	checks.Add(1)
	for _, s := range final {
		b.violation("at the end: %s", s)
	}
	var stale int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM ledger_holds WHERE status = 'open' AND expires_at <= $1`, sweptUntil).Scan(&stale); err != nil {
		t.Fatal(err)
	}
	if stale > 0 {
		b.violation("%d expired holds were not released by the sweeper", stale)
	}
	unknown := b.resolve(ctx)
	b.compareWithModel(ctx)

	// Report.
	counts := map[string]int{}
	for _, r := range b.records {
		name := r.kind
		if r.dup {
			name = "dup-" + r.kind
		}
		counts[name+"/"+[]string{"ok", "refused", "unknown"}[r.out]]++
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var line strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&line, " %s=%d", k, counts[k])
	}
	t.Logf("bank: %d calls by %d workers in %s (%.0f calls/s)", len(b.records), bankWorkers, elapsed.Round(time.Millisecond), float64(len(b.records))/elapsed.Seconds())
	t.Logf("bank: outcomes:%s", line.String())
	t.Logf("bank: faults: %d backends killed; injected %d serialization failures, %d ambiguous-before-commit, %d ambiguous-after-commit, %d lost-after-commit; statement timeouts seen %d",
		kills.Load(), faults.count[0].Load(), faults.count[1].Load(), faults.count[2].Load(), faults.count[3].Load(), logs.get("retry/57014"))
	t.Logf("bank: ledger retries by cause: %s; ambiguous commits resolved: %d applied, %d not applied; ErrAmbiguous resolved by the test: %d",
		logs.summary("retry/"), logs.get("resolved/applied"), logs.get("resolved/not applied"), unknown)
	t.Logf("bank: %d consistent snapshots checked; sweeper released %d holds in %d sweeps", checks.Load(), swept.Load(), sweeps.Load())
	t.Logf("bank: %d batches of holds and captures committed, writing %d of them; %d faults injected into batch transactions",
		logs.get("batch/committed"), logs.get("batch/written"), faults.inBatches.Load())
	if kills.Load() == 0 || faults.count[0].Load() == 0 || faults.count[2].Load() == 0 || logs.get("retry/57014") == 0 {
		t.Errorf("a fault was never injected (kills %d, 40001 %d, ambiguous %d, statement timeouts %d): the run proves less than it claims",
			kills.Load(), faults.count[0].Load(), faults.count[2].Load(), logs.get("retry/57014"))
	}
	if logs.get("batch/written") == 0 || faults.inBatches.Load() == 0 {
		t.Errorf("no batch wrote anything (%d) or no fault hit a batch (%d): the run does not test batching",
			logs.get("batch/written"), faults.inBatches.Load())
	}
	for i, f := range b.failures {
		if i == 30 {
			t.Errorf("… and %d more violations", len(b.failures)-30)
			break
		}
		t.Error(f)
	}
}

// every returns a loop that runs fn after each pause of minMs to maxMs milliseconds (uniformly
// drawn; equal bounds give a fixed period) until stop is closed.
func every(stop <-chan struct{}, minMs, maxMs int, fn func()) func() {
	return func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(minMs+rand.IntN(maxMs-minMs+1)) * time.Millisecond):
			}
			fn()
		}
	}
}

// lockWalletRow holds a wallet's balance row locked for d, as a slow transaction elsewhere
// would, then rolls back (it changes nothing).
func lockWalletRow(pool *pgxpool.Pool, wallet string, d time.Duration) {
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return // the nemesis is best effort; the fault count below says whether it bit
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 FOR UPDATE`, wallet); err != nil {
		return
	}
	time.Sleep(d)
}

// bankPool opens a pool for the workers, tagged so the nemesis can find its backends.
func bankPool(t *testing.T, url string, size int32, statementTimeout string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = size
	// Without a connect timeout, pgxpool waits forever for a backend that never answers.
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.RuntimeParams["application_name"] = "tollgate-bank"
	if statementTimeout != "" {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = statementTimeout
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// step runs one randomly chosen scenario.
func (b *bank) step(rnd *rand.Rand) {
	l := b.fast
	switch n := rnd.IntN(20); {
	case n < 2:
		l = b.blind
	case n < 11:
		l = b.faulty
	}
	ctx, cancel := context.WithTimeout(b.t.Context(), 20*time.Second)
	defer cancel()
	if rnd.IntN(8) == 0 {
		// An impatient caller: its deadline may strike in the middle of a statement or COMMIT.
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(1+rnd.IntN(15))*time.Millisecond)
		defer c2()
	}
	wallet := addr(int(float64(bankWallets) * rnd.Float64() * rnd.Float64())) // skewed: a few hot wallets
	paywall := fmt.Sprintf("pw%d", rnd.IntN(bankPaywalls))
	key := fmt.Sprintf("%x", rnd.Uint64())
	switch n := rnd.IntN(100); {
	case n < 8:
		b.deposit(ctx, l, &record{kind: "deposit", key: "dep:" + key, wallet: wallet, chain: bankChains[rnd.IntN(2)], amount: 500 + rnd.Int64N(5000)})
	case n < 40:
		h := b.hold(ctx, l, &record{kind: "hold", key: "h:" + key, wallet: wallet, paywall: paywall, amount: 100 + rnd.Int64N(1500)}, holdTTL(rnd))
		if h == nil {
			return
		}
		time.Sleep(time.Duration(rnd.IntN(3)) * time.Millisecond)
		charge := rnd.Int64N(h.amount * 3 / 2) // a third overrun the hold
		b.capture(ctx, l, &record{kind: "capture", key: "c:" + key, target: h.result, wallet: wallet, paywall: paywall, split: randomSplit(rnd, charge)})
	case n < 48:
		if h := b.hold(ctx, l, &record{kind: "hold", key: "h:" + key, wallet: wallet, paywall: paywall, amount: 100 + rnd.Int64N(800)}, holdTTL(rnd)); h != nil {
			b.void(ctx, l, &record{kind: "void", target: h.result, wallet: wallet})
		}
	case n < 52: // abandoned: left for the sweeper
		b.hold(ctx, l, &record{kind: "hold", key: "h:" + key, wallet: wallet, paywall: paywall, amount: 50 + rnd.Int64N(300)}, time.Duration(20+rnd.IntN(200))*time.Millisecond)
	case n < 62:
		split := randomSplit(rnd, 50+rnd.Int64N(800))
		split.DeveloperMicro += split.ProviderMicro
		split.ProviderMicro, split.Provider = 0, ""
		b.charge(ctx, l, &record{kind: "charge", key: "ch:" + key, wallet: wallet, paywall: paywall, split: split})
	case n < 68:
		b.payout(ctx, l, rnd, paywall, "po:"+key)
	case n < 75:
		if orig := b.randomAcked(rnd, "deposit", "capture", "charge"); orig != nil {
			b.reverse(ctx, l, &record{kind: "reverse", key: "rev:" + key, target: orig.result})
		}
	default:
		b.duplicate(ctx, l, rnd)
	}
}

func holdTTL(rnd *rand.Rand) time.Duration {
	if rnd.IntN(10) == 0 {
		return time.Duration(5+rnd.IntN(40)) * time.Millisecond // may expire before its capture
	}
	return time.Minute
}

func randomSplit(rnd *rand.Rand, charge int64) ledger.Split {
	s := ledger.Split{FeeMicro: charge / 10}
	if rnd.IntN(2) == 0 {
		s.ProviderMicro, s.Provider = charge/2, "openrouter"
	}
	s.DeveloperMicro = charge - s.FeeMicro - s.ProviderMicro
	return s
}

// finish records a call's result, checking what the ledger promises about its errors.
func (b *bank) finish(r *record, err error) {
	b.calls.Add(1)
	r.err, r.out = err, classify(err)
	if r.out == outFailed && !isDomain(err) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, ledger.ErrUnavailable) {
		// Not a refusal the workload provokes, not a timeout, not a give-up: worth a look.
		b.violation("%s %s: unexpected error: %v", r.kind, r.key, err)
	}
	b.add(r)
}

func (b *bank) deposit(ctx context.Context, l *ledger.Ledger, r *record) {
	tr, err := l.Deposit(ctx, ledger.DepositRequest{Key: r.key, ChainID: r.chain, Wallet: r.wallet, AmountMicro: r.amount})
	r.result = tr.ID
	r.fx = effects{}
	r.fx.add(ledger.Wallet(r.wallet), r.amount)
	r.fx.add(ledger.Treasury(r.chain), -r.amount)
	b.finish(r, err)
}

func (b *bank) hold(ctx context.Context, l *ledger.Ledger, r *record, ttl time.Duration) *record {
	h, err := l.Hold(ctx, ledger.HoldRequest{Key: r.key, Wallet: r.wallet, AmountMicro: r.amount, Paywall: r.paywall, TTL: ttl})
	r.result = h.ID
	r.fx = effects{}
	b.finish(r, err)
	if r.out != outOK {
		return nil
	}
	return r
}

// captureEffects is the money a capture moves, recomputed by the model from the split and what
// was charged: the shortfall comes out of the developer's share, then the fee, then the provider's.
func captureEffects(wallet, paywall string, s ledger.Split, charged int64) effects {
	short := s.TotalMicro() - charged
	take := func(v int64) int64 { n := min(v, short); short -= n; return v - n }
	dev := take(s.DeveloperMicro)
	fee := take(s.FeeMicro)
	prov := take(s.ProviderMicro)
	fx := effects{}
	fx.add(ledger.Wallet(wallet), -charged)
	fx.add(ledger.ProviderCosts(s.Provider), prov)
	fx.add(ledger.PlatformFees(), fee)
	fx.add(ledger.Earnings(paywall), dev)
	return fx
}

func (b *bank) capture(ctx context.Context, l *ledger.Ledger, r *record) {
	res, err := l.Capture(ctx, ledger.CaptureRequest{Key: r.key, HoldID: r.target, Split: r.split})
	r.result, r.charged = res.Transfer.ID, res.ChargedMicro
	if err == nil {
		if res.ChargedMicro+res.ShortfallMicro != r.split.TotalMicro() || res.ChargedMicro < 0 || res.ShortfallMicro < 0 {
			b.violation("capture %s: charged %d + shortfall %d != charge %d", r.key, res.ChargedMicro, res.ShortfallMicro, r.split.TotalMicro())
		}
		r.fx = captureEffects(r.wallet, r.paywall, r.split, res.ChargedMicro)
	}
	b.finish(r, err)
}

func (b *bank) void(ctx context.Context, l *ledger.Ledger, r *record) {
	h, err := l.Void(ctx, r.target)
	if err == nil && h.Status != ledger.HoldVoided {
		b.violation("void %s answered status %s", r.target, h.Status)
	}
	r.fx = effects{}
	b.finish(r, err)
}

func (b *bank) charge(ctx context.Context, l *ledger.Ledger, r *record) {
	tr, err := l.Charge(ctx, ledger.ChargeRequest{Key: r.key, Wallet: r.wallet, Paywall: r.paywall, Split: r.split})
	r.result = tr.ID
	r.fx = effects{}
	r.fx.add(ledger.Wallet(r.wallet), -r.split.TotalMicro())
	r.fx.add(ledger.PlatformFees(), r.split.FeeMicro)
	r.fx.add(ledger.Earnings(r.paywall), r.split.DeveloperMicro)
	b.finish(r, err)
}

func (b *bank) payout(ctx context.Context, l *ledger.Ledger, rnd *rand.Rand, paywall, key string) {
	e, err := l.Earnings(ctx, paywall)
	if err != nil || e.AvailableMicro < 1 {
		return
	}
	chain := bankChains[rnd.IntN(2)]
	r := &record{kind: "payout", key: key, paywall: paywall, chain: chain, amount: 1 + rnd.Int64N(min(e.AvailableMicro, 3000))}
	p, err := l.RequestPayout(ctx, ledger.PayoutRequest{Key: key, Paywall: paywall, ChainID: chain, To: addr(0xfeed), AmountMicro: r.amount})
	r.result = p.ID
	r.fx = effects{}
	r.fx.add(ledger.Earnings(paywall), -r.amount)
	r.fx.add(ledger.PayoutsInFlight(chain), r.amount)
	b.finish(r, err)
	if r.out != outOK {
		return
	}
	switch n := rnd.IntN(10); {
	case n < 6:
		s := &record{kind: "settle", key: "ledger:payout_settle:" + p.ID, target: p.ID, paywall: paywall, chain: chain, amount: r.amount, fx: effects{}}
		s.fx.add(ledger.PayoutsInFlight(chain), -r.amount)
		s.fx.add(ledger.Treasury(chain), r.amount)
		_, err := l.SettlePayout(ctx, p.ID, "0x"+key)
		b.finish(s, err)
	case n < 9:
		f := &record{kind: "fail", key: "ledger:payout_fail:" + p.ID, target: p.ID, paywall: paywall, chain: chain, amount: r.amount, fx: effects{}}
		f.fx.add(ledger.PayoutsInFlight(chain), -r.amount)
		f.fx.add(ledger.Earnings(paywall), r.amount)
		_, err := l.FailPayout(ctx, p.ID, "test")
		b.finish(f, err)
	}
}

func (b *bank) reverse(ctx context.Context, l *ledger.Ledger, r *record) {
	tr, err := l.Reverse(ctx, ledger.ReverseRequest{Key: r.key, TransferID: r.target})
	r.result = tr.ID
	b.mu.Lock()
	orig := b.byResult[r.target]
	b.mu.Unlock()
	r.fx = effects{}
	for a, v := range orig.fx {
		r.fx.add(a, -v)
	}
	b.finish(r, err)
}

// duplicate replays an acknowledged call: with the same request it must answer the same result;
// with a different one, ErrIdempotencyConflict. Neither may move money.
func (b *bank) duplicate(ctx context.Context, l *ledger.Ledger, rnd *rand.Rand) {
	orig := b.randomAcked(rnd, "deposit", "hold", "capture", "charge", "payout", "reverse")
	if orig == nil {
		return
	}
	same := rnd.IntN(3) != 0
	r := &record{kind: orig.kind, key: orig.key, dup: true}
	delta := int64(0)
	if !same {
		delta = 1
	}
	var (
		id  string
		err error
	)
	switch orig.kind {
	case "deposit":
		var tr ledger.Transfer
		tr, err = l.Deposit(ctx, ledger.DepositRequest{Key: orig.key, ChainID: orig.chain, Wallet: orig.wallet, AmountMicro: orig.amount + delta})
		id = tr.ID
	case "hold":
		var h ledger.Hold
		h, err = l.Hold(ctx, ledger.HoldRequest{Key: orig.key, Wallet: orig.wallet, AmountMicro: orig.amount + delta, Paywall: orig.paywall, TTL: time.Minute})
		id = h.ID
	case "capture":
		s := orig.split
		s.DeveloperMicro += delta
		var res ledger.CaptureResult
		res, err = l.Capture(ctx, ledger.CaptureRequest{Key: orig.key, HoldID: orig.target, Split: s})
		id = res.Transfer.ID
		if err == nil && res.ChargedMicro != orig.charged {
			b.violation("capture %s replayed with charged %d, first answer %d", orig.key, res.ChargedMicro, orig.charged)
		}
	case "charge":
		s := orig.split
		s.DeveloperMicro += delta
		var tr ledger.Transfer
		tr, err = l.Charge(ctx, ledger.ChargeRequest{Key: orig.key, Wallet: orig.wallet, Paywall: orig.paywall, Split: s})
		id = tr.ID
	case "payout":
		var p ledger.Payout
		p, err = l.RequestPayout(ctx, ledger.PayoutRequest{Key: orig.key, Paywall: orig.paywall, ChainID: orig.chain, To: addr(0xfeed), AmountMicro: orig.amount + delta})
		id = p.ID
	case "reverse":
		target := orig.target
		if !same {
			target = "00000000-0000-4000-8000-000000000000"
		}
		var tr ledger.Transfer
		tr, err = l.Reverse(ctx, ledger.ReverseRequest{Key: orig.key, TransferID: target})
		id = tr.ID
	}
	r.result = id
	r.fx = effects{}
	switch {
	case same && err == nil && id != orig.result:
		b.violation("%s %s replayed with the same request gave %s, first answer %s", orig.kind, orig.key, id, orig.result)
	case !same && err == nil:
		b.violation("%s %s replayed with a different request succeeded (%s)", orig.kind, orig.key, id)
	case !same && classify(err) == outFailed && !errors.Is(err, ledger.ErrIdempotencyConflict) && !transient(err):
		b.violation("%s %s replayed with a different request: %v, want ErrIdempotencyConflict", orig.kind, orig.key, err)
	}
	b.finish(r, err)
}

func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, ledger.ErrUnavailable) || errors.Is(err, ledger.ErrAmbiguous)
}

// resolve settles, by key, what each call whose outcome was unknown did, and checks that every
// acknowledged call is in the database exactly as answered and every refused one is not.
func (b *bank) resolve(ctx context.Context) (unknown int) {
	transfers := map[string]string{}
	rows, err := b.db.Pool.Query(ctx, `SELECT idempotency_key, id FROM ledger_transfers`)
	if err != nil {
		b.t.Fatal(err)
	}
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			b.t.Fatal(err)
		}
		transfers[k] = id
	}
	holds := map[string]string{}
	holdStatus := map[string]string{}
	holdCharged := map[string]*int64{}
	rows, err = b.db.Pool.Query(ctx, `SELECT idempotency_key, id, status, charged_micro FROM ledger_holds`)
	if err != nil {
		b.t.Fatal(err)
	}
	for rows.Next() {
		var k, id, status string
		var charged *int64
		if err := rows.Scan(&k, &id, &status, &charged); err != nil {
			b.t.Fatal(err)
		}
		holds[k], holdStatus[id], holdCharged[id] = id, status, charged
	}
	if rows.Err() != nil {
		b.t.Fatal(rows.Err())
	}
	for _, r := range b.records {
		if r.dup {
			continue
		}
		var (
			id    string
			found bool
		)
		switch r.kind {
		case "hold":
			id, found = holds[r.key]
		case "void":
			found = holdStatus[r.target] == "voided"
		default:
			id, found = transfers[r.key]
		}
		switch r.out {
		case outOK:
			r.applied = true
			if !found {
				b.violation("%s %s was acknowledged but is not in the database", r.kind, r.key)
			}
			if (r.kind == "hold" || r.kind == "deposit" || r.kind == "charge" || r.kind == "capture" || r.kind == "reverse") && found && id != r.result {
				b.violation("%s %s acknowledged as %s but the database has %s", r.kind, r.key, r.result, id)
			}
		case outFailed:
			if found && r.kind != "void" {
				b.violation("%s %s failed (%v) but was applied", r.kind, r.key, r.err)
			}
		case outUnknown:
			unknown++
			r.applied = found
			if found && r.kind == "capture" {
				c := holdCharged[r.target]
				if c == nil {
					b.violation("capture %s applied but its hold has no charge", r.key)
					continue
				}
				r.charged = *c
				r.fx = captureEffects(r.wallet, r.paywall, r.split, *c)
			}
			if found && r.kind == "payout" {
				// Payout effects are fixed by the request; nothing more to learn.
				_ = id
			}
		}
	}
	return unknown
}

// compareWithModel replays every applied call's effects and compares the totals with the
// database, account by account.
func (b *bank) compareWithModel(ctx context.Context) {
	model := effects{}
	for _, r := range b.records {
		if r.dup || !r.applied {
			continue
		}
		for a, v := range r.fx {
			model[a] += v
		}
	}
	db := effects{}
	rows, err := b.db.Pool.Query(ctx, `SELECT kind, ref, SUM(posted)::BIGINT FROM ledger_balances GROUP BY kind, ref`)
	if err != nil {
		b.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a ledger.Account
		var v int64
		if err := rows.Scan(&a.Kind, &a.Ref, &v); err != nil {
			b.t.Fatal(err)
		}
		if v != 0 {
			db[a] = v
		}
	}
	for a, v := range model {
		if v == 0 {
			delete(model, a)
		}
	}
	for a, v := range db {
		if model[a] != v {
			b.violation("account %s %q holds %d, the model says %d", a.Kind, a.Ref, v, model[a])
		}
	}
	for a, v := range model {
		if _, ok := db[a]; !ok {
			b.violation("account %s %q holds 0, the model says %d", a.Kind, a.Ref, v)
		}
	}
}

// randomFaults injects failures with fixed probabilities and counts them.
type randomFaults struct {
	serialization, ambiguousBefore, ambiguousAfter, lostAfter float64
	count                                                     [4]atomic.Int64
	inBatches                                                 atomic.Int64 // faults injected into batch transactions
}

func (f *randomFaults) hook(ctx context.Context, op string, p ledger.FaultPoint) error {
	err := f.inject(p)
	if err != nil && strings.HasSuffix(op, " batch") {
		f.inBatches.Add(1)
	}
	return err
}

func (f *randomFaults) inject(p ledger.FaultPoint) error {
	x := rand.Float64()
	switch p {
	case ledger.FaultBeforeCommit:
		if x < f.serialization {
			f.count[0].Add(1)
			return serializationFailure
		}
		if x < f.serialization+f.ambiguousBefore {
			f.count[1].Add(1)
			return ambiguousResult
		}
	case ledger.FaultAfterCommit:
		if x < f.ambiguousAfter {
			f.count[2].Add(1)
			return ambiguousResult
		}
		if x < f.ambiguousAfter+f.lostAfter {
			f.count[3].Add(1)
			return errConnectionLost
		}
	}
	return nil
}

// logCounter is a slog handler that counts the ledger's retry and resolution messages.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

var sqlstate = regexp.MustCompile(`SQLSTATE (\w+)`)

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCounter) WithGroup(string) slog.Handler            { return c }
func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	var key string
	switch {
	case strings.Contains(r.Message, "retrying"):
		cause := "other"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				s := a.Value.String()
				if m := sqlstate.FindStringSubmatch(s); m != nil {
					cause = m[1]
				} else if strings.Contains(s, "connection lost") || strings.Contains(s, "conn closed") {
					cause = "connection lost"
				}
			}
			return true
		})
		key = "retry/" + cause
	case strings.Contains(r.Message, "resolved as applied"):
		key = "resolved/applied"
	case strings.Contains(r.Message, "resolved as not applied"):
		key = "resolved/not applied"
	case r.Message == "ledger: batch committed":
		var written int64
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "written" {
				written = a.Value.Int64()
			}
			return true
		})
		c.mu.Lock()
		c.counts["batch/written"] += int(written)
		c.mu.Unlock()
		key = "batch/committed"
	default:
		return nil
	}
	c.mu.Lock()
	c.counts[key]++
	c.mu.Unlock()
	return nil
}

func (c *logCounter) get(k string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.counts[k])
}

func (c *logCounter) summary(prefix string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for k, v := range c.counts {
		if strings.HasPrefix(k, prefix) {
			parts = append(parts, fmt.Sprintf("%s=%d", strings.TrimPrefix(k, prefix), v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// TestBankCheckerCatchesBrokenLedger is the negative control: a deliberately broken ledger —
// read-modify-write without row locks, on a schema stripped of its CHECK constraints — runs a
// concurrent workload, and the same checker must report it.
func TestBankCheckerCatchesBrokenLedger(t *testing.T) {
	db := testdb.NewWithPool(t, 20, ledger.Migrations)
	ctx := t.Context()
	l := ledger.New(db.Pool, ledger.Options{Shards: 1})
	const wallets = 4
	for i := range wallets {
		if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: fmt.Sprintf("d%d", i), ChainID: "137", Wallet: addr(i), AmountMicro: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.EnsureAccount(ctx, ledger.Earnings("pw")); err != nil {
		t.Fatal(err)
	}
	if v, err := ledgercheck.Check(ctx, db.Pool); err != nil || len(v) != 0 {
		t.Fatalf("before the broken workload: %v, %v", v, err)
	}
	for _, c := range []string{"ledger_balances_available_nonnegative", "ledger_transfers_complete"} {
		table := "ledger_balances"
		if strings.HasPrefix(c, "ledger_transfers") {
			table = "ledger_transfers"
		}
		db.Must(t, `ALTER TABLE `+table+` DROP CONSTRAINT `+c)
	}
	// brokenCharge moves 100 from a wallet to the paywall's earnings the naive way: read,
	// decide in the client, write back — no FOR UPDATE, no conditional write.
	brokenCharge := func(ctx context.Context, wallet string, n int) error {
		tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }() // a read-only snapshot: nothing to keep
		var posted, earned int64
		if err := tx.QueryRow(ctx, `SELECT posted FROM ledger_balances WHERE kind = 'wallet' AND ref = $1`, wallet).Scan(&posted); err != nil {
			return err
		}
		if posted < 100 {
			return nil // "insufficient funds", decided on a stale read
		}
		if err := tx.QueryRow(ctx, `SELECT posted FROM ledger_balances WHERE kind = 'earnings' AND ref = 'pw'`).Scan(&earned); err != nil {
			return err
		}
		time.Sleep(time.Millisecond) // widen the race window
		if _, err := tx.Exec(ctx, `UPDATE ledger_balances SET posted = posted - 100 WHERE kind = 'wallet' AND ref = $1`, wallet); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE ledger_balances SET posted = $1 WHERE kind = 'earnings' AND ref = 'pw'`, earned+100); err != nil {
			return err
		}
		var id string
		if err := tx.QueryRow(ctx, `INSERT INTO ledger_transfers (kind, idempotency_key, request_hash, legs_expected, legs_applied, legs_sum)
			VALUES ('charge', $1, '\x00', 2, 2, 0) RETURNING id`, fmt.Sprintf("broken:%s:%d", wallet, n)).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (transfer_id, leg, kind, ref, shard, amount, created_at)
			VALUES ($1, 0, 'wallet', $2, 0, -100, now()), ($1, 1, 'earnings', 'pw', 0, 100, now())`, id, wallet); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 20 {
				if err := brokenCharge(ctx, addr(w%wallets), w*100+n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, err := ledgercheck.Check(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, s := range v {
		t.Logf("checker caught: %s", s)
		for _, want := range []string{"no constrained balance is negative", "materialized posted balances equal the sum of their entries", "total money is conserved (balances)"} {
			if strings.HasPrefix(s, want) {
				found[want] = true
			}
		}
	}
	for _, want := range []string{"no constrained balance is negative", "materialized posted balances equal the sum of their entries", "total money is conserved (balances)"} {
		if !found[want] {
			t.Errorf("the checker missed %q in a ledger broken by lost updates and stale checks", want)
		}
	}
}
