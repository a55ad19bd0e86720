package extproc

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// settler keeps retrying, in the background, the captures and voids that failed within their
// request's own time (the database was down, a connection broke). Without it such a hold would
// just expire: the user not charged, the developer not paid. A job retries with bounded
// exponential backoff until shortly before its hold expires, each attempt with the same
// idempotency key, so a capture that finally succeeds after an outage charges exactly once.
// Jobs run detached from any stream; shutdown waits for them within its grace and gives up on
// the rest (their holds then expire and the sweeper releases them).
type settler struct {
	log     *slog.Logger
	metrics *Metrics
	// minBackoff is the first wait, doubled after each failure up to maxBackoff (±20 %).
	minBackoff, maxBackoff time.Duration
	// attempt bounds one attempt.
	attempt time.Duration

	ctx    context.Context // cancelled when shutdown gives up on the jobs
	cancel context.CancelFunc

	mu        sync.Mutex
	jobs      map[*settleJob]struct{} // running
	abandoned int                     // jobs given up at shutdown
}

// settleJob is one capture or void to finish.
type settleJob struct {
	op        string // "capture" or "void", the metrics label
	requestID string
	holdID    string
	// deadline is when to stop trying: shortly before the hold expires (a capture after the
	// expiry could only fail, and the sweeper may be releasing the hold).
	deadline time.Time
	// try makes one attempt. It returns nil when the hold is settled.
	try func(ctx context.Context) error
	// final are the errors that no retry can change.
	final []error
	// done records the end of the job: err is nil when the hold was settled.
	done func(err error)
}

func newSettler(log *slog.Logger, m *Metrics, minBackoff, maxBackoff, attempt time.Duration) *settler {
	ctx, cancel := context.WithCancel(context.Background())
	return &settler{log: log, metrics: m, minBackoff: minBackoff, maxBackoff: maxBackoff, attempt: attempt,
		ctx: ctx, cancel: cancel, jobs: map[*settleJob]struct{}{}}
}

// start runs j in the background; after shutdown gave up on the jobs, it gives up on j too.
func (s *settler) start(j *settleJob) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		s.giveUp(j, "abandoned", errors.New("shutting down"))
		return
	}
	s.jobs[j] = struct{}{}
	s.mu.Unlock()
	s.metrics.settlePending.Inc()
	s.log.Warn("settlement failed; retrying in the background", "op", j.op, "request_id", j.requestID,
		"hold_id", j.holdID, "until", j.deadline)
	go s.run(j)
}

func (s *settler) run(j *settleJob) {
	defer func() {
		s.mu.Lock()
		delete(s.jobs, j)
		s.mu.Unlock()
		s.metrics.settlePending.Dec()
	}()
	wait := s.minBackoff
	for {
		d := jitter(wait)
		if time.Until(j.deadline) < d {
			s.giveUp(j, "expiring", errors.New("the hold expires before the next attempt"))
			return
		}
		t := time.NewTimer(d)
		select {
		case <-s.ctx.Done():
			t.Stop()
			s.giveUp(j, "abandoned", errors.New("shutting down"))
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.attempt)
		err := j.try(ctx)
		cancel()
		switch {
		case err == nil:
			s.metrics.settleBackground.WithLabelValues(j.op, "settled").Inc()
			s.log.Info("settled in the background", "op", j.op, "request_id", j.requestID, "hold_id", j.holdID)
			j.done(nil)
			return
		case isFinal(err, j.final):
			s.metrics.settleBackground.WithLabelValues(j.op, "failed").Inc()
			s.log.Error("background settlement failed for good", "op", j.op, "request_id", j.requestID, "hold_id", j.holdID, "err", err)
			j.done(err)
			return
		case s.ctx.Err() != nil:
			s.giveUp(j, "abandoned", err)
			return
		}
		s.metrics.settleRetries.WithLabelValues(j.op).Inc()
		s.log.Debug("background settlement attempt failed", "op", j.op, "request_id", j.requestID, "err", err)
		wait = min(2*wait, s.maxBackoff)
	}
}

func (s *settler) giveUp(j *settleJob, result string, err error) {
	if result == "abandoned" {
		s.mu.Lock()
		s.abandoned++
		s.mu.Unlock()
	}
	s.metrics.settleBackground.WithLabelValues(j.op, result).Inc()
	s.log.Error("gave up settling; the hold will expire and the sweeper release it", "op", j.op, "why", result,
		"request_id", j.requestID, "hold_id", j.holdID, "err", err)
	j.done(err)
}

// running reports how many jobs are running.
func (s *settler) running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

// wait blocks until every job has finished or ctx ends; then it cancels the rest (each logs
// that it was abandoned) and waits for them to stop. It returns how many jobs shutdown has
// abandoned. Shutdown is rare and jobs are few: a short poll keeps this free of start/wait
// races.
func (s *settler) wait(ctx context.Context) int {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.running() > 0 {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.cancel()
			s.mu.Unlock()
			for s.running() > 0 {
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
