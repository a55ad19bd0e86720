package journal_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

func newJournal(t *testing.T) *journal.Journal {
	t.Helper()
	rdb, prefix := testredis.New(t)
	return journal.New(rdb, prefix+"settle:")
}

func ids(jobs []journal.Job) []string {
	var out []string
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	slices.Sort(out)
	return out
}

// TestLeases: a job is claimable only once its lease has run out (or was released); a claim
// leases it to the claimer; renewing keeps it; a finished job is gone for everyone.
func TestLeases(t *testing.T) {
	j := newJournal(t)
	ctx := t.Context()
	if err := j.Put(ctx, "a", []byte(`{"op":"capture"}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := j.Put(ctx, "b", []byte("b-data"), 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Claim(ctx, 10, time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("claimed %v, %v while both leases run", got, err)
	}
	time.Sleep(200 * time.Millisecond)
	got, err := j.Claim(ctx, 10, 150*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != "b" || string(got[0].Data) != "b-data" {
		t.Fatalf("claimed %+v, %v: want b and its data, once its lease ran out", got, err)
	}
	// Now leased to the claimer: renewing keeps it out of other claims.
	for range 3 {
		time.Sleep(80 * time.Millisecond)
		if err := j.Renew(ctx, "b", 150*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got, err := j.Claim(ctx, 10, time.Hour); err != nil || len(got) != 0 {
			t.Fatalf("claimed %v, %v while the lease is renewed", got, err)
		}
	}
	if err := j.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Claim(ctx, 10, time.Hour); err != nil || !slices.Equal(ids(got), []string{"a"}) {
		t.Fatalf("claimed %v, %v: want a, released", ids(got), err)
	}
	if err := j.Done(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := j.Renew(ctx, "a", time.Hour); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("renewing a finished job: %v, want ErrNotFound", err)
	}
	if err := j.Done(ctx, "a"); err != nil {
		t.Fatalf("finishing twice: %v", err)
	}
	if n, err := j.Len(ctx); err != nil || n != 1 {
		t.Fatalf("%d jobs left (%v), want b", n, err)
	}
	// Releasing a finished job does not bring it back.
	if err := j.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := j.Release(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Claim(ctx, 10, time.Hour); err != nil || !slices.Equal(ids(got), []string{"b"}) {
		t.Fatalf("claimed %v, %v: want b alone", ids(got), err)
	}
}

// TestClaimBoundedAndOldestFirst: a claim takes at most max jobs, those whose lease ran out
// first.
func TestClaimBoundedAndOldestFirst(t *testing.T) {
	j := newJournal(t)
	ctx := t.Context()
	for i := range 5 {
		if err := j.Put(ctx, fmt.Sprint("job-", i), []byte("x"), time.Duration(i+1)*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	got, err := j.Claim(ctx, 2, time.Hour)
	if err != nil || !slices.Equal(ids(got), []string{"job-0", "job-1"}) {
		t.Fatalf("claimed %v, %v: want the two oldest leases", ids(got), err)
	}
	got, err = j.Claim(ctx, 10, time.Hour)
	if err != nil || !slices.Equal(ids(got), []string{"job-2", "job-3", "job-4"}) {
		t.Fatalf("claimed %v, %v: want the other three", ids(got), err)
	}
}

// TestConcurrentClaimsShareNothing: replicas claiming at the same moment each get different
// jobs, and together all of them.
func TestConcurrentClaimsShareNothing(t *testing.T) {
	j := newJournal(t)
	ctx := t.Context()
	const n = 200
	for i := range n {
		if err := j.Put(ctx, fmt.Sprint("job-", i), []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				got, err := j.Claim(context.Background(), 7, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, g := range got {
					seen[g.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct jobs claimed, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s claimed %d times", id, c)
		}
	}
}

// TestOrphanLeaseDropped: a lease whose job is gone (its hash entry removed by hand) is dropped
// by the next claim instead of being returned.
func TestOrphanLeaseDropped(t *testing.T) {
	rdb, prefix := testredis.New(t)
	j := journal.New(rdb, prefix+"settle:")
	ctx := t.Context()
	if err := j.Put(ctx, "gone", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, prefix+"settle:jobs", "gone").Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Claim(ctx, 10, time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("claimed %v, %v", got, err)
	}
	if n, err := rdb.ZCard(ctx, prefix+"settle:leases").Result(); err != nil || n != 0 {
		t.Fatalf("%d leases left (%v)", n, err)
	}
}
