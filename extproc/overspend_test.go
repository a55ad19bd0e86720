package extproc

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestOverspendConcurrentStreams is the overspend proof: one wallet with balance B, 200
// concurrent streaming requests spread over 3 server instances that share PostgreSQL and
// Redis. A quarter of the upstream replies report more usage than was held for (an overrun),
// a quarter of the clients go away mid-stream (estimated settlement), a quarter of the
// upstreams fail (void). While it runs, the wallet is sampled; at the end the total captured is
// at most B, the wallet never went negative, and every hold ended captured, voided or expired.
func TestOverspendConcurrentStreams(t *testing.T) {
	const (
		balance  = 20_000 // micro-USDC: about 80 of the 200 holds fit at once
		streams  = 200
		replicas = 3
	)
	e := newRealEnv(t, balance, nil)
	var clients []extprocv3.ExternalProcessorClient
	var servers []*Server
	for range replicas {
		s, _, c := e.replica(t, 8)
		clients = append(clients, c)
		servers = append(servers, s)
	}

	// Sample the wallet while the streams run.
	var minPosted, minAvailable atomic.Int64
	minPosted.Store(balance)
	minAvailable.Store(balance)
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			b, err := e.ledger.Balance(context.Background(), testWallet)
			if err != nil {
				continue
			}
			lower(&minPosted, b.PostedMicro)
			lower(&minAvailable, b.AvailableMicro)
		}
	})

	var forwarded, topups, failed atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			ex := exchange{key: e.key, user: testUser, body: streamBody, pause: time.Millisecond,
				chunks: []string{sseChunk("Hello"), sseChunk(" world"), usageChunk(11, 40), "data: [DONE]\n\n"}}
			switch i % 4 {
			case 0: // an upstream that reports far more than was held: a capped overrun
				ex.chunks[2] = usageChunk(11, 5_000)
			case 1: // the client goes away after one chunk
				ex.cancelAfter = 1
			case 2: // the upstream fails
				ex.status, ex.ctype, ex.chunks = "502", "application/json", []string{`{"error":{"message":"bad gateway"}}`}
			}
			<-start
			res, err := runE(clients[i%replicas], ex)
			switch {
			case err != nil:
				failed.Add(1)
				t.Errorf("stream %d: %v", i, err)
			case res.immediate != nil:
				topups.Add(1)
				if code := res.immediate.GetStatus().GetCode(); code != 200 {
					t.Errorf("stream %d: status %d %s", i, code, res.immediate.GetBody())
				}
			default:
				forwarded.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	// A client that went away stops waiting at once; its server settles in the background.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	for _, s := range servers {
		if err := s.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	sampler.Wait()

	b := e.balance(t)
	var captured int64
	for _, c := range e.captures(t) {
		captured += -c.AmountMicro
	}
	t.Logf("B=%d: %d forwarded, %d top-up messages, %d failed; captured %d, final posted %d held %d; lowest posted %d, lowest available %d",
		balance, forwarded.Load(), topups.Load(), failed.Load(), captured, b.PostedMicro, b.HeldMicro, minPosted.Load(), minAvailable.Load())
	if captured > balance {
		t.Errorf("captured %d > balance %d", captured, balance)
	}
	if captured != balance-b.PostedMicro {
		t.Errorf("captures (%d) do not account for the wallet's debits (%d)", captured, balance-b.PostedMicro)
	}
	if b.PostedMicro < 0 || minPosted.Load() < 0 || minAvailable.Load() < 0 {
		t.Errorf("wallet went negative: posted %d, lowest posted %d, lowest available %d", b.PostedMicro, minPosted.Load(), minAvailable.Load())
	}
	if b.HeldMicro != 0 || e.openHolds(t) != 0 {
		t.Errorf("holds still open: held %d, %d open", b.HeldMicro, e.openHolds(t))
	}
	var stray int
	if err := e.db.Pool.QueryRow(t.Context(),
		`SELECT count(*) FROM ledger_holds WHERE status NOT IN ('captured', 'voided', 'expired')`).Scan(&stray); err != nil || stray != 0 {
		t.Errorf("%d holds in another state (%v)", stray, err)
	}
	if forwarded.Load() == 0 || topups.Load() == 0 {
		t.Errorf("the run did not contend: %d forwarded, %d top-ups", forwarded.Load(), topups.Load())
	}
}

func lower(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x >= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}
