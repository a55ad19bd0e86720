package settlement

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/node"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/schema"
)

// simEnv is one test's world: a simulated chain (chain id 1337, `finalized` every 32 blocks)
// with TestUSDC, a fresh PostgreSQL database with the ledger, paywall and settlement tables, the
// real ledger, and a fake clock.
type simEnv struct {
	t        *testing.T
	backend  *simulated.Backend
	client   simulated.Client
	send     chaintest.Sender
	chain    Chain
	db       *testdb.DB
	ledger   *ledger.Ledger
	clock    *fakeClock
	topups   *TopUps
	owner    *ecdsa.PrivateKey // token owner, pauser, blacklister
	hot      *ecdsa.PrivateKey // the hot wallet
	treasury common.Address
	paywall  string // a paywall id with a linked wallet table row
}

// tipFloor is the test chain's floor; the node suggests less, so the floor is what is paid.
var tipFloor = big.NewInt(2_000_000_000)

type simOption func(*node.Config, *ethconfig.Config)

func newSimEnv(t *testing.T, opts ...simOption) *simEnv {
	t.Helper()
	e := &simEnv{t: t, owner: chaintest.Key(t), hot: chaintest.Key(t), clock: newFakeClock()}
	e.treasury = crypto.PubkeyToAddress(chaintest.Key(t).PublicKey)
	alloc := types.GenesisAlloc{}
	for _, k := range []*ecdsa.PrivateKey{e.owner, e.hot} {
		alloc[crypto.PubkeyToAddress(k.PublicKey)] = types.Account{Balance: new(big.Int).Lsh(big.NewInt(1), 100)}
	}
	var o []func(*node.Config, *ethconfig.Config)
	for _, f := range opts {
		o = append(o, f)
	}
	e.backend = simulated.NewBackend(alloc, o...)
	t.Cleanup(func() { _ = e.backend.Close() })
	e.client = e.backend.Client()
	e.send = chaintest.Sender{Client: e.client, Mine: func() { e.backend.Commit() }, TipFloor: big.NewInt(3_000_000_000)}
	token, err := e.send.DeployToken(t.Context(), e.owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := e.client.ChainID(t.Context())
	e.chain = NewChain(id, token, "USD Coin")
	e.chain.TipFloor = tipFloor

	e.db = testdb.New(t, ledger.Migrations, paywall.Migrations, schema.Migrations)
	e.ledger = ledger.New(e.db.Pool, ledger.Options{})
	e.topups, err = NewTopUps(e.db.Pool, []Chain{e.chain}, e.treasury.Hex(), TopUpOptions{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Pool.QueryRow(t.Context(), `
		INSERT INTO paywalls (name, owner, mode, upstream, markup_bps, default_max_tokens, min_completion_tokens, key_hash)
		VALUES ('app', 'dev', 'byok', 'up', 0, 100, 1, decode(md5(random()::TEXT), 'hex')) RETURNING id::TEXT`).Scan(&e.paywall); err != nil {
		t.Fatal(err)
	}
	return e
}

func addrOf(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

// link records a wallet as authorized by a user of the test paywall (the paywall package's
// table, which PaywallWallets reads).
func (e *simEnv) link(wallet common.Address) {
	e.t.Helper()
	e.db.Must(e.t, `INSERT INTO paywall_authorizations (paywall_id, user_id, wallet) VALUES ($1, $2, $3)`,
		e.paywall, "user-"+lowerHex(wallet)[2:10], lowerHex(wallet))
}

// fund gives an account gas money and micro-USDC.
func (e *simEnv) fund(k *ecdsa.PrivateKey, micro int64) {
	e.t.Helper()
	e.sendNative(addrOf(k))
	if micro > 0 {
		if err := e.send.Mint(e.t.Context(), e.owner, e.chain.Token, addrOf(k), micro); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *simEnv) sendNative(to common.Address) {
	e.t.Helper()
	ctx := e.t.Context()
	nonce, _ := e.client.PendingNonceAt(ctx, addrOf(e.owner))
	head, _ := e.client.HeaderByNumber(ctx, nil)
	tx, err := types.SignNewTx(e.owner, types.LatestSignerForChainID(e.chain.ChainID()), &types.DynamicFeeTx{
		ChainID: e.chain.ChainID(), Nonce: nonce, GasTipCap: big.NewInt(3e9), GasFeeCap: new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), big.NewInt(3e9)),
		Gas: 21000, To: &to, Value: new(big.Int).Lsh(big.NewInt(1), 70),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.client.SendTransaction(ctx, tx); err != nil {
		e.t.Fatal(err)
	}
	e.backend.Commit()
}

// worker is a new worker process for the hot wallet; pass another client or ledger to inject a
// failure at that boundary.
func (e *simEnv) worker(client ChainClient, l Ledger) *Worker {
	e.t.Helper()
	return e.workerWith(func(c *WorkerConfig) {
		if client != nil {
			c.Client = client
		}
		if l != nil {
			c.Ledger = l
		}
	})
}

// workerWith is a new worker process whose configuration mod adjusts.
func (e *simEnv) workerWith(mod func(*WorkerConfig)) *Worker {
	e.t.Helper()
	cfg := WorkerConfig{
		Chain: e.chain, Client: e.client, Signer: NewLocalSignerFromKey(e.hot), Pool: e.db.Pool, Ledger: e.ledger,
		Wallets: PaywallWallets{Pool: e.db.Pool}, Treasury: e.treasury, Clock: e.clock,
		LeaseTTL: time.Minute, StuckAfter: 3 * time.Minute, RetryBackoff: time.Minute,
		MaxPayoutMicro: 50_000_000, DailyPayoutMicro: 80_000_000,
	}
	mod(&cfg)
	w, err := NewWorker(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Check(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	return w
}

// tick runs one round and fails the test on an error.
func (e *simEnv) tick(w *Worker) {
	e.t.Helper()
	if err := w.Tick(e.t.Context()); err != nil {
		e.t.Fatalf("tick: %v", err)
	}
}

// commit mines n blocks.
func (e *simEnv) commit(n int) {
	for range n {
		e.backend.Commit()
	}
}

// finalize mines until everything mined so far is final (the simulated backend finalizes
// every 32 blocks), then ticks.
func (e *simEnv) finalize(w *Worker) {
	e.t.Helper()
	e.commit(33)
	e.tick(w)
}

// settle ticks, mines and finalizes until cond holds (bounded).
func (e *simEnv) until(w *Worker, what string, cond func() bool) {
	e.t.Helper()
	for range 20 {
		if cond() {
			return
		}
		e.tick(w)
		e.backend.Commit()
		e.finalize(w)
	}
	if !cond() {
		e.t.Fatalf("never reached: %s", what)
	}
}

func (e *simEnv) balance(wallet common.Address) int64 {
	e.t.Helper()
	b, err := e.ledger.Balance(e.t.Context(), lowerHex(wallet))
	if errors.Is(err, ledger.ErrUnknownAccount) {
		return 0
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return b.PostedMicro
}

func (e *simEnv) tokenBalance(a common.Address) int64 {
	e.t.Helper()
	b, err := e.send.BalanceOf(e.t.Context(), e.chain.Token, a)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// topUp creates an intent for the user's wallet, signs it as the wallet would and submits it.
func (e *simEnv) topUp(user *ecdsa.PrivateKey, micro int64) TopUp {
	e.t.Helper()
	in, err := e.topups.Create(e.t.Context(), TopUpRequest{Wallet: addrOf(user).Hex(), AmountMicro: micro})
	if err != nil {
		e.t.Fatal(err)
	}
	sig := signHex(e.t, e.chain, user, e.intentAuth(in.ID))
	tu, err := e.topups.Submit(e.t.Context(), in.ID, sig)
	if err != nil {
		e.t.Fatal(err)
	}
	return tu
}

func (e *simEnv) intentAuth(id string) Authorization {
	e.t.Helper()
	row, err := loadTopUp(e.t.Context(), e.db.Pool, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return row.authorization()
}

func (e *simEnv) topUpStatus(id string) TopUp {
	e.t.Helper()
	tu, err := e.topups.Get(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return tu
}

// earn gives the test paywall earnings: it charges a funded wallet in the ledger.
func (e *simEnv) earn(wallet common.Address, micro int64) {
	e.t.Helper()
	_, err := e.ledger.Charge(e.t.Context(), ledger.ChargeRequest{
		Key: "charge-" + lowerHex(wallet) + "-" + time.Now().String(), Wallet: lowerHex(wallet), Paywall: e.paywall,
		Split: ledger.Split{DeveloperMicro: micro},
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// requestPayout asks the ledger for a payout of the test paywall's earnings to `to`.
func (e *simEnv) requestPayout(to common.Address, micro int64) ledger.Payout {
	e.t.Helper()
	p, err := e.ledger.RequestPayout(e.t.Context(), ledger.PayoutRequest{
		Key: "payout-" + lowerHex(to) + "-" + time.Now().String(), Paywall: e.paywall, ChainID: e.chain.ID,
		To: lowerHex(to), AmountMicro: micro,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *simEnv) payout(id string) ledger.Payout {
	e.t.Helper()
	p, err := e.ledger.GetPayout(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// earnedUser funds a linked user on chain and has the worker credit a plain transfer of
// `micro` from it, so that the ledger holds real, final money for charges and payouts.
func (e *simEnv) earnedUser(w *Worker, micro int64) *ecdsa.PrivateKey {
	e.t.Helper()
	user := chaintest.Key(e.t)
	e.fund(user, micro)
	e.link(addrOf(user))
	e.tick(w) // the watcher's first run starts after the current final block
	if _, err := e.send.Transfer(e.t.Context(), user, e.chain.Token, e.treasury, micro); err != nil {
		e.t.Fatal(err)
	}
	e.finalize(w)
	if got := e.balance(addrOf(user)); got != micro {
		e.t.Fatalf("user credited %d, want %d", got, micro)
	}
	return user
}

// checkInvariants runs the ledger's invariant checker and checks that its treasury account
// agrees with the chain: what the ledger says came in through
// the watcher and went out through payouts.
func (e *simEnv) checkInvariants() {
	e.t.Helper()
	checkLedgerSums(e.t, e.db)
	ctx := e.t.Context()
	var treasuryPosted, credited, settled int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT COALESCE(SUM(posted), 0) FROM ledger_balances WHERE kind = 'treasury' AND ref = $1`, e.chain.ID).Scan(&treasuryPosted); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.Pool.QueryRow(ctx, `SELECT COALESCE(SUM(amount_micro), 0) FROM settlement_deposits WHERE chain_id = $1 AND status = 'credited'`, e.chain.ID).Scan(&credited); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.Pool.QueryRow(ctx, `SELECT COALESCE(SUM(amount), 0) FROM ledger_payouts WHERE chain_id = $1 AND status = 'settled'`, e.chain.ID).Scan(&settled); err != nil {
		e.t.Fatal(err)
	}
	if treasuryPosted != settled-credited {
		e.t.Errorf("treasury account %d != settled payouts %d - credited deposits %d", treasuryPosted, settled, credited)
	}
	var ledgerDeposits int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM ledger_transfers WHERE kind = 'deposit'`).Scan(&ledgerDeposits); err != nil {
		e.t.Fatal(err)
	}
	var rows int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM settlement_deposits WHERE status = 'credited'`).Scan(&rows); err != nil {
		e.t.Fatal(err)
	}
	if ledgerDeposits != rows {
		e.t.Errorf("%d deposit transfers in the ledger, %d credited deposits", ledgerDeposits, rows)
	}
}

// checkLedgerSums runs the ledger's own invariant checker (ledgercheck: every transfer sums to
// zero, balances equal their entries and open holds, money is conserved, nothing constrained is
// negative, in-flight money equals the requested payouts, each payout has one transfer per
// step, …) on the test's database.
func checkLedgerSums(t *testing.T, db *testdb.DB) {
	t.Helper()
	problems, err := ledgercheck.Check(t.Context(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("ledger invariant broken: %s", p)
	}
}

// fakeNode is a ChainClient at the process boundary that can lose broadcasts: with
// dropSends set, SendTransaction reports an error and the node never sees the transaction,
// as if the process died right before broadcasting.
type fakeNode struct {
	ChainClient
	dropSends atomic.Bool
	sends     atomic.Int64
}

var errCrash = errors.New("fakeNode: the process died before this call reached the node")

func (f *fakeNode) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	f.sends.Add(1)
	if f.dropSends.Load() {
		return errCrash
	}
	return f.ChainClient.SendTransaction(ctx, tx)
}

// crashingLedger is the ledger at the process boundary, dying once before SettlePayout
// reaches it (the process crashed between the final receipt and the ledger write).
type crashingLedger struct {
	Ledger
	crashSettle atomic.Bool
}

func (c *crashingLedger) SettlePayout(ctx context.Context, id, hash string) (ledger.Payout, error) {
	if c.crashSettle.CompareAndSwap(true, false) {
		return ledger.Payout{}, errCrash
	}
	return c.Ledger.SettlePayout(ctx, id, hash)
}

// hasErr reports whether err's text contains s.
func hasErr(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

type ecdsaKey = ecdsa.PrivateKey

func bigInt(v int64) *big.Int { return big.NewInt(v) }

// replaceWithSelfTransfer sends, at the given nonce, a zero-value transfer to oneself with a
// high tip, so that it takes that nonce instead of the pooled transaction.
func (e *simEnv) replaceWithSelfTransfer(k *ecdsa.PrivateKey, nonce uint64) {
	e.t.Helper()
	head, _ := e.client.HeaderByNumber(e.t.Context(), nil)
	tip := big.NewInt(100_000_000_000)
	to := addrOf(k)
	tx, err := types.SignNewTx(k, types.LatestSignerForChainID(e.chain.ChainID()), &types.DynamicFeeTx{
		ChainID: e.chain.ChainID(), Nonce: nonce, GasTipCap: tip, GasFeeCap: new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip),
		Gas: 21000, To: &to,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	// The pool catches up with a reorg asynchronously; until then it still sees the old nonce.
	for try := 0; ; try++ {
		err := e.client.SendTransaction(e.t.Context(), tx)
		if err == nil {
			return
		}
		if try == 100 || !strings.Contains(err.Error(), "nonce too low") {
			e.t.Fatalf("replacement: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
