package pgtx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/internal/pgtx"
	"github.com/tollgate-dev/tollgate/internal/testdb"
)

// TestRetriesARealSerializationFailure: the first attempt of a SERIALIZABLE read-then-write
// loses to a write committed by another connection in between (PostgreSQL answers 40001); Run
// runs the transaction again, which sees the other write and commits.
func TestRetriesARealSerializationFailure(t *testing.T) {
	db := testdb.New(t)
	ctx := t.Context()
	db.Must(t, `CREATE TABLE counters (id INT PRIMARY KEY, n INT NOT NULL)`)
	db.Must(t, `INSERT INTO counters VALUES (1, 0)`)
	attempts := 0
	var codes []string
	err := pgtx.Run(ctx, db.Pool, pgtx.Options{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
		attempts++
		var n int
		if err := tx.QueryRow(ctx, `SELECT n FROM counters WHERE id = 1`).Scan(&n); err != nil {
			return err
		}
		if attempts == 1 { // someone else writes the row we read
			if _, err := db.Pool.Exec(ctx, `UPDATE counters SET n = n + 10 WHERE id = 1`); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE counters SET n = $1 WHERE id = 1`, n+1)
		codes = append(codes, pgtx.Code(err))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || codes[0] != "40001" {
		t.Errorf("attempts = %d, codes = %v; want a 40001 on the first and a second attempt", attempts, codes)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT n FROM counters WHERE id = 1`).Scan(&n); err != nil || n != 11 {
		t.Errorf("n = %d, %v; want 11 (the other write, then ours on top of it)", n, err)
	}
}

// TestWhatIsRetried: serialization failures, deadlocks and the caller's codes are retried up to
// Attempts; other errors are returned at once; a cancelled context stops the retries, and
// nothing of a failed attempt is committed.
func TestWhatIsRetried(t *testing.T) {
	db := testdb.New(t)
	db.Must(t, `CREATE TABLE writes (attempt INT NOT NULL)`)
	failWith := func(code string) func(int) error {
		return func(int) error { return &pgconn.PgError{Code: code} }
	}
	plain := errors.New("a business error")
	for _, tt := range []struct {
		name    string
		opts    pgtx.Options
		fail    func(attempt int) error
		want    int // attempts
		wantErr bool
	}{
		{"serialization failure, then success", pgtx.Options{}, func(a int) error {
			if a < 3 {
				return &pgconn.PgError{Code: "40001"}
			}
			return nil
		}, 3, false},
		{"deadlock every time", pgtx.Options{Attempts: 4}, failWith("40P01"), 4, true},
		{"unique violation, not listed", pgtx.Options{}, failWith("23505"), 1, true},
		{"unique violation, listed", pgtx.Options{Attempts: 3, Retry: []string{"23505"}}, failWith("23505"), 3, true},
		{"not a database error", pgtx.Options{}, func(int) error { return plain }, 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db.Must(t, `TRUNCATE writes`)
			attempts := 0
			err := pgtx.Run(t.Context(), db.Pool, tt.opts, func(tx pgx.Tx) error {
				attempts++
				if _, err := tx.Exec(t.Context(), `INSERT INTO writes VALUES ($1)`, attempts); err != nil {
					return err
				}
				return tt.fail(attempts)
			})
			if attempts != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("attempts = %d, err = %v; want %d attempts, error %v", attempts, err, tt.want, tt.wantErr)
			}
			var rows, last int
			if err := db.Pool.QueryRow(t.Context(), `SELECT count(*), COALESCE(max(attempt), 0) FROM writes`).Scan(&rows, &last); err != nil {
				t.Fatal(err)
			}
			if tt.wantErr && rows != 0 || !tt.wantErr && (rows != 1 || last != tt.want) {
				t.Errorf("committed rows = %d (last attempt %d); only a successful attempt may commit", rows, last)
			}
		})
	}

	ctx, cancel := context.WithCancel(t.Context())
	attempts := 0
	start := time.Now()
	err := pgtx.Run(ctx, db.Pool, pgtx.Options{Attempts: 100}, func(pgx.Tx) error {
		attempts++
		cancel()
		return &pgconn.PgError{Code: "40001"}
	})
	if attempts != 1 || !errors.Is(err, context.Canceled) || pgtx.Code(err) != "40001" || time.Since(start) > 5*time.Second {
		t.Errorf("after cancel: attempts = %d, err = %v; want one attempt and both errors", attempts, err)
	}
}
