// Package limits enforces per-user caps in Redis, shared by every `tollgate serve` replica: a
// cap on concurrent requests and a cap on requests per minute, both configured per paywall.
//
// Concurrency slots are members of a sorted set scored by their expiry, so a slot whose
// process died (and never released it) frees itself when its lease runs out; the rate cap is a
// sliding one-minute log of admitted requests. Both are checked and taken in one Lua script,
// using Redis's clock, so replicas with skewed clocks agree. Redis holds no money: when it is
// unreachable the caller decides (Tollgate admits the request and logs it).
package limits

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of Acquire; callers decide with errors.Is.
var (
	// ErrTooManyConcurrent: the user already has MaxConcurrent requests in flight.
	ErrTooManyConcurrent = errors.New("limits: too many concurrent requests")
	// ErrRateLimited: the user made RatePerMinute requests in the last minute.
	ErrRateLimited = errors.New("limits: request rate exceeded")
)

// Limiter checks and takes caps. It is safe for concurrent use.
type Limiter struct {
	rdb    *redis.Client
	prefix string
	// lease is how long a concurrency slot lives without being released: longer than any
	// request may last, short enough that a crashed replica's slots come back.
	lease time.Duration
}

// New returns a Limiter whose keys start with prefix. lease bounds a concurrency slot's life.
func New(rdb *redis.Client, prefix string, lease time.Duration) *Limiter {
	if lease <= 0 {
		lease = 15 * time.Minute
	}
	return &Limiter{rdb: rdb, prefix: prefix, lease: lease}
}

// acquire takes a rate entry and a concurrency slot, or neither.
// KEYS[1] = concurrency zset, KEYS[2] = rate zset.
// ARGV = maxConcurrent, perMinute, member, lease ms.
// Returns 0 admitted, 1 over the concurrency cap, 2 over the rate cap.
var acquire = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxc, rate, member, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= maxc then return 1 end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= rate then return 2 end
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[1], now + lease, member)
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 0
`)

// Acquire admits one request of a user (key names the paywall and the user) if it is under
// both caps, and returns the func that gives its concurrency slot back. A cap of 0 is off;
// with both off Acquire does not touch Redis. requestID must be unique per request.
//
// It can return: ErrTooManyConcurrent, ErrRateLimited, or a Redis error (wrapped).
func (l *Limiter) Acquire(ctx context.Context, key string, maxConcurrent, perMinute int, requestID string) (func(context.Context), error) {
	if maxConcurrent <= 0 && perMinute <= 0 {
		return func(context.Context) {}, nil
	}
	conc := l.prefix + "conc:" + key
	rate := l.prefix + "rate:" + key
	res, err := acquire.Run(ctx, l.rdb, []string{conc, rate},
		max(maxConcurrent, 0), max(perMinute, 0), requestID, l.lease.Milliseconds()).Int()
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	switch res {
	case 1:
		return nil, fmt.Errorf("%w (at most %d at once)", ErrTooManyConcurrent, maxConcurrent)
	case 2:
		return nil, fmt.Errorf("%w (at most %d per minute)", ErrRateLimited, perMinute)
	}
	if maxConcurrent <= 0 {
		return func(context.Context) {}, nil
	}
	return func(ctx context.Context) {
		// A failed release is harmless: the slot's lease ends it.
		_ = l.rdb.ZRem(ctx, conc, requestID).Err()
	}, nil
}

// InFlight reports how many concurrency slots of key are taken (expired ones excluded).
func (l *Limiter) InFlight(ctx context.Context, key string) (int64, error) {
	t, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("limits: %w", err)
	}
	n, err := l.rdb.ZCount(ctx, l.prefix+"conc:"+key, fmt.Sprint(t.UnixMilli()+1), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("limits: %w", err)
	}
	return n, nil
}
