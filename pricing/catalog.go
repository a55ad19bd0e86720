package pricing

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// ErrUnpricedModel: neither the paywall nor the catalog has a price for the model.
var ErrUnpricedModel = errors.New("pricing: model has no price")

// errNotBuilt marks operations whose implementation has not landed yet.
var errNotBuilt = errors.New("pricing: not built yet")

// CatalogOptions tune a Catalog. The zero value is usable.
type CatalogOptions struct {
	// TTL bounds how long a replica may serve a price after it changed when the Redis
	// invalidation message is lost (default 5s; with no Redis client it is the only bound).
	TTL time.Duration
	// MaxEntries bounds the in-process cache (default 100,000 model × paywall pairs); model
	// names come from requests, so the cache must not grow with what clients invent.
	MaxEntries int
	Logger     *slog.Logger
}

// Catalog is the table of model prices with per-paywall overrides, stored in the database and
// cached in-process. It is safe for concurrent use. Close stops its invalidation listener.
type Catalog struct {
	pool   *pgxpool.Pool
	rdb    *redis.Client
	prefix string
	opts   CatalogOptions
}

// NewCatalog returns a catalog on a migrated database. rdb may be nil (one replica, or tests):
// changes made through other processes are then seen after opts.TTL. prefix is put before
// every Redis key and channel.
func NewCatalog(pool *pgxpool.Pool, rdb *redis.Client, prefix string, opts ...CatalogOptions) *Catalog {
	var o CatalogOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	return &Catalog{pool: pool, rdb: rdb, prefix: prefix, opts: o}
}

// Lookup returns the price a paywall charges for a model: its override if it has one, else
// the catalog's.
// It can return: ErrUnpricedModel.
func (c *Catalog) Lookup(ctx context.Context, paywallID, model string) (Price, error) {
	return Price{}, errNotBuilt
}

// Import stores base prices, replacing those of the same models; other models keep theirs.
// It can return: ErrBadPrice.
func (c *Catalog) Import(ctx context.Context, models []ModelPrice) error { return errNotBuilt }

// SetOverride sets a paywall's own price for a model.
// It can return: ErrBadPrice.
func (c *Catalog) SetOverride(ctx context.Context, paywallID, model string, p Price) error {
	return errNotBuilt
}

// Close stops the invalidation listener.
func (c *Catalog) Close() error { return nil }
