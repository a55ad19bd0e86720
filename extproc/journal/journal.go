// Package journal keeps, in Redis, the settlements that `tollgate serve` replicas are retrying
// in the background (captures and voids the ledger refused during an outage), so that a replica
// that stops or dies does not take them with it: another replica claims them and finishes them.
//
// A job is an opaque value under an id, leased to one replica at a time. The lease is a score
// in a sorted set: the time, by Redis's clock, until which the holder keeps it. The holder
// renews it while it works on the job and removes the job when it is done; a job whose lease ran
// out — its holder died, or released it on shutdown — can be claimed by any replica. Claims are
// atomic (one Lua script), so two replicas polling at once never claim the same job; a holder
// that failed to renew in time may still be working on a job another has claimed, which is why
// what a job does must be idempotent (a capture carries its idempotency key).
package journal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound means the job is not in the journal (it was finished, by this replica or another).
var ErrNotFound = errors.New("journal: no such job")

// Job is a claimed job.
type Job struct {
	ID   string
	Data []byte
}

// Journal is a Redis journal of leased jobs. It is safe for concurrent use.
type Journal struct {
	rdb          *redis.Client
	jobs, leases string // the hash of jobs by id and the sorted set of their leases
}

// New returns a Journal whose keys start with prefix.
func New(rdb *redis.Client, prefix string) *Journal {
	return &Journal{rdb: rdb, jobs: prefix + "jobs", leases: prefix + "leases"}
}

// Every script reads the time from Redis, so that replicas with skewed clocks agree on leases.
const nowMs = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// put: KEYS = jobs, leases; ARGV = id, data, lease ms.
var put = redis.NewScript(nowMs + `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
`)

// renew: KEYS = leases; ARGV = id, lease ms. Returns 0 when the job is gone.
var renew = redis.NewScript(nowMs + `
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
`)

// claim: KEYS = jobs, leases; ARGV = max, lease ms. Returns id, data, id, data, …
var claim = redis.NewScript(nowMs + `
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[1], id)
  if data then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    out[#out + 1] = id
    out[#out + 1] = data
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
`)

// Put records a job under id, leased to the caller for lease. A job already under id is
// replaced.
func (j *Journal) Put(ctx context.Context, id string, data []byte, lease time.Duration) error {
	if err := put.Run(ctx, j.rdb, []string{j.jobs, j.leases}, id, data, lease.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("journal: put %s: %w", id, err)
	}
	return nil
}

// Renew extends the caller's lease on id to lease from now. It returns ErrNotFound when the job
// is no longer in the journal.
func (j *Journal) Renew(ctx context.Context, id string, lease time.Duration) error {
	n, err := renew.Run(ctx, j.rdb, []string{j.leases}, id, lease.Milliseconds()).Int()
	switch {
	case err != nil:
		return fmt.Errorf("journal: renew %s: %w", id, err)
	case n == 0:
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

// Release ends the caller's lease on id at once, so that any replica may claim the job.
func (j *Journal) Release(ctx context.Context, id string) error {
	if err := j.rdb.ZAddXX(ctx, j.leases, redis.Z{Score: 0, Member: id}).Err(); err != nil {
		return fmt.Errorf("journal: release %s: %w", id, err)
	}
	return nil
}

// Done removes the job under id (nothing happens if it is not there).
func (j *Journal) Done(ctx context.Context, id string) error {
	_, err := j.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, j.jobs, id)
		p.ZRem(ctx, j.leases, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: done %s: %w", id, err)
	}
	return nil
}

// Claim takes up to max jobs whose lease has run out, oldest lease first, and leases each to the
// caller for lease.
func (j *Journal) Claim(ctx context.Context, max int, lease time.Duration) ([]Job, error) {
	vals, err := claim.Run(ctx, j.rdb, []string{j.jobs, j.leases}, max, lease.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("journal: claim: %w", err)
	}
	jobs := make([]Job, 0, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		jobs = append(jobs, Job{ID: vals[i], Data: []byte(vals[i+1])})
	}
	return jobs, nil
}

// Len reports how many jobs the journal holds.
func (j *Journal) Len(ctx context.Context) (int64, error) {
	n, err := j.rdb.HLen(ctx, j.jobs).Result()
	if err != nil {
		return 0, fmt.Errorf("journal: len: %w", err)
	}
	return n, nil
}
