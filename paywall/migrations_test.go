package paywall_test

import (
	"testing"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// TestMigrationsReplay applies the migrations, then replays every file as a restarted replica
// that died between a statement and its record would.
func TestMigrationsReplay(t *testing.T) {
	db := testdb.New(t, paywall.Migrations, pricing.Migrations)
	for _, src := range []migrate.Source{paywall.Migrations, pricing.Migrations} {
		ms, err := migrate.Load(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if _, err := db.Pool.Exec(t.Context(), m.SQL); err != nil {
				t.Errorf("replay %s/%s: %v", m.Source, m.Name, err)
			}
		}
	}
}
