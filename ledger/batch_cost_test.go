package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testdb"
)

// BenchmarkBatchStatement measures one batch statement by itself — no other client, no COMMIT —
// at 1, 8 and 32 requests: what a batch costs regardless of its size, and what each request
// adds. Each run executes the statement in a transaction that is rolled back, so every run
// finds the same rows (the captures' holds stay open). It reports the statement's time per
// batch and per request; a run whose statement did not write every request fails.
func BenchmarkBatchStatement(b *testing.B) {
	db := testdb.NewWithPool(b, 4, Migrations)
	ctx := context.Background()
	l := New(db.Pool, Options{})
	wallet := func(i int) string { return fmt.Sprintf("0x%040x", i+1) }
	split := Split{ProviderMicro: 400, Provider: "openrouter", FeeMicro: 100, DeveloperMicro: 200}
	for i := range 32 {
		if _, err := l.Deposit(ctx, DepositRequest{Key: fmt.Sprint("fund-", i), ChainID: "137", Wallet: wallet(i), AmountMicro: 1_000_000_000_000}); err != nil {
			b.Fatal(err)
		}
	}
	// The shared accounts a capture credits exist before the first batch, as in steady state.
	h, err := l.Hold(ctx, HoldRequest{Key: "first", Wallet: wallet(0), AmountMicro: 1000, Paywall: "pw", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := l.Capture(ctx, CaptureRequest{Key: "first", HoldID: h.ID, Split: split}); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, sql string, n int, args []any) {
		b.ReportAllocs()
		var spent time.Duration
		for b.Loop() {
			tx, err := db.Pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				b.Fatal(err)
			}
			written := 0
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					b.Fatal(err)
				}
				if vals[1] != nil { // the hold's or the transfer's id
					written++
				}
			}
			spent += time.Since(t0)
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
			if written != n {
				b.Fatalf("the statement wrote %d of %d requests", written, n)
			}
			if err := tx.Rollback(ctx); err != nil {
				b.Fatal(err)
			}
		}
		per := float64(spent.Microseconds()) / float64(b.N)
		b.ReportMetric(per, "us/batch")
		b.ReportMetric(per/float64(n), "us/request")
	}
	for _, n := range []int{1, 8, 32} {
		keys, wallets, paywalls := make([]string, n), make([]string, n), make([]string, n)
		amounts, ttls := make([]int64, n), make([]int64, n)
		hashes, metas := make([][]byte, n), make([]*string, n)
		for i := range n {
			keys[i], wallets[i], paywalls[i], amounts[i], ttls[i] = fmt.Sprint("hold-", n, "-", i), wallet(i), "pw", 1000, time.Hour.Microseconds()
			hashes[i] = []byte{1}
		}
		b.Run(fmt.Sprintf("hold/n=%d", n), func(b *testing.B) {
			run(b, holdBatchSQL, n, []any{keys, wallets, amounts, hashes, paywalls, ttls, metas})
		})
		holds, providers := make([]string, n), make([]string, n)
		charges, provs, fees, devs := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range n {
			h, err := l.Hold(ctx, HoldRequest{Key: fmt.Sprint("open-", n, "-", i), Wallet: wallet(i), AmountMicro: 1000, Paywall: "pw", TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			keys[i], holds[i] = fmt.Sprint("capture-", n, "-", i), h.ID
			charges[i], provs[i], providers[i], fees[i], devs[i] = split.TotalMicro(), split.ProviderMicro, split.Provider, split.FeeMicro, split.DeveloperMicro
		}
		b.Run(fmt.Sprintf("capture/n=%d", n), func(b *testing.B) {
			run(b, captureBatchSQL, n, []any{keys, hashes, holds, charges, provs, providers, fees, devs, metas, 0})
		})
	}
}
