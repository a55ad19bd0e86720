package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"
)

// The top-up relay: signed top-ups are submitted as transferWithAuthorization from the hot
// wallet, which pays the gas. The money is credited by the deposit watcher when the
// authorization's use is final, never here: anyone may relay a signed authorization, and the
// token lets it move money once.

// relayBatch bounds the top-ups looked at per tick.
const relayBatch = 50

func (w *Worker) relayTopUps(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, `SELECT `+topUpColumns+` FROM settlement_topups
		WHERE chain_id = $1 AND status IN ('signed', 'submitted') AND next_attempt_at <= $2
		ORDER BY created_at LIMIT $3`, w.chain.ID, w.clock.Now(), relayBatch)
	if err != nil {
		return fmt.Errorf("load top-ups: %w", err)
	}
	topups, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (topUpRow, error) { return scanTopUp(r) })
	if err != nil {
		return fmt.Errorf("load top-ups: %w", err)
	}
	var errs []error
	for _, t := range topups {
		var err error
		if t.status == TopUpSigned {
			err = w.relay(ctx, t)
		} else {
			err = w.checkSubmitted(ctx, t)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("top-up %s: %w", t.id, err))
		}
	}
	return errors.Join(errs...)
}

// relay preflights a signed top-up and sends it.
func (w *Worker) relay(ctx context.Context, t topUpRow) error {
	if t.treasury != w.treasury || t.token != w.chain.Token {
		return w.setTopUp(ctx, t.id, TopUpFailed, "made for another treasury or token than configured now", 0)
	}
	if w.clock.Now().Add(submitMargin).Unix() >= t.validBefore {
		return w.setTopUp(ctx, t.id, TopUpFailed, "the authorization expired before it could be relayed", 0)
	}
	tok := token{client: w.client, chain: w.chain}
	used, err := tok.authorizationUsed(ctx, t.wallet, t.nonce, nil)
	if err != nil {
		return err
	}
	if used {
		return w.setTopUp(ctx, t.id, TopUpSubmitted, "relayed by someone else", 0)
	}
	sig, err := ParseSignature(t.signature)
	if err != nil {
		return w.setTopUp(ctx, t.id, TopUpFailed, "stored signature is malformed", 0)
	}
	data, byContract := w.chain.transferCall(SignedAuthorization{Authorization: t.authorization(), Signature: sig})
	if ok, err := w.topUpPreflight(ctx, t, tok); err != nil || !ok {
		return err
	}
	gas, err := w.estimate(ctx, w.chain.Token, data)
	if err != nil {
		return w.topUpRefused(ctx, t, err, byContract)
	}
	_, err = w.send(ctx, purposeTopUp, t.id, w.chain.Token, data, gas, func(tx pgx.Tx, _ string, hash common.Hash) error {
		_, err := tx.Exec(ctx, `
			UPDATE settlement_topups SET status = 'submitted', tx_hash = $2, reason = '', updated_at = now()
			WHERE id = $1 AND status = 'signed'`, t.id, lowerHash(hash))
		return err
	})
	if err == nil {
		w.metrics.topUp(TopUpSubmitted)
	}
	return err
}

// topUpPreflight checks what would make the relay revert and reports whether to go on.
func (w *Worker) topUpPreflight(ctx context.Context, t topUpRow, tok token) (bool, error) {
	paused, err := tok.paused(ctx)
	if err != nil {
		return false, err
	}
	if paused {
		return false, w.setTopUp(ctx, t.id, TopUpSigned, "the token is paused; waiting", w.cfg.RetryBackoff)
	}
	for _, a := range []common.Address{t.wallet, t.treasury} {
		black, err := tok.isBlacklisted(ctx, a)
		if err != nil {
			return false, err
		}
		if black {
			return false, w.setTopUp(ctx, t.id, TopUpFailed, "the token blacklisted "+a.Hex(), 0)
		}
	}
	bal, err := tok.balanceOf(ctx, t.wallet)
	if err != nil {
		return false, err
	}
	if bal.Cmp(big.NewInt(t.amountMicro)) < 0 {
		return false, w.setTopUp(ctx, t.id, TopUpSigned, "the wallet holds less USDC than the top-up; waiting until the authorization expires", w.cfg.RetryBackoff)
	}
	return true, nil
}

// topUpRefused handles a relay the node says would revert. byContract: the relay uses the
// token's `bytes signature` form for a contract wallet's signature.
func (w *Worker) topUpRefused(ctx context.Context, t topUpRow, err error, byContract bool) error {
	reason := "relay would revert: " + err.Error()
	f := classify(err)
	// A token without the bytes form (USDC.e, older FiatToken versions) has no such function
	// and reverts without a reason; FiatTokenV2_2 always gives one. Retrying cannot help.
	if byContract && f == failUnknown && !hasRevertReason(err) {
		return w.setTopUp(ctx, t.id, TopUpFailed, "the token refused transferWithAuthorization with a contract wallet's signature (bytes) without a reason: it probably lacks that form (EIP-1271 needs FiatTokenV2_2 or later); "+reason, 0)
	}
	switch f {
	case failTransport:
		return fmt.Errorf("preflight: %w", err)
	case failGas:
		w.logger.WarnContext(ctx, "the hot wallet cannot pay for gas", "hot_wallet", w.signer.Address().Hex(), "err", err)
		return w.setTopUp(ctx, t.id, TopUpSigned, "the relayer is out of gas money; waiting", w.cfg.RetryBackoff)
	case failUsed:
		return w.setTopUp(ctx, t.id, TopUpSubmitted, "relayed by someone else", 0)
	case failBlacklisted, failExpired, failSignature:
		return w.setTopUp(ctx, t.id, TopUpFailed, reason, 0)
	default:
		return w.setTopUp(ctx, t.id, TopUpSigned, reason, w.cfg.RetryBackoff)
	}
}

// checkSubmitted sends a submitted top-up back to the relay if its transaction failed and
// nobody else used the authorization.
func (w *Worker) checkSubmitted(ctx context.Context, t topUpRow) error {
	tx, ok, err := w.txByRef(ctx, purposeTopUp, t.id)
	if err != nil {
		return err
	}
	if ok && (tx.status == "pending" || (tx.status == "final" && tx.receiptStatus == 1)) {
		return nil // on its way; the watcher credits it at finality
	}
	used, err := token{client: w.client, chain: w.chain}.authorizationUsed(ctx, t.wallet, t.nonce, nil)
	if err != nil || used {
		return err
	}
	return w.setTopUp(ctx, t.id, TopUpSigned, "the relay transaction failed; retrying", w.cfg.RetryBackoff)
}

// setTopUp moves a top-up that is not credited yet; wait delays its next look.
func (w *Worker) setTopUp(ctx context.Context, id string, status TopUpStatus, reason string, wait time.Duration) error {
	next := w.clock.Now().Add(wait)
	tag, err := w.pool.Exec(ctx, `
		UPDATE settlement_topups SET status = $2, reason = $3, next_attempt_at = $4, updated_at = now()
		WHERE id = $1 AND status <> 'credited'`, id, string(status), reason, next)
	if err != nil {
		return err
	}
	w.logger.InfoContext(ctx, "top-up", "topup", id, "status", status, "reason", reason)
	if tag.RowsAffected() > 0 && (status == TopUpSubmitted || status == TopUpFailed) {
		w.metrics.topUp(status)
	}
	return nil
}
