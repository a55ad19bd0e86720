package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

func (l *Ledger) requestPayout(ctx context.Context, r PayoutRequest) (Payout, error) {
	to := normalizeAddress(r.To)
	if err := errors.Join(validKey(r.Key), validRef("paywall", r.Paywall), validRef("chain id", r.ChainID),
		validAddress("payout address", to), validAmount("payout amount", r.AmountMicro)); err != nil {
		return Payout{}, err
	}
	if err := l.ensure(ctx, PayoutsInFlight(r.ChainID)); err != nil {
		return Payout{}, err
	}
	hash := requestHash("payout_request", r.Paywall, r.ChainID, to, itoa(r.AmountMicro))
	var payoutID string
	err := l.runTxDebiting(ctx, "request payout", func(ctx context.Context, t *txn, all bool) error {
		payoutID = ""
		if err := keyFree(ctx, t, r.Key); err != nil {
			return err
		}
		legs, err := debitLegs(ctx, t, []Entry{{Account: Earnings(r.Paywall), AmountMicro: r.AmountMicro}}, all)
		if errors.Is(err, ErrInsufficientFunds) {
			if ok, lerr := l.accountExists(ctx, Earnings(r.Paywall)); lerr == nil && !ok {
				return unknown(Earnings(r.Paywall))
			}
		}
		if err != nil {
			return err
		}
		legs = append(legs, leg{acct: PayoutsInFlight(r.ChainID), posted: r.AmountMicro})
		p := &posting{
			kind: KindPayoutRequest, key: r.Key, hash: hash, legs: legs,
			gate: `INSERT INTO ledger_payouts (paywall, chain_id, to_address, amount, status)
			VALUES ($1, $2, $3, $4, 'requested') RETURNING id`,
			gateArgs:  []any{r.Paywall, r.ChainID, to, r.AmountMicro},
			payoutSQL: "g.id", extra: ", g.id",
		}
		var id string
		out, err := p.run(ctx, t, &id)
		if err != nil {
			return err
		}
		if !out.ok {
			return fmt.Errorf("%w: payout row not written", errBroken)
		}
		payoutID = id
		return nil
	}, l.resolveTransfer(r.Key, func(_ context.Context, st storedTransfer) error {
		if !bytes.Equal(st.hash, hash) || st.payoutID == nil {
			return wrapf(ErrIdempotencyConflict, "key %q", r.Key)
		}
		payoutID = *st.payoutID
		return nil
	}))
	err = mapConstraint(err)
	if errors.Is(err, errKeyExists) {
		st, found, lerr := l.replayTransfer(ctx, r.Key, hash)
		switch {
		case lerr != nil:
			return Payout{}, lerr
		case !found:
			return Payout{}, err
		case st.payoutID == nil:
			return Payout{}, wrapf(ErrIdempotencyConflict, "key %q", r.Key)
		}
		payoutID, err = *st.payoutID, nil
	}
	if err != nil {
		return Payout{}, err
	}
	// Applied: the answer must not be lost to the caller's deadline.
	dctx, cancel := l.detached(ctx)
	defer cancel()
	p, err := l.getPayout(dctx, payoutID)
	if err != nil {
		return Payout{}, fmt.Errorf("%w: payout %s was requested but could not be read back: %w", ErrAmbiguous, payoutID, err)
	}
	return p, nil
}

// finishPayout settles or fails a requested payout: the payout row changes state and its money
// leaves the in-flight account, to the treasury (settled) or back to the earnings (failed).
func (l *Ledger) finishPayout(ctx context.Context, payoutID string, to PayoutStatus, detail string) (Payout, error) {
	if !ValidUUID(payoutID) {
		return Payout{}, wrapf(ErrPayoutNotFound, "payout %q", payoutID)
	}
	if to == PayoutSettled {
		if err := validRef("tx hash", detail); err != nil {
			return Payout{}, err
		}
	}
	p, err := l.getPayout(ctx, payoutID)
	if err != nil {
		return Payout{}, err
	}
	if done, err := payoutDone(p, to, detail); done {
		return p, err
	}
	var (
		kind   TransferKind
		credit leg
		gate   string
		hash   []byte
	)
	if to == PayoutSettled {
		kind, hash = KindPayoutSettle, requestHash("payout_settle", detail)
		credit = leg{acct: Treasury(p.ChainID), pick: true, posted: p.AmountMicro}
		gate = `UPDATE ledger_payouts SET status = 'settled', tx_hash = $2, updated_at = now()
			WHERE id = $1 AND status = 'requested' RETURNING id`
		if err := l.ensure(ctx, Treasury(p.ChainID)); err != nil {
			return Payout{}, err
		}
	} else {
		kind, hash = KindPayoutFail, requestHash("payout_fail")
		credit = leg{acct: Earnings(p.Paywall), pick: true, posted: p.AmountMicro}
		gate = `UPDATE ledger_payouts SET status = 'failed', reason = $2, updated_at = now()
			WHERE id = $1 AND status = 'requested' RETURNING id`
	}
	key := reservedKeyPrefix + string(kind) + ":" + p.ID
	post := &posting{
		kind: kind, key: key, hash: hash, gate: gate, gateArgs: []any{p.ID, detail}, payoutSQL: "g.id",
		legs:     []leg{{acct: PayoutsInFlight(p.ChainID), posted: -p.AmountMicro}, credit},
		start:    l.shardStart(p.ID),
		blocking: l.opts.ShardPick == PickHashed,
	}
	for try := 0; ; try++ {
		err = l.runTx(ctx, string(kind), func(ctx context.Context, t *txn) error {
			_, err := post.run(ctx, t)
			return err
		}, l.resolveTransfer(key, func(context.Context, storedTransfer) error { return nil }))
		err = mapConstraint(err)
		if err != nil && !errors.Is(err, errKeyExists) && !errors.Is(err, errIncomplete) {
			return Payout{}, err
		}
		// Whatever happened, the payout row now says where it stands (read even if the caller
		// has given up, so that an applied change is reported as such).
		dctx, cancel := l.detached(ctx)
		p, lerr := l.getPayout(dctx, payoutID)
		cancel()
		if lerr != nil {
			if err == nil {
				return Payout{}, fmt.Errorf("%w: payout %s could not be read back: %w", ErrAmbiguous, payoutID, lerr)
			}
			return Payout{}, lerr
		}
		if done, derr := payoutDone(p, to, detail); done {
			return p, derr
		}
		if !errors.Is(err, errIncomplete) || post.blocking || try > 0 {
			return Payout{}, fmt.Errorf("%w: payout %s is still %s", ErrUnavailable, payoutID, p.Status)
		}
		post.blocking = true
	}
}

// payoutDone reports whether p is already finished, and what finishing it to state `to` with
// detail answers: the payout itself for a repeat, ErrPayoutFinished for a contradiction.
func payoutDone(p Payout, to PayoutStatus, detail string) (bool, error) {
	switch {
	case p.Status == PayoutRequested:
		return false, nil
	case p.Status == to && (to == PayoutFailed || p.TxHash == detail):
		return true, nil
	default:
		return true, wrapf(ErrPayoutFinished, "payout %s is %s", p.ID, p.Status)
	}
}

const payoutColumns = `id, paywall, chain_id, to_address, amount, status, COALESCE(tx_hash, ''), COALESCE(reason, ''), created_at, updated_at`

func scanPayout(row pgx.Row) (Payout, error) {
	var p Payout
	var status string
	err := row.Scan(&p.ID, &p.Paywall, &p.ChainID, &p.To, &p.AmountMicro, &status, &p.TxHash, &p.Reason, &p.CreatedAt, &p.UpdatedAt)
	p.Status = PayoutStatus(status)
	return p, err
}

func (l *Ledger) getPayout(ctx context.Context, id string) (Payout, error) {
	if !ValidUUID(id) {
		return Payout{}, wrapf(ErrPayoutNotFound, "payout %q", id)
	}
	p, err := scanPayout(l.queryRow(ctx, `SELECT `+payoutColumns+` FROM ledger_payouts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Payout{}, wrapf(ErrPayoutNotFound, "payout %s", id)
	}
	return p, err
}

func (l *Ledger) requestedPayouts(ctx context.Context, chainID string, after Payout, limit int) ([]Payout, error) {
	afterID := after.ID
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	return l.listPayouts(ctx, limit, `WHERE status = 'requested' AND chain_id = $2 AND (created_at, id) > ($3, $4::UUID)
		ORDER BY created_at, id`, chainID, after.CreatedAt, afterID)
}

func (l *Ledger) payouts(ctx context.Context, paywallID string, status PayoutStatus, limit int) ([]Payout, error) {
	if err := validRef("paywall", paywallID); err != nil {
		return nil, err
	}
	switch status {
	case "", PayoutRequested, PayoutSettled, PayoutFailed:
	default:
		return nil, invalid("unknown payout status %q", status)
	}
	return l.listPayouts(ctx, limit, `WHERE paywall = $2 AND ($3 = '' OR status = $3)
		ORDER BY created_at DESC, id DESC`, paywallID, string(status))
}

// PayoutWindow is what a paywall asked to withdraw in a recent period (Ledger.PayoutsSince).
type PayoutWindow struct {
	TotalMicro int64 // the sum of the payouts not failed (requested or settled)
	Count      int64 // how many there are
}

// payoutsSince sums a paywall's payouts that have not failed and were created less than
// window ago, by the database's clock (created_at is the database's too), in one statement
// that the index ledger_payouts_paywall (paywall, created_at) answers with a range scan.
func (l *Ledger) payoutsSince(ctx context.Context, paywallID string, window time.Duration) (PayoutWindow, error) {
	if err := validRef("paywall", paywallID); err != nil {
		return PayoutWindow{}, err
	}
	// created_at is stored to the microsecond: a shorter window would be an empty one.
	if window < time.Microsecond {
		return PayoutWindow{}, invalid("payout window %v is shorter than a microsecond", window)
	}
	var w PayoutWindow
	err := l.queryRow(ctx, `SELECT COALESCE(SUM(amount), 0)::BIGINT, COUNT(*)::BIGINT FROM ledger_payouts
		WHERE paywall = $1 AND created_at > now() - $2::BIGINT * INTERVAL '1 microsecond' AND status <> 'failed'`,
		paywallID, window.Microseconds()).Scan(&w.TotalMicro, &w.Count)
	if err != nil {
		return PayoutWindow{}, err
	}
	return w, nil
}

// MaxPayoutsPage is the most payouts one call of Payouts or RequestedPayouts returns.
const MaxPayoutsPage = 1000

// listPayouts reads up to limit payouts (default 100, at most MaxPayoutsPage) that where selects and
// orders; its arguments are $2 onwards.
func (l *Ledger) listPayouts(ctx context.Context, limit int, where string, args ...any) ([]Payout, error) {
	if limit <= 0 {
		limit = 100
	}
	args = append([]any{min(limit, MaxPayoutsPage)}, args...)
	var out []Payout
	err := l.read(ctx, func() error {
		rows, err := l.pool.Query(ctx, `SELECT `+payoutColumns+` FROM ledger_payouts `+where+` LIMIT $1`, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payout, error) { return scanPayout(r) })
		return err
	})
	return out, err
}
