package ledger

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tune a Ledger. The zero value is usable.
type Options struct {
	// Shards is the number of balance rows a shared account gets when it is created
	// (default 32). More shards than concurrent captures of one paywall means a capture never
	// waits on another one's row.
	Shards int
	// MaxRetries bounds the retries of one transaction on serialization failures, deadlocks,
	// timeouts and lost connections (default 10).
	MaxRetries int
	Logger     *slog.Logger
	// ShardPick is how a credit to a shared account chooses its row (default PickSkipLocked).
	ShardPick ShardPick
	// ResolveTimeout bounds the lookup that settles an ambiguous commit (default 10s). The
	// lookup runs even when the caller's context is already cancelled.
	ResolveTimeout time.Duration
	// Batch is how many concurrent calls of one kind — holds, or captures — may share one
	// transaction: one statement writes them and one COMMIT makes them durable (default 64;
	// 1 turns batching off). Each call keeps its own key, hash, result and errors; see
	// docs/ledger.md, "Batching".
	Batch int
	// BatchesInFlight bounds how many batches of one kind write at once (default 1); a batch
	// of captures also waits while holds write. A batch that has written no longer counts while
	// it waits for its COMMIT, so the next one can fill.
	BatchesInFlight int
	// Faults, when set, is called at the given points of every transaction, and an error it
	// returns is injected there (see FaultPoint). It exists for tests of the retry and
	// ambiguous-commit paths; leave it nil in production.
	Faults func(ctx context.Context, op string, p FaultPoint) error
}

// ShardPick is how a credit to a shared account (earnings, fees, provider costs, treasury)
// chooses which of the account's balance rows to change.
type ShardPick int

const (
	// PickSkipLocked takes the first shard, from a start spread by the transfer's id, that no
	// other transaction holds (SELECT … FOR UPDATE SKIP LOCKED); only when every shard is held
	// does it wait.
	PickSkipLocked ShardPick = iota
	// PickHashed takes the shard the start points at and waits for it if it is held. It is
	// here to measure what SKIP LOCKED buys (BenchmarkSharedPaywall).
	PickHashed
)

// Ledger is the book of record. It is safe for concurrent use.
type Ledger struct {
	pool  *pgxpool.Pool
	opts  Options
	known sync.Map // Account → struct{}: accounts that exist (they are never deleted)
	// holds and captures batch concurrent calls (nil when Options.Batch is 1).
	holds       *batcher[holdCall, Hold]
	captures    *batcher[captureCall, CaptureResult]
	holdWallets holdWallets
}

// New returns a Ledger on a migrated database.
func New(pool *pgxpool.Pool, opts Options) *Ledger {
	if opts.Shards <= 0 {
		opts.Shards = 32
	}
	if opts.ResolveTimeout <= 0 {
		opts.ResolveTimeout = 10 * time.Second
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Batch <= 0 {
		opts.Batch = 64
	}
	if opts.BatchesInFlight <= 0 {
		opts.BatchesInFlight = 1
	}
	l := &Ledger{pool: pool, opts: opts}
	if opts.Batch > 1 {
		g := newBatchGroup()
		l.holds = newBatcher(g, opts.Batch, opts.BatchesInFlight, false, l.execHolds)
		l.captures = newBatcher(g, opts.Batch, opts.BatchesInFlight, true, l.execCaptures)
	}
	return l
}

// EnsureAccount creates an account (with its balance rows) if it does not exist. Creating it
// twice is harmless. Deposits, holds and captures create the accounts they need; a wallet
// exists once it has received a deposit.
// It can return: ErrInvalid, ErrUnavailable.
func (l *Ledger) EnsureAccount(ctx context.Context, a Account) error { return public(l.ensure(ctx, a)) }

// Deposit credits a wallet from the chain's treasury, creating the wallet if needed.
// r.Key is the deposit's on-chain identity, so an event is credited once however often it is
// reported. The request hash covers chain, wallet and amount (not metadata).
// It can return: ErrInvalid, ErrIdempotencyConflict, ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Deposit(ctx context.Context, r DepositRequest) (Transfer, error) {
	tr, err := l.deposit(ctx, r)
	return tr, public(err)
}

// Hold reserves money on a wallet with one conditional write
// (UPDATE … WHERE posted − held >= amount). The hold expires r.TTL after it is made, by the
// database's clock. Hold keys are their own namespace: a hold and its capture may share a key.
// The request hash covers wallet, paywall and amount.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Hold(ctx context.Context, r HoldRequest) (Hold, error) {
	h, err := l.hold(ctx, r)
	return h, public(err)
}

// Capture posts a hold's actual charge, split as r.Split says, and releases the rest. A charge
// above the hold takes the excess from the wallet's available balance as far as it goes; what
// it cannot take is the shortfall, taken out of the developer's share, then the fee, then the
// provider's. The request hash covers the hold id and the split (not Estimated or metadata).
// It can return: ErrInvalid, ErrHoldNotFound, ErrHoldFinished, ErrHoldExpired,
// ErrIdempotencyConflict, ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Capture(ctx context.Context, r CaptureRequest) (CaptureResult, error) {
	res, err := l.capture(ctx, r)
	return res, public(err)
}

// Void releases a whole hold (also one past its expiry that the sweeper has not reached yet).
// Voiding a voided hold returns it again.
// It can return: ErrHoldNotFound, ErrHoldFinished (it was captured), ErrHoldExpired (the
// sweeper released it already: nothing left to do), ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Void(ctx context.Context, holdID string) (Hold, error) {
	h, err := l.void(ctx, holdID)
	return h, public(err)
}

// Charge debits a wallet directly (a manual one-off charge) into fee and earnings.
// The request hash covers wallet, paywall and split.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Charge(ctx context.Context, r ChargeRequest) (Transfer, error) {
	tr, err := l.charge(ctx, r)
	return tr, public(err)
}

// RequestPayout moves earnings to in-flight. The request hash covers paywall, chain, address
// and amount.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrUnavailable, ErrAmbiguous.
func (l *Ledger) RequestPayout(ctx context.Context, r PayoutRequest) (Payout, error) {
	p, err := l.requestPayout(ctx, r)
	return p, public(err)
}

// SettlePayout marks a payout paid on-chain: in flight → treasury. Settling it again with the
// same tx hash returns it again; with another tx hash it is ErrPayoutFinished.
// It can return: ErrInvalid (empty tx hash), ErrPayoutNotFound, ErrPayoutFinished,
// ErrUnavailable, ErrAmbiguous.
func (l *Ledger) SettlePayout(ctx context.Context, payoutID, txHash string) (Payout, error) {
	p, err := l.finishPayout(ctx, payoutID, PayoutSettled, txHash)
	return p, public(err)
}

// FailPayout gives a payout's money back to earnings. Failing it again returns it again.
// It can return: ErrPayoutNotFound, ErrPayoutFinished, ErrUnavailable, ErrAmbiguous.
func (l *Ledger) FailPayout(ctx context.Context, payoutID, reason string) (Payout, error) {
	p, err := l.finishPayout(ctx, payoutID, PayoutFailed, reason)
	return p, public(err)
}

// Reverse records the opposite of an earlier deposit, capture or charge; the original stays.
// Money that has moved on since (a deposit already spent, earnings already paid out) makes it
// ErrInsufficientFunds. The request hash covers the transfer id (not the reason).
// It can return: ErrInvalid, ErrTransferNotFound, ErrAlreadyReversed, ErrNotReversible,
// ErrInsufficientFunds, ErrIdempotencyConflict, ErrUnavailable, ErrAmbiguous.
func (l *Ledger) Reverse(ctx context.Context, r ReverseRequest) (Transfer, error) {
	tr, err := l.reverse(ctx, r)
	return tr, public(err)
}

// Balance reads a wallet's posted, held and available money.
// It can return: ErrUnknownAccount.
func (l *Ledger) Balance(ctx context.Context, wallet string) (WalletBalance, error) {
	return l.balance(ctx, wallet)
}

// Earnings reads a paywall's earnings.
// It can return: ErrUnknownAccount.
func (l *Ledger) Earnings(ctx context.Context, paywallID string) (EarningsBalance, error) {
	return l.earnings(ctx, paywallID)
}

// History reads a page of an account's entries, newest first, one item per transfer (limit
// defaults to 50, at most 500). cursor is "" or a previous Next.
// It can return: ErrUnknownAccount, ErrInvalid (bad account or cursor).
func (l *Ledger) History(ctx context.Context, a Account, cursor string, limit int) (HistoryPage, error) {
	return l.history(ctx, a, cursor, limit)
}

// GetHold reads a hold. An open hold whose expiry has passed (by the database's clock) is
// reported as HoldExpired. It can return: ErrHoldNotFound.
func (l *Ledger) GetHold(ctx context.Context, holdID string) (Hold, error) {
	return l.getHold(ctx, holdID)
}

// GetTransfer reads a committed transfer with its entries (one per account, shards merged)
// and metadata. A non-UUID id is ErrTransferNotFound, as an unknown one.
// It can return: ErrTransferNotFound.
func (l *Ledger) GetTransfer(ctx context.Context, transferID string) (Transfer, error) {
	return l.getTransfer(ctx, "id", transferID)
}

// Reversal reads the transfer that reversed transferID (there is at most one). A transfer that
// was not reversed, or does not exist, is ErrTransferNotFound.
// It can return: ErrTransferNotFound.
func (l *Ledger) Reversal(ctx context.Context, transferID string) (Transfer, error) {
	return l.getTransfer(ctx, "reverses", transferID)
}

// GetPayout reads a payout. It can return: ErrPayoutNotFound.
func (l *Ledger) GetPayout(ctx context.Context, payoutID string) (Payout, error) {
	return l.getPayout(ctx, payoutID)
}

// Payouts lists a paywall's payouts, newest first, optionally only those in one status. limit
// defaults to 100, at most MaxPayoutsPage. (The settlement worker reads a chain's with RequestedPayouts.)
// It can return: ErrInvalid (empty paywall id, unknown status).
func (l *Ledger) Payouts(ctx context.Context, paywallID string, status PayoutStatus, limit int) ([]Payout, error) {
	return l.payouts(ctx, paywallID, status, limit)
}

// PayoutsSince sums what a paywall asked to withdraw within window before now: the payouts
// not failed (requested or settled) created after now() − window, by the database's clock,
// with their count. It reads every such payout, however many (no page bound), in one statement
// on the index of (paywall, created_at). A paywall without payouts gets the zero PayoutWindow.
// It can return: ErrInvalid (empty paywall id, window shorter than a microsecond).
func (l *Ledger) PayoutsSince(ctx context.Context, paywallID string, window time.Duration) (PayoutWindow, error) {
	return l.payoutsSince(ctx, paywallID, window)
}

// RequestedPayouts lists one chain's payouts still in flight (requested, neither settled nor
// failed), oldest first, up to limit (default 100, at most MaxPayoutsPage) after the payout after: pass the
// last payout of the previous page, or the zero Payout for the first page. The settlement worker
// pages through them all, so that no chain's payouts wait behind another's.
func (l *Ledger) RequestedPayouts(ctx context.Context, chainID string, after Payout, limit int) ([]Payout, error) {
	return l.requestedPayouts(ctx, chainID, after, limit)
}

// SweepExpiredHolds releases up to limit (default 1000) holds whose expiry passed by the
// database's clock, and reports how many it released. Safe to run in every replica at once:
// each takes holds no other has locked (SKIP LOCKED) and locks wallets in one order.
func (l *Ledger) SweepExpiredHolds(ctx context.Context, limit int) (int, error) {
	n, err := l.sweep(ctx, limit)
	return n, public(err)
}

func normalizeAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }
