package settlement

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/jackc/pgx/v5"
)

// The hot wallet's transactions. Each one is signed, stored (settlement_txs and its first
// settlement_tx_attempts row, with the raw bytes) in the same database transaction as the
// business change that needs it, and only then broadcast. Everything after that is driven by
// the stored rows, so a crash at any point is repaired by the next tick: a transaction never
// broadcast is broadcast, one dropped from the pool is rebroadcast, one stuck is replaced with
// fees at least 10% higher, and one whose nonce was taken by a foreign transaction is marked
// lost so its purpose is retried under a new nonce.

// Transaction purposes. A deploy transaction is the factory call of a top-up's counterfactual
// wallet (ERC-6492); its ref is the top-up's id, as for the top-up's own transaction.
const (
	purposeTopUp  = "topup"
	purposePayout = "payout"
	purposeDeploy = "deploy"
)

// txRow is a settlement_txs row with its attempts, oldest first.
type txRow struct {
	id            string
	nonce         uint64
	purpose       string
	ref           string
	to            common.Address
	data          []byte
	gas           uint64
	status        string // pending, final, lost
	receiptStatus int64  // for final
	minedHash     string
	attempts      []attemptRow
}

type attemptRow struct {
	hash      common.Hash
	tip       *big.Int
	feeCap    *big.Int
	raw       []byte
	createdAt time.Time
}

// gasMarginPct is added to eth_estimateGas: state can change between estimate and inclusion.
const gasMarginPct = 25

// withGasMargin is the gas limit to send for an eth_estimateGas result.
func withGasMargin(gas uint64) uint64 { return gas + gas*gasMarginPct/100 }

// estimate is the preflight: eth_estimateGas runs the call at latest (as eth_call does) and
// fails with the revert reason if it would revert.
func (w *Worker) estimate(ctx context.Context, to common.Address, data []byte) (uint64, error) {
	gas, err := w.client.EstimateGas(ctx, ethereum.CallMsg{From: w.signer.Address(), To: &to, Data: data})
	if err != nil {
		return 0, err
	}
	return withGasMargin(gas), nil
}

// fees returns the tip and fee cap for a new transaction: tip = max(node's suggestion, the
// chain's floor), fee cap = 2 × base fee + tip, both bounded by the chain's MaxFeeCap.
func (w *Worker) fees(ctx context.Context) (tip, feeCap *big.Int, err error) {
	head, err := w.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("latest header: %w", err)
	}
	tip, err = w.client.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("suggest tip: %w", err)
	}
	tip = bigMax(tip, w.chain.TipFloor)
	base := head.BaseFee
	if base == nil {
		base = new(big.Int)
	}
	feeCap = new(big.Int).Add(new(big.Int).Mul(base, big.NewInt(2)), tip)
	if w.chain.MaxFeeCap != nil && feeCap.Cmp(w.chain.MaxFeeCap) > 0 {
		feeCap = new(big.Int).Set(w.chain.MaxFeeCap)
		if tip.Cmp(feeCap) > 0 {
			tip = new(big.Int).Set(feeCap)
		}
	}
	return tip, feeCap, nil
}

// send signs a new transaction from the hot wallet, stores it under the next nonce together
// with whatever inTx writes (the caller's state change), commits, and broadcasts it. A failed
// broadcast is not an error: the stored transaction is broadcast again by monitorTxs.
// It can return: ErrLeaseLost.
func (w *Worker) send(ctx context.Context, purpose, ref string, to common.Address, data []byte, gas uint64,
	inTx func(tx pgx.Tx, txID string, hash common.Hash) error,
) (*types.Transaction, error) {
	tip, feeCap, err := w.fees(ctx)
	if err != nil {
		return nil, err
	}
	chainNonce, err := w.client.PendingNonceAt(ctx, w.signer.Address())
	if err != nil {
		return nil, fmt.Errorf("pending nonce: %w", err)
	}
	var signed *types.Transaction
	err = runTx(ctx, w.pool, func(tx pgx.Tx) error {
		if err := w.lease.fence(ctx, tx); err != nil {
			return err
		}
		// The database knows every nonce this wallet used through us, including signed ones that
		// never reached the node; the node knows nonces used elsewhere. Take the larger.
		var next int64
		if err := tx.QueryRow(ctx, `
			SELECT COALESCE(MAX(nonce) + 1, 0) FROM settlement_txs WHERE chain_id = $1 AND sender = $2`,
			w.chain.ID, w.sender()).Scan(&next); err != nil {
			return err
		}
		nonce := max(toUint64(next), chainNonce)
		var raw []byte
		var err error
		signed, raw, err = w.signDynamic(ctx, nonce, tip, feeCap, gas, to, data)
		if err != nil {
			return err
		}
		var id string
		if err := tx.QueryRow(ctx, `
			INSERT INTO settlement_txs (chain_id, sender, nonce, purpose, ref, to_addr, data, gas, status)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') RETURNING id::TEXT`,
			w.chain.ID, w.sender(), toInt64(nonce), purpose, ref, lowerHex(to), data, toInt64(gas)).Scan(&id); err != nil {
			return err
		}
		if err := w.storeAttempt(ctx, tx, id, signed, raw); err != nil {
			return err
		}
		return inTx(tx, id, signed.Hash())
	})
	if err != nil {
		return nil, err
	}
	w.logger.InfoContext(ctx, "transaction signed and stored", "purpose", purpose, "ref", ref,
		"nonce", signed.Nonce(), "tx", signed.Hash().Hex(), "tip_wei", tip.String(), "fee_cap_wei", feeCap.String(), "gas", gas)
	w.broadcast(ctx, signed)
	return signed, nil
}

// broadcast sends signed bytes to the node. Errors that mean the node has it already, or that
// the nonce is used (by this or another transaction), are expected after a crash or a
// replacement and are left to monitorTxs, which looks the receipts up.
func (w *Worker) broadcast(ctx context.Context, tx *types.Transaction) {
	w.broadcastAt[tx.Hash()] = w.clock.Now()
	err := w.client.SendTransaction(ctx, tx)
	switch {
	case err == nil:
		w.metrics.broadcast(broadcastAccepted)
		w.logger.InfoContext(ctx, "transaction broadcast", "tx", tx.Hash().Hex(), "nonce", tx.Nonce())
	case isKnownTxError(err):
		w.metrics.broadcast(broadcastKnown)
		w.logger.DebugContext(ctx, "node already has the transaction or its nonce", "tx", tx.Hash().Hex(), "err", err)
	default:
		w.metrics.broadcast(broadcastError)
		w.logger.WarnContext(ctx, "broadcast failed; will retry", "tx", tx.Hash().Hex(), "nonce", tx.Nonce(), "err", err)
	}
}

func isKnownTxError(err error) bool {
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"already known", "known transaction", "nonce too low", "replacement transaction underpriced", "already imported", "transaction already exists"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// loadTxs reads this wallet's transactions in a status, by nonce, with their attempts.
func (w *Worker) loadTxs(ctx context.Context, where string, args ...any) ([]txRow, error) {
	args = append([]any{w.chain.ID, w.sender()}, args...)
	rows, err := w.pool.Query(ctx, `
		SELECT t.id::TEXT, t.nonce, t.purpose, t.ref, t.to_addr, t.data, t.gas, t.status,
			COALESCE(t.receipt_status, -1), t.mined_hash, a.hash, a.tip_wei, a.fee_cap_wei, a.raw, a.created_at
		FROM settlement_txs t JOIN settlement_tx_attempts a ON a.tx_id = t.id
		WHERE t.chain_id = $1 AND t.sender = $2 AND `+where+`
		ORDER BY t.nonce, a.created_at, a.hash`, args...)
	if err != nil {
		return nil, fmt.Errorf("load transactions: %w", err)
	}
	defer rows.Close()
	var out []txRow
	for rows.Next() {
		var r txRow
		var a attemptRow
		var nonce, gas int64
		var to, hash, tip, feeCap string
		if err := rows.Scan(&r.id, &nonce, &r.purpose, &r.ref, &to, &r.data, &gas, &r.status, &r.receiptStatus,
			&r.minedHash, &hash, &tip, &feeCap, &a.raw, &a.createdAt); err != nil {
			return nil, err
		}
		a.hash = common.HexToHash(hash)
		a.tip, _ = new(big.Int).SetString(tip, 10)
		a.feeCap, _ = new(big.Int).SetString(feeCap, 10)
		if n := len(out); n > 0 && out[n-1].id == r.id {
			out[n-1].attempts = append(out[n-1].attempts, a)
			continue
		}
		r.nonce, r.gas, r.to = toUint64(nonce), toUint64(gas), common.HexToAddress(to)
		r.attempts = []attemptRow{a}
		out = append(out, r)
	}
	return out, rows.Err()
}

// monitorTxs follows every pending transaction of the hot wallet: final receipts are recorded,
// unmined transactions are rebroadcast or replaced, and transactions whose nonce a foreign
// transaction consumed (at finality) are marked lost.
func (w *Worker) monitorTxs(ctx context.Context) error {
	txs, err := w.loadTxs(ctx, `t.status = 'pending'`)
	if err != nil || len(txs) == 0 {
		return err
	}
	fin, err := w.finalHeader(ctx)
	if err != nil {
		return err
	}
	latestNonce, err := w.client.NonceAt(ctx, w.signer.Address(), nil)
	if err != nil {
		return fmt.Errorf("nonce at latest: %w", err)
	}
	var errs []error
	for _, tx := range txs {
		if err := w.monitorTx(ctx, tx, fin, latestNonce); err != nil {
			errs = append(errs, fmt.Errorf("tx nonce %d: %w", tx.nonce, err))
		}
	}
	return errors.Join(errs...)
}

func (w *Worker) monitorTx(ctx context.Context, tx txRow, fin *types.Header, latestNonce uint64) error {
	// Any attempt may be the one mined; the newest is the likeliest.
	var rcpt *types.Receipt
	for i := len(tx.attempts) - 1; i >= 0; i-- {
		r, err := w.client.TransactionReceipt(ctx, tx.attempts[i].hash)
		if err == nil {
			rcpt = r
			break
		}
		if !errors.Is(err, ethereum.NotFound) {
			return fmt.Errorf("receipt: %w", err)
		}
	}
	if rcpt != nil {
		final, err := w.isFinal(ctx, rcpt.BlockNumber, rcpt.BlockHash, fin)
		if err != nil || !final {
			return err
		}
		_, err = w.pool.Exec(ctx, `
			UPDATE settlement_txs SET status = 'final', receipt_status = $2, mined_hash = $3, mined_block = $4, updated_at = now()
			WHERE id = $1 AND status = 'pending'`,
			tx.id, toInt64(rcpt.Status), lowerHash(rcpt.TxHash), rcpt.BlockNumber.Int64())
		if err == nil {
			w.forgetBroadcasts(tx)
			w.logger.InfoContext(ctx, "transaction final", "purpose", tx.purpose, "ref", tx.ref, "tx", rcpt.TxHash.Hex(),
				"block", rcpt.BlockNumber, "success", rcpt.Status == types.ReceiptStatusSuccessful, "gas_used", rcpt.GasUsed)
		}
		return err
	}
	if tx.nonce < latestNonce {
		// Our nonce is used, but by none of our attempts (or the receipt is not served yet).
		// Only the finalized state decides; until then keep waiting.
		if fin == nil {
			return nil
		}
		finNonce, err := w.client.NonceAt(ctx, w.signer.Address(), fin.Number)
		if err != nil {
			return fmt.Errorf("nonce at finalized: %w", err)
		}
		if tx.nonce >= finNonce {
			return nil
		}
		w.logger.WarnContext(ctx, "transaction lost: its nonce was used by another transaction", "purpose", tx.purpose, "ref", tx.ref, "nonce", tx.nonce)
		_, err = w.pool.Exec(ctx, `UPDATE settlement_txs SET status = 'lost', updated_at = now() WHERE id = $1 AND status = 'pending'`, tx.id)
		if err == nil {
			w.forgetBroadcasts(tx)
		}
		return err
	}
	last := tx.attempts[len(tx.attempts)-1]
	now := w.clock.Now()
	capped := false
	if now.Sub(last.createdAt) >= w.cfg.StuckAfter {
		replaced, err := w.replace(ctx, tx, last)
		if err != nil || replaced {
			return err
		}
		capped = true // no replacement within max_fee_cap_gwei: keep the last attempt in the pool
	}
	if at, ok := w.broadcastAt[last.hash]; !ok || now.Sub(at) >= w.cfg.RebroadcastEvery {
		var signed types.Transaction
		if err := signed.UnmarshalBinary(last.raw); err != nil {
			return fmt.Errorf("stored transaction does not decode: %w", err)
		}
		if capped {
			w.logger.WarnContext(ctx, "stuck transaction cannot be replaced: the bump would pass max_fee_cap_gwei; rebroadcasting it",
				"purpose", tx.purpose, "ref", tx.ref, "tx", last.hash.Hex(), "nonce", tx.nonce, "fee_cap_wei", last.feeCap.String())
		}
		w.broadcast(ctx, &signed)
	}
	return nil
}

// forgetBroadcasts drops a finished transaction's attempts from broadcastAt, which would
// otherwise grow with every transaction the process ever sent.
func (w *Worker) forgetBroadcasts(tx txRow) {
	for _, a := range tx.attempts {
		delete(w.broadcastAt, a.hash)
	}
}

// replace signs the same transaction (nonce, gas, destination, data) with a tip and a fee cap
// each at least 10% above the last attempt's (the pools' replacement rule), and not below what
// the chain asks now; stores the attempt; broadcasts it. It reports false, doing nothing, when
// such fees would pass the chain's MaxFeeCap.
func (w *Worker) replace(ctx context.Context, tx txRow, last attemptRow) (bool, error) {
	tip, feeCap, err := w.fees(ctx)
	if err != nil {
		return false, err
	}
	minTip, minCap := bumped(last.tip), bumped(last.feeCap)
	tip, feeCap = bigMax(tip, minTip), bigMax(feeCap, minCap)
	if feeCap.Cmp(tip) < 0 {
		feeCap = new(big.Int).Set(tip)
	}
	if w.chain.MaxFeeCap != nil && feeCap.Cmp(w.chain.MaxFeeCap) > 0 {
		return false, nil
	}
	signed, raw, err := w.signDynamic(ctx, tx.nonce, tip, feeCap, tx.gas, tx.to, tx.data)
	if err != nil {
		return false, err
	}
	err = runTx(ctx, w.pool, func(dbtx pgx.Tx) error {
		if err := w.lease.fence(ctx, dbtx); err != nil {
			return err
		}
		return w.storeAttempt(ctx, dbtx, tx.id, signed, raw)
	})
	if err != nil {
		return false, err
	}
	w.metrics.replacement()
	w.logger.InfoContext(ctx, "stuck transaction replaced with higher fees", "purpose", tx.purpose, "ref", tx.ref,
		"nonce", tx.nonce, "old_tx", last.hash.Hex(), "tx", signed.Hash().Hex(), "tip_wei", tip.String(), "fee_cap_wei", feeCap.String())
	w.broadcast(ctx, signed)
	return true, nil
}

// signDynamic signs an EIP-1559 transaction from the hot wallet and returns it with its bytes.
func (w *Worker) signDynamic(ctx context.Context, nonce uint64, tip, feeCap *big.Int, gas uint64, to common.Address, data []byte) (*types.Transaction, []byte, error) {
	signed, err := w.signer.SignTx(ctx, types.NewTx(&types.DynamicFeeTx{
		ChainID: w.chain.ChainID(), Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas, To: &to, Data: data,
	}), w.chain.ChainID())
	if err != nil {
		return nil, nil, fmt.Errorf("sign transaction: %w", err)
	}
	raw, err := signed.MarshalBinary()
	return signed, raw, err
}

// storeAttempt records a signed attempt's bytes, before anything broadcasts them.
func (w *Worker) storeAttempt(ctx context.Context, dbtx pgx.Tx, txID string, signed *types.Transaction, raw []byte) error {
	_, err := dbtx.Exec(ctx, `
		INSERT INTO settlement_tx_attempts (hash, tx_id, tip_wei, fee_cap_wei, raw, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		lowerHash(signed.Hash()), txID, signed.GasTipCap().String(), signed.GasFeeCap().String(), raw, w.clock.Now())
	return err
}

// bumped is x raised by 10%, rounded up, plus one wei so that rounding never lands on the
// boundary.
func bumped(x *big.Int) *big.Int {
	y := new(big.Int).Mul(x, big.NewInt(110))
	y.Add(y, big.NewInt(99))
	y.Div(y, big.NewInt(100))
	return y.Add(y, big.NewInt(1))
}

func bigMax(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return new(big.Int).Set(a)
	}
	return new(big.Int).Set(b)
}

// finalHeader returns the newest final block by the chain's rule, or nil if none is final yet.
func (w *Worker) finalHeader(ctx context.Context) (*types.Header, error) {
	if w.chain.Confirmations == 0 {
		h, err := w.client.HeaderByNumber(ctx, finalizedTag)
		if err != nil {
			if errors.Is(err, ethereum.NotFound) || strings.Contains(err.Error(), "not found") {
				return nil, nil
			}
			return nil, fmt.Errorf("finalized header: %w", err)
		}
		return h, nil
	}
	latest, err := w.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("latest header: %w", err)
	}
	n := latest.Number.Uint64()
	if n < w.chain.Confirmations {
		return nil, nil
	}
	h, err := w.client.HeaderByNumber(ctx, new(big.Int).SetUint64(n-w.chain.Confirmations))
	if err != nil {
		return nil, fmt.Errorf("header %d: %w", n-w.chain.Confirmations, err)
	}
	return h, nil
}

// isFinal reports whether the block (number, hash) is final and still canonical.
func (w *Worker) isFinal(ctx context.Context, number *big.Int, hash common.Hash, fin *types.Header) (bool, error) {
	if fin == nil || number.Cmp(fin.Number) > 0 {
		return false, nil
	}
	h, err := w.client.HeaderByNumber(ctx, number)
	if err != nil {
		return false, fmt.Errorf("header %s: %w", number, err)
	}
	return h.Hash() == hash, nil
}

// txByRef returns the newest transaction for a purpose and reference, if any.
func (w *Worker) txByRef(ctx context.Context, purpose, ref string) (txRow, bool, error) {
	txs, err := w.loadTxs(ctx, `t.id = (SELECT id FROM settlement_txs WHERE chain_id = $1 AND sender = $2 AND purpose = $3 AND ref = $4
		ORDER BY created_at DESC, nonce DESC LIMIT 1)`, purpose, ref)
	if err != nil || len(txs) == 0 {
		return txRow{}, false, err
	}
	return txs[0], true, nil
}

func lowerHash(h common.Hash) string { return strings.ToLower(h.Hex()) }

// toUint64 converts a count read from the database (never negative there).
func toUint64(i int64) uint64 {
	if i < 0 {
		return 0
	}
	return uint64(i)
}

// toInt64 converts a block number or nonce for the database (far below 2^63 on any chain).
func toInt64(u uint64) int64 {
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}

// unixSeconds is t as unix seconds for an authorization window (never before 1970 here).
func unixSeconds(t time.Time) uint64 { return toUint64(t.Unix()) }
