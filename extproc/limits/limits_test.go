package limits

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testredis"
)

func TestConcurrencyCap(t *testing.T) {
	rdb, prefix := testredis.New(t)
	l := New(rdb, prefix, time.Minute)
	ctx := t.Context()
	r1, err := l.Acquire(ctx, "pw:u", 2, 0, "a")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Acquire(ctx, "pw:u", 2, 0, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "pw:u", 2, 0, "c"); !errors.Is(err, ErrTooManyConcurrent) {
		t.Fatalf("third request: %v, want ErrTooManyConcurrent", err)
	}
	if _, err := l.Acquire(ctx, "pw:other", 2, 0, "c"); err != nil {
		t.Fatalf("another user is capped too: %v", err)
	}
	r1(ctx)
	r3, err := l.Acquire(ctx, "pw:u", 2, 0, "c")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2(ctx)
	r3(ctx)
	if n, err := l.InFlight(ctx, "pw:u"); err != nil || n != 0 {
		t.Fatalf("in flight %d (%v) after releasing all", n, err)
	}
}

// TestConcurrencySlotsExpire shows that a slot never released (its process died) frees itself
// when its lease ends.
func TestConcurrencySlotsExpire(t *testing.T) {
	rdb, prefix := testredis.New(t)
	l := New(rdb, prefix, 150*time.Millisecond)
	ctx := t.Context()
	if _, err := l.Acquire(ctx, "k", 1, 0, "dead"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "k", 1, 0, "x"); !errors.Is(err, ErrTooManyConcurrent) {
		t.Fatalf("got %v, want the cap", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := l.Acquire(ctx, "k", 1, 0, "y"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the dead slot never expired: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRateCap(t *testing.T) {
	rdb, prefix := testredis.New(t)
	l := New(rdb, prefix, time.Minute)
	ctx := t.Context()
	for i := range 3 {
		rel, err := l.Acquire(ctx, "k", 0, 3, fmt.Sprint("r", i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		rel(ctx)
	}
	if _, err := l.Acquire(ctx, "k", 0, 3, "r4"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("fourth request: %v, want ErrRateLimited", err)
	}
	// A request refused by the concurrency cap does not use up the rate.
	rel, err := l.Acquire(ctx, "k2", 1, 2, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "k2", 1, 2, "b"); !errors.Is(err, ErrTooManyConcurrent) {
		t.Fatal(err)
	}
	rel(ctx)
	if _, err := l.Acquire(ctx, "k2", 1, 2, "c"); err != nil {
		t.Fatalf("rate spent by a refused request: %v", err)
	}
}

// TestConcurrencyCapUnderContention: many goroutines at once never exceed the cap.
func TestConcurrencyCapUnderContention(t *testing.T) {
	rdb, prefix := testredis.New(t)
	l := New(rdb, prefix, time.Minute)
	ctx := t.Context()
	var inside, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			rel, err := l.Acquire(ctx, "hot", 3, 0, fmt.Sprint("g", i))
			if err != nil {
				return
			}
			n := inside.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			rel(ctx)
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p == 0 {
		t.Fatalf("peak concurrency %d, want 1..3", p)
	}
}

func TestNoCapsNoRedis(t *testing.T) {
	l := New(nil, "x:", time.Minute) // a nil client would panic if touched
	rel, err := l.Acquire(t.Context(), "k", 0, 0, "a")
	if err != nil {
		t.Fatal(err)
	}
	rel(t.Context())
}
