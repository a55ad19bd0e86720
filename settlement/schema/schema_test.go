package schema_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/settlement/schema"
)

// TestMigrationsReplay applies the settlement tables, then replays every file as if a replica
// died between a DDL and its record: each statement must be re-runnable, or fail only with
// duplicate_object (an ADD CONSTRAINT, which has no IF NOT EXISTS), as migrate.Apply allows.
func TestMigrationsReplay(t *testing.T) {
	db := testdb.New(t, schema.Migrations)
	ms, err := migrate.Load(schema.Migrations)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		var pgErr *pgconn.PgError
		if _, err := db.Pool.Exec(t.Context(), m.SQL); err != nil && (!errors.As(err, &pgErr) || pgErr.Code != "42710") {
			t.Errorf("replaying %s: %v", m.Name, err)
		}
	}
	for _, table := range []string{"settlement_topups", "settlement_deposits", "settlement_cursors", "settlement_leases", "settlement_txs", "settlement_tx_attempts", "settlement_payouts", "settlement_unassigned"} {
		var ok bool
		if err := db.Pool.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing (%v)", table, err)
		}
	}
}

// TestTxPurposes: after 0015–0017 a transaction may be for a top-up, a payout or a wallet's
// deployment (ERC-6492), and nothing else.
func TestTxPurposes(t *testing.T) {
	db := testdb.New(t, schema.Migrations)
	for i, tt := range []struct {
		purpose string
		ok      bool
	}{{"topup", true}, {"payout", true}, {"deploy", true}, {"other", false}} {
		_, err := db.Pool.Exec(t.Context(), `INSERT INTO settlement_txs (chain_id, sender, nonce, purpose, ref, to_addr, data, gas, status)
			VALUES ('1', '0x01', $1, $2, 'r', '0x02', '\x00', 21000, 'pending')`, i, tt.purpose)
		if (err == nil) != tt.ok {
			t.Errorf("purpose %q: %v", tt.purpose, err)
		}
	}
}
