package ledger

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the ledger's tables, for `tollgate migrate` and tests.
var Migrations = migrate.Embedded("ledger", migrationFiles, "migrations")
