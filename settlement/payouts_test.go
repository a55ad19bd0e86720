package settlement

import (
	"context"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/node"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/ledger"
)

// payoutEnv is a simEnv whose paywall has earnings and whose hot wallet holds USDC.
func payoutEnv(t *testing.T, opts ...simOption) (*simEnv, *Worker) {
	t.Helper()
	e := newSimEnv(t, opts...)
	w := e.worker(nil, nil)
	user := e.earnedUser(w, 200_000_000)
	e.earn(addrOf(user), 150_000_000)
	if err := e.send.Mint(t.Context(), e.owner, e.chain.Token, addrOf(e.hot), 500_000_000); err != nil {
		t.Fatal(err)
	}
	return e, w
}

func (e *simEnv) payoutRow(id string) (status, reason string) {
	e.t.Helper()
	if err := e.db.Pool.QueryRow(e.t.Context(), `SELECT status, reason FROM settlement_payouts WHERE payout_id = $1`, id).Scan(&status, &reason); err != nil {
		e.t.Fatal(err)
	}
	return status, reason
}

func (e *simEnv) countTxs(purpose, ref string) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(e.t.Context(), `SELECT count(*) FROM settlement_txs WHERE purpose = $1 AND ref = $2`, purpose, ref).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *simEnv) earnings() ledger.EarningsBalance {
	e.t.Helper()
	b, err := e.ledger.Earnings(e.t.Context(), e.paywall)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// wantPaidOnce checks that the ledger settled the payout and that its payee holds its amount
// on chain, paid by a single transaction of the hot wallet.
func (e *simEnv) wantPaidOnce(p ledger.Payout, payee common.Address) {
	e.t.Helper()
	if got := e.payout(p.ID); got.Status != ledger.PayoutSettled || got.TxHash == "" {
		e.t.Fatalf("ledger payout %+v, want settled with a tx hash", got)
	}
	if e.tokenBalance(payee) != p.AmountMicro || e.countTxs(purposePayout, p.ID) != 1 {
		e.t.Fatalf("payee holds %d after %d transactions, want %d after one", e.tokenBalance(payee), e.countTxs(purposePayout, p.ID), p.AmountMicro)
	}
}

// TestPayoutPaidAtFinality: the hot wallet pays with its own authorization, at a tip at least
// the chain's floor, and the ledger settles only at finality.
func TestPayoutPaidAtFinality(t *testing.T) {
	e, w := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b01")
	p := e.requestPayout(payee, 6_000_000)

	e.tick(w)
	if status, reason := e.payoutRow(p.ID); status != payoutSending {
		t.Fatalf("payout %s (%s), want sending", status, reason)
	}
	var tip string
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT tip_wei FROM settlement_tx_attempts`).Scan(&tip); err != nil {
		t.Fatal(err)
	}
	if got, _ := new(big.Int).SetString(tip, 10); got.Cmp(tipFloor) < 0 {
		t.Fatalf("tip %s below the chain's floor %s", tip, tipFloor)
	}
	e.backend.Commit()
	e.tick(w)
	if got := e.payout(p.ID); got.Status != ledger.PayoutRequested {
		t.Fatalf("ledger payout %s before finality", got.Status)
	}
	if e.tokenBalance(payee) != 6_000_000 {
		t.Fatalf("payee holds %d on chain", e.tokenBalance(payee))
	}
	e.finalize(w)
	e.wantPaidOnce(p, payee)
	if eb := e.earnings(); eb.PaidOutMicro != 6_000_000 || eb.InFlightMicro != 0 || eb.AvailableMicro != 144_000_000 {
		t.Fatalf("earnings %+v", eb)
	}
	e.finalize(w)
	e.wantPaidOnce(p, payee)
	e.checkInvariants()
}

// TestPayoutCrashBetweenSigningAndBroadcast: the signed transaction is stored but never reaches
// the node; a new worker process broadcasts the stored bytes, and the payee is paid once.
func TestPayoutCrashBetweenSigningAndBroadcast(t *testing.T) {
	e, _ := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b02")
	p := e.requestPayout(payee, 5_000_000)

	crashing := &fakeNode{ChainClient: e.client}
	crashing.dropSends.Store(true)
	dying := e.worker(crashing, nil)
	e.db.Must(t, `UPDATE settlement_leases SET expires_at = now() - interval '1 hour'`)
	e.tick(dying)
	if crashing.sends.Load() != 1 || e.countTxs(purposePayout, p.ID) != 1 {
		t.Fatalf("sends %d, stored %d", crashing.sends.Load(), e.countTxs(purposePayout, p.ID))
	}
	var stored []byte
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT raw FROM settlement_tx_attempts`).Scan(&stored); err != nil || len(stored) == 0 {
		t.Fatalf("no signed bytes stored before the broadcast: %v", err)
	}
	e.backend.Commit()
	if e.tokenBalance(payee) != 0 {
		t.Fatal("paid although nothing was broadcast")
	}

	// The process restarts: a new worker takes the expired lease and rebroadcasts.
	e.clock.Advance(2 * time.Minute)
	restarted := e.worker(nil, nil)
	e.tick(restarted)
	e.backend.Commit()
	e.finalize(restarted)
	e.finalize(restarted)
	e.wantPaidOnce(p, payee)
	e.checkInvariants()
}

// TestPayoutCrashBetweenBroadcastAndSettle: the payment is mined and final, but the process dies
// before the ledger hears of it; the next process settles it, once, without paying again.
func TestPayoutCrashBetweenBroadcastAndSettle(t *testing.T) {
	e, w := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b03")
	p := e.requestPayout(payee, 7_000_000)
	e.tick(w)
	e.backend.Commit()

	dying := &crashingLedger{Ledger: e.ledger}
	dying.crashSettle.Store(true)
	wd := e.worker(nil, dying)
	e.clock.Advance(2 * time.Minute)
	e.commit(33)
	if err := wd.Tick(t.Context()); err == nil || !strings.Contains(err.Error(), errCrash.Error()) {
		t.Fatalf("tick with a dying ledger: %v", err)
	}
	if got := e.payout(p.ID); got.Status != ledger.PayoutRequested {
		t.Fatalf("ledger payout %s after the crash", got.Status)
	}

	e.clock.Advance(2 * time.Minute)
	restarted := e.worker(nil, nil)
	e.finalize(restarted)
	e.finalize(restarted)
	e.wantPaidOnce(p, payee)
	e.checkInvariants()
}

// TestPayoutPausedToken: while the token is paused the payout waits without signing or
// spending a nonce, and is paid after the pause.
func TestPayoutPausedToken(t *testing.T) {
	e, w := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b04")
	if _, err := e.send.Send(t.Context(), e.owner, &e.chain.Token, usdc.PackPause()); err != nil {
		t.Fatal(err)
	}
	p := e.requestPayout(payee, 3_000_000)
	e.tick(w)
	if status, reason := e.payoutRow(p.ID); status != payoutQueued || !strings.Contains(reason, "paused") {
		t.Fatalf("payout %s (%s), want queued because paused", status, reason)
	}
	if e.countTxs(purposePayout, p.ID) != 0 {
		t.Fatal("a transaction was signed while the token is paused")
	}
	if _, err := e.send.Send(t.Context(), e.owner, &e.chain.Token, usdc.PackUnpause()); err != nil {
		t.Fatal(err)
	}
	e.tick(w) // still backing off
	if e.countTxs(purposePayout, p.ID) != 0 {
		t.Fatal("retried before the back-off")
	}
	e.clock.Advance(2 * time.Minute)
	e.until(w, "payout settled", func() bool { return e.payout(p.ID).Status == ledger.PayoutSettled })
	e.wantPaidOnce(p, payee)
	e.checkInvariants()
}

// TestPayoutBlacklistedPayee: a blacklisted payee is found before signing and the money goes
// back to the earnings at once.
func TestPayoutBlacklistedPayee(t *testing.T) {
	e, w := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b05")
	if _, err := e.send.Send(t.Context(), e.owner, &e.chain.Token, usdc.PackBlacklist(payee)); err != nil {
		t.Fatal(err)
	}
	before := e.earnings()
	p := e.requestPayout(payee, 4_000_000)
	e.tick(w)
	got := e.payout(p.ID)
	if got.Status != ledger.PayoutFailed || !strings.Contains(got.Reason, "blacklisted") {
		t.Fatalf("ledger payout %+v, want failed: blacklisted", got)
	}
	if after := e.earnings(); after.AvailableMicro != before.AvailableMicro || after.InFlightMicro != 0 {
		t.Fatalf("earnings %+v, want %+v back", after, before)
	}
	if e.countTxs(purposePayout, p.ID) != 0 {
		t.Fatal("a transaction was sent to a blacklisted payee")
	}
	e.checkInvariants()
}

// TestPayoutBlacklistedAfterSigning: the payee is blacklisted after the hot wallet signed and
// stored the payment but before it was mined. The transaction reverts; the money goes back only
// once the signed authorization has expired unused at a final block.
func TestPayoutBlacklistedAfterSigning(t *testing.T) {
	e, _ := payoutEnv(t)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b06")
	p := e.requestPayout(payee, 2_000_000)
	crashing := &fakeNode{ChainClient: e.client}
	crashing.dropSends.Store(true)
	e.clock.Advance(2 * time.Minute)
	e.tick(e.worker(crashing, nil)) // signed and stored, not broadcast
	if _, err := e.send.Send(t.Context(), e.owner, &e.chain.Token, usdc.PackBlacklist(payee)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	w := e.worker(nil, nil)
	e.tick(w) // rebroadcast; it reverts when mined
	e.backend.Commit()
	e.finalize(w)
	e.clock.Advance(2 * time.Minute)
	e.tick(w)
	if status, reason := e.payoutRow(p.ID); status != payoutFailing || !strings.Contains(reason, "blacklisted") {
		t.Fatalf("payout %s (%s), want failing", status, reason)
	}
	if got := e.payout(p.ID); got.Status != ledger.PayoutRequested {
		t.Fatalf("money given back while the authorization may still be used: %s", got.Status)
	}
	// An hour later (chain time), at a final block, the authorization is dead.
	if err := e.backend.AdjustTime(2 * time.Hour); err != nil {
		t.Fatal(err)
	}
	e.commit(33)
	e.clock.Advance(2 * time.Hour)
	e.tick(w)
	got := e.payout(p.ID)
	if got.Status != ledger.PayoutFailed || !strings.Contains(got.Reason, "blacklisted") {
		t.Fatalf("ledger payout %+v, want failed", got)
	}
	if e.tokenBalance(payee) != 0 {
		t.Fatal("a blacklisted payee received money")
	}
	e.checkInvariants()
}

// TestPayoutLimits: a payout above the per-payout limit fails (money back); payouts beyond
// the daily limit wait for the window to move.
func TestPayoutLimits(t *testing.T) {
	e, w := payoutEnv(t) // limits: 50 USDC per payout, 80 USDC a day
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b07")
	big1 := e.requestPayout(payee, 50_000_001)
	first := e.requestPayout(payee, 45_000_000)
	second := e.requestPayout(payee, 40_000_000)
	e.tick(w)
	if got := e.payout(big1.ID); got.Status != ledger.PayoutFailed || !strings.Contains(got.Reason, "per-payout limit") {
		t.Fatalf("oversized payout %+v", got)
	}
	if status, _ := e.payoutRow(first.ID); status != payoutSending {
		t.Fatalf("first payout %s", status)
	}
	if status, reason := e.payoutRow(second.ID); status != payoutQueued || !strings.Contains(reason, "daily payout limit") {
		t.Fatalf("second payout %s (%s), want waiting for the daily limit", status, reason)
	}
	e.until(w, "first settled", func() bool { return e.payout(first.ID).Status == ledger.PayoutSettled })
	if e.payout(second.ID).Status != ledger.PayoutRequested || e.countTxs(purposePayout, second.ID) != 0 {
		t.Fatal("second payout paid within the same day")
	}
	e.clock.Advance(25 * time.Hour)
	if err := e.backend.AdjustTime(25 * time.Hour); err != nil {
		t.Fatal(err)
	}
	e.until(w, "second settled", func() bool { return e.payout(second.ID).Status == ledger.PayoutSettled })
	if e.tokenBalance(payee) != 85_000_000 {
		t.Fatalf("payee holds %d, want 85000000", e.tokenBalance(payee))
	}
	e.checkInvariants()
}

// TestStuckTransactionReplaced: the miner wants a higher tip than the worker first offers; the
// stuck payout is replaced with tip and fee cap raised by at least 10% each time, under the
// same nonce, until it is mined; it is paid once.
func TestStuckTransactionReplaced(t *testing.T) {
	minTip := big.NewInt(2_600_000_000) // above the 2 gwei floor the worker starts at
	e, _ := payoutEnv(t, func(n *node.Config, c *ethconfig.Config) { simulated.WithMinerMinTip(minTip)(n, c) })
	// The node's oracle suggests a tip far under what gets mined (as Polygon nodes sometimes
	// do); the worker starts at the chain's floor.
	w := e.worker(&lowTipNode{ChainClient: e.client}, nil)
	e.clock.Advance(2 * time.Minute)
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b08")
	p := e.requestPayout(payee, 1_000_000)
	e.tick(w)
	e.commit(2)
	e.tick(w)
	if e.tokenBalance(payee) != 0 {
		t.Fatal("mined although the tip is below the miner's minimum")
	}
	for i := 0; i < 10 && e.tokenBalance(payee) == 0; i++ {
		e.clock.Advance(4 * time.Minute) // past stuck_after
		e.tick(w)
		e.backend.Commit()
	}
	if e.tokenBalance(payee) != 1_000_000 {
		t.Fatal("never mined")
	}
	rows, err := e.db.Pool.Query(t.Context(), `SELECT a.tip_wei, a.fee_cap_wei, t.nonce FROM settlement_tx_attempts a JOIN settlement_txs t ON t.id = a.tx_id ORDER BY a.created_at`)
	if err != nil {
		t.Fatal(err)
	}
	var prevTip, prevCap *big.Int
	attempts := 0
	nonces := map[int64]bool{}
	for rows.Next() {
		var tip, feeCap string
		var nonce int64
		if err := rows.Scan(&tip, &feeCap, &nonce); err != nil {
			t.Fatal(err)
		}
		nonces[nonce] = true
		ti, _ := new(big.Int).SetString(tip, 10)
		fc, _ := new(big.Int).SetString(feeCap, 10)
		if prevTip != nil {
			if new(big.Int).Mul(ti, big.NewInt(100)).Cmp(new(big.Int).Mul(prevTip, big.NewInt(110))) < 0 ||
				new(big.Int).Mul(fc, big.NewInt(100)).Cmp(new(big.Int).Mul(prevCap, big.NewInt(110))) < 0 {
				t.Errorf("attempt %d: tip %s / cap %s not 10%% above %s / %s", attempts, ti, fc, prevTip, prevCap)
			}
		}
		prevTip, prevCap = ti, fc
		attempts++
	}
	if attempts < 2 || len(nonces) != 1 {
		t.Fatalf("%d attempts over %d nonces, want several attempts at one nonce", attempts, len(nonces))
	}
	e.finalize(w)
	e.finalize(w)
	e.wantPaidOnce(p, payee)
	e.checkInvariants()
}

// TestStuckAtFeeCapRebroadcast: a payout transaction the node never got (as when a pool drops
// it) and whose replacement would pass max_fee_cap_gwei is not replaced, but sent again from
// its stored bytes; it is mined and paid once, and the worker forgets it once final.
func TestStuckAtFeeCapRebroadcast(t *testing.T) {
	e, _ := payoutEnv(t)
	e.chain.MaxFeeCap = new(big.Int).Set(tipFloor) // the first fee cap is the cap: no 10% bump fits
	node := &fakeNode{ChainClient: e.client}
	node.dropSends.Store(true)
	w := e.worker(node, nil)
	e.clock.Advance(2 * time.Minute) // payoutEnv's worker stopped renewing its lease
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b09")
	p := e.requestPayout(payee, 1_000_000)
	e.tick(w)
	e.backend.Commit()
	if e.tokenBalance(payee) != 0 || node.sends.Load() != 1 {
		t.Fatalf("paid %d after %d lost broadcasts", e.tokenBalance(payee), node.sends.Load())
	}
	node.dropSends.Store(false)
	e.clock.Advance(4 * time.Minute) // past stuck_after
	e.tick(w)
	e.backend.Commit()
	if e.tokenBalance(payee) != 1_000_000 {
		t.Fatalf("payee holds %d: the stuck transaction at the fee cap was not sent again", e.tokenBalance(payee))
	}
	var attempts int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM settlement_tx_attempts`).Scan(&attempts); err != nil || attempts != 1 {
		t.Fatalf("%d attempts (%v), want the one signed within the cap", attempts, err)
	}
	e.finalize(w)
	e.finalize(w)
	e.wantPaidOnce(p, payee)
	if len(w.broadcastAt) != 0 {
		t.Errorf("the worker still remembers %d broadcasts of final transactions", len(w.broadcastAt))
	}
	e.checkInvariants()
}

// TestNoncesSurviveRestart: transactions signed but never broadcast hold their nonces across a
// restart; a new process uses the next ones, and everything is mined in order.
func TestNoncesSurviveRestart(t *testing.T) {
	e, _ := payoutEnv(t)
	crashing := &fakeNode{ChainClient: e.client}
	crashing.dropSends.Store(true)
	e.clock.Advance(2 * time.Minute)
	dying := e.worker(crashing, nil)
	a := e.requestPayout(common.HexToAddress("0x00000000000000000000000000000000000b0b09"), 1_000_000)
	b := e.requestPayout(common.HexToAddress("0x00000000000000000000000000000000000b0b0a"), 1_000_000)
	e.tick(dying)
	chainNonce, err := e.client.PendingNonceAt(t.Context(), addrOf(e.hot))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := e.db.Pool.Query(t.Context(), `SELECT nonce FROM settlement_txs ORDER BY nonce`)
	if err != nil {
		t.Fatal(err)
	}
	nonces, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(nonces) != 2 || nonces[0] != int64(chainNonce) || nonces[1] != nonces[0]+1 {
		t.Fatalf("nonces %v, node's next %d", nonces, chainNonce)
	}
	e.clock.Advance(2 * time.Minute)
	w := e.worker(nil, nil)
	c := e.requestPayout(common.HexToAddress("0x00000000000000000000000000000000000b0b0b"), 1_000_000)
	e.until(w, "all settled", func() bool {
		return e.payout(a.ID).Status == ledger.PayoutSettled && e.payout(b.ID).Status == ledger.PayoutSettled &&
			e.payout(c.ID).Status == ledger.PayoutSettled
	})
	var maxNonce int64
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT max(nonce) FROM settlement_txs`).Scan(&maxNonce); err != nil {
		t.Fatal(err)
	}
	if maxNonce != nonces[1]+1 {
		t.Fatalf("third payout at nonce %d, want %d", maxNonce, nonces[1]+1)
	}
	e.checkInvariants()
}

// lowTipNode is a node whose gas oracle suggests a 1 wei tip.
type lowTipNode struct{ ChainClient }

func (lowTipNode) SuggestGasTipCap(context.Context) (*big.Int, error) { return big.NewInt(1), nil }

// TestSyncPayoutsQueuesEveryPage: the worker queues every payout its chain has in flight, over
// more than one page of the ledger's list, in the ledger's order, and none of another chain's;
// syncing again adds nothing and leaves a payout in progress as it is.
func TestSyncPayoutsQueuesEveryPage(t *testing.T) {
	e, w := payoutEnv(t)
	ctx := t.Context()
	payee := common.HexToAddress("0x00000000000000000000000000000000000b0b0c")
	var want []string
	for range syncPayoutsPage + 1 {
		want = append(want, e.requestPayout(payee, 1_000).ID)
	}
	if _, err := e.ledger.RequestPayout(ctx, ledger.PayoutRequest{Key: "other-chain", Paywall: e.paywall, ChainID: "8453",
		To: lowerHex(payee), AmountMicro: 1_000}); err != nil {
		t.Fatal(err)
	}
	queued := func() []string {
		t.Helper()
		rows, err := e.db.Pool.Query(ctx, `SELECT payout_id::TEXT FROM settlement_payouts ORDER BY created_at, payout_id`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if err := w.syncPayouts(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queued(); !slices.Equal(got, want) {
		t.Fatalf("queued %d payouts, want this chain's %d in the ledger's order", len(got), len(want))
	}
	e.db.Must(t, `UPDATE settlement_payouts SET status = 'sending' WHERE payout_id = $1`, want[0])
	if err := w.syncPayouts(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queued(); !slices.Equal(got, want) {
		t.Fatalf("a second sync left %d payouts queued, want the same %d", len(got), len(want))
	}
	if status, _ := e.payoutRow(want[0]); status != payoutSending {
		t.Fatalf("a second sync moved a payout in progress to %s", status)
	}
	e.checkInvariants()
}
