package mainlib

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/webhook"
)

// lockedBuffer is a bytes.Buffer safe for the program and the test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeCommand runs the real `tollgate serve` in-process on real PostgreSQL and Redis:
// it waits for the readiness line, checks gRPC health, sends ext_proc streams through the real
// paywall store, reads /metrics and /healthz, then stops it with the context.
func TestServeCommand(t *testing.T) {
	db, _, _ := serveEnv(t)
	hooks := serveWebhookReceiver(t, db)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr lockedBuffer
	done := startServe(ctx, &stderr)
	addr := waitReady(t, &stderr, done) // serve_http_test.go

	conn, err := grpc.NewClient(addr["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ext_proc.v3.ExternalProcessor"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}

	c := extprocv3.NewExternalProcessorClient(conn)
	headers := func(kv ...string) *extprocv3.ProcessingRequest {
		var hs []*corev3.HeaderValue
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: hs}}}}
	}
	send := func(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		st, err := c.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		_ = st.CloseSend()
		return resp
	}
	if r := send(headers(":method", "GET", ":path", "/healthz")); r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse() != nil {
		t.Errorf("pass-through answered %v", r)
	}
	if r := send(headers(":method", "POST", ":path", "/v1/images/generations", "authorization", "Bearer tg_x")); r.GetImmediateResponse().GetStatus().GetCode() != 404 {
		t.Errorf("unsupported endpoint answered %v", r)
	}
	r := send(headers(":method", "POST", ":path", "/v1/chat/completions", "authorization", "Bearer tg_not_a_real_key"))
	if ir := r.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 401 {
		t.Errorf("unknown key answered %v", r)
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr["admin"] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d %s", code, body)
	}
	select { // serve's webhook outbox scanned the ledger and delivered, signed
	case ev := <-hooks:
		if ev != "charge.created" {
			t.Errorf("webhook event %q, want charge.created", ev)
		}
	case <-time.After(20 * time.Second):
		t.Error("serve delivered no webhook")
	}
	const delivered = `tollgate_webhook_deliveries_total{result="delivered"} 1` // counted once the delivery is recorded
	_, metrics := get("/metrics")
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(metrics, delivered) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		_, metrics = get("/metrics")
	}
	for _, want := range []string{
		delivered,
		`tollgate_extproc_requests_total{outcome="unauthenticated"} 1`,
		`tollgate_extproc_requests_total{outcome="pass_through"} 1`,
		`tollgate_extproc_requests_total{outcome="unsupported"} 1`,
		`tollgate_extproc_phase_seconds_bucket{phase="request_headers"`,
		"tollgate_holds_swept_total",
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	stopServe(t, cancel, done)
	logs := stderr.String()
	if strings.Contains(logs, "sk-or-very-secret") || strings.Contains(logs, strings.Repeat("s", 32)) {
		t.Error("a secret reached the logs")
	}
	if !strings.Contains(logs, `"msg":"serve: stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", logs)
	}
}

// serveWebhookReceiver points paywall pw-hook's webhook at a receiver and charges a wallet
// for it in the ledger; the receiver sends the type of each event whose signature checks.
func serveWebhookReceiver(t *testing.T, db *testdb.DB) <-chan string {
	t.Helper()
	events := make(chan string, 8)
	var secret string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("Tollgate-Signature")
		ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || sig != webhook.Signature(secret, time.Unix(sec, 0), body) {
			t.Errorf("webhook signature %q does not check", sig)
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		var ev struct{ Type string }
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		events <- ev.Type
	}))
	t.Cleanup(srv.Close)
	l := ledger.New(db.Pool, ledger.Options{})
	secret, err := webhook.New(db.Pool, l, testSecrets(t), webhook.Options{}).SetEndpoint(t.Context(), "pw-hook", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const wallet = "0x00000000000000000000000000000000000000b3"
	if _, err := l.Deposit(t.Context(), ledger.DepositRequest{Key: "137:hook", ChainID: "137", Wallet: wallet, AmountMicro: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Charge(t.Context(), ledger.ChargeRequest{Key: "hook", Wallet: wallet, Paywall: "pw-hook",
		Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 90}, Metadata: map[string]string{"paywall": "pw-hook"}}); err != nil {
		t.Fatal(err)
	}
	return events
}

// startServe runs `tollgate serve` until ctx ends; its error arrives on the channel.
func startServe(ctx context.Context, stderr *lockedBuffer) chan error {
	done := make(chan error, 1)
	go func() { done <- Main(ctx, []string{"serve"}, io.Discard, stderr) }()
	return done
}

// stopServe cancels serve's context and waits for it to return cleanly.
func stopServe(t *testing.T, cancel context.CancelFunc, done chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// serveEnv points `tollgate serve` at a fresh database and Redis prefix, on free ports.
func serveEnv(t *testing.T) (*testdb.DB, *redis.Client, string) {
	t.Helper()
	db := testdb.New(t, schema.All()...)
	rdb, prefix := testredis.New(t)
	t.Setenv("TOLLGATE_DATABASE_URL", db.URL)
	t.Setenv("TOLLGATE_REDIS_PREFIX", prefix)
	t.Setenv("TOLLGATE_SERVE_GRPC_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_LINK_SECRET", strings.Repeat("s", 32))
	t.Setenv("TOLLGATE_SERVE_PROVIDER_API_KEY", "sk-or-very-secret")
	t.Setenv("TOLLGATE_SERVE_SHUTDOWN_GRACE", "1s")
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", testSecretsKey)
	return db, rdb, prefix
}

// TestServeRefusesMarkupsBelowFee: raising serve.fee_bps above what a built-in paywall's
// markup covers stops `tollgate serve` at start, naming every such paywall (and not a BYOK
// one, whose charges owe no provider) and the command that fixes it; once fixed, it starts.
func TestServeRefusesMarkupsBelowFee(t *testing.T) {
	db, rdb, prefix := serveEnv(t)
	ctx := t.Context()
	store := paywall.NewStore(db.Pool, rdb, prefix, paywall.Options{PlatformFeeBps: 500, SecretsKey: testSecrets(t)})
	defer func() { _ = store.Close() }()
	create := func(name string, mode paywall.Mode, markup int64) paywall.Paywall {
		pw := paywall.Paywall{Name: name, Owner: "dev@acme.example", Mode: mode, MarkupBps: markup, DefaultMaxTokens: 100}
		if mode == paywall.ModeBYOK {
			pw.Upstream, pw.UpstreamKey = "demo", "sk-dev"
		}
		p, _, err := store.Create(ctx, pw)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	low := create("Low Markup", paywall.ModeBuiltin, 600)
	lower := create("Lower Markup", paywall.ModeBuiltin, 527)
	fine := create("Fine Markup", paywall.ModeBuiltin, 2000)
	byok := create("Own Key", paywall.ModeBYOK, 0)

	// A 10 % fee needs a markup of at least ⌈10000² / 9000⌉ − 10000 = 1112 bps.
	t.Setenv("TOLLGATE_SERVE_FEE_BPS", "1000")
	var stderr lockedBuffer
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var err error
	select {
	case err = <-startServe(sctx, &stderr):
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not refuse:\n%s", stderr.String())
	}
	if err == nil || strings.Contains(stderr.String(), readyLine) {
		t.Fatalf("serve started with markups below the fee (%v)", err)
	}
	msg := err.Error()
	for _, want := range []string{low.ID, "Low Markup", lower.ID, "Lower Markup", "tollgate paywall set-markup", "1112 bps", "serve.fee_bps"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	for _, not := range []string{fine.ID, byok.ID} {
		if strings.Contains(msg, not) {
			t.Errorf("the error names %s, whose markup is fine:\n%s", not, msg)
		}
	}

	// Fixed as the error says: serve starts (and stops with its context).
	for _, id := range []string{low.ID, lower.ID} {
		if err := paywall.NewStore(db.Pool, nil, "", paywall.Options{PlatformFeeBps: 1000, SecretsKey: testSecrets(t)}).SetMarkup(ctx, id, 1112); err != nil {
			t.Fatal(err)
		}
	}
	done := startServe(sctx, &stderr)
	waitReady(t, &stderr, done)
	stopServe(t, cancel, done)
}

func TestServeNeedsLinkSecret(t *testing.T) {
	t.Setenv("TOLLGATE_SERVE_LINK_SECRET", "")
	var out, errOut bytes.Buffer
	err := Main(t.Context(), []string{"serve"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "serve.link_secret is required") {
		t.Fatalf("got %v", err)
	}
}

// TestSweeperReleasesExpiredHolds: the sweeper `serve` runs releases a hold whose process died
// (nobody captured it) once it expires, and counts it.
func TestSweeperReleasesExpiredHolds(t *testing.T) {
	db := testdb.New(t, schema.All()...)
	l := ledger.New(db.Pool, ledger.Options{})
	ctx := t.Context()
	const wallet = "0x00000000000000000000000000000000000000b2"
	if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: "137:sweep", ChainID: "137", Wallet: wallet, AmountMicro: 1000}); err != nil {
		t.Fatal(err)
	}
	h, err := l.Hold(ctx, ledger.HoldRequest{Key: "sweep-hold", Wallet: wallet, AmountMicro: 400, Paywall: "pw-sweep", TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	swept := prometheus.NewCounter(prometheus.CounterOpts{Name: "swept"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(swept)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		sweepHolds(sctx, &services{ledger: l}, 20*time.Millisecond, 10, swept, slog.New(slog.DiscardHandler))
		close(done)
	}()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := l.Balance(ctx, wallet)
		if err != nil {
			t.Fatal(err)
		}
		if b.HeldMicro == 0 && b.AvailableMicro == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the expired hold was never released: %+v", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := l.GetHold(ctx, h.ID); err != nil || got.Status != ledger.HoldExpired {
		t.Errorf("hold %+v %v", got, err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Errorf("swept counter %v (%v), want 1", mfs, err)
	}
}

// TestServeHandsBackgroundSettlementsOver: the database stops taking connections just before
// a streamed response ends, so its capture is handed to the background; at shutdown `tollgate
// serve` waits for it only within serve.shutdown_grace, then leaves it in the journal (Redis)
// and stops, the hold still open. Once the database is back, the next `tollgate serve` takes
// the capture over and charges it, exactly once.
func TestServeHandsBackgroundSettlementsOver(t *testing.T) {
	db, rdb, prefix := serveEnv(t)
	t.Setenv("TOLLGATE_SERVE_SETTLE_TIMEOUT", "300ms")
	ctx := t.Context()
	store := paywall.NewStore(db.Pool, rdb, prefix, paywall.Options{PlatformFeeBps: 500, SecretsKey: testSecrets(t)})
	defer func() { _ = store.Close() }()
	pw, key, err := store.Create(ctx, paywall.Paywall{Name: "Acme", Owner: "dev@acme.example", Mode: paywall.ModeBuiltin, MarkupBps: 2000, DefaultMaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	const wallet = "0x00000000000000000000000000000000000000c3"
	if _, err := store.Authorize(ctx, pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	if err := pricing.NewCatalog(db.Pool, nil, prefix).Import(ctx, []pricing.ModelPrice{{Model: "m1",
		Price: pricing.Price{Input: pricing.NewDecimal(1, 0), Output: pricing.NewDecimal(2, 0)}}}); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(db.Pool, ledger.Options{})
	if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: "137:outage", ChainID: "137", Wallet: wallet, AmountMicro: 1_000_000}); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stderr lockedBuffer
	done := startServe(sctx, &stderr)
	addr := waitReady(t, &stderr, done)
	conn, err := grpc.NewClient(addr["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	step := func(r *extprocv3.ProcessingRequest) {
		t.Helper()
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil || resp.GetImmediateResponse() != nil {
			t.Fatalf("%v %v", resp, err)
		}
	}
	hv := func(kv ...string) *corev3.HeaderMap {
		m := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return m
	}
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: hv(":method", "POST", ":path", "/v1/chat/completions", "authorization", "Bearer "+key, "x-paywall-user", "alice")}}})
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
		Body: []byte(`{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`), EndOfStream: true}}})
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: hv(":status", "200", "content-type", "text/event-stream")}}})

	admin, err := pgx.Connect(ctx, testdb.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	name := pgx.Identifier{db.Name}.Sanitize()
	defer func() { _, _ = admin.Exec(context.Background(), `ALTER DATABASE `+name+` WITH ALLOW_CONNECTIONS true`) }()
	for _, q := range []string{`ALTER DATABASE ` + name + ` WITH ALLOW_CONNECTIONS false`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + db.Name + `' AND pid <> pg_backend_pid()`} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: []byte("data: {\"id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n"), EndOfStream: true}}})
	_ = st.CloseSend()
	_, _ = st.Recv() // the server ends the stream once it has handed the capture over

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(adminGet(t, addr["admin"], "/metrics"), "tollgate_extproc_settlements_retrying 1") {
		if time.Now().After(deadline) {
			t.Fatalf("the capture was not handed to the background:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	stopServe(t, cancel, done)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown took %s with a 1s grace", took)
	}
	logs := stderr.String()
	for _, want := range []string{`"msg":"shutting down; the settlement is left in the journal for another replica"`, `"msg":"serve: stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "gave up") {
		t.Errorf("serve gave a settlement up instead of handing it over:\n%s", logs)
	}
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+name+` WITH ALLOW_CONNECTIONS true`); err != nil {
		t.Fatal(err)
	}
	b, err := l.Balance(ctx, wallet)
	if err != nil || b.PostedMicro != 1_000_000 || b.HeldMicro == 0 {
		t.Fatalf("balance %+v %v after the first serve stopped: want nothing charged, the hold open", b, err)
	}

	// The next replica takes the capture over.
	sctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	var stderr2 lockedBuffer
	done2 := startServe(sctx2, &stderr2)
	waitReady(t, &stderr2, done2)
	deadline = time.Now().Add(30 * time.Second)
	for {
		b, err = l.Balance(ctx, wallet)
		if err != nil {
			t.Fatal(err)
		}
		if b.HeldMicro == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second serve did not take the capture over:\n%s", stderr2.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopServe(t, cancel2, done2)
	page, err := l.History(ctx, ledger.Wallet(wallet), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var captures int
	for _, it := range page.Items {
		if it.Kind == ledger.KindCapture {
			captures++
		}
	}
	if b.PostedMicro >= 1_000_000 || captures != 1 {
		t.Errorf("balance %+v with %d captures: want the request charged once", b, captures)
	}
	if logs := stderr2.String(); !strings.Contains(logs, `"msg":"taking over a settlement from another replica"`) ||
		!strings.Contains(logs, `"msg":"settled in the background"`) {
		t.Errorf("the takeover was not logged:\n%s", logs)
	}
}

// adminGet reads a path of serve's admin listener.
func adminGet(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
