package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The transaction engine. It is ours rather than crdbpgxv5.ExecuteTx because that helper commits
// through RELEASE SAVEPOINT and ignores the error of the final COMMIT, which on PostgreSQL is
// where serialization failures surface (../shared/reference/ledger.md §0). Every attempt is a
// whole BEGIN … COMMIT on one connection; COMMIT's command tag and error are checked.
//
// To keep an operation close to one round trip, BEGIN is pipelined with the first statement and,
// when the operation ends with [txn.final], COMMIT with the last one. A statement error inside the
// pipeline makes the server skip the rest up to the Sync, so a failed statement never commits.

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

// resolve runs an ambiguous commit's lookup on a context detached from the caller's
// cancellation, retrying it briefly when the database is momentarily unreachable.
func (l *Ledger) resolve(ctx context.Context, r resolver) (bool, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.opts.ResolveTimeout)
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
	d := time.Duration(rand.Int64N(int64(ceiling))) + time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
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

// query runs one statement in the transaction, beginning it first if needed (pipelined), and
// hands each row to scan.
func (t *txn) query(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	return t.send(ctx, sql, args, scan, false)
}

// final runs the transaction's last statement and commits. COMMIT is pipelined with the
// statement, unless a fault hook must run between them. The statement must be safe to commit
// whatever rows it returns: a statement that cannot apply completely must fail.
func (t *txn) final(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	if t.l.opts.Faults != nil {
		if err := t.send(ctx, sql, args, scan, false); err != nil {
			return err
		}
		return t.commit(ctx)
	}
	return t.send(ctx, sql, args, scan, true)
}

// commit sends COMMIT on its own.
func (t *txn) commit(ctx context.Context) error {
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

// send pipelines [BEGIN,] the statement [, COMMIT] in one round trip and reads the answers in
// order, so that an error is attributed to the message that caused it.
func (t *txn) send(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error, commit bool) error {
	b := &pgx.Batch{}
	if !t.began {
		b.Queue(beginSQL)
	}
	b.Queue(sql, args...)
	if commit {
		b.Queue(commitSQL)
	}
	br := t.conn.SendBatch(ctx, b)
	err := t.read(br, scan, commit)
	cerr := br.Close()
	if err == nil && cerr != nil {
		err = cerr
		if commit {
			err = commitError(cerr)
		}
	}
	if err != nil && !t.committed && !commit && t.conn.IsClosed() {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			err = errConnLost{err}
		}
	}
	return err
}

func (t *txn) read(br pgx.BatchResults, scan func(pgx.Rows) error, commit bool) error {
	if !t.began {
		if _, err := br.Exec(); err != nil {
			return t.beforeCommitErr(err, commit)
		}
		t.began = true
	}
	rows, err := br.Query()
	if err != nil {
		return t.beforeCommitErr(err, commit)
	}
	for rows.Next() {
		if scan == nil {
			continue
		}
		if err := scan(rows); err != nil {
			rows.Close()
			// The statement's rows could not be read: the statement's fate on the server is
			// known only if the connection is still in sync, so treat it like a server error.
			return t.beforeCommitErr(err, commit)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return t.beforeCommitErr(err, commit)
	}
	if !commit {
		return nil
	}
	ct, err := br.Exec()
	if err != nil {
		return commitError(err)
	}
	if ct.String() != commitSQL {
		return errCommitRolledBack
	}
	t.committed = true
	return nil
}

// beforeCommitErr classifies an error read before COMMIT's answer. A server error for an earlier
// message means the server skipped the pipelined COMMIT: nothing was committed. A transport error
// while a COMMIT was in the pipeline leaves the outcome unknown.
func (t *txn) beforeCommitErr(err error, commitQueued bool) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) || !commitQueued {
		return err
	}
	return &ambiguousError{err}
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
