package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Batching. Concurrent holds (and, apart from them, concurrent captures) share one transaction:
// one statement writes them all and one COMMIT makes them durable, so the commit, the round
// trips and the statement's fixed cost are paid once per batch instead of once per request
// (TigerBeetle batches for the same reason; ../shared/reference/ledger.md §2). Idempotency stays
// per request: every request keeps its own key, hash and result.
//
// A batch statement never waits for a row lock: it locks holds, wallets and shards with
// SKIP LOCKED, so a busy row cannot hold up the unrelated requests of its batch. A request whose
// row was busy goes into a later batch (a few times), then runs on its own. A request the batch
// did not write (a replay, an overrun, insufficient funds, an expired hold …) runs on its own,
// through the same code as without batching, which finds out why and answers. So does a request
// that finds no company: a batch of one runs that code, which is cheaper (and may wait for a
// lock; the next batch waits behind it at most soloGrace). A batch whose transaction fails as a
// whole leaves every request to run on its own; the only exception is ErrAmbiguous for the
// requests the batch wrote, whose commit could not be settled.
//
// Within one Ledger, a wallet is in at most one running batch of either kind (its group key), so
// that batches of holds and of captures take turns on a busy wallet instead of skipping each
// other's locked row.
//
// Captures also give way to holds: a batch of captures writes only while no batch of holds is
// writing, and a batch of holds waits only for holds. A hold is on the request's path, before
// the upstream call; a capture runs after the response. So a hold never waits for a capture,
// while captures gather as holds write and then write in larger batches. Turns pass in order:
// when a batch answers, the kind that did not start last starts first, so waiting captures start
// before the next holds and cannot be starved by them. See docs/ledger.md, "Batching", for what
// each policy measured.

// batchOutcome is what a batch did with one request.
type batchOutcome int

const (
	// batchAlone: not written (or not run yet): the request runs on its own, whose code finds
	// out why and answers.
	batchAlone batchOutcome = iota
	// batchAnswered: res and err are the answer. The batch wrote and committed the request, or
	// its commit could not be settled (ErrAmbiguous), or the caller's context ended while it
	// was queued, or the batcher ran it on its own (a batch of one).
	batchAnswered
	// batchBusy: a row it needs was locked by another transaction: it tries a later batch.
	batchBusy
)

const (
	// maxCommitting bounds the batches of one kind (of more than one request) that are running.
	maxCommitting = 8
	// soloGrace is how long a request running on its own keeps the next batch from writing.
	soloGrace = 20 * time.Millisecond
	// maxBusy is how often a request may find its rows busy before it runs on its own (and waits).
	maxBusy = 3
)

// batchCall is one request in a batcher.
type batchCall[Q, R any] struct {
	ctx     context.Context
	req     Q
	uniq    []string // must not share a batch, nor run beside, another request with one of these
	group   []string // may share a batch with others of the same group, but not run beside them
	res     R
	outcome batchOutcome
	err     error
	busy    int
	done    chan struct{}
}

// batchGroup is what the batchers of one Ledger share: one lock, the keys of every running
// batch, the turns to write, and the batchers to wake when keys or turns are released.
type batchGroup struct {
	mu      sync.Mutex
	taken   map[string]struct{}
	next    int // the member whose turn is next
	members []batchMember
}

// batchMember is a batcher as its group sees it.
type batchMember interface {
	startLocked() bool
	writingLocked() int
}

func newBatchGroup() *batchGroup { return &batchGroup{taken: map[string]struct{}{}} }

// writingLocked is how many batches of any kind have a statement running.
func (g *batchGroup) writingLocked() int {
	n := 0
	for _, m := range g.members {
		n += m.writingLocked()
	}
	return n
}

// startLocked starts whatever batch of any member can start, beginning with the member whose
// turn it is; a member that starts one passes the next turn to the member after it.
func (g *batchGroup) startLocked() {
	n := len(g.members)
	for i := range n {
		k := (g.next + i) % n
		if g.members[k].startLocked() {
			g.next = (k + 1) % n
		}
	}
}

// batcher groups concurrent requests of one kind into batches. A batch starts when fewer than
// inFlight of its kind are writing (for a batcher that gives way, and no other kind's); the
// next starts as soon as one has written (while it commits), so under load batches grow by
// themselves and a lone request waits for no company.
type batcher[Q, R any] struct {
	g         *batchGroup
	size      int
	inFlight  int
	givesWay  bool // writes only while no other kind's batch is writing
	soloGrace time.Duration
	// exec runs one batch and sets every call's outcome (and res or err). It calls written once
	// its statement has answered, before its COMMIT.
	exec func(ctx context.Context, calls []*batchCall[Q, R], written func())

	// Guarded by g.mu.
	queue   []*batchCall[Q, R]
	writing int // batches whose statement has not answered yet (a lone request: at most soloGrace)
	running int // batches of more than one request not finished (writing or committing)
}

func newBatcher[Q, R any](g *batchGroup, size, inFlight int, givesWay bool, exec func(context.Context, []*batchCall[Q, R], func())) *batcher[Q, R] {
	b := &batcher[Q, R]{g: g, size: size, inFlight: inFlight, givesWay: givesWay, soloGrace: soloGrace, exec: exec}
	g.members = append(g.members, b)
	return b
}

// do submits a request and waits for what its batch did with it: answered reports whether res
// and err are the answer; if not, the caller runs the request on its own. A request still queued
// when ctx ends leaves the queue (nothing applied); one whose batch is running is waited for,
// since only the batch can tell whether it was applied.
func (b *batcher[Q, R]) do(ctx context.Context, req Q, uniq, group []string) (res R, answered bool, err error) {
	c := &batchCall[Q, R]{ctx: ctx, req: req, uniq: uniq, group: group, done: make(chan struct{})}
	b.g.mu.Lock()
	b.queue = append(b.queue, c)
	b.g.startLocked()
	b.g.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		b.g.mu.Lock()
		if i := slices.Index(b.queue, c); i >= 0 {
			b.queue = slices.Delete(b.queue, i, i+1)
			b.g.mu.Unlock()
			return res, true, fmt.Errorf("ledger: not applied: %w", ctx.Err())
		}
		b.g.mu.Unlock()
		<-c.done
	}
	return c.res, c.outcome == batchAnswered, c.err
}

func (b *batcher[Q, R]) writingLocked() int { return b.writing }

// startLocked starts batches while there is room and work, and reports whether it started one.
func (b *batcher[Q, R]) startLocked() (started bool) {
	for b.writing < b.inFlight && b.running < maxCommitting {
		if b.givesWay && b.g.writingLocked() > b.writing {
			return started
		}
		batch := b.takeLocked()
		if len(batch) == 0 {
			return started
		}
		b.writing++
		if len(batch) > 1 {
			b.running++
		}
		started = true
		go b.run(batch)
	}
	return started
}

// takeLocked takes up to size queued requests, oldest first, that conflict with no running
// batch and, for uniq keys, with no other request of the batch.
func (b *batcher[Q, R]) takeLocked() []*batchCall[Q, R] {
	var batch []*batchCall[Q, R]
	groups := map[string]struct{}{} // group keys of this batch
	rest := b.queue[:0]
	for _, c := range b.queue {
		if c.ctx.Err() != nil {
			b.finishLocked(c, batchAnswered, fmt.Errorf("ledger: not applied: %w", c.ctx.Err()))
			continue
		}
		if len(batch) >= b.size || b.conflicts(c, groups) {
			rest = append(rest, c)
			continue
		}
		for _, k := range c.uniq {
			b.g.taken[k] = struct{}{}
		}
		for _, k := range c.group {
			b.g.taken[k] = struct{}{}
			groups[k] = struct{}{}
		}
		batch = append(batch, c)
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	return batch
}

// conflicts reports whether c may not join the batch being formed, whose group keys are groups.
func (b *batcher[Q, R]) conflicts(c *batchCall[Q, R], groups map[string]struct{}) bool {
	for _, k := range c.uniq {
		if _, ok := b.g.taken[k]; ok {
			return true
		}
	}
	for _, k := range c.group {
		_, taken := b.g.taken[k]
		_, ours := groups[k]
		if taken && !ours {
			return true
		}
	}
	return false
}

// releaseLocked frees the keys of a batch.
func (b *batcher[Q, R]) releaseLocked(batch []*batchCall[Q, R]) {
	for _, c := range batch {
		for _, k := range c.uniq {
			delete(b.g.taken, k)
		}
		for _, k := range c.group {
			delete(b.g.taken, k)
		}
	}
}

func (b *batcher[Q, R]) finishLocked(c *batchCall[Q, R], o batchOutcome, err error) {
	c.outcome, c.err = o, err
	close(c.done)
}

// run executes one batch, answers its requests (or queues the busy ones again, first in line),
// and starts what can start.
func (b *batcher[Q, R]) run(batch []*batchCall[Q, R]) {
	ctx, cancel := batchContext(batch)
	var once sync.Once
	written := func() {
		once.Do(func() {
			b.g.mu.Lock()
			b.writing--
			b.g.startLocked()
			b.g.mu.Unlock()
		})
	}
	if len(batch) == 1 {
		// A request on its own runs the single-request code, which may wait for a row lock:
		// the next batch must not wait long behind it.
		t := time.AfterFunc(b.soloGrace, written)
		defer t.Stop()
	}
	b.exec(ctx, batch, written)
	written()
	cancel()
	b.g.mu.Lock()
	defer b.g.mu.Unlock()
	if len(batch) > 1 {
		b.running--
	}
	b.releaseLocked(batch)
	var again []*batchCall[Q, R]
	for _, c := range batch {
		switch {
		case c.outcome == batchBusy && c.busy < maxBusy && c.ctx.Err() == nil:
			c.busy++
			c.outcome = batchAlone
			again = append(again, c)
		case c.outcome == batchBusy:
			b.finishLocked(c, batchAlone, nil)
		default:
			close(c.done)
		}
	}
	if len(again) > 0 {
		b.queue = append(again, b.queue...)
	}
	b.g.startLocked()
}

// batchContext is the context a batch runs on: it keeps the values of its first request's
// context, and ends at the latest deadline of its requests (or never, if one has none), so that
// no caller's impatience cancels the others' work.
func batchContext[Q, R any](batch []*batchCall[Q, R]) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.WithoutCancel(batch[0].ctx))
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}

// holdWallets remembers the wallets of the holds a Ledger made, so that a capture can take its
// wallet's group key without reading the hold first. It is bounded: a capture whose hold it
// forgot (or that another replica made) only loses the grouping.
type holdWallets struct {
	mu sync.Mutex
	m  map[string]string // hold id (lower case) → wallet
}

const maxHoldWallets = 1 << 16

func (h *holdWallets) put(holdID, wallet string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxHoldWallets {
		h.m = map[string]string{}
	}
	h.m[strings.ToLower(holdID)] = wallet
}

func (h *holdWallets) get(holdID string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w, ok := h.m[strings.ToLower(holdID)]
	return w, ok
}

func (h *holdWallets) drop(holdID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, strings.ToLower(holdID))
}

// logBatch reports what a batch did. A batch that failed as a whole left its requests to run on
// their own (or, for those it wrote, answered ErrAmbiguous); errBroken means a bug.
func (l *Ledger) logBatch(op string, size, written int, err error) {
	switch {
	case err == nil:
		l.opts.Logger.Debug("ledger: batch committed", "op", op, "size", size, "written", written)
	case errors.Is(err, errBroken):
		l.opts.Logger.Error("ledger: batch failed; its requests run on their own", "op", op, "size", size, "err", err)
	default:
		l.opts.Logger.Debug("ledger: batch failed; its requests run on their own", "op", op, "size", size, "err", err)
	}
}

// batchWrite is what one attempt of a batch statement reported, by request index: the rows it
// wrote and the requests whose rows were busy.
type batchWrite[W any] struct {
	wrote map[int]W
	busy  map[int]bool
}

// batchSpec is how one kind of batch is written.
type batchSpec[Q, R, W any] struct {
	op   string                                             // names the transaction (retries, faults, logs)
	keys func(Q) string                                     // a request's idempotency key
	id   func(W) string                                     // the id of a written row
	body func(context.Context, *txn, *batchWrite[W]) error  // runs the statement (and commits)
	done func(*batchCall[Q, R], W)                          // fills the answer of a written request
	solo func(context.Context, *batchCall[Q, R]) (R, error) // runs a request on its own
	// probeSQL inserts keys ($1) in a transaction that rolls back, waiting for any writer of
	// them; countSQL counts the rows with ids ($1) that exist.
	probeSQL, countSQL string
}

// runBatch runs one batch as a transaction and sets every call's outcome. A batch of one runs
// the single-request code instead. An ambiguous commit is settled through the rows the statement
// wrote: their ids exist if and only if it committed.
func runBatch[Q, R, W any](ctx context.Context, l *Ledger, spec batchSpec[Q, R, W], calls []*batchCall[Q, R], written func()) {
	if len(calls) == 1 {
		c := calls[0]
		c.res, c.err = spec.solo(context.WithValue(c.ctx, writtenKey{}, written), c)
		c.outcome = batchAnswered
		return
	}
	var w batchWrite[W]
	err := l.runTx(context.WithValue(ctx, writtenKey{}, written), spec.op, func(ctx context.Context, t *txn) error {
		w = batchWrite[W]{wrote: map[int]W{}, busy: map[int]bool{}}
		return spec.body(ctx, t, &w)
	}, func(ctx context.Context) (bool, error) {
		var keys, ids []string
		for i, row := range w.wrote {
			keys, ids = append(keys, spec.keys(calls[i].req)), append(ids, spec.id(row))
		}
		return l.batchCommitted(ctx, spec.probeSQL, spec.countSQL, keys, ids)
	})
	ambiguous := errors.Is(err, ErrAmbiguous)
	for i, c := range calls {
		row, ok := w.wrote[i]
		switch {
		case err == nil && ok:
			spec.done(c, row)
			c.outcome = batchAnswered
		case ambiguous && ok:
			c.outcome, c.err = batchAnswered, err
		case (err == nil || ambiguous) && w.busy[i]:
			c.outcome = batchBusy
		default:
			c.outcome = batchAlone
		}
	}
	l.logBatch(spec.op, len(calls), len(w.wrote), err)
}

// batchCommitted settles an ambiguous commit of a batch statement from what it wrote: the ids
// it returned exist if and only if its transaction committed. Probing the keys first waits for a
// commit that may still be on its way.
func (l *Ledger) batchCommitted(ctx context.Context, probeSQL, countSQL string, keys, ids []string) (bool, error) {
	if len(ids) == 0 {
		return true, nil // it wrote nothing: there is nothing to apply
	}
	b := &pgx.Batch{}
	b.Queue(beginSQL)
	b.Queue(probeSQL, keys)
	b.Queue(rollbackSQL)
	if err := l.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	var found int
	if err := l.pool.QueryRow(ctx, countSQL, ids).Scan(&found); err != nil {
		return false, err
	}
	switch found {
	case len(ids):
		return true, nil
	case 0:
		return false, nil
	}
	return false, fmt.Errorf("%w: %d of the %d rows of one transaction exist", errBroken, found, len(ids))
}

// batchRow checks the request ordinal (1-based) a batch statement answered for.
func batchRow(op string, i int64, n int) (int, error) {
	if i < 1 || int(i) > n {
		return 0, fmt.Errorf("%w: %s answered for request %d of %d", errBroken, op, i, n)
	}
	return int(i) - 1, nil
}
