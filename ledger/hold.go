package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// holdSQL reserves money with one conditional write on the wallet row: under READ COMMITTED the
// WHERE clause is evaluated again on the newest row version after a lock wait, so two holds can
// never both take the same money. The hold row is written only if the reservation was.
const holdSQL = `WITH w AS (
	UPDATE ledger_balances SET held = held + $3
	WHERE kind = 'wallet' AND ref = $2 AND shard = 0 AND posted - held >= $3
	RETURNING ref
), h AS (
	INSERT INTO ledger_holds (idempotency_key, request_hash, wallet, paywall, amount, status, expires_at, metadata)
	SELECT $1, $4, w.ref, $5, $3, 'open', now() + $6::BIGINT * INTERVAL '1 microsecond', $7::JSONB FROM w
	RETURNING id, expires_at
)
SELECT id, expires_at FROM h`

func (l *Ledger) hold(ctx context.Context, r HoldRequest) (Hold, error) {
	wallet := normalizeAddress(r.Wallet)
	if err := errors.Join(validKey(r.Key), validAddress("wallet", wallet), validRef("paywall", r.Paywall),
		validAmount("hold amount", r.AmountMicro)); err != nil {
		return Hold{}, err
	}
	if r.TTL <= 0 || r.TTL > maxTTL {
		return Hold{}, invalid("hold TTL must be positive and at most %s, got %s", maxTTL, r.TTL)
	}
	// Captures credit the paywall's earnings: have the account before the first capture.
	if err := l.ensure(ctx, Earnings(r.Paywall)); err != nil {
		return Hold{}, err
	}
	hash := holdHash(wallet, r)
	if l.holds != nil {
		meta, err := metadataJSON(r.Metadata)
		if err != nil {
			return Hold{}, invalid("hold metadata: %v", err)
		}
		h, answered, err := l.holds.do(ctx,
			holdCall{r: r, wallet: wallet, hash: hash, meta: meta},
			[]string{"k:" + r.Key}, []string{"w:" + wallet})
		if !answered {
			h, err = l.holdAlone(ctx, r, wallet, hash)
		}
		if err == nil {
			l.holdWallets.put(h.ID, wallet)
		}
		return h, err
	}
	return l.holdAlone(ctx, r, wallet, hash)
}

// holdAlone makes a hold in a transaction of its own, and finds out why when it cannot.
func (l *Ledger) holdAlone(ctx context.Context, r HoldRequest, wallet string, hash []byte) (Hold, error) {
	out := Hold{Wallet: wallet, Paywall: r.Paywall, AmountMicro: r.AmountMicro, Status: HoldOpen}
	applied := false
	err := l.runTx(ctx, "hold", func(ctx context.Context, t *txn) error {
		applied = false
		return t.final(ctx, holdSQL,
			[]any{r.Key, wallet, r.AmountMicro, hash, r.Paywall, r.TTL.Microseconds(), metadataArg(r.Metadata)},
			func(rows pgx.Rows) error {
				applied = true
				return rows.Scan(&out.ID, &out.ExpiresAt)
			})
	}, func(ctx context.Context) (bool, error) {
		if err := l.probe(ctx, probeHoldSQL, r.Key); err != nil {
			return false, err
		}
		h, found, err := l.holdBy(ctx, "idempotency_key", r.Key)
		if err != nil || !found {
			return false, err
		}
		applied = true
		out = h.Hold
		if !bytes.Equal(h.hash, hash) {
			return true, wrapf(ErrIdempotencyConflict, "key %q", r.Key)
		}
		return true, nil
	})
	if err = mapConstraint(err); err != nil && !errors.Is(err, errKeyExists) {
		return Hold{}, err
	}
	if err == nil && applied {
		return out, nil
	}
	// Nothing written: a replay, or the wallet could not cover the hold, or it does not exist.
	h, found, lerr := l.holdBy(ctx, "idempotency_key", r.Key)
	switch {
	case lerr != nil:
		return Hold{}, lerr
	case found && !bytes.Equal(h.hash, hash):
		return Hold{}, wrapf(ErrIdempotencyConflict, "key %q", r.Key)
	case found:
		return h.Hold, nil
	case err != nil:
		return Hold{}, fmt.Errorf("ledger: hold key %q reported taken but not found: %w", r.Key, err)
	}
	if err := l.unknownAccount(ctx, Wallet(wallet)); err != nil {
		return Hold{}, err
	}
	return Hold{}, wrapf(ErrInsufficientFunds, "wallet %s cannot hold %d micro-USDC", wallet, r.AmountMicro)
}

// shardStart spreads picks over the shards of an account.
func (l *Ledger) shardStart(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(l.opts.Shards)) //nolint:gosec // Shards is a small positive count (New)
}

// captureGate marks the hold captured, only if it is open, unexpired by the database's clock,
// and (cond) as the path expects.
const captureGate = `UPDATE ledger_holds SET status = 'captured', finished_at = now(), charged_micro = $1, shortfall_micro = $2
	WHERE id = $3 AND status = 'open' AND expires_at > now() AND %s RETURNING id, wallet, paywall, amount`

// capturePosting is the capture of holdID for split (after any shortfall), charging charged.
// cond is a condition on the hold row (the fast path requires the hold to cover the charge).
func (l *Ledger) capturePosting(r CaptureRequest, hash []byte, split Split, charged, shortfall int64,
	cond string, condArg int64, blocking bool) *posting {
	gate := fmt.Sprintf(captureGate, cond)
	meta := captureMetadata(r)
	p := &posting{
		kind: KindCapture, key: r.Key, hash: hash, metadata: meta,
		gate: gate, gateArgs: []any{charged, shortfall, r.HoldID, condArg}, holdSQL: "g.id", extra: ", g.wallet, g.paywall, g.amount",
		start: l.shardStart(r.HoldID), blocking: blocking || l.opts.ShardPick == PickHashed,
	}
	p.legs = append(p.legs, leg{acct: Account{Kind: KindWallet}, refSQL: "(SELECT wallet FROM g)", posted: -charged, heldSQL: "-(SELECT amount FROM g)"})
	if split.ProviderMicro > 0 {
		p.legs = append(p.legs, leg{acct: ProviderCosts(split.Provider), pick: true, posted: split.ProviderMicro})
	}
	if split.FeeMicro > 0 {
		p.legs = append(p.legs, leg{acct: PlatformFees(), pick: true, posted: split.FeeMicro})
	}
	if split.DeveloperMicro > 0 {
		p.legs = append(p.legs, leg{acct: Account{Kind: KindEarnings}, refSQL: "(SELECT paywall FROM g)", pick: true, posted: split.DeveloperMicro})
	}
	return p
}

func cloneWith(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for mk, mv := range m {
		out[mk] = mv
	}
	out[k] = v
	return out
}

func (l *Ledger) capture(ctx context.Context, r CaptureRequest) (CaptureResult, error) {
	if err := validKey(r.Key); err != nil {
		return CaptureResult{}, err
	}
	if err := r.Split.validate(); err != nil {
		return CaptureResult{}, err
	}
	if !ValidUUID(r.HoldID) {
		return CaptureResult{}, wrapf(ErrHoldNotFound, "hold %q", r.HoldID)
	}
	if r.Split.ProviderMicro > 0 {
		if err := l.ensure(ctx, ProviderCosts(r.Split.Provider)); err != nil {
			return CaptureResult{}, err
		}
	}
	if err := l.ensure(ctx, PlatformFees()); err != nil {
		return CaptureResult{}, err
	}
	hash := captureHash(r)
	if l.captures != nil {
		meta := captureMetadata(r)
		metaJSON, err := metadataJSON(meta)
		if err != nil {
			return CaptureResult{}, invalid("capture metadata: %v", err)
		}
		var group []string
		if w, ok := l.holdWallets.get(r.HoldID); ok {
			group = []string{"w:" + w}
		}
		res, answered, err := l.captures.do(ctx, captureCall{r: r, hash: hash, meta: meta, metaJSON: metaJSON},
			[]string{"k:" + r.Key, "h:" + strings.ToLower(r.HoldID)}, group)
		if !answered {
			res, err = l.captureAlone(ctx, r, hash)
		}
		if err == nil {
			l.holdWallets.drop(r.HoldID)
		}
		return res, err
	}
	return l.captureAlone(ctx, r, hash)
}

// captureMetadata is what a capture's transfer records as metadata.
func captureMetadata(r CaptureRequest) map[string]string {
	if r.Estimated {
		return cloneWith(r.Metadata, "estimated", "true")
	}
	return r.Metadata
}

// captureAlone captures a hold in a transaction of its own, and finds out why when it cannot.
func (l *Ledger) captureAlone(ctx context.Context, r CaptureRequest, hash []byte) (CaptureResult, error) {
	charge := r.Split.TotalMicro()
	blocking := false
	for try := 0; ; try++ {
		var res CaptureResult
		applied := false
		p := l.capturePosting(r, hash, r.Split, charge, 0, "amount >= $4", charge, blocking)
		err := l.runTx(ctx, "capture", func(ctx context.Context, t *txn) error {
			var holdAmount int64
			var wallet, paywall string
			out, err := p.run(ctx, t, &wallet, &paywall, &holdAmount)
			if err != nil || !out.ok {
				return err
			}
			applied = true
			res = CaptureResult{
				Transfer:      Transfer{ID: out.id, Kind: KindCapture, IdempotencyKey: r.Key, Entries: out.entries, CreatedAt: out.created, Metadata: p.metadata},
				ChargedMicro:  charge,
				ReleasedMicro: holdAmount - charge,
			}
			return nil
		}, l.resolveTransfer(r.Key, func(ctx context.Context, st storedTransfer) error {
			var err error
			res, err = l.captureReplay(ctx, st, hash)
			applied = err == nil
			return err
		}))
		err = mapConstraint(err)
		if err == nil && applied {
			return res, nil
		}
		if err != nil && !errors.Is(err, errKeyExists) && !errors.Is(err, errIncomplete) {
			return CaptureResult{}, err
		}
		// Nothing written. Find out why.
		st, found, lerr := l.replayTransfer(ctx, r.Key, hash)
		if lerr != nil {
			return CaptureResult{}, lerr
		}
		if found {
			return l.captureReplay(ctx, st, hash)
		}
		h, found, lerr := l.holdBy(ctx, "id", r.HoldID)
		switch {
		case lerr != nil:
			return CaptureResult{}, lerr
		case !found:
			return CaptureResult{}, wrapf(ErrHoldNotFound, "hold %s", r.HoldID)
		case h.Status == HoldExpired:
			return CaptureResult{}, wrapf(ErrHoldExpired, "hold %s expired at %s", r.HoldID, h.ExpiresAt)
		case h.status != HoldOpen:
			return CaptureResult{}, wrapf(ErrHoldFinished, "hold %s is %s", r.HoldID, h.status)
		case errors.Is(err, errIncomplete):
			// Every shard of a shared account was locked (or the earnings account is new):
			// make sure the accounts exist and wait for a shard this time.
			if err := l.ensure(ctx, Earnings(h.Paywall)); err != nil {
				return CaptureResult{}, err
			}
			blocking = true
		case h.AmountMicro < charge:
			return l.captureOverrun(ctx, r, hash)
		}
		if try >= 3 {
			return CaptureResult{}, fmt.Errorf("%w: capture of hold %s kept racing", ErrUnavailable, r.HoldID)
		}
	}
}

// captureOverrun captures a hold whose charge exceeds it: the wallet and the hold are locked,
// the overrun is debited only as far as the wallet's available balance allows, and the rest is
// recorded as the shortfall.
//
// It holds the wallet's row while it credits the shared accounts, so it must never wait for one
// of their shards (an operation waiting for shards never holds a wallet): its picks skip locked
// shards, and when every shard of an account is busy the whole transaction is tried again.
func (l *Ledger) captureOverrun(ctx context.Context, r CaptureRequest, hash []byte) (CaptureResult, error) {
	for try := 1; ; try++ {
		res, err := l.captureOverrunOnce(ctx, r, hash)
		if !errors.Is(err, errIncomplete) || try > l.opts.MaxRetries {
			return res, err
		}
		if err := l.backoff(ctx, try); err != nil {
			return CaptureResult{}, fmt.Errorf("ledger: capture not applied: %w", err)
		}
	}
}

func (l *Ledger) captureOverrunOnce(ctx context.Context, r CaptureRequest, hash []byte) (CaptureResult, error) {
	charge := r.Split.TotalMicro()
	var res CaptureResult
	err := l.runTx(ctx, "capture", func(ctx context.Context, t *txn) error {
		if err := keyFree(ctx, t, r.Key); err != nil {
			return err
		}
		var (
			wallet, paywall, status string
			amount                  int64
			live                    bool
			found                   bool
		)
		err := t.query(ctx, `SELECT wallet, paywall, amount, status, expires_at > now() FROM ledger_holds WHERE id = $1 FOR UPDATE`,
			[]any{r.HoldID}, func(rows pgx.Rows) error {
				found = true
				return rows.Scan(&wallet, &paywall, &amount, &status, &live)
			})
		switch {
		case err != nil:
			return err
		case !found:
			return wrapf(ErrHoldNotFound, "hold %s", r.HoldID)
		case status == string(HoldExpired) || (status == string(HoldOpen) && !live):
			return wrapf(ErrHoldExpired, "hold %s", r.HoldID)
		case status != string(HoldOpen):
			return wrapf(ErrHoldFinished, "hold %s is %s", r.HoldID, status)
		}
		var available int64
		err = t.query(ctx, `SELECT posted - held FROM ledger_balances WHERE kind = 'wallet' AND ref = $1 AND shard = 0 FOR UPDATE`,
			[]any{wallet}, func(rows pgx.Rows) error { return rows.Scan(&available) })
		if err != nil {
			return err
		}
		fromHold := min(charge, amount)
		extra := min(charge-fromHold, max(available, 0))
		charged := fromHold + extra
		shortfall := charge - charged
		split := r.Split.withShortfall(shortfall)
		p := l.capturePosting(r, hash, split, charged, shortfall, "amount = $4", amount, false)
		p.blocking = false // never wait for a shard while holding the wallet
		out, err := p.run(ctx, t, new(string), new(string), new(int64))
		if err != nil {
			return err
		}
		if !out.ok {
			return fmt.Errorf("%w: locked hold %s did not capture", errBroken, r.HoldID)
		}
		res = CaptureResult{
			Transfer:       Transfer{ID: out.id, Kind: KindCapture, IdempotencyKey: r.Key, Entries: out.entries, CreatedAt: out.created, Metadata: p.metadata},
			ChargedMicro:   charged,
			ReleasedMicro:  amount - fromHold,
			ShortfallMicro: shortfall,
		}
		return nil
	}, l.resolveTransfer(r.Key, func(ctx context.Context, st storedTransfer) error {
		var err error
		res, err = l.captureReplay(ctx, st, hash)
		return err
	}))
	err = mapConstraint(err)
	if errors.Is(err, errKeyExists) {
		st, found, lerr := l.replayTransfer(ctx, r.Key, hash)
		if lerr != nil || !found {
			return CaptureResult{}, errors.Join(err, lerr)
		}
		return l.captureReplay(ctx, st, hash)
	}
	return res, err
}

// keyFree returns errKeyExists if a transfer has key (as far as this transaction can see).
func keyFree(ctx context.Context, t *txn, key string) error {
	taken := false
	err := t.query(ctx, `SELECT 1 FROM ledger_transfers WHERE idempotency_key = $1`, []any{key},
		func(pgx.Rows) error { taken = true; return nil })
	if err == nil && taken {
		return errKeyExists
	}
	return err
}

// captureReplay rebuilds a capture's result from what was stored.
func (l *Ledger) captureReplay(ctx context.Context, st storedTransfer, hash []byte) (CaptureResult, error) {
	if !bytes.Equal(st.hash, hash) || st.Kind != KindCapture || st.holdID == nil {
		return CaptureResult{}, wrapf(ErrIdempotencyConflict, "key %q", st.IdempotencyKey)
	}
	h, found, err := l.holdBy(ctx, "id", *st.holdID)
	if err != nil {
		return CaptureResult{}, err
	}
	if !found || h.charged == nil || h.shortfall == nil {
		return CaptureResult{}, fmt.Errorf("%w: capture %s has no captured hold", errBroken, st.ID)
	}
	charge := *h.charged + *h.shortfall
	return CaptureResult{
		Transfer:       st.Transfer,
		ChargedMicro:   *h.charged,
		ReleasedMicro:  h.AmountMicro - min(charge, h.AmountMicro),
		ShortfallMicro: *h.shortfall,
	}, nil
}

// voidSQL releases an open hold.
const voidSQL = `WITH h AS (
	UPDATE ledger_holds SET status = 'voided', finished_at = now()
	WHERE id = $1 AND status = 'open'
	RETURNING id, wallet, paywall, amount, expires_at
), w AS (
	UPDATE ledger_balances AS b SET held = b.held - h.amount FROM h
	WHERE b.kind = 'wallet' AND b.ref = h.wallet AND b.shard = 0
	RETURNING b.ref
)
SELECT h.id, h.wallet, h.paywall, h.amount, h.expires_at FROM h, w`

func (l *Ledger) void(ctx context.Context, holdID string) (Hold, error) {
	if !ValidUUID(holdID) {
		return Hold{}, wrapf(ErrHoldNotFound, "hold %q", holdID)
	}
	for try := 0; ; try++ {
		var out Hold
		applied := false
		err := l.runTx(ctx, "void", func(ctx context.Context, t *txn) error {
			applied = false
			return t.final(ctx, voidSQL, []any{holdID}, func(rows pgx.Rows) error {
				applied = true
				out.Status = HoldVoided
				return rows.Scan(&out.ID, &out.Wallet, &out.Paywall, &out.AmountMicro, &out.ExpiresAt)
			})
		}, func(ctx context.Context) (bool, error) {
			// The row lock waits for a void that may still be committing.
			var status string
			err := l.queryRow(ctx, `SELECT status FROM ledger_holds WHERE id = $1 FOR UPDATE`, holdID).Scan(&status)
			return err == nil && status == string(HoldVoided), err
		})
		if err != nil {
			return Hold{}, mapConstraint(err)
		}
		if applied {
			return out, nil
		}
		h, found, err := l.holdBy(ctx, "id", holdID)
		switch {
		case err != nil:
			return Hold{}, err
		case !found:
			return Hold{}, wrapf(ErrHoldNotFound, "hold %s", holdID)
		case h.status == HoldVoided:
			return h.Hold, nil
		case h.status == HoldExpired:
			return Hold{}, wrapf(ErrHoldExpired, "hold %s was released by the sweeper", holdID)
		case h.status == HoldCaptured:
			return Hold{}, wrapf(ErrHoldFinished, "hold %s is captured", holdID)
		}
		if try >= 3 {
			return Hold{}, fmt.Errorf("%w: void of hold %s kept racing", ErrUnavailable, holdID)
		}
	}
}

// sweepSQL marks up to $1 expired open holds (by the database's clock) as expired, skipping any
// that another replica or a capture has locked, and sums the release per wallet.
const sweepSQL = `WITH x AS (
	SELECT id FROM ledger_holds WHERE finished_at IS NULL AND status = 'open' AND expires_at <= now()
	ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
), h AS (
	UPDATE ledger_holds AS hh SET status = 'expired', finished_at = now() FROM x
	WHERE hh.id = x.id RETURNING hh.wallet, hh.amount
)
SELECT wallet, SUM(amount)::BIGINT, count(*) FROM h GROUP BY wallet ORDER BY wallet`

func (l *Ledger) sweep(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = 1000
	}
	released := 0
	err := l.runTx(ctx, "sweep", func(ctx context.Context, t *txn) error {
		released = 0
		var wallets []string
		var amounts []int64
		err := t.query(ctx, sweepSQL, []any{limit}, func(rows pgx.Rows) error {
			var (
				w string
				a int64
				n int
			)
			if err := rows.Scan(&w, &a, &n); err != nil {
				return err
			}
			wallets = append(wallets, w)
			amounts = append(amounts, a)
			released += n
			return nil
		})
		if err != nil || len(wallets) == 0 {
			return err
		}
		// Lock the wallets in one order, so that sweepers in several replicas never deadlock.
		if !slices.IsSorted(wallets) {
			return fmt.Errorf("%w: sweep wallets out of order", errBroken)
		}
		err = t.query(ctx, `SELECT ref FROM ledger_balances WHERE kind = 'wallet' AND shard = 0 AND ref = ANY($1::TEXT[]) ORDER BY ref FOR UPDATE`,
			[]any{wallets}, nil)
		if err != nil {
			return err
		}
		updated := 0
		err = t.query(ctx, `UPDATE ledger_balances AS b SET held = b.held - v.amount
			FROM (SELECT unnest($1::TEXT[]) AS ref, unnest($2::BIGINT[]) AS amount) AS v
			WHERE b.kind = 'wallet' AND b.ref = v.ref AND b.shard = 0 RETURNING b.ref`,
			[]any{wallets, amounts}, func(pgx.Rows) error { updated++; return nil })
		if err != nil {
			return err
		}
		if updated != len(wallets) {
			return fmt.Errorf("%w: sweep released %d of %d wallets", errBroken, updated, len(wallets))
		}
		return nil
	}, nil)
	if err != nil {
		return 0, mapConstraint(err)
	}
	return released, nil
}
