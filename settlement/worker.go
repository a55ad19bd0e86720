package settlement

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/ledger"
)

// Ledger is what the worker needs of the book of record; *ledger.Ledger has it.
type Ledger interface {
	Deposit(ctx context.Context, r ledger.DepositRequest) (ledger.Transfer, error)
	RequestedPayouts(ctx context.Context, chainID string, after ledger.Payout, limit int) ([]ledger.Payout, error)
	SettlePayout(ctx context.Context, payoutID, txHash string) (ledger.Payout, error)
	FailPayout(ctx context.Context, payoutID, reason string) (ledger.Payout, error)
}

// WorkerConfig is what a Worker needs. Zero durations and limits take the defaults of
// config.Settle.
type WorkerConfig struct {
	Chain    Chain
	Client   ChainClient
	Signer   Signer
	Pool     *pgxpool.Pool
	Ledger   Ledger
	Wallets  LinkedWallets
	Treasury common.Address
	Clock    Clock
	Logger   *slog.Logger
	// Holder names this worker in the lease table (default: host name and a random suffix).
	Holder string
	// Metrics receives the worker's metrics (nil: kept, but registered nowhere).
	Metrics *Metrics

	PollInterval          time.Duration
	LeaseTTL              time.Duration
	StuckAfter            time.Duration // replace an unmined transaction after this long
	RebroadcastEvery      time.Duration // resend an unmined transaction's bytes this often
	AuthorizationValidity time.Duration // lifetime of the hot wallet's payout authorizations
	RetryBackoff          time.Duration
	MaxPayoutMicro        int64
	DailyPayoutMicro      int64
	MaxAttempts           int
	// RPCUnhealthyAfter is how long the chain's node may fail to answer before Health reports
	// the worker unhealthy (default 1m).
	RPCUnhealthyAfter time.Duration
}

// balanceEvery is how often the active worker reads the hot wallet's balances for its metrics.
const balanceEvery = 30 * time.Second

// Worker settles one chain with one hot wallet: it relays top-ups, credits deposits at
// finality and pays payouts. Run it in one process per (chain, hot wallet); the lease makes a
// second one wait until the first stops renewing.
type Worker struct {
	cfg      WorkerConfig
	chain    Chain
	client   ChainClient
	signer   Signer
	pool     *pgxpool.Pool
	ledger   Ledger
	wallets  LinkedWallets
	treasury common.Address
	clock    Clock
	logger   *slog.Logger
	lease    *lease
	// broadcastAt is when each transaction hash was last sent to the node, by this process.
	// It starts empty, so after a restart every pending transaction is broadcast again.
	broadcastAt map[common.Hash]time.Time
	metrics     chainMetrics
	health      healthState
	balancesAt  time.Time // when the hot wallet's balances were last read for the metrics
	relinkAt    time.Time // when the watcher last looked for unassigned deposits of newly linked senders
}

// NewWorker checks the configuration and returns a worker; it makes no network call.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	switch {
	case cfg.Client == nil, cfg.Signer == nil, cfg.Pool == nil, cfg.Ledger == nil, cfg.Wallets == nil:
		return nil, errors.New("settlement: worker needs a client, signer, pool, ledger and linked wallets")
	case cfg.Treasury == (common.Address{}):
		return nil, errors.New("settlement: worker needs the treasury address")
	case cfg.Chain.chainID == nil:
		return nil, errors.New("settlement: worker needs a chain (ChainsFromConfig or NewChain)")
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Holder = host + "-" + hex.EncodeToString(b[:])
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&cfg.PollInterval, 2 * time.Second}, {&cfg.LeaseTTL, 30 * time.Second}, {&cfg.StuckAfter, 3 * time.Minute},
		{&cfg.RebroadcastEvery, time.Minute}, {&cfg.AuthorizationValidity, time.Hour}, {&cfg.RetryBackoff, time.Minute},
		{&cfg.RPCUnhealthyAfter, time.Minute},
	}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
	}
	if cfg.MaxPayoutMicro <= 0 {
		cfg.MaxPayoutMicro = 1_000_000_000
	}
	if cfg.DailyPayoutMicro <= 0 {
		cfg.DailyPayoutMicro = 10_000_000_000
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	logger := cfg.Logger.With("chain", cfg.Chain.Name, "hot_wallet", cfg.Signer.Address().Hex())
	w := &Worker{
		cfg: cfg, chain: cfg.Chain, signer: cfg.Signer, pool: cfg.Pool, ledger: cfg.Ledger,
		wallets: cfg.Wallets, treasury: cfg.Treasury, clock: cfg.Clock, logger: logger,
		lease: &lease{
			pool: cfg.Pool, chainID: cfg.Chain.ID, wallet: lowerHex(cfg.Signer.Address()),
			holder: cfg.Holder, ttl: cfg.LeaseTTL, clock: cfg.Clock,
		},
		broadcastAt: map[common.Hash]time.Time{},
		metrics:     cfg.Metrics.forChain(cfg.Chain.ID),
	}
	w.client = observedClient{ChainClient: cfg.Client, w: w}
	w.health.lease = leaseStarting
	w.health.lastLeaseCheck = cfg.Clock.Now()
	return w, nil
}

func (w *Worker) sender() string { return lowerHex(w.signer.Address()) }

// Check verifies that the node serves the configured chain and token (chain id, 6 decimals,
// EIP-712 domain). A mismatch is a configuration error that retrying cannot fix.
func (w *Worker) Check(ctx context.Context) error { return checkToken(ctx, w.client, w.chain) }

// Tick takes or renews the lease and, if this worker holds it, does one round of work:
// follow sent transactions, pay payouts, relay top-ups, watch deposits. Each step runs even
// if an earlier one failed; the errors are joined.
// It can return: ErrLeaseLost (another worker holds the hot wallet; nothing was done).
func (w *Worker) Tick(ctx context.Context) error {
	held, err := w.lease.acquire(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.health.leaseFailed(w.clock.Now(), w.cfg.LeaseTTL, err)
			w.metrics.tickError(stepLease)
		}
		w.leaseMetrics()
		return err
	}
	w.health.leaseChecked(w.clock.Now(), held)
	w.leaseMetrics()
	if !held {
		return ErrLeaseLost
	}
	var errs []error
	for _, step := range []struct {
		name string
		run  func(context.Context) error
	}{
		{stepTransactions, w.monitorTxs},
		{stepPayouts, func(ctx context.Context) error {
			return errors.Join(w.syncPayouts(ctx), w.processPayouts(ctx))
		}},
		{stepTopUps, w.relayTopUps},
		{stepDeposits, w.watchDeposits},
	} {
		if err := step.run(ctx); err != nil {
			if errors.Is(err, ErrLeaseLost) {
				w.health.leaseFenced()
				w.leaseMetrics()
				return err
			}
			if ctx.Err() == nil {
				w.metrics.tickError(step.name)
			}
			errs = append(errs, fmt.Errorf("%s: %w", step.name, err))
		}
	}
	if err := w.observe(ctx); err != nil {
		errs = append(errs, fmt.Errorf("metrics: %w", err))
	}
	return errors.Join(errs...)
}

// leaseMetrics shows whether this worker is the active one. A worker that is not drops the
// gauges only the active one keeps current, so that a standby never shows stale numbers.
func (w *Worker) leaseMetrics() {
	held := w.health.held()
	w.metrics.lease(held)
	if !held {
		w.metrics.forget()
		w.balancesAt = time.Time{}
	}
}

// observe refreshes the gauges the active worker keeps: the open top-ups and payouts, and
// (every balanceEvery) the hot wallet's balances.
func (w *Worker) observe(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, `
		SELECT 'topup', status, count(*) FROM settlement_topups
		WHERE chain_id = $1 AND status IN ('signed', 'submitted') GROUP BY status
		UNION ALL
		SELECT 'payout', status, count(*) FROM settlement_payouts
		WHERE chain_id = $1 AND status IN ('queued', 'sending', 'confirming', 'failing') GROUP BY status
		UNION ALL
		SELECT 'unassigned', '', count(*) FROM settlement_unassigned
		WHERE chain_id = $1 AND status IN ('unassigned', 'assigning')`, w.chain.ID)
	if err != nil {
		return fmt.Errorf("count open work: %w", err)
	}
	counts := map[string]map[string]int64{"topup": {}, "payout": {}, "unassigned": {}}
	var kind, status string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&kind, &status, &n}, func() error {
		counts[kind][status] = n
		return nil
	}); err != nil {
		return fmt.Errorf("count open work: %w", err)
	}
	w.metrics.open(w.metrics.m.openTopUps, openTopUpStatuses, counts["topup"])
	w.metrics.open(w.metrics.m.openPayouts, openPayoutStatuses, counts["payout"])
	w.metrics.unassignedOpen(counts["unassigned"][""])

	now := w.clock.Now()
	if !w.balancesAt.IsZero() && now.Sub(w.balancesAt) < balanceEvery {
		return nil
	}
	hot := w.signer.Address()
	native, err := w.client.BalanceAt(ctx, hot, nil)
	if err != nil {
		return fmt.Errorf("hot wallet balance: %w", err)
	}
	usdcMicro, err := token{client: w.client, chain: w.chain}.balanceOf(ctx, hot)
	if err != nil {
		return fmt.Errorf("hot wallet USDC: %w", err)
	}
	w.metrics.balances(usdcMicro, native)
	w.balancesAt = now
	return nil
}

// Run checks the chain and ticks every poll interval until ctx ends, then releases the lease.
// Errors of a tick are logged, not returned: the next tick retries.
func (w *Worker) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := w.Check(ctx)
		if err == nil {
			break
		}
		if isConfigMismatch(err) || ctx.Err() != nil {
			return err
		}
		w.logger.WarnContext(ctx, "chain not reachable yet", "err", err)
		if wait.Sleep(ctx, min(time.Duration(attempt+1)*w.cfg.PollInterval, time.Minute)) != nil {
			return ctx.Err()
		}
	}
	w.logger.InfoContext(ctx, "settlement worker running", "token", w.chain.Token.Hex(), "treasury", w.treasury.Hex(),
		"holder", w.cfg.Holder, "finality", w.finalityRule())
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.lease.release(rctx); err != nil {
			w.logger.Warn("release lease", "err", err)
		}
	}()
	wasHeld := false
	for {
		err := w.Tick(ctx)
		if ctx.Err() != nil {
			return nil
		}
		held := w.health.held()
		switch {
		case held && !wasHeld:
			w.logger.InfoContext(ctx, "lease taken: this worker is active")
		case !held && wasHeld:
			w.logger.WarnContext(ctx, "lease lost: standing by", "err", err)
		}
		wasHeld = held
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			w.logger.WarnContext(ctx, "settlement tick failed; retrying next tick", "err", err)
		}
		if wait.Sleep(ctx, w.cfg.PollInterval) != nil {
			return nil
		}
	}
}

func (w *Worker) finalityRule() string {
	if w.chain.Confirmations == 0 {
		return "finalized tag"
	}
	return fmt.Sprintf("%d confirmations", w.chain.Confirmations)
}

// isConfigMismatch reports whether a Check error is about the configuration, not the network.
func isConfigMismatch(err error) bool {
	var m *mismatchError
	return errors.As(err, &m)
}
