package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// errDrained: shards chosen for a debit lost money between the read that chose them and the
// lock; the transaction is tried again, locking every shard of the accounts.
var errDrained = errors.New("ledger: chosen shards drained before they were locked")

// runTxDebiting is runTx for a body that debits sharded accounts through debitLegs, passing it
// all: false at first, and true for one more run when the shards it chose were drained
// (errDrained) before it locked them.
func (l *Ledger) runTxDebiting(ctx context.Context, op string, body func(ctx context.Context, t *txn, all bool) error, resolve resolver) error {
	err := l.runTx(ctx, op, func(ctx context.Context, t *txn) error { return body(ctx, t, false) }, resolve)
	if errors.Is(err, errDrained) {
		err = l.runTx(ctx, op, func(ctx context.Context, t *txn) error { return body(ctx, t, true) }, resolve)
	}
	return err
}

// shardRow is one balance row of a sharded account.
type shardRow struct {
	acct   Account
	shard  int
	posted int64
}

// debitLegs takes need (> 0) from each account in needs, out of the account's shards, and locks
// the shards it takes from. It locks only the shards it needs (largest first, chosen from a fresh
// read) so that the other shards stay free for captures crediting the account; with all, it
// locks every shard, which cannot be drained under it. Locks are taken in (kind, ref, shard)
// order, after the caller's wallet and before anything else (see posting.build).
func debitLegs(ctx context.Context, t *txn, needs []Entry, all bool) ([]leg, error) {
	var where []string
	var args []any
	for _, n := range needs {
		args = append(args, string(n.Account.Kind), n.Account.Ref)
		where = append(where, fmt.Sprintf("(kind = $%d AND ref = $%d)", len(args)-1, len(args)))
	}
	cond := strings.Join(where, " OR ")
	scan := func(out *[]shardRow) func(pgx.Rows) error {
		return func(r pgx.Rows) error {
			var s shardRow
			if err := r.Scan(&s.acct.Kind, &s.acct.Ref, &s.shard, &s.posted); err != nil {
				return err
			}
			*out = append(*out, s)
			return nil
		}
	}
	lockSQL := `SELECT kind, ref, shard, posted FROM ledger_balances WHERE (` + cond + `) ORDER BY kind, ref, shard FOR UPDATE`
	lockArgs := args
	if !all {
		var seen []shardRow
		if err := t.query(ctx, `SELECT kind, ref, shard, posted FROM ledger_balances WHERE (`+cond+`) AND posted > 0`, args, scan(&seen)); err != nil {
			return nil, err
		}
		chosen, err := takeLargest(needs, seen)
		if err != nil {
			return nil, err
		}
		var pairs []string
		lockArgs = nil
		for _, s := range chosen {
			lockArgs = append(lockArgs, string(s.acct.Kind), s.acct.Ref, s.shard)
			n := len(lockArgs)
			pairs = append(pairs, fmt.Sprintf("(kind = $%d AND ref = $%d AND shard = $%d)", n-2, n-1, n))
		}
		lockSQL = `SELECT kind, ref, shard, posted FROM ledger_balances WHERE ` + strings.Join(pairs, " OR ") +
			` ORDER BY kind, ref, shard FOR UPDATE`
	}
	var locked []shardRow
	if err := t.query(ctx, lockSQL, lockArgs, scan(&locked)); err != nil {
		return nil, err
	}
	taken, err := takeLargest(needs, locked)
	if errors.Is(err, ErrInsufficientFunds) && !all {
		return nil, errDrained
	}
	if err != nil {
		return nil, err
	}
	var legs []leg
	for _, s := range taken {
		legs = append(legs, leg{acct: s.acct, shard: s.shard, posted: -s.posted})
	}
	return legs, nil
}

// takeLargest covers each need from the account's rows, largest first. The rows it returns
// carry the amount taken (in posted), in (kind, ref, shard) order.
func takeLargest(needs []Entry, rows []shardRow) ([]shardRow, error) {
	var out []shardRow
	for _, n := range needs {
		var mine []shardRow
		for _, s := range rows {
			if s.acct == n.Account && s.posted > 0 {
				mine = append(mine, s)
			}
		}
		slices.SortStableFunc(mine, func(a, b shardRow) int { return cmp.Compare(b.posted, a.posted) })
		need := n.AmountMicro
		for _, s := range mine {
			if need == 0 {
				break
			}
			take := min(need, s.posted)
			out = append(out, shardRow{acct: s.acct, shard: s.shard, posted: take})
			need -= take
		}
		if need > 0 {
			return nil, wrapf(ErrInsufficientFunds, "%s %s lacks %d micro-USDC", n.Account.Kind, n.Account.Ref, need)
		}
	}
	slices.SortFunc(out, func(a, b shardRow) int {
		return cmp.Or(cmp.Compare(a.acct.Kind, b.acct.Kind), cmp.Compare(a.acct.Ref, b.acct.Ref), cmp.Compare(a.shard, b.shard))
	})
	return out, nil
}
