package paywall

import (
	"embed"
	"io/fs"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the paywall tables (paywalls, paywall_authorizations), for `tollgate migrate`
// and tests.
var Migrations = migrate.Source{Name: "paywall", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time; this cannot fail
	}
	return sub
}
