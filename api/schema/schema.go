// Package schema holds the API's tables (api_idempotency). It only embeds SQL, so
// internal/schema can list it without pulling go-ethereum in through package api.
package schema

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var files embed.FS

// Migrations are the API's tables, for `tollgate migrate` and tests.
var Migrations = migrate.Embedded("api", files, "migrations")
