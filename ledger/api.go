package ledger

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// errNotBuilt marks operations whose implementation has not landed yet.
var errNotBuilt = errors.New("ledger: not built yet")

// Options tune a Ledger. The zero value is usable.
type Options struct {
	// Shards is the number of balance rows per shared account (default 16).
	Shards int
	// MaxRetries bounds the retries of one transaction on serialization failures (default 10).
	MaxRetries int
	Logger     *slog.Logger
}

// Ledger is the book of record. It is safe for concurrent use.
type Ledger struct {
	pool *pgxpool.Pool
	opts Options
}

// New returns a Ledger on a migrated database.
func New(pool *pgxpool.Pool, opts Options) *Ledger {
	if opts.Shards <= 0 {
		opts.Shards = 16
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Ledger{pool: pool, opts: opts}
}

// EnsureAccount creates an account if it does not exist. Creating it twice is harmless.
func (l *Ledger) EnsureAccount(ctx context.Context, a Account) error { return errNotBuilt }

// Deposit credits a wallet from the chain's treasury, creating the wallet if needed.
// It can return: ErrInvalid, ErrIdempotencyConflict, ErrAmbiguous.
func (l *Ledger) Deposit(ctx context.Context, r DepositRequest) (Transfer, error) {
	return Transfer{}, errNotBuilt
}

// Hold reserves money on a wallet with one conditional write.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrAmbiguous.
func (l *Ledger) Hold(ctx context.Context, r HoldRequest) (Hold, error) { return Hold{}, errNotBuilt }

// Capture posts a hold's actual charge, split as r.Split says, and releases the rest.
// It can return: ErrInvalid, ErrHoldNotFound, ErrHoldFinished, ErrHoldExpired,
// ErrIdempotencyConflict, ErrAmbiguous.
func (l *Ledger) Capture(ctx context.Context, r CaptureRequest) (CaptureResult, error) {
	return CaptureResult{}, errNotBuilt
}

// Void releases a whole hold. Voiding a voided hold returns it again.
// It can return: ErrHoldNotFound, ErrHoldFinished (it was captured), ErrAmbiguous.
func (l *Ledger) Void(ctx context.Context, holdID string) (Hold, error) { return Hold{}, errNotBuilt }

// Charge debits a wallet directly (a manual one-off charge) into fee and earnings.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrAmbiguous.
func (l *Ledger) Charge(ctx context.Context, r ChargeRequest) (Transfer, error) {
	return Transfer{}, errNotBuilt
}

// RequestPayout moves earnings to in-flight.
// It can return: ErrInvalid, ErrUnknownAccount, ErrInsufficientFunds, ErrIdempotencyConflict,
// ErrAmbiguous.
func (l *Ledger) RequestPayout(ctx context.Context, r PayoutRequest) (Payout, error) {
	return Payout{}, errNotBuilt
}

// SettlePayout marks a payout paid on-chain: in flight → treasury. Settling it again with the
// same tx hash returns it again.
// It can return: ErrPayoutNotFound, ErrPayoutFinished, ErrAmbiguous.
func (l *Ledger) SettlePayout(ctx context.Context, payoutID, txHash string) (Payout, error) {
	return Payout{}, errNotBuilt
}

// FailPayout gives a payout's money back to earnings. Failing it again returns it again.
// It can return: ErrPayoutNotFound, ErrPayoutFinished, ErrAmbiguous.
func (l *Ledger) FailPayout(ctx context.Context, payoutID, reason string) (Payout, error) {
	return Payout{}, errNotBuilt
}

// Reverse records the opposite of an earlier transfer; the original stays.
// It can return: ErrInvalid, ErrTransferNotFound, ErrAlreadyReversed, ErrNotReversible,
// ErrInsufficientFunds, ErrIdempotencyConflict, ErrAmbiguous.
func (l *Ledger) Reverse(ctx context.Context, r ReverseRequest) (Transfer, error) {
	return Transfer{}, errNotBuilt
}

// Balance reads a wallet's posted, held and available money.
// It can return: ErrUnknownAccount.
func (l *Ledger) Balance(ctx context.Context, wallet string) (WalletBalance, error) {
	return WalletBalance{}, errNotBuilt
}

// Earnings reads a paywall's earnings.
// It can return: ErrUnknownAccount.
func (l *Ledger) Earnings(ctx context.Context, paywallID string) (EarningsBalance, error) {
	return EarningsBalance{}, errNotBuilt
}

// History reads a page of an account's entries, newest first. cursor is "" or a previous Next.
// It can return: ErrUnknownAccount, ErrInvalid (bad cursor).
func (l *Ledger) History(ctx context.Context, a Account, cursor string, limit int) (HistoryPage, error) {
	return HistoryPage{}, errNotBuilt
}

// GetHold reads a hold. It can return: ErrHoldNotFound.
func (l *Ledger) GetHold(ctx context.Context, holdID string) (Hold, error) {
	return Hold{}, errNotBuilt
}

// GetPayout reads a payout. It can return: ErrPayoutNotFound.
func (l *Ledger) GetPayout(ctx context.Context, payoutID string) (Payout, error) {
	return Payout{}, errNotBuilt
}

// Payouts lists a paywall's payouts, newest first ("" lists every paywall's, oldest first, for
// the settlement worker), optionally only those in one status.
func (l *Ledger) Payouts(ctx context.Context, paywallID string, status PayoutStatus, limit int) ([]Payout, error) {
	return nil, errNotBuilt
}

// SweepExpiredHolds releases up to limit holds whose expiry passed by the database's clock, and
// reports how many it released. Safe to run in every replica at once.
func (l *Ledger) SweepExpiredHolds(ctx context.Context, limit int) (int, error) {
	return 0, errNotBuilt
}

func normalizeAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }
