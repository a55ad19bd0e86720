package pricing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/tiercache"
)

// Catalog errors.
var (
	// ErrUnpricedModel: neither the paywall nor the catalog has a price for the model.
	ErrUnpricedModel = errors.New("pricing: model has no price")
	// ErrBadModelID: an empty model id or one longer than 256 characters.
	ErrBadModelID = errors.New("pricing: bad model id")
	// ErrBadPaywallID: an empty paywall id, or one longer than 64 characters.
	ErrBadPaywallID = errors.New("pricing: bad paywall id")
	// ErrNoOverride: the paywall has no override for the model.
	ErrNoOverride = errors.New("pricing: no override for this model")
)

// importChunk bounds the rows of one INSERT (7 parameters each, well under PostgreSQL's
// 65,535).
const importChunk = 500

// CatalogOptions tune a Catalog. The zero value is usable.
type CatalogOptions struct {
	// TTL bounds how long a replica may serve a price after it changed if the Redis
	// invalidation message is lost (default 5s); with no Redis client it is the only bound
	// for changes made by other processes (`tollgate prices import`).
	TTL time.Duration
	// MaxEntries bounds the in-process cache (default 100,000 model × paywall pairs): model
	// names come from requests, so the cache must not grow with what clients invent.
	MaxEntries int
	Logger     *slog.Logger
}

// Catalog is the table of model prices with per-paywall overrides, stored in the database and
// cached in-process (unpriced models too, so a flood of invented names costs one query per
// name per TTL). Any change flushes every replica's cache through Redis pub/sub. It is safe
// for concurrent use; Close stops its invalidation listener.
type Catalog struct {
	pool  *pgxpool.Pool
	bus   *tiercache.Bus // nil without Redis
	cache *tiercache.Cache[priceKey, Price]
}

type priceKey struct{ paywallID, model string }

// NewCatalog returns a catalog on a migrated database. rdb may be nil (one replica, or a
// command-line tool): changes made through other processes are then seen after opts.TTL.
// prefix is put before every Redis channel. At most one CatalogOptions is read.
func NewCatalog(pool *pgxpool.Pool, rdb *redis.Client, prefix string, opts ...CatalogOptions) *Catalog {
	var o CatalogOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Catalog{pool: pool}
	if rdb != nil {
		c.bus = tiercache.NewBus(rdb, prefix+"pricing:invalidate", o.Logger)
	}
	c.cache = tiercache.New(rdb, c.bus, prefix+"pricing:", tiercache.Config[priceKey, Price]{
		Name:       "price",
		Load:       c.load,
		LocalTTL:   o.TTL,
		MaxEntries: o.MaxEntries,
		Logger:     o.Logger,
	})
	return c
}

// WaitReady waits until this replica listens for invalidations (immediately without Redis).
func (c *Catalog) WaitReady(ctx context.Context) error { return c.bus.WaitReady(ctx) }

// Close stops the invalidation listener.
func (c *Catalog) Close() error { return c.bus.Close() }

// Lookup returns the price a paywall charges for a model: the paywall's override if it has
// one (the whole override, not merged field by field), else the catalog's. paywallID "" asks
// for the catalog's price alone.
// It can return: ErrUnpricedModel (also for a model id no catalog could hold).
func (c *Catalog) Lookup(ctx context.Context, paywallID, model string) (Price, error) {
	if !validModelID(model) {
		return Price{}, fmt.Errorf("%w: %q", ErrUnpricedModel, clipForError(model))
	}
	p, found, err := c.cache.Get(ctx, priceKey{paywallID, model})
	if err != nil {
		return Price{}, err
	}
	if !found {
		return Price{}, fmt.Errorf("%w: %q", ErrUnpricedModel, model)
	}
	return p, nil
}

const priceColumns = `input::TEXT, output::TEXT, cached_input::TEXT, cache_write::TEXT, reasoning::TEXT, request::TEXT`

func (c *Catalog) load(ctx context.Context, k priceKey) (Price, bool, error) {
	row := c.pool.QueryRow(ctx, `SELECT 0 AS rank, `+priceColumns+` FROM pricing_overrides WHERE paywall_id = $1 AND model = $2
		UNION ALL SELECT 1 AS rank, `+priceColumns+` FROM pricing_models WHERE model = $2
		ORDER BY rank LIMIT 1`, k.paywallID, k.model)
	var rank int
	p, err := scanPrice(row, &rank)
	if errors.Is(err, pgx.ErrNoRows) {
		return Price{}, false, nil
	}
	if err != nil {
		return Price{}, false, fmt.Errorf("pricing: lookup %q: %w", k.model, err)
	}
	return p, true, nil
}

// scanPrice reads the six priceColumns after any leading columns given in head.
func scanPrice(row pgx.Row, head ...any) (Price, error) {
	var in, out, request string
	var cached, write, reasoning *string
	if err := row.Scan(append(head, &in, &out, &cached, &write, &reasoning, &request)...); err != nil {
		return Price{}, err
	}
	var p Price
	var err error
	for _, f := range []struct {
		s   *string
		dst *Decimal
	}{{&in, &p.Input}, {&out, &p.Output}, {cached, &p.CachedInput}, {write, &p.CacheWrite}, {reasoning, &p.Reasoning}, {&request, &p.Request}} {
		if f.s == nil {
			continue
		}
		if *f.dst, err = ParseDecimal(*f.s); err != nil {
			return Price{}, fmt.Errorf("stored price: %w", err)
		}
	}
	return p, nil
}

// priceArgs are a price's six columns as query arguments: exact decimal strings, NULL for an
// unset fallback rate, "0" for an unset base rate.
func priceArgs(p Price) []any {
	orZero := func(d Decimal) any {
		if !d.IsSet() {
			return "0"
		}
		return d.String()
	}
	orNull := func(d Decimal) any {
		if !d.IsSet() {
			return nil
		}
		return d.String()
	}
	return []any{orZero(p.Input), orZero(p.Output), orNull(p.CachedInput), orNull(p.CacheWrite), orNull(p.Reasoning), orZero(p.Request)}
}

// Import stores base prices, replacing those of the same models in one transaction; models
// not named keep theirs. Every replica's cache is flushed.
// It can return: ErrBadModelID, ErrBadPrice (nothing is stored then).
func (c *Catalog) Import(ctx context.Context, models []ModelPrice) error {
	seen := make(map[string]bool, len(models))
	for _, m := range models {
		if !validModelID(m.Model) {
			return fmt.Errorf("%w: %q", ErrBadModelID, clipForError(m.Model))
		}
		if seen[m.Model] {
			return fmt.Errorf("%w: %q appears twice", ErrBadModelID, m.Model)
		}
		seen[m.Model] = true
		if err := m.Price.Validate(); err != nil {
			return fmt.Errorf("model %q: %w", m.Model, err)
		}
	}
	err := pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
		for start := 0; start < len(models); start += importChunk {
			chunk := models[start:min(start+importChunk, len(models))]
			var sql strings.Builder
			sql.WriteString(`INSERT INTO pricing_models (model, input, output, cached_input, cache_write, reasoning, request) VALUES `)
			args := make([]any, 0, 7*len(chunk))
			for i, m := range chunk {
				if i > 0 {
					sql.WriteString(", ")
				}
				n := len(args)
				fmt.Fprintf(&sql, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
				args = append(append(args, m.Model), priceArgs(m.Price)...)
			}
			sql.WriteString(` ON CONFLICT (model) DO UPDATE SET input = excluded.input, output = excluded.output,
				cached_input = excluded.cached_input, cache_write = excluded.cache_write,
				reasoning = excluded.reasoning, request = excluded.request, updated_at = now()`)
			if _, err := tx.Exec(ctx, sql.String(), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pricing: import: %w", err)
	}
	c.cache.InvalidateAll(ctx)
	return nil
}

// SetOverride sets a paywall's own price for a model (it need not be in the catalog). Every
// replica's cache is flushed.
// It can return: ErrBadPaywallID, ErrBadModelID, ErrBadPrice.
func (c *Catalog) SetOverride(ctx context.Context, paywallID, model string, p Price) error {
	id, err := overrideOwner(paywallID)
	if err != nil {
		return err
	}
	if !validModelID(model) {
		return fmt.Errorf("%w: %q", ErrBadModelID, clipForError(model))
	}
	if err := p.Validate(); err != nil {
		return err
	}
	args := append([]any{id, model}, priceArgs(p)...)
	_, err = c.pool.Exec(ctx, `INSERT INTO pricing_overrides (paywall_id, model, input, output, cached_input, cache_write, reasoning, request)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (paywall_id, model) DO UPDATE SET input = excluded.input, output = excluded.output,
			cached_input = excluded.cached_input, cache_write = excluded.cache_write,
			reasoning = excluded.reasoning, request = excluded.request, updated_at = now()`, args...)
	if err != nil {
		return fmt.Errorf("pricing: set override: %w", err)
	}
	c.cache.InvalidateAll(ctx)
	return nil
}

// DeleteOverride removes a paywall's own price for a model; the catalog's applies again.
// It can return: ErrBadPaywallID, ErrNoOverride.
func (c *Catalog) DeleteOverride(ctx context.Context, paywallID, model string) error {
	id, err := overrideOwner(paywallID)
	if err != nil {
		return err
	}
	tag, err := c.pool.Exec(ctx, `DELETE FROM pricing_overrides WHERE paywall_id = $1 AND model = $2`, id, model)
	if err != nil {
		return fmt.Errorf("pricing: delete override: %w", err)
	}
	c.cache.InvalidateAll(ctx)
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %q", ErrNoOverride, model)
	}
	return nil
}

// List returns the catalog's base prices, by model id.
func (c *Catalog) List(ctx context.Context) ([]ModelPrice, error) {
	return c.list(ctx, `SELECT model, `+priceColumns+` FROM pricing_models ORDER BY model`)
}

// Overrides returns a paywall's own prices, by model id.
// It can return: ErrBadPaywallID.
func (c *Catalog) Overrides(ctx context.Context, paywallID string) ([]ModelPrice, error) {
	id, err := overrideOwner(paywallID)
	if err != nil {
		return nil, err
	}
	return c.list(ctx, `SELECT model, `+priceColumns+` FROM pricing_overrides WHERE paywall_id = $1 ORDER BY model`, id)
}

func (c *Catalog) list(ctx context.Context, sql string, args ...any) ([]ModelPrice, error) {
	rows, err := c.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pricing: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ModelPrice, error) {
		var m ModelPrice
		var err error
		m.Price, err = scanPrice(r, &m.Model)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("pricing: list: %w", err)
	}
	return out, nil
}

func validModelID(m string) bool { return m != "" && len(m) <= maxModelID }

// clipForError shortens hostile input before it goes into an error message.
func clipForError(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// overrideOwner checks and lower-cases the paywall id an override belongs to. Paywall ids are
// UUIDs in lower case as the database prints them; the column is TEXT so that Lookup needs no
// validation on the request path (an id that matches nothing simply finds no override).
func overrideOwner(paywallID string) (string, error) {
	if paywallID == "" || len(paywallID) > 64 {
		return "", fmt.Errorf("%w: %q", ErrBadPaywallID, clipForError(paywallID))
	}
	return strings.ToLower(paywallID), nil
}
