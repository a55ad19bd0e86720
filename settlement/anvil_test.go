package settlement

import (
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/schema"
)

// TestAnvilTopUpAndPayout runs a top-up and a payout end to end on a real node: anvil with
// interval mining (1 s blocks), a 30 gwei base fee and Polygon's 25 gwei tip floor, `finalized`
// trailing the head by about two blocks. The treasury is the hot wallet, so top-ups fund
// payouts. The user holds no native currency at all: the relay pays the gas. It runs twice: with
// the hot wallet's key in the process (LocalSigner), and with the key left in a remote signer
// (RPCSigner; anvil holds the key of one of its own accounts and signs over JSON-RPC, as
// Web3Signer would).
func TestAnvilTopUpAndPayout(t *testing.T) {
	t.Run("local signer", func(t *testing.T) { anvilTopUpAndPayout(t, false) })
	t.Run("remote signer", func(t *testing.T) { anvilTopUpAndPayout(t, true) })
}

func anvilTopUpAndPayout(t *testing.T, remote bool) {
	ctx := t.Context()
	opts := chaintest.AnvilOptions{}
	if remote {
		opts.SigningAccounts = 1
	}
	node := chaintest.StartAnvil(t, opts)
	owner, user := chaintest.Key(t), chaintest.Key(t)
	payee := common.HexToAddress("0x000000000000000000000000000000000000a11c")
	funded := []common.Address{addrOf(owner)}
	var signer Signer
	if remote {
		rs, err := NewRPCSigner(ctx, node.URL, node.SigningAccount(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rs.Close)
		signer = rs
	} else {
		hot := chaintest.Key(t)
		signer = NewLocalSignerFromKey(hot)
		funded = append(funded, addrOf(hot))
	}
	node.Fund(t, funded...)
	polygonFloor := big.NewInt(25_000_000_000)
	send := chaintest.Sender{Client: node.Client, TipFloor: polygonFloor}
	tokenAddr, err := send.DeployToken(ctx, owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	if err := send.Mint(ctx, owner, tokenAddr, addrOf(user), 50_000_000); err != nil {
		t.Fatal(err)
	}
	chain := NewChain(node.ChainID, tokenAddr, "USD Coin")
	chain.TipFloor = polygonFloor

	db, l, topups, w := newAnvilSettlement(t, node, chain, signer, TopUpOptions{})
	treasury := signer.Address()
	runUntil := func(what string, cond func() bool) {
		t.Helper()
		tickUntil(t, w, cond, func() string { return what })
	}

	// Top-up: 20 USDC, signed by the user's wallet, relayed by the hot wallet.
	in, err := topups.Create(ctx, TopUpRequest{Wallet: addrOf(user).Hex(), AmountMicro: 20_000_000})
	if err != nil {
		t.Fatal(err)
	}
	row, err := loadTopUp(ctx, db.Pool, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topups.Submit(ctx, in.ID, signHex(t, chain, user, row.authorization())); err != nil {
		t.Fatal(err)
	}
	// gasOf waits until the worker has marked ref's transaction final (it may credit the
	// deposit a tick before it records its own transaction as final) and returns its gas.
	gasOf := func(ref string) uint64 {
		t.Helper()
		var hash string
		runUntil("the transaction of "+ref+" final", func() bool {
			err := db.Pool.QueryRow(ctx, `SELECT mined_hash FROM settlement_txs WHERE ref = $1 AND status = 'final'`, ref).Scan(&hash)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				t.Fatal(err)
			}
			return err == nil
		})
		r, err := node.Client.TransactionReceipt(ctx, common.HexToHash(hash))
		if err != nil {
			t.Fatal(err)
		}
		return r.GasUsed
	}
	sawPending := false
	runUntil("top-up credited", func() bool {
		if p, _ := topups.PendingDeposits(ctx, addrOf(user).Hex()); len(p) == 1 {
			sawPending = true
		}
		tu, err := topups.Get(ctx, in.ID)
		return err == nil && tu.Status == TopUpCredited
	})
	if b, err := l.Balance(ctx, addrOf(user).Hex()); err != nil || b.PostedMicro != 20_000_000 {
		t.Fatalf("wallet balance %+v, %v", b, err)
	}
	if !sawPending {
		t.Log("the deposit became final before a tick saw it pending (anvil finalizes within ~2 blocks)")
	}
	relayGas := gasOf(in.ID)

	// The user spends 15 USDC at a paywall; the developer withdraws 12.
	pw := "0b6a3c7e-4f1d-4b8a-9c2e-5d7f8a9b0c1d"
	if _, err := l.Charge(ctx, ledger.ChargeRequest{Key: "anvil-charge", Wallet: addrOf(user).Hex(), Paywall: pw,
		Split: ledger.Split{FeeMicro: 1_500_000, DeveloperMicro: 13_500_000}}); err != nil {
		t.Fatal(err)
	}
	p, err := l.RequestPayout(ctx, ledger.PayoutRequest{Key: "anvil-payout", Paywall: pw, ChainID: chain.ID, To: payee.Hex(), AmountMicro: 12_000_000})
	if err != nil {
		t.Fatal(err)
	}
	runUntil("payout settled", func() bool {
		got, err := l.GetPayout(ctx, p.ID)
		return err == nil && got.Status == ledger.PayoutSettled
	})
	if got, _ := send.BalanceOf(ctx, tokenAddr, payee); got != 12_000_000 {
		t.Fatalf("payee holds %d, want 12000000", got)
	}
	if got, _ := send.BalanceOf(ctx, tokenAddr, treasury); got != 8_000_000 {
		t.Fatalf("treasury holds %d, want 8000000", got)
	}
	payoutGas := gasOf(p.ID)
	t.Logf("anvil gas: top-up relay (transferWithAuthorization) %d, payout %d", relayGas, payoutGas)
	if userGas, _ := node.Client.BalanceAt(ctx, addrOf(user), nil); userGas.Sign() != 0 {
		t.Fatalf("the user spent or received native currency: %s", userGas)
	}
	var minTip string
	if err := db.Pool.QueryRow(ctx, `SELECT min(tip_wei::NUMERIC)::TEXT FROM settlement_tx_attempts`).Scan(&minTip); err != nil {
		t.Fatal(err)
	}
	if got, _ := new(big.Int).SetString(minTip, 10); got.Cmp(polygonFloor) < 0 {
		t.Fatalf("a transaction tipped %s, under the 25 gwei floor", minTip)
	}
	checkLedgerSums(t, db)
	var credited int64
	if err := db.Pool.QueryRow(ctx, `SELECT COALESCE(SUM(amount_micro), 0) FROM settlement_deposits WHERE status = 'credited'`).Scan(&credited); err != nil {
		t.Fatal(err)
	}
	if credited != 20_000_000 {
		t.Fatalf("credited deposits %d, want 20000000", credited)
	}
}

// newAnvilSettlement is the settlement side of an anvil test: a database with the ledger's,
// paywalls' and settlement's tables, the ledger, the top-ups (with opts) and a checked worker
// for the chain, whose hot wallet is also the treasury (so top-ups fund payouts).
func newAnvilSettlement(t *testing.T, node *chaintest.Anvil, chain Chain, signer Signer, opts TopUpOptions) (*testdb.DB, *ledger.Ledger, *TopUps, *Worker) {
	t.Helper()
	db := testdb.New(t, ledger.Migrations, paywall.Migrations, schema.Migrations)
	l := ledger.New(db.Pool, ledger.Options{})
	topups, err := NewTopUps(db.Pool, []Chain{chain}, signer.Address().Hex(), opts)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(WorkerConfig{
		Chain: chain, Client: node.Client, Signer: signer, Pool: db.Pool, Ledger: l,
		Wallets: PaywallWallets{Pool: db.Pool}, Treasury: signer.Address(), RetryBackoff: time.Second, StuckAfter: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	return db, l, topups, w
}

// tickUntil runs w's ticks until cond holds, or fails the test after 90 s (anvil mines a block a
// second); state says, then, where things stand.
func tickUntil(t *testing.T, w *Worker, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("anvil: never reached: %s", state())
		}
		if err := w.Tick(t.Context()); err != nil {
			t.Logf("tick: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
