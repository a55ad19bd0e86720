package paywall

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// TestChangesReachEveryReplica: two Store instances — two replicas — share PostgreSQL and
// Redis. Their in-process TTL is an hour, so only the invalidation messages can make replica
// B see what replica A changed; each change must show on B within a second (it takes
// milliseconds). B has every answer cached before each change.
func TestChangesReachEveryReplica(t *testing.T) {
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	opts := Options{LocalTTL: time.Hour, RedisTTL: time.Hour}
	a := storeOn(t, db, rdb, prefix, opts)
	b := storeOn(t, db, rdb, prefix, opts)
	ctx := t.Context()

	p, oldKey := mustCreate(t, a, builtinPaywall())
	if _, err := b.ByKey(ctx, oldKey); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authorization(ctx, p.ID, "dave"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatal(err)
	}

	// A new authorization replaces B's cached "not authorized".
	if _, err := a.Authorize(ctx, p.ID, "dave", walletA); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new authorization", func() bool {
		got, err := b.Authorization(ctx, p.ID, "dave")
		return err == nil && got.Wallet == walletA
	})
	// A new wallet for the same user.
	if _, err := a.Authorize(ctx, p.ID, "dave", walletB); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a replaced wallet", func() bool {
		got, err := b.Authorization(ctx, p.ID, "dave")
		return err == nil && got.Wallet == walletB
	})
	// A revocation.
	if err := a.Revoke(ctx, p.ID, "dave"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a revocation", func() bool {
		_, err := b.Authorization(ctx, p.ID, "dave")
		return errors.Is(err, ErrNotAuthorized)
	})
	// A key rotation: the old key dies, the new one works.
	newKey, err := a.RotateKey(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a key rotation", func() bool {
		_, errOld := b.ByKey(ctx, oldKey)
		got, errNew := b.ByKey(ctx, newKey)
		return errors.Is(errOld, ErrUnknownKey) && errNew == nil && got.ID == p.ID
	})
	// A markup change.
	if err := a.SetMarkup(ctx, p.ID, 4321); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a markup change", func() bool {
		got, err := b.ByKey(ctx, newKey)
		return err == nil && got.MarkupBps == 4321
	})
}

// TestTTLBoundsALostMessage: replica B does not listen (its invalidation messages are lost),
// so only its short in-process TTL brings it up to date — from Redis, whose copy A deleted.
func TestTTLBoundsALostMessage(t *testing.T) {
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	a := storeOn(t, db, rdb, prefix, Options{LocalTTL: time.Hour, RedisTTL: time.Hour})
	b := storeOn(t, db, rdb, prefix, Options{LocalTTL: 300 * time.Millisecond, RedisTTL: time.Hour, noBus: true})
	ctx := t.Context()
	p, _ := mustCreate(t, a, builtinPaywall())
	if _, err := a.Authorize(ctx, p.ID, "erin", walletA); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authorization(ctx, p.ID, "erin"); err != nil { // cached in B and in Redis
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, p.ID, "erin"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authorization(ctx, p.ID, "erin"); err != nil {
		t.Fatalf("B answered from elsewhere than its cache: %v", err)
	}
	if d := waitFor(t, "a revocation without the message", func() bool {
		_, err := b.Authorization(ctx, p.ID, "erin")
		return errors.Is(err, ErrNotAuthorized)
	}); d < 200*time.Millisecond {
		t.Errorf("took %s: the TTL, not a message, should have done it", d)
	}
}

// TestRedisCopyIsShared: a replica with an empty process cache is served from Redis, not the
// database.
func TestRedisCopyIsShared(t *testing.T) {
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	a := storeOn(t, db, rdb, prefix, Options{})
	p, key := mustCreate(t, a, byokPaywall())
	if _, err := a.Authorize(t.Context(), p.ID, "frank", walletA); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ByKey(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorization(t.Context(), p.ID, "frank"); err != nil {
		t.Fatal(err)
	}
	b := storeOn(t, db, rdb, prefix, Options{})
	db.Pool.Close() // from now on only Redis can answer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := b.ByKey(ctx, key); err != nil || got != p {
		t.Errorf("ByKey from Redis = %+v, %v", got, err)
	}
	if got, err := b.Authorization(ctx, p.ID, "frank"); err != nil || got.Wallet != walletA {
		t.Errorf("Authorization from Redis = %+v, %v", got, err)
	}
}

// TestLocalTTLDefault: with Redis (and so invalidation messages) the in-process tier keeps an
// answer 10s; without Redis, where a change reaches other replicas only through the TTL, 1s.
func TestLocalTTLDefault(t *testing.T) {
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	for _, c := range []struct {
		name string
		s    *Store
		want time.Duration
	}{
		{"with redis", storeOn(t, db, rdb, prefix, Options{}), 10 * time.Second},
		{"without redis", NewStore(db.Pool, nil, "", Options{}), time.Second},
		{"without messages", storeOn(t, db, rdb, prefix, Options{noBus: true}), time.Second},
		{"set", storeOn(t, db, rdb, prefix, Options{LocalTTL: 3 * time.Second}), 3 * time.Second},
	} {
		if c.s.opts.LocalTTL != c.want {
			t.Errorf("%s: LocalTTL = %s, want %s", c.name, c.s.opts.LocalTTL, c.want)
		}
	}
}
