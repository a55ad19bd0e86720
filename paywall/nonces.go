package paywall

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Nonces are single-use random values kept in Redis for Sign-In with Ethereum.
type Nonces struct {
	rdb    *redis.Client
	prefix string
}

// NewNonces returns nonces kept under prefix.
func NewNonces(rdb *redis.Client, prefix string) *Nonces { return &Nonces{rdb: rdb, prefix: prefix} }

// Issue returns a fresh nonce valid for ttl.
func (n *Nonces) Issue(ctx context.Context, ttl time.Duration) (string, error) {
	return "", errNotBuilt
}

// Consume uses a nonce up. It can return: ErrNonceUsed.
func (n *Nonces) Consume(ctx context.Context, nonce string) error { return errNotBuilt }
