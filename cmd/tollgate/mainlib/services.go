package mainlib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/webhook"
)

// services are the stores every long-running command shares, opened once in order.
type services struct {
	cfg    *config.Config
	logger *slog.Logger
	pool   *pgxpool.Pool
	redis  *redis.Client
	ledger *ledger.Ledger
	// secrets seals BYOK upstream credentials (paywall.secrets_key); nil without one.
	secrets *paywall.SecretsKey
	// previous are the keys a rotation replaces (paywall.previous_secrets_keys): they open, never seal.
	previous []*paywall.SecretsKey

	paywallsOnce sync.Once
	paywalls     *paywall.Store // made on first use by paywallStore
}

// openServices connects to the database and Redis and checks both answer.
func openServices(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*services, error) {
	secrets, previous, err := secretsKeys(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	rdb, err := openRedis(ctx, cfg.Redis)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &services{
		cfg:      cfg,
		logger:   logger,
		pool:     pool,
		redis:    rdb,
		ledger:   ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")}),
		secrets:  secrets,
		previous: previous,
	}, nil
}

// secretsKeys are paywall.secrets_key (nil when unset) and paywall.previous_secrets_keys,
// decoded (config.Load has checked them: none is empty).
func secretsKeys(cfg *config.Config) (*paywall.SecretsKey, []*paywall.SecretsKey, error) {
	k, err := paywall.ParseSecretsKey(cfg.Paywall.SecretsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("paywall.secrets_key: %w", err)
	}
	var previous []*paywall.SecretsKey
	for i, v := range cfg.Paywall.PreviousSecretsKeys {
		p, err := paywall.ParseSecretsKey(v)
		if err == nil && p == nil {
			err = errors.New("empty")
		}
		if err != nil {
			return nil, nil, fmt.Errorf("paywall.previous_secrets_keys[%d]: %w", i, err)
		}
		previous = append(previous, p)
	}
	return k, previous, nil
}

// openRedis connects to Redis and checks that it answers.
func openRedis(ctx context.Context, c config.Redis) (*redis.Client, error) {
	rdb := redis.NewClient(&redis.Options{Addr: c.Addr, Password: c.Password, DB: c.DB})
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis %s does not answer: %w", c.Addr, err)
	}
	return rdb, nil
}

// openPool opens the database and checks that it answers.
func openPool(ctx context.Context, db config.Database) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	pcfg.MaxConns = db.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s does not answer: %w", pcfg.ConnConfig.Host, err)
	}
	return pool, nil
}

// paywallStore returns the paywall store, configured with the platform fee, the built-in
// upstream and the secrets key, making it on first use (its invalidation listener is a goroutine that commands
// without paywalls need not run). Close closes it.
func (s *services) paywallStore() *paywall.Store {
	s.paywallsOnce.Do(func() {
		s.paywalls = paywall.NewStore(s.pool, s.redis, s.cfg.Redis.Prefix, paywall.Options{
			PlatformFeeBps: s.cfg.Serve.FeeBps, BuiltinUpstream: s.builtinUpstream(), Logger: s.logger.With("part", "paywall"),
			SecretsKey: s.secrets, PreviousSecretsKeys: s.previous,
		})
	})
	return s.paywalls
}

// outbox returns the webhook outbox on the database, sealing and opening signing secrets with
// the secrets keys; o may carry a logger and metrics.
func (s *services) outbox(o webhook.Options) *webhook.Outbox {
	o.PreviousSecretsKeys = s.previous
	return webhook.New(s.pool, s.ledger, s.secrets, o)
}

// builtinUpstream is the routing header value of the operator's provider's route:
// serve.provider.upstream, or its name.
func (s *services) builtinUpstream() string {
	if u := s.cfg.Serve.Provider.Upstream; u != "" {
		return u
	}
	return s.cfg.Serve.Provider.Name
}

// links signs and checks the hosted pages' link tokens with serve.link_secret; the ext_proc
// server makes them, the API checks them.
func (s *services) links() paywall.Links {
	sc := s.cfg.Serve
	return paywall.Links{BaseURL: sc.PublicURL, Secret: []byte(sc.LinkSecret), TTL: sc.LinkTTL, Now: time.Now}
}

func (s *services) Close() {
	if s.paywalls != nil {
		_ = s.paywalls.Close()
	}
	_ = s.redis.Close()
	s.pool.Close()
}
