package pricing

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the pricing tables (pricing_models, pricing_overrides), for `tollgate migrate`
// and tests.
var Migrations = migrate.Embedded("pricing", migrationFiles, "migrations")
