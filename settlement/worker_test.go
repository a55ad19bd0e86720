package settlement

import (
	"errors"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// TestTopUpRelayedAndCreditedAtFinality: the user signs, the hot wallet relays and pays the gas,
// the deposit shows as pending until final, then is credited exactly once, also when the same
// blocks are scanned again.
func TestTopUpRelayedAndCreditedAtFinality(t *testing.T) {
	e := newSimEnv(t)
	user := chaintest.Key(t)
	e.fund(user, 10_000_000)
	userGas, _ := e.client.BalanceAt(t.Context(), addrOf(user), nil)
	w := e.worker(nil, nil)

	tu := e.topUp(user, 7_000_000)
	e.tick(w) // relays
	if got := e.topUpStatus(tu.ID); got.Status != TopUpSubmitted || got.TxHash == "" {
		t.Fatalf("after relay: %+v", got)
	}
	e.backend.Commit()
	e.tick(w) // sees it, not final
	pending, err := e.topups.PendingDeposits(t.Context(), addrOf(user).Hex())
	if err != nil || len(pending) != 1 || pending[0].AmountMicro != 7_000_000 || pending[0].Kind != "topup" || pending[0].TopUpID != tu.ID {
		t.Fatalf("pending deposits: %+v, %v", pending, err)
	}
	if got := e.balance(addrOf(user)); got != 0 {
		t.Fatalf("credited %d before finality", got)
	}

	e.finalize(w)
	if got := e.balance(addrOf(user)); got != 7_000_000 {
		t.Fatalf("balance %d, want 7000000", got)
	}
	got := e.topUpStatus(tu.ID)
	if got.Status != TopUpCredited {
		t.Fatalf("top-up %+v, want credited", got)
	}
	if pending, _ := e.topups.PendingDeposits(t.Context(), addrOf(user).Hex()); len(pending) != 0 {
		t.Fatalf("still pending after credit: %+v", pending)
	}
	if e.tokenBalance(e.treasury) != 7_000_000 || e.tokenBalance(addrOf(user)) != 3_000_000 {
		t.Fatalf("on chain: treasury %d, user %d", e.tokenBalance(e.treasury), e.tokenBalance(addrOf(user)))
	}
	// The user paid no gas.
	if after, _ := e.client.BalanceAt(t.Context(), addrOf(user), nil); after.Cmp(userGas) != 0 {
		t.Fatalf("user's native balance moved from %s to %s", userGas, after)
	}

	// Replayed logs: rewind the watcher and scan everything again; nothing is credited twice.
	e.db.Must(t, `UPDATE settlement_cursors SET block_number = 0`)
	e.tick(w)
	e.finalize(w)
	if got := e.balance(addrOf(user)); got != 7_000_000 {
		t.Fatalf("after rescanning: balance %d, want 7000000", got)
	}
	e.checkInvariants()
}

// TestPlainTransfers: transfers from linked wallets are credited by (tx, position in receipt);
// from unlinked addresses they are not credited at all; several in one block are each counted.
func TestPlainTransfers(t *testing.T) {
	e := newSimEnv(t)
	w := e.worker(nil, nil)
	linked, stranger := chaintest.Key(t), chaintest.Key(t)
	e.fund(linked, 5_000_000)
	e.fund(stranger, 5_000_000)
	e.link(addrOf(linked))
	e.tick(w) // the watcher starts at the current final block

	// Two transfers from the linked wallet in one block, one from a stranger.
	for _, k := range []struct {
		key   *ecdsaKey
		micro int64
	}{{linked, 1_000_000}, {linked, 2_000_000}, {stranger, 4_000_000}} {
		if _, err := e.send.SendAsync(t.Context(), k.key, &e.chain.Token, usdc.PackTransfer(e.treasury, bigInt(k.micro))); err != nil {
			t.Fatal(err)
		}
	}
	e.tick(w)
	e.finalize(w)
	if got := e.balance(addrOf(linked)); got != 3_000_000 {
		t.Fatalf("linked wallet credited %d, want 3000000", got)
	}
	if got := e.balance(addrOf(stranger)); got != 0 {
		t.Fatalf("unlinked address credited %d", got)
	}
	// The watcher resumes after a restart from where it stopped: a new worker credits nothing
	// again, and credits a new transfer.
	w2 := e.worker(nil, nil)
	e.db.Must(t, `UPDATE settlement_leases SET expires_at = now() - interval '1 hour'`)
	if _, err := e.send.Transfer(t.Context(), linked, e.chain.Token, e.treasury, 500_000); err != nil {
		t.Fatal(err)
	}
	e.finalize(w2)
	if got := e.balance(addrOf(linked)); got != 3_500_000 {
		t.Fatalf("after restart: %d, want 3500000", got)
	}
	e.checkInvariants()
}

// TestDuplicateAuthorization: the signed authorization is relayed by someone else first, then
// submitted again by us; only one use is possible and it is credited once.
func TestDuplicateAuthorization(t *testing.T) {
	e := newSimEnv(t)
	user, outsider := chaintest.Key(t), chaintest.Key(t)
	e.fund(user, 10_000_000)
	e.fund(outsider, 0)
	w := e.worker(nil, nil)
	tu := e.topUp(user, 4_000_000)

	// An outsider copies the signature from the page's traffic and relays it first.
	row, err := loadTopUp(t.Context(), e.db.Pool, tu.ID)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ParseSignature(row.signature)
	if err != nil {
		t.Fatal(err)
	}
	data, byContract := e.chain.transferCall(SignedAuthorization{Authorization: row.authorization(), Signature: sig})
	if byContract {
		t.Fatal("an EOA's signature was packed for a contract wallet")
	}
	if _, err := e.send.Send(t.Context(), outsider, &e.chain.Token, data); err != nil {
		t.Fatal(err)
	}
	e.tick(w)
	if got := e.topUpStatus(tu.ID); got.Status != TopUpSubmitted || got.Reason != "relayed by someone else" {
		t.Fatalf("top-up %+v", got)
	}
	// The same signature submitted again, and relayed again by the outsider: both refused.
	if _, err := e.topups.Submit(t.Context(), tu.ID, row.signature); err != nil {
		t.Fatal(err)
	}
	if _, err := e.send.Send(t.Context(), outsider, &e.chain.Token, data); !hasErr(err, "authorization is used") && !hasErr(err, "reverted") {
		t.Fatalf("second relay: %v", err)
	}
	e.finalize(w)
	e.finalize(w)
	if got := e.balance(addrOf(user)); got != 4_000_000 {
		t.Fatalf("balance %d, want 4000000", got)
	}
	if got := e.topUpStatus(tu.ID); got.Status != TopUpCredited {
		t.Fatalf("top-up %+v, want credited", got)
	}
	var ours int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM settlement_txs`).Scan(&ours); err != nil || ours != 0 {
		t.Fatalf("the worker sent %d transactions for an authorization already used (%v)", ours, err)
	}
	e.checkInvariants()
}

// TestReorgBeforeFinality: a deposit seen in a block that a reorg replaces is seen again in the
// new block and credited once at finality; a deposit whose transaction the reorg removes is
// dropped and never credited.
func TestReorgBeforeFinality(t *testing.T) {
	e := newSimEnv(t)
	w := e.worker(nil, nil)
	stays, vanishes := chaintest.Key(t), chaintest.Key(t)
	e.fund(stays, 5_000_000)
	e.fund(vanishes, 5_000_000)
	e.link(addrOf(stays))
	e.link(addrOf(vanishes))
	e.tick(w)

	parent, _ := e.client.HeaderByNumber(t.Context(), nil)
	if _, err := e.send.Transfer(t.Context(), stays, e.chain.Token, e.treasury, 1_000_000); err != nil {
		t.Fatal(err)
	}
	doomed, err := e.send.Transfer(t.Context(), vanishes, e.chain.Token, e.treasury, 2_000_000)
	if err != nil {
		t.Fatal(err)
	}
	e.tick(w)
	for _, k := range []*ecdsaKey{stays, vanishes} {
		if p, _ := e.topups.PendingDeposits(t.Context(), addrOf(k).Hex()); len(p) != 1 {
			t.Fatalf("pending before the reorg: %+v", p)
		}
	}
	blockHash := func() string {
		var h string
		if err := e.db.Pool.QueryRow(t.Context(), `SELECT block_hash FROM settlement_deposits WHERE wallet = $1`, lowerHex(addrOf(stays))).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := blockHash()

	// Reorg: a sibling branch from the parent. The dropped transactions return to the pool;
	// `vanishes` replaces its transfer with a self-transfer at the same nonce before the new
	// branch is mined, so its deposit is gone for good.
	doomedTx, _, err := e.client.TransactionByHash(t.Context(), doomed.TxHash)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.backend.Fork(parent.Hash()); err != nil {
		t.Fatal(err)
	}
	e.replaceWithSelfTransfer(vanishes, doomedTx.Nonce())
	e.commit(6)
	e.tick(w)
	if p, _ := e.topups.PendingDeposits(t.Context(), addrOf(stays).Hex()); len(p) != 1 {
		t.Fatalf("pending after the reorg: %+v", p)
	}
	if after := blockHash(); after == before {
		t.Fatalf("the deposit is still recorded in block %s: the reorg did not move it", after)
	}
	e.finalize(w)
	e.finalize(w)
	if got := e.balance(addrOf(stays)); got != 1_000_000 {
		t.Fatalf("stays: balance %d, want 1000000", got)
	}
	if got := e.balance(addrOf(vanishes)); got != 0 {
		t.Fatalf("vanishes: credited %d for a reorged-away transfer", got)
	}
	var status string
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT status FROM settlement_deposits WHERE wallet = $1`, lowerHex(addrOf(vanishes))).Scan(&status); err != nil || status != "dropped" {
		t.Fatalf("vanished deposit status %q (%v), want dropped", status, err)
	}
	e.checkInvariants()
}

// TestLeaseOneActiveWorker: a second worker for the same hot wallet stands by; it takes over
// when the first stops renewing, and the first can then no longer send.
func TestLeaseOneActiveWorker(t *testing.T) {
	e := newSimEnv(t)
	a, b := e.worker(nil, nil), e.worker(nil, nil)
	e.tick(a)
	if err := b.Tick(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second worker: %v, want ErrLeaseLost", err)
	}
	e.clock.Advance(2 * time.Minute) // a stopped renewing
	e.tick(b)
	// a still thinks it holds epoch 1; any send is fenced off.
	_, err := a.send(t.Context(), purposePayout, "x", e.chain.Token, nil, 21000, nil)
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale worker send: %v, want ErrLeaseLost", err)
	}
	if err := a.Tick(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale worker tick: %v, want ErrLeaseLost", err)
	}
}

// TestLedgerChecksCatchCorruption shows that the invariant checks the other tests end with can
// fail: a balance nudged by one micro-USDC is reported.
func TestLedgerChecksCatchCorruption(t *testing.T) {
	e := newSimEnv(t)
	w := e.worker(nil, nil)
	user := e.earnedUser(w, 1_000_000)
	if p, err := ledgercheck.Check(t.Context(), e.db.Pool); err != nil || len(p) != 0 {
		t.Fatalf("a healthy ledger: %v, %v", p, err)
	}
	e.db.Must(t, `UPDATE ledger_balances SET posted = posted + 1 WHERE kind = 'wallet' AND ref = $1`, lowerHex(addrOf(user)))
	p, err := ledgercheck.Check(t.Context(), e.db.Pool)
	if err != nil || len(p) < 2 {
		t.Fatalf("a corrupted balance: problems %v, %v", p, err)
	}
}

// TestConfirmationsFinality: on a chain configured with `finality: confirmations`, a deposit is
// final once that many blocks are on top of it, whatever the node's finalized tag says.
func TestConfirmationsFinality(t *testing.T) {
	e := newSimEnv(t)
	e.chain.Confirmations = 3
	w := e.worker(nil, nil)
	user := chaintest.Key(t)
	e.fund(user, 2_000_000)
	e.link(addrOf(user))
	e.tick(w)
	if _, err := e.send.Transfer(t.Context(), user, e.chain.Token, e.treasury, 2_000_000); err != nil {
		t.Fatal(err)
	}
	e.commit(2) // two blocks on top: not final
	e.tick(w)
	if got := e.balance(addrOf(user)); got != 0 {
		t.Fatalf("credited %d with 2 of 3 confirmations", got)
	}
	e.commit(1)
	e.tick(w)
	if got := e.balance(addrOf(user)); got != 2_000_000 {
		t.Fatalf("balance %d after 3 confirmations, want 2000000", got)
	}
	e.checkInvariants()
}
