package settlement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// TopUpStatus is where a top-up is.
type TopUpStatus string

// Top-up states. A top-up moves forward only; credited is reached from any state once its
// authorization is used on chain and final (someone else may relay a signed authorization).
const (
	TopUpAwaitingSignature TopUpStatus = "awaiting_signature"
	TopUpSigned            TopUpStatus = "signed"    // signature checked, waiting for the relay
	TopUpSubmitted         TopUpStatus = "submitted" // on its way on chain
	TopUpCredited          TopUpStatus = "credited"  // final on chain and in the wallet
	TopUpFailed            TopUpStatus = "failed"    // see Reason; no money moved
)

// TopUpRequest asks a wallet to move AmountMicro of USDC to the treasury on a chain.
type TopUpRequest struct {
	Wallet      string // 0x address that signs and pays
	AmountMicro int64
	ChainID     string // decimal chain id; "" means the first configured chain
	PaywallID   string // where the user came from (informational)
	UserID      string
}

// TopUpIntent is what the hosted page needs to ask the wallet for a signature.
type TopUpIntent struct {
	ID string
	// TypedData is the EIP-712 TransferWithAuthorization (wallet → treasury, nonce =
	// keccak256(ID)) for eth_signTypedData_v4.
	TypedData   json.RawMessage
	ValidBefore time.Time
}

// TopUp is a top-up's state.
type TopUp struct {
	ID          string
	ChainID     string
	Wallet      string // lower-case 0x address
	AmountMicro int64
	Status      TopUpStatus
	TxHash      string // the transaction that moved the money, once known
	Reason      string // why it failed, or what it waits for
	PaywallID   string
	UserID      string
	ValidBefore time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Deposit is USDC that arrived at the treasury from a wallet, as the watcher saw it.
type Deposit struct {
	ChainID     string
	TxHash      string
	LogPos      int // position of the Transfer log in its receipt
	Wallet      string
	AmountMicro int64
	BlockNumber uint64
	Kind        string // "topup" (a relayed authorization) or "transfer" (a plain transfer)
	TopUpID     string // for kind topup
	Status      string // "pending" (seen, not final), "credited" or "dropped" (reorged away)
	SeenAt      time.Time
}

// TopUpOptions tune TopUps. Zero values take the defaults of config.Settle.
type TopUpOptions struct {
	Clock    Clock
	Validity time.Duration // how long the signature request stays valid (default 1h)
	MinMicro int64         // smallest top-up (default 0.10 USDC)
	MaxMicro int64         // largest top-up (default 10,000 USDC)
	Logger   *slog.Logger
	// Contracts asks contract wallets whether they signed (EIP-1271 isValidSignature over
	// eth_call, on the top-up's chain): eip1271.Chains with a client per chain id. Nil: only
	// EOA signatures are accepted.
	Contracts eip1271.ContractCaller
}

// TopUps creates top-up intents and takes their signatures. It only touches the database, so
// the HTTP API can use it without a chain connection; the Worker does the chain part.
type TopUps struct {
	pool     *pgxpool.Pool
	chains   []Chain
	treasury common.Address
	opts     TopUpOptions
}

// validAfterSlack backdates validAfter so that a chain whose clock trails ours still accepts
// the authorization at once.
const validAfterSlack = 10 * time.Minute

// submitMargin is the least time an authorization must have left to be worth relaying.
const submitMargin = time.Minute

// NewTopUps returns TopUps for the configured chains and treasury.
func NewTopUps(pool *pgxpool.Pool, chains []Chain, treasury string, opts TopUpOptions) (*TopUps, error) {
	if !common.IsHexAddress(treasury) {
		return nil, fmt.Errorf("settlement: treasury %q is not an address", treasury)
	}
	if len(chains) == 0 {
		return nil, errors.New("settlement: no chains configured (settle.chains)")
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Validity <= 0 {
		opts.Validity = time.Hour
	}
	if opts.MinMicro <= 0 {
		opts.MinMicro = 100_000
	}
	if opts.MaxMicro <= 0 {
		opts.MaxMicro = 10_000_000_000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &TopUps{pool: pool, chains: chains, treasury: common.HexToAddress(treasury), opts: opts}, nil
}

// Chains lists the configured chains, first the default one.
func (t *TopUps) Chains() []Chain { return append([]Chain(nil), t.chains...) }

func (t *TopUps) chain(id string) (Chain, error) {
	if id == "" {
		return t.chains[0], nil
	}
	for _, c := range t.chains {
		if c.ID == id {
			return c, nil
		}
	}
	return Chain{}, fmt.Errorf("%w: %q", ErrUnknownChain, id)
}

// Create records a top-up intent and returns the typed data the wallet must sign.
// It can return: ErrInvalidTopUp, ErrUnknownChain.
func (t *TopUps) Create(ctx context.Context, r TopUpRequest) (TopUpIntent, error) {
	if !isAddress(r.Wallet) {
		return TopUpIntent{}, fmt.Errorf("%w: wallet must be a 0x address of 40 hex digits", ErrInvalidTopUp)
	}
	if r.AmountMicro < t.opts.MinMicro || r.AmountMicro > t.opts.MaxMicro {
		return TopUpIntent{}, fmt.Errorf("%w: amount must be between %s and %s USDC", ErrInvalidTopUp,
			pricing.FormatUSDC(t.opts.MinMicro), pricing.FormatUSDC(t.opts.MaxMicro))
	}
	c, err := t.chain(r.ChainID)
	if err != nil {
		return TopUpIntent{}, err
	}
	now := t.opts.Clock.Now()
	validAfter := now.Add(-validAfterSlack).Unix()
	validBefore := now.Add(t.opts.Validity).Unix()
	wallet := common.HexToAddress(r.Wallet)

	var id string
	if err := t.pool.QueryRow(ctx, `SELECT gen_random_uuid()::TEXT`).Scan(&id); err != nil {
		return TopUpIntent{}, fmt.Errorf("settlement: new top-up id: %w", err)
	}
	nonce := NonceFor(id)
	_, err = t.pool.Exec(ctx, `
		INSERT INTO settlement_topups (id, chain_id, token, wallet, treasury, amount_micro, nonce,
			valid_after, valid_before, paywall_id, user_id, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'awaiting_signature')`,
		id, c.ID, lowerHex(c.Token), lowerHex(wallet), lowerHex(t.treasury), r.AmountMicro,
		strings.ToLower(nonce.Hex()), validAfter, validBefore, r.PaywallID, r.UserID)
	if err != nil {
		return TopUpIntent{}, fmt.Errorf("settlement: store top-up: %w", err)
	}
	row := topUpRow{
		id: id, chainID: c.ID, wallet: wallet, treasury: t.treasury, amountMicro: r.AmountMicro,
		nonce: nonce, validAfter: validAfter, validBefore: validBefore,
	}
	return t.intent(c, row)
}

// Intent returns the typed data of an existing top-up again (the page was reloaded).
// It can return: ErrTopUpNotFound, ErrUnknownChain.
func (t *TopUps) Intent(ctx context.Context, id string) (TopUpIntent, error) {
	row, err := loadTopUp(ctx, t.pool, id)
	if err != nil {
		return TopUpIntent{}, err
	}
	c, err := t.chain(row.chainID)
	if err != nil {
		return TopUpIntent{}, err
	}
	return t.intent(c, row)
}

func (t *TopUps) intent(c Chain, row topUpRow) (TopUpIntent, error) {
	td, err := c.TypedData(row.authorization())
	if err != nil {
		return TopUpIntent{}, err
	}
	return TopUpIntent{ID: row.id, TypedData: td, ValidBefore: time.Unix(row.validBefore, 0)}, nil
}

// Submit takes the wallet's signature (hex, from eth_signTypedData_v4) of the top-up's typed
// data: an EOA's 65 bytes, or a contract wallet's signature of any form it accepts. It checks
// that the top-up's wallet signed exactly that authorization (see checkSigner), still valid for
// at least a minute, and queues it for the relay. Submitting again after success returns the
// top-up as it is.
// It can return: ErrTopUpNotFound, ErrTopUpExpired, ErrBadSignature, ErrContractCall,
// ErrUnknownChain.
func (t *TopUps) Submit(ctx context.Context, id, signatureHex string) (TopUp, error) {
	sig, err := ParseSignature(signatureHex)
	if err != nil {
		return TopUp{}, err
	}
	row, err := loadTopUp(ctx, t.pool, id)
	if err != nil {
		return TopUp{}, err
	}
	return t.submit(ctx, row, SignedAuthorization{Authorization: row.authorization(), Signature: sig})
}

// SubmitAuthorization takes a signed authorization payload (see DecodeAuthorizationPayload),
// for pages and clients that post what the wallet signed. Every field must be the top-up's:
// from its wallet, to our treasury, its amount, window and nonce.
// It can return: ErrTopUpNotFound, ErrTopUpExpired, ErrBadAuthorization,
// ErrAuthorizationMismatch, ErrBadSignature, ErrContractCall, ErrUnknownChain.
func (t *TopUps) SubmitAuthorization(ctx context.Context, id string, payload []byte) (TopUp, error) {
	sa, err := DecodeAuthorizationPayload(payload)
	if err != nil {
		return TopUp{}, err
	}
	row, err := loadTopUp(ctx, t.pool, id)
	if err != nil {
		return TopUp{}, err
	}
	if err := matchIntent(row.authorization(), sa.Authorization); err != nil {
		return TopUp{}, err
	}
	return t.submit(ctx, row, sa)
}

// matchIntent reports how a signed authorization differs from the intent's, if it does.
func matchIntent(want, got Authorization) error {
	switch {
	case got.From != want.From:
		return fmt.Errorf("%w: from is %s, the top-up's wallet is %s", ErrAuthorizationMismatch, got.From.Hex(), want.From.Hex())
	case got.To != want.To:
		return fmt.Errorf("%w: to is %s, not the treasury %s", ErrAuthorizationMismatch, got.To.Hex(), want.To.Hex())
	case got.Value.Cmp(want.Value) != 0:
		return fmt.Errorf("%w: value is %s, the top-up is for %s", ErrAuthorizationMismatch, got.Value, want.Value)
	case got.ValidAfter != want.ValidAfter || got.ValidBefore != want.ValidBefore:
		return fmt.Errorf("%w: validity window (%d, %d) is not the top-up's (%d, %d)", ErrAuthorizationMismatch,
			got.ValidAfter, got.ValidBefore, want.ValidAfter, want.ValidBefore)
	case got.Nonce != want.Nonce:
		return fmt.Errorf("%w: nonce is not the top-up's", ErrAuthorizationMismatch)
	}
	return nil
}

func (t *TopUps) submit(ctx context.Context, row topUpRow, sa SignedAuthorization) (TopUp, error) {
	c, err := t.chain(row.chainID)
	if err != nil {
		return TopUp{}, err
	}
	// The treasury and the token are the configured ones, not only the stored ones: a top-up
	// made before a configuration change is not relayed to an address we no longer watch.
	if row.treasury != t.treasury || row.token != c.Token {
		return TopUp{}, fmt.Errorf("%w: the top-up was made for another treasury or token; start a new one", ErrTopUpExpired)
	}
	if err := t.checkSigner(ctx, c, sa); err != nil {
		return TopUp{}, err
	}
	if row.status != TopUpAwaitingSignature {
		return row.public(), nil
	}
	if t.opts.Clock.Now().Add(submitMargin).Unix() >= row.validBefore {
		return TopUp{}, fmt.Errorf("%w: its authorization expired at %s", ErrTopUpExpired, time.Unix(row.validBefore, 0).UTC().Format(time.RFC3339))
	}
	_, err = t.pool.Exec(ctx, `
		UPDATE settlement_topups SET status = 'signed', signature = $2, updated_at = now(), next_attempt_at = $3
		WHERE id = $1 AND status = 'awaiting_signature'`, row.id, sa.SignatureHex(), t.opts.Clock.Now())
	if err != nil {
		return TopUp{}, fmt.Errorf("settlement: store signature: %w", err)
	}
	t.opts.Logger.InfoContext(ctx, "top-up signed", "topup", row.id, "wallet", row.wallet.Hex(), "amount_micro", row.amountMicro)
	return t.Get(ctx, row.id)
}

// checkSigner reports (with nil) whether the authorization's From signed it in a way the token
// accepts. An EOA's signature is 65 bytes that recover to From (what the relay sends in the
// v,r,s form). Anything else is asked of From as an EIP-1271 contract wallet, over the EIP-712
// digest, at the chain's latest block (what the relay's bytes form makes the token ask). An
// ERC-6492 signature of a wallet not deployed yet is checked by simulating its deployment
// (eip1271.Check, with the gas bound the relay's deployment keeps); the relay deploys it before
// the transfer. Without a ContractCaller only the first is possible.
// It can return: ErrBadSignature, ErrContractCall.
func (t *TopUps) checkSigner(ctx context.Context, c Chain, sa SignedAuthorization) error {
	var why string
	if eip1271.IsWrapped(sa.Signature) {
		why = "an ERC-6492 signature (a smart account's, possibly not deployed yet)"
	} else {
		signer, err := c.Recover(sa)
		if err == nil && signer == sa.From {
			return nil
		}
		if err != nil {
			why = fmt.Sprintf("not an ECDSA signature by the top-up's wallet %s (%s)", sa.From.Hex(),
				strings.TrimPrefix(err.Error(), ErrBadSignature.Error()+": "))
		} else {
			why = fmt.Sprintf("an ECDSA signature by %s, not by the top-up's wallet %s", signer.Hex(), sa.From.Hex())
		}
	}
	if t.opts.Contracts == nil {
		return fmt.Errorf("%w: %s, and contract-wallet signatures (EIP-1271) cannot be checked here (no node to ask)", ErrBadSignature, why)
	}
	if !c.chainID.IsUint64() {
		return fmt.Errorf("%w: %s, and chain id %s is too large to ask a contract wallet", ErrBadSignature, why, c.chainID)
	}
	verdict, err := eip1271.Check(ctx, t.opts.Contracts, c.chainID.Uint64(), sa.From, c.Digest(sa.Authorization), sa.Signature, eip1271.MaxDeployGas)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrContractCall, err)
	case verdict != eip1271.Accepted:
		return fmt.Errorf("%w: %s, and %s", ErrBadSignature, why, verdict.Reason(sa.From))
	}
	return nil
}

// Get reads a top-up.
// It can return: ErrTopUpNotFound.
func (t *TopUps) Get(ctx context.Context, id string) (TopUp, error) {
	row, err := loadTopUp(ctx, t.pool, id)
	if err != nil {
		return TopUp{}, err
	}
	return row.public(), nil
}

// PendingDeposits lists a wallet's deposits that the watcher saw on chain but that are not
// final yet (so not in the ledger balance), oldest first.
func (t *TopUps) PendingDeposits(ctx context.Context, wallet string) ([]Deposit, error) {
	rows, err := t.pool.Query(ctx, `
		SELECT chain_id, tx_hash, log_pos, wallet, amount_micro, block_number, kind,
			COALESCE(topup_id::TEXT, ''), status, seen_at
		FROM settlement_deposits WHERE wallet = $1 AND status = 'pending'
		ORDER BY seen_at, tx_hash, log_pos`, strings.ToLower(strings.TrimSpace(wallet)))
	if err != nil {
		return nil, fmt.Errorf("settlement: pending deposits: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Deposit, error) {
		var d Deposit
		var block int64
		err := r.Scan(&d.ChainID, &d.TxHash, &d.LogPos, &d.Wallet, &d.AmountMicro, &block, &d.Kind, &d.TopUpID, &d.Status, &d.SeenAt)
		d.BlockNumber = toUint64(block)
		return d, err
	})
}

// topUpRow is a settlement_topups row.
type topUpRow struct {
	id          string
	chainID     string
	token       common.Address
	wallet      common.Address
	treasury    common.Address
	amountMicro int64
	nonce       common.Hash
	validAfter  int64
	validBefore int64
	paywallID   string
	userID      string
	status      TopUpStatus
	signature   string
	txHash      string
	reason      string
	createdAt   time.Time
	updatedAt   time.Time
}

const topUpColumns = `id::TEXT, chain_id, token, wallet, treasury, amount_micro, nonce, valid_after,
	valid_before, paywall_id, user_id, status, signature, tx_hash, reason, created_at, updated_at`

func scanTopUp(r pgx.Row) (topUpRow, error) {
	var row topUpRow
	var token, wallet, treasury, nonce string
	err := r.Scan(&row.id, &row.chainID, &token, &wallet, &treasury, &row.amountMicro, &nonce,
		&row.validAfter, &row.validBefore, &row.paywallID, &row.userID, &row.status, &row.signature,
		&row.txHash, &row.reason, &row.createdAt, &row.updatedAt)
	row.token = common.HexToAddress(token)
	row.wallet = common.HexToAddress(wallet)
	row.treasury = common.HexToAddress(treasury)
	row.nonce = common.HexToHash(nonce)
	return row, err
}

func loadTopUp(ctx context.Context, pool *pgxpool.Pool, id string) (topUpRow, error) {
	if !isUUID(id) {
		return topUpRow{}, fmt.Errorf("%w: %q", ErrTopUpNotFound, id)
	}
	row, err := scanTopUp(pool.QueryRow(ctx, `SELECT `+topUpColumns+` FROM settlement_topups WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return topUpRow{}, fmt.Errorf("%w: %s", ErrTopUpNotFound, id)
	}
	if err != nil {
		return topUpRow{}, fmt.Errorf("settlement: read top-up: %w", err)
	}
	return row, nil
}

func (r topUpRow) authorization() Authorization {
	return Authorization{
		From:        r.wallet,
		To:          r.treasury,
		Value:       big.NewInt(r.amountMicro),
		ValidAfter:  toUint64(r.validAfter),
		ValidBefore: toUint64(r.validBefore),
		Nonce:       r.nonce,
	}
}

func (r topUpRow) public() TopUp {
	return TopUp{
		ID: r.id, ChainID: r.chainID, Wallet: lowerHex(r.wallet), AmountMicro: r.amountMicro,
		Status: r.status, TxHash: r.txHash, Reason: r.reason, PaywallID: r.paywallID, UserID: r.userID,
		ValidBefore: time.Unix(r.validBefore, 0), CreatedAt: r.createdAt, UpdatedAt: r.updatedAt,
	}
}

func isAddress(s string) bool {
	s = strings.TrimSpace(s)
	return len(s) == 42 && strings.HasPrefix(s, "0x") && common.IsHexAddress(s)
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F'):
		default:
			return false
		}
	}
	return true
}
