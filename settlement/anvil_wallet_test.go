package settlement

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// TestAnvilContractWalletTopUp runs top-ups signed by contract wallets (EIP-1271) on anvil, with
// TestUSDC (whose bytes form of transferWithAuthorization asks the wallet, as FiatTokenV2_2's
// does) and TestWallet (one owner key; it accepts that key's ECDSA signature of the digest):
//   - a wallet's top-up signed by its owner is checked at submit through the real node
//     (eth_call isValidSignature), relayed in the bytes form and credited once at finality;
//   - one signed by another key is refused at submit and moves nothing;
//   - one whose wallet stops accepting the signature after submit (its owner changed) fails
//     at the relay's preflight, with a reason, and moves nothing;
//   - an EOA's top-up still goes in the v,r,s form;
//   - a contract without the bytes form reverts without a reason on this node, which is what
//     the relay takes for a token that lacks it.
func TestAnvilContractWalletTopUp(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvil(t, chaintest.AnvilOptions{})
	tokenOwner, walletOwner, stranger, user, hot := chaintest.Key(t), chaintest.Key(t), chaintest.Key(t), chaintest.Key(t), chaintest.Key(t)
	node.Fund(t, addrOf(tokenOwner), addrOf(walletOwner), addrOf(hot))
	floor := big.NewInt(25_000_000_000)
	send := chaintest.Sender{Client: node.Client, TipFloor: floor}
	tokenAddr, err := send.DeployToken(ctx, tokenOwner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	// Two wallets of the same owner: one keeps accepting its owner's signatures, the other is
	// handed to a stranger after its top-up was signed.
	wallet, err := send.DeployTestWallet(ctx, walletOwner, addrOf(walletOwner))
	if err != nil {
		t.Fatal(err)
	}
	turncoat, err := send.DeployTestWallet(ctx, walletOwner, addrOf(walletOwner))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []common.Address{wallet, turncoat, addrOf(user)} {
		if err := send.Mint(ctx, tokenOwner, tokenAddr, a, 50_000_000); err != nil {
			t.Fatal(err)
		}
	}
	chain := NewChain(node.ChainID, tokenAddr, "USD Coin")
	chain.TipFloor = floor

	signer := NewLocalSignerFromKey(hot)
	treasury := signer.Address()
	db, l, topups, w := newAnvilSettlement(t, node, chain, signer, TopUpOptions{
		Contracts: eip1271.Chains{node.ChainID.Uint64(): node.Client},
	})
	create := func(from common.Address, micro int64) (string, Authorization) {
		t.Helper()
		return createTopUp(t, topups, db, from, micro)
	}

	// The wallet's owner signs the EIP-712 digest; the node says the wallet accepts that.
	good, goodAuth := create(wallet, 20_000_000)
	goodSig := signHex(t, chain, walletOwner, goodAuth)
	if tu, err := topups.Submit(ctx, good, goodSig); err != nil || tu.Status != TopUpSigned {
		t.Fatalf("contract wallet's top-up: %+v, %v", tu, err)
	}
	if row, _ := loadTopUp(ctx, db.Pool, good); row.signature != goodSig {
		t.Fatalf("stored signature %s, want the submitted %s", row.signature, goodSig)
	}

	// Another key's signature: the wallet says no, through the same node.
	refused, refusedAuth := create(wallet, 7_000_000)
	if _, err := topups.Submit(ctx, refused, signHex(t, chain, stranger, refusedAuth)); !errors.Is(err, ErrBadSignature) ||
		!strings.Contains(err.Error(), "does not accept it as a contract wallet") {
		t.Fatalf("a stranger's signature for the wallet: %v, want ErrBadSignature from the wallet", err)
	}

	// Accepted at submit, then the wallet changes owner before the relay: the preflight fails it.
	revoked, revokedAuth := create(turncoat, 9_000_000)
	if _, err := topups.Submit(ctx, revoked, signHex(t, chain, walletOwner, revokedAuth)); err != nil {
		t.Fatal(err)
	}
	if _, err := send.Send(ctx, walletOwner, &turncoat, chaintest.Wallet.PackSetOwner(addrOf(stranger))); err != nil {
		t.Fatal(err)
	}

	// An EOA's top-up beside them.
	eoa, eoaAuth := create(addrOf(user), 5_000_000)
	if _, err := topups.Submit(ctx, eoa, signHex(t, chain, user, eoaAuth)); err != nil {
		t.Fatal(err)
	}

	var g, e, r TopUp
	tickUntil(t, w, func() bool {
		g, _ = topups.Get(ctx, good)
		e, _ = topups.Get(ctx, eoa)
		r, _ = topups.Get(ctx, revoked)
		return g.Status == TopUpCredited && e.Status == TopUpCredited && r.Status == TopUpFailed
	}, func() string {
		return fmt.Sprintf("wallet %s, EOA %s, revoked %s (%s)", g.Status, e.Status, r.Status, r.Reason)
	})
	if !strings.Contains(r.Reason, "invalid signature") {
		t.Errorf("revoked top-up failed for %q, want the token's invalid signature", r.Reason)
	}
	if tu, _ := topups.Get(ctx, refused); tu.Status != TopUpAwaitingSignature {
		t.Errorf("refused top-up is %s", tu.Status)
	}

	// Each relay used the form its signature needs.
	selector := func(id string) []byte { t.Helper(); return relayData(t, db, node, id)[:4] }
	if got := selector(good); !bytes.Equal(got, selectorBytes) {
		t.Errorf("contract wallet's relay used selector %x, want the bytes form %x", got, selectorBytes)
	}
	if got := selector(eoa); !bytes.Equal(got, selectorVRS) {
		t.Errorf("EOA's relay used selector %x, want the v,r,s form %x", got, selectorVRS)
	}

	// Money: the wallet and the EOA credited once, as top-ups; the refused and revoked ones moved nothing.
	checkMoney(t, l, send, tokenAddr, []money{
		{wallet, 20_000_000, 30_000_000},
		{addrOf(user), 5_000_000, 45_000_000},
		{turncoat, 0, 50_000_000},
	})
	var kinds string
	if err := db.Pool.QueryRow(ctx, `SELECT string_agg(kind || ':' || topup_id::TEXT, ',' ORDER BY amount_micro)
		FROM settlement_deposits WHERE status = 'credited'`).Scan(&kinds); err != nil {
		t.Fatal(err)
	}
	if want := "topup:" + eoa + ",topup:" + good; kinds != want {
		t.Errorf("credited deposits %s, want %s", kinds, want)
	}
	checkLedgerSums(t, db)

	// A contract without transferWithAuthorization(…, bytes) — here the wallet itself — reverts
	// without a reason on this node: what topUpRefused takes for a token that lacks the form.
	data, byContract := chain.transferCall(SignedAuthorization{Authorization: goodAuth, Signature: []byte{1, 2, 3}})
	if !byContract {
		t.Fatal("a 3-byte signature was not packed for a contract wallet")
	}
	_, err = node.Client.EstimateGas(ctx, ethereum.CallMsg{From: treasury, To: &wallet, Data: data})
	if err == nil || classify(err) != failUnknown || hasRevertReason(err) {
		t.Fatalf("missing function: %v (classified %v), want a revert without a reason", err, classify(err))
	}
}

// createTopUp makes a top-up and returns it with the authorization its wallet must sign.
func createTopUp(t *testing.T, topups *TopUps, db *testdb.DB, from common.Address, micro int64) (string, Authorization) {
	t.Helper()
	in, err := topups.Create(t.Context(), TopUpRequest{Wallet: from.Hex(), AmountMicro: micro})
	if err != nil {
		t.Fatal(err)
	}
	row, err := loadTopUp(t.Context(), db.Pool, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	return in.ID, row.authorization()
}

// relayData is the calldata of the transaction that moved a top-up's money.
func relayData(t *testing.T, db *testdb.DB, node *chaintest.Anvil, id string) []byte {
	t.Helper()
	var hash string
	if err := db.Pool.QueryRow(t.Context(), `SELECT tx_hash FROM settlement_topups WHERE id = $1`, id).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	tx, _, err := node.Client.TransactionByHash(t.Context(), common.HexToHash(hash))
	if err != nil {
		t.Fatal(err)
	}
	return tx.Data()
}

// money is what a wallet should have: in the ledger (credited) and on chain (USDC held).
type money struct {
	who             common.Address
	ledger, onChain int64
}

func checkMoney(t *testing.T, l *ledger.Ledger, send chaintest.Sender, token common.Address, want []money) {
	t.Helper()
	for _, c := range want {
		b, err := l.Balance(t.Context(), strings.ToLower(c.who.Hex()))
		if c.ledger == 0 && errors.Is(err, ledger.ErrUnknownAccount) {
			err = nil // never credited: the ledger has no account for it
		}
		if err != nil || b.PostedMicro != c.ledger {
			t.Errorf("%s: ledger %+v, %v; want %d", c.who.Hex(), b, err, c.ledger)
		}
		if got, _ := send.BalanceOf(t.Context(), token, c.who); got != c.onChain {
			t.Errorf("%s holds %d, want %d", c.who.Hex(), got, c.onChain)
		}
	}
}
