package pricing

import (
	"testing"
)

// BenchmarkCostMicro is the cost math a request pays (a hold and a capture each call it;
// the clamp calls AffordableTokens), next to the big.Int path that CostMicro falls back to
// for huge numbers. (baseline-big also runs the fast path once: it is the upper bound.)
func BenchmarkCostMicro(b *testing.B) {
	p := sonnetPrice(b)
	u := Usage{PromptTokens: 12000, CachedTokens: 8000, CacheWriteTokens: 1000, CompletionTokens: 800, ReasoningTokens: 300}
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.CostMicro(u, 2000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("affordable", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = AffordableTokens(p, 2000, 5_000_000, 12000)
		}
	})
	b.Run("baseline-big", func(b *testing.B) {
		// The arbitrary-precision path alone, which the fast path falls back to.
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := costPaths(b, p, u, 2000); err != nil {
				b.Fatal(err)
			}
		}
	})
}
