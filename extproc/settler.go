package extproc

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/ledger"
)

// settler keeps retrying, in the background, the captures and voids that failed within their
// request's own time (the database was down, a connection broke). Without it such a hold would
// just expire: the user not charged, the developer not paid. A settlement retries with bounded
// exponential backoff until shortly before its hold expires, each attempt with the same
// idempotency key, so a capture that finally succeeds after an outage charges exactly once.
//
// With a journal (Deps.Journal, in Redis), every settlement handed to the background is also
// written there, leased to this replica and renewed while it runs. Shutdown waits for the
// settlements within its grace and then releases the rest to the other replicas; a replica
// that dies stops renewing, and its leases run out. Every replica polls the journal
// (Server.RecoverSettlements) and takes over what nobody holds. Without a journal, shutdown
// gives up on the rest (their holds then expire and the sweeper releases them).
type settler struct {
	log     *slog.Logger
	metrics *Metrics
	// minBackoff is the first wait, doubled after each failure up to maxBackoff (±20 %).
	minBackoff, maxBackoff time.Duration
	// attempt bounds one attempt.
	attempt time.Duration
	// once makes one attempt at a settlement; done records its end (err nil: settled).
	once func(context.Context, *settlement) (ledger.CaptureResult, error)
	done func(*settlement, ledger.CaptureResult, error)
	// journal, if not nil, keeps the settlements for the other replicas; lease is how long this
	// replica's claim on one lasts without renewal.
	journal Journal
	lease   time.Duration

	ctx    context.Context // cancelled when shutdown gives up on the settlements
	cancel context.CancelFunc

	mu        sync.Mutex
	running   map[*settlement]struct{}
	abandoned int // settlements given up at shutdown (not handed over)
}

func newSettler(log *slog.Logger, m *Metrics, cfg Config, journal Journal,
	once func(context.Context, *settlement) (ledger.CaptureResult, error), done func(*settlement, ledger.CaptureResult, error)) *settler {
	ctx, cancel := context.WithCancel(context.Background())
	return &settler{log: log, metrics: m, minBackoff: cfg.SettleRetryBackoff, maxBackoff: cfg.SettleRetryMaxBackoff,
		attempt: cfg.SettleTimeout, once: once, done: done, journal: journal, lease: cfg.SettleLease,
		ctx: ctx, cancel: cancel, running: map[*settlement]struct{}{}}
}

// start runs st in the background, first writing it to the journal (if there is one; a
// settlement the journal refuses still runs here, logged). After shutdown gave up on the
// settlements, it gives up on st too.
func (s *settler) start(st *settlement) {
	if s.journal != nil && s.ctx.Err() == nil {
		if err := s.put(st); err != nil {
			s.log.Error("settlement not journaled; only this replica will retry it", "op", st.Op,
				"request_id", st.RequestID, "hold_id", st.HoldID, "err", err)
		} else {
			st.journaled = true
		}
	}
	if st.refine != nil {
		s.log.Info("waiting for the provider's record of the usage", "request_id", st.RequestID,
			"hold_id", st.HoldID, "until", st.refineUntil, "journaled", st.journaled)
	} else {
		s.log.Warn("settlement failed; retrying in the background", "op", st.Op, "request_id", st.RequestID,
			"hold_id", st.HoldID, "until", st.Deadline, "journaled", st.journaled)
	}
	s.launch(st)
}

// journalTimeout bounds one write to the journal: a stream hands its settlement over only
// after the journal has answered, and Redis answers in milliseconds when it is up.
const journalTimeout = 2 * time.Second

// put writes st to the journal, leased to this replica.
func (s *settler) put(st *settlement) error {
	data, err := encodeSettlement(st)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, journalTimeout)
	defer cancel()
	return s.journal.Put(ctx, st.journalID(), data, s.lease)
}

// launch runs st in its own goroutine unless shutdown has begun giving up.
func (s *settler) launch(st *settlement) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		s.giveUp(st, bgAbandoned, errors.New("shutting down"))
		return
	}
	s.running[st] = struct{}{}
	s.mu.Unlock()
	s.metrics.settlePending.Inc()
	go s.run(st)
}

// run retries st until it ends and records how. Its lease stops being renewed first: a renewal
// landing after the journal's last word on st (Done, or Release at shutdown) would lease it
// again, and keep the other replicas from taking it over until that lease ran out.
func (s *settler) run(st *settlement) {
	defer func() {
		s.mu.Lock()
		delete(s.running, st)
		s.mu.Unlock()
		s.metrics.settlePending.Dec()
	}()
	stop := func() {}
	if st.journaled {
		stop = s.keepLease(st)
	}
	res, gaveUp, err := s.attempts(st)
	stop()
	if gaveUp != "" {
		s.giveUp(st, gaveUp, err)
		return
	}
	s.finish(st, res, err)
}

// attempts retries st with backoff until it settles or fails for good (gaveUp is ""), or until
// the hold is about to expire or shutdown gives up on it (gaveUp is bgExpiring or bgAbandoned).
func (s *settler) attempts(st *settlement) (res ledger.CaptureResult, gaveUp string, err error) {
	backoff := s.minBackoff
	for {
		d := jitter(backoff)
		if time.Until(st.Deadline) < d {
			return res, bgExpiring, errors.New("the hold expires before the next attempt")
		}
		if err := wait.Sleep(s.ctx, d); err != nil {
			return res, bgAbandoned, errors.New("shutting down")
		}
		if st.refine != nil && !s.refined(st) {
			backoff = min(2*backoff, s.maxBackoff)
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.attempt)
		res, err = s.once(ctx, st)
		cancel()
		switch {
		case err == nil:
			s.metrics.settleBackground.WithLabelValues(st.Op, bgSettled).Inc()
			s.log.Info("settled in the background", "op", st.Op, "request_id", st.RequestID, "hold_id", st.HoldID)
			return res, "", nil
		case isFinal(err, st.final()):
			s.metrics.settleBackground.WithLabelValues(st.Op, bgFailed).Inc()
			s.log.Error("background settlement failed for good", "op", st.Op, "request_id", st.RequestID, "hold_id", st.HoldID, "err", err)
			return res, "", err
		case s.ctx.Err() != nil:
			return res, bgAbandoned, err
		}
		s.metrics.settleRetries.WithLabelValues(st.Op).Inc()
		s.log.Debug("background settlement attempt failed", "op", st.Op, "request_id", st.RequestID, "err", err)
		backoff = min(2*backoff, s.maxBackoff)
	}
}

// refined asks for the provider's record of st's usage and, when it is there, makes st the
// capture of that usage (journaled again, so that a replica taking over charges it too). It
// reports whether st is ready to be captured: refined, or past refineUntil (the estimate is
// charged then, as it is when the record cannot be read).
func (s *settler) refined(st *settlement) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.attempt)
	capture, err := st.refine(ctx)
	cancel()
	switch {
	case err == nil:
		s.metrics.providerRecords.WithLabelValues(recordUsed).Inc()
		st.Capture, st.Reason, st.refine = capture, "", nil
		s.log.Info("charging the provider's record of the usage", "request_id", st.RequestID, "hold_id", st.HoldID,
			"charge_micro", capture.Split.TotalMicro())
		if st.journaled {
			if err := s.put(st); err != nil {
				s.log.Warn("could not journal the provider's figures; a replica taking over would charge the estimate",
					"request_id", st.RequestID, "err", err)
			}
		}
		return true
	case !errors.Is(err, errNoRecord) && time.Now().Before(st.refineUntil):
		s.log.Debug("no record of the usage from the provider yet", "request_id", st.RequestID, "err", err)
		return false
	}
	result := recordNoneInTime
	if errors.Is(err, errNoRecord) {
		result = recordUnreadable
	}
	s.metrics.providerRecords.WithLabelValues(result).Inc()
	s.log.Warn("no usable record of the usage from the provider; charging the estimate", "request_id", st.RequestID,
		"hold_id", st.HoldID, "err", err)
	st.refine = nil
	return true
}

// keepLease renews this replica's lease on st a few times per lease until stop is called. A
// renewal that fails is logged: if the lease runs out, another replica may take st over while
// it still runs here, which the idempotency key makes harmless.
func (s *settler) keepLease(st *settlement) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		wait.Every(ctx, s.lease/3, func() {
			rctx, rcancel := context.WithTimeout(ctx, s.lease/3)
			err := s.journal.Renew(rctx, st.journalID(), s.lease)
			rcancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("could not renew the lease on a settlement", "op", st.Op, "request_id", st.RequestID, "err", err)
			}
		})
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// finish records the end of st and removes it from the journal.
func (s *settler) finish(st *settlement, res ledger.CaptureResult, err error) {
	if st.journaled {
		s.forget(st.journalID())
	}
	s.done(st, res, err)
}

// forget removes a settlement from the journal. If that fails, the entry stays until its lease
// runs out and another replica attempts it once more: a replay, which changes nothing.
func (s *settler) forget(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), journalTimeout)
	defer cancel()
	if err := s.journal.Done(ctx, id); err != nil {
		s.log.Warn("could not remove a finished settlement from the journal", "id", id, "err", err)
	}
}

// giveUp ends st without settling it. A journaled settlement abandoned at shutdown is handed
// over instead: its lease is released so that another replica takes it over at once.
func (s *settler) giveUp(st *settlement, result string, err error) {
	if result == bgAbandoned && st.journaled {
		// If the release fails, the lease still runs out and another replica takes it over then.
		ctx, cancel := context.WithTimeout(context.Background(), journalTimeout)
		rerr := s.journal.Release(ctx, st.journalID())
		cancel()
		s.metrics.settleBackground.WithLabelValues(st.Op, bgHandedOver).Inc()
		s.log.Warn("shutting down; the settlement is left in the journal for another replica", "op", st.Op,
			"request_id", st.RequestID, "hold_id", st.HoldID, "until", st.Deadline, "release_err", rerr)
		return
	}
	if result == bgAbandoned {
		s.mu.Lock()
		s.abandoned++
		s.mu.Unlock()
	}
	if st.journaled {
		s.forget(st.journalID())
	}
	s.metrics.settleBackground.WithLabelValues(st.Op, result).Inc()
	s.log.Error("gave up settling; the hold will expire and the sweeper release it", "op", st.Op, "why", result,
		"request_id", st.RequestID, "hold_id", st.HoldID, "err", err)
	s.done(st, ledger.CaptureResult{}, err)
}

// recoverBatch bounds the settlements one poll of the journal takes over.
const recoverBatch = 32

// recoverOnce takes over the journaled settlements nobody holds (their replica stopped or
// died) and runs them here. It returns how many it took.
func (s *settler) recoverOnce(ctx context.Context) (int, error) {
	jobs, err := s.journal.Claim(ctx, recoverBatch, s.lease)
	if err != nil {
		return 0, err
	}
	for _, j := range jobs {
		st, err := decodeSettlement(j.Data)
		if err != nil {
			// Nothing could ever attempt it: keeping it would only fail again on every poll.
			s.log.Error("dropping a journal entry that cannot be attempted", "id", j.ID, "err", err)
			s.forget(j.ID)
			continue
		}
		s.log.Warn("taking over a settlement from another replica", "op", st.Op, "request_id", st.RequestID,
			"hold_id", st.HoldID, "until", st.Deadline)
		s.launch(st)
	}
	return len(jobs), nil
}

// count reports how many settlements are running.
func (s *settler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

// wait blocks until every settlement has finished or ctx ends; then it cancels the rest (each
// handed over or logged as abandoned) and waits for them to stop. It returns how many
// settlements shutdown has abandoned. Shutdown is rare and settlements are few: a short poll
// keeps this free of start/wait races.
func (s *settler) wait(ctx context.Context) int {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.count() > 0 {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.cancel()
			s.mu.Unlock()
			for s.count() > 0 {
				<-t.C
			}
		case <-t.C:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned
}

// jitter spreads d by ±20 %, so that replicas retrying after the same outage do not hit the
// database in step.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(2*d/5)+1)) //nolint:gosec // timing jitter, not a secret
}

// isFinal reports whether err is one of final.
func isFinal(err error, final []error) bool {
	for _, f := range final {
		if errors.Is(err, f) {
			return true
		}
	}
	return false
}
