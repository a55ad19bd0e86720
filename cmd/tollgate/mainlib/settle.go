package mainlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/settlement"
)

// settleReady is printed (as a log message) once every chain's worker has started; tests wait
// for it.
const settleReady = "tollgate settle is running"

// runSettle runs one settlement worker per configured chain, all with the same hot wallet,
// until ctx ends. Each worker holds its (chain, hot wallet) lease while it is active; a second
// `tollgate settle` stands by and takes over when this one stops.
func runSettle(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "settle")
	chainFlag := fs.String("chain", "", "run only the chain with this `id` (default: every configured chain)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env, *path)
	if err != nil {
		return err
	}
	logger := newLogger(env.stderr, cfg.Log.Level).With("cmd", "settle")
	s := cfg.Settle
	if len(s.Chains) == 0 {
		return errors.New("settle: no chains configured (settle.chains)")
	}
	chains, err := settlement.ChainsFromConfig(s.Chains)
	if err != nil {
		return err
	}
	if *chainFlag != "" {
		var only []settlement.Chain
		for _, c := range chains {
			if c.ID == *chainFlag {
				only = append(only, c)
			}
		}
		if len(only) == 0 {
			return fmt.Errorf("%w: -chain %s is not configured", errUsage, *chainFlag)
		}
		chains = only
	}
	signer, err := settlement.LoadLocalSigner(s.HotWallet.PrivateKey, s.HotWallet.PrivateKeyFile)
	if err != nil {
		return err
	}

	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	book := ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := settlement.NewMetrics(reg)

	// Every chain's client and worker is ready before any starts, so a bad chain stops the
	// command with nothing running.
	workers := make([]*settlement.Worker, 0, len(chains))
	for _, c := range chains {
		client, err := ethclient.DialContext(ctx, c.RPCURL)
		if err != nil {
			// The URL may carry an API key: name the chain, not the URL.
			return fmt.Errorf("settle: chain %s: dial the RPC URL: %w", c.Name, err)
		}
		defer client.Close()
		w, err := settlement.NewWorker(settlement.WorkerConfig{
			Chain: c, Client: client, Signer: signer, Pool: pool, Ledger: book,
			Wallets: settlement.PaywallWallets{Pool: pool}, Treasury: common.HexToAddress(s.Treasury),
			Logger: logger.With("part", "settlement"), Metrics: metrics,
			PollInterval: s.PollInterval, LeaseTTL: s.LeaseTTL, RPCUnhealthyAfter: s.RPCUnhealthyAfter,
			StuckAfter: s.Payouts.StuckAfter, AuthorizationValidity: s.Payouts.AuthorizationValidity,
			RetryBackoff: s.Payouts.RetryBackoff, MaxPayoutMicro: s.Payouts.MaxMicro,
			DailyPayoutMicro: s.Payouts.DailyMicro, MaxAttempts: s.Payouts.MaxAttempts,
		})
		if err != nil {
			return err
		}
		workers = append(workers, w)
	}

	var admin *http.Server
	adminAddr := ""
	if s.AdminAddr == "" {
		logger.Warn("settle.admin_addr is empty: no /metrics or /healthz for this worker")
	} else {
		var lc net.ListenConfig
		lis, err := lc.Listen(ctx, "tcp", s.AdminAddr)
		if err != nil {
			return fmt.Errorf("settle: settle.admin_addr: %w", err)
		}
		adminAddr = lis.Addr().String()
		admin = &http.Server{Handler: settleAdminMux(reg, workers), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := admin.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("settle: admin listener stopped", "err", err)
			}
		}()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { errs <- w.Run(ctx) })
	}
	logger.Info(settleReady, "chains", len(chains), "hot_wallet", signer.Address().Hex(), "treasury", s.Treasury, "admin", adminAddr)

	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel() // one chain misconfigured: stop the others and say why
		}
	}
	wg.Wait()
	if admin != nil {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer scancel()
		_ = admin.Shutdown(sctx)
	}
	if first != nil {
		return fmt.Errorf("settle: %w", first)
	}
	return nil
}

// settleAdminMux serves the worker's private admin port: Prometheus metrics, and health, which
// is 503 while any chain's worker lost its lease or cannot reach its node (see
// settlement.Worker.Health); the body says, per chain, what is wrong.
func settleAdminMux(reg *prometheus.Registry, workers []*settlement.Worker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		healthy := true
		var b strings.Builder
		for _, wk := range workers {
			h := wk.Health()
			healthy = healthy && h.Healthy
			fmt.Fprintf(&b, "chain %s (%s): lease %s", h.Chain, h.ChainID, h.Lease)
			for _, p := range h.Problems {
				fmt.Fprintf(&b, "; %s", p)
			}
			b.WriteString("\n")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "unhealthy\n"+b.String())
			return
		}
		_, _ = io.WriteString(w, "ok\n"+b.String())
	})
	return mux
}
