package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// idempotencyRows counts the stored answers.
func (e *env) idempotencyRows() int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(e.t.Context(), `SELECT count(*) FROM api_idempotency`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestIdempotencyPruning: answers are kept for the retention and pruned after it, in batches;
// a charge retried with a pruned key is not charged twice (the ledger still knows the key).
func TestIdempotencyPruning(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.IdempotencyRetention = 24 * time.Hour; o.PruneBatch = 2 })
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 10_000_000)
	var first reply
	for i := range 5 {
		r := e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", fmt.Sprint("k-", i))
		expectStatus(t, r, http.StatusCreated)
		if i == 0 {
			first = r
		}
	}
	if n := e.idempotencyRows(); n != 5 {
		t.Fatalf("%d stored answers, want 5", n)
	}

	e.clock.Advance(23 * time.Hour)
	if n, err := e.api.PruneIdempotency(t.Context()); err != nil || n != 0 {
		t.Fatalf("within the retention: pruned %d, %v", n, err)
	}
	r := e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "k-0")
	if !bytes.Equal(r.body, first.body) || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay within the retention: %d %s", r.status, r.body)
	}

	e.clock.Advance(2 * time.Hour)
	if n, err := e.api.PruneIdempotency(t.Context()); err != nil || n != 5 {
		t.Fatalf("after the retention: pruned %d (batches of 2), %v; want 5", n, err)
	}
	if n := e.idempotencyRows(); n != 0 {
		t.Errorf("%d answers left", n)
	}
	// A late retry runs again, finds the ledger's transfer under the same key, and charges
	// nothing more.
	r = e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "k-0")
	expectStatus(t, r, http.StatusCreated)
	if r.json(t)["id"] != first.json(t)["id"] || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("late retry: %s (first: %s)", r.body, first.body)
	}
	b, err := e.ledger.Balance(t.Context(), wallet)
	if err != nil || b.AvailableMicro != 5_000_000 {
		t.Errorf("balance %+v %v, want 5 USDC (five charges, none twice)", b, err)
	}
}

// TestIdempotencyPruningConcurrent: several replicas pruning the same table at the same moment
// delete every old answer exactly once, fail nowhere and touch no recent answer.
func TestIdempotencyPruningConcurrent(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.PruneBatch = 50 })
	const old, recent = 3000, 20
	_, err := e.db.Pool.Exec(t.Context(), `
		INSERT INTO api_idempotency (paywall_id, operation, idempotency_key, request_hash, status, response, created_at)
		SELECT 'pw', 'charge', 'old-' || g::TEXT, 'h', 201, '\x7b7d'::BYTEA, now() - INTERVAL '25 hours' - g * INTERVAL '1 millisecond'
		FROM generate_series(1, $1) AS g`, old)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.db.Pool.Exec(t.Context(), `
		INSERT INTO api_idempotency (paywall_id, operation, idempotency_key, request_hash, status, response, created_at)
		SELECT 'pw', 'charge', 'new-' || g::TEXT, 'h', 201, '\x7b7d'::BYTEA, now() - INTERVAL '23 hours'
		FROM generate_series(1, $1) AS g`, recent)
	if err != nil {
		t.Fatal(err)
	}
	const replicas = 4
	servers := []*Server{e.api}
	for range replicas - 1 {
		s, err := New(e.api.deps, e.api.opts)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	var mu sync.Mutex
	var total int64
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			n, err := s.PruneIdempotency(t.Context())
			if err != nil {
				t.Errorf("prune: %v", err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	// A pass is bounded (maxPruneBatches), so a replica may leave some for its next pass.
	for total < old {
		n, err := e.api.PruneIdempotency(t.Context())
		if err != nil || n == 0 {
			t.Fatalf("after %d: pruned %d, %v", total, n, err)
		}
		total += n
	}
	if total != old {
		t.Errorf("replicas deleted %d answers together, want %d", total, old)
	}
	if n := e.idempotencyRows(); n != recent {
		t.Errorf("%d answers left, want the %d recent ones", n, recent)
	}
}

// TestPrunerRuns: Run prunes at once and on its interval, and stops with its context.
func TestPrunerRuns(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.PruneInterval = 20 * time.Millisecond })
	insertOld := func(key string) {
		_, err := e.db.Pool.Exec(t.Context(), `
			INSERT INTO api_idempotency (paywall_id, operation, idempotency_key, request_hash, status, response, created_at)
			VALUES ('pw', 'payout', $1, 'h', 201, '\x7b7d'::BYTEA, now() - INTERVAL '48 hours')`, key)
		if err != nil {
			t.Fatal(err)
		}
	}
	waitEmpty := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for e.idempotencyRows() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the pruner did not delete an old answer within 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	insertOld("a")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { e.api.Run(ctx); close(done) }()
	waitEmpty()
	insertOld("b") // after the first pass: only a later tick can delete it
	waitEmpty()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}
