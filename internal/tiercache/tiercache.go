// Package tiercache is a read-through cache in two tiers — a bounded in-process map and a
// shared Redis copy — with invalidation that reaches every replica: the writer bumps a
// generation and deletes the Redis copy, then publishes the key on a Redis channel that every
// replica's Bus listens to. An in-process TTL bounds staleness if a message is lost (Redis
// down, a reconnect), and every (re)subscription flushes the in-process tier.
//
// Fills race with invalidations in two places, and both are closed by generations:
//   - in-process: a fill that began before an invalidation is dropped (a counter bumped by
//     every invalidation is read before the load and compared under the lock at store time);
//   - Redis: a fill writes its copy only if the key's generation is still the one it read with
//     the (missing) copy, in one Lua script. The writer bumps the generation before deleting the
//     copy, so a fill that read the database before the write either lands before the delete
//     (and is deleted) or after the bump (and is refused).
//
// Concurrent misses of one key share one read (a flight): when an entry expires or is
// invalidated under load, one request goes to Redis and the book of record, not every request
// that arrives before the answer. A Get that starts after an invalidation never joins a flight
// that began before it: it could read the old value.
//
// Redis is an optimisation, never a requirement: a Redis error on a read falls through to the
// loader, and a failed invalidation is retried, then logged.
package tiercache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config describes one cache.
type Config[K comparable, V any] struct {
	// Name routes invalidation messages on a shared Bus; unique per Bus.
	Name string
	// Load reads the value from the book of record; found=false is cached as a miss.
	Load func(ctx context.Context, k K) (v V, found bool, err error)
	// Key and ParseKey turn k into a string and back, for Redis keys and invalidation
	// messages. Without them an invalidation flushes every replica's whole in-process tier.
	Key      func(k K) string
	ParseKey func(s string) (K, bool)
	// Shared keeps a copy of found values in Redis, shared by the replicas (needs Key).
	Shared bool
	// LocalTTL bounds an in-process entry's life (default 1s).
	LocalTTL time.Duration
	// RedisTTL bounds a Redis copy's life (default 1m).
	RedisTTL time.Duration
	// MaxEntries bounds the in-process tier (default 100,000); keys may come from clients.
	MaxEntries int
	Logger     *slog.Logger
}

type entry[V any] struct {
	v       V
	found   bool
	expires int64 // unix nanoseconds
}

// Cache is one cache. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	cfg    Config[K, V]
	rdb    *redis.Client // nil: in-process only
	prefix string
	bus    *Bus

	mu      sync.RWMutex
	m       map[K]entry[V]
	gen     uint64 // bumped by every invalidation; see the package comment
	flights map[K]*flight[V]

	// redisDownUntil (unix ns) is set when a Redis read fails: until then misses go straight
	// to the loader.
	redisDownUntil atomic.Int64
}

// A Redis read on a miss gets redisReadTimeout; after a failure, reads skip Redis for
// redisPause. Invalidations always try (see retry).
const (
	redisReadTimeout = 200 * time.Millisecond
	redisPause       = time.Second
)

// New returns a cache. rdb may be nil (in-process only, no shared copy, no messages); bus may
// be nil (invalidations reach this process only). prefix is put before every Redis key.
func New[K comparable, V any](rdb *redis.Client, bus *Bus, prefix string, cfg Config[K, V]) *Cache[K, V] {
	if cfg.LocalTTL <= 0 {
		cfg.LocalTTL = time.Second
	}
	if cfg.RedisTTL <= 0 {
		cfg.RedisTTL = time.Minute
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if rdb == nil || cfg.Key == nil {
		cfg.Shared = false
	}
	c := &Cache[K, V]{cfg: cfg, rdb: rdb, prefix: prefix, bus: bus, m: make(map[K]entry[V]), flights: make(map[K]*flight[V])}
	if bus != nil {
		bus.route(cfg.Name, c.onMessage)
	}
	return c
}

// Get returns k's value (found=false when the loader found none), from the fastest tier that
// has it. It can return the loader's errors, and ctx's if it ends before the read does.
func (c *Cache[K, V]) Get(ctx context.Context, k K) (V, bool, error) {
	now := time.Now().UnixNano()
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if ok && now < e.expires {
		return e.v, e.found, nil
	}
	c.mu.Lock()
	if e, ok := c.m[k]; ok && time.Now().UnixNano() < e.expires { // a flight just landed
		c.mu.Unlock()
		return e.v, e.found, nil
	}
	f := c.flightLocked(ctx, k)
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.v, f.found, f.err
	case <-ctx.Done():
		var zero V
		return zero, false, ctx.Err()
	}
}

// loadTimeout bounds one shared read. The read runs apart from its callers' contexts, each of
// which may give up on it sooner, so that one caller going away does not fail the others.
const loadTimeout = 5 * time.Second

// flight is one read of a key after a miss, shared by the Gets that join it.
type flight[V any] struct {
	gen     uint64 // the in-process generation it reads with
	done    chan struct{}
	v       V
	found   bool
	err     error
	waiters int // Gets that joined it after the first, under Cache.mu (for tests)
}

// flightLocked returns the flight reading k at the current generation, starting one if there
// is none. The read runs in a goroutine of its own, detached from ctx's cancellation (not its
// values) and bounded by loadTimeout. c.mu must be held.
func (c *Cache[K, V]) flightLocked(ctx context.Context, k K) *flight[V] {
	if f, ok := c.flights[k]; ok && f.gen == c.gen {
		f.waiters++
		return f
	}
	f := &flight[V]{gen: c.gen, done: make(chan struct{})}
	c.flights[k] = f
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		f.v, f.found, f.err = c.miss(ctx, k, f.gen)
		c.mu.Lock()
		if c.flights[k] == f {
			delete(c.flights, k)
		}
		c.mu.Unlock()
		close(f.done)
	}()
	return f
}

// miss reads through Redis to the loader. gen is the in-process generation read before any
// of it, so an invalidation that arrives meanwhile makes the fill a no-op.
func (c *Cache[K, V]) miss(ctx context.Context, k K, gen uint64) (V, bool, error) {
	var zero V
	var rkey, rgen string
	shared := c.cfg.Shared && time.Now().UnixNano() >= c.redisDownUntil.Load()
	if shared {
		rkey = c.cfg.Key(k)
		rctx, cancel := context.WithTimeout(ctx, redisReadTimeout)
		vals, err := c.rdb.MGet(rctx, c.valueKey(rkey), c.genKey(rkey)).Result()
		cancel()
		if err != nil {
			// Skip Redis for a while rather than make every miss wait for it.
			c.redisDownUntil.Store(time.Now().Add(redisPause).UnixNano())
			c.cfg.Logger.Warn("cache: redis read failed; reading the database", "cache", c.cfg.Name, "pause", redisPause, "err", err)
			shared = false
		} else {
			rgen, _ = vals[1].(string)
			if raw, ok := vals[0].(string); ok {
				var v V
				if err := json.Unmarshal([]byte(raw), &v); err == nil {
					c.fill(k, v, true, gen)
					return v, true, nil
				}
				c.cfg.Logger.Warn("cache: undecodable redis copy; reading the database", "cache", c.cfg.Name)
			}
		}
	}
	v, found, err := c.cfg.Load(ctx, k)
	if err != nil {
		return zero, false, err
	}
	// Misses stay in-process: keys come from clients, and Redis must not fill with their
	// inventions.
	if shared && found {
		if raw, err := json.Marshal(v); err == nil {
			err := setIfGen.Run(ctx, c.rdb, []string{c.valueKey(rkey), c.genKey(rkey)},
				rgen, raw, c.cfg.RedisTTL.Milliseconds()).Err()
			if err != nil {
				c.cfg.Logger.Warn("cache: redis write failed", "cache", c.cfg.Name, "err", err)
			}
		}
	}
	c.fill(k, v, found, gen)
	return v, found, nil
}

// setIfGen writes the copy only if the generation is still the one read with the miss
// ("" = absent).
var setIfGen = redis.NewScript(`
local g = redis.call('GET', KEYS[2])
if (g == false and ARGV[1] == '') or g == ARGV[1] then
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
	return 1
end
return 0`)

func (c *Cache[K, V]) fill(k K, v V, found bool, gen uint64) {
	expires := time.Now().Add(c.cfg.LocalTTL).UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= c.cfg.MaxEntries {
		c.evictLocked()
	}
	c.m[k] = entry[V]{v: v, found: found, expires: expires}
}

// evictLocked makes room: expired entries first, else one arbitrary entry.
func (c *Cache[K, V]) evictLocked() {
	now := time.Now().UnixNano()
	for k, e := range c.m {
		if now >= e.expires {
			delete(c.m, k)
		}
	}
	if len(c.m) < c.cfg.MaxEntries {
		return
	}
	for k := range c.m {
		delete(c.m, k)
		return
	}
}

// Invalidate forgets keys in this process and in Redis, and tells every other replica. Call
// it after the change is committed. A Redis failure is retried a few times and then logged,
// not returned: the change is already committed, and the TTLs bound what a replica may still
// serve (LocalTTL if only the message was lost, RedisTTL if the shared copy survived too).
func (c *Cache[K, V]) Invalidate(ctx context.Context, keys ...K) {
	if c.cfg.Key == nil {
		c.InvalidateAll(ctx)
		return
	}
	c.mu.Lock()
	c.gen++
	for _, k := range keys {
		delete(c.m, k)
	}
	c.mu.Unlock()
	if c.rdb == nil {
		return
	}
	rkeys := make([]string, len(keys))
	for i, k := range keys {
		rkeys[i] = c.cfg.Key(k)
	}
	c.retry(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if c.cfg.Shared {
				for _, rk := range rkeys {
					// The generation first: see the package comment.
					p.Incr(ctx, c.genKey(rk))
					p.PExpire(ctx, c.genKey(rk), genTTL)
					p.Del(ctx, c.valueKey(rk))
				}
			}
			if c.bus != nil {
				p.Publish(ctx, c.bus.channel, c.cfg.Name+"\n"+strings.Join(rkeys, "\n"))
			}
			return nil
		})
		return err
	})
}

// InvalidateAll forgets every key of this cache in every replica's process. Redis copies are
// left to their TTL, so it suits caches without them.
func (c *Cache[K, V]) InvalidateAll(ctx context.Context) {
	c.flush()
	if c.rdb == nil || c.bus == nil {
		return
	}
	c.retry(ctx, func(ctx context.Context) error {
		return c.rdb.Publish(ctx, c.bus.channel, c.cfg.Name+"\n"+allKeys).Err()
	})
}

// retry runs a Redis write up to 3 times, then logs its error. It runs detached from the
// caller's cancellation (with its own deadline): the change it announces is already committed.
func (c *Cache[K, V]) retry(ctx context.Context, write func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = write(ctx); err == nil {
			return
		}
		if attempt < 3 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
	}
	c.cfg.Logger.Error("cache: invalidation did not reach redis; other replicas may serve the old value until their TTLs end",
		"cache", c.cfg.Name, "local_ttl", c.cfg.LocalTTL, "redis_ttl", c.cfg.RedisTTL, "err", err)
}

func (c *Cache[K, V]) flush() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}

// onMessage applies an invalidation published by any replica (this one included).
func (c *Cache[K, V]) onMessage(keys []string) {
	if len(keys) == 1 && keys[0] == allKeys {
		c.flush()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, s := range keys {
		var k K
		ok := c.cfg.ParseKey != nil
		if ok {
			k, ok = c.cfg.ParseKey(s)
		}
		if !ok { // cannot tell which entry: forget them all
			clear(c.m)
			return
		}
		delete(c.m, k)
	}
}

// Len reports how many entries the in-process tier holds (for tests and metrics).
func (c *Cache[K, V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// genTTL outlives any fill by far; an expired generation only makes a fill's write fail.
const genTTL = time.Hour

const allKeys = "*"

func (c *Cache[K, V]) valueKey(rk string) string {
	return c.prefix + "c:" + c.cfg.Name + ":v:{" + rk + "}"
}
func (c *Cache[K, V]) genKey(rk string) string {
	return c.prefix + "c:" + c.cfg.Name + ":g:{" + rk + "}"
}

// Bus is one Redis pub/sub subscription shared by several caches.
type Bus struct {
	rdb     *redis.Client
	channel string
	logger  *slog.Logger

	mu     sync.Mutex
	routes map[string]func([]string)

	ready  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	ps     *redis.PubSub
}

// NewBus subscribes to channel and routes its messages to the caches created with it.
func NewBus(rdb *redis.Client, channel string, logger *slog.Logger) *Bus {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		rdb: rdb, channel: channel, logger: logger,
		routes: map[string]func([]string){},
		ready:  make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	b.ps = rdb.Subscribe(ctx, channel)
	go b.listen(ctx)
	return b
}

func (b *Bus) route(name string, f func([]string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.routes[name] = f
}

// WaitReady waits until the first subscription is confirmed (from then on no invalidation
// is missed except across a reconnect, after which every cache is flushed) or ctx ends. A nil
// Bus (no Redis) is ready at once.
func (b *Bus) WaitReady(ctx context.Context) error {
	if b == nil {
		return nil
	}
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tiercache: subscription to %s not confirmed: %w", b.channel, ctx.Err())
	}
}

// listen delivers messages until Close. A Receive that times out sends a ping, so a dead
// connection is noticed and replaced; go-redis resubscribes on the new one, and the
// confirmation flushes every cache because messages may have been lost in between.
func (b *Bus) listen(ctx context.Context) {
	defer close(b.done)
	first := true
	failures := 0
	for {
		msg, err := b.ps.ReceiveTimeout(ctx, 5*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				_ = b.ps.Ping(ctx)
				continue
			}
			failures++
			b.logger.Warn("cache bus: receive failed; flushing and resubscribing", "channel", b.channel, "err", err)
			b.flushAll()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(min(failures, 20)) * 50 * time.Millisecond):
			}
			continue
		}
		failures = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				b.flushAll()
				if first {
					first = false
					close(b.ready)
				}
			}
		case *redis.Message:
			name, rest, _ := strings.Cut(m.Payload, "\n")
			b.mu.Lock()
			f := b.routes[name]
			b.mu.Unlock()
			if f != nil {
				f(strings.Split(rest, "\n"))
			}
		}
	}
}

func (b *Bus) flushAll() {
	b.mu.Lock()
	fs := make([]func([]string), 0, len(b.routes))
	for _, f := range b.routes {
		fs = append(fs, f)
	}
	b.mu.Unlock()
	for _, f := range fs {
		f([]string{allKeys})
	}
}

// Close stops listening. Closing a nil Bus does nothing.
func (b *Bus) Close() error {
	if b == nil {
		return nil
	}
	b.cancel()
	err := b.ps.Close()
	<-b.done
	return err
}
