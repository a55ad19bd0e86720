package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// earningsJSON is a paywall's earnings, in USDC, and where withdrawals go.
type earningsJSON struct {
	EarningsJSON
	PayoutAddress string `json:"payout_address"`
}

// EarningsJSON is a paywall's earnings as the API shows them, and `tollgate ledger earnings
// -json` too: every amount as a USDC decimal string and in micro-USDC.
type EarningsJSON struct {
	Paywall        string `json:"paywall"`
	Currency       string `json:"currency"`
	Available      string `json:"available"`
	AvailableMicro int64  `json:"available_micro"`
	InFlight       string `json:"in_flight"`
	InFlightMicro  int64  `json:"in_flight_micro"`
	PaidOut        string `json:"paid_out"`
	PaidOutMicro   int64  `json:"paid_out_micro"`
}

// NewEarningsJSON is paywallID's earnings e as the API shows them.
func NewEarningsJSON(paywallID string, e ledger.EarningsBalance) EarningsJSON {
	return EarningsJSON{
		Paywall: paywallID, Currency: currency,
		Available: pricing.FormatUSDC(e.AvailableMicro), AvailableMicro: e.AvailableMicro,
		InFlight: pricing.FormatUSDC(e.InFlightMicro), InFlightMicro: e.InFlightMicro,
		PaidOut: pricing.FormatUSDC(e.PaidOutMicro), PaidOutMicro: e.PaidOutMicro,
	}
}

func (s *Server) getEarnings(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
	e, err := s.deps.Ledger.Earnings(r.Context(), pw.ID)
	if err != nil && !errors.Is(err, ledger.ErrUnknownAccount) {
		s.unavailable(w, r, "read the earnings", err)
		return
	}
	writeJSON(w, http.StatusOK, earningsJSON{EarningsJSON: NewEarningsJSON(pw.ID, e), PayoutAddress: pw.PayoutAddress})
}

// earningsHistoryJSON is one page of a paywall's earnings movements, newest first.
type earningsHistoryJSON struct {
	Paywall string            `json:"paywall"`
	Items   []HistoryItemJSON `json:"items"`
	Next    string            `json:"next"`
}

// getEarningsHistory lists what moved the paywall's earnings, newest first, a page at a time:
// its share of every request and charge, every refund, every withdrawal and a failed one's
// return — with the user, model or description each carries — for the developer's books.
func (s *Server) getEarningsHistory(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
	items, next, err := s.accountHistory(r, ledger.Earnings(pw.ID), func(ledger.HistoryItem) bool { return true })
	if s.historyFailed(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, earningsHistoryJSON{Paywall: pw.ID, Items: items, Next: next})
}

// payoutJSON is a withdrawal.
type payoutJSON struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"` // requested, settled, failed
	Amount      string    `json:"amount"`
	AmountMicro int64     `json:"amount_micro"`
	Currency    string    `json:"currency"`
	ChainID     string    `json:"chain_id"`
	To          string    `json:"to"`
	TxHash      string    `json:"tx_hash,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func toPayoutJSON(p ledger.Payout) payoutJSON {
	return payoutJSON{
		ID: p.ID, Status: string(p.Status), Amount: pricing.FormatUSDC(p.AmountMicro), AmountMicro: p.AmountMicro,
		Currency: currency, ChainID: p.ChainID, To: p.To, TxHash: p.TxHash, Reason: p.Reason,
		CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(),
	}
}

// payoutRequest is the body of POST /api/v1/payouts.
type payoutRequest struct {
	Amount string `json:"amount"`
	// ChainID is the chain to be paid on, one of Options.PayoutChains ("" = the first),
	// decimal or 0x-hex.
	ChainID string `json:"chain_id,omitempty"`
}

// payoutChain resolves a withdrawal's chain: "" is the first configured one; any other must
// be configured. On a problem it has answered 400.
func (s *Server) payoutChain(w http.ResponseWriter, raw string) (string, bool) {
	if raw == "" {
		return s.opts.PayoutChains[0], true
	}
	if id, err := parseChainID(raw); err == nil {
		want := strconv.FormatUint(id, 10)
		if slices.Contains(s.opts.PayoutChains, want) {
			return want, true
		}
	}
	badRequest(w, "unsupported_chain", "chain_id",
		fmt.Sprintf("Withdrawals are paid on these chains (chain_id): %s; %q is not one of them. Leave chain_id out for %s.",
			strings.Join(s.opts.PayoutChains, ", "), raw, s.opts.PayoutChains[0]))
	return "", false
}

// postPayout asks for a withdrawal of earnings to the paywall's payout address, once per
// Idempotency-Key, within the per-payout bounds and the paywall's 24-hour cap (checked and
// used atomically per paywall, see lockPayouts). The settlement
// worker pays it on chain; GET /api/v1/payouts/{id} follows it.
func (s *Server) postPayout(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	var req payoutRequest
	if !decodeBody(w, r, &req) {
		return
	}
	amount, ok := parseAmount(w, req.Amount, s.opts.MaxPayoutMicro)
	if !ok {
		return
	}
	if amount < s.opts.MinPayoutMicro {
		badRequest(w, "amount_too_small", "amount",
			fmt.Sprintf("A withdrawal must be at least %s USDC.", pricing.FormatUSDC(s.opts.MinPayoutMicro)))
		return
	}
	chainID, ok := s.payoutChain(w, req.ChainID)
	if !ok {
		return
	}
	if pw.PayoutAddress == "" {
		conflict(w, "no_payout_address", "This paywall has no payout address; set one with `tollgate paywall create -payout-address` before withdrawing.")
		return
	}
	normalized := struct {
		AmountMicro int64
		To          string
		ChainID     string
	}{amount, pw.PayoutAddress, chainID}
	// The lock covers the Idempotency-Key lookup and the stored answer too: a retry racing
	// its first try waits, then gets the first answer rather than a cap the first one used.
	unlock, err := s.lockPayouts(r.Context(), pw.ID)
	if err != nil {
		s.unavailable(w, r, "start the withdrawal", err)
		return
	}
	defer unlock()
	s.idempotent(w, r, pw, "payout", key, normalized, func(w http.ResponseWriter) {
		s.payout(w, r, pw, key, amount, chainID)
	})
}

// payoutWindow is the period of the per-paywall withdrawal cap, measured by the database's
// clock (ledger.PayoutsSince), the clock that dates the payouts.
const payoutWindow = 24 * time.Hour

// lockPayouts serializes one paywall's withdrawals: it writes the paywall's row of
// api_payout_guards in a transaction and returns the function that ends it. Until then
// another withdrawal of the paywall, on any replica, waits at the same write, so the 24-hour
// check and the ledger write run for one withdrawal at a time (postPayout holds it around the
// whole idempotent request). A write, not SELECT … FOR UPDATE: its lock is held to the end of
// the transaction on PostgreSQL and CockroachDB alike, at any isolation (CockroachDB's
// SERIALIZABLE read locks are best-effort). Other paywalls' rows are not locked.
//
// The transaction keeps a pooled connection while the ledger calls inside it need others, so
// a replica lets only a quarter of its pool (at least one) hold or wait for payout locks at
// once (payoutGate): waiters can never take every connection from the holder.
func (s *Server) lockPayouts(ctx context.Context, paywallID string) (unlock func(), err error) {
	select {
	case s.payoutGate <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("api: wait for the payout lock: %w", ctx.Err())
	}
	tx, err := s.deps.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		<-s.payoutGate
		return nil, fmt.Errorf("api: begin the payout lock: %w", err)
	}
	// One upsert creates the row on a paywall's first withdrawal and writes it on every other.
	if _, err = tx.Exec(ctx, `INSERT INTO api_payout_guards (paywall_id) VALUES ($1)
		ON CONFLICT (paywall_id) DO UPDATE SET checked_at = now()`, paywallID); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		<-s.payoutGate
		return nil, fmt.Errorf("api: take the payout lock: %w", err)
	}
	return func() {
		// Nothing is kept in this transaction; ending it releases the lock. If COMMIT fails,
		// the server ends the transaction (and the lock) with the connection.
		if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
			s.opts.Logger.WarnContext(ctx, "api: releasing the payout lock", "paywall", paywallID, "err", err)
		}
		<-s.payoutGate
	}, nil
}

func (s *Server) payout(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, key string, amount int64, chainID string) {
	recent, err := s.deps.Ledger.PayoutsSince(r.Context(), pw.ID, payoutWindow)
	if err != nil {
		s.unavailable(w, r, "read the payouts", err)
		return
	}
	// No overflow: the amount is at most MaxPayoutMicro and the window's total is what this
	// check let through, both bounded by config far inside int64.
	if recent.TotalMicro+amount > s.opts.DailyPayoutMicro {
		writeError(w, http.StatusTooManyRequests, "invalid_request_error", "payout_limit", "amount",
			fmt.Sprintf("Withdrawals are capped at %s USDC per 24 hours; %s USDC were requested in the last 24 hours.",
				pricing.FormatUSDC(s.opts.DailyPayoutMicro), pricing.FormatUSDC(recent.TotalMicro)))
		return
	}
	p, err := s.deps.Ledger.RequestPayout(r.Context(), ledger.PayoutRequest{
		Key: "api:payout:" + pw.ID + ":" + key, Paywall: pw.ID, ChainID: chainID,
		To: pw.PayoutAddress, AmountMicro: amount,
	})
	switch {
	case errors.Is(err, ledger.ErrInsufficientFunds), errors.Is(err, ledger.ErrUnknownAccount):
		s.insufficientEarnings(w, r, pw.ID, "a withdrawal of "+pricing.FormatUSDC(amount)+" USDC", "")
	case err != nil:
		s.ledgerFailure(w, r, "withdrawal", err)
	default:
		s.opts.Logger.InfoContext(r.Context(), "payout requested", "paywall", pw.ID, "payout", p.ID, "amount_micro", amount)
		writeJSON(w, http.StatusCreated, toPayoutJSON(p))
	}
}

// insufficientEarnings answers 409 insufficient_earnings: the paywall's available earnings
// cannot cover what (a phrase: "a withdrawal of 5.00 USDC"); then follows the sentence.
func (s *Server) insufficientEarnings(w http.ResponseWriter, r *http.Request, paywallID, what, then string) {
	msg := "Your available earnings cannot cover " + what + "." + then
	// A paywall that never earned has no account: its earnings are zero. A failed read leaves
	// the figure out rather than showing 0.
	if e, err := s.deps.Ledger.Earnings(r.Context(), paywallID); err == nil || errors.Is(err, ledger.ErrUnknownAccount) {
		msg = fmt.Sprintf("Your available earnings (%s USDC) cannot cover %s.%s", pricing.FormatUSDC(e.AvailableMicro), what, then)
	}
	conflict(w, "insufficient_earnings", msg)
}

type payoutsJSON struct {
	Payouts []payoutJSON `json:"payouts"`
}

func (s *Server) listPayouts(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
	ps, err := s.deps.Ledger.Payouts(r.Context(), pw.ID, "", 100)
	if err != nil {
		s.unavailable(w, r, "read the payouts", err)
		return
	}
	out := payoutsJSON{Payouts: []payoutJSON{}}
	for _, p := range ps {
		out.Payouts = append(out.Payouts, toPayoutJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getPayout(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
	p, err := s.deps.Ledger.GetPayout(r.Context(), r.PathValue("id"))
	// Another paywall's payout is as unknown as a missing one.
	if errors.Is(err, ledger.ErrPayoutNotFound) || (err == nil && p.Paywall != pw.ID) {
		notFoundError(w, "No payout of this paywall has that id.")
		return
	}
	if err != nil {
		s.unavailable(w, r, "read the payout", err)
		return
	}
	writeJSON(w, http.StatusOK, toPayoutJSON(p))
}
