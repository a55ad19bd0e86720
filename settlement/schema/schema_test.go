package schema_test

import (
	"testing"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/settlement/schema"
)

// TestMigrationsReplay applies the settlement tables, then replays every file as if a replica
// died between a DDL and its record: each statement must be re-runnable.
func TestMigrationsReplay(t *testing.T) {
	db := testdb.New(t, schema.Migrations)
	ms, err := migrate.Load(schema.Migrations)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if _, err := db.Pool.Exec(t.Context(), m.SQL); err != nil {
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
