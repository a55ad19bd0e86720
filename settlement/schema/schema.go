// Package schema holds the settlement worker's tables as embedded SQL. It imports nothing from
// go-ethereum, so `tollgate migrate` (and internal/schema) can apply it without linking the
// chain client.
package schema

import (
	"embed"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the settlement tables: top-up intents, deposits, the watcher's cursors, hot
// wallet leases, signed transactions and their attempts, payouts in progress, and transfers
// from unlinked addresses waiting to be assigned to a wallet.
var Migrations = migrate.Embedded("settlement", migrationFiles, "migrations")
