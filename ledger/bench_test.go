package ledger_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
)

// runClients runs b.N operations spread over n concurrent clients (client i calls op(i, seq))
// and reports the rate, the median and the 99th percentile latency, and where the machine's time
// went per operation: the PostgreSQL backends' CPU (when db's backends run on this machine), this
// process's CPU (the Go client: the ledger's code, pgx, the runtime and their system calls), and
// the cores' idle time (all cores together, from /proc/stat). It returns the rate.
func runClients(b *testing.B, db *testdb.DB, n int, unit string, op func(ctx context.Context, client int, seq int64) error) float64 {
	b.Helper()
	ctx := context.Background()
	cpu0, cpuOK := backendCPU(db)
	self0, selfOK := processCPU()
	idle0, idleOK := machineIdle()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := op(ctx, c, i); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	if cpu1, ok := backendCPU(db); ok && cpuOK {
		b.ReportMetric(perOp(cpu1-cpu0), "pg-cpu-us/op")
	}
	if self1, ok := processCPU(); ok && selfOK {
		b.ReportMetric(perOp(self1-self0), "client-cpu-us/op")
	}
	if idle1, ok := machineIdle(); ok && idleOK {
		b.ReportMetric(perOp(idle1-idle0), "idle-us/op")
	}
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	slices.Sort(lat)
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, unit+"/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	return rate
}

// BenchmarkHoldCapture measures hold+capture pairs (the request path: a hold before the LLM
// call, a capture after it, both on one paywall) at 1, 8 and 32 concurrent wallets and on one
// hot wallet, beside the ceiling of the same PostgreSQL in the same run: one single-statement
// conditional UPDATE per operation on one row per client, as pgbench -M prepared would run it.
// ratio-to-ceiling is pairs/s divided by the ceiling's updates/s at the same concurrency, measured
// for a second just before and just after the pairs (ceiling-updates/s, their mean); the
// ceiling/… rows measure it on their own, with its latencies and CPU. The
// ledger runs with its default options (holds and captures batched, one batch of each kind
// writing at a time); pairs-inflight=N repeats the 32-wallet case with N batches writing at once,
// and pairs-unbatched with batching off.
func BenchmarkHoldCapture(b *testing.B) {
	db := testdb.NewWithPool(b, 40, ledger.Migrations)
	ctx := context.Background()
	db.Must(b, `CREATE TABLE bench_ceiling (id INT PRIMARY KEY, v BIGINT NOT NULL)`)
	db.Must(b, `INSERT INTO bench_ceiling SELECT g, 1000000000000 FROM generate_series(0, 63) AS g`)
	l := ledger.New(db.Pool, ledger.Options{})
	for i := range 32 {
		if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: fmt.Sprintf("bench-fund-%d", i), ChainID: "137", Wallet: addr(i), AmountMicro: 1_000_000_000_000}); err != nil {
			b.Fatal(err)
		}
	}
	update := func(row func(client int) int) func(context.Context, int, int64) error {
		return func(ctx context.Context, client int, _ int64) error {
			_, err := db.Pool.Exec(ctx, `UPDATE bench_ceiling SET v = v - 1 WHERE id = $1 AND v >= 1`, row(client))
			return err
		}
	}
	run := 0
	pair := func(l *ledger.Ledger, wallet func(client int) string) func(context.Context, int, int64) error {
		run++
		prefix := fmt.Sprintf("r%d-%d", run, time.Now().UnixNano())
		return func(ctx context.Context, client int, seq int64) error {
			h, err := l.Hold(ctx, ledger.HoldRequest{Key: fmt.Sprintf("%s-%d", prefix, seq), Wallet: wallet(client), AmountMicro: 1000, Paywall: "pw", TTL: time.Minute})
			if err != nil {
				return err
			}
			_, err = l.Capture(ctx, ledger.CaptureRequest{Key: fmt.Sprintf("%s-%d", prefix, seq), HoldID: h.ID,
				Split: ledger.Split{ProviderMicro: 400, Provider: "openrouter", FeeMicro: 100, DeveloperMicro: 200}})
			return err
		}
	}
	own := func(client int) int { return client }
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("ceiling/clients=%d", n), func(b *testing.B) {
			runClients(b, db, n, "updates", update(own))
		})
	}
	b.Run("ceiling/hot-row/clients=32", func(b *testing.B) {
		runClients(b, db, 32, "updates", update(func(int) int { return 0 }))
	})
	// pairs measures pairs at n clients between two short runs of the ceiling at the same
	// concurrency (row picks the ceiling's row), so that the ratio compares figures taken
	// seconds apart: on a shared machine the ceiling alone swings by tens of percent within
	// minutes. It reports the ratio to the mean of the two.
	pairs := func(b *testing.B, l *ledger.Ledger, n int, wallet func(client int) string, row func(client int) int) {
		before := ceilingRate(b, n, update(row))
		rate := runClients(b, db, n, "pairs", pair(l, wallet))
		near := (before + ceilingRate(b, n, update(row))) / 2
		b.ReportMetric(near, "ceiling-updates/s")
		b.ReportMetric(rate/near, "ratio-to-ceiling")
	}
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("pairs/wallets=%d", n), func(b *testing.B) {
			pairs(b, l, n, func(client int) string { return addr(client) }, own)
		})
	}
	b.Run("pairs/hot-wallet/clients=32", func(b *testing.B) {
		pairs(b, l, 32, func(int) string { return addr(0) }, func(int) int { return 0 })
	})
	for _, f := range []int{2, 4} {
		lf := ledger.New(db.Pool, ledger.Options{BatchesInFlight: f})
		b.Run(fmt.Sprintf("pairs-inflight=%d/wallets=32", f), func(b *testing.B) {
			pairs(b, lf, 32, func(client int) string { return addr(client) }, own)
		})
	}
	// The same pairs with batching off (every call its own transaction), for comparison.
	unbatched := ledger.New(db.Pool, ledger.Options{Batch: 1})
	b.Run("pairs-unbatched/wallets=32", func(b *testing.B) {
		pairs(b, unbatched, 32, func(client int) string { return addr(client) }, own)
	})
}

// ceilingRate runs op on n concurrent clients for a second (less when the benchmark's sizing
// run is only probing) and returns the rate.
func ceilingRate(b *testing.B, n int, op func(ctx context.Context, client int, seq int64) error) float64 {
	b.Helper()
	d := time.Second
	if b.N == 1 {
		d = 100 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := op(context.Background(), c, 0); err != nil {
					b.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds()
}

// BenchmarkSharedPaywall: 32 users capture on one paywall, so every capture credits the same
// earnings, fee and provider accounts. With shards picked by SKIP LOCKED no capture waits for
// another's shard; hashing to a shard (and waiting) and a single row are the baselines.
func BenchmarkSharedPaywall(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts ledger.Options
	}{
		{"skip-locked/shards=32", ledger.Options{Shards: 32}},
		{"hashed/shards=32", ledger.Options{Shards: 32, ShardPick: ledger.PickHashed}},
		{"one-row", ledger.Options{Shards: 1}},
	} {
		db := testdb.NewWithPool(b, 40, ledger.Migrations)
		ctx := context.Background()
		l := ledger.New(db.Pool, mode.opts)
		for i := range 32 {
			if _, err := l.Deposit(ctx, ledger.DepositRequest{Key: fmt.Sprintf("fund-%d", i), ChainID: "137", Wallet: addr(i), AmountMicro: 1_000_000_000_000}); err != nil {
				b.Fatal(err)
			}
		}
		run := 0
		b.Run(mode.name, func(b *testing.B) {
			run++
			// Holds are made before the clock starts: only the captures are measured.
			holds := make([]string, b.N)
			for i := range holds {
				h, err := l.Hold(ctx, ledger.HoldRequest{Key: fmt.Sprintf("h%d-%d", run, i), Wallet: addr(i % 32), AmountMicro: 1000, Paywall: "pw", TTL: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				holds[i] = h.ID
			}
			runClients(b, db, 32, "captures", func(ctx context.Context, _ int, seq int64) error {
				_, err := l.Capture(ctx, ledger.CaptureRequest{Key: fmt.Sprintf("c%d-%d", run, seq), HoldID: holds[seq],
					Split: ledger.Split{ProviderMicro: 400, Provider: "openrouter", FeeMicro: 100, DeveloperMicro: 200}})
				return err
			})
		})
		db.Pool.Close()
	}
}

// processCPU is the CPU time this process has used so far (user and system).
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// machineIdle is the time the machine's cores have spent idle so far, all together (idle and
// iowait from /proc/stat's first line; Linux only: ok is false elsewhere).
func machineIdle() (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, false
	}
	return ticks(f[4], f[5]) // idle, iowait
}

// ticks is the sum of clock ticks counted in /proc (USER_HZ = 100 on Linux), as a duration.
func ticks(fields ...string) (time.Duration, bool) {
	var total int64
	for _, v := range fields {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		total += n
	}
	return time.Duration(total) * 10 * time.Millisecond, true
}

// backendCPU is the CPU time the database's backends have used so far, read from /proc: it is
// known only when PostgreSQL runs on this machine (ok is false otherwise). Backends of the
// benchmark's pools live as long as the pools, so a difference measures what ran in between.
func backendCPU(db *testdb.DB) (total time.Duration, ok bool) {
	rows, err := db.Pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		return 0, false
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, false
	}
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, false
		}
		// Fields after the command name (which may contain spaces): state is the 1st, utime
		// the 12th, stime the 13th.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			return 0, false
		}
		cpu, ok := ticks(f[11], f[12]) // utime, stime
		if !ok {
			return 0, false
		}
		total += cpu
	}
	return total, true
}
