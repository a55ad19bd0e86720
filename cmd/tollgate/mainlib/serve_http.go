package mainlib

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/tollgate-dev/tollgate/api"
	"github.com/tollgate-dev/tollgate/api/siwe"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// fallbackSignInChain is the chain wallets sign in on when no settlement chain is configured
// (Polygon PoS): sign-in needs a chain id, even where top-ups are not set up yet.
const fallbackSignInChain = 137

// apiHandler returns the HTTP API and hosted pages that `tollgate serve` mounts on
// serve.http_addr: the app's and developer's JSON API, the connect/top-up/wallet pages and the
// OpenAPI document (package api). Top-ups are enabled when settle.treasury and settle.chains
// are configured; contract wallets (EIP-1271) can sign in, and sign top-ups, on the chains
// whose rpc_url answers (one client per chain, shared by both checks).
// The server is the http.Handler; its Run prunes old idempotent answers until its context
// ends (serve runs it beside the hold sweeper).
func apiHandler(s *services) (*api.Server, error) {
	cfg := s.cfg
	logger := s.logger.With("part", "api")
	var chainIDs []uint64
	var payoutChains []string // withdrawals: the settlement chains, the first by default
	callers := eip1271.Chains{}
	for _, c := range cfg.Settle.Chains {
		id, err := strconv.ParseUint(c.ID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("settle.chains: chain id %q: %w", c.ID, err)
		}
		chainIDs = append(chainIDs, id)
		payoutChains = append(payoutChains, c.ID)
		// Over http(s) this dials nothing yet; the first EIP-1271 check connects.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		client, err := ethclient.DialContext(ctx, c.RPCURL)
		cancel()
		if err != nil {
			logger.Warn("api: contract wallets cannot sign in or sign top-ups on this chain: its node does not answer", "chain", c.ID, "err", err)
			continue
		}
		callers[id] = client
	}
	if len(chainIDs) == 0 {
		logger.Warn("api: no settle.chains configured: wallets sign in on the fallback chain and top-ups are off", "chain", fallbackSignInChain)
		chainIDs = []uint64{fallbackSignInChain}
	}

	var topUps api.TopUps
	if len(cfg.Settle.Chains) > 0 && cfg.Settle.Treasury != "" {
		chains, err := settlement.ChainsFromConfig(cfg.Settle.Chains)
		if err != nil {
			return nil, err
		}
		t, err := settlement.NewTopUps(s.pool, chains, cfg.Settle.Treasury, settlement.TopUpOptions{
			Validity: cfg.Settle.TopUps.Validity, MinMicro: cfg.Settle.TopUps.MinMicro, MaxMicro: cfg.Settle.TopUps.MaxMicro,
			Logger: s.logger.With("part", "topups"), Contracts: callers,
		})
		if err != nil {
			return nil, err
		}
		topUps = t
	}

	sc := cfg.Serve
	server, err := api.New(api.Deps{
		Pool:       s.pool,
		Redis:      s.redis,
		Paywalls:   s.paywallStore(),
		Ledger:     s.ledger,
		Links:      s.links(),
		Nonces:     paywall.NewNonces(s.redis, cfg.Redis.Prefix),
		TopUps:     topUps,
		Signatures: siwe.Verifier{Contracts: callers},
	}, api.Options{
		PublicURL:            sc.PublicURL,
		ChainIDs:             chainIDs,
		PayoutChains:         payoutChains,
		RedisPrefix:          cfg.Redis.Prefix,
		FeeBps:               sc.FeeBps,
		MaxChargeMicro:       sc.API.MaxChargeMicro,
		MinPayoutMicro:       sc.API.MinPayoutMicro,
		MaxPayoutMicro:       cfg.Settle.Payouts.MaxMicro,
		DailyPayoutMicro:     sc.API.DailyPayoutMicro,
		TopUpMinMicro:        cfg.Settle.TopUps.MinMicro,
		TopUpMaxMicro:        cfg.Settle.TopUps.MaxMicro,
		LinkTTL:              sc.LinkTTL,
		IdempotencyRetention: sc.API.IdempotencyRetention,
		Logger:               logger,
	})
	if err != nil {
		return nil, err
	}
	return server, nil
}
