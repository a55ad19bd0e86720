package api

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"

	"github.com/tollgate-dev/tollgate/api/siwe"
	"github.com/tollgate-dev/tollgate/contracts/bindings"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// personalSign signs text as a wallet's personal_sign does.
func personalSign(t *testing.T, key *ecdsa.PrivateKey, text string) string {
	t.Helper()
	sig, err := crypto.Sign(accounts.TextHash([]byte(text)), key)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return hexutil.Encode(sig)
}

// challenge asks for a sign-in message for address and returns it.
func (e *env) challenge(token, address string) string {
	e.t.Helper()
	r := e.page("POST", "/pages/v1/connect/challenge", token, map[string]any{"address": address, "chain_id": "0x539"})
	expectStatus(e.t, r, 200)
	return r.json(e.t)["message"].(string)
}

func TestConnectFlow(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo App")
	token := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)

	r := e.page("GET", "/pages/v1/connect", token, nil)
	expectStatus(t, r, 200)
	if m := r.json(t); m["paywall"] != "Demo App" || m["user"] != "alice" || m["authorized"] != false || m["link_used"] != false {
		t.Fatalf("connect info: %s", r.body)
	}

	wkey, wallet := newWallet(t)
	text := e.challenge(token, wallet) // lower case, as wallets report it
	m, err := siwe.Parse(text)
	if err != nil {
		t.Fatalf("the server's message does not parse: %v\n%s", err, text)
	}
	host := strings.TrimPrefix(e.url, "http://")
	claims, err := e.links.Verify(token, paywall.PurposeAuthorize)
	if err != nil {
		t.Fatal(err)
	}
	if m.Domain != host || m.URI != e.url+"/connect" || m.ChainID != testChainID || m.RequestID != claims.ID ||
		!strings.EqualFold(m.Address.Hex(), wallet) || !m.ExpirationTime.Equal(e.clock.Now().Add(10*time.Minute)) ||
		!strings.Contains(m.Statement, "Demo App") || !strings.Contains(m.Statement, "alice") {
		t.Errorf("message fields: %+v", m)
	}

	verify := map[string]any{"message": text, "signature": personalSign(t, wkey, text)}
	r = e.page("POST", "/pages/v1/connect/verify", token, verify)
	expectStatus(t, r, 200)
	if m := r.json(t); m["authorized"] != true || m["wallet"] != wallet {
		t.Errorf("verify answer: %s", r.body)
	}
	a, err := e.store.Authorization(t.Context(), pw.ID, "alice")
	if err != nil || a.Wallet != wallet {
		t.Fatalf("authorization %+v %v", a, err)
	}

	// The same signed message again: the nonce is used up.
	r = e.page("POST", "/pages/v1/connect/verify", token, verify)
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "nonce_used" {
		t.Errorf("replay code %q", r.errorCode(t))
	}
	// The link is used up too: no new sign-in with it.
	r = e.page("POST", "/pages/v1/connect/challenge", token, map[string]any{"address": wallet, "chain_id": "1337"})
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "link_used" {
		t.Errorf("reused link code %q", r.errorCode(t))
	}
	r = e.page("GET", "/pages/v1/connect", token, nil)
	if m := r.json(t); m["authorized"] != true || m["link_used"] != true || m["wallet"] != wallet {
		t.Errorf("connect info after: %s", r.body)
	}
}

// TestConnectRefusals: every way a sign-in can be wrong is refused, and none authorizes.
func TestConnectRefusals(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo")
	wkey, wallet := newWallet(t)
	other, _ := newWallet(t)
	fresh := func() string { return e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize) }

	tests := []struct {
		name   string
		run    func(token string) reply
		status int
		code   string
	}{
		{"another key signed", func(tok string) reply {
			text := e.challenge(tok, wallet)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, other, text)})
		}, 400, "invalid_signature"},
		{"message changed after signing", func(tok string) reply {
			text := e.challenge(tok, wallet)
			sig := personalSign(t, wkey, text)
			changed := strings.Replace(text, "Demo", "Demo2", 1)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": changed, "signature": sig})
		}, 400, "invalid_signature"},
		{"another domain", func(tok string) reply {
			text := strings.Replace(e.challenge(tok, wallet), strings.TrimPrefix(e.url, "http://")+" wants", "evil.example wants", 1)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 400, "sign_in_mismatch"},
		{"another URI", func(tok string) reply {
			text := strings.Replace(e.challenge(tok, wallet), "/connect\n", "/elsewhere\n", 1)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 400, "sign_in_mismatch"},
		{"another chain", func(tok string) reply {
			text := strings.Replace(e.challenge(tok, wallet), "Chain ID: 1337", "Chain ID: 1", 1)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 400, "sign_in_mismatch"},
		{"signed for another link", func(tok string) reply {
			otherLink := e.links.Token(pw.ID, "mallory", paywall.PurposeAuthorize)
			text := e.challenge(otherLink, wallet)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 400, "sign_in_mismatch"},
		{"too slow", func(tok string) reply {
			text := e.challenge(tok, wallet)
			e.clock.Advance(11 * time.Minute)
			defer e.clock.Advance(-11 * time.Minute)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 400, "sign_in_expired"},
		{"nonce never issued", func(tok string) reply {
			m, _ := siwe.Parse(e.challenge(tok, wallet))
			m.Nonce = "ffffffffffffffffffffffffffffffff"
			text := m.String()
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
		}, 409, "nonce_used"},
		{"not a SIWE message", func(tok string) reply {
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": "hello", "signature": personalSign(t, wkey, "hello")})
		}, 400, "invalid_message"},
		{"signature not hex", func(tok string) reply {
			text := e.challenge(tok, wallet)
			return e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": "zz"})
		}, 400, "invalid_signature"},
		{"bad address", func(tok string) reply {
			return e.page("POST", "/pages/v1/connect/challenge", tok, map[string]any{"address": "0x1234", "chain_id": "1337"})
		}, 400, "invalid_address"},
		{"chain not accepted", func(tok string) reply {
			return e.page("POST", "/pages/v1/connect/challenge", tok, map[string]any{"address": wallet, "chain_id": "137"})
		}, 400, "unsupported_chain"},
		{"expired link", func(tok string) reply {
			e.clock.Advance(31 * time.Minute)
			defer e.clock.Advance(-31 * time.Minute)
			return e.page("GET", "/pages/v1/connect", tok, nil)
		}, 401, "link_expired"},
		{"top-up link on the connect page", func(string) reply {
			return e.page("GET", "/pages/v1/connect", e.links.Token(pw.ID, "alice", paywall.PurposeTopUp), nil)
		}, 401, "invalid_link"},
		{"tampered link", func(tok string) reply {
			b := []byte(tok)
			b[len(b)/2] ^= 1
			return e.page("GET", "/pages/v1/connect", string(b), nil)
		}, 401, "invalid_link"},
		{"link signed with another secret", func(string) reply {
			forged := paywall.Links{BaseURL: e.url, Secret: []byte("another secret of at least 32 bytes!!"), Now: e.clock.Now}
			return e.page("GET", "/pages/v1/connect", forged.Token(pw.ID, "alice", paywall.PurposeAuthorize), nil)
		}, 401, "invalid_link"},
		{"no link", func(string) reply { return e.call("GET", "/pages/v1/connect", nil, nil) }, 401, "missing_link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run(fresh())
			expectStatus(t, r, tt.status)
			if got := r.errorCode(t); got != tt.code {
				t.Errorf("code %q, want %q: %s", got, tt.code, r.body)
			}
			if _, err := e.store.Authorization(t.Context(), pw.ID, "alice"); err == nil {
				t.Fatal("a refused sign-in authorized the wallet")
			}
		})
	}
}

// TestConnectContractWallet signs in with an EIP-1271 contract wallet (contracts/TestWallet.sol)
// deployed on the simulated backend (chain 1337): its owner's signature is accepted through
// eth_call. Then it signs a top-up the same way: its owner's EIP-712 signature is taken (a
// contract wallet's signature goes to settlement as it is), a stranger's refused.
func TestConnectContractWallet(t *testing.T) {
	deployer, _ := crypto.GenerateKey()
	owner, _ := crypto.GenerateKey()
	backend := simulated.NewBackend(types.GenesisAlloc{crypto.PubkeyToAddress(deployer.PublicKey): {Balance: big.NewInt(1e18)}})
	t.Cleanup(func() { _ = backend.Close() })
	client := backend.Client()
	contractAddr, _, err := bind.DeployContract(bind.NewKeyedTransactor(deployer, big.NewInt(testChainID)),
		common.FromHex(bindings.TestWalletMetaData.Bin), client, bindings.NewTestWallet().PackConstructor(crypto.PubkeyToAddress(owner.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	backend.Commit()

	callers := eip1271.Chains{testChainID: client}
	e := newEnv(t, func(d *Deps, _ *Options) {
		d.Signatures = siwe.Verifier{Contracts: callers}
		d.TopUps = topUpsAsking(t, d, callers)
	})
	pw, _ := e.newPaywall("Demo")
	stranger, _ := newWallet(t)
	wallet := strings.ToLower(contractAddr.Hex())

	tok := e.links.Token(pw.ID, "carol", paywall.PurposeAuthorize)
	text := e.challenge(tok, wallet)
	r := e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, stranger, text)})
	expectStatus(t, r, http.StatusBadRequest)

	text = e.challenge(tok, wallet)
	r = e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, owner, text)})
	expectStatus(t, r, 200)
	if a, err := e.store.Authorization(t.Context(), pw.ID, "carol"); err != nil || a.Wallet != wallet {
		t.Errorf("authorization %+v %v", a, err)
	}

	topUp := e.links.Token(pw.ID, "carol", paywall.PurposeTopUp)
	id, typed := e.newTopUp(topUp)
	r = e.page("POST", "/pages/v1/topups/"+id+"/signature", topUp, map[string]any{"signature": signTypedData(t, stranger, typed)})
	expectStatus(t, r, http.StatusBadRequest)
	r = e.page("POST", "/pages/v1/topups/"+id+"/signature", topUp, map[string]any{"signature": signTypedData(t, owner, typed)})
	expectStatus(t, r, 200)
	if m := r.json(t); m["status"] != "signed" {
		t.Errorf("contract wallet's top-up: %s", r.body)
	}
}

// TestTopUpContractWalletNodeDown: when the chain cannot be asked whether a contract wallet
// signed, the page gets 503 (retry), not 400 (sign again), and the top-up stays unsigned.
func TestTopUpContractWalletNodeDown(t *testing.T) {
	e := newEnv(t, func(d *Deps, _ *Options) {
		d.TopUps = topUpsAsking(t, d, eip1271.Chains{testChainID: downNode{}})
	})
	pw, _ := e.newPaywall("Demo")
	e.authorize(pw, "alice")
	token := e.links.Token(pw.ID, "alice", paywall.PurposeTopUp)
	id, typed := e.newTopUp(token)
	stranger, _ := newWallet(t) // not the wallet's key: only the wallet as a contract could say yes
	r := e.page("POST", "/pages/v1/topups/"+id+"/signature", token, map[string]any{"signature": signTypedData(t, stranger, typed)})
	expectStatus(t, r, http.StatusServiceUnavailable)
	if r.errorCode(t) != "unavailable" {
		t.Errorf("code %q, want unavailable", r.errorCode(t))
	}
	r = e.page("GET", "/pages/v1/topups/"+id, token, nil)
	if m := r.json(t); m["status"] != "awaiting_signature" {
		t.Errorf("top-up after a failed check: %s", r.body)
	}
}

// downNode is a chain node that does not answer.
type downNode struct{}

func (downNode) CallContract(context.Context, ethereum.CallMsg, *big.Int) ([]byte, error) {
	return nil, errors.New("dial tcp 127.0.0.1:8545: connection refused")
}

// topUpsAsking is the env's settlement top-ups, but asking contract wallets through callers.
func topUpsAsking(t *testing.T, d *Deps, callers eip1271.ContractCaller) *settlement.TopUps {
	t.Helper()
	old := d.TopUps.Chains()
	topUps, err := settlement.NewTopUps(d.Pool, old, testTreasury.Hex(), settlement.TopUpOptions{Contracts: callers})
	if err != nil {
		t.Fatal(err)
	}
	return topUps
}

// newTopUp starts a 5 USDC top-up on the page and returns its id and typed data.
func (e *env) newTopUp(token string) (string, json.RawMessage) {
	e.t.Helper()
	r := e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": "5", "chain_id": "1337"})
	expectStatus(e.t, r, http.StatusCreated)
	var intent struct {
		ID        string          `json:"id"`
		TypedData json.RawMessage `json:"typed_data"`
	}
	if err := json.Unmarshal(r.body, &intent); err != nil {
		e.t.Fatal(err)
	}
	return intent.ID, intent.TypedData
}

func TestTopUpFlow(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo")
	wkey, wallet := e.authorize(pw, "alice")
	token := e.links.Token(pw.ID, "alice", paywall.PurposeTopUp)

	r := e.page("GET", "/pages/v1/topup", token, nil)
	expectStatus(t, r, 200)
	info := r.json(t)
	if info["enabled"] != true || info["authorized"] != true || info["min"] != "0.10" || info["max"] != "10000.00" ||
		info["balance"].(map[string]any)["wallet"] != wallet {
		t.Fatalf("top-up info: %s", r.body)
	}

	r = e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": "5", "chain_id": "1337"})
	expectStatus(t, r, http.StatusCreated)
	var intent struct {
		ID        string          `json:"id"`
		TypedData json.RawMessage `json:"typed_data"`
	}
	if err := json.Unmarshal(r.body, &intent); err != nil {
		t.Fatal(err)
	}
	var td struct {
		Message map[string]string `json:"message"`
	}
	_ = json.Unmarshal(intent.TypedData, &td)
	if !strings.EqualFold(td.Message["from"], wallet) || !strings.EqualFold(td.Message["to"], e.treasury.Hex()) || td.Message["value"] != "5000000" {
		t.Errorf("typed data asks for %+v", td.Message)
	}

	// A signature by another key is refused.
	stranger, _ := newWallet(t)
	r = e.page("POST", "/pages/v1/topups/"+intent.ID+"/signature", token, map[string]any{"signature": signTypedData(t, stranger, intent.TypedData)})
	expectStatus(t, r, http.StatusBadRequest)

	r = e.page("POST", "/pages/v1/topups/"+intent.ID+"/signature", token, map[string]any{"signature": signTypedData(t, wkey, intent.TypedData)})
	expectStatus(t, r, 200)
	if m := r.json(t); m["status"] != "signed" || m["amount"] != "5.00" {
		t.Errorf("signed top-up: %s", r.body)
	}
	r = e.page("GET", "/pages/v1/topups/"+intent.ID, token, nil)
	if m := r.json(t); m["status"] != "signed" {
		t.Errorf("top-up state: %s", r.body)
	}

	// Another user's link cannot see or sign it.
	e.authorize(pw, "bob")
	bobs := e.links.Token(pw.ID, "bob", paywall.PurposeTopUp)
	if r := e.page("GET", "/pages/v1/topups/"+intent.ID, bobs, nil); r.status != http.StatusNotFound {
		t.Errorf("bob reads alice's top-up: %d", r.status)
	}
	if r := e.page("POST", "/pages/v1/topups/"+intent.ID+"/signature", bobs, map[string]any{"signature": "0x00"}); r.status != http.StatusNotFound {
		t.Errorf("bob signs alice's top-up: %d", r.status)
	}
	if r := e.page("GET", "/pages/v1/topups/not-a-uuid", token, nil); r.status != http.StatusNotFound {
		t.Errorf("malformed id: %d", r.status)
	}
}

func TestTopUpRefusals(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo")
	wkey, _ := e.authorize(pw, "alice")
	token := e.links.Token(pw.ID, "alice", paywall.PurposeTopUp)
	for _, tt := range []struct {
		name, amount, chain string
		status              int
		code                string
	}{
		{"below the minimum", "0.09", "", 400, "amount_too_small"},
		{"above the maximum", "10000.01", "", 400, "amount_too_large"},
		{"seven places", "1.1234567", "", 400, "invalid_amount"},
		{"negative", "-5", "", 400, "invalid_amount"},
		{"unknown chain", "5", "137", 400, "unsupported_chain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": tt.amount, "chain_id": tt.chain})
			expectStatus(t, r, tt.status)
			if r.errorCode(t) != tt.code {
				t.Errorf("code %q, want %q", r.errorCode(t), tt.code)
			}
		})
	}
	// A user who did not connect cannot start a top-up.
	r := e.page("POST", "/pages/v1/topups", e.links.Token(pw.ID, "nobody", paywall.PurposeTopUp), map[string]any{"amount": "5"})
	expectStatus(t, r, http.StatusForbidden)

	// A signature that comes after the authorization's window is refused.
	r = e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": "5"})
	expectStatus(t, r, http.StatusCreated)
	var intent struct {
		ID        string          `json:"id"`
		TypedData json.RawMessage `json:"typed_data"`
	}
	_ = json.Unmarshal(r.body, &intent)
	e.clock.Advance(2 * time.Hour)
	later := e.links.Token(pw.ID, "alice", paywall.PurposeTopUp)
	r = e.page("POST", "/pages/v1/topups/"+intent.ID+"/signature", later, map[string]any{"signature": signTypedData(t, wkey, intent.TypedData)})
	expectStatus(t, r, http.StatusGone)
}

func TestTopUpsNotConfigured(t *testing.T) {
	e := newEnv(t, func(d *Deps, _ *Options) { d.TopUps = nil })
	pw, _ := e.newPaywall("Demo")
	e.authorize(pw, "alice")
	token := e.links.Token(pw.ID, "alice", paywall.PurposeTopUp)
	r := e.page("GET", "/pages/v1/topup", token, nil)
	expectStatus(t, r, 200)
	if r.json(t)["enabled"] != false {
		t.Errorf("info: %s", r.body)
	}
	r = e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": "5"})
	expectStatus(t, r, http.StatusServiceUnavailable)
	if r.errorCode(t) != "topups_disabled" {
		t.Errorf("code %q", r.errorCode(t))
	}
}

func TestWalletPage(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	other, otherKey := e.newPaywall("Other")
	_, wallet := e.authorize(pw, "alice")
	if _, err := e.store.Authorize(t.Context(), other.ID, "al", wallet); err != nil {
		t.Fatal(err)
	}
	e.deposit(wallet, 3_000_000)
	expectStatus(t, e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "0.5", "description": "a report"}, "Idempotency-Key", "1"), 201)
	expectStatus(t, e.app("POST", "/api/v1/users/al/charges", otherKey, map[string]any{"amount": "0.7"}, "Idempotency-Key", "1"), 201)
	token := e.links.Token(pw.ID, "alice", paywall.PurposeWallet)

	r := e.page("GET", "/pages/v1/wallet", token, nil)
	expectStatus(t, r, 200)
	m := r.json(t)
	if b := m["balance"].(map[string]any); b["available"] != "1.80" || b["wallet"] != wallet || !strings.Contains(m["topup_url"].(string), "/topup?t=") {
		t.Errorf("wallet info: %s", r.body)
	}
	r = e.page("GET", "/pages/v1/wallet/history", token, nil)
	expectStatus(t, r, 200)
	if strings.Contains(string(r.body), "0.70") || !strings.Contains(string(r.body), "a report") || !strings.Contains(string(r.body), "3.00") {
		t.Errorf("history shows another app's charge or misses ours: %s", r.body)
	}

	// A wallet link cannot be used on the top-up page's calls.
	if r := e.page("POST", "/pages/v1/topups", token, map[string]any{"amount": "5"}); r.status != http.StatusUnauthorized {
		t.Errorf("wallet link starts a top-up: %d", r.status)
	}

	r = e.page("POST", "/pages/v1/wallet/disconnect", token, map[string]any{})
	expectStatus(t, r, 200)
	if _, err := e.store.Authorization(t.Context(), pw.ID, "alice"); err == nil {
		t.Error("still authorized after disconnect")
	}
	if _, err := e.store.Authorization(t.Context(), other.ID, "al"); err != nil {
		t.Errorf("disconnect touched another paywall: %v", err)
	}
	r = e.page("GET", "/pages/v1/wallet", token, nil)
	if m := r.json(t); m["authorized"] != false || m["connect_url"] == nil || strings.Contains(string(r.body), wallet) {
		t.Errorf("after disconnect: %s", r.body)
	}
}

func TestPagesServeHTML(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/connect?t=x", "/topup?t=x", "/wallet?t=x"} {
		r := e.call("GET", path, nil, nil)
		expectStatus(t, r, 200)
		if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if r.header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: the link token could leak through Referer", path)
		}
		if !strings.Contains(string(r.body), `src="assets/tollgate.js"`) {
			t.Errorf("%s does not load the script", path)
		}
	}
	r := e.call("GET", "/assets/tollgate.js", nil, nil)
	expectStatus(t, r, 200)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("script Content-Type %q", ct)
	}
	for _, path := range []string{"/assets/connect.html", "/assets/nope.js", "/assets/..%2fpages.go"} {
		if r := e.call("GET", path, nil, nil); r.status != http.StatusNotFound {
			t.Errorf("%s: %d", path, r.status)
		}
	}
}

// TestConnectNonceExpiresInRedis: a sign-in whose nonce outlived its time in Redis is refused,
// even when the message itself still looks valid.
func TestConnectNonceExpiresInRedis(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.SignInTTL = time.Second })
	pw, _ := e.newPaywall("Demo")
	wkey, wallet := newWallet(t)
	tok := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	text := e.challenge(tok, wallet)
	time.Sleep(1500 * time.Millisecond) // real time: Redis expires the nonce; the fake clock stands still
	r := e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "nonce_used" {
		t.Errorf("code %q", r.errorCode(t))
	}
}

// TestConnectChallengeCap: one link cannot ask for sign-in messages (and Redis nonces) without
// end.
func TestConnectChallengeCap(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo")
	_, wallet := newWallet(t)
	tok := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	for range maxChallengesPerLink {
		e.challenge(tok, wallet)
	}
	r := e.page("POST", "/pages/v1/connect/challenge", tok, map[string]any{"address": wallet, "chain_id": "1337"})
	expectStatus(t, r, http.StatusTooManyRequests)
	// Another link of the same user, made in the same second, is not affected.
	e.challenge(e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize), wallet)
}

// TestConnectLinksMadeInOneSecond: links for the same paywall, user and purpose made in the
// same second (the test clock stands still) are distinct links: signing in with one uses up
// that one only, and no other spelling of a used link's text gets past the check.
func TestConnectLinksMadeInOneSecond(t *testing.T) {
	e := newEnv(t)
	pw, _ := e.newPaywall("Demo")
	first := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	second := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	if first == second {
		t.Fatal("two links made in one second are the same token")
	}

	wkey, wallet := newWallet(t)
	text := e.challenge(first, wallet)
	r := e.page("POST", "/pages/v1/connect/verify", first, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
	expectStatus(t, r, 200)
	r = e.page("POST", "/pages/v1/connect/challenge", first, map[string]any{"address": wallet, "chain_id": "1337"})
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "link_used" {
		t.Errorf("the used link: %s", r.body)
	}

	// The second link is unused and signs in another wallet on its own.
	r = e.page("GET", "/pages/v1/connect", second, nil)
	if m := r.json(t); m["link_used"] != false {
		t.Errorf("the second link is marked used: %s", r.body)
	}
	key2, wallet2 := newWallet(t)
	text = e.challenge(second, wallet2)
	r = e.page("POST", "/pages/v1/connect/verify", second, map[string]any{"message": text, "signature": personalSign(t, key2, text)})
	expectStatus(t, r, 200)
	if a, err := e.store.Authorization(t.Context(), pw.ID, "alice"); err != nil || a.Wallet != wallet2 {
		t.Errorf("authorization after the second link: %+v %v", a, err)
	}

	// A message signed for one link does not verify on the other, even in the same second.
	third := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	text = e.challenge(third, wallet)
	r = e.page("POST", "/pages/v1/connect/verify", e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize),
		map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
	expectStatus(t, r, http.StatusBadRequest)
	if r.errorCode(t) != "sign_in_mismatch" {
		t.Errorf("message of another link: %s", r.body)
	}

	// The used link spelled otherwise (the unused bits of its last base64 character set) is
	// not a link at all.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, first[len(first)-1])
	respelled := first[:len(first)-1] + string(alphabet[last^1])
	r = e.page("GET", "/pages/v1/connect", respelled, nil)
	expectStatus(t, r, http.StatusUnauthorized)
	if r.errorCode(t) != "invalid_link" {
		t.Errorf("respelled link: %s", r.body)
	}
}
