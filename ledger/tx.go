package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/internal/wait"
)

// The transaction engine. It is ours rather than crdbpgxv5.ExecuteTx because that helper commits
// through RELEASE SAVEPOINT and ignores the error of the final COMMIT, which on PostgreSQL is
// where serialization failures surface (../shared/reference/ledger.md §0). Every attempt is a
// whole BEGIN … COMMIT on one connection; COMMIT's command tag and error are checked.
//
// BEGIN is pipelined with the first statement. COMMIT is not pipelined with the last one, and
// that is deliberate: a COMMIT queued behind a statement that is still running (waiting for a
// lock, say) stays in the server's socket buffer when the client gives up, and the server runs
// the statement and then the COMMIT after the client has concluded that nothing happened; the
// key lookup that settles an ambiguous commit would race with it (the bank test caught exactly
// that). Sent only after the statement has answered, a COMMIT finds every row and key of the
// transaction already written, so a lookup that waits on the key cannot miss it.

const (
	beginSQL    = "BEGIN ISOLATION LEVEL READ COMMITTED"
	commitSQL   = "COMMIT"
	rollbackSQL = "ROLLBACK"
)

// FaultPoint names where [Options.Faults] is called.
type FaultPoint int

// Fault points.
const (
	// FaultBeforeCommit is after the transaction's last statement and before its COMMIT. An error
	// returned there is treated as if COMMIT had returned it, after rolling back: a *pgconn.PgError
	// with Code "40001" is a serialization failure, "40003" an ambiguous result.
	FaultBeforeCommit FaultPoint = iota + 1
	// FaultAfterCommit is after a successful COMMIT. An error returned there replaces COMMIT's
	// success, as a connection lost while the answer was on its way would: the engine must then
	// learn the outcome through the idempotency key.
	FaultAfterCommit
)

// ambiguousError marks an attempt whose COMMIT may or may not have happened.
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string { return "commit outcome unknown: " + e.err.Error() }
func (e *ambiguousError) Unwrap() error { return e.err }

// errCommitRolledBack: COMMIT answered ROLLBACK, so an earlier failure was swallowed.
var errCommitRolledBack = errors.New("ledger: COMMIT rolled the transaction back")

// txn is one attempt's transaction on one connection.
type txn struct {
	conn      *pgx.Conn
	l         *Ledger
	op        string
	began     bool // BEGIN has been executed
	committed bool // COMMIT answered COMMIT
}

// resolver learns, after an ambiguous commit, whether the attempt was applied; when it was, it
// fills the operation's result as a replay would. It runs on a context that outlives the caller's
// cancellation, because the caller still deserves the truth.
type resolver func(ctx context.Context) (applied bool, err error)

// runTx runs body as one READ COMMITTED transaction, retrying the whole transaction on
// serialization failures, deadlocks, lock timeouts, statement timeouts and lost connections (when
// nothing can have been committed), with bounded, jittered exponential backoff that honours ctx.
// An ambiguous commit is settled by resolve; only when that lookup cannot be made is the result
// ErrAmbiguous. Any other error of body (a business error) is returned as is, after rollback.
func (l *Ledger) runTx(ctx context.Context, op string, body func(context.Context, *txn) error, resolve resolver) error {
	var last error
	for attempt := 0; attempt <= l.opts.MaxRetries; attempt++ {
		if attempt > 0 {
			if err := l.backoff(ctx, attempt); err != nil {
				return fmt.Errorf("ledger: %s not applied: %w (last error: %w)", op, err, last)
			}
		}
		err := l.attempt(ctx, op, body)
		if err == nil {
			return nil
		}
		last = err
		if amb := (*ambiguousError)(nil); errors.As(err, &amb) {
			if resolve == nil {
				return fmt.Errorf("%w: %s: %w", ErrAmbiguous, op, err)
			}
			applied, rerr := l.resolve(ctx, resolve)
			if errors.Is(rerr, ErrIdempotencyConflict) {
				return rerr
			}
			if rerr != nil {
				return fmt.Errorf("%w: %s: %w (lookup: %w)", ErrAmbiguous, op, err, rerr)
			}
			if applied {
				l.opts.Logger.Debug("ledger: ambiguous commit resolved as applied", "op", op, "err", err)
				return nil
			}
			l.opts.Logger.Debug("ledger: ambiguous commit resolved as not applied", "op", op, "err", err)
			if ctx.Err() != nil {
				return fmt.Errorf("ledger: %s not applied: %w", op, ctx.Err())
			}
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ledger: %s not applied: %w", op, ctx.Err())
		}
		if !retryable(err) {
			return err
		}
		l.opts.Logger.Debug("ledger: retrying transaction", "op", op, "attempt", attempt+1, "err", err)
	}
	return fmt.Errorf("%w: %s not applied after %d attempts: %w", ErrUnavailable, op, l.opts.MaxRetries+1, last)
}

// detached returns a context that outlives the caller's cancellation but not ResolveTimeout,
// for reads that report what was committed.
func (l *Ledger) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), l.opts.ResolveTimeout)
}

// resolve runs an ambiguous commit's lookup on a context detached from the caller's
// cancellation, retrying it briefly when the database is momentarily unreachable.
func (l *Ledger) resolve(ctx context.Context, r resolver) (bool, error) {
	rctx, cancel := l.detached(ctx)
	defer cancel()
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			if err := l.backoff(rctx, attempt); err != nil {
				return false, errors.Join(last, err)
			}
		}
		applied, err := r(rctx)
		if err == nil {
			return applied, nil
		}
		last = err
		if !retryable(err) {
			return false, err
		}
	}
	return false, last
}

// backoff sleeps before retry number attempt (1, 2, …): full jitter over an exponential
// ceiling starting at 2ms and capped at 250ms.
func (l *Ledger) backoff(ctx context.Context, attempt int) error {
	ceiling := 2 * time.Millisecond << min(attempt-1, 7)
	ceiling = min(ceiling, 250*time.Millisecond)
	d := time.Duration(rand.Int64N(int64(ceiling))) + time.Millisecond //nolint:gosec // jitter; nothing secret
	return wait.Sleep(ctx, d)
}

// attempt runs body once on a pooled connection and commits unless body already did.
func (l *Ledger) attempt(ctx context.Context, op string, body func(context.Context, *txn) error) (err error) {
	c, err := l.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("ledger: %s: acquire connection: %w", op, errConnLost{err})
	}
	defer c.Release()
	t := &txn{conn: c.Conn(), l: l, op: op}
	err = body(ctx, t)
	if err == nil && t.began && !t.committed {
		err = t.commit(ctx)
	}
	if err != nil {
		if !t.committed {
			t.rollback()
		}
		return err
	}
	if t.committed && l.opts.Faults != nil {
		if ferr := l.opts.Faults(ctx, op, FaultAfterCommit); ferr != nil {
			return &ambiguousError{ferr}
		}
	}
	return nil
}

// rollback ends a failed transaction so that the connection can go back to the pool; a
// connection it cannot clean is closed, and the pool drops it.
func (t *txn) rollback() {
	pc := t.conn.PgConn()
	if pc.IsClosed() || pc.TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pc.Exec(ctx, rollbackSQL).ReadAll(); err != nil {
		_ = t.conn.Close(ctx)
	}
}

// final runs the transaction's last statement and commits it (see the comment at the top for
// why COMMIT is a round trip of its own). The statement must be safe to commit whatever rows it
// returns: a statement that cannot apply completely must fail.
func (t *txn) final(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	if err := t.query(ctx, sql, args, scan); err != nil {
		return err
	}
	return t.commit(ctx)
}

// writtenKey carries, in a context, a function to call once a transaction's statements have
// answered and before its COMMIT is sent (batch.go: a batch of one runs the single-request code,
// and the next batch may start writing while it commits).
type writtenKey struct{}

// commit sends COMMIT on its own.
func (t *txn) commit(ctx context.Context) error {
	if written, ok := ctx.Value(writtenKey{}).(func()); ok {
		written()
	}
	if f := t.l.opts.Faults; f != nil {
		if err := f(ctx, t.op, FaultBeforeCommit); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "40003" {
				return &ambiguousError{err}
			}
			return err
		}
	}
	ct, err := t.conn.Exec(ctx, commitSQL)
	if err != nil {
		if pgconn.SafeToRetry(err) {
			// COMMIT never left: the rollback that follows is the outcome.
			return errConnLost{err}
		}
		return commitError(err)
	}
	if ct.String() != commitSQL {
		return errCommitRolledBack
	}
	t.committed = true
	return nil
}

// commitError classifies an error received for (or instead of) COMMIT's answer. A definite
// abort (a class-40 error other than 40003, or a constraint checked at commit) means nothing was
// committed; anything else — a lost connection, a cancelled context, a shutdown — leaves the
// outcome unknown.
func commitError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "40003":
			return &ambiguousError{err}
		case pgErr.Code[:2] == "40", pgErr.Code[:2] == "23":
			return err
		}
	}
	return &ambiguousError{err}
}

// query runs one statement in the transaction and hands each row to scan (nil: the rows are
// discarded). A transaction's first statement is pipelined with BEGIN in one round trip; the
// answers are read in order, so that an error is attributed to the message that caused it.
func (t *txn) query(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	b := &pgx.Batch{}
	if !t.began {
		b.Queue(beginSQL)
	}
	b.Queue(sql, args...)
	br := t.conn.SendBatch(ctx, b)
	err := t.read(br, scan)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil && t.conn.IsClosed() && !errors.As(err, new(*pgconn.PgError)) {
		// The connection died before COMMIT was sent: the server rolls back.
		err = errConnLost{err}
	}
	return err
}

func (t *txn) read(br pgx.BatchResults, scan func(pgx.Rows) error) error {
	if !t.began {
		if _, err := br.Exec(); err != nil {
			return err
		}
		t.began = true
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if scan == nil {
			continue
		}
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// errConnLost wraps an error after which the connection is gone but nothing was committed.
type errConnLost struct{ err error }

func (e errConnLost) Error() string { return "connection lost: " + e.err.Error() }
func (e errConnLost) Unwrap() error { return e.err }

// retryable reports whether a failed attempt, which committed nothing, may simply be run again.
func retryable(err error) bool {
	if errors.As(err, new(errConnLost)) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", // serialization_failure (CockroachDB's retry errors too)
			"40P01", // deadlock_detected
			"55P03", // lock_not_available (lock_timeout)
			"57014", // query_canceled (statement_timeout; a cancelled ctx is checked before)
			"57P01", // admin_shutdown (pg_terminate_backend)
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now
			"53300", // too_many_connections
			"CR000": // CockroachDB's historical retry code
			return true
		}
		return pgErr.Code[:2] == "08" // connection exceptions
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
