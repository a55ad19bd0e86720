package paywall

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testredis"
)

func TestNonces(t *testing.T) {
	rdb, prefix := testredis.New(t)
	n := NewNonces(rdb, prefix)
	ctx := t.Context()

	a, err := n.Issue(ctx, time.Minute)
	if err != nil || !validNonce(a) {
		t.Fatalf("Issue = %q, %v", a, err)
	}
	b, _ := n.Issue(ctx, time.Minute)
	if a == b {
		t.Fatal("two nonces are equal")
	}
	if ttl := rdb.PTTL(ctx, prefix+"nonce:"+a).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("nonce TTL = %s", ttl)
	}
	if err := n.Consume(ctx, a); err != nil {
		t.Fatalf("first use: %v", err)
	}
	tests := []struct{ name, nonce string }{
		{"replayed", a},
		{"never issued", "00000000000000000000000000000000"},
		{"malformed", "not-a-nonce"},
		{"upper case", "ABCDEF0123456789ABCDEF0123456789"},
		{"key injection", "x*"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := n.Consume(ctx, tt.nonce); !errors.Is(err, ErrNonceUsed) {
				t.Errorf("Consume(%q) = %v, want ErrNonceUsed", tt.nonce, err)
			}
		})
	}
	if _, err := n.Issue(ctx, 0); err == nil {
		t.Error("Issue with no TTL succeeded")
	}
}

func TestNonceExpires(t *testing.T) {
	rdb, prefix := testredis.New(t)
	n := NewNonces(rdb, prefix)
	nonce, err := n.Issue(t.Context(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for rdb.Exists(t.Context(), prefix+"nonce:"+nonce).Val() == 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := n.Consume(t.Context(), nonce); !errors.Is(err, ErrNonceUsed) {
		t.Errorf("expired nonce: %v", err)
	}
}

// TestNonceSingleUseUnderRace: of many concurrent consumers of one nonce, exactly one wins.
func TestNonceSingleUseUnderRace(t *testing.T) {
	rdb, prefix := testredis.New(t)
	n := NewNonces(rdb, prefix)
	nonce, err := n.Issue(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var wins, refusals atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			switch err := n.Consume(t.Context(), nonce); {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrNonceUsed):
				refusals.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || refusals.Load() != 19 {
		t.Errorf("wins %d, refusals %d", wins.Load(), refusals.Load())
	}
}
