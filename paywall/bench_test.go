package paywall

import (
	"context"
	"crypto/sha256"
	"testing"
)

// BenchmarkByKey is the per-request cost of finding the paywall of an API key when it is
// cached (built-in and BYOK), next to its unavoidable part (hashing the key), a bare map
// lookup, and opening a sealed credential.
func BenchmarkByKey(b *testing.B) {
	s, _ := newTestStore(b, Options{})
	ctx := context.Background()
	p, key := mustCreate(b, s, builtinPaywall())
	// A BYOK paywall's cached copy holds its credential sealed: opening is remembered, so the
	// request path pays one more map lookup, not AES-GCM.
	_, byokKey := mustCreate(b, s, byokPaywall())
	for _, c := range []struct{ name, key string }{{"cached", key}, {"cached-byok", byokKey}} {
		if _, err := s.ByKey(ctx, c.key); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.ByKey(ctx, c.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	sealed := s.opts.SecretsKey.seal(p.ID, "sk-acme-123")
	b.Run("baseline-open", func(b *testing.B) { // what remembering spares
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.opts.SecretsKey.open(p.ID, sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-sha256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = sha256.Sum256([]byte(key))
		}
	})
	m := map[[sha256.Size]byte]Paywall{sha256.Sum256([]byte(key)): p}
	b.Run("baseline-sha256+map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := m[sha256.Sum256([]byte(key))]; !ok {
				b.Fatal("missing")
			}
		}
	})
}

// BenchmarkAuthorization is the per-request cost of finding a user's wallet when it is
// cached (user id validation included), next to a bare map lookup.
func BenchmarkAuthorization(b *testing.B) {
	s, _ := newTestStore(b, Options{})
	ctx := context.Background()
	p, _ := mustCreate(b, s, builtinPaywall())
	const user = "acme:user_0123456789"
	a, err := s.Authorize(ctx, p.ID, user, walletA)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Authorization(ctx, p.ID, user); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Authorization(ctx, p.ID, user); err != nil {
				b.Fatal(err)
			}
		}
	})
	m := map[authKey]Authorization{{p.ID, user}: a}
	b.Run("baseline-map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := m[authKey{p.ID, user}]; !ok {
				b.Fatal("missing")
			}
		}
	})
}
