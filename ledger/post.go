package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A posting is one transfer written by one SQL statement: an optional gate (the state change the
// transfer belongs to, such as a hold becoming captured), the balance rows it changes, the
// transfer row and its entries. Everything hangs off the gate, so a gate that matches nothing
// writes nothing; and the transfer row's completeness check (legs_applied = legs_expected AND
// legs_sum = 0, computed from the rows really updated) makes a statement that could not change
// every row it meant to fail as a whole. Either way the statement is safe to commit: the
// transaction has no decision to make between the statement and its COMMIT.
type posting struct {
	kind     TransferKind
	key      string
	hash     []byte
	metadata map[string]string
	reverses string // id of the reversed transfer, or ""

	// gate is a data-modifying statement with RETURNING, available to the rest as g. Its
	// arguments are gateArgs, numbered $1… before any other.
	gate     string
	gateArgs []any
	// holdSQL and payoutSQL are expressions (over g) for the transfer's hold_id and payout_id.
	holdSQL, payoutSQL string
	// extra is a select list (", g.x, g.y") returned after the entries.
	extra string

	legs []leg
	// start is the shard a pick tries first; spreading it spreads the rows.
	start int
	// blocking makes picks wait for a locked shard instead of skipping it.
	blocking bool
}

// leg is one balance row change.
type leg struct {
	acct Account
	// refSQL replaces acct.Ref when the ref is known only inside the statement (from g):
	// a scalar subquery such as "(SELECT wallet FROM g)".
	refSQL string
	// shard is the row, unless pick.
	shard int
	// pick credits whichever shard of the account is free (FOR UPDATE SKIP LOCKED): shared
	// accounts are credited without waiting on another transaction's row.
	pick   bool
	posted int64
	// heldSQL is an expression added to held ("" adds nothing).
	heldSQL string
}

// params numbers a statement's arguments.
type params struct{ args []any }

func (p *params) add(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}

// build returns the statement and its arguments.
func (p *posting) build() (string, []any) {
	a := params{args: append([]any(nil), p.gateArgs...)}
	var b strings.Builder
	b.WriteString("WITH ")
	gated := ""
	from := ""
	if p.gate != "" {
		fmt.Fprintf(&b, "g AS (%s),\n", p.gate)
		gated = " AND EXISTS (SELECT 1 FROM g)"
		from = " FROM g"
	}
	// The wallet (the one row that may be contended) is locked before any shard is picked, so
	// that a transaction queueing for a busy wallet never sits on shards of the shared accounts.
	// Lock order everywhere: hold or payout row, wallet, shared-account shards by (kind, ref,
	// shard), in-flight row.
	var walletRefs []string
	for _, lg := range p.legs {
		if lg.acct.Kind == KindWallet && !lg.pick {
			ref := lg.refSQL
			if ref == "" {
				ref = a.add(lg.acct.Ref) + "::TEXT"
			}
			walletRefs = append(walletRefs, ref)
		}
	}
	if len(walletRefs) > 0 {
		// = ANY (ARRAY[…]), not IN (…): a ref that is a subquery over g would make IN a semi-join,
		// which the planner runs as a scan of every wallet row (each capture then read them all).
		fmt.Fprintf(&b, "w AS MATERIALIZED (SELECT ref FROM ledger_balances WHERE kind = 'wallet' AND shard = 0 AND ref = ANY (ARRAY[%s])%s ORDER BY ref FOR UPDATE),\n",
			strings.Join(walletRefs, ", "), gated)
		gated += " AND EXISTS (SELECT 1 FROM w)"
	}
	lock := "FOR UPDATE SKIP LOCKED"
	if p.blocking {
		lock = "FOR UPDATE"
	}
	// Picks are evaluated in (kind, ref) order: an operation that has to wait for a shard then
	// waits in the same order as Reverse and RequestPayout lock theirs, so they cannot deadlock.
	order := make([]int, len(p.legs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		a, b := p.legs[x], p.legs[y]
		if c := cmp.Compare(a.acct.Kind, b.acct.Kind); c != 0 {
			return c
		}
		return cmp.Compare(a.acct.Ref, b.acct.Ref)
	})
	var rows []string
	for _, i := range order {
		lg := p.legs[i]
		ref := lg.refSQL
		if ref == "" {
			ref = a.add(lg.acct.Ref) + "::TEXT"
		}
		held := "0::BIGINT"
		if lg.heldSQL != "" {
			held = "(" + lg.heldSQL + ")::BIGINT"
		}
		if lg.pick && p.blocking {
			// Wait for the first shard from start on (wrapping around).
			fmt.Fprintf(&b, "p%d AS MATERIALIZED (SELECT kind, ref, shard FROM ledger_balances WHERE kind = %s AND ref = %s%s ORDER BY (shard >= %s::INT) DESC, shard LIMIT 1 %s),\n",
				i, a.add(string(lg.acct.Kind)), ref, gated, a.add(p.start), lock)
		} else if lg.pick {
			// The first free shard from start on, then from 0: two index walks that stop at the
			// first row they can lock (the second runs only if the first finds none).
			k, s := a.add(string(lg.acct.Kind)), a.add(p.start)
			fmt.Fprintf(&b, `p%d AS MATERIALIZED (SELECT * FROM (SELECT kind, ref, shard FROM ledger_balances WHERE kind = %s AND ref = %s AND shard >= %s::INT%s ORDER BY shard LIMIT 1 %s) AS hi
  UNION ALL SELECT * FROM (SELECT kind, ref, shard FROM ledger_balances WHERE kind = %s AND ref = %s AND shard < %s::INT%s ORDER BY shard LIMIT 1 %s) AS lo LIMIT 1),
`, i, k, ref, s, gated, lock, k, ref, s, gated, lock)
			rows = append(rows, fmt.Sprintf("SELECT kind, ref, shard, %d, %s::BIGINT, %s FROM p%d", i, a.add(lg.posted), held, i))
			continue
		}
		rows = append(rows, fmt.Sprintf("SELECT %s::TEXT, %s, %s::INT, %d, %s::BIGINT, %s%s",
			a.add(string(lg.acct.Kind)), ref, a.add(lg.shard), i, a.add(lg.posted), held, from))
	}
	if len(rows) == 0 {
		rows = append(rows, "SELECT ''::TEXT, ''::TEXT, 0::INT, 0, 0::BIGINT, 0::BIGINT WHERE false")
	}
	fmt.Fprintf(&b, "v (kind, ref, shard, leg, dp, dh) AS MATERIALIZED (%s),\n", strings.Join(rows, "\n  UNION ALL "))
	b.WriteString(`u AS (UPDATE ledger_balances AS b SET posted = b.posted + v.dp, held = b.held + v.dh FROM v
  WHERE b.kind = v.kind AND b.ref = v.ref AND b.shard = v.shard RETURNING v.kind, v.ref, v.shard, v.leg, v.dp),
`)
	hold, payout := "NULL::UUID", "NULL::UUID"
	if p.holdSQL != "" {
		hold = p.holdSQL
	}
	if p.payoutSQL != "" {
		payout = p.payoutSQL
	}
	var reverses any
	if p.reverses != "" {
		reverses = p.reverses
	}
	fmt.Fprintf(&b, `t AS (INSERT INTO ledger_transfers (kind, idempotency_key, request_hash, hold_id, payout_id, reverses, metadata, legs_expected, legs_applied, legs_sum)
  SELECT %s, %s, %s, %s, %s, %s::UUID, %s::JSONB, %s::INT, (SELECT count(*) FROM u), (SELECT COALESCE(SUM(dp), 0) FROM u)::BIGINT%s
  RETURNING id, created_at),
`, a.add(string(p.kind)), a.add(p.key), a.add(p.hash), hold, payout, a.add(reverses), a.add(metadataArg(p.metadata)), a.add(len(p.legs)), from)
	b.WriteString(`e AS (INSERT INTO ledger_entries (transfer_id, leg, kind, ref, shard, amount, created_at)
  SELECT t.id, u.leg, u.kind, u.ref, u.shard, u.dp, t.created_at FROM t, u WHERE u.dp <> 0 RETURNING leg, kind, ref, amount)
`)
	join := ""
	if p.gate != "" {
		join = " CROSS JOIN g"
	}
	fmt.Fprintf(&b, "SELECT t.id, t.created_at, e.leg, e.kind, e.ref, e.amount%s FROM t LEFT JOIN e ON true%s ORDER BY e.leg", p.extra, join)
	return b.String(), a.args
}

// posted is what a posting wrote.
type posted struct {
	ok      bool // the transfer was written (the gate matched)
	id      string
	created time.Time
	entries []Entry
}

// run executes the posting as the transaction's final statement (so it commits). extra receives
// the extra columns of the first row.
func (p *posting) run(ctx context.Context, t *txn, extra ...any) (posted, error) {
	sql, args := p.build()
	var out posted
	err := t.final(ctx, sql, args, func(rows pgx.Rows) error {
		var (
			leg    *int32
			kind   *string
			ref    *string
			amount *int64
		)
		dest := append([]any{&out.id, &out.created, &leg, &kind, &ref, &amount}, extra...)
		if out.ok {
			// Extra columns repeat on every row; read them once.
			dest = dest[:6]
			var skip []any
			for range extra {
				skip = append(skip, new(any))
			}
			dest = append(dest, skip...)
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		out.ok = true
		if leg != nil {
			out.entries = append(out.entries, Entry{Account: Account{AccountKind(*kind), *ref}, AmountMicro: *amount})
		}
		return nil
	})
	if err != nil {
		return posted{}, err
	}
	out.entries = mergeEntries(out.entries)
	return out, nil
}

// mergeEntries folds the shard legs of one account into one entry, keeping first-seen order.
func mergeEntries(in []Entry) []Entry {
	var out []Entry
	idx := map[Account]int{}
	for _, e := range in {
		if i, ok := idx[e.Account]; ok {
			out[i].AmountMicro += e.AmountMicro
			continue
		}
		idx[e.Account] = len(out)
		out = append(out, e)
	}
	return out
}

func metadataArg(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	return m
}
