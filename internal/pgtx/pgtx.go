// Package pgtx runs short transactions that are retried whole when the database gives up on
// them for a transient reason: a serialization failure (40001, which CockroachDB raises for
// its retry errors too) or a deadlock (40P01), plus whatever codes a caller adds. COMMIT's own
// error is checked (pgx.BeginTxFunc returns it), since that is where PostgreSQL reports a
// serialization failure of a SERIALIZABLE transaction. The ledger has its own engine
// (ledger/tx.go): it also settles ambiguous commits through idempotency keys.
package pgtx

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/internal/wait"
)

// Options tune Run. The zero value runs READ COMMITTED with 8 attempts.
type Options struct {
	IsoLevel pgx.TxIsoLevel
	// Attempts bounds the runs of fn, the first included (default 8).
	Attempts int
	// Retry lists SQLSTATE codes retried besides 40001 and 40P01, such as 23505 when two
	// first inserts race and the retry sees the winner.
	Retry []string
}

// Beginner is what Run needs of a pool (a *pgxpool.Pool, a *pgx.Conn).
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Run runs fn in a transaction and commits it, running the whole transaction again after a
// retryable failure, with jittered, growing pauses (5 ms × attempt², ±50%) that honour ctx.
// fn must be safe to run again. It returns fn's or COMMIT's last error; when ctx ends between
// attempts, that error joined with ctx's.
func Run(ctx context.Context, db Beginner, opts Options, fn func(pgx.Tx) error) error {
	attempts := opts.Attempts
	if attempts <= 0 {
		attempts = 8
	}
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		err = pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: opts.IsoLevel}, fn)
		if !retryable(err, opts.Retry) || attempt == attempts {
			return err
		}
		pause := time.Duration(attempt*attempt) * 5 * time.Millisecond
		pause = pause/2 + rand.N(pause) //nolint:gosec // spreads retries; nothing secret
		if werr := wait.Sleep(ctx, pause); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// Code is err's SQLSTATE, or "" when err is not a PostgreSQL error.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func retryable(err error, extra []string) bool {
	switch c := Code(err); c {
	case "":
		return false
	case "40001", "40P01":
		return true
	default:
		for _, e := range extra {
			if c == e {
				return true
			}
		}
		return false
	}
}
