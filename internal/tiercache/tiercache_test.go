package tiercache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// source is a fake book of record: a value per key, a count of loads, and an optional gate
// that holds a load until the test releases it (or the load's context ends).
type source struct {
	values atomic.Pointer[map[string]string]
	loads  atomic.Int32
	gate   chan chan struct{} // a load sends a channel and waits until it is closed
}

func newSource(kv map[string]string) *source {
	s := &source{}
	s.values.Store(&kv)
	return s
}

func (s *source) load(ctx context.Context, k string) (string, bool, error) {
	v, ok := (*s.values.Load())[k]
	s.loads.Add(1)
	if s.gate != nil {
		release := make(chan struct{})
		s.gate <- release
		select { // a real read stops when its context ends
		case <-release:
		case <-ctx.Done():
			return "", false, ctx.Err()
		}
	}
	return v, ok, nil
}

func config(src *source) Config[string, string] {
	return Config[string, string]{
		Name: "test", Load: src.load, Shared: true, LocalTTL: time.Hour, RedisTTL: time.Hour,
		Key:      func(k string) string { return k },
		ParseKey: func(s string) (string, bool) { return s, !strings.HasPrefix(s, "bad") },
	}
}

func TestReadThroughTiers(t *testing.T) {
	rdb, prefix := testredis.New(t)
	src := newSource(map[string]string{"a": "1"})
	c := New(rdb, nil, prefix, config(src))
	ctx := t.Context()
	for range 3 {
		if v, found, err := c.Get(ctx, "a"); v != "1" || !found || err != nil {
			t.Fatalf("Get = %q, %v, %v", v, found, err)
		}
	}
	if src.loads.Load() != 1 {
		t.Errorf("loads = %d, want 1", src.loads.Load())
	}
	if got := rdb.Get(ctx, c.valueKey("a")).Val(); got != `"1"` {
		t.Errorf("redis copy = %q", got)
	}
	// A second process fills from Redis, not from the source.
	d := New(rdb, nil, prefix, config(src))
	if v, _, _ := d.Get(ctx, "a"); v != "1" || src.loads.Load() != 1 {
		t.Errorf("second process: %q, loads %d", v, src.loads.Load())
	}
	// Misses are cached in-process only.
	if _, found, _ := c.Get(ctx, "zz"); found {
		t.Error("found a missing key")
	}
	if n := rdb.Exists(ctx, c.valueKey("zz")).Val(); n != 0 {
		t.Error("a miss was written to Redis")
	}
	loads := src.loads.Load()
	if _, _, _ = c.Get(ctx, "zz"); src.loads.Load() != loads {
		t.Error("a miss was not cached in-process")
	}
}

// TestStaleFillIsRefused: a load that read the old value before a write must not leave it in
// either tier once the write's invalidation has happened.
func TestStaleFillIsRefused(t *testing.T) {
	rdb, prefix := testredis.New(t)
	src := newSource(map[string]string{"a": "old"})
	src.gate = make(chan chan struct{})
	c := New(rdb, nil, prefix, config(src))
	ctx := t.Context()

	got := make(chan string)
	go func() {
		v, _, _ := c.Get(ctx, "a")
		got <- v
	}()
	release := <-src.gate // the load has read "old"
	src.values.Store(&map[string]string{"a": "new"})
	c.Invalidate(ctx, "a") // the writer commits, then invalidates
	close(release)
	if v := <-got; v != "old" {
		t.Fatalf("the racing reader got %q", v)
	}
	if n := rdb.Exists(ctx, c.valueKey("a")).Val(); n != 0 {
		t.Error("the stale value reached Redis")
	}
	if c.Len() != 0 {
		t.Error("the stale value reached the process cache")
	}
	go func() { close(<-src.gate) }()
	if v, _, _ := c.Get(ctx, "a"); v != "new" {
		t.Errorf("after the race: %q", v)
	}
}

func TestBounded(t *testing.T) {
	src := newSource(map[string]string{})
	cfg := config(src)
	cfg.MaxEntries = 10
	c := New[string, string](nil, nil, "", cfg)
	for i := range 100 {
		if _, _, err := c.Get(t.Context(), strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Len(); n > 10 {
		t.Errorf("cache holds %d entries, bound is 10", n)
	}
}

func TestRedisDownFallsThrough(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer func() { _ = rdb.Close() }()
	src := newSource(map[string]string{"a": "1"})
	c := New(rdb, nil, "x:", config(src))
	if v, found, err := c.Get(t.Context(), "a"); v != "1" || !found || err != nil {
		t.Fatalf("Get with Redis down = %q, %v, %v", v, found, err)
	}
	if c.redisDownUntil.Load() <= time.Now().UnixNano() {
		t.Error("a failed Redis read did not pause Redis reads")
	}
	start := time.Now()
	c.Invalidate(t.Context(), "a") // logs, does not fail or hang
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Invalidate with Redis down took %s", d)
	}
	if c.Len() != 0 {
		t.Error("the local entry survived its invalidation")
	}
}

// TestBusRoutesMessages: invalidations reach the other process's cache of the same name,
// targeted by key; an unparseable key or "*" flushes everything.
func TestBusRoutesMessages(t *testing.T) {
	rdb, prefix := testredis.New(t)
	src := newSource(map[string]string{"a": "1", "b": "2"})
	busA, busB := NewBus(rdb, prefix+"bus", nil), NewBus(rdb, prefix+"bus", nil)
	defer func() { _ = busA.Close() }()
	defer func() { _ = busB.Close() }()
	for _, b := range []*Bus{busA, busB} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		if err := b.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	a := New(rdb, busA, prefix, config(src))
	b := New(rdb, busB, prefix, config(src))
	other := New(rdb, busB, prefix, Config[string, string]{Name: "other", Load: src.load, LocalTTL: time.Hour})
	ctx := t.Context()
	fill := func() {
		for _, k := range []string{"a", "b"} {
			_, _, _ = b.Get(ctx, k)
			_, _, _ = other.Get(ctx, k)
		}
	}
	fill()
	a.Invalidate(ctx, "a")
	eventually(t, "a targeted invalidation", func() bool { return b.Len() == 1 })
	if other.Len() != 2 {
		t.Error("a message for one cache reached another")
	}
	fill()
	if err := rdb.Publish(ctx, prefix+"bus", "test\nbad-key").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a flush for an unparseable key", func() bool { return b.Len() == 0 })
	fill()
	other.InvalidateAll(ctx)
	eventually(t, "InvalidateAll", func() bool { return other.Len() == 0 })
}

// TestBusFlushesAfterReconnect: messages published while the subscription was down are lost,
// so a resubscription flushes the process cache; messages flow again afterwards.
func TestBusFlushesAfterReconnect(t *testing.T) {
	_, prefix := testredis.New(t)
	name := "tgtest-bus-" + strings.TrimSuffix(strings.TrimPrefix(prefix, "tgtest:"), ":")
	rdb := redis.NewClient(&redis.Options{Addr: testredis.Addr(), ClientName: name})
	defer func() { _ = rdb.Close() }()
	bus := NewBus(rdb, prefix+"bus", nil)
	defer func() { _ = bus.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := bus.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	src := newSource(map[string]string{"a": "1", "b": "2"})
	c := New(rdb, bus, prefix, config(src))
	_, _, _ = c.Get(ctx, "a")
	_, _, _ = c.Get(ctx, "b")

	// Kill this bus's subscriber connection (and only it: found by client name).
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " sub=1 ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("found %d subscriber connections named %s", killed, name)
	}
	eventually(t, "the flush after reconnecting", func() bool { return c.Len() == 0 })
	_, _, _ = c.Get(ctx, "a")
	other := redis.NewClient(&redis.Options{Addr: testredis.Addr()})
	defer func() { _ = other.Close() }()
	eventually(t, "a message after reconnecting", func() bool {
		_ = other.Publish(ctx, prefix+"bus", "test\na").Err()
		return c.Len() == 0
	})
}

// TestConcurrentMissesShareOneRead: Gets of a key that miss while its read is under way wait
// for that read instead of starting their own.
func TestConcurrentMissesShareOneRead(t *testing.T) {
	rdb, prefix := testredis.New(t)
	src := newSource(map[string]string{"a": "1"})
	src.gate = make(chan chan struct{})
	c := New(rdb, nil, prefix, config(src))
	const n = 32
	got := make(chan string, n)
	get := func() {
		v, _, err := c.Get(t.Context(), "a")
		if err != nil {
			v = err.Error()
		}
		got <- v
	}
	go get()
	release := <-src.gate // the first read is under way
	for range n - 1 {
		go get()
	}
	eventually(t, "every other Get joined the read", func() bool { return waiters(c, "a") == n-1 })
	close(release)
	for range n {
		if v := <-got; v != "1" {
			t.Fatalf("a Get returned %q", v)
		}
	}
	if l := src.loads.Load(); l != 1 {
		t.Errorf("%d concurrent misses made %d reads, want 1", n, l)
	}
}

// TestCallerGoingAwayDoesNotFailOthers: the Get that started a read may give up on it; the read
// goes on for the Gets that joined it.
func TestCallerGoingAwayDoesNotFailOthers(t *testing.T) {
	src := newSource(map[string]string{"a": "1"})
	src.gate = make(chan chan struct{})
	c := New[string, string](nil, nil, "", config(src))
	first, leave := context.WithCancel(t.Context())
	firstErr := make(chan error, 1)
	go func() {
		_, _, err := c.Get(first, "a")
		firstErr <- err
	}()
	release := <-src.gate
	second := make(chan string, 1)
	go func() {
		v, _, _ := c.Get(t.Context(), "a")
		second <- v
	}()
	eventually(t, "the second Get joined the read", func() bool { return waiters(c, "a") == 1 })
	leave()
	if err := recv(t, firstErr, "the first Get's return"); !errors.Is(err, context.Canceled) { // while the read still waits
		t.Fatalf("the first Get, its context cancelled: %v", err)
	}
	close(release)
	if v := <-second; v != "1" {
		t.Fatalf("the second Get returned %q", v)
	}
	if v, found, err := c.Get(t.Context(), "a"); v != "1" || !found || err != nil || src.loads.Load() != 1 {
		t.Errorf("after the read: %q, %v, %v, %d reads", v, found, err, src.loads.Load())
	}
}

// TestGetAfterInvalidationReadsAgain: a Get that starts after an invalidation does not join a
// read that began before it (which may have read the old value).
func TestGetAfterInvalidationReadsAgain(t *testing.T) {
	src := newSource(map[string]string{"a": "old"})
	src.gate = make(chan chan struct{})
	c := New[string, string](nil, nil, "", config(src))
	before := make(chan string, 1)
	go func() {
		v, _, _ := c.Get(t.Context(), "a")
		before <- v
	}()
	releaseOld := <-src.gate // the first read has read "old"
	src.values.Store(&map[string]string{"a": "new"})
	c.Invalidate(t.Context(), "a")
	after := make(chan string, 1)
	go func() {
		v, _, _ := c.Get(t.Context(), "a")
		after <- v
	}()
	close(recv(t, src.gate, "a second read")) // the later Get did not wait for the first
	if v := <-after; v != "new" {
		t.Errorf("the Get after the invalidation returned %q", v)
	}
	close(releaseOld)
	if v := <-before; v != "old" {
		t.Errorf("the Get before the invalidation returned %q", v)
	}
	if v, _, _ := c.Get(t.Context(), "a"); v != "new" || src.loads.Load() != 2 {
		t.Errorf("cached %q after %d reads, want new after 2", v, src.loads.Load())
	}
}

// recv receives from ch, or fails the test if nothing comes within 10 seconds.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: did not happen", what)
		panic("unreachable")
	}
}

// waiters reports how many Gets joined the read of k under way (-1: none under way).
func waiters(c *Cache[string, string], k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.flights[k]
	if !ok {
		return -1
	}
	return f.waiters
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: did not happen", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkGet measures the in-process hit path against a bare map read under a lock-free
// path, as the baseline.
func BenchmarkGet(b *testing.B) {
	src := newSource(map[string]string{"a": "1"})
	c := New[string, string](nil, nil, "", config(src))
	_, _, _ = c.Get(context.Background(), "a")
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = c.Get(context.Background(), "a")
		}
	})
	m := map[string]string{"a": "1"}
	b.Run("baseline-map", func(b *testing.B) {
		b.ReportAllocs()
		var sink string
		for b.Loop() {
			sink = m["a"]
		}
		_ = fmt.Sprint(sink)
	})
}
