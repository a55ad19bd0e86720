package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/extproc/sse"
	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/ledger"
)

// Config tunes the processor. The zero value of each field means its default.
type Config struct {
	// FeeBps is the platform fee in basis points of every charge.
	FeeBps int64
	// Provider names the built-in provider in the ledger (its provider-costs account).
	Provider string
	// ProviderKey is the operator's credential for the built-in provider.
	ProviderKey string
	// BuiltinUpstream is the routing header value for built-in paywalls whose Upstream is empty.
	BuiltinUpstream string
	// RoutingHeader is the header the Envoy routes match on to pick the upstream.
	RoutingHeader string
	// HoldTTL is how long a hold lives if it is never captured or voided.
	HoldTTL time.Duration
	// DefaultMaxTokens is the completion budget when neither request nor paywall sets one.
	DefaultMaxTokens int64
	// MinCompletionTokens is the smallest affordable budget served when the paywall sets none.
	MinCompletionTokens int64
	// MaxTokensLimit is the largest max_tokens a request may ask for.
	MaxTokensLimit int64
	// PromptMarginPct is added to the prompt estimate when sizing the hold.
	PromptMarginPct int64
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int
	// PhaseTimeout bounds the store calls made while Envoy waits for one answer; it must be
	// below the filter's message_timeout.
	PhaseTimeout time.Duration
	// SettleTimeout bounds one capture or void, which runs detached from the stream.
	SettleTimeout time.Duration
	// MaxEventBytes bounds one SSE event the scanner buffers.
	MaxEventBytes int
	// SettleRetryBackoff and SettleRetryMaxBackoff bound the waits between background
	// attempts of a capture or void that failed within SettleTimeout: the first wait, doubled
	// after each failure up to the maximum. Retries stop shortly before the hold expires.
	SettleRetryBackoff, SettleRetryMaxBackoff time.Duration
	// SettleLease is how long a replica's claim on a journaled settlement lasts without being
	// renewed (it renews a few times per lease): how soon another replica takes over the
	// settlements of one that died.
	SettleLease time.Duration
	// SettleRecoverEvery is how often RecoverSettlements looks for settlements nobody holds.
	SettleRecoverEvery time.Duration
	// GenerationWait is how long the capture of a built-in request whose usage never came (the
	// client went away) waits for the provider's record of the generation (Deps.Generations)
	// before it charges the estimate; 0 charges the estimate at once.
	GenerationWait time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.DefaultMaxTokens, 1024)
	def(&c.MinCompletionTokens, 16)
	def(&c.MaxTokensLimit, 1_000_000)
	if c.PromptMarginPct < 0 {
		c.PromptMarginPct = 0
	}
	if c.Provider == "" {
		c.Provider = "openrouter"
	}
	if c.BuiltinUpstream == "" {
		c.BuiltinUpstream = c.Provider
	}
	if c.RoutingHeader == "" {
		c.RoutingHeader = "x-tollgate-upstream"
	}
	if c.HoldTTL <= 0 {
		c.HoldTTL = 15 * time.Minute
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.PhaseTimeout <= 0 {
		c.PhaseTimeout = 1500 * time.Millisecond
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 10 * time.Second
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = sse.DefaultMaxEventBytes
	}
	if c.SettleRetryBackoff <= 0 {
		c.SettleRetryBackoff = 500 * time.Millisecond
	}
	if c.SettleRetryMaxBackoff < c.SettleRetryBackoff {
		c.SettleRetryMaxBackoff = max(30*time.Second, c.SettleRetryBackoff)
	}
	if c.SettleLease <= 0 {
		c.SettleLease = 30 * time.Second
	}
	if c.SettleRecoverEvery <= 0 {
		c.SettleRecoverEvery = 5 * time.Second
	}
	return c
}

// Deps are the stores and services the server reaches through its seams. Ledger, Paywalls,
// Prices and Links are required; Limiter may be nil (no caps), Journal too (settlements
// retried in the background then live in this process only), and Generations (estimates are
// charged as they are).
type Deps struct {
	Ledger   Ledger
	Paywalls Paywalls
	Prices   Prices
	Links    Links
	Limiter  Limiter
	Journal  Journal
	// Generations, if set, gives the usage of a built-in request whose stream ended early.
	Generations Generations
	Clock       Clock
	Logger      *slog.Logger
	Metrics     *Metrics
}

// Server is the ext_proc gRPC service. It is safe for concurrent use; each stream gets its own
// processor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *Metrics
	health  *health.Server
	settler *settler

	streams  sync.WaitGroup
	draining atomic.Bool
}

// NewServer returns a Server. It can return an error naming a missing dependency.
func NewServer(cfg Config, d Deps) (*Server, error) {
	var missing []error
	if d.Ledger == nil {
		missing = append(missing, errors.New("extproc: Deps.Ledger is required"))
	}
	if d.Paywalls == nil {
		missing = append(missing, errors.New("extproc: Deps.Paywalls is required"))
	}
	if d.Prices == nil {
		missing = append(missing, errors.New("extproc: Deps.Prices is required"))
	}
	if d.Links == nil {
		missing = append(missing, errors.New("extproc: Deps.Links is required"))
	}
	if len(missing) > 0 {
		return nil, errors.Join(missing...)
	}
	if d.Clock == nil {
		d.Clock = systemClock{}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, deps: d, log: d.Logger, metrics: d.Metrics, health: health.NewServer()}
	s.settler = newSettler(d.Logger, d.Metrics, cfg, d.Journal, s.settleOnce, s.settledInBackground)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// Register adds the ext_proc service and gRPC health to g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
}

// Process serves one ext_proc stream: one HTTP request. It owns Recv and Send; the processor
// answers each message exactly once. When the stream ends before the response did (the client
// went away, Envoy reset the stream, shutdown), the processor settles what it holds before
// Process returns.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	if s.draining.Load() {
		return status.Error(codes.Unavailable, "tollgate: shutting down")
	}
	s.streams.Add(1)
	defer s.streams.Done()
	s.metrics.openStreams.Inc()
	defer s.metrics.openStreams.Dec()

	ctx := stream.Context()
	p := newProcessor(ctx, s)
	defer p.close()
	for {
		req, err := stream.Recv()
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			p.abort(reasonStreamClosed)
			return nil
		case status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) || ctx.Err() != nil:
			if s.draining.Load() {
				p.abort(reasonShutdown)
			} else {
				p.abort(reasonClientGone)
			}
			return nil
		default:
			p.abort(reasonStreamError)
			return status.Errorf(codes.Unknown, "tollgate: receive: %v", err)
		}
		resp, err := p.handle(req)
		if err != nil {
			p.abort(reasonProcessingError)
			return status.Errorf(codes.Internal, "tollgate: %v", err)
		}
		if err := stream.Send(resp); err != nil {
			p.abort(reasonClientGone)
			return nil
		}
		p.afterSend()
	}
}

// Shutdown stops taking new streams and marks the service NOT_SERVING; the gRPC server's own
// GracefulStop/Stop then ends the open streams, Wait waits for them to settle, and
// WaitSettlements for the settlements they handed to the background.
func (s *Server) Shutdown() {
	s.draining.Store(true)
	s.health.Shutdown()
}

// Draining reports whether Shutdown was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// WaitSettlements blocks until every capture or void being retried in the background has
// finished, or ctx ends; then it hands the rest to the other replicas through the journal, or,
// without one, gives up on them, each logged with its request and hold (the hold expires and
// the sweeper releases it). It returns how many were given up. Call it after Wait: a stream
// that could not settle hands its settlement over before it returns.
func (s *Server) WaitSettlements(ctx context.Context) (abandoned int) {
	return s.settler.wait(ctx)
}

// RecoverSettlements takes over, until ctx ends or Shutdown is called, the journaled
// settlements that no replica holds any more — their replica stopped or died — and retries them
// here. It polls the journal every SettleRecoverEvery (±20 %), and sets the gauge of how many
// settlements the journal holds; without a journal it returns at once. Run it in every replica.
func (s *Server) RecoverSettlements(ctx context.Context) {
	if s.deps.Journal == nil {
		return
	}
	for {
		if err := wait.Sleep(ctx, jitter(s.cfg.SettleRecoverEvery)); err != nil || s.draining.Load() {
			return
		}
		for {
			n, err := s.settler.recoverOnce(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("could not read the settlement journal", "err", err)
			}
			if n < recoverBatch || s.draining.Load() {
				break
			}
		}
		if n, err := s.deps.Journal.Len(ctx); err == nil {
			s.metrics.journaled.Set(float64(n))
		}
	}
}

// settleOnce makes one attempt at a capture or void; res is a capture's result.
func (s *Server) settleOnce(ctx context.Context, st *settlement) (res ledger.CaptureResult, err error) {
	if st.Op == opCapture {
		defer s.metrics.storeCall(callCapture, time.Now())
		return s.deps.Ledger.Capture(ctx, *st.Capture)
	}
	defer s.metrics.storeCall(callVoid, time.Now())
	_, err = s.deps.Ledger.Void(ctx, st.HoldID)
	return ledger.CaptureResult{}, err
}

// settledInBackground counts the end of a settlement the settler retried (err nil: settled):
// a capture's request outcome, a void's release.
func (s *Server) settledInBackground(st *settlement, res ledger.CaptureResult, err error) {
	if st.Op == opVoid {
		if voided(err) {
			s.metrics.voids.Inc()
		}
		return
	}
	o := OutcomeSettleFailed
	if err == nil {
		o = s.captured(res, st.Capture.Estimated, st.Reason)
	}
	s.metrics.requests.WithLabelValues(string(o)).Inc()
}

// Wait blocks until every stream has returned (settling what it held) or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("extproc: streams still settling: %w", ctx.Err())
	}
}
