package mainlib

import (
	"context"
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"

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

	pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("database.url: %w", err)
	}
	pcfg.MaxConns = cfg.Database.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("database %s does not answer: %w", pcfg.ConnConfig.Host, err)
	}
	book := ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(chains))
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
			Logger:       logger.With("part", "settlement"),
			PollInterval: s.PollInterval, LeaseTTL: s.LeaseTTL,
			StuckAfter: s.Payouts.StuckAfter, AuthorizationValidity: s.Payouts.AuthorizationValidity,
			RetryBackoff: s.Payouts.RetryBackoff, MaxPayoutMicro: s.Payouts.MaxMicro,
			DailyPayoutMicro: s.Payouts.DailyMicro, MaxAttempts: s.Payouts.MaxAttempts,
		})
		if err != nil {
			return err
		}
		go func() { errs <- w.Run(ctx) }()
	}
	logger.Info(settleReady, "chains", len(chains), "hot_wallet", signer.Address().Hex(), "treasury", s.Treasury)

	var first error
	for range chains {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel() // one chain misconfigured: stop the others and say why
		}
	}
	if first != nil {
		return fmt.Errorf("settle: %w", first)
	}
	return nil
}
