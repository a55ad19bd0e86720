package ledger

import (
	"bytes"
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// storedTransfer is a transfer read back, with what a replay needs to compare and answer.
type storedTransfer struct {
	Transfer
	hash     []byte
	holdID   *string
	payoutID *string
}

// transferBy reads a transfer by id, by idempotency key or by what it reverses (column is "id",
// "idempotency_key" or "reverses").
func (l *Ledger) transferBy(ctx context.Context, column, value string) (st storedTransfer, found bool, err error) {
	err = l.read(ctx, func() error {
		st, found = storedTransfer{}, false
		rows, err := l.pool.Query(ctx, `
			SELECT t.id, t.kind, t.idempotency_key, t.request_hash, t.hold_id, t.payout_id, t.reverses,
			       t.metadata, t.created_at, e.kind, e.ref, e.amount
			FROM ledger_transfers AS t LEFT JOIN ledger_entries AS e ON e.transfer_id = t.id
			WHERE t.`+column+` = $1 ORDER BY e.leg`, value)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind        string
				reverses    *string
				ekind, eref *string
				amount      *int64
			)
			if err := rows.Scan(&st.ID, &kind, &st.IdempotencyKey, &st.hash, &st.holdID, &st.payoutID, &reverses,
				&st.Metadata, &st.CreatedAt, &ekind, &eref, &amount); err != nil {
				return err
			}
			st.Kind = TransferKind(kind)
			if reverses != nil {
				st.Reverses = *reverses
			}
			found = true
			if ekind != nil {
				st.Entries = append(st.Entries, Entry{Account: Account{AccountKind(*ekind), *eref}, AmountMicro: *amount})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return storedTransfer{}, false, err
	}
	st.Entries = mergeEntries(st.Entries)
	return st, found, nil
}

// replayTransfer answers a request whose key is taken: the first result when the request is the
// same, ErrIdempotencyConflict otherwise. found is false when the key is free after all.
func (l *Ledger) replayTransfer(ctx context.Context, key string, hash []byte) (storedTransfer, bool, error) {
	st, found, err := l.transferBy(ctx, "idempotency_key", key)
	if err != nil || !found {
		return st, found, err
	}
	if !bytes.Equal(st.hash, hash) {
		return st, true, wrapf(ErrIdempotencyConflict, "key %q", key)
	}
	return st, true, nil
}

// storedHold is a hold read back.
type storedHold struct {
	Hold
	key       string
	hash      []byte
	status    HoldStatus // as stored; Hold.Status reports an open hold past its expiry as expired
	charged   *int64
	shortfall *int64
}

const holdColumns = `id, idempotency_key, request_hash, wallet, paywall, amount, status, expires_at,
	(status = 'open' AND expires_at <= now()), charged_micro, shortfall_micro`

func scanHold(row pgx.Row) (storedHold, error) {
	var (
		h       storedHold
		status  string
		expired bool
	)
	err := row.Scan(&h.ID, &h.key, &h.hash, &h.Wallet, &h.Paywall, &h.AmountMicro, &status, &h.ExpiresAt,
		&expired, &h.charged, &h.shortfall)
	h.status = HoldStatus(status)
	h.Status = h.status
	if expired {
		h.Status = HoldExpired
	}
	return h, err
}

// holdBy reads a hold by id or by idempotency key.
func (l *Ledger) holdBy(ctx context.Context, column, value string) (storedHold, bool, error) {
	h, err := scanHold(l.queryRow(ctx, `SELECT `+holdColumns+` FROM ledger_holds WHERE `+column+` = $1`, value))
	if errors.Is(err, pgx.ErrNoRows) {
		return storedHold{}, false, nil
	}
	return h, err == nil, err
}

// probe settles whether a transaction that may still be committing wrote key: it inserts the
// key in a transaction that always rolls back. The insert waits for any in-flight writer of the
// same key, so the lookup that follows sees the final outcome; a plain read could miss a commit
// that is still on its way.
func (l *Ledger) probe(ctx context.Context, insertSQL, key string) error {
	b := &pgx.Batch{}
	b.Queue(beginSQL)
	b.Queue(insertSQL, key)
	b.Queue(rollbackSQL)
	return l.pool.SendBatch(ctx, b).Close()
}

const (
	probeTransferSQL = `INSERT INTO ledger_transfers (kind, idempotency_key, request_hash, legs_expected, legs_applied, legs_sum)
		VALUES ('probe', $1, '\x00', 0, 0, 0) ON CONFLICT (idempotency_key) DO NOTHING`
	probeHoldSQL = `INSERT INTO ledger_holds (idempotency_key, request_hash, wallet, paywall, amount, status, expires_at)
		VALUES ($1, '\x00', '', '', 1, 'voided', now()) ON CONFLICT (idempotency_key) DO NOTHING`
)

// resolveTransfer is the resolver of an operation keyed in ledger_transfers: it probes the key,
// then hands the stored transfer (if any) to fill.
func (l *Ledger) resolveTransfer(key string, fill func(context.Context, storedTransfer) error) resolver {
	return func(ctx context.Context) (bool, error) {
		if err := l.probe(ctx, probeTransferSQL, key); err != nil {
			return false, err
		}
		st, found, err := l.transferBy(ctx, "idempotency_key", key)
		if err != nil || !found {
			return false, err
		}
		return true, fill(ctx, st)
	}
}

// read runs a read, again (up to MaxRetries times, with backoff) when it failed for a transient reason:
// a pooled connection whose backend was terminated fails its first statement, and a read is
// always safe to repeat.
func (l *Ledger) read(ctx context.Context, fn func() error) error {
	err := fn()
	for attempt := 1; err != nil && attempt <= l.opts.MaxRetries && readRetryable(ctx, err); attempt++ {
		if l.backoff(ctx, attempt) != nil {
			break
		}
		err = fn()
	}
	return err
}

// readRetryable reports whether a failed read may be repeated: any transport failure (reads
// change nothing), and the server errors retryable reports; never once ctx is done.
func readRetryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, pgx.ErrNoRows) {
		return false
	}
	if errors.As(err, new(*pgconn.PgError)) {
		return retryable(err)
	}
	return true
}

// retryRow is a pgx.Row whose Scan runs the query through read.
type retryRow struct {
	l    *Ledger
	ctx  context.Context
	sql  string
	args []any
}

func (r retryRow) Scan(dest ...any) error {
	return r.l.read(r.ctx, func() error { return r.l.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...) })
}

func (l *Ledger) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return retryRow{l: l, ctx: ctx, sql: sql, args: args}
}
