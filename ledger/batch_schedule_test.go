package ledger

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestCapturesGiveWayToHolds: a batch of holds starts beside a writing batch of captures, a
// batch of captures does not start beside a writing batch of holds, and when a batch answers the
// waiting captures start before the next holds (so that holds cannot starve them). The
// batchers run fake statements that answer when the test says.
func TestCapturesGiveWayToHolds(t *testing.T) {
	g := newBatchGroup()
	var mu sync.Mutex
	var started []string // "h2": the batch whose first request is hold 2
	answer := map[string]chan struct{}{}
	exec := func(kind string) func(context.Context, []*batchCall[int, int], func()) {
		return func(_ context.Context, calls []*batchCall[int, int], written func()) {
			name := fmt.Sprintf("%s%d", kind, calls[0].req)
			ch := make(chan struct{})
			mu.Lock()
			started = append(started, name)
			answer[name] = ch
			mu.Unlock()
			<-ch
			written()
			for _, c := range calls {
				c.res, c.outcome = c.req, batchAnswered
			}
		}
	}
	holds, captures := newBatcher(g, 64, 1, false, exec("h")), newBatcher(g, 64, 1, true, exec("c"))
	holds.soloGrace, captures.soloGrace = time.Hour, time.Hour
	startedSoFar := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(started)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (batches started: %v)", what, startedSoFar())
			}
		}
	}
	release := func(name string) {
		mu.Lock()
		ch := answer[name]
		mu.Unlock()
		close(ch)
	}
	queued := func(h, c int) func() bool {
		return func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return len(holds.queue) == h && len(captures.queue) == c
		}
	}
	var wg sync.WaitGroup
	submit := func(b *batcher[int, int], reqs ...int) {
		for _, r := range reqs {
			wg.Go(func() {
				res, answered, err := b.do(t.Context(), r, []string{fmt.Sprint(r)}, nil)
				if err != nil || !answered || res != r {
					t.Errorf("request %d: %d, %v, %v", r, res, answered, err)
				}
			})
			// One at a time, so that a batch's first request is the lowest.
			waitUntil(fmt.Sprintf("request %d to be taken or queued", r), func() bool {
				g.mu.Lock()
				inQueue := slices.ContainsFunc(append(slices.Clone(holds.queue), captures.queue...),
					func(c *batchCall[int, int]) bool { return c.req == r })
				g.mu.Unlock()
				now := startedSoFar()
				return inQueue || slices.Contains(now, fmt.Sprintf("h%d", r)) || slices.Contains(now, fmt.Sprintf("c%d", r))
			})
		}
	}

	submit(holds, 1) // h1 writes
	submit(holds, 2, 3)
	submit(captures, 10, 11)
	waitUntil("2 holds and 2 captures to queue behind h1", queued(2, 2))
	release("h1")
	// The captures had not started last: they start first, and the holds beside them (had the
	// holds started first, the captures would have had to wait for them).
	waitUntil("c10 and h2 to start", func() bool { return len(startedSoFar()) == 3 })
	if got := startedSoFar(); !slices.Contains(got, "c10") || !slices.Contains(got, "h2") {
		t.Fatalf("batches started %v, want h1, then c10 and h2", got)
	}
	// A capture queued now waits for h2, although c10 will have answered.
	submit(captures, 12)
	release("c10")
	time.Sleep(50 * time.Millisecond)
	if got := startedSoFar(); len(got) != 3 {
		t.Fatalf("batches started %v while h2 was writing, want none", got)
	}
	release("h2")
	waitUntil("c12 to start", func() bool { return len(startedSoFar()) == 4 })
	release("c12")
	wg.Wait()
}
