package settlement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/ledger"
)

// Unassigned deposits. A final USDC transfer to the treasury from an address no user has
// linked cannot be attributed by the watcher; it is stored in settlement_unassigned, credited
// to nobody, until it is assigned to a wallet: by an operator (Unassigned.Assign, `tollgate
// settle assign`), or by the watcher once its sender links the address. Both go through
// assignDeposit, which claims the row for one wallet with a conditional write before the
// ledger credit, and credit with the key the watcher gives a plain transfer
// (chain:txhash:logpos). The ledger makes that key single-use, so the transfer is credited
// once, whoever assigns it and however often.

// Unassigned deposit states.
const (
	unassignedOpen      = "unassigned"
	unassignedClaimed   = "assigning"
	unassignedAssigned  = "assigned"
	assignedByOperator  = "operator"
	assignedByWatcher   = "watcher"
	unassignedListLimit = 1000
)

// UnassignedDeposit is a final transfer to the treasury from an address no user had linked.
type UnassignedDeposit struct {
	ID          string // what `tollgate settle assign -deposit` takes
	ChainID     string
	TxHash      string
	LogPos      int // position of the Transfer log in its receipt
	Token       string
	From        string // the sender, lower-case 0x
	AmountMicro int64
	BlockNumber uint64
	// LedgerKey is the deposit's on-chain identity, chain:txhash:logpos: its idempotency key in
	// the ledger.
	LedgerKey string
	// Status is "unassigned"; "assigning" (Wallet was chosen, the credit may not be written
	// yet: assign it to the same wallet again to finish); or "assigned".
	Status     string
	Wallet     string // the wallet credited, or being credited
	AssignedBy string // "operator" or "watcher" (the sender linked the address later)
	TransferID string // the ledger's deposit transfer, once assigned
	SeenAt     time.Time
	UpdatedAt  time.Time
}

// Depositor credits wallets; *ledger.Ledger is one.
type Depositor interface {
	Deposit(ctx context.Context, r ledger.DepositRequest) (ledger.Transfer, error)
}

// Unassigned lists the unattributed transfers to the treasury and assigns them to wallets, for
// an operator. It needs the database and the ledger only, no chain.
type Unassigned struct {
	pool   *pgxpool.Pool
	ledger Depositor
	logger *slog.Logger
}

// NewUnassigned returns the operator's view of unassigned deposits (logger may be nil).
func NewUnassigned(pool *pgxpool.Pool, l Depositor, logger *slog.Logger) *Unassigned {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Unassigned{pool: pool, ledger: l, logger: logger}
}

// List returns the deposits waiting for a wallet (with all, also those assigned already),
// oldest first, at most 1000.
func (u *Unassigned) List(ctx context.Context, all bool) ([]UnassignedDeposit, error) {
	where := `status <> 'assigned'`
	if all {
		where = `TRUE`
	}
	rows, err := u.pool.Query(ctx, `SELECT `+unassignedColumns+` FROM settlement_unassigned
		WHERE `+where+` ORDER BY seen_at, chain_id, tx_hash, log_pos LIMIT $1`, unassignedListLimit)
	if err != nil {
		return nil, fmt.Errorf("settlement: list unassigned deposits: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UnassignedDeposit, error) { return scanUnassigned(r) })
	if err != nil {
		return nil, fmt.Errorf("settlement: list unassigned deposits: %w", err)
	}
	return out, nil
}

// Get reads one unassigned deposit by id.
// It can return: ErrDepositNotFound.
func (u *Unassigned) Get(ctx context.Context, id string) (UnassignedDeposit, error) {
	return loadUnassigned(ctx, u.pool, id)
}

// Assign credits an unassigned deposit to wallet, exactly once. Assigning it again to the
// same wallet returns it as it is (or finishes an assignment that was interrupted); to another
// wallet is refused.
// It can return: ErrInvalidWallet, ErrDepositNotFound, ErrDepositAssigned, and the ledger's
// ErrUnavailable and ErrAmbiguous (retry: the deposit's key makes that safe).
func (u *Unassigned) Assign(ctx context.Context, id, wallet string) (UnassignedDeposit, error) {
	wallet = strings.ToLower(strings.TrimSpace(wallet))
	if !isAddress(wallet) || wallet == lowerHex(common.Address{}) {
		return UnassignedDeposit{}, fmt.Errorf("%w: %q is not a 0x address of 40 hex digits", ErrInvalidWallet, wallet)
	}
	d, err := loadUnassigned(ctx, u.pool, id)
	if err != nil {
		return UnassignedDeposit{}, err
	}
	d, err = assignDeposit(ctx, u.pool, u.ledger, d, wallet, assignedByOperator)
	if err != nil {
		return UnassignedDeposit{}, err
	}
	u.logger.InfoContext(ctx, "unassigned deposit assigned", "deposit", d.ID, "wallet", d.Wallet, "amount_micro", d.AmountMicro,
		"tx", d.TxHash, "log_pos", d.LogPos, "transfer", d.TransferID)
	return d, nil
}

// assignDeposit credits d to wallet once: it claims the row for wallet (a conditional write,
// so two assigners cannot choose different wallets), credits the ledger under the deposit's
// on-chain key, and records the credit. A crash after the claim leaves the row "assigning";
// assigning it to the same wallet again resumes, and the ledger returns the first credit.
func assignDeposit(ctx context.Context, pool *pgxpool.Pool, l Depositor, d UnassignedDeposit, wallet, by string) (UnassignedDeposit, error) {
	tag, err := pool.Exec(ctx, `
		UPDATE settlement_unassigned SET status = 'assigning', wallet = $2, assigned_by = $3, updated_at = now()
		WHERE id = $1 AND (status = 'unassigned' OR (status = 'assigning' AND wallet = $2))`, d.ID, wallet, by)
	if err != nil {
		return UnassignedDeposit{}, fmt.Errorf("settlement: claim deposit %s: %w", d.ID, err)
	}
	if tag.RowsAffected() == 0 {
		now, err := loadUnassigned(ctx, pool, d.ID)
		if err != nil {
			return UnassignedDeposit{}, err
		}
		if now.Status == unassignedAssigned && now.Wallet == wallet {
			return now, nil
		}
		return UnassignedDeposit{}, fmt.Errorf("%w: deposit %s is %s to %s (by the %s)", ErrDepositAssigned, d.ID, now.Status, now.Wallet, now.AssignedBy)
	}
	tr, err := l.Deposit(ctx, ledger.DepositRequest{
		Key: d.LedgerKey, ChainID: d.ChainID, Wallet: wallet, AmountMicro: d.AmountMicro,
		Metadata: map[string]string{
			ledger.MetaTxHash: d.TxHash, ledger.MetaLogPos: strconv.Itoa(d.LogPos), ledger.MetaBlock: strconv.FormatUint(d.BlockNumber, 10),
			ledger.MetaToken: d.Token, ledger.MetaKind: depositTransfer, ledger.MetaFrom: d.From, ledger.MetaAssignedBy: by,
		},
	})
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		// The ledger holds this key for another wallet: the deposit was credited already. Give
		// the claim up, so the row shows no wallet that was never credited.
		if _, rerr := pool.Exec(ctx, `
			UPDATE settlement_unassigned SET status = 'unassigned', wallet = '', assigned_by = '', updated_at = now()
			WHERE id = $1 AND status = 'assigning' AND wallet = $2`, d.ID, wallet); rerr != nil {
			return UnassignedDeposit{}, fmt.Errorf("settlement: release deposit %s: %w", d.ID, rerr)
		}
		return UnassignedDeposit{}, fmt.Errorf("%w: the ledger already credited deposit %s (key %s) to another wallet", ErrDepositAssigned, d.ID, d.LedgerKey)
	}
	if err != nil {
		return UnassignedDeposit{}, fmt.Errorf("settlement: credit deposit %s: %w", d.ID, err)
	}
	err = runTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			UPDATE settlement_unassigned SET status = 'assigned', transfer_id = $3, updated_at = now()
			WHERE id = $1 AND wallet = $2`, d.ID, wallet, tr.ID); err != nil {
			return err
		}
		// Every credited deposit is in settlement_deposits, whatever attributed it.
		_, err := tx.Exec(ctx, `
			INSERT INTO settlement_deposits (chain_id, tx_hash, log_pos, token, wallet, amount_micro, block_number,
				block_hash, kind, status, ledger_key, transfer_id)
			SELECT chain_id, tx_hash, log_pos, token, $2, amount_micro, block_number, block_hash, 'transfer', 'credited',
				ledger_key, $3
			FROM settlement_unassigned WHERE id = $1
			ON CONFLICT (chain_id, tx_hash, log_pos) DO NOTHING`, d.ID, wallet, tr.ID)
		return err
	})
	if err != nil {
		return UnassignedDeposit{}, fmt.Errorf("settlement: record deposit %s: %w", d.ID, err)
	}
	return loadUnassigned(ctx, pool, d.ID)
}

const unassignedColumns = `id::TEXT, chain_id, tx_hash, log_pos, token, from_addr, amount_micro, block_number, ledger_key,
	status, wallet, assigned_by, transfer_id, seen_at, updated_at`

func scanUnassigned(r pgx.Row) (UnassignedDeposit, error) {
	var d UnassignedDeposit
	var pos, block int64
	err := r.Scan(&d.ID, &d.ChainID, &d.TxHash, &pos, &d.Token, &d.From, &d.AmountMicro, &block, &d.LedgerKey,
		&d.Status, &d.Wallet, &d.AssignedBy, &d.TransferID, &d.SeenAt, &d.UpdatedAt)
	d.LogPos, d.BlockNumber = int(pos), toUint64(block)
	return d, err
}

func loadUnassigned(ctx context.Context, pool *pgxpool.Pool, id string) (UnassignedDeposit, error) {
	if !isUUID(id) {
		return UnassignedDeposit{}, fmt.Errorf("%w: %q (`tollgate settle unassigned` lists the ids)", ErrDepositNotFound, id)
	}
	d, err := scanUnassigned(pool.QueryRow(ctx, `SELECT `+unassignedColumns+` FROM settlement_unassigned WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return UnassignedDeposit{}, fmt.Errorf("%w: %s (`tollgate settle unassigned` lists the ids)", ErrDepositNotFound, id)
	}
	if err != nil {
		return UnassignedDeposit{}, fmt.Errorf("settlement: read unassigned deposit: %w", err)
	}
	return d, nil
}

// The watcher's side.

// transferKey is the ledger key of a plain transfer: its chain, transaction and the position
// of its log in the receipt.
func (w *Worker) transferKey(d deposit) string {
	return w.chain.ID + ":" + lowerHash(d.txHash) + ":" + strconv.Itoa(d.logPos)
}

// creditTransfer attributes a final plain transfer: a linked sender's is credited to it; an
// unlinked sender's is stored as unassigned. One stored already is left to whoever assigned
// it, or assigned to its sender if the sender has linked the address since.
func (w *Worker) creditTransfer(ctx context.Context, d deposit) error {
	u, err := scanUnassigned(w.pool.QueryRow(ctx, `SELECT `+unassignedColumns+` FROM settlement_unassigned
		WHERE chain_id = $1 AND tx_hash = $2 AND log_pos = $3`, w.chain.ID, lowerHash(d.txHash), d.logPos))
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("unassigned deposit: %w", err)
	}
	switch {
	case found && u.Status != unassignedOpen:
		return nil // an operator (or this watcher) chose its wallet
	case found && d.linked:
		return w.assignToSender(ctx, u)
	case found:
		return nil
	case d.linked:
		return w.credit(ctx, d)
	}
	tag, err := w.pool.Exec(ctx, `
		INSERT INTO settlement_unassigned (chain_id, tx_hash, log_pos, token, from_addr, amount_micro, block_number,
			block_hash, ledger_key, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'unassigned')
		ON CONFLICT (chain_id, tx_hash, log_pos) DO NOTHING`,
		w.chain.ID, lowerHash(d.txHash), d.logPos, lowerHex(w.chain.Token), lowerHex(d.from), d.amount,
		toInt64(d.block), lowerHash(d.blockHash), d.key)
	if err != nil {
		return fmt.Errorf("store unassigned deposit: %w", err)
	}
	if tag.RowsAffected() > 0 {
		w.metrics.unassignedSeen()
		w.logger.WarnContext(ctx, "transfer to the treasury from an unlinked address: stored for an operator (tollgate settle unassigned)",
			"tx", d.txHash.Hex(), "log_pos", d.logPos, "from", d.from.Hex(), "amount_micro", d.amount, "block", d.block)
	}
	return nil
}

// assignToSender credits an unassigned deposit to its sender, who has linked the address.
func (w *Worker) assignToSender(ctx context.Context, u UnassignedDeposit) error {
	d, err := assignDeposit(ctx, w.pool, w.ledger, u, u.From, assignedByWatcher)
	if errors.Is(err, ErrDepositAssigned) {
		return nil // an operator was quicker
	}
	if err != nil {
		return err
	}
	w.metrics.deposit(depositTransfer, d.AmountMicro)
	w.logger.InfoContext(ctx, "deposit credited: its sender linked the address", "kind", "transfer", "wallet", d.Wallet,
		"amount_micro", d.AmountMicro, "tx", d.TxHash, "log_pos", d.LogPos, "transfer", d.TransferID)
	return nil
}

// relinkBatch bounds the unassigned deposits the watcher looks at per relinkEvery.
const (
	relinkBatch = 200
	relinkEvery = time.Minute
)

// relink credits the unassigned deposits whose senders have linked their address since
// (oldest looked-at first, a batch per relinkEvery), and resumes the watcher's own interrupted
// assignments.
func (w *Worker) relink(ctx context.Context) error {
	now := w.clock.Now()
	if !w.relinkAt.IsZero() && now.Sub(w.relinkAt) < relinkEvery {
		return nil
	}
	rows, err := w.pool.Query(ctx, `SELECT `+unassignedColumns+` FROM settlement_unassigned
		WHERE chain_id = $1 AND token = $2 AND (status = 'unassigned' OR (status = 'assigning' AND assigned_by = 'watcher'))
		ORDER BY checked_at, id LIMIT $3`, w.chain.ID, lowerHex(w.chain.Token), relinkBatch)
	if err != nil {
		return fmt.Errorf("unassigned deposits: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UnassignedDeposit, error) { return scanUnassigned(r) })
	if err != nil {
		return fmt.Errorf("unassigned deposits: %w", err)
	}
	w.relinkAt = now
	if len(ds) == 0 {
		return nil
	}
	ids, senders := make([]string, len(ds)), make([]string, len(ds))
	for i, d := range ds {
		ids[i], senders[i] = d.ID, d.From
	}
	linked, err := w.wallets.LinkedAmong(ctx, senders)
	if err != nil {
		return fmt.Errorf("linked wallets: %w", err)
	}
	var errs []error
	for _, d := range ds {
		if linked[d.From] {
			errs = append(errs, w.assignToSender(ctx, d))
		}
	}
	if _, err := w.pool.Exec(ctx, `UPDATE settlement_unassigned SET checked_at = $2 WHERE id = ANY($1::UUID[])`, ids, now); err != nil {
		errs = append(errs, fmt.Errorf("unassigned deposits: %w", err))
	}
	return errors.Join(errs...)
}
