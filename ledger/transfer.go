package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/jackc/pgx/v5"
)

func (l *Ledger) deposit(ctx context.Context, r DepositRequest) (Transfer, error) {
	wallet := normalizeAddress(r.Wallet)
	if err := errors.Join(validKey(r.Key), validRef("chain id", r.ChainID), validAddress("wallet", wallet),
		validAmount("deposit amount", r.AmountMicro)); err != nil {
		return Transfer{}, err
	}
	if err := errors.Join(l.ensure(ctx, Wallet(wallet)), l.ensure(ctx, Treasury(r.ChainID))); err != nil {
		return Transfer{}, err
	}
	p := &posting{
		kind: KindDeposit, key: r.Key, metadata: r.Metadata, start: l.shardStart(r.Key),
		hash: requestHash("deposit", r.ChainID, wallet, itoa(r.AmountMicro)),
		legs: []leg{
			{acct: Wallet(wallet), posted: r.AmountMicro},
			{acct: Treasury(r.ChainID), pick: true, posted: -r.AmountMicro},
		},
	}
	return l.postSimple(ctx, "deposit", p, Wallet(wallet))
}

func (l *Ledger) charge(ctx context.Context, r ChargeRequest) (Transfer, error) {
	wallet := normalizeAddress(r.Wallet)
	if err := errors.Join(validKey(r.Key), validAddress("wallet", wallet), validRef("paywall", r.Paywall),
		r.Split.validate()); err != nil {
		return Transfer{}, err
	}
	if r.Split.ProviderMicro != 0 {
		return Transfer{}, invalid("a manual charge owes the provider nothing; provider share must be 0, got %d", r.Split.ProviderMicro)
	}
	if err := validAmount("charge", r.Split.TotalMicro()); err != nil {
		return Transfer{}, err
	}
	if err := errors.Join(l.ensure(ctx, PlatformFees()), l.ensure(ctx, Earnings(r.Paywall))); err != nil {
		return Transfer{}, err
	}
	p := &posting{
		kind: KindCharge, key: r.Key, metadata: r.Metadata, start: l.shardStart(r.Key),
		hash: requestHash("charge", append([]string{wallet, r.Paywall}, splitFields(r.Split)...)...),
		legs: []leg{{acct: Wallet(wallet), posted: -r.Split.TotalMicro()}},
	}
	if r.Split.FeeMicro > 0 {
		p.legs = append(p.legs, leg{acct: PlatformFees(), pick: true, posted: r.Split.FeeMicro})
	}
	if r.Split.DeveloperMicro > 0 {
		p.legs = append(p.legs, leg{acct: Earnings(r.Paywall), pick: true, posted: r.Split.DeveloperMicro})
	}
	return l.postSimple(ctx, "charge", p, Wallet(wallet))
}

// postSimple runs an ungated posting as a one-statement transaction and sorts out a failure:
// a taken key is a replay or a conflict (checked before any other error, since a replay may
// meet a balance that has moved since), a missing wallet is ErrUnknownAccount, and a posting
// that found every shard of a shared account locked is tried once more, waiting for a shard.
func (l *Ledger) postSimple(ctx context.Context, op string, p *posting, wallet Account) (Transfer, error) {
	if l.opts.ShardPick == PickHashed {
		p.blocking = true
	}
	for try := 0; ; try++ {
		var tr Transfer
		applied := false
		err := l.runTx(ctx, op, func(ctx context.Context, t *txn) error {
			out, err := p.run(ctx, t)
			if err != nil || !out.ok {
				return err
			}
			applied = true
			tr = Transfer{ID: out.id, Kind: p.kind, IdempotencyKey: p.key, Entries: out.entries, CreatedAt: out.created, Metadata: p.metadata}
			return nil
		}, l.resolveTransfer(p.key, func(_ context.Context, st storedTransfer) error {
			if !bytes.Equal(st.hash, p.hash) {
				return wrapf(ErrIdempotencyConflict, "key %q", p.key)
			}
			tr, applied = st.Transfer, true
			return nil
		}))
		err = mapConstraint(err)
		if err == nil && applied {
			return tr, nil
		}
		if err == nil {
			return Transfer{}, fmt.Errorf("%w: %s wrote no transfer", errBroken, op)
		}
		if !errors.Is(err, errKeyExists) && !errors.Is(err, ErrInsufficientFunds) && !errors.Is(err, errIncomplete) {
			return Transfer{}, err
		}
		st, found, lerr := l.replayTransfer(ctx, p.key, p.hash)
		if lerr != nil {
			return Transfer{}, lerr
		}
		if found {
			return st.Transfer, nil
		}
		if !errors.Is(err, errIncomplete) {
			return Transfer{}, err
		}
		if err := l.unknownAccount(ctx, wallet); err != nil {
			return Transfer{}, err
		}
		if p.blocking {
			return Transfer{}, fmt.Errorf("%w: %s could not reach every balance row", errBroken, op)
		}
		p.blocking = true
	}
}

// reversible reports whether a transfer kind can be undone by Reverse. Payouts move with their
// payout's state (SettlePayout, FailPayout); reversals are final.
func reversible(k TransferKind) bool {
	return k == KindDeposit || k == KindCapture || k == KindCharge
}

func (l *Ledger) reverse(ctx context.Context, r ReverseRequest) (Transfer, error) {
	if err := validKey(r.Key); err != nil {
		return Transfer{}, err
	}
	if !ValidUUID(r.TransferID) {
		return Transfer{}, wrapf(ErrTransferNotFound, "transfer %q", r.TransferID)
	}
	hash := requestHash("reversal", strings.ToLower(r.TransferID))
	var meta map[string]string
	if len(r.Metadata) > 0 || r.Reason != "" {
		meta = make(map[string]string, len(r.Metadata)+1)
		maps.Copy(meta, r.Metadata)
		if r.Reason != "" {
			meta[MetaReason] = r.Reason
		}
	}
	var tr Transfer
	applied := false
	err := l.runTxDebiting(ctx, "reverse", func(ctx context.Context, t *txn, all bool) error {
		applied = false
		if err := keyFree(ctx, t, r.Key); err != nil {
			return err
		}
		var kind string
		found := false
		err := t.query(ctx, `SELECT kind FROM ledger_transfers WHERE id = $1`, []any{r.TransferID},
			func(rows pgx.Rows) error { found = true; return rows.Scan(&kind) })
		switch {
		case err != nil:
			return err
		case !found:
			return wrapf(ErrTransferNotFound, "transfer %s", r.TransferID)
		case !reversible(TransferKind(kind)):
			return wrapf(ErrNotReversible, "transfer %s is a %s", r.TransferID, kind)
		}
		reversed := false
		if err := t.query(ctx, `SELECT 1 FROM ledger_transfers WHERE reverses = $1`, []any{r.TransferID},
			func(pgx.Rows) error { reversed = true; return nil }); err != nil {
			return err
		}
		if reversed {
			return wrapf(ErrAlreadyReversed, "transfer %s", r.TransferID)
		}
		// The opposite of every account's change.
		var opposite []Entry
		err = t.query(ctx, `SELECT kind, ref, -SUM(amount)::BIGINT FROM ledger_entries WHERE transfer_id = $1
			GROUP BY kind, ref ORDER BY kind, ref`, []any{r.TransferID}, func(rows pgx.Rows) error {
			var e Entry
			if err := rows.Scan(&e.Account.Kind, &e.Account.Ref, &e.AmountMicro); err != nil {
				return err
			}
			opposite = append(opposite, e)
			return nil
		})
		if err != nil {
			return err
		}
		legs, err := l.reversalLegs(ctx, t, opposite, all)
		if err != nil {
			return err
		}
		p := &posting{kind: KindReversal, key: r.Key, hash: hash, metadata: meta, reverses: r.TransferID,
			legs: legs, start: l.shardStart(r.Key), blocking: l.opts.ShardPick == PickHashed}
		out, err := p.run(ctx, t)
		if err != nil {
			return err
		}
		applied = true
		tr = Transfer{ID: out.id, Kind: KindReversal, IdempotencyKey: r.Key, Entries: out.entries, CreatedAt: out.created,
			Metadata: meta, Reverses: strings.ToLower(r.TransferID)}
		return nil
	}, l.resolveTransfer(r.Key, func(_ context.Context, st storedTransfer) error {
		if !bytes.Equal(st.hash, hash) {
			return wrapf(ErrIdempotencyConflict, "key %q", r.Key)
		}
		tr, applied = st.Transfer, true
		return nil
	}))
	err = mapConstraint(err)
	if err == nil && applied {
		return tr, nil
	}
	if err == nil || errors.Is(err, errKeyExists) || errors.Is(err, ErrAlreadyReversed) || errors.Is(err, ErrInsufficientFunds) {
		st, found, lerr := l.replayTransfer(ctx, r.Key, hash)
		if lerr != nil {
			return Transfer{}, lerr
		}
		if found {
			return st.Transfer, nil
		}
	}
	if errors.Is(err, errIncomplete) {
		return Transfer{}, fmt.Errorf("%w: reversal could not reach every balance row (try again)", ErrUnavailable)
	}
	return Transfer{}, err
}

// reversalLegs turns the opposite entries into legs. Credits go to any shard (picked); a debit
// of a sharded constrained account must come from shards that hold the money (debitLegs). The
// wallet is locked first, then those shards: the lock order of posting.build.
func (l *Ledger) reversalLegs(ctx context.Context, t *txn, opposite []Entry, all bool) ([]leg, error) {
	var legs []leg
	var debit []Entry
	for _, e := range opposite {
		shape := shapes[e.Account.Kind]
		switch {
		case e.AmountMicro == 0:
		case !shape.sharded:
			legs = append(legs, leg{acct: e.Account, posted: e.AmountMicro})
		case e.AmountMicro > 0 || !shape.constrained:
			legs = append(legs, leg{acct: e.Account, pick: true, posted: e.AmountMicro})
		default:
			debit = append(debit, e)
		}
	}
	if len(debit) == 0 {
		return legs, nil
	}
	// Wallets before shards (see posting.build for the lock order).
	var wallets []string
	for _, lg := range legs {
		if lg.acct.Kind == KindWallet {
			wallets = append(wallets, lg.acct.Ref)
		}
	}
	if len(wallets) > 0 {
		if err := t.query(ctx, `SELECT ref FROM ledger_balances WHERE kind = 'wallet' AND shard = 0 AND ref = ANY($1::TEXT[]) ORDER BY ref FOR UPDATE`,
			[]any{wallets}, nil); err != nil {
			return nil, err
		}
	}
	var needs []Entry
	for _, e := range debit {
		needs = append(needs, Entry{Account: e.Account, AmountMicro: -e.AmountMicro})
	}
	debits, err := debitLegs(ctx, t, needs, all)
	if err != nil {
		return nil, err
	}
	return append(legs, debits...), nil
}
