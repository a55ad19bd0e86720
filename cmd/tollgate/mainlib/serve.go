package mainlib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tollgate-dev/tollgate/extproc"
	"github.com/tollgate-dev/tollgate/extproc/generation"
	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/extproc/limits"
	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/webhook"
)

// readyLine is printed to stderr once every listener is up; tests and scripts wait for it.
const readyLine = "tollgate serve: ready"

// runServe runs the ext_proc gRPC server (for Envoy), the HTTP API and hosted pages, and the
// admin listener (metrics, health), plus the hold sweeper and the webhook outbox, until ctx ends; then it stops
// taking streams, lets the open ones finish for serve.shutdown_grace, cancels and settles the
// rest, gives settlements being retried in the background what is left of the grace (then
// leaves the rest to the other replicas through the journal in Redis), and returns.
func runServe(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "serve")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env, *path)
	if err != nil {
		return err
	}
	sc := cfg.Serve
	if len(sc.LinkSecret) < 32 {
		return errors.New("serve: serve.link_secret is required (at least 32 bytes, the same on every replica): set it in the file or TOLLGATE_SERVE_LINK_SECRET")
	}
	logger := newLogger(env.stderr, cfg.Log.Level)
	logger.Info("serve: starting", "config", cfg.Redacted())
	if sc.Provider.APIKey == "" {
		logger.Warn("serve: serve.provider.api_key is empty: built-in paywalls will reach the provider without a credential")
	}

	svc, err := openServices(ctx, cfg, logger)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer svc.Close()

	reg := prometheus.NewRegistry()
	m := RegisterServeMetrics(reg)

	// One paywall store per process, shared with the API (services closes it): one cache, one
	// invalidation subscription.
	paywalls := svc.paywallStore()
	if svc.secrets == nil {
		logger.Warn("serve: paywall.secrets_key is not set: built-in paywalls work; BYOK paywalls can be neither created nor served")
	}
	// A missing or wrong secrets key stops serve here, not on each BYOK request.
	if err := paywalls.CheckCredentials(ctx); err != nil {
		return fmt.Errorf("serve: BYOK upstream credentials: %w", err)
	}
	if err := checkMarkups(ctx, paywalls, sc.FeeBps); err != nil {
		return err
	}
	catalog := pricing.NewCatalog(svc.pool, svc.redis, cfg.Redis.Prefix, pricing.CatalogOptions{Logger: logger.With("part", "pricing")})
	defer func() { _ = catalog.Close() }()

	server, err := extproc.NewServer(extproc.Config{
		FeeBps:              sc.FeeBps,
		Provider:            sc.Provider.Name,
		ProviderKey:         sc.Provider.APIKey,
		GenerationWait:      sc.Provider.GenerationWait,
		BuiltinUpstream:     svc.builtinUpstream(),
		RoutingHeader:       sc.RoutingHeader,
		HoldTTL:             sc.HoldTTL,
		DefaultMaxTokens:    sc.DefaultMaxTokens,
		MinCompletionTokens: sc.MinCompletionTokens,
		MaxTokensLimit:      sc.MaxTokensLimit,
		PromptMarginPct:     sc.PromptMarginPct,
		MaxBodyBytes:        sc.MaxBodyBytes,
		PhaseTimeout:        sc.MessageBudget,
		SettleTimeout:       sc.SettleTimeout,
		MaxEventBytes:       sc.MaxEventBytes,
	}, extproc.Deps{
		Ledger:      svc.ledger,
		Paywalls:    paywalls,
		Prices:      catalog,
		Links:       svc.links(),
		Limiter:     limits.New(svc.redis, cfg.Redis.Prefix+"limits:", sc.HoldTTL),
		Journal:     journal.New(svc.redis, cfg.Redis.Prefix+"settle:"),
		Generations: generation.New(sc.Provider.GenerationURL, sc.Provider.APIKey, nil),
		Logger:      logger.With("part", "extproc"),
		Metrics:     m.Requests,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	api, err := apiHandler(svc)
	if err != nil {
		return fmt.Errorf("serve: API: %w", err)
	}

	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", sc.GRPCAddr)
	if err != nil {
		return fmt.Errorf("serve: serve.grpc_addr: %w", err)
	}
	httpLis, err := lc.Listen(ctx, "tcp", sc.HTTPAddr)
	if err != nil {
		_ = grpcLis.Close()
		return fmt.Errorf("serve: serve.http_addr: %w", err)
	}
	adminLis, err := lc.Listen(ctx, "tcp", sc.AdminAddr)
	if err != nil {
		_ = grpcLis.Close()
		_ = httpLis.Close()
		return fmt.Errorf("serve: serve.admin_addr: %w", err)
	}

	grpcServer := grpc.NewServer(
		// A BUFFERED request or response body arrives as one message.
		grpc.MaxRecvMsgSize(sc.GRPCMaxRecvBytes),
		// Envoy multiplexes every HTTP request's stream over a few connections.
		grpc.MaxConcurrentStreams(1<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	server.Register(grpcServer)
	// DisableGeneralOptionsHandler: `OPTIONS *` reaches the API too, which answers it in JSON.
	httpServer := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		DisableGeneralOptionsHandler: true}
	adminServer := &http.Server{Handler: adminMux(reg, server), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- serveErr("grpc", grpcServer.Serve(grpcLis)) })
	wg.Go(func() { errc <- serveErr("http", httpServer.Serve(httpLis)) })
	wg.Go(func() { errc <- serveErr("admin", adminServer.Serve(adminLis)) })
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { sweepHolds(sweepCtx, svc, sc.SweepInterval, sc.SweepBatch, m.Swept, logger) })
	wg.Go(func() { api.Run(sweepCtx) }) // prunes old idempotent answers of the HTTP API
	// Tells apps when money moves: every replica scans the ledger and delivers (webhook.Outbox).
	outbox := svc.outbox(webhook.Options{Logger: logger.With("part", "webhook"), Metrics: m.Webhooks})
	wg.Go(func() { outbox.Run(sweepCtx) })
	// Takes over the captures and voids other replicas were retrying when they stopped or died.
	wg.Go(func() { server.RecoverSettlements(sweepCtx) })

	logger.Info("serve: ready", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "admin", adminLis.Addr().String())
	_, _ = fmt.Fprintf(env.stderr, "%s grpc=%s http=%s admin=%s\n", readyLine, grpcLis.Addr(), httpLis.Addr(), adminLis.Addr()) // stderr failing is no reason to stop serving

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	logger.Info("serve: shutting down", "grace", sc.ShutdownGrace)
	server.Shutdown()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sc.ShutdownGrace)
	defer cancel()
	graceful := make(chan struct{})
	go func() {
		grpcServer.GracefulStop()
		close(graceful)
	}()
	_ = httpServer.Shutdown(stopCtx)
	select {
	case <-graceful:
	case <-stopCtx.Done():
		// Cancel the streams still open; each settles from an estimate before it returns.
		logger.Warn("serve: shutdown grace over; cancelling open streams")
		grpcServer.Stop()
	}
	settleCtx, cancelSettle := context.WithTimeout(context.WithoutCancel(ctx), 2*sc.SettleTimeout)
	defer cancelSettle()
	if err := server.Wait(settleCtx); err != nil {
		logger.Error("serve: streams did not settle in time; their holds will expire", "err", err)
	}
	// Captures and voids the ledger refused during an outage are being retried in the
	// background: they get what is left of the grace; each one given up is logged.
	if n := server.WaitSettlements(stopCtx); n > 0 {
		logger.Error("serve: gave up on settlements still being retried; their holds will expire", "count", n)
	}
	stopSweep()
	_ = adminServer.Shutdown(settleCtx)
	wg.Wait()
	logger.Info("serve: stopped")
	return runErr
}

// checkMarkups refuses to serve while a built-in paywall's markup cannot cover the platform
// fee (serve.fee_bps was raised after the markup was set): its charges would leave the
// developer a negative share. The error names every such paywall and the fix.
func checkMarkups(ctx context.Context, paywalls *paywall.Store, feeBps int64) error {
	err := paywalls.CheckMarkups(ctx, feeBps)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, paywall.ErrInvalid):
		least, _ := pricing.MinBuiltinMarkupBps(feeBps) // the fee was checked by CheckMarkups
		return fmt.Errorf("serve: serve.fee_bps is %d bps, and these built-in paywalls' markups no longer cover it "+
			"(each charge would leave the developer a negative share):\n%w\n"+
			"Raise each one's markup to at least %d bps with `tollgate paywall set-markup ID BPS`, or lower serve.fee_bps",
			feeBps, err, least)
	default:
		return fmt.Errorf("serve: check the built-in paywalls' markups: %w", err)
	}
}

// serveErr turns a server's normal end into nil.
func serveErr(name string, err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("serve: %s: %w", name, err)
}

// ServeMetrics are the metrics `tollgate serve` exposes on its admin port.
type ServeMetrics struct {
	Requests *extproc.Metrics // the ext_proc server's
	Webhooks *webhook.Metrics
	Swept    prometheus.Counter // expired holds the sweeper released
}

// RegisterServeMetrics registers on reg every metric `tollgate serve` exposes, the Go runtime's
// and the process's included: serve's admin port and deploy/'s alerting-rules test both read
// them from here.
func RegisterServeMetrics(reg prometheus.Registerer) ServeMetrics {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := ServeMetrics{Requests: extproc.NewMetrics(reg), Webhooks: webhook.NewMetrics(reg),
		Swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_holds_swept_total", Help: "Expired holds released by this replica's sweeper.",
		})}
	reg.MustRegister(m.Swept)
	return m
}

// adminMux serves the private admin port: Prometheus metrics and health.
func adminMux(reg *prometheus.Registry, server *extproc.Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if server.Draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// sweepHolds releases expired holds every interval until ctx ends. Every replica may sweep:
// the ledger makes concurrent sweeps safe.
func sweepHolds(ctx context.Context, svc *services, every time.Duration, batch int, swept prometheus.Counter, logger *slog.Logger) {
	wait.Every(ctx, every, func() {
		n, err := svc.ledger.SweepExpiredHolds(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				logger.Warn("serve: hold sweep failed", "err", err)
			}
			return
		}
		swept.Add(float64(n))
		if n > 0 {
			logger.Info("serve: released expired holds", "count", n)
		}
	})
}
