package webhook

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the webhook tables (webhook_endpoints, webhook_events), for `tollgate
// migrate` and tests.
var Migrations = migrate.Embedded("webhook", migrationFiles, "migrations")
