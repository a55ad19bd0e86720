package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/pricing"
)

// Payouts. The ledger moved the developer's earnings to in-flight when the payout was
// requested; here the hot wallet pays it with its own EIP-3009 authorization whose nonce is
// keccak256(payout id), so however often the payout is resent, re-signed or relayed by others,
// the token moves its money at most once, and authorizationState(hot wallet, nonce) says
// whether it did. The ledger hears SettlePayout only when that use is final, and FailPayout
// (money back to earnings) only when no signed authorization can ever be used: never signed,
// or expired at a final block without having been used.

// payoutRow is a settlement_payouts row.
type payoutRow struct {
	id          string
	to          string
	amountMicro int64
	nonce       common.Hash
	status      string
	reason      string
	txID        string
	txHash      string
	validBefore int64
	firstBlock  int64
	attempts    int64
}

// Payout states in settlement_payouts.
const (
	payoutQueued     = "queued"
	payoutSending    = "sending"
	payoutConfirming = "confirming"
	payoutFailing    = "failing"
	payoutSettled    = "settled"
	payoutFailed     = "failed"
)

// payoutBatch bounds the payouts handled per tick.
const payoutBatch = 50

// syncPayoutsPage is how many requested payouts syncPayouts reads from the ledger at a time.
const syncPayoutsPage = 500

// syncPayouts copies the ledger's requested payouts for this chain into settlement_payouts,
// every one of them, a page at a time.
func (w *Worker) syncPayouts(ctx context.Context) error {
	var after ledger.Payout
	for {
		ps, err := w.ledger.RequestedPayouts(ctx, w.chain.ID, after, syncPayoutsPage)
		if err != nil {
			return fmt.Errorf("ledger payouts: %w", err)
		}
		if err := w.queuePayouts(ctx, ps); err != nil {
			return err
		}
		if len(ps) < syncPayoutsPage {
			return nil
		}
		after = ps[len(ps)-1]
	}
}

// queuePayouts adds a page of payouts to settlement_payouts in one statement; one already there
// is left as it is. Each row keeps the ledger's request time as its created_at, so that
// processPayouts takes them oldest first, as the ledger lists them.
func (w *Worker) queuePayouts(ctx context.Context, ps []ledger.Payout) error {
	if len(ps) == 0 {
		return nil
	}
	ids, tos, nonces := make([]string, len(ps)), make([]string, len(ps)), make([]string, len(ps))
	amounts, requested := make([]int64, len(ps)), make([]time.Time, len(ps))
	for i, p := range ps {
		ids[i], tos[i], nonces[i] = p.ID, p.To, lowerHash(NonceFor(p.ID))
		amounts[i], requested[i] = p.AmountMicro, p.CreatedAt
	}
	if _, err := w.pool.Exec(ctx, `
		INSERT INTO settlement_payouts (payout_id, chain_id, to_addr, amount_micro, nonce, status, next_attempt_at, created_at)
		SELECT id, $6, to_addr, amount_micro, nonce, 'queued', $7, requested_at
		FROM unnest($1::UUID[], $2::TEXT[], $3::INT8[], $4::TEXT[], $5::TIMESTAMPTZ[]) AS p(id, to_addr, amount_micro, nonce, requested_at)
		ON CONFLICT (payout_id) DO NOTHING`,
		ids, tos, amounts, nonces, requested, w.chain.ID, w.clock.Now()); err != nil {
		return fmt.Errorf("queue %d payouts: %w", len(ps), err)
	}
	return nil
}

// processPayouts moves every due payout one step.
func (w *Worker) processPayouts(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, `
		SELECT payout_id::TEXT, to_addr, amount_micro, nonce, status, reason, COALESCE(tx_id::TEXT, ''), tx_hash,
			valid_before, COALESCE(first_block, 0), attempts
		FROM settlement_payouts
		WHERE chain_id = $1 AND status IN ('queued', 'sending', 'confirming', 'failing') AND next_attempt_at <= $2
		ORDER BY created_at, payout_id LIMIT $3`, w.chain.ID, w.clock.Now(), payoutBatch)
	if err != nil {
		return fmt.Errorf("load payouts: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (payoutRow, error) {
		var p payoutRow
		var nonce string
		err := r.Scan(&p.id, &p.to, &p.amountMicro, &nonce, &p.status, &p.reason, &p.txID, &p.txHash,
			&p.validBefore, &p.firstBlock, &p.attempts)
		p.nonce = common.HexToHash(nonce)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("load payouts: %w", err)
	}
	var errs []error
	for _, p := range ps {
		var err error
		switch p.status {
		case payoutQueued:
			err = w.payQueued(ctx, p)
		case payoutSending:
			err = w.checkSending(ctx, p)
		case payoutConfirming:
			err = w.checkConfirming(ctx, p)
		case payoutFailing:
			err = w.checkFailing(ctx, p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("payout %s: %w", p.id, err))
		}
	}
	return errors.Join(errs...)
}

// payQueued preflights a payout, signs its authorization and sends it.
func (w *Worker) payQueued(ctx context.Context, p payoutRow) error {
	hot := w.signer.Address()
	tok := token{client: w.client, chain: w.chain}
	signed := p.validBefore > 0
	if signed {
		// An earlier authorization may have been used since (by us or by anyone).
		if done, err := w.findUse(ctx, p); err != nil || done {
			return err
		}
	}
	if !isAddress(p.to) || common.HexToAddress(p.to) == (common.Address{}) {
		return w.failPayout(ctx, p, "the payout address is not a valid 0x address")
	}
	to := common.HexToAddress(p.to)
	if !signed && p.amountMicro > w.cfg.MaxPayoutMicro {
		return w.failPayout(ctx, p, fmt.Sprintf("the amount exceeds the per-payout limit of %s USDC; request smaller payouts", pricing.FormatUSDC(w.cfg.MaxPayoutMicro)))
	}
	paused, err := tok.paused(ctx)
	if err != nil {
		return err
	}
	if paused {
		return w.deferPayout(ctx, p, "the token is paused; waiting")
	}
	black, err := tok.isBlacklisted(ctx, to)
	if err != nil {
		return err
	}
	if black {
		return w.failPayout(ctx, p, "the token blacklisted the payout address")
	}
	if black, err = tok.isBlacklisted(ctx, hot); err != nil {
		return err
	} else if black {
		w.logger.ErrorContext(ctx, "the token blacklisted the hot wallet: no payout can be made", "hot_wallet", hot.Hex())
		return w.deferPayout(ctx, p, "the hot wallet is blacklisted; waiting for an operator")
	}
	bal, err := tok.balanceOf(ctx, hot)
	if err != nil {
		return err
	}
	var inFlight, lastDay int64
	if err := w.pool.QueryRow(ctx, `
		SELECT COALESCE(SUM(amount_micro) FILTER (WHERE status IN ('sending', 'confirming')), 0),
			COALESCE(SUM(amount_micro) FILTER (WHERE first_signed_at > $3 AND status <> 'failed'), 0)
		FROM settlement_payouts WHERE chain_id = $1 AND payout_id <> $2`,
		w.chain.ID, p.id, w.clock.Now().Add(-24*time.Hour)).Scan(&inFlight, &lastDay); err != nil {
		return fmt.Errorf("payout sums: %w", err)
	}
	if bal.Cmp(big.NewInt(inFlight+p.amountMicro)) < 0 {
		w.logger.WarnContext(ctx, "hot wallet balance too low for the next payout", "balance", bal.String(),
			"in_flight_micro", inFlight, "payout_micro", p.amountMicro)
		return w.deferPayout(ctx, p, "the hot wallet's USDC balance is too low; waiting for a refill")
	}
	if !signed && lastDay+p.amountMicro > w.cfg.DailyPayoutMicro {
		return w.deferPayout(ctx, p, fmt.Sprintf("the daily payout limit of %s USDC is reached; waiting", pricing.FormatUSDC(w.cfg.DailyPayoutMicro)))
	}

	now := w.clock.Now()
	validBefore := now.Add(w.cfg.AuthorizationValidity).Unix()
	a := Authorization{
		From: hot, To: to, Value: big.NewInt(p.amountMicro),
		ValidAfter: unixSeconds(now.Add(-validAfterSlack)), ValidBefore: unixSeconds(now.Add(w.cfg.AuthorizationValidity)),
		Nonce: p.nonce,
	}
	head, err := w.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return fmt.Errorf("latest header: %w", err)
	}
	sa, err := signAuthorization(ctx, w.signer, w.chain, a)
	if err != nil {
		return err
	}
	// From here the signature exists: record its expiry before it leaves the process (even
	// eth_estimateGas shows it to the node), so that a failure waits for it to expire.
	if _, err := w.pool.Exec(ctx, `
		UPDATE settlement_payouts SET valid_before = GREATEST(valid_before, $2), first_block = COALESCE(first_block, $3), updated_at = now()
		WHERE payout_id = $1`, p.id, validBefore, head.Number.Int64()); err != nil {
		return fmt.Errorf("record authorization: %w", err)
	}
	p.validBefore = max(p.validBefore, validBefore)
	// The hot wallet is an EOA (signAuthorization checked its signature): the v,r,s form.
	data, _ := w.chain.transferCall(sa)
	gas, err := w.estimate(ctx, w.chain.Token, data)
	if err != nil {
		return w.payoutRefused(ctx, p, err)
	}
	_, err = w.send(ctx, purposePayout, p.id, w.chain.Token, data, gas, func(tx pgx.Tx, txID string, hash common.Hash) error {
		_, err := tx.Exec(ctx, `
			UPDATE settlement_payouts SET status = 'sending', tx_id = $2, tx_hash = $3, reason = '',
				first_signed_at = COALESCE(first_signed_at, $4), attempts = attempts + 1, updated_at = now()
			WHERE payout_id = $1 AND status = 'queued'`, p.id, txID, lowerHash(hash), now)
		return err
	})
	if err == nil {
		w.metrics.payout(payoutSent)
	}
	return err
}

// payoutRefused handles a payout transaction the node says would revert.
func (w *Worker) payoutRefused(ctx context.Context, p payoutRow, err error) error {
	reason := "the payout would revert: " + err.Error()
	switch classify(err) {
	case failTransport:
		return fmt.Errorf("preflight: %w", err)
	case failGas:
		w.logger.WarnContext(ctx, "the hot wallet cannot pay for gas", "hot_wallet", w.signer.Address().Hex(), "err", err)
		return w.deferPayout(ctx, p, "the hot wallet has too little native currency for gas; waiting for a refill")
	case failUsed:
		_, err := w.findUse(ctx, p)
		return err
	case failBlacklisted:
		return w.failPayout(ctx, p, "the token blacklisted the payout address or the hot wallet")
	case failPaused, failBalance:
		return w.deferPayout(ctx, p, reason)
	}
	if p.attempts+1 >= int64(w.cfg.MaxAttempts) {
		return w.failPayout(ctx, p, reason)
	}
	_, err = w.pool.Exec(ctx, `UPDATE settlement_payouts SET attempts = attempts + 1 WHERE payout_id = $1`, p.id)
	if err != nil {
		return err
	}
	return w.deferPayout(ctx, p, reason)
}

// checkSending looks at the payout's transaction.
func (w *Worker) checkSending(ctx context.Context, p payoutRow) error {
	txs, err := w.loadTxs(ctx, `t.id = $3`, p.txID)
	if err != nil {
		return err
	}
	if len(txs) == 0 {
		return fmt.Errorf("its transaction %s is missing", p.txID)
	}
	tx := txs[0]
	switch {
	case tx.status == "pending":
		return nil
	case tx.status == "final" && tx.receiptStatus == int64(types.ReceiptStatusSuccessful):
		return w.settle(ctx, p, tx.minedHash)
	}
	// Reverted, or its nonce went to another transaction: was the authorization used anyway?
	if done, err := w.findUse(ctx, p); err != nil || done {
		return err
	}
	if p.attempts >= int64(w.cfg.MaxAttempts) {
		return w.failPayout(ctx, p, fmt.Sprintf("%d transactions failed", p.attempts))
	}
	return w.setPayout(ctx, p.id, payoutQueued, "the transaction failed; retrying", w.cfg.RetryBackoff)
}

// findUse looks for the final or pending use of the payout's authorization on chain. If it
// was used, the payout goes to confirming (with the transaction that used it) and done is true.
func (w *Worker) findUse(ctx context.Context, p payoutRow) (done bool, err error) {
	hot := w.signer.Address()
	used, err := token{client: w.client, chain: w.chain}.authorizationUsed(ctx, hot, p.nonce, nil)
	if err != nil || !used {
		return false, err
	}
	head, err := w.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("latest header: %w", err)
	}
	latest := head.Number.Uint64()
	from := toUint64(p.firstBlock)
	for end := latest; ; {
		start := uint64(0)
		if end+1 > w.chain.MaxLogRange {
			start = end + 1 - w.chain.MaxLogRange
		}
		start = max(start, from)
		logs, err := w.client.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(start), ToBlock: new(big.Int).SetUint64(end),
			Addresses: []common.Address{w.chain.Token},
			Topics:    [][]common.Hash{{authorizationUsedTopic}, {common.BytesToHash(hot.Bytes())}, {p.nonce}},
		})
		if err != nil {
			return false, fmt.Errorf("eth_getLogs: %w", err)
		}
		for i := len(logs) - 1; i >= 0; i-- {
			if logs[i].Removed {
				continue
			}
			w.logger.InfoContext(ctx, "payout authorization used on chain", "payout", p.id, "tx", logs[i].TxHash.Hex(), "block", logs[i].BlockNumber)
			_, err := w.pool.Exec(ctx, `
				UPDATE settlement_payouts SET status = 'confirming', tx_hash = $2, tx_block = $3, reason = '', next_attempt_at = $4, updated_at = now()
				WHERE payout_id = $1`, p.id, lowerHash(logs[i].TxHash), toInt64(logs[i].BlockNumber), w.clock.Now())
			return err == nil, err
		}
		if start <= from {
			return false, fmt.Errorf("authorizationState says used, but no AuthorizationUsed log since block %d", from)
		}
		end = start - 1
	}
}

// checkConfirming settles a payout once the transaction that used its authorization is final.
func (w *Worker) checkConfirming(ctx context.Context, p payoutRow) error {
	rcpt, err := w.client.TransactionReceipt(ctx, common.HexToHash(p.txHash))
	if errors.Is(err, ethereum.NotFound) {
		// Reorged out: back to the start, which looks at authorizationState first.
		return w.setPayout(ctx, p.id, payoutQueued, "the paying transaction left the chain; rechecking", 0)
	}
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	fin, err := w.finalHeader(ctx)
	if err != nil {
		return err
	}
	final, err := w.isFinal(ctx, rcpt.BlockNumber, rcpt.BlockHash, fin)
	if err != nil || !final {
		return err
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return w.setPayout(ctx, p.id, payoutQueued, "the paying transaction reverted; rechecking", 0)
	}
	return w.settle(ctx, p, lowerHash(rcpt.TxHash))
}

// checkFailing gives the money back once no signed authorization of the payout can be used.
func (w *Worker) checkFailing(ctx context.Context, p payoutRow) error {
	if done, err := w.findUse(ctx, p); err != nil || done {
		return err
	}
	fin, err := w.finalHeader(ctx)
	if err != nil || fin == nil {
		return err
	}
	// Every block after a final one has a later timestamp, and the token refuses an
	// authorization at or after validBefore: if it is unused at a final block past its expiry,
	// it is dead.
	if toInt64(fin.Time) < p.validBefore {
		return w.setPayout(ctx, p.id, payoutFailing, p.reason, w.cfg.RetryBackoff)
	}
	used, err := token{client: w.client, chain: w.chain}.authorizationUsed(ctx, w.signer.Address(), p.nonce, fin.Number)
	if err != nil {
		return err
	}
	if used {
		return nil // findUse at latest will see it on the next tick
	}
	return w.giveBack(ctx, p)
}

// failPayout fails a payout permanently: at once if its authorization was never signed,
// otherwise once it has expired unused (checkFailing).
func (w *Worker) failPayout(ctx context.Context, p payoutRow, reason string) error {
	w.logger.WarnContext(ctx, "payout cannot be paid", "payout", p.id, "reason", reason)
	if p.validBefore == 0 {
		p.reason = reason
		return w.giveBack(ctx, p)
	}
	return w.setPayout(ctx, p.id, payoutFailing, reason, 0)
}

func (w *Worker) giveBack(ctx context.Context, p payoutRow) error {
	if _, err := w.ledger.FailPayout(ctx, p.id, p.reason); err != nil {
		return fmt.Errorf("ledger fail payout: %w", err)
	}
	w.metrics.payout(payoutFailed)
	w.logger.InfoContext(ctx, "payout failed; its money is back in the earnings", "payout", p.id, "reason", p.reason)
	return w.setPayout(ctx, p.id, payoutFailed, p.reason, 0)
}

func (w *Worker) settle(ctx context.Context, p payoutRow, txHash string) error {
	if _, err := w.ledger.SettlePayout(ctx, p.id, txHash); err != nil {
		if !errors.Is(err, ledger.ErrPayoutFinished) {
			return fmt.Errorf("ledger settle payout: %w", err)
		}
		// Paid on chain, yet the ledger finished it otherwise: only a human can sort this out.
		w.logger.ErrorContext(ctx, "payout paid on chain but the ledger refuses to settle it", "payout", p.id, "tx", txHash, "err", err)
		return w.setPayout(ctx, p.id, payoutSettled, "paid on chain; the ledger refused to settle: "+err.Error(), 0)
	}
	w.metrics.payout(payoutSettled)
	w.logger.InfoContext(ctx, "payout settled", "payout", p.id, "tx", txHash, "amount_micro", p.amountMicro)
	_, err := w.pool.Exec(ctx, `
		UPDATE settlement_payouts SET status = 'settled', tx_hash = $2, reason = '', updated_at = now() WHERE payout_id = $1`,
		p.id, txHash)
	return err
}

// deferPayout leaves a payout queued and looks again after the back-off.
func (w *Worker) deferPayout(ctx context.Context, p payoutRow, reason string) error {
	if p.reason != reason {
		w.logger.InfoContext(ctx, "payout waits", "payout", p.id, "reason", reason)
	}
	return w.setPayout(ctx, p.id, payoutQueued, reason, w.cfg.RetryBackoff)
}

func (w *Worker) setPayout(ctx context.Context, id, status, reason string, wait time.Duration) error {
	_, err := w.pool.Exec(ctx, `
		UPDATE settlement_payouts SET status = $2, reason = $3, next_attempt_at = $4, updated_at = now()
		WHERE payout_id = $1 AND status NOT IN ('settled', 'failed')`, id, status, reason, w.clock.Now().Add(wait))
	return err
}
