package paywall

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the paywall tables (paywalls, paywall_authorizations), for `tollgate migrate`
// and tests.
var Migrations = migrate.Embedded("paywall", migrationFiles, "migrations")
