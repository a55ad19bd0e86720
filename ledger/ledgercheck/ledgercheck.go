// Package ledgercheck is the ledger's invariant checker: every promise of the double-entry
// ledger (docs/ledger.md, "Invariants") as a query whose rows are violations, evaluated from one
// consistent snapshot. The ledger's bank test runs it during and after its run, and every test
// elsewhere that moves money (settlement, end to end) runs it at its end. It imports nothing
// from package ledger.
package ledgercheck

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// invariant is one query whose every row is a violation, described by the row's columns.
type invariant struct {
	name string
	sql  string
}

// invariants are the ledger's promises, checked from one consistent snapshot. They read the
// tables directly and share no code with package ledger, so a bug in the ledger cannot hide
// itself.
var invariants = []invariant{
	{"every transfer's entries sum to zero",
		`SELECT transfer_id, SUM(amount) FROM ledger_entries GROUP BY transfer_id HAVING SUM(amount) <> 0`},
	{"transfers are complete",
		`SELECT id, legs_expected, legs_applied, legs_sum FROM ledger_transfers WHERE legs_applied <> legs_expected OR legs_sum <> 0`},
	{"entries point at transfers",
		`SELECT e.transfer_id FROM ledger_entries e LEFT JOIN ledger_transfers t ON t.id = e.transfer_id WHERE t.id IS NULL`},
	{"total money is conserved (balances)",
		`SELECT SUM(posted) FROM ledger_balances HAVING SUM(posted) <> 0`},
	{"total money is conserved (entries)",
		`SELECT SUM(amount) FROM ledger_entries HAVING SUM(amount) <> 0`},
	{"no constrained balance is negative",
		`SELECT kind, ref, shard, posted, held FROM ledger_balances
		 WHERE held < 0 OR (constrained AND (posted < 0 OR posted - held < 0)) OR (kind <> 'wallet' AND held <> 0)`},
	{"materialized posted balances equal the sum of their entries",
		`SELECT COALESCE(b.kind, e.kind), COALESCE(b.ref, e.ref), COALESCE(b.shard, e.shard), b.posted, e.total
		 FROM ledger_balances b
		 FULL OUTER JOIN (SELECT kind, ref, shard, SUM(amount) AS total FROM ledger_entries GROUP BY kind, ref, shard) e
		   ON e.kind = b.kind AND e.ref = b.ref AND e.shard = b.shard
		 WHERE b.posted IS DISTINCT FROM COALESCE(e.total, 0) OR b.kind IS NULL`},
	{"materialized held balances equal the sum of open holds",
		`SELECT b.ref, b.held, h.total FROM ledger_balances b
		 LEFT JOIN (SELECT wallet, SUM(amount) AS total FROM ledger_holds WHERE status = 'open' GROUP BY wallet) h ON h.wallet = b.ref
		 WHERE b.kind = 'wallet' AND b.held <> COALESCE(h.total, 0)`},
	{"open holds belong to existing wallets",
		`SELECT h.id FROM ledger_holds h LEFT JOIN ledger_balances b ON b.kind = 'wallet' AND b.ref = h.wallet
		 WHERE h.status = 'open' AND b.ref IS NULL`},
	{"no transfer idempotency key is applied twice",
		`SELECT idempotency_key, count(*) FROM ledger_transfers GROUP BY idempotency_key HAVING count(*) > 1`},
	{"no hold idempotency key is applied twice",
		`SELECT idempotency_key, count(*) FROM ledger_holds GROUP BY idempotency_key HAVING count(*) > 1`},
	{"a transfer is reversed at most once",
		`SELECT reverses, count(*) FROM ledger_transfers WHERE reverses IS NOT NULL GROUP BY reverses HAVING count(*) > 1`},
	{"a reversal is the exact opposite of its original",
		`SELECT r.id FROM ledger_transfers r
		 WHERE r.reverses IS NOT NULL AND EXISTS (
		   SELECT kind, ref FROM ledger_entries WHERE transfer_id IN (r.id, r.reverses)
		   GROUP BY kind, ref HAVING SUM(amount) <> 0)`},
	{"a hold is captured by exactly one capture, and only a captured one",
		`SELECT h.id, h.status, count(t.id) FROM ledger_holds h LEFT JOIN ledger_transfers t ON t.hold_id = h.id
		 GROUP BY h.id, h.status
		 HAVING (h.status = 'captured') <> (count(t.id) = 1) OR count(t.id) > 1`},
	{"a capture debits the wallet what its hold records as charged",
		`SELECT h.id, h.charged_micro, -COALESCE(SUM(e.amount), 0) FROM ledger_holds h
		 JOIN ledger_transfers t ON t.hold_id = h.id
		 LEFT JOIN ledger_entries e ON e.transfer_id = t.id AND e.kind = 'wallet'
		 GROUP BY h.id, h.charged_micro HAVING h.charged_micro <> -COALESCE(SUM(e.amount), 0)`},
	{"a capture never posts more than its hold plus what the wallet could give",
		`SELECT h.id FROM ledger_holds h WHERE h.status = 'captured' AND (h.charged_micro < 0 OR h.shortfall_micro < 0
		   OR (h.shortfall_micro > 0 AND h.charged_micro < h.amount))`},
	{"money in flight equals the requested payouts",
		`SELECT COALESCE(b.ref, p.chain_id), b.total, p.total FROM
		 (SELECT ref, SUM(posted) AS total FROM ledger_balances WHERE kind = 'payouts_in_flight' GROUP BY ref) b
		 FULL OUTER JOIN (SELECT chain_id, SUM(amount) AS total FROM ledger_payouts WHERE status = 'requested' GROUP BY chain_id) p
		   ON p.chain_id = b.ref
		 WHERE COALESCE(b.total, 0) <> COALESCE(p.total, 0)`},
	{"a payout has one transfer per step it took",
		`SELECT p.id, p.status,
		   count(*) FILTER (WHERE t.kind = 'payout_request'), count(*) FILTER (WHERE t.kind = 'payout_settle'),
		   count(*) FILTER (WHERE t.kind = 'payout_fail')
		 FROM ledger_payouts p LEFT JOIN ledger_transfers t ON t.payout_id = p.id GROUP BY p.id, p.status
		 HAVING count(*) FILTER (WHERE t.kind = 'payout_request') <> 1
		   OR count(*) FILTER (WHERE t.kind = 'payout_settle') <> (CASE WHEN p.status = 'settled' THEN 1 ELSE 0 END)
		   OR count(*) FILTER (WHERE t.kind = 'payout_fail') <> (CASE WHEN p.status = 'failed' THEN 1 ELSE 0 END)`},
	{"every account has its balance rows",
		`SELECT a.kind, a.ref, a.shards, count(b.shard) FROM ledger_accounts a
		 LEFT JOIN ledger_balances b ON b.kind = a.kind AND b.ref = a.ref
		 GROUP BY a.kind, a.ref, a.shards HAVING count(b.shard) <> a.shards`},
}

// Count is how many invariants Check evaluates.
func Count() int { return len(invariants) }

// Check evaluates every invariant in one REPEATABLE READ READ ONLY transaction (one
// snapshot, so concurrent writers cannot make a consistent ledger look broken) and describes
// each violation found.
func Check(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a read-only snapshot: nothing to keep
	var out []string
	for _, inv := range invariants {
		rows, err := tx.Query(ctx, inv.sql)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", inv.name, err)
		}
		n := 0
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return nil, err
			}
			if n < 5 {
				out = append(out, fmt.Sprintf("%s: %v", inv.name, vals))
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", inv.name, err)
		}
		if n > 5 {
			out = append(out, fmt.Sprintf("%s: … and %d more", inv.name, n-5))
		}
	}
	return out, tx.Commit(ctx)
}
