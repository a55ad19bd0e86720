package paywall

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

const testFeeBps = 100 // 1 %: a built-in paywall needs at least 102 bps of markup

// newTestStore returns a Store on a fresh database and Redis prefix.
func newTestStore(t testing.TB, opts Options) (*Store, *testdb.DB) {
	t.Helper()
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	return storeOn(t, db, rdb, prefix, opts), db
}

// storeOn returns a Store (a replica) on a shared database and Redis.
func storeOn(t testing.TB, db *testdb.DB, rdb *redis.Client, prefix string, opts Options) *Store {
	t.Helper()
	if opts.PlatformFeeBps == 0 {
		opts.PlatformFeeBps = testFeeBps
	}
	if opts.SecretsKey == nil {
		opts.SecretsKey = testSecretsKey(t, 1)
	}
	s := NewStore(db.Pool, rdb, prefix, opts)
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// testSecretsKey returns a fixed secrets key; another seed gives another key.
func testSecretsKey(t testing.TB, seed byte) *SecretsKey {
	t.Helper()
	k, err := NewSecretsKey(bytes.Repeat([]byte{seed}, SecretsKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func builtinPaywall() Paywall {
	return Paywall{Name: "Chat app", Owner: "dev@example.com", Mode: ModeBuiltin, MarkupBps: 2000}
}

func byokPaywall() Paywall {
	return Paywall{Name: "BYOK app", Owner: "dev2@example.com", Mode: ModeBYOK, Upstream: "acme-gateway",
		UpstreamKey: "sk-acme-123", MarkupBps: 0}
}

func mustCreate(t testing.TB, s *Store, p Paywall) (Paywall, string) {
	t.Helper()
	p, key, err := s.Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

const (
	walletA = "0x1111111111111111111111111111111111111111"
	walletB = "0x2222222222222222222222222222222222222222"
)

// waitFor polls cond for up to a second: the promise made about replicas.
func waitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < time.Second {
		if cond() {
			d := time.Since(start)
			t.Logf("%s took effect on the other replica after %s", what, d.Round(100*time.Microsecond))
			return d
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s did not take effect on the other replica within a second", what)
	return 0
}
