package api

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Defaults of the idempotency pruner.
const (
	// DefaultIdempotencyRetention is how long an Idempotency-Key's answer is kept: 24 hours,
	// as Stripe and Adyen keep theirs.
	DefaultIdempotencyRetention = 24 * time.Hour
	defaultPruneInterval        = 10 * time.Minute
	defaultPruneBatch           = 1000
	// maxPruneBatches bounds one pruning pass, so a backlog is worked off over several passes
	// rather than in one long burst of deletes.
	maxPruneBatches = 100
)

// prune deletes up to batch answers stored before cutoff, oldest first, and returns how many
// it deleted. One statement, so one short transaction per batch. Every replica may prune at
// the same moment: SKIP LOCKED makes each take rows no other is deleting, so none waits on
// another and no two deadlock.
func (i *idempotency) prune(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	tag, err := i.pool.Exec(ctx, `
		DELETE FROM api_idempotency
		WHERE (paywall_id, operation, idempotency_key) IN (
			SELECT paywall_id, operation, idempotency_key FROM api_idempotency
			WHERE created_at < $1
			ORDER BY created_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED)`, cutoff, batch)
	if err != nil {
		return 0, fmt.Errorf("api: prune idempotency records: %w", err)
	}
	return tag.RowsAffected(), nil
}

// PruneIdempotency deletes the stored answers of Idempotency-Keys older than
// Options.IdempotencyRetention, in batches of Options.PruneBatch, until a batch comes back
// short (or after a bounded number of batches), and returns how many it deleted. A request
// retried with a pruned key runs again; the ledger, which keys its transfers on the same
// Idempotency-Key, still finds the money it moved the first time and moves none twice.
func (s *Server) PruneIdempotency(ctx context.Context) (int64, error) {
	cutoff := s.opts.Now().Add(-s.opts.IdempotencyRetention)
	var total int64
	for range maxPruneBatches {
		n, err := s.idem.prune(ctx, cutoff, s.opts.PruneBatch)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(s.opts.PruneBatch) {
			break
		}
	}
	return total, nil
}

// Run prunes stored idempotent answers (PruneIdempotency) at once and then about every
// Options.PruneInterval (±20 %, so replicas started together drift apart), until ctx ends.
// Every replica may run it.
func (s *Server) Run(ctx context.Context) {
	for {
		n, err := s.PruneIdempotency(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.opts.Logger.WarnContext(ctx, "api: pruning idempotency records failed; retrying later", "err", err)
		case n > 0:
			s.opts.Logger.InfoContext(ctx, "api: pruned idempotency records", "deleted", n, "retention", s.opts.IdempotencyRetention)
		}
		jitter := time.Duration(rand.Int64N(int64(s.opts.PruneInterval)/5*2+1)) - s.opts.PruneInterval/5 //nolint:gosec // spreading timers needs no secret randomness
		t := time.NewTimer(s.opts.PruneInterval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
