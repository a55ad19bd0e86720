package mainlib

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
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
	db := testdb.New(t, schema.All()...)
	_, prefix := testredis.New(t)
	t.Setenv("TOLLGATE_DATABASE_URL", db.URL)
	t.Setenv("TOLLGATE_REDIS_PREFIX", prefix)
	t.Setenv("TOLLGATE_SERVE_GRPC_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("TOLLGATE_SERVE_LINK_SECRET", strings.Repeat("s", 32))
	t.Setenv("TOLLGATE_SERVE_PROVIDER_API_KEY", "sk-or-very-secret")
	t.Setenv("TOLLGATE_SERVE_SHUTDOWN_GRACE", "1s")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() { done <- Main(ctx, []string{"serve"}, &stdout, &stderr) }()

	var line string
	deadline := time.Now().Add(20 * time.Second)
	for line == "" {
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readiness line:\n%s", stderr.String())
		}
		for l := range strings.SplitSeq(stderr.String(), "\n") {
			if strings.HasPrefix(l, readyLine) {
				line = l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	addr := map[string]string{}
	for _, f := range strings.Fields(strings.TrimPrefix(line, readyLine)) {
		k, v, _ := strings.Cut(f, "=")
		addr[k] = v
	}

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
	if r := send(headers(":method", "POST", ":path", "/v1/embeddings", "authorization", "Bearer tg_x")); r.GetImmediateResponse().GetStatus().GetCode() != 404 {
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
	_, metrics := get("/metrics")
	for _, want := range []string{
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

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	logs := stderr.String()
	if strings.Contains(logs, "sk-or-very-secret") || strings.Contains(logs, strings.Repeat("s", 32)) {
		t.Error("a secret reached the logs")
	}
	if !strings.Contains(logs, `"msg":"serve: stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", logs)
	}
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
