package extproc

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/extproc/limits"
	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

const realFeeBps = 500

// realEnv is one deployment on real PostgreSQL and Redis: a paywall, a priced model, an
// authorized user with a funded wallet. replica() starts a `tollgate serve` instance on it.
type realEnv struct {
	db     *testdb.DB
	rdb    *redis.Client
	prefix string
	ledger *ledger.Ledger
	store  *paywall.Store
	pw     paywall.Paywall
	key    string
}

func newRealEnv(t *testing.T, balance int64, tweak func(*paywall.Paywall)) *realEnv {
	t.Helper()
	ctx := t.Context()
	db := testdb.NewWithPool(t, 6, schema.All()...)
	rdb, prefix := testredis.New(t)
	e := &realEnv{db: db, rdb: rdb, prefix: prefix, ledger: ledger.New(db.Pool, ledger.Options{})}
	e.store = paywall.NewStore(db.Pool, rdb, prefix, paywall.Options{PlatformFeeBps: realFeeBps})
	t.Cleanup(func() { _ = e.store.Close() })
	pw := paywall.Paywall{Name: "Acme Chat", Owner: "dev@acme.example", Mode: paywall.ModeBuiltin,
		MarkupBps: 2000, DefaultMaxTokens: 100, MinCompletionTokens: 10}
	if tweak != nil {
		tweak(&pw)
	}
	var err error
	if e.pw, e.key, err = e.store.Create(ctx, pw); err != nil {
		t.Fatal(err)
	}
	if err := pricing.NewCatalog(db.Pool, nil, prefix).Import(ctx, []pricing.ModelPrice{{Model: "m1", Price: price(1, 2)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Authorize(ctx, e.pw.ID, testUser, testWallet); err != nil {
		t.Fatal(err)
	}
	if balance > 0 {
		if _, err := e.ledger.Deposit(ctx, ledger.DepositRequest{Key: "137:test-deposit", ChainID: "137", Wallet: testWallet, AmountMicro: balance}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// replica starts one server instance as `tollgate serve` wires it: its own database pool,
// paywall store and catalog (with their own caches), sharing the database and Redis.
func (e *realEnv) replica(t *testing.T, maxConns int32) (*Server, *grpc.Server, extprocv3.ExternalProcessorClient) {
	t.Helper()
	return e.replicaWith(t, maxConns, nil)
}

// outageReplica is a replica for a database outage: settlement gives up within the request
// after a second and retries in the background every 50–200 ms.
func (e *realEnv) outageReplica(t *testing.T) (*Server, extprocv3.ExternalProcessorClient) {
	t.Helper()
	s, _, c := e.replicaWith(t, 2, func(c *Config) {
		c.SettleTimeout, c.SettleRetryBackoff, c.SettleRetryMaxBackoff = time.Second, 50*time.Millisecond, 200*time.Millisecond
	})
	return s, c
}

// replicaWith is replica with its configuration changed by tweak.
func (e *realEnv) replicaWith(t *testing.T, maxConns int32, tweak func(*Config)) (*Server, *grpc.Server, extprocv3.ExternalProcessorClient) {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(t.Context(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	// Open every connection now, as a replica that has served for a while has them: on this
	// shared 2-core machine a burst of new connections takes seconds.
	warm := make([]*pgxpool.Conn, 0, maxConns)
	for range maxConns {
		c, err := pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		c.Release()
	}
	store := paywall.NewStore(pool, e.rdb, e.prefix, paywall.Options{PlatformFeeBps: realFeeBps})
	catalog := pricing.NewCatalog(pool, e.rdb, e.prefix)
	// The time budgets are generous: these tests check money, not latency, on a 2-core machine
	// that other test suites (and -race) load too.
	cfg := Config{FeeBps: realFeeBps, ProviderKey: "sk-or-operator", PromptMarginPct: 20,
		HoldTTL: 10 * time.Minute, PhaseTimeout: time.Minute, SettleTimeout: 2 * time.Minute}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := NewServer(cfg, Deps{
		Ledger: ledger.New(pool, ledger.Options{}), Paywalls: store, Prices: catalog,
		Links:   paywall.Links{BaseURL: "https://pay.example", Secret: []byte(strings.Repeat("k", 32)), TTL: time.Hour},
		Limiter: limits.New(e.rdb, e.prefix+"limits:", 10*time.Minute),
		Journal: e.journal(),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so run last: after the client is closed and the server stopped.
	t.Cleanup(func() {
		_ = store.Close()
		_ = catalog.Close()
		pool.Close()
	})
	addr, g := serve(t, s)
	return s, g, dial(t, addr)
}

// journal is the settlement journal every replica of the env shares, as serve's replicas do.
func (e *realEnv) journal() *journal.Journal { return journal.New(e.rdb, e.prefix+"settle:") }

// openHolds counts the holds still open in the database.
func (e *realEnv) openHolds(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM ledger_holds WHERE status = 'open'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *realEnv) balance(t *testing.T) ledger.WalletBalance {
	t.Helper()
	b, err := e.ledger.Balance(context.Background(), testWallet)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captures returns the wallet's capture entries, newest first.
func (e *realEnv) captures(t *testing.T) []ledger.HistoryItem {
	t.Helper()
	var out []ledger.HistoryItem
	cursor := ""
	for {
		page, err := e.ledger.History(context.Background(), ledger.Wallet(testWallet), cursor, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			if it.Kind == ledger.KindCapture {
				out = append(out, it)
			}
		}
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

func TestRealStreamCharged(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	_, _, c := e.replica(t, 4)
	res := run(t, c, exchange{key: e.key, user: testUser, body: streamBody, chunks: []string{
		": OPENROUTER PROCESSING\n\n", sseChunk("Hi"), usageChunk(30, 20), "data: [DONE]\n\n"}})
	if res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	if strings.Contains(res.clientBody, "prompt_tokens") {
		t.Error("usage chunk shown to a client that did not ask")
	}
	b := e.balance(t)
	if b.PostedMicro != 1_000_000-84 || b.HeldMicro != 0 {
		t.Errorf("balance %+v, want 84 charged and nothing held", b)
	}
	caps := e.captures(t)
	if len(caps) != 1 || caps[0].Metadata["provider_id"] != "gen-42" || caps[0].Metadata["estimated"] == "true" {
		t.Fatalf("captures %+v", caps)
	}
	// 84 = provider 70 + fee ⌊84 × 5 %⌋ = 4 + developer 10.
	earn, err := e.ledger.Earnings(t.Context(), e.pw.ID)
	if err != nil || earn.AvailableMicro != 10 {
		t.Errorf("earnings %+v %v, want 10", earn, err)
	}
}

// TestBadInputReal runs the bad-input table against the real ledger, paywall store, catalog,
// PostgreSQL and Redis; its revoked key is a key rotated away.
func TestBadInputReal(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	revoked := e.key
	newKey, err := e.store.RotateKey(t.Context(), e.pw.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, _, c := e.replica(t, 4)
	lastSeen := ""
	testBadInput(t, badInputEnv{
		client: c, key: newKey, revokedKey: revoked, user: testUser,
		money: moneyView{
			wallet: func(t *testing.T) (int64, int64) {
				b := e.balance(t)
				return b.PostedMicro, b.HeldMicro
			},
			openHolds: e.openHolds,
			lastCapture: func(t *testing.T) (int64, bool, bool) {
				caps := e.captures(t)
				if len(caps) == 0 || caps[0].TransferID == lastSeen {
					return 0, false, false
				}
				lastSeen = caps[0].TransferID
				return -caps[0].AmountMicro, caps[0].Metadata["estimated"] == "true", true
			},
		},
	})
}

// TestRealCapsAndRelease: a user over the concurrency cap gets a 429, and the slot comes back
// when the stream ends, whatever way it ends; over the rate cap, a 429 too.
func TestRealCapsAndRelease(t *testing.T) {
	e := newRealEnv(t, 1_000_000, func(p *paywall.Paywall) { p.MaxConcurrent = 1; p.RatePerMinute = 5 })
	_, _, c := e.replica(t, 4)
	ctx := t.Context()
	// Hold a slot with a stream that has not finished.
	st, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
			":method": "POST", ":path": chatPath, "authorization": "Bearer " + e.key, "x-paywall-user": testUser})}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(streamBody), EndOfStream: true}}},
	} {
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		if r, err := st.Recv(); err != nil || r.GetImmediateResponse() != nil {
			t.Fatalf("first stream: %v %v", r, err)
		}
	}
	res := run(t, c, exchange{key: e.key, user: testUser, body: streamBody})
	if ir := res.immediate; ir == nil || ir.GetStatus().GetCode() != 429 || !strings.Contains(string(ir.GetBody()), "too_many_concurrent_requests") {
		t.Fatalf("second concurrent request: %v", res.immediate)
	}
	// The client of the first stream goes away: the slot is released (and the hold settled).
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	_ = waitDone(st)
	res = run(t, c, exchange{key: e.key, user: testUser, body: streamBody, chunks: []string{usageChunk(5, 5), "data: [DONE]\n\n"}})
	if res.immediate != nil {
		t.Fatalf("slot not released: %s", res.immediate.GetBody())
	}
	// Two requests admitted so far (a refused one does not count); three more this minute.
	for range 3 {
		if res := run(t, c, exchange{key: e.key, user: testUser, body: streamBody, chunks: []string{usageChunk(5, 5), "data: [DONE]\n\n"}}); res.immediate != nil {
			t.Fatalf("under the rate cap: %s", res.immediate.GetBody())
		}
	}
	res = run(t, c, exchange{key: e.key, user: testUser, body: streamBody})
	if ir := res.immediate; ir == nil || ir.GetStatus().GetCode() != 429 || !strings.Contains(string(ir.GetBody()), "rate_limit_exceeded") {
		t.Fatalf("over the rate cap: %v", res.immediate)
	}
	if n, err := limits.New(e.rdb, e.prefix+"limits:", time.Minute).InFlight(ctx, e.pw.ID+":"+testUser); err != nil || n != 0 {
		t.Errorf("%d slots still taken (%v)", n, err)
	}
	if e.openHolds(t) != 0 {
		t.Error("a hold was left open")
	}
}

// TestRealRevocationTakesEffect: after a revocation the next request gets the authorize
// message, on a replica that had the authorization cached.
func TestRealRevocationTakesEffect(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	_, _, c := e.replica(t, 4)
	ok := exchange{key: e.key, user: testUser, body: streamBody, chunks: []string{usageChunk(5, 5), "data: [DONE]\n\n"}}
	if res := run(t, c, ok); res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	if err := e.store.Revoke(t.Context(), e.pw.ID, testUser); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		res := run(t, c, ok)
		if a, _ := header(res.immediate.GetHeaders(), ActionHeader); a == string(ActionAuthorize) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("revocation not seen after 3s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealShutdownSettlesOpenStreams: streams still open at shutdown are cancelled and settled
// from an estimate, marked so, before the server's Wait returns.
func TestRealShutdownSettlesOpenStreams(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	s, g, c := e.replica(t, 4)
	const open = 3
	ready := make(chan struct{}, open)
	errs := make(chan error, open)
	for range open {
		go func() {
			st, err := c.Process(context.Background())
			if err != nil {
				errs <- err
				return
			}
			for _, req := range []*extprocv3.ProcessingRequest{
				{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
					":method": "POST", ":path": chatPath, "authorization": "Bearer " + e.key, "x-paywall-user": testUser})}}},
				{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(streamBody), EndOfStream: true}}},
				{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
					":status": "200", "content-type": "text/event-stream"})}}},
				{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(sseChunk("partial"))}}},
			} {
				if err := st.Send(req); err != nil {
					errs <- err
					return
				}
				if _, err := st.Recv(); err != nil {
					errs <- err
					return
				}
			}
			ready <- struct{}{}
			_, _ = st.Recv() // until the server goes away
			errs <- nil
		}()
	}
	for range open {
		select {
		case <-ready:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	if b := e.balance(t); b.HeldMicro == 0 {
		t.Fatal("nothing held while streams are open")
	}
	s.Shutdown()
	g.Stop() // the grace is over: cancel the open streams
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	caps := e.captures(t)
	if len(caps) != open {
		t.Fatalf("%d captures, want %d", len(caps), open)
	}
	for _, c := range caps {
		if c.Metadata["estimated"] != "true" || c.Metadata["estimate_reason"] != "shutdown" || c.AmountMicro >= 0 {
			t.Errorf("capture %+v", c)
		}
	}
	if b := e.balance(t); b.HeldMicro != 0 || e.openHolds(t) != 0 {
		t.Errorf("holds left after shutdown: %+v", b)
	}
}

// TestRealModelsUnbilled: with the real paywall store (its key lookup cached in-process and in
// Redis), GET /v1/models is routed to the paywall's upstream with the operator's key; no hold
// is taken and the wallet does not move. Once the key is rotated away, the listing is refused.
func TestRealModelsUnbilled(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	_, _, c := e.replica(t, 2)
	before := e.balance(t)
	get := exchange{path: "/v1/models", key: e.key, noBody: true, headers: map[string]string{":method": "GET"}}
	for range 2 { // cold, then cached
		res := run(t, c, get)
		if res.immediate != nil {
			t.Fatalf("refused: %s", res.immediate.GetBody())
		}
		m := res.reqHeaders.GetResponse().GetHeaderMutation()
		if a, _ := header(m, "authorization"); a != "Bearer sk-or-operator" {
			t.Errorf("authorization %q", a)
		}
		if u, _ := header(m, "x-tollgate-upstream"); u != "openrouter" || !res.reqHeaders.GetResponse().GetClearRouteCache() {
			t.Errorf("routing %q, clear_route_cache %v", u, res.reqHeaders.GetResponse().GetClearRouteCache())
		}
	}
	if b := e.balance(t); b != before || e.openHolds(t) != 0 || len(e.captures(t)) != 0 {
		t.Errorf("money moved for a model listing: %+v → %+v", before, b)
	}
	if _, err := e.store.RotateKey(t.Context(), e.pw.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		res := run(t, c, get)
		if ir := res.immediate; ir != nil && ir.GetStatus().GetCode() == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a rotated key still lists models after 3s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
