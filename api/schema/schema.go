// Package schema holds the API's tables (api_idempotency). It only embeds SQL, so
// internal/schema can list it without pulling go-ethereum in through package api.
package schema

import (
	"embed"
	"io/fs"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var files embed.FS

// Migrations are the API's tables, for `tollgate migrate` and tests.
var Migrations = migrate.Source{Name: "api", FS: sub()}

func sub() fs.FS {
	f, err := fs.Sub(files, "migrations")
	if err != nil {
		panic(err) // the directory is embedded at build time; this cannot fail
	}
	return f
}
