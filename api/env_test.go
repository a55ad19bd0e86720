package api

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement"
	settlementschema "github.com/tollgate-dev/tollgate/settlement/schema"
)

// fakeClock is the tests' time: links, sign-in messages and top-ups expire by it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testChainID is the chain sign-ins and top-ups use in the tests (the simulated backend's).
const testChainID = 1337

// env is a running API on a real PostgreSQL database and Redis, with the real paywall store,
// ledger and settlement top-ups behind it.
type env struct {
	t        *testing.T
	db       *testdb.DB
	rdb      *redis.Client
	prefix   string
	clock    *fakeClock
	store    *paywall.Store
	ledger   *ledger.Ledger
	links    paywall.Links
	topups   *settlement.TopUps
	api      *Server
	srv      *httptest.Server
	url      string
	contract *contract
	treasury common.Address
}

// envOption changes the API's dependencies or options before it is built.
type envOption func(*Deps, *Options)

// testTreasury receives the tests' top-ups.
var testTreasury = common.HexToAddress("0x00000000000000000000000000000000000000a1")

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, clock: &fakeClock{now: time.Now().UTC().Truncate(time.Second)}}
	e.db = testdb.New(t, ledger.Migrations, paywall.Migrations, settlementschema.Migrations, schema.Migrations)
	e.rdb, e.prefix = testredis.New(t)
	secrets, keyErr := paywall.NewSecretsKey([]byte("0123456789abcdef0123456789abcdef")) // seals the BYOK test paywalls' credentials
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	e.store = paywall.NewStore(e.db.Pool, e.rdb, e.prefix, paywall.Options{PlatformFeeBps: 100, SecretsKey: secrets})
	t.Cleanup(func() { _ = e.store.Close() })
	if err := e.store.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.ledger = ledger.New(e.db.Pool, ledger.Options{})

	e.srv = httptest.NewUnstartedServer(nil)
	e.url = "http://" + e.srv.Listener.Addr().String()
	e.links = paywall.Links{BaseURL: e.url, Secret: []byte("0123456789abcdef0123456789abcdef"), TTL: 30 * time.Minute, Now: e.clock.Now}
	e.treasury = testTreasury
	token := common.HexToAddress("0x00000000000000000000000000000000000000b2")
	chain := settlement.NewChain(big.NewInt(testChainID), token, "USD Coin")
	var err error
	e.topups, err = settlement.NewTopUps(e.db.Pool, []settlement.Chain{chain}, e.treasury.Hex(), settlement.TopUpOptions{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{
		Pool: e.db.Pool, Redis: e.rdb, Paywalls: e.store, Ledger: e.ledger, Links: e.links,
		Nonces: paywall.NewNonces(e.rdb, e.prefix), TopUps: e.topups,
	}
	o := Options{
		PublicURL: e.url, ChainIDs: []uint64{testChainID}, RedisPrefix: e.prefix, FeeBps: 100,
		MinPayoutMicro: 1_000_000, MaxPayoutMicro: 50_000_000, DailyPayoutMicro: 60_000_000,
		LinkTTL: 30 * time.Minute, Now: e.clock.Now,
	}
	for _, opt := range opts {
		opt(&deps, &o)
	}
	e.api, err = New(deps, o)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = e.api.Handler()
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	e.contract = loadContract(t)
	return e
}

// newPaywall creates a paywall and returns it with its API key.
func (e *env) newPaywall(name string) (paywall.Paywall, string) {
	e.t.Helper()
	pw, key, err := e.store.Create(e.t.Context(), paywall.Paywall{
		Name: name, Owner: "dev@example.com", Mode: paywall.ModeBYOK, Upstream: "byok-upstream",
		UpstreamKey: "sk-test", PayoutAddress: "0x00000000000000000000000000000000000000d3",
	})
	if err != nil {
		e.t.Fatalf("create paywall: %v", err)
	}
	return pw, key
}

// newWallet returns a fresh key and its lower-case address.
func newWallet(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key, strings.ToLower(crypto.PubkeyToAddress(key.PublicKey).Hex())
}

// authorize links a fresh wallet to a paywall's user (as the connect page would) and returns it.
func (e *env) authorize(pw paywall.Paywall, user string) (*ecdsa.PrivateKey, string) {
	e.t.Helper()
	key, addr := newWallet(e.t)
	if _, err := e.store.Authorize(e.t.Context(), pw.ID, user, addr); err != nil {
		e.t.Fatalf("authorize: %v", err)
	}
	return key, addr
}

// deposit credits a wallet as a finalized top-up would.
func (e *env) deposit(wallet string, micro int64) {
	e.t.Helper()
	_, err := e.ledger.Deposit(e.t.Context(), ledger.DepositRequest{
		Key: fmt.Sprintf("test:%s:%d:%d", wallet, micro, time.Now().UnixNano()), ChainID: "1337", Wallet: wallet, AmountMicro: micro,
	})
	if err != nil {
		e.t.Fatalf("deposit: %v", err)
	}
}

// reply is an HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// errorCode returns the OpenAI-shaped error's code.
func (r reply) errorCode(t *testing.T) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// call makes a request and checks the answer against the OpenAPI document: its status must be
// documented for the route and its body must match the documented schema.
func (e *env) call(method, path string, headers map[string]string, body any) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: raw}
	_, pattern := e.api.mux.Handler(req)
	if _, route, ok := strings.Cut(pattern, " "); ok {
		e.contract.check(e.t, method, route, r)
	} else if r.status != http.StatusNotFound && r.status != http.StatusMethodNotAllowed {
		e.t.Errorf("%s %s matched no route but answered %d", method, path, r.status)
	}
	return r
}

// app calls the app API as a paywall.
func (e *env) app(method, path, apiKey string, body any, headers ...string) reply {
	e.t.Helper()
	h := map[string]string{"Authorization": "Bearer " + apiKey}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return e.call(method, path, h, body)
}

// page calls the pages' API with a link token.
func (e *env) page(method, path, token string, body any) reply {
	e.t.Helper()
	return e.call(method, path, map[string]string{linkHeader: token}, body)
}

// signTypedData signs EIP-712 typed data as eth_signTypedData_v4 does (V 27/28).
func signTypedData(t *testing.T, key *ecdsa.PrivateKey, typed json.RawMessage) string {
	t.Helper()
	var td apitypes.TypedData
	if err := json.Unmarshal(typed, &td); err != nil {
		t.Fatalf("typed data: %v", err)
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatalf("hash typed data: %v", err)
	}
	sig, err := crypto.Sign(digest, key)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return hexutil.Encode(sig)
}

func expectStatus(t *testing.T, r reply, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
}
