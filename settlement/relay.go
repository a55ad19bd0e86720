package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/settlement/eip1271"
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
	if ok, err := w.topUpPreflight(ctx, t, tok); err != nil || !ok {
		return err
	}
	if eip1271.IsWrapped(sig) {
		// A counterfactual wallet (ERC-6492): the token asks the wallet's isValidSignature,
		// which needs code, so the wallet is deployed first and the token gets the inner
		// signature. The preflight came first so that no gas is spent deploying a wallet whose
		// transfer cannot happen now.
		wrapped, err := eip1271.ParseWrapped(sig)
		if err != nil {
			return w.setTopUp(ctx, t.id, TopUpFailed, "stored signature is malformed: "+err.Error(), 0)
		}
		if deployed, err := w.deployWallet(ctx, t, wrapped); err != nil || !deployed {
			return err
		}
		sig = wrapped.Signature
	}
	data, byContract := w.chain.transferCall(SignedAuthorization{Authorization: t.authorization(), Signature: sig})
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

// deployWallet gets a top-up's counterfactual wallet deployed with its ERC-6492 factory call,
// sent from the hot wallet (which pays the gas), and reports whether the wallet has code now.
// It never deploys twice: a wallet with code (deployed by us, by itself or by anyone) is
// ready; while our deployment is pending, it waits for it (monitorTxs follows it like any
// other transaction, across restarts). A deployment that would revert, needs more than
// eip1271.MaxDeployGas, or was mined without leaving code at the wallet fails the top-up; no
// money has moved then.
func (w *Worker) deployWallet(ctx context.Context, t topUpRow, wrapped eip1271.Wrapped) (bool, error) {
	code, err := w.client.CodeAt(ctx, t.wallet, nil)
	if err != nil {
		return false, fmt.Errorf("code of %s: %w", t.wallet.Hex(), err)
	}
	if len(code) > 0 {
		return true, nil
	}
	tx, ok, err := w.txByRef(ctx, purposeDeploy, t.id)
	if err != nil {
		return false, err
	}
	switch {
	case ok && tx.status == "pending":
		return false, nil // mined or not, not final yet; the wallet has code once it is mined
	case ok && tx.status == "final" && tx.receiptStatus == 1:
		return false, w.setTopUp(ctx, t.id, TopUpFailed, "the wallet's ERC-6492 factory call was mined ("+tx.minedHash+") but left no code at "+t.wallet.Hex(), 0)
	case ok && tx.status == "final":
		return false, w.setTopUp(ctx, t.id, TopUpFailed, "the wallet's ERC-6492 deployment reverted ("+tx.minedHash+") and nobody else deployed it", 0)
	}
	// None yet, or ours lost its nonce to a foreign transaction: deploy.
	// Estimated within the bound, so a deployment that needs more fails here, as the
	// submit's simulation would have refused it.
	gas, err := w.client.EstimateGas(ctx, ethereum.CallMsg{From: w.signer.Address(), To: &wrapped.Factory, Data: wrapped.FactoryCalldata, Gas: eip1271.MaxDeployGas})
	switch {
	case err != nil && strings.Contains(err.Error(), "gas required exceeds"):
		return false, w.setTopUp(ctx, t.id, TopUpFailed, fmt.Sprintf("the wallet's ERC-6492 deployment needs more than the %d gas the relayer pays for", eip1271.MaxDeployGas), 0)
	case err != nil && classify(err) == failGas:
		w.logger.WarnContext(ctx, "the hot wallet cannot pay for gas", "hot_wallet", w.signer.Address().Hex(), "err", err)
		return false, w.setTopUp(ctx, t.id, TopUpSigned, "the relayer is out of gas money; waiting", w.cfg.RetryBackoff)
	case err != nil && classify(err) == failTransport:
		return false, fmt.Errorf("estimate the wallet's deployment: %w", err)
	case err != nil:
		return false, w.setTopUp(ctx, t.id, TopUpFailed, "the wallet's ERC-6492 factory call would revert: "+err.Error(), 0)
	}
	if gas > eip1271.MaxDeployGas {
		return false, w.setTopUp(ctx, t.id, TopUpFailed, fmt.Sprintf("the wallet's ERC-6492 deployment needs %d gas, more than the %d the relayer pays for", gas, eip1271.MaxDeployGas), 0)
	}
	_, err = w.send(ctx, purposeDeploy, t.id, wrapped.Factory, wrapped.FactoryCalldata, withGasMargin(gas),
		func(tx pgx.Tx, _ string, hash common.Hash) error {
			_, err := tx.Exec(ctx, `UPDATE settlement_topups SET reason = $2, updated_at = now() WHERE id = $1 AND status = 'signed'`,
				t.id, "deploying the wallet (ERC-6492) in "+lowerHash(hash))
			return err
		})
	return false, err
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
