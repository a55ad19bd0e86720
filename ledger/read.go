package ledger

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

func (l *Ledger) balance(ctx context.Context, wallet string) (WalletBalance, error) {
	wallet = normalizeAddress(wallet)
	var b WalletBalance
	err := l.queryRow(ctx, `SELECT posted, held FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 AND shard = 0`,
		wallet).Scan(&b.PostedMicro, &b.HeldMicro)
	if errors.Is(err, pgx.ErrNoRows) {
		return WalletBalance{}, unknown(Wallet(wallet))
	}
	b.AvailableMicro = b.PostedMicro - b.HeldMicro
	return b, err
}

func (l *Ledger) earnings(ctx context.Context, paywallID string) (EarningsBalance, error) {
	var (
		e      EarningsBalance
		exists bool
	)
	// One statement, so the three figures come from one snapshot.
	err := l.queryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM ledger_accounts WHERE kind = 'earnings' AND ref = $1),
		(SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = 'earnings' AND ref = $1),
		(SELECT COALESCE(SUM(CASE WHEN status = 'requested' THEN amount ELSE 0 END), 0)::BIGINT FROM ledger_payouts WHERE paywall = $1),
		(SELECT COALESCE(SUM(CASE WHEN status = 'settled' THEN amount ELSE 0 END), 0)::BIGINT FROM ledger_payouts WHERE paywall = $1)`,
		paywallID).Scan(&exists, &e.AvailableMicro, &e.InFlightMicro, &e.PaidOutMicro)
	if err != nil {
		return EarningsBalance{}, err
	}
	if !exists {
		return EarningsBalance{}, unknown(Earnings(paywallID))
	}
	return e, nil
}

// historyCursor is the position after the last item of a page: the item's time (µs) and
// transfer id. It is opaque to callers.
type historyCursor struct {
	at time.Time
	id string
}

func (c historyCursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte("h1:" + strconv.FormatInt(c.at.UnixMicro(), 10) + ":" + c.id))
}

func decodeCursor(s string) (historyCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return historyCursor{}, invalid("bad history cursor")
	}
	parts := strings.Split(string(raw), ":")
	if len(parts) != 3 || parts[0] != "h1" || !ValidUUID(parts[2]) {
		return historyCursor{}, invalid("bad history cursor")
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return historyCursor{}, invalid("bad history cursor")
	}
	return historyCursor{at: time.UnixMicro(us), id: parts[2]}, nil
}

func (l *Ledger) history(ctx context.Context, a Account, cursor string, limit int) (HistoryPage, error) {
	if a.Kind == KindWallet {
		a.Ref = normalizeAddress(a.Ref)
	}
	if err := validAccount(a); err != nil {
		return HistoryPage{}, err
	}
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 500)
	var (
		at *time.Time // with id, where the page starts; nil for the first page
		id *string
	)
	if cursor != "" {
		c, err := decodeCursor(cursor)
		if err != nil {
			return HistoryPage{}, err
		}
		at, id = &c.at, &c.id
	}
	var items []HistoryItem
	err := l.read(ctx, func() error {
		rows, err := l.pool.Query(ctx, `
		SELECT x.transfer_id, t.kind, x.amount, x.created_at, t.metadata FROM (
			SELECT created_at, transfer_id, SUM(amount)::BIGINT AS amount FROM ledger_entries
			WHERE kind = $1 AND ref = $2 AND ($3::TIMESTAMPTZ IS NULL OR (created_at, transfer_id) < ($3::TIMESTAMPTZ, $4::UUID))
			GROUP BY created_at, transfer_id
			ORDER BY created_at DESC, transfer_id DESC LIMIT $5
		) AS x JOIN ledger_transfers AS t ON t.id = x.transfer_id
		ORDER BY x.created_at DESC, x.transfer_id DESC`,
			string(a.Kind), a.Ref, at, id, limit+1)
		if err != nil {
			return err
		}
		items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (HistoryItem, error) {
			var it HistoryItem
			var kind string
			err := r.Scan(&it.TransferID, &kind, &it.AmountMicro, &it.CreatedAt, &it.Metadata)
			it.Kind = TransferKind(kind)
			return it, err
		})
		return err
	})
	if err != nil {
		return HistoryPage{}, err
	}
	if len(items) == 0 && cursor == "" {
		if err := l.unknownAccount(ctx, a); err != nil {
			return HistoryPage{}, err
		}
	}
	page := HistoryPage{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		last := page.Items[limit-1]
		page.Next = historyCursor{at: last.CreatedAt, id: last.TransferID}.encode()
	}
	return page, nil
}

func (l *Ledger) getHold(ctx context.Context, holdID string) (Hold, error) {
	if !ValidUUID(holdID) {
		return Hold{}, wrapf(ErrHoldNotFound, "hold %q", holdID)
	}
	h, found, err := l.holdBy(ctx, "id", holdID)
	if err != nil {
		return Hold{}, err
	}
	if !found {
		return Hold{}, wrapf(ErrHoldNotFound, "hold %s", holdID)
	}
	return h.Hold, nil
}

// getTransfer reads the transfer whose column ("id" or "reverses") is transferID.
func (l *Ledger) getTransfer(ctx context.Context, column, transferID string) (Transfer, error) {
	if !ValidUUID(transferID) {
		return Transfer{}, wrapf(ErrTransferNotFound, "transfer %q", transferID)
	}
	st, found, err := l.transferBy(ctx, column, strings.ToLower(transferID))
	if err != nil {
		return Transfer{}, public(err)
	}
	if !found {
		if column == "reverses" {
			return Transfer{}, wrapf(ErrTransferNotFound, "no reversal of transfer %s", transferID)
		}
		return Transfer{}, wrapf(ErrTransferNotFound, "transfer %s", transferID)
	}
	return st.Transfer, nil
}
