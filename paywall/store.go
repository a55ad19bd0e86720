package paywall

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// errNotBuilt marks operations whose implementation has not landed yet.
var errNotBuilt = errors.New("paywall: not built yet")

// Options tune a Store. The zero value is usable.
type Options struct {
	// PlatformFeeBps is the platform's fee; Create, Update and SetMarkup refuse a built-in
	// paywall whose markup cannot cover it (pricing.CheckBuiltinMarkup).
	PlatformFeeBps int64
	// BuiltinUpstream is the routing header value of built-in paywalls (default "openrouter").
	BuiltinUpstream string
	// LocalTTL bounds how long this replica trusts its in-process cache when an invalidation
	// message is lost (default 1s).
	LocalTTL time.Duration
	// RedisTTL bounds a shared Redis cache entry (default 1m).
	RedisTTL time.Duration
	// MaxLocalEntries bounds each in-process cache (default 100,000).
	MaxLocalEntries int
	Logger          *slog.Logger
}

// Store keeps paywalls, keys and authorizations in the database, cached in-process and in
// Redis. It is safe for concurrent use. Close stops its invalidation listener.
type Store struct {
	pool   *pgxpool.Pool
	rdb    *redis.Client
	prefix string
	opts   Options
}

// NewStore returns a Store on a migrated database. prefix is put before every Redis key and
// channel.
func NewStore(pool *pgxpool.Pool, rdb *redis.Client, prefix string, opts Options) *Store {
	return &Store{pool: pool, rdb: rdb, prefix: prefix, opts: opts}
}

// Create stores a new paywall and returns it with its API key, which is shown this once.
// It can return: ErrInvalid.
func (s *Store) Create(ctx context.Context, p Paywall) (Paywall, string, error) {
	return Paywall{}, "", errNotBuilt
}

// ByKey returns the paywall of an API key.
// It can return: ErrUnknownKey.
func (s *Store) ByKey(ctx context.Context, apiKey string) (Paywall, error) {
	return Paywall{}, errNotBuilt
}

// Get returns a paywall. It can return: ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Paywall, error) { return Paywall{}, errNotBuilt }

// List returns every paywall, oldest first.
func (s *Store) List(ctx context.Context) ([]Paywall, error) { return nil, errNotBuilt }

// RotateKey gives a paywall a new API key; the old one stops working on every replica.
// It can return: ErrNotFound.
func (s *Store) RotateKey(ctx context.Context, id string) (string, error) { return "", errNotBuilt }

// SetMarkup changes a paywall's markup.
// It can return: ErrNotFound, ErrInvalid.
func (s *Store) SetMarkup(ctx context.Context, id string, bps int64) error { return errNotBuilt }

// Authorization returns the wallet a paywall's user authorized.
// It can return: ErrBadUserID, ErrNotAuthorized.
func (s *Store) Authorization(ctx context.Context, paywallID, userID string) (Authorization, error) {
	return Authorization{}, errNotBuilt
}

// Authorize links a paywall's user to a wallet, replacing an earlier link.
// It can return: ErrNotFound, ErrBadUserID, ErrBadWallet.
func (s *Store) Authorize(ctx context.Context, paywallID, userID, wallet string) (Authorization, error) {
	return Authorization{}, errNotBuilt
}

// Revoke ends a user's authorization of a paywall.
// It can return: ErrBadUserID, ErrNotAuthorized.
func (s *Store) Revoke(ctx context.Context, paywallID, userID string) error { return errNotBuilt }

// Close stops the invalidation listener.
func (s *Store) Close() error { return nil }
