// Package testredis gives each test a client of the real Redis server and a key prefix of its
// own, and deletes every key under that prefix when the test ends.
package testredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Addr is the Redis address tests use: TOLLGATE_TEST_REDIS_ADDR, default 127.0.0.1:6379.
func Addr() string {
	if a := os.Getenv("TOLLGATE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// New returns a client and a fresh prefix such as "tgtest:3f9a1c2b:". Code under test must put
// every key it writes under the prefix; the cleanup removes them all.
func New(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("testredis: ping %s: %v (is redis-server running? see README)", Addr(), err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "tgtest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("testredis: scan %s*: %v", prefix, err)
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := rdb.Del(ctx, keys[:n]...).Err(); err != nil {
				t.Errorf("testredis: delete keys: %v", err)
				break
			}
			keys = keys[n:]
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}
