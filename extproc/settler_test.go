package extproc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
)

// flakyLedger is the fake ledger behind a database outage: its next failCaptures captures and
// failVoids voids fail with ledger.ErrUnavailable (or, with commitThenFail, a capture is
// applied and then reported as ledger.ErrAmbiguous: the reply was lost). It records the
// idempotency key of every capture attempt.
type flakyLedger struct {
	*fakeLedger
	mu             sync.Mutex
	failCaptures   int
	failVoids      int
	commitThenFail bool
	keys           []string
	voidAttempts   int
}

func (f *flakyLedger) Capture(ctx context.Context, r ledger.CaptureRequest) (ledger.CaptureResult, error) {
	f.mu.Lock()
	f.keys = append(f.keys, r.Key)
	fail := f.failCaptures > 0
	if fail {
		f.failCaptures--
	}
	f.mu.Unlock()
	if !fail {
		return f.fakeLedger.Capture(ctx, r)
	}
	if f.commitThenFail {
		if _, err := f.fakeLedger.Capture(ctx, r); err != nil {
			return ledger.CaptureResult{}, err
		}
		return ledger.CaptureResult{}, fmt.Errorf("%w: connection reset during COMMIT", ledger.ErrAmbiguous)
	}
	return ledger.CaptureResult{}, fmt.Errorf("%w: connection refused", ledger.ErrUnavailable)
}

func (f *flakyLedger) Void(ctx context.Context, holdID string) (ledger.Hold, error) {
	f.mu.Lock()
	f.voidAttempts++
	fail := f.failVoids > 0
	if fail {
		f.failVoids--
	}
	f.mu.Unlock()
	if fail {
		return ledger.Hold{}, fmt.Errorf("%w: connection refused", ledger.ErrUnavailable)
	}
	return f.fakeLedger.Void(ctx, holdID)
}

func (f *flakyLedger) captureKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.keys...)
}

// flakyEnv is a server on a real gRPC listener whose ledger fails as told, with quick
// background retries, its metrics on a registry and its logs in a buffer.
type flakyEnv struct {
	ledger  *flakyLedger
	server  *Server
	client  extprocv3.ExternalProcessorClient
	reg     *prometheus.Registry
	metrics *Metrics
	logs    *lockedLog
}

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newFlakyEnv(t *testing.T, holdTTL time.Duration, fl *flakyLedger) *flakyEnv {
	t.Helper()
	return newFlakyReplica(t, holdTTL, funded(fl), nil, nil)
}

// funded puts fl over a fresh fake ledger whose test wallet holds 1 USDC.
func funded(fl *flakyLedger) *flakyLedger {
	fl.fakeLedger = newFakeLedger()
	fl.deposit(testWallet, 1_000_000)
	return fl
}

// testJournal is a settlement journal under a Redis key prefix of the test's own.
func testJournal(t *testing.T) *journal.Journal {
	rdb, prefix := testredis.New(t)
	return journal.New(rdb, prefix+"settle:")
}

// newFlakyReplica is a flakyEnv on fl as it is (another replica may share its fakeLedger),
// with j as its settlement journal (nil: none) and its configuration changed by tweak.
func newFlakyReplica(t *testing.T, holdTTL time.Duration, fl *flakyLedger, j Journal, tweak func(*Config, *Deps)) *flakyEnv {
	t.Helper()
	pws := &fakePaywalls{keys: map[string]paywall.Paywall{testKey: testPaywall()},
		auths: map[string]string{"pw1/" + testUser: testWallet}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	logs := &lockedLog{}
	cfg := Config{FeeBps: 500, ProviderKey: "sk-or-operator", PromptMarginPct: 20, HoldTTL: holdTTL,
		SettleTimeout: time.Second, SettleRetryBackoff: 10 * time.Millisecond, SettleRetryMaxBackoff: 40 * time.Millisecond}
	deps := Deps{Ledger: fl, Paywalls: pws, Prices: fakePrices{"m1": price(1, 2)}, Links: fakeLinks{}, Journal: j, Metrics: m,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if tweak != nil {
		tweak(&cfg, &deps)
	}
	s, err := NewServer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return &flakyEnv{ledger: fl, server: s, client: startServer(t, s), reg: reg, metrics: m, logs: logs}
}

// settled waits until no settlement is being retried any more.
func (e *flakyEnv) settled(t *testing.T, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if n := e.server.WaitSettlements(ctx); n != 0 {
		t.Fatalf("%d settlements abandoned", n)
	}
}

// value reads one counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", mfs, err)
	}
	m := mfs[0].GetMetric()[0]
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}

var okStream = []string{sseChunk("Hi"), sseChunk(" there"), usageChunk(30, 20), "data: [DONE]\n\n"}

// TestCaptureRetriedUntilTheLedgerRecovers: the ledger fails more captures than the request's
// own retries cover; the settler keeps trying in the background with the same idempotency key
// and the capture lands once, charging exactly what the usage says.
func TestCaptureRetriedUntilTheLedgerRecovers(t *testing.T) {
	for _, commitThenFail := range []bool{false, true} {
		t.Run(fmt.Sprintf("commit then fail %v", commitThenFail), func(t *testing.T) {
			e := newFlakyEnv(t, 10*time.Minute, &flakyLedger{failCaptures: 7, commitThenFail: commitThenFail})
			run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: okStream})
			e.settled(t, 10*time.Second)

			keys := e.ledger.captureKeys()
			if len(keys) != 8 {
				t.Errorf("%d capture attempts, want 7 failures + 1", len(keys))
			}
			for _, k := range keys {
				if k != keys[0] || !strings.HasPrefix(k, "tg:capture:") {
					t.Fatalf("idempotency keys changed between attempts: %q", keys)
				}
			}
			capt, ok := e.ledger.onlyCapture()
			if !ok || capt.Split.TotalMicro() != 84 || capt.Estimated {
				t.Fatalf("capture %+v", capt)
			}
			if posted, held, open := e.ledger.state(testWallet); posted != 1_000_000-84 || held != 0 || open != 0 {
				t.Errorf("wallet posted %d held %d, %d holds open: want 84 charged once", posted, held, open)
			}
			m := e.metrics
			if got := value(t, m.settleBackground.WithLabelValues("capture", "settled")); got != 1 {
				t.Errorf("background settled %v, want 1", got)
			}
			// 3 attempts within the request, then 4 failed background ones and the good one.
			if got := value(t, m.settleRetries.WithLabelValues("capture")); got != 4 {
				t.Errorf("background retries %v, want 4", got)
			}
			if got := value(t, m.requests.WithLabelValues(string(OutcomeCharged))); got != 1 {
				t.Errorf("charged outcomes %v, want 1", got)
			}
			if got := value(t, m.settlePending); got != 0 {
				t.Errorf("%v settlements still pending", got)
			}
			if got := value(t, m.capturedMicro); got != 84 {
				t.Errorf("captured %v micro in the metrics", got)
			}
		})
	}
}

// TestVoidRetriedInTheBackground: an upstream error's void that fails is retried too, so the
// user's money is released long before the hold would expire.
func TestVoidRetriedInTheBackground(t *testing.T) {
	e := newFlakyEnv(t, 10*time.Minute, &flakyLedger{failVoids: 5})
	run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, status: "502", ctype: "application/json",
		chunks: []string{`{"error":{"message":"bad gateway"}}`}})
	e.settled(t, 10*time.Second)
	if posted, held, open := e.ledger.state(testWallet); posted != 1_000_000 || held != 0 || open != 0 {
		t.Errorf("posted %d held %d open %d: want the hold voided, nothing charged", posted, held, open)
	}
	if got := value(t, e.metrics.settleBackground.WithLabelValues("void", "settled")); got != 1 {
		t.Errorf("background voids settled %v", got)
	}
	if got := value(t, e.metrics.voids); got != 1 {
		t.Errorf("voids %v, want 1", got)
	}
}

// TestBackgroundRetriesStopBeforeTheHoldExpires: a ledger that never recovers is not retried
// past the hold's expiry (less a tenth of its life); the settlement is counted as given up.
func TestBackgroundRetriesStopBeforeTheHoldExpires(t *testing.T) {
	e := newFlakyEnv(t, 2*time.Second, &flakyLedger{failCaptures: 1 << 30})
	start := time.Now()
	run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: okStream})
	e.settled(t, 10*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("retried for %s, past the hold's 2s life", took)
	}
	if got := value(t, e.metrics.settleBackground.WithLabelValues("capture", "expiring")); got != 1 {
		t.Errorf("expiring %v, want 1", got)
	}
	if got := value(t, e.metrics.requests.WithLabelValues(string(OutcomeSettleFailed))); got != 1 {
		t.Errorf("settle_failed %v, want 1", got)
	}
	if _, held, _ := e.ledger.state(testWallet); held == 0 {
		t.Error("the hold was released by someone: only its expiry should")
	}
	if !strings.Contains(e.logs.String(), "gave up settling") {
		t.Error("giving up was not logged")
	}
}

// TestShutdownAbandonsBackgroundSettlements: shutdown waits for background settlements only
// within its grace, then gives up on them, logging each with its request and hold.
func TestShutdownAbandonsBackgroundSettlements(t *testing.T) {
	e := newFlakyEnv(t, 10*time.Minute, &flakyLedger{failCaptures: 1 << 30})
	run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: okStream})
	if got := value(t, e.metrics.settlePending); got != 1 {
		t.Fatalf("%v settlements retrying, want 1", got)
	}
	e.server.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if n := e.server.WaitSettlements(ctx); n != 1 {
		t.Errorf("abandoned %d, want 1", n)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown waited %s", took)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"why":"abandoned"`) || !strings.Contains(logs, `"hold_id":"hold-1"`) {
		t.Errorf("the abandoned settlement was not logged:\n%s", logs)
	}
	if got := value(t, e.metrics.settleBackground.WithLabelValues("capture", "abandoned")); got != 1 {
		t.Errorf("abandoned %v, want 1", got)
	}
}

// TestCaptureSurvivesADatabaseOutage: the real ledger on PostgreSQL. The database stops
// accepting connections (and its open ones are terminated) just before the response ends, so
// the capture fails within the request; once the database is back, the background retry
// captures it, exactly once.
func TestCaptureSurvivesADatabaseOutage(t *testing.T) {
	e := newRealEnv(t, 1_000_000, nil)
	s, c := e.outageReplica(t)
	allow := e.captureDuringOutage(t, s, c)
	allow(true) // the database is back

	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if n := s.WaitSettlements(wctx); n != 0 {
		t.Fatalf("%d settlements abandoned", n)
	}
	e.chargedOnce(t, 84)
	if got := value(t, s.metrics.settleBackground.WithLabelValues("capture", "settled")); got != 1 {
		t.Errorf("background settled %v, want 1", got)
	}
	if n, err := e.journal().Len(t.Context()); err != nil || n != 0 {
		t.Errorf("%d settlements left in the journal (%v)", n, err)
	}
}

// captureDuringOutage streams one request through replica s (client c) and stops the
// database just before the response ends, so that the capture fails within the request; it
// returns once the capture is being retried in the background, with the function that lets
// the database accept connections again (also called when the test ends).
func (e *realEnv) captureDuringOutage(t *testing.T, s *Server, c extprocv3.ExternalProcessorClient) (allow func(bool)) {
	t.Helper()
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, testdb.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	allow = func(on bool) {
		t.Helper()
		ctx := context.Background()
		if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s WITH ALLOW_CONNECTIONS %v`, pgx.Identifier{e.db.Name}.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
		if !on {
			if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, e.db.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Whatever happens, the test database must be droppable.
	t.Cleanup(func() {
		allow(true)
		_ = admin.Close(context.Background())
	})

	st, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	step := func(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		t.Helper()
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			t.Fatalf("refused: %s", ir.GetBody())
		}
		return resp
	}
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(map[string]string{":method": "POST", ":path": chatPath, "authorization": "Bearer " + e.key, "x-paywall-user": testUser})}}})
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(streamBody), EndOfStream: true}}})
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(map[string]string{":status": "200", "content-type": "text/event-stream"})}}})
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(sseChunk("Hi"))}}})
	if b := e.balance(t); b.HeldMicro == 0 {
		t.Fatal("nothing held")
	}

	allow(false) // the outage
	step(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: []byte(usageChunk(30, 20) + "data: [DONE]\n\n"), EndOfStream: true}}})
	if err := finish(st); err != nil {
		t.Fatal(err)
	}
	// The stream has returned: its capture failed and was handed to the background.
	deadline := time.Now().Add(20 * time.Second)
	for value(t, s.metrics.settleRetries.WithLabelValues("capture")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no background retries during the outage")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return allow
}

// chargedOnce checks that the wallet was charged want exactly once and holds nothing.
func (e *realEnv) chargedOnce(t *testing.T, want int64) {
	t.Helper()
	b := e.balance(t)
	caps := e.captures(t)
	if b.PostedMicro != 1_000_000-want || b.HeldMicro != 0 || len(caps) != 1 || e.openHolds(t) != 0 {
		t.Fatalf("balance %+v, %d captures, %d holds open; want %d charged once", b, len(caps), e.openHolds(t), want)
	}
}
