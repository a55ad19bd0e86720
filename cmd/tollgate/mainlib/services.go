package mainlib

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
)

// services are the stores every long-running command shares, opened once in order.
type services struct {
	cfg    *config.Config
	logger *slog.Logger
	pool   *pgxpool.Pool
	redis  *redis.Client
	ledger *ledger.Ledger
}

// openServices connects to the database and Redis and checks both answer.
func openServices(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*services, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	pcfg.MaxConns = cfg.Database.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s does not answer: %w", pcfg.ConnConfig.Host, err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB})
	if err := rdb.Ping(ctx).Err(); err != nil {
		pool.Close()
		_ = rdb.Close()
		return nil, fmt.Errorf("redis %s does not answer: %w", cfg.Redis.Addr, err)
	}
	return &services{
		cfg:    cfg,
		logger: logger,
		pool:   pool,
		redis:  rdb,
		ledger: ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")}),
	}, nil
}

func (s *services) Close() {
	_ = s.redis.Close()
	s.pool.Close()
}
