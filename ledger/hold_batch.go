package ledger

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// holdCall is one Hold in a batch.
type holdCall struct {
	r      HoldRequest
	wallet string // normalized
	hash   []byte
	meta   *string // JSON, or nil
}

// holdBatchSQL writes a batch of holds in one statement. Requests whose key is taken are left
// out (they run on their own and answer as replays). The holds of one wallet are reserved
// together by one conditional write on the wallet row (posted − held ≥ their sum, evaluated on
// the row's newest version, as for a single hold); if the sum does not fit, none of them is
// written here and each runs on its own. Wallet rows are locked with SKIP LOCKED: a wallet
// another transaction holds is reported busy, and its holds try a later batch.
//
// The taken-key test is a scalar subquery, one index probe per request: written as NOT EXISTS,
// the planner may turn it into an anti-join that hashes the whole holds table. Wallet rows are
// found by = ANY (ARRAY(…)) of the batch's wallets, an index condition: written as a join, the
// planner scans every wallet row (it did, twice per batch).
//
// It returns one row per request whose key was free: its ordinal, the hold's id and expiry if
// written, and whether its wallet was busy.
const holdBatchSQL = `WITH r AS MATERIALIZED (
	SELECT r.key, r.wallet, r.amount, r.hash, r.paywall, r.ttl, r.meta, r.i
	FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BYTEA[], $5::TEXT[], $6::BIGINT[], $7::TEXT[])
		WITH ORDINALITY AS r (key, wallet, amount, hash, paywall, ttl, meta, i)
	WHERE (SELECT 1 FROM ledger_holds AS h WHERE h.idempotency_key = r.key) IS NULL
), s AS MATERIALIZED (
	SELECT wallet, SUM(amount)::BIGINT AS total FROM r GROUP BY wallet
), l AS MATERIALIZED (
	SELECT b.ref FROM ledger_balances AS b
	WHERE b.kind = 'wallet' AND b.shard = 0 AND b.ref = ANY (ARRAY(SELECT wallet FROM s))
	ORDER BY b.ref FOR UPDATE OF b SKIP LOCKED
), w AS (
	UPDATE ledger_balances AS b SET held = b.held + s.total FROM s
	WHERE b.kind = 'wallet' AND b.shard = 0 AND b.ref = ANY (ARRAY(SELECT ref FROM l)) AND b.ref = s.wallet
		AND b.posted - b.held >= s.total
	RETURNING b.ref
), h AS (
	INSERT INTO ledger_holds (idempotency_key, request_hash, wallet, paywall, amount, status, expires_at, metadata)
	SELECT r.key, r.hash, r.wallet, r.paywall, r.amount, 'open', now() + r.ttl * INTERVAL '1 microsecond', r.meta::JSONB
	FROM r WHERE r.wallet IN (SELECT ref FROM w)
	RETURNING idempotency_key, id, expires_at
)
SELECT r.i, h.id, h.expires_at,
	h.id IS NULL AND r.wallet NOT IN (SELECT ref FROM l)
		AND EXISTS (SELECT 1 FROM ledger_balances AS b WHERE b.kind = 'wallet' AND b.ref = r.wallet AND b.shard = 0)
FROM r LEFT JOIN h ON h.idempotency_key = r.key`

// probeHoldsSQL is probeHoldSQL for many keys.
const probeHoldsSQL = `INSERT INTO ledger_holds (idempotency_key, request_hash, wallet, paywall, amount, status, expires_at)
	SELECT k, '\x00', '', '', 1, 'voided', now() FROM unnest($1::TEXT[]) AS k ON CONFLICT (idempotency_key) DO NOTHING`

// writtenRow is what a batch statement wrote for one request.
type writtenRow struct {
	id string
	at time.Time
}

// holdBatchArgs are holdBatchSQL's arguments for a batch.
func holdBatchArgs(calls []*batchCall[holdCall, Hold]) []any {
	n := len(calls)
	var (
		keys, wallets, paywalls = make([]string, n), make([]string, n), make([]string, n)
		amounts, ttls           = make([]int64, n), make([]int64, n)
		hashes                  = make([][]byte, n)
		metas                   = make([]*string, n)
	)
	for i, c := range calls {
		q := c.req
		keys[i], wallets[i], paywalls[i], amounts[i], ttls[i], hashes[i], metas[i] =
			q.r.Key, q.wallet, q.r.Paywall, q.r.AmountMicro, q.r.TTL.Microseconds(), q.hash, q.meta
	}
	return []any{keys, wallets, amounts, hashes, paywalls, ttls, metas}
}

// execHolds runs a batch of holds.
func (l *Ledger) execHolds(ctx context.Context, calls []*batchCall[holdCall, Hold], written func()) {
	n := len(calls)
	args := holdBatchArgs(calls)
	runBatch(ctx, l, batchSpec[holdCall, Hold, writtenRow]{
		op:   "hold batch",
		keys: func(q holdCall) string { return q.r.Key },
		id:   func(w writtenRow) string { return w.id },
		body: func(ctx context.Context, t *txn, w *batchWrite[writtenRow]) error {
			return t.final(ctx, holdBatchSQL, args, func(rows pgx.Rows) error {
				var (
					i      int64
					id     *string
					at     *time.Time
					isBusy bool
				)
				if err := rows.Scan(&i, &id, &at, &isBusy); err != nil {
					return err
				}
				k, err := batchRow("hold batch", i, n)
				switch {
				case err != nil:
					return err
				case id != nil:
					w.wrote[k] = writtenRow{*id, *at}
				case isBusy:
					w.busy[k] = true
				}
				return nil
			})
		},
		done: func(c *batchCall[holdCall, Hold], w writtenRow) {
			c.res = Hold{ID: w.id, Wallet: c.req.wallet, Paywall: c.req.r.Paywall, AmountMicro: c.req.r.AmountMicro,
				Status: HoldOpen, ExpiresAt: w.at}
		},
		solo: func(ctx context.Context, c *batchCall[holdCall, Hold]) (Hold, error) {
			return l.holdAlone(ctx, c.req.r, c.req.wallet, c.req.hash)
		},
		probeSQL: probeHoldsSQL,
		countSQL: `SELECT count(*) FROM ledger_holds WHERE id = ANY($1::UUID[])`,
	}, calls, written)
}

// metadataJSON encodes metadata for a batch (nil when empty, as metadataArg).
func metadataJSON(m map[string]string) (*string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}
