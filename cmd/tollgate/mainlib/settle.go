package mainlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/settlement"
)

// settleReady is printed (as a log message) once every chain's worker has started; tests wait
// for it.
const settleReady = "tollgate settle is running"

// runSettle runs one settlement worker per configured chain, all with the same hot wallet,
// until ctx ends. Each worker holds its (chain, hot wallet) lease while it is active; a second
// `tollgate settle` stands by and takes over when this one stops.
//
// With a subcommand it does an operator's task instead (settleCommands).
func runSettle(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return runSubcommand(ctx, env, "settle", settleCommands(), args)
	}
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
	var signer settlement.Signer
	if hw := s.HotWallet; hw.SignerURL != "" {
		rs, err := settlement.NewRPCSigner(ctx, hw.SignerURL, common.HexToAddress(hw.Address))
		if err != nil {
			return err
		}
		defer rs.Close()
		signer = rs
	} else if signer, err = settlement.LoadLocalSigner(hw.PrivateKey, hw.PrivateKeyFile); err != nil {
		return err
	}

	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	book := ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")})

	reg := prometheus.NewRegistry()
	metrics := RegisterSettleMetrics(reg)

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
			_, _ = fmt.Fprintf(&b, "chain %s (%s): lease %s", h.Chain, h.ChainID, h.Lease)
			for _, p := range h.Problems {
				_, _ = fmt.Fprintf(&b, "; %s", p)
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

// settleCommands are the operator's subcommands of `tollgate settle`; they need the database
// only, no chain and no hot wallet.
func settleCommands() map[string]command {
	return map[string]command{
		"unassigned": {"list transfers to the treasury from unlinked addresses, waiting for a wallet", runSettleUnassigned},
		"assign":     {"credit an unassigned transfer to a wallet (once, however often it is run)", runSettleAssign},
	}
}

// withLedger loads the configuration, opens the database and runs fn with the ledger.
func withLedger(ctx context.Context, env *environment, configPath string, fn func(*settlement.Unassigned) error) error {
	return withBook(ctx, env, configPath, "settle", func(pool *pgxpool.Pool, book *ledger.Ledger, logger *slog.Logger) error {
		return fn(settlement.NewUnassigned(pool, book, logger))
	})
}

// unassignedJSON is an unassigned deposit as -json prints it.
type unassignedJSON struct {
	ID          string    `json:"id"`
	ChainID     string    `json:"chain_id"`
	TxHash      string    `json:"tx_hash"`
	LogPos      int       `json:"log_pos"`
	Token       string    `json:"token"`
	From        string    `json:"from"`
	AmountMicro int64     `json:"amount_micro"`
	AmountUSDC  string    `json:"amount_usdc"`
	BlockNumber uint64    `json:"block_number"`
	Status      string    `json:"status"`
	Wallet      string    `json:"wallet,omitempty"`
	AssignedBy  string    `json:"assigned_by,omitempty"`
	TransferID  string    `json:"transfer_id,omitempty"`
	SeenAt      time.Time `json:"seen_at"`
}

func toUnassignedJSON(d settlement.UnassignedDeposit) unassignedJSON {
	return unassignedJSON{
		ID: d.ID, ChainID: d.ChainID, TxHash: d.TxHash, LogPos: d.LogPos, Token: d.Token, From: d.From,
		AmountMicro: d.AmountMicro, AmountUSDC: pricing.FormatUSDC(d.AmountMicro), BlockNumber: d.BlockNumber,
		Status: d.Status, Wallet: d.Wallet, AssignedBy: d.AssignedBy, TransferID: d.TransferID, SeenAt: d.SeenAt.UTC(),
	}
}

func runSettleUnassigned(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "settle unassigned")
	all := fs.Bool("all", false, "also list the transfers assigned already")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args, "[-all] [-json]", 0); err != nil {
		return err
	}
	return withLedger(ctx, env, *path, func(u *settlement.Unassigned) error {
		list, err := u.List(ctx, *all)
		if err != nil {
			return fmt.Errorf("settle unassigned: %w", err)
		}
		if *asJSON {
			out := make([]unassignedJSON, 0, len(list))
			for _, d := range list {
				out = append(out, toUnassignedJSON(d))
			}
			return printJSON(env.stdout, out)
		}
		if len(list) == 0 {
			_, err := fmt.Fprintln(env.stdout, "No transfer to the treasury is waiting for a wallet.")
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0) // write errors surface at Flush
		_, _ = fmt.Fprintln(tw, "ID\tCHAIN\tUSDC\tFROM\tTX\tLOG\tBLOCK\tSEEN\tSTATUS\tWALLET")
		for _, d := range list {
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", d.ID, d.ChainID, pricing.FormatUSDC(d.AmountMicro),
				d.From, d.TxHash, d.LogPos, d.BlockNumber, d.SeenAt.UTC().Format(time.RFC3339), d.Status, d.Wallet)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, "\nCredit one with `tollgate settle assign -deposit ID -wallet 0x…` (it is credited once, however often that runs).")
		return err
	})
}

func runSettleAssign(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "settle assign")
	id := fs.String("deposit", "", "the `id` of the transfer, from `tollgate settle unassigned` (required)")
	wallet := fs.String("wallet", "", "the 0x `address` of the wallet to credit (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args, "-deposit ID -wallet 0xADDRESS", 0); err != nil {
		return err
	}
	if *id == "" || *wallet == "" {
		fs.Usage()
		return fmt.Errorf("%w: settle assign needs -deposit and -wallet", errUsage)
	}
	return withLedger(ctx, env, *path, func(u *settlement.Unassigned) error {
		d, err := u.Assign(ctx, *id, *wallet)
		if err != nil {
			return fmt.Errorf("settle assign: %w", err)
		}
		if *asJSON {
			return printJSON(env.stdout, toUnassignedJSON(d))
		}
		_, err = fmt.Fprintf(env.stdout, "Deposit %s (%s USDC from %s, tx %s log %d on chain %s) is credited to %s (ledger transfer %s).\n",
			d.ID, pricing.FormatUSDC(d.AmountMicro), d.From, d.TxHash, d.LogPos, d.ChainID, d.Wallet, d.TransferID)
		return err
	})
}

// RegisterSettleMetrics registers on reg every metric `tollgate settle` exposes, the Go
// runtime's and the process's included (see RegisterServeMetrics).
func RegisterSettleMetrics(reg prometheus.Registerer) *settlement.Metrics {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return settlement.NewMetrics(reg)
}
