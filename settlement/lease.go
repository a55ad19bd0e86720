package settlement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/pgtx"
)

// lease is one worker's claim on a hot wallet on one chain: a row in settlement_leases. The
// holder renews it every tick; another worker takes over once it expires. The epoch grows at
// each takeover, and fence() checks holder and epoch inside every transaction that allocates a
// nonce or stores signed bytes, so a worker that lost the lease (paused, partitioned) cannot
// send even if it still believes it holds it.
type lease struct {
	pool    *pgxpool.Pool
	chainID string
	wallet  string // lower-case 0x
	holder  string
	ttl     time.Duration
	clock   Clock
	epoch   int64 // 0 when not held
}

// acquire takes the lease if it is free or expired, or renews it, and reports whether this
// worker holds it now.
func (l *lease) acquire(ctx context.Context) (bool, error) {
	now := l.clock.Now()
	expires := now.Add(l.ttl)
	_, err := l.pool.Exec(ctx, `
		INSERT INTO settlement_leases (chain_id, wallet, holder, epoch, expires_at)
		VALUES ($1, $2, $3, 1, $4) ON CONFLICT (chain_id, wallet) DO NOTHING`,
		l.chainID, l.wallet, l.holder, expires)
	if err != nil {
		return false, fmt.Errorf("lease: %w", err)
	}
	var epoch int64
	err = l.pool.QueryRow(ctx, `
		UPDATE settlement_leases
		SET epoch = CASE WHEN holder = $3 THEN epoch ELSE epoch + 1 END, holder = $3, expires_at = $4
		WHERE chain_id = $1 AND wallet = $2 AND (holder = $3 OR expires_at <= $5)
		RETURNING epoch`, l.chainID, l.wallet, l.holder, expires, now).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		l.epoch = 0
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lease: %w", err)
	}
	l.epoch = epoch
	return true, nil
}

// fence locks the lease row in tx and checks that this worker still holds it.
// It can return: ErrLeaseLost.
func (l *lease) fence(ctx context.Context, tx pgx.Tx) error {
	if l.epoch == 0 {
		return ErrLeaseLost
	}
	var holder string
	var epoch int64
	var expires time.Time
	err := tx.QueryRow(ctx, `
		SELECT holder, epoch, expires_at FROM settlement_leases
		WHERE chain_id = $1 AND wallet = $2 FOR UPDATE`, l.chainID, l.wallet).Scan(&holder, &epoch, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrLeaseLost
	}
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	if holder != l.holder || epoch != l.epoch || !expires.After(l.clock.Now()) {
		return ErrLeaseLost
	}
	return nil
}

// release lets another worker take over at once (on a clean shutdown).
func (l *lease) release(ctx context.Context) error {
	if l.epoch == 0 {
		return nil
	}
	_, err := l.pool.Exec(ctx, `
		UPDATE settlement_leases SET expires_at = $4
		WHERE chain_id = $1 AND wallet = $2 AND holder = $3`, l.chainID, l.wallet, l.holder, l.clock.Now())
	l.epoch = 0
	return err
}

// maxTxRetries bounds the retries of one database transaction on serialization failures.
const maxTxRetries = 8

// runTx runs fn in a transaction and commits, retrying the whole transaction on serialization
// failures and deadlocks (common on CockroachDB). COMMIT's own error is returned. fn must be
// safe to run again.
func runTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return pgtx.Run(ctx, pool, pgtx.Options{Attempts: maxTxRetries + 1}, fn)
}
