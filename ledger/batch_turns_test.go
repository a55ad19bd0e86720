package ledger

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestBatchersTakeTurns: with one turn to write (the default), a batch of holds and a batch of
// captures never write at once, and a freed turn goes to the other kind first, so neither can
// starve the other. The batchers run fake statements that wait until the test lets them answer.
func TestBatchersTakeTurns(t *testing.T) {
	g := newBatchGroup(1)
	var mu sync.Mutex
	var started []string // "h3": a batch of 3 holds
	active, most := 0, 0
	answer := make(chan struct{})
	exec := func(kind string) func(context.Context, []*batchCall[int, int], func()) {
		return func(_ context.Context, calls []*batchCall[int, int], written func()) {
			mu.Lock()
			active++
			most = max(most, active)
			started = append(started, fmt.Sprintf("%s%d", kind, len(calls)))
			mu.Unlock()
			<-answer
			mu.Lock()
			active--
			mu.Unlock()
			written()
			for _, c := range calls {
				c.res, c.outcome = c.req, batchAnswered
			}
		}
	}
	holds, captures := newBatcher(g, 64, exec("h")), newBatcher(g, 64, exec("c"))
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
	var wg sync.WaitGroup
	submit := func(b *batcher[int, int], req int) {
		wg.Go(func() {
			res, answered, err := b.do(t.Context(), req, []string{fmt.Sprint(req)}, nil)
			if err != nil || !answered || res != req {
				t.Errorf("request %d: %d, %v, %v", req, res, answered, err)
			}
		})
	}
	submit(holds, 1)
	waitUntil("the first hold to start", func() bool { return len(startedSoFar()) == 1 })
	for _, r := range []int{2, 3, 4} {
		submit(holds, r)
	}
	for _, r := range []int{5, 6} {
		submit(captures, r)
	}
	waitUntil("3 holds and 2 captures to queue", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(holds.queue) == 3 && len(captures.queue) == 2
	})
	for i := 2; i <= 3; i++ {
		answer <- struct{}{}
		waitUntil(fmt.Sprintf("batch %d to start", i), func() bool { return len(startedSoFar()) == i })
	}
	answer <- struct{}{}
	wg.Wait()
	if want := []string{"h1", "c2", "h3"}; !slices.Equal(started, want) || most != 1 {
		t.Fatalf("batches started %v with at most %d writing at once; want %v, one at a time", started, most, want)
	}
}
