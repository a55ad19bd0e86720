package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/ledger"
)

// The deposit watcher. It reads the token's Transfer logs to the treasury, finalized range by
// finalized range, from the block after the last one it finished (settlement_cursors), so a
// restart resumes where it stopped. For each such transaction it reads the receipt, because a
// deposit's identity is its position in the receipt, and because a relayed top-up shows there as
// AuthorizationUsed(authorizer, nonce) followed by the authorizer's Transfer. It credits:
//   - a Transfer paired with the AuthorizationUsed of one of our top-up intents, keyed
//     chain:token:authorizer:nonce (whoever relayed it, however often it was resubmitted);
//   - any other Transfer from a linked wallet, keyed chain:txhash:position-in-receipt;
//   - and it stores a Transfer from an address no user has linked as unassigned (unassigned.go),
//     credited to nobody until an operator assigns it, or its sender links the address.
// Credits happen only for final blocks; newer blocks are scanned too, and what they show is
// recorded as pending (seen, not final) and dropped if a reorg removes it before finality.

var (
	transferTopic          = usdc.GetABI().Events["Transfer"].ID
	authorizationUsedTopic = usdc.GetABI().Events["AuthorizationUsed"].ID
)

// LinkedWallets says which addresses belong to users: the paywall package's authorizations.
type LinkedWallets interface {
	// IsLinked reports whether a lower-case 0x address was ever linked to a paywall user.
	IsLinked(ctx context.Context, wallet string) (bool, error)
	// LinkedAmong returns which of the lower-case 0x addresses were ever linked.
	LinkedAmong(ctx context.Context, wallets []string) (map[string]bool, error)
}

// PaywallWallets reads the paywall package's authorizations table. A wallet that was linked
// once stays linked for deposits even after a revocation: the money is still that wallet's.
type PaywallWallets struct{ Pool *pgxpool.Pool }

// IsLinked implements LinkedWallets.
func (p PaywallWallets) IsLinked(ctx context.Context, wallet string) (bool, error) {
	var ok bool
	err := p.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM paywall_authorizations WHERE wallet = $1)`, wallet).Scan(&ok)
	return ok, err
}

// LinkedAmong implements LinkedWallets.
func (p PaywallWallets) LinkedAmong(ctx context.Context, wallets []string) (map[string]bool, error) {
	rows, err := p.Pool.Query(ctx, `SELECT DISTINCT wallet FROM paywall_authorizations WHERE wallet = ANY($1::TEXT[])`, wallets)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	var wallet string
	_, err = pgx.ForEachRow(rows, []any{&wallet}, func() error {
		out[wallet] = true
		return nil
	})
	return out, err
}

// deposit is one Transfer to the treasury found in a receipt.
type deposit struct {
	txHash    common.Hash
	logPos    int
	block     uint64
	blockHash common.Hash
	from      common.Address
	amount    int64
	kind      string // topup or transfer
	topUpID   string
	key       string // the ledger's idempotency key
	linked    bool   // for a transfer: its sender is a linked wallet
}

// watchDeposits credits the final deposits not yet processed and records the pending ones.
func (w *Worker) watchDeposits(ctx context.Context) error {
	fin, err := w.finalHeader(ctx)
	if err != nil || fin == nil {
		return err
	}
	final := fin.Number.Uint64()
	cursor, err := w.cursor(ctx, final)
	if err != nil {
		return err
	}
	w.metrics.finalProcessed(cursor)
	for from := cursor + 1; from <= final; {
		to := min(from+w.chain.MaxLogRange-1, final)
		if err := w.scanRange(ctx, from, to, true); err != nil {
			return fmt.Errorf("deposits in blocks %d-%d: %w", from, to, err)
		}
		if _, err := w.pool.Exec(ctx, `
			UPDATE settlement_cursors SET block_number = $3, updated_at = now() WHERE chain_id = $1 AND token = $2`,
			w.chain.ID, lowerHex(w.chain.Token), toInt64(to)); err != nil {
			return fmt.Errorf("advance deposit cursor: %w", err)
		}
		w.metrics.finalProcessed(to)
		from = to + 1
	}
	relinkErr := w.relink(ctx)
	// Pending deposits at or below the final block that were not credited were reorged away.
	if _, err := w.pool.Exec(ctx, `
		UPDATE settlement_deposits SET status = 'dropped', updated_at = now()
		WHERE chain_id = $1 AND token = $2 AND status = 'pending' AND block_number <= $3`,
		w.chain.ID, lowerHex(w.chain.Token), toInt64(final)); err != nil {
		return fmt.Errorf("drop reorged deposits: %w", err)
	}
	latest, err := w.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return fmt.Errorf("latest header: %w", err)
	}
	head := latest.Number.Uint64()
	if head >= final {
		w.metrics.finalityLag(head-final, toInt64(latest.Time)-toInt64(fin.Time))
	}
	if head > final {
		from := final + 1
		if head-from >= w.chain.MaxLogRange {
			from = head - w.chain.MaxLogRange + 1
		}
		if err := w.scanRange(ctx, from, head, false); err != nil {
			return fmt.Errorf("pending deposits in blocks %d-%d: %w", from, head, err)
		}
	}
	return relinkErr
}

// cursor returns the last final block processed, creating the cursor on the first run at the
// configured start block (or the current final block).
func (w *Worker) cursor(ctx context.Context, final uint64) (uint64, error) {
	var n int64
	err := w.pool.QueryRow(ctx, `SELECT block_number FROM settlement_cursors WHERE chain_id = $1 AND token = $2`,
		w.chain.ID, lowerHex(w.chain.Token)).Scan(&n)
	if err == nil {
		return toUint64(n), nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("deposit cursor: %w", err)
	}
	start := final
	if w.chain.StartBlock > 0 {
		start = w.chain.StartBlock - 1
	}
	if _, err := w.pool.Exec(ctx, `
		INSERT INTO settlement_cursors (chain_id, token, block_number) VALUES ($1, $2, $3)
		ON CONFLICT (chain_id, token) DO NOTHING`, w.chain.ID, lowerHex(w.chain.Token), toInt64(start)); err != nil {
		return 0, fmt.Errorf("create deposit cursor: %w", err)
	}
	w.logger.InfoContext(ctx, "deposit watcher starts", "after_block", start)
	return w.cursor(ctx, final)
}

// scanRange finds the transfers to the treasury in [from, to] and credits them (final) or
// records them as pending.
func (w *Worker) scanRange(ctx context.Context, from, to uint64, final bool) error {
	logs, err := w.client.FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: new(big.Int).SetUint64(from),
		ToBlock:   new(big.Int).SetUint64(to),
		Addresses: []common.Address{w.chain.Token},
		Topics:    [][]common.Hash{{transferTopic}, nil, {common.BytesToHash(w.treasury.Bytes())}},
	})
	if err != nil {
		return fmt.Errorf("eth_getLogs: %w", err)
	}
	seen := map[common.Hash]bool{}
	for _, lg := range logs {
		if lg.Removed || seen[lg.TxHash] {
			continue
		}
		seen[lg.TxHash] = true
		rcpt, err := w.client.TransactionReceipt(ctx, lg.TxHash)
		if errors.Is(err, ethereum.NotFound) && !final {
			continue // reorged away between the two calls
		}
		if err != nil {
			return fmt.Errorf("receipt %s: %w", lg.TxHash.Hex(), err)
		}
		if rcpt.BlockHash != lg.BlockHash {
			if final {
				return fmt.Errorf("receipt %s is in block %s, its log in %s: the node is reorganizing a final block", lg.TxHash.Hex(), rcpt.BlockHash.Hex(), lg.BlockHash.Hex())
			}
			continue
		}
		deps, err := w.depositsIn(ctx, rcpt)
		if err != nil {
			return err
		}
		for _, d := range deps {
			switch {
			case final && d.kind == purposeTopUp:
				err = w.credit(ctx, d)
			case final:
				err = w.creditTransfer(ctx, d)
			case d.kind == purposeTopUp || d.linked:
				err = w.recordPending(ctx, d)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// depositsIn lists the attributable transfers to the treasury in a receipt.
func (w *Worker) depositsIn(ctx context.Context, rcpt *types.Receipt) ([]deposit, error) {
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return nil, nil
	}
	type used struct {
		authorizer common.Address
		nonce      common.Hash
		paired     bool
	}
	var auths []used
	var out []deposit
	for pos, lg := range rcpt.Logs {
		if lg.Address != w.chain.Token || len(lg.Topics) != 3 {
			continue
		}
		switch lg.Topics[0] {
		case authorizationUsedTopic:
			auths = append(auths, used{authorizer: common.BytesToAddress(lg.Topics[1].Bytes()), nonce: lg.Topics[2]})
			continue
		case transferTopic:
		default:
			continue
		}
		from, to := common.BytesToAddress(lg.Topics[1].Bytes()), common.BytesToAddress(lg.Topics[2].Bytes())
		if to != w.treasury {
			continue
		}
		value := new(big.Int).SetBytes(lg.Data)
		if value.Sign() <= 0 || !value.IsInt64() {
			w.logger.WarnContext(ctx, "transfer to the treasury not credited: amount out of range", "tx", rcpt.TxHash.Hex(), "log_pos", pos, "value", value.String())
			continue
		}
		d := deposit{
			txHash: rcpt.TxHash, logPos: pos, block: rcpt.BlockNumber.Uint64(), blockHash: rcpt.BlockHash,
			from: from, amount: value.Int64(),
		}
		// The Transfer of an EIP-3009 authorization directly follows its AuthorizationUsed.
		for i := len(auths) - 1; i >= 0; i-- {
			if auths[i].paired || auths[i].authorizer != from {
				continue
			}
			auths[i].paired = true
			id, ok, err := w.topUpByNonce(ctx, from, auths[i].nonce)
			if err != nil {
				return nil, err
			}
			if ok {
				d.kind, d.topUpID = purposeTopUp, id
				d.key = strings.Join([]string{w.chain.ID, lowerHex(w.chain.Token), lowerHex(from), lowerHash(auths[i].nonce)}, ":")
			}
			break
		}
		if d.kind == "" {
			linked, err := w.wallets.IsLinked(ctx, lowerHex(from))
			if err != nil {
				return nil, fmt.Errorf("linked wallets: %w", err)
			}
			d.kind, d.key, d.linked = depositTransfer, w.transferKey(d), linked
		}
		out = append(out, d)
	}
	return out, nil
}

func (w *Worker) topUpByNonce(ctx context.Context, wallet common.Address, nonce common.Hash) (string, bool, error) {
	var id string
	err := w.pool.QueryRow(ctx, `
		SELECT id::TEXT FROM settlement_topups WHERE chain_id = $1 AND wallet = $2 AND nonce = $3 AND token = $4`,
		w.chain.ID, lowerHex(wallet), lowerHash(nonce), lowerHex(w.chain.Token)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("top-up by nonce: %w", err)
	}
	return id, true, nil
}

// credit puts a final deposit in the ledger (idempotent by its key) and records it.
func (w *Worker) credit(ctx context.Context, d deposit) error {
	meta := map[string]string{
		ledger.MetaTxHash: lowerHash(d.txHash), ledger.MetaLogPos: strconv.Itoa(d.logPos),
		ledger.MetaBlock: strconv.FormatUint(d.block, 10), ledger.MetaToken: lowerHex(w.chain.Token), ledger.MetaKind: d.kind,
	}
	if d.topUpID != "" {
		meta[ledger.MetaTopUpID] = d.topUpID
	}
	tr, err := w.ledger.Deposit(ctx, ledger.DepositRequest{
		Key: d.key, ChainID: w.chain.ID, Wallet: lowerHex(d.from), AmountMicro: d.amount, Metadata: meta,
	})
	if errors.Is(err, ledger.ErrIdempotencyConflict) || errors.Is(err, ledger.ErrInvalid) {
		// The same on-chain identity with other content cannot come from the chain: never retry it.
		w.logger.ErrorContext(ctx, "deposit refused by the ledger; not credited", "key", d.key, "tx", d.txHash.Hex(), "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger deposit %s: %w", d.key, err)
	}
	var topUp any
	if d.topUpID != "" {
		topUp = d.topUpID
	}
	var newDeposit, newTopUp bool
	err = runTx(ctx, w.pool, func(tx pgx.Tx) error {
		// A deposit already recorded as credited (a rescan, a replayed log) is left as it is.
		tag, err := tx.Exec(ctx, `
			INSERT INTO settlement_deposits (chain_id, tx_hash, log_pos, token, wallet, amount_micro, block_number,
				block_hash, kind, topup_id, status, ledger_key, transfer_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'credited', $11, $12)
			ON CONFLICT (chain_id, tx_hash, log_pos) DO UPDATE SET status = 'credited', block_number = excluded.block_number,
				block_hash = excluded.block_hash, transfer_id = excluded.transfer_id, kind = excluded.kind,
				topup_id = excluded.topup_id, ledger_key = excluded.ledger_key, updated_at = now()
			WHERE settlement_deposits.status <> 'credited'`,
			w.chain.ID, lowerHash(d.txHash), d.logPos, lowerHex(w.chain.Token), lowerHex(d.from), d.amount,
			toInt64(d.block), lowerHash(d.blockHash), d.kind, topUp, d.key, tr.ID)
		if err != nil {
			return err
		}
		newDeposit = tag.RowsAffected() > 0
		if d.topUpID == "" {
			return nil
		}
		tag, err = tx.Exec(ctx, `
			UPDATE settlement_topups SET status = 'credited', tx_hash = $2, reason = '', updated_at = now()
			WHERE id = $1 AND status <> 'credited'`, d.topUpID, lowerHash(d.txHash))
		newTopUp = err == nil && tag.RowsAffected() > 0
		return err
	})
	if err != nil {
		return fmt.Errorf("record deposit: %w", err)
	}
	if newDeposit {
		w.metrics.deposit(d.kind, d.amount)
	}
	if newTopUp {
		w.metrics.topUp(TopUpCredited)
	}
	if !newDeposit {
		return nil
	}
	w.logger.InfoContext(ctx, "deposit credited", "kind", d.kind, "wallet", lowerHex(d.from), "amount_micro", d.amount,
		"tx", d.txHash.Hex(), "log_pos", d.logPos, "block", d.block, "transfer", tr.ID)
	return nil
}

// recordPending notes a deposit seen in a block that is not final yet.
func (w *Worker) recordPending(ctx context.Context, d deposit) error {
	var topUp any
	if d.topUpID != "" {
		topUp = d.topUpID
	}
	_, err := w.pool.Exec(ctx, `
		INSERT INTO settlement_deposits (chain_id, tx_hash, log_pos, token, wallet, amount_micro, block_number,
			block_hash, kind, topup_id, status, ledger_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11)
		ON CONFLICT (chain_id, tx_hash, log_pos) DO UPDATE SET status = 'pending', block_number = excluded.block_number,
			block_hash = excluded.block_hash, updated_at = now()
		WHERE settlement_deposits.status IN ('pending', 'dropped')`,
		w.chain.ID, lowerHash(d.txHash), d.logPos, lowerHex(w.chain.Token), lowerHex(d.from), d.amount,
		toInt64(d.block), lowerHash(d.blockHash), d.kind, topUp, d.key)
	if err != nil {
		return fmt.Errorf("record pending deposit: %w", err)
	}
	return nil
}
