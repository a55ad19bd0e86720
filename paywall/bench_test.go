package paywall

import (
	"context"
	"crypto/sha256"
	"testing"
)

// BenchmarkByKey is the per-request cost of finding the paywall of an API key when it is
// cached, next to its unavoidable part (hashing the key) and a bare map lookup.
func BenchmarkByKey(b *testing.B) {
	s, _ := newTestStore(b, Options{})
	ctx := context.Background()
	p, key := mustCreate(b, s, builtinPaywall())
	if _, err := s.ByKey(ctx, key); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.ByKey(ctx, key); err != nil {
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
