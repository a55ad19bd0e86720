package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// captureCall is one Capture in a batch.
type captureCall struct {
	r        CaptureRequest
	hash     []byte
	meta     map[string]string
	metaJSON *string
}

// captureBatchSQL writes a batch of captures in one statement, each table modified once. Only
// the fast path is batched: a hold that is open, unexpired and covers its charge. Everything else
// (a taken key, an overrun, a finished or expired hold) is left out and runs on its own.
//
//   - Holds, then wallets, are locked with SKIP LOCKED: a capture whose hold or wallet another
//     transaction holds is reported busy and tries a later batch. A locked hold is read in its
//     newest version and, while the lock lasts, nobody can change it: it is captured under the
//     same conditions as a single capture. Holds are found by id only (no condition on their
//     status), so that the planner uses the primary key.
//   - Wallet rows are found by = ANY (ARRAY(…)), an index condition (as a join, the planner
//     scanned every wallet row).
//   - Each wallet row changes once, by the sums of its captured holds; each shared account gets
//     one credit, the sum of its shares, on one shard picked as in a single capture (the first
//     free one from a start; SKIP LOCKED).
//   - Every capture gets its own transfer and entries; its transfer id is drawn when its hold is
//     updated, so that legs, transfers and entries need no join to find each other. A leg counts
//     as applied if its balance row was picked and every picked row was updated: the transfer
//     row's completeness check (legs_applied = legs_expected AND legs_sum = 0) fails the whole
//     statement if any row could not be reached (every shard of an account busy, or the account
//     new): nothing is written and each capture runs on its own.
//   - The work grows linearly with the batch: every join between the statement's own rows is on
//     a handful of shared-account rows or goes through an index. (Its first form joined legs,
//     transfers and entries to each other and to the updated rows; planned for one row per
//     request, those joins were nested loops, and a batch of 64 took 2.5 times as long.)
//
// It returns one row per request whose key was free: its ordinal; the transfer's id and time,
// the hold's wallet, paywall and amount if captured; whether its rows were busy; and the number
// of transfers and of entries written (on every row).
const captureBatchSQL = `WITH r AS MATERIALIZED (
	SELECT r.key, r.hash, r.hold_id::UUID AS hold_id, r.charge, r.prov, r.provider, r.fee, r.dev, r.meta, r.i
	FROM unnest($1::TEXT[], $2::BYTEA[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[])
		WITH ORDINALITY AS r (key, hash, hold_id, charge, prov, provider, fee, dev, meta, i)
	WHERE (SELECT 1 FROM ledger_transfers AS t WHERE t.idempotency_key = r.key) IS NULL
), c AS MATERIALIZED (
	SELECT r.i, r.key, r.hash, r.charge, r.prov, r.provider, r.fee, r.dev, r.meta, h.id, h.wallet,
		h.status = 'open' AND h.expires_at > now() AND h.amount >= r.charge AS ok
	FROM r JOIN ledger_holds AS h ON h.id = r.hold_id
	ORDER BY h.id FOR UPDATE OF h SKIP LOCKED
), wl AS MATERIALIZED (
	SELECT b.ref FROM ledger_balances AS b
	WHERE b.kind = 'wallet' AND b.shard = 0 AND b.ref = ANY (ARRAY(SELECT wallet FROM c WHERE ok))
	ORDER BY b.ref FOR UPDATE OF b SKIP LOCKED
), g AS (
	UPDATE ledger_holds AS h SET status = 'captured', finished_at = now(), charged_micro = c.charge, shortfall_micro = 0
	FROM c
	WHERE h.id = c.id AND c.ok AND c.wallet = ANY (ARRAY(SELECT ref FROM wl))
	RETURNING c.i, c.key, c.hash, c.meta, gen_random_uuid() AS tid, h.id, h.wallet, h.paywall, h.amount,
		c.charge, c.prov, c.provider, c.fee, c.dev
), gw AS MATERIALIZED (
	SELECT wallet, SUM(amount)::BIGINT AS held, SUM(charge)::BIGINT AS posted FROM g GROUP BY wallet
), cr AS MATERIALIZED (
	SELECT kind, ref, SUM(amount)::BIGINT AS amount FROM (
		SELECT 'provider_costs'::TEXT AS kind, provider AS ref, prov AS amount FROM g WHERE prov > 0
		UNION ALL SELECT 'platform_fees', '', fee FROM g WHERE fee > 0
		UNION ALL SELECT 'earnings', paywall, dev FROM g WHERE dev > 0
	) AS x GROUP BY kind, ref
), pk AS MATERIALIZED (
	SELECT cr.kind, cr.ref, p.shard, cr.amount FROM cr CROSS JOIN LATERAL (
		SELECT * FROM (SELECT b.shard FROM ledger_balances AS b WHERE b.kind = cr.kind AND b.ref = cr.ref AND b.shard >= $10::INT
			ORDER BY b.shard LIMIT 1 FOR UPDATE SKIP LOCKED) AS hi
		UNION ALL
		SELECT * FROM (SELECT b.shard FROM ledger_balances AS b WHERE b.kind = cr.kind AND b.ref = cr.ref AND b.shard < $10::INT
			ORDER BY b.shard LIMIT 1 FOR UPDATE SKIP LOCKED) AS lo
		LIMIT 1
	) AS p
), v AS MATERIALIZED (
	SELECT 'wallet'::TEXT AS kind, wallet AS ref, 0 AS shard, -posted AS dp, -held AS dh FROM gw
	UNION ALL SELECT kind, ref, shard, amount, 0::BIGINT FROM pk
), u AS (
	UPDATE ledger_balances AS b SET posted = b.posted + v.dp, held = b.held + v.dh FROM v
	WHERE b.kind = v.kind AND b.ref = v.ref AND b.shard = v.shard
	RETURNING 1
), lg AS MATERIALIZED (
	SELECT g.tid, g.key, g.hash, g.id AS hold_id, g.meta, x.leg, x.kind, x.ref, x.amount,
		CASE WHEN x.leg = 0 THEN 0 ELSE (SELECT pk.shard FROM pk WHERE pk.kind = x.kind AND pk.ref = x.ref) END AS shard
	FROM g CROSS JOIN LATERAL (VALUES
		(0, 'wallet'::TEXT, g.wallet, -g.charge), (1, 'provider_costs', g.provider, g.prov),
		(2, 'platform_fees', '', g.fee), (3, 'earnings', g.paywall, g.dev)) AS x (leg, kind, ref, amount)
	WHERE x.leg = 0 OR x.amount > 0
), t AS (
	INSERT INTO ledger_transfers (id, kind, idempotency_key, request_hash, hold_id, metadata, legs_expected, legs_applied, legs_sum)
	SELECT tid, 'capture', key, hash, hold_id, meta::JSONB, count(*),
		CASE WHEN (SELECT count(*) FROM u) = (SELECT count(*) FROM v) THEN count(shard) ELSE 0 END,
		COALESCE(SUM(amount) FILTER (WHERE shard IS NOT NULL), 0)
	FROM lg GROUP BY tid, key, hash, hold_id, meta
	RETURNING 1
), e AS (
	INSERT INTO ledger_entries (transfer_id, leg, kind, ref, shard, amount, created_at)
	SELECT tid, leg, kind, ref, shard, amount, now() FROM lg WHERE amount <> 0 AND shard IS NOT NULL
	RETURNING 1
)
SELECT r.i, g.tid, now(), g.wallet, g.paywall, g.amount,
	CASE WHEN c.i IS NOT NULL THEN c.ok AND g.i IS NULL
	ELSE COALESCE((SELECT h.status = 'open' AND h.expires_at > now() AND h.amount >= r.charge
		FROM ledger_holds AS h WHERE h.id = r.hold_id), false) END,
	(SELECT count(*) FROM t), (SELECT count(*) FROM e)
FROM r LEFT JOIN g ON g.i = r.i LEFT JOIN c ON c.i = r.i`

// probeTransfersSQL is probeTransferSQL for many keys.
const probeTransfersSQL = `INSERT INTO ledger_transfers (kind, idempotency_key, request_hash, legs_expected, legs_applied, legs_sum)
	SELECT 'probe', k, '\x00', 0, 0, 0 FROM unnest($1::TEXT[]) AS k ON CONFLICT (idempotency_key) DO NOTHING`

// capturedHold is what a capture batch wrote for one request.
type capturedHold struct {
	writtenRow
	amount  int64   // the hold's
	entries []Entry // the transfer's (captureEntries)
}

// captureBatchArgs are captureBatchSQL's arguments for a batch whose shard picks start at shard.
func captureBatchArgs(calls []*batchCall[captureCall, CaptureResult], shard int) []any {
	n := len(calls)
	var (
		keys, holds, providers = make([]string, n), make([]string, n), make([]string, n)
		charges, provs, fees   = make([]int64, n), make([]int64, n), make([]int64, n)
		devs                   = make([]int64, n)
		hashes                 = make([][]byte, n)
		metas                  = make([]*string, n)
	)
	for i, c := range calls {
		s := c.req.r.Split
		keys[i], holds[i], hashes[i], metas[i] = c.req.r.Key, c.req.r.HoldID, c.req.hash, c.req.metaJSON
		charges[i], provs[i], fees[i], devs[i] = s.TotalMicro(), s.ProviderMicro, s.FeeMicro, s.DeveloperMicro
		if s.ProviderMicro > 0 {
			providers[i] = s.Provider
		}
	}
	return []any{keys, hashes, holds, charges, provs, providers, fees, devs, metas, shard}
}

// execCaptures runs a batch of captures.
func (l *Ledger) execCaptures(ctx context.Context, calls []*batchCall[captureCall, CaptureResult], written func()) {
	n := len(calls)
	args := captureBatchArgs(calls, rand.IntN(l.opts.Shards)) //nolint:gosec // spreads captures over shards; nothing secret
	runBatch(ctx, l, batchSpec[captureCall, CaptureResult, capturedHold]{
		op:   "capture batch",
		keys: func(q captureCall) string { return q.r.Key },
		id:   func(w capturedHold) string { return w.id },
		body: func(ctx context.Context, t *txn, w *batchWrite[capturedHold]) error {
			var transfers, entries, wantEntries int64
			err := t.query(ctx, captureBatchSQL, args, func(rows pgx.Rows) error {
				var (
					i               int64
					id              *string
					at              *time.Time
					wallet, paywall *string
					amount          *int64
					isBusy          bool
				)
				if err := rows.Scan(&i, &id, &at, &wallet, &paywall, &amount, &isBusy, &transfers, &entries); err != nil {
					return err
				}
				k, err := batchRow("capture batch", i, n)
				switch {
				case err != nil:
					return err
				case id != nil:
					es := captureEntries(calls[k].req.r.Split, *wallet, *paywall)
					w.wrote[k] = capturedHold{writtenRow{*id, *at}, *amount, es}
					wantEntries += int64(len(es))
				case isBusy:
					w.busy[k] = true
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(w.wrote) > 0 && (transfers != int64(len(w.wrote)) || entries != wantEntries) {
				return fmt.Errorf("%w: capture batch wrote %d transfers and %d entries, want %d and %d",
					errBroken, transfers, entries, len(w.wrote), wantEntries)
			}
			return t.commit(ctx)
		},
		done: func(c *batchCall[captureCall, CaptureResult], w capturedHold) {
			r := c.req.r
			charge := r.Split.TotalMicro()
			c.res = CaptureResult{
				Transfer: Transfer{ID: w.id, Kind: KindCapture, IdempotencyKey: r.Key, CreatedAt: w.at, Metadata: c.req.meta,
					Entries: w.entries},
				ChargedMicro:  charge,
				ReleasedMicro: w.amount - charge,
			}
		},
		solo: func(ctx context.Context, c *batchCall[captureCall, CaptureResult]) (CaptureResult, error) {
			return l.captureAlone(ctx, c.req.r, c.req.hash)
		},
		probeSQL: probeTransfersSQL,
		countSQL: `SELECT count(*) FROM ledger_transfers WHERE id = ANY($1::UUID[])`,
	}, calls, written)
}

// captureEntries are the entries of a fast-path capture, in leg order, as a replay reads them.
func captureEntries(s Split, wallet, paywall string) []Entry {
	var out []Entry
	if c := s.TotalMicro(); c != 0 {
		out = append(out, Entry{Account: Wallet(wallet), AmountMicro: -c})
	}
	if s.ProviderMicro > 0 {
		out = append(out, Entry{Account: ProviderCosts(s.Provider), AmountMicro: s.ProviderMicro})
	}
	if s.FeeMicro > 0 {
		out = append(out, Entry{Account: PlatformFees(), AmountMicro: s.FeeMicro})
	}
	if s.DeveloperMicro > 0 {
		out = append(out, Entry{Account: Earnings(paywall), AmountMicro: s.DeveloperMicro})
	}
	return out
}
