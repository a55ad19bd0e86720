package ledger

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// accountShape says how an account kind is stored.
type accountShape struct {
	constrained bool // may never go below zero available
	sharded     bool // several balance rows
}

var shapes = map[AccountKind]accountShape{
	KindWallet:          {constrained: true},
	KindEarnings:        {constrained: true, sharded: true},
	KindPlatformFees:    {constrained: true, sharded: true},
	KindProviderCosts:   {constrained: true, sharded: true},
	KindTreasury:        {constrained: false, sharded: true},
	KindPayoutsInFlight: {constrained: true},
}

// validAccount checks an account's kind and ref.
func validAccount(a Account) error {
	if _, ok := shapes[a.Kind]; !ok {
		return invalid("unknown account kind %q", a.Kind)
	}
	switch a.Kind {
	case KindWallet:
		return validAddress("wallet", a.Ref)
	case KindPlatformFees:
		if a.Ref != "" {
			return invalid("the platform fee account has no ref, got %q", a.Ref)
		}
		return nil
	default:
		return validRef(string(a.Kind)+" ref", a.Ref)
	}
}

// ensure creates the account and its balance rows unless they exist. Accounts are never
// deleted, so one that was seen once is remembered and costs nothing afterwards.
func (l *Ledger) ensure(ctx context.Context, a Account) error {
	if a.Kind == KindWallet {
		a.Ref = normalizeAddress(a.Ref)
	}
	if _, ok := l.known.Load(a); ok {
		return nil
	}
	if err := validAccount(a); err != nil {
		return err
	}
	shape := shapes[a.Kind]
	shards := 1
	if shape.sharded {
		shards = l.opts.Shards
	}
	err := l.runTx(ctx, "ensure account", func(ctx context.Context, t *txn) error {
		created := false
		err := t.query(ctx,
			`INSERT INTO ledger_accounts (kind, ref, constrained, shards) VALUES ($1, $2, $3, $4)
			 ON CONFLICT (kind, ref) DO NOTHING RETURNING shards`,
			[]any{string(a.Kind), a.Ref, shape.constrained, shards},
			func(pgx.Rows) error { created = true; return nil })
		if err != nil || !created {
			return err
		}
		// Created in this transaction, so its rows cannot exist yet.
		return t.final(ctx,
			`INSERT INTO ledger_balances (kind, ref, shard, constrained)
			 SELECT $1, $2, s, $3 FROM generate_series(0, $4::INT - 1) AS s`,
			[]any{string(a.Kind), a.Ref, shape.constrained, shards}, nil)
	}, func(ctx context.Context) (bool, error) {
		ok, err := l.accountExists(ctx, a)
		return ok, err
	})
	if err != nil {
		return mapConstraint(err)
	}
	l.known.Store(a, struct{}{})
	return nil
}

func (l *Ledger) accountExists(ctx context.Context, a Account) (bool, error) {
	var n int
	err := l.queryRow(ctx, `SELECT count(*) FROM ledger_accounts WHERE kind = $1 AND ref = $2`,
		string(a.Kind), a.Ref).Scan(&n)
	return n > 0, err
}

// unknownAccount returns ErrUnknownAccount if a does not exist.
func (l *Ledger) unknownAccount(ctx context.Context, a Account) error {
	ok, err := l.accountExists(ctx, a)
	if err != nil {
		return err
	}
	if !ok {
		return unknown(a)
	}
	return nil
}

func unknown(a Account) error {
	if a.Ref == "" {
		return wrapf(ErrUnknownAccount, "%s", a.Kind)
	}
	return wrapf(ErrUnknownAccount, "%s %s", a.Kind, a.Ref)
}
