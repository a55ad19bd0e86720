package settlement

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// TestAnvilCounterfactualTopUp runs top-ups from counterfactual wallets (ERC-6492) on anvil,
// with TestUSDC, TestWalletFactory and its TestWallets (never a real Coinbase Smart Wallet):
//   - a wallet without code that holds USDC signs with a wrapper; submit accepts it (the
//     deployless check) and stores it as given; the relay deploys the wallet with the factory
//     call from the hot wallet (one 'deploy' transaction, across a restart of the worker), then
//     relays in the bytes form with the inner signature; credited once;
//   - a wrapper whose factory call deploys another wallet, or whose inner signature is a
//     stranger's, is refused at submit;
//   - a wallet deployed by someone else between submit and relay is not deployed again: the
//     relay goes straight to the transfer;
//   - a stored wrapper whose factory call reverts at relay time fails the top-up with a reason,
//     sends nothing and moves no money; so does one whose deployment of ours was mined but
//     reverted, with the wallet still without code.
func TestAnvilCounterfactualTopUp(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvilWithFactory(t, chaintest.AnvilOptions{})
	send, factory := node.Send, node.Factory
	tokenOwner, owner, stranger, hot := node.Funded, chaintest.Key(t), chaintest.Key(t), chaintest.Key(t)
	node.Fund(t, addrOf(hot))
	tokenAddr, err := send.DeployToken(ctx, tokenOwner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	wallet := func(o common.Address, salt byte) (common.Address, []byte) {
		t.Helper()
		a, calldata, err := send.CounterfactualWallet(ctx, factory, o, common.Hash{salt})
		if err != nil {
			t.Fatal(err)
		}
		return a, calldata
	}
	lazy, deployLazy := wallet(addrOf(owner), 1)      // deployed by our relay
	early, deployEarly := wallet(addrOf(owner), 2)    // deployed by someone else before the relay
	broken, _ := wallet(addrOf(owner), 3)             // its stored wrapper's factory call reverts
	_, deployStrangers := wallet(addrOf(stranger), 1) // deploys the stranger's wallet, not lazy
	for _, a := range []common.Address{lazy, early, broken} {
		if err := send.Mint(ctx, tokenOwner, tokenAddr, a, 50_000_000); err != nil {
			t.Fatal(err)
		}
	}
	chain := NewChain(node.ChainID, tokenAddr, "USD Coin")
	chain.TipFloor = send.TipFloor
	signer := NewLocalSignerFromKey(hot)
	db, l, topups, w := newAnvilSettlement(t, node.Anvil, chain, signer, TopUpOptions{
		Contracts: eip1271.Chains{node.ChainID.Uint64(): node.Client},
	})
	create := func(from common.Address, micro int64) (string, Authorization) {
		t.Helper()
		return createTopUp(t, topups, db, from, micro)
	}
	// wrapped is the wallet's ERC-6492 signature: key's signature of the digest (what the
	// TestWallet accepts) inside the wrapper.
	wrapped := func(calldata []byte, inner []byte) string {
		return "0x" + common.Bytes2Hex(eip1271.Wrapped{Factory: factory, FactoryCalldata: calldata, Signature: inner}.Encode())
	}
	inner := func(a Authorization) []byte { return common.FromHex(signHex(t, chain, owner, a)) }

	good, goodAuth := create(lazy, 20_000_000)
	goodSig := wrapped(deployLazy, inner(goodAuth))
	if tu, err := topups.Submit(ctx, good, goodSig); err != nil || tu.Status != TopUpSigned {
		t.Fatalf("counterfactual wallet's top-up: %+v, %v", tu, err)
	}
	if row, _ := loadTopUp(ctx, db.Pool, good); row.signature != goodSig {
		t.Fatalf("stored signature %s, want the wrapper as submitted", row.signature)
	}

	// Refused at submit: the factory call deploys another wallet; the inner signature is a stranger's.
	other, otherAuth := create(lazy, 3_000_000)
	if _, err := topups.Submit(ctx, other, wrapped(deployStrangers, inner(otherAuth))); !errors.Is(err, ErrBadSignature) ||
		!strings.Contains(err.Error(), "does not deploy it") {
		t.Fatalf("wrapper deploying another wallet: %v", err)
	}
	if _, err := topups.Submit(ctx, other, wrapped(deployLazy, common.FromHex(signHex(t, chain, stranger, otherAuth)))); !errors.Is(err, ErrBadSignature) ||
		!strings.Contains(err.Error(), "does not accept it") {
		t.Fatalf("wrapper around a stranger's signature: %v", err)
	}

	// Submitted while early had no code; someone deploys it before the relay looks.
	pre, preAuth := create(early, 4_000_000)
	if _, err := topups.Submit(ctx, pre, wrapped(deployEarly, inner(preAuth))); err != nil {
		t.Fatal(err)
	}
	if _, err := send.Send(ctx, tokenOwner, &factory, deployEarly); err != nil {
		t.Fatal(err)
	}

	// Stored as signed, though its factory call reverts (what submit would refuse; here the
	// chain is what changed): the relay fails it.
	bad, badAuth := create(broken, 5_000_000)
	if _, err := db.Pool.Exec(ctx, `UPDATE settlement_topups SET status = 'signed', signature = $2 WHERE id = $1`,
		bad, wrapped([]byte{0xde, 0xad, 0xbe, 0xef}, inner(badAuth))); err != nil {
		t.Fatal(err)
	}

	// The first tick sends lazy's deployment; then the worker restarts (a new Worker on the
	// same database, with nothing in memory) and carries on.
	if err := w.Tick(ctx); err != nil {
		t.Logf("tick: %v", err)
	}
	if n := countTxs(t, db, purposeDeploy, good); n != 1 {
		t.Fatalf("after the first tick: %d deploy transactions for the top-up, want 1", n)
	}
	w, err = NewWorker(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var g, p, b TopUp
	tickUntil(t, w, func() bool {
		g, _ = topups.Get(ctx, good)
		p, _ = topups.Get(ctx, pre)
		b, _ = topups.Get(ctx, bad)
		return g.Status == TopUpCredited && p.Status == TopUpCredited && b.Status == TopUpFailed
	}, func() string {
		return fmt.Sprintf("lazy %s (%s), early %s (%s), broken %s (%s)", g.Status, g.Reason, p.Status, p.Reason, b.Status, b.Reason)
	})
	if !strings.Contains(b.Reason, "factory call would revert") {
		t.Errorf("broken wrapper's top-up failed for %q", b.Reason)
	}
	for _, c := range []struct {
		id   string
		want int
	}{{good, 1}, {pre, 0}, {bad, 0}} {
		if n := countTxs(t, db, purposeDeploy, c.id); n != c.want {
			t.Errorf("top-up %s: %d deploy transactions, want %d", c.id, n, c.want)
		}
	}
	if n := countTxs(t, db, purposeTopUp, bad); n != 0 {
		t.Errorf("broken top-up: %d relay transactions, want none", n)
	}
	if code, err := node.Client.CodeAt(ctx, lazy, nil); err != nil || len(code) == 0 {
		t.Errorf("lazy wallet has no code after its top-up: %v", err)
	}

	// The relay carried the inner signature, in the bytes form.
	for id, a := range map[string]Authorization{good: goodAuth, pre: preAuth} {
		data := relayData(t, db, node.Anvil, id)
		want, _ := chain.transferCall(SignedAuthorization{Authorization: a, Signature: inner(a)})
		if !bytes.Equal(data, want) || !bytes.Equal(data[:4], selectorBytes) {
			t.Errorf("top-up %s relayed with %x, want the bytes form with the inner signature %x", id, data, want)
		}
	}

	// Money: credited once each; the broken wallet kept its USDC.
	checkMoney(t, l, send, tokenAddr, []money{{lazy, 20_000_000, 30_000_000}, {early, 4_000_000, 46_000_000}, {broken, 0, 50_000_000}})
	var gasUsed uint64
	var deployHash string
	if err := db.Pool.QueryRow(ctx, `SELECT mined_hash FROM settlement_txs WHERE purpose = 'deploy' AND ref = $1 AND status = 'final'`, good).Scan(&deployHash); err == nil {
		if rcpt, err := node.Client.TransactionReceipt(ctx, common.HexToHash(deployHash)); err == nil {
			gasUsed = rcpt.GasUsed
		}
	}
	t.Logf("gas used by the wallet's deployment (createAccount): %d", gasUsed)
	checkLedgerSums(t, db)

	// Our deployment was mined but reverted, and nobody else deployed the wallet: the top-up
	// fails and nothing is sent again. (Made by recording a reverted final deployment for a
	// fresh wallet's top-up; last, because its made-up nonce is the hot wallet's highest.)
	ghost, deployGhost := wallet(addrOf(owner), 4)
	if err := send.Mint(ctx, tokenOwner, tokenAddr, ghost, 10_000_000); err != nil {
		t.Fatal(err)
	}
	lost, lostAuth := create(ghost, 6_000_000)
	if _, err := topups.Submit(ctx, lost, wrapped(deployGhost, inner(lostAuth))); err != nil {
		t.Fatal(err)
	}
	var txID string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO settlement_txs (chain_id, sender, nonce, purpose, ref, to_addr, data, gas, status, receipt_status, mined_hash)
		SELECT chain_id, sender, MAX(nonce) + 1, 'deploy', $1, $2, $3, 500000, 'final', 0, '0xfeed' FROM settlement_txs GROUP BY chain_id, sender
		RETURNING id::TEXT`, lost, strings.ToLower(factory.Hex()), deployGhost).Scan(&txID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO settlement_tx_attempts (hash, tx_id, tip_wei, fee_cap_wei, raw, created_at)
		VALUES ('0xfeed', $1, '1', '1', '\x00', now())`, txID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.Tick(ctx); err != nil {
			t.Logf("tick: %v", err)
		}
	}
	if tu, _ := topups.Get(ctx, lost); tu.Status != TopUpFailed || !strings.Contains(tu.Reason, "deployment reverted") {
		t.Errorf("top-up whose deployment reverted: %s (%s), want failed", tu.Status, tu.Reason)
	}
	if n := countTxs(t, db, purposeDeploy, lost) + countTxs(t, db, purposeTopUp, lost); n != 1 {
		t.Errorf("top-up whose deployment reverted: %d transactions, want only the recorded deployment", n)
	}
}

// countTxs counts the hot wallet's stored transactions for a purpose and reference.
func countTxs(t *testing.T, db *testdb.DB, purpose, ref string) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM settlement_txs WHERE purpose = $1 AND ref = $2`, purpose, ref).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
