// Package ledger is Tollgate's book of record: a double-entry, immutable, idempotent ledger of
// micro-USDC on CockroachDB, with the same portable SQL tested on PostgreSQL.
//
// Money is int64 micro-USDC (USDC has 6 decimals). Every write is one short transaction that
// carries a caller-chosen idempotency key and a hash of its request: replaying the same key with
// the same request returns the first result; the same key with a different request is
// ErrIdempotencyConflict. Nothing is updated away: corrections are new, opposite transfers.
//
// The package owns these tables (migrations/): ledger_accounts, ledger_balances (one row per
// user wallet, several shard rows per shared account so that captures of different users never
// queue on one row), ledger_transfers, ledger_entries, ledger_holds and ledger_payouts.
//
// A request whose first attempt failed with a business error (insufficient funds, an expired
// hold …) left nothing behind: its transaction rolled back. Replaying its key is a new attempt
// and may succeed if the world changed (after a top-up, say). Only a key that was applied is
// bound to its request.
package ledger

import (
	"errors"
	"time"
)

// Domain errors. Methods document which of them they can return; callers decide with errors.Is.
var (
	// ErrInsufficientFunds: the wallet's (or earnings') available balance cannot cover the amount.
	ErrInsufficientFunds = errors.New("ledger: insufficient funds")
	// ErrIdempotencyConflict: the idempotency key was used before with a different request.
	ErrIdempotencyConflict = errors.New("ledger: idempotency key reused with a different request")
	// ErrUnknownAccount: the account was never created.
	ErrUnknownAccount = errors.New("ledger: unknown account")
	// ErrHoldNotFound: no hold has that id.
	ErrHoldNotFound = errors.New("ledger: hold not found")
	// ErrHoldFinished: the hold was already captured or voided (by another request).
	ErrHoldFinished = errors.New("ledger: hold already finished")
	// ErrHoldExpired: the hold's expiry passed; its money was (or will be) released by the sweeper.
	ErrHoldExpired = errors.New("ledger: hold expired")
	// ErrPayoutNotFound: no payout has that id.
	ErrPayoutNotFound = errors.New("ledger: payout not found")
	// ErrPayoutFinished: the payout was already settled or failed.
	ErrPayoutFinished = errors.New("ledger: payout already finished")
	// ErrTransferNotFound: no transfer has that id.
	ErrTransferNotFound = errors.New("ledger: transfer not found")
	// ErrAlreadyReversed: the transfer was reversed before.
	ErrAlreadyReversed = errors.New("ledger: transfer already reversed")
	// ErrNotReversible: holds and reversals themselves cannot be reversed.
	ErrNotReversible = errors.New("ledger: transfer kind cannot be reversed")
	// ErrInvalid wraps every malformed request (negative amount, empty key, bad split …).
	ErrInvalid = errors.New("ledger: invalid request")
	// ErrAmbiguous: a commit's outcome could not be learned even through the idempotency key
	// (the database stayed unreachable). The caller must retry with the same key.
	ErrAmbiguous = errors.New("ledger: outcome unknown; retry with the same idempotency key")
	// ErrUnavailable: the transaction kept failing for transient reasons (serialization
	// failures, lost connections, timeouts) until the retries ran out. Nothing was applied;
	// retrying later with the same key is safe.
	ErrUnavailable = errors.New("ledger: database unavailable or too contended; nothing was applied")
)

// AccountKind names what an account is for.
type AccountKind string

// Account kinds. Ref says which one of a kind.
const (
	// KindWallet is an end user's wallet; Ref is the lower-case 0x address. Constrained: never
	// negative, and available = posted − held ≥ 0. One row.
	KindWallet AccountKind = "wallet"
	// KindEarnings is a developer's earnings from one paywall; Ref is the paywall id.
	// Constrained; sharded.
	KindEarnings AccountKind = "earnings"
	// KindPlatformFees collects the platform's fee; Ref is "". Constrained; sharded.
	KindPlatformFees AccountKind = "platform_fees"
	// KindProviderCosts is what the built-in provider is owed; Ref is the provider name
	// (e.g. "openrouter"). Constrained; sharded.
	KindProviderCosts AccountKind = "provider_costs"
	// KindTreasury is the outside world on one chain; Ref is the chain id ("137"). May go negative:
	// deposits debit it, settled payouts credit it. Sharded.
	KindTreasury AccountKind = "treasury"
	// KindPayoutsInFlight holds earnings on their way on-chain; Ref is the chain id. Constrained.
	KindPayoutsInFlight AccountKind = "payouts_in_flight"
)

// Account names one account.
type Account struct {
	Kind AccountKind
	Ref  string
}

// Wallet returns the account of a user wallet address (any case; stored lower-case).
func Wallet(address string) Account { return Account{KindWallet, normalizeAddress(address)} }

// Earnings returns the earnings account of a paywall.
func Earnings(paywallID string) Account { return Account{KindEarnings, paywallID} }

// PlatformFees returns the platform fee account.
func PlatformFees() Account { return Account{KindPlatformFees, ""} }

// ProviderCosts returns the account of what a built-in provider is owed.
func ProviderCosts(provider string) Account { return Account{KindProviderCosts, provider} }

// Treasury returns the treasury account of a chain.
func Treasury(chainID string) Account { return Account{KindTreasury, chainID} }

// PayoutsInFlight returns the in-flight payouts account of a chain.
func PayoutsInFlight(chainID string) Account { return Account{KindPayoutsInFlight, chainID} }

// TransferKind names a business event.
type TransferKind string

// Transfer kinds.
const (
	KindDeposit       TransferKind = "deposit"        // treasury → wallet
	KindCapture       TransferKind = "capture"        // wallet → provider costs + fee + earnings
	KindCharge        TransferKind = "charge"         // wallet → fee + earnings, no hold
	KindPayoutRequest TransferKind = "payout_request" // earnings → in flight
	KindPayoutSettle  TransferKind = "payout_settle"  // in flight → treasury
	KindPayoutFail    TransferKind = "payout_fail"    // in flight → earnings
	KindReversal      TransferKind = "reversal"       // the opposite of an earlier transfer
)

// Transfer is one committed business event; its entries sum to zero.
type Transfer struct {
	ID             string // UUID
	Kind           TransferKind
	IdempotencyKey string
	Entries        []Entry
	CreatedAt      time.Time
	Metadata       map[string]string
	// Reverses is, for a reversal, the id of the transfer it reverses; "" otherwise.
	Reverses string
}

// Entry is one leg of a transfer: a signed change to one account's posted balance
// (positive = the account's balance grows).
type Entry struct {
	Account     Account
	AmountMicro int64
}

// DepositRequest credits a wallet from a chain's treasury.
type DepositRequest struct {
	// Key is the deposit's on-chain identity, chosen by the settlement worker:
	// "chain:token:authorizer:nonce" for EIP-3009 top-ups, "chain:txhash:logpos" for plain
	// transfers. The same on-chain event is therefore credited once, whoever reports it.
	Key         string
	ChainID     string
	Wallet      string // 0x address
	AmountMicro int64
	Metadata    map[string]string // e.g. tx hash, block
}

// HoldRequest reserves money on a wallet.
type HoldRequest struct {
	Key         string
	Wallet      string
	AmountMicro int64
	// Paywall is the paywall the money is held for; its earnings receive the capture.
	Paywall string
	// TTL after which the sweeper releases the hold (measured by the database's clock).
	TTL      time.Duration
	Metadata map[string]string // e.g. request id, model
}

// HoldStatus is a hold's state.
type HoldStatus string

// Hold states.
const (
	HoldOpen     HoldStatus = "open"
	HoldCaptured HoldStatus = "captured"
	HoldVoided   HoldStatus = "voided"
	HoldExpired  HoldStatus = "expired"
)

// Hold is a reservation on a wallet.
type Hold struct {
	ID          string // UUID
	Wallet      string
	Paywall     string
	AmountMicro int64
	Status      HoldStatus
	ExpiresAt   time.Time
}

// Split is how a charge is shared. Every share is ≥ 0; the charge is their sum.
// pricing computes it; the ledger only checks it.
type Split struct {
	ProviderMicro  int64  // owed to the built-in provider (0 for BYOK)
	Provider       string // provider name; required when ProviderMicro > 0
	FeeMicro       int64  // platform fee
	DeveloperMicro int64  // the paywall's earnings
}

// TotalMicro is the whole charge.
func (s Split) TotalMicro() int64 { return s.ProviderMicro + s.FeeMicro + s.DeveloperMicro }

// CaptureRequest posts (part of) a hold.
type CaptureRequest struct {
	Key    string
	HoldID string
	// Split of the actual charge. Up to the hold is posted from the hold; an overrun beyond the
	// hold is debited only as far as the wallet's available balance allows, and what could not
	// be debited is recorded as the shortfall (taken from the developer's share first, then the
	// fee, then the provider's).
	Split Split
	// Estimated marks a charge computed from an estimate (the client went away before usage).
	Estimated bool
	Metadata  map[string]string // e.g. model, tokens, provider generation id
}

// CaptureResult says what a capture did.
type CaptureResult struct {
	Transfer       Transfer
	ChargedMicro   int64 // debited from the wallet
	ReleasedMicro  int64 // hold amount given back
	ShortfallMicro int64 // requested charge that could not be debited
}

// ChargeRequest is a manual one-off charge, with no hold.
type ChargeRequest struct {
	Key      string
	Wallet   string
	Paywall  string
	Split    Split // ProviderMicro must be 0
	Metadata map[string]string
}

// PayoutRequest moves a paywall's earnings to in-flight, to be paid on-chain.
type PayoutRequest struct {
	Key         string
	Paywall     string
	ChainID     string
	To          string // payout address
	AmountMicro int64
}

// PayoutStatus is a payout's state as the ledger sees it.
type PayoutStatus string

// Payout states.
const (
	PayoutRequested PayoutStatus = "requested" // money in flight
	PayoutSettled   PayoutStatus = "settled"   // paid on-chain, final
	PayoutFailed    PayoutStatus = "failed"    // money back in earnings
)

// Payout is a withdrawal of earnings.
type Payout struct {
	ID          string // UUID
	Paywall     string
	ChainID     string
	To          string
	AmountMicro int64
	Status      PayoutStatus
	TxHash      string // set when settled
	Reason      string // set when failed
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// ReverseRequest undoes a transfer with a new, opposite one.
type ReverseRequest struct {
	Key        string
	TransferID string
	Reason     string
	// Metadata is recorded on the reversal (Reason, when set, as "reason"), so that readers
	// who pick transfers by metadata (the API shows a paywall the movements whose "paywall" is
	// its id) see the reversal too. Like every transfer's metadata, it is not part of the
	// request hash.
	Metadata map[string]string
}

// WalletBalance is a wallet's money. AvailableMicro = PostedMicro − HeldMicro.
type WalletBalance struct {
	PostedMicro    int64
	HeldMicro      int64
	AvailableMicro int64
}

// EarningsBalance is a paywall's earnings.
type EarningsBalance struct {
	AvailableMicro int64 // can be withdrawn
	InFlightMicro  int64 // requested payouts not yet settled or failed
	PaidOutMicro   int64 // settled payouts
}

// HistoryItem is one entry of an account's history, newest first.
type HistoryItem struct {
	TransferID  string
	Kind        TransferKind
	AmountMicro int64 // signed change to the account
	CreatedAt   time.Time
	Metadata    map[string]string
}

// HistoryPage is one page of history; Next is "" on the last page.
type HistoryPage struct {
	Items []HistoryItem
	Next  string
}
