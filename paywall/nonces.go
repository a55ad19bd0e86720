package paywall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// nonceBytes of randomness make a nonce; hex keeps it alphanumeric, as EIP-4361 requires.
const nonceBytes = 16

// Nonces are single-use random values kept in Redis, for Sign-In with Ethereum: the server
// issues one per sign-in page and consumes it when the signed message comes back, so a
// captured signature cannot be replayed.
type Nonces struct {
	rdb    *redis.Client
	prefix string
}

// NewNonces returns nonces kept under prefix.
func NewNonces(rdb *redis.Client, prefix string) *Nonces { return &Nonces{rdb: rdb, prefix: prefix} }

func (n *Nonces) key(nonce string) string { return n.prefix + "nonce:" + nonce }

// Issue returns a fresh nonce (32 lower-case hex digits) valid for ttl.
func (n *Nonces) Issue(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("paywall: nonce ttl must be positive, got %s", ttl)
	}
	var b [nonceBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("paywall: random nonce: %w", err)
	}
	nonce := hex.EncodeToString(b[:])
	ok, err := n.rdb.SetNX(ctx, n.key(nonce), "1", ttl).Result()
	if err != nil {
		return "", fmt.Errorf("paywall: store nonce: %w", err)
	}
	if !ok { // 128 random bits collided: refuse rather than hand out a shared nonce
		return "", errors.New("paywall: nonce collision")
	}
	return nonce, nil
}

// Consume uses a nonce up, atomically (GETDEL): of two concurrent consumers exactly one
// succeeds.
// It can return: ErrNonceUsed (never issued, expired, already consumed, or malformed).
func (n *Nonces) Consume(ctx context.Context, nonce string) error {
	if !validNonce(nonce) {
		return fmt.Errorf("%w: %q is not a nonce this server issues", ErrNonceUsed, nonce)
	}
	err := n.rdb.GetDel(ctx, n.key(nonce)).Err()
	if errors.Is(err, redis.Nil) {
		return ErrNonceUsed
	}
	if err != nil {
		return fmt.Errorf("paywall: consume nonce: %w", err)
	}
	return nil
}

func validNonce(s string) bool {
	if len(s) != 2*nonceBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}
