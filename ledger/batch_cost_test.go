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
	// once runs the statement in a transaction it rolls back (on every path: a connection left
	// in a transaction would hold up the test database's cleanup), and returns how many
	// requests it wrote and how long the statement took.
	once := func(sql string, args []any) (written int, took time.Duration, err error) {
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			return 0, 0, err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		t0 := time.Now()
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return 0, 0, err
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return 0, 0, err
			}
			if vals[1] != nil { // the hold's or the transfer's id
				written++
			}
		}
		return written, time.Since(t0), rows.Err()
	}
	run := func(b *testing.B, sql string, n int, args []any) {
		b.ReportAllocs()
		var spent time.Duration
		for b.Loop() {
			written, took, err := once(sql, args)
			if err != nil {
				b.Fatal(err)
			}
			if written != n {
				b.Fatalf("the statement wrote %d of %d requests", written, n)
			}
			spent += took
		}
		per := float64(spent.Microseconds()) / float64(b.N)
		b.ReportMetric(per, "us/batch")
		b.ReportMetric(per/float64(n), "us/request")
	}
	for _, n := range []int{1, 8, 32} {
		holds := make([]*batchCall[holdCall, Hold], n)
		for i := range holds {
			r := HoldRequest{Key: fmt.Sprint("hold-", n, "-", i), Wallet: wallet(i), AmountMicro: 1000, Paywall: "pw", TTL: time.Hour}
			w := normalizeAddress(r.Wallet)
			holds[i] = &batchCall[holdCall, Hold]{req: holdCall{r: r, wallet: w, hash: holdHash(w, r)}}
		}
		b.Run(fmt.Sprintf("hold/n=%d", n), func(b *testing.B) {
			run(b, holdBatchSQL, n, holdBatchArgs(holds))
		})
		captures := make([]*batchCall[captureCall, CaptureResult], n)
		for i := range captures {
			h, err := l.Hold(ctx, HoldRequest{Key: fmt.Sprint("open-", n, "-", i), Wallet: wallet(i), AmountMicro: 1000, Paywall: "pw", TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			r := CaptureRequest{Key: fmt.Sprint("capture-", n, "-", i), HoldID: h.ID, Split: split}
			captures[i] = &batchCall[captureCall, CaptureResult]{req: captureCall{r: r, hash: captureHash(r)}}
		}
		b.Run(fmt.Sprintf("capture/n=%d", n), func(b *testing.B) {
			run(b, captureBatchSQL, n, captureBatchArgs(captures, 0))
		})
	}
}
