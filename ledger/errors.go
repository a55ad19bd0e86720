package ledger

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Internal outcomes that an operation turns into a result or a domain error.
var (
	// errKeyExists: the idempotency key is taken; the operation answers with a replay or
	// ErrIdempotencyConflict.
	errKeyExists = errors.New("ledger: idempotency key exists")
	// errIncomplete: a posting could not change every balance row it meant to (an account is
	// missing, or every shard of a shared account was locked); nothing was written.
	errIncomplete = errors.New("ledger: transfer could not reach every balance row")
	// errBroken: the database refused a write that the ledger's own bookkeeping should never
	// attempt. It means a bug, and is reported, never retried.
	errBroken = errors.New("ledger: internal inconsistency")
)

// mapConstraint turns the database's constraint violations into the package's errors. The
// database is the judge (its checks see every concurrent writer); the names are ours
// (migrations/).
func mapConstraint(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.ConstraintName {
	case "ledger_balances_available_nonnegative":
		return fmt.Errorf("%w (%s)", ErrInsufficientFunds, pgErr.Message)
	case "ledger_transfers_idempotency_key_key", "ledger_holds_idempotency_key_key":
		return errKeyExists
	case "ledger_transfers_reverses_key":
		return ErrAlreadyReversed
	case "ledger_transfers_complete":
		return errIncomplete
	case "ledger_balances_held_nonnegative", "ledger_entries_nonzero", "ledger_holds_amount_positive",
		"ledger_payouts_amount_positive":
		return fmt.Errorf("%w: %w", errBroken, err)
	}
	return err
}

// public keeps the package's internal outcomes from reaching callers: each is turned into the
// documented error that says the same thing (nothing was applied; trying again is safe).
func public(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errIncomplete), errors.Is(err, errDrained), errors.Is(err, errKeyExists):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
