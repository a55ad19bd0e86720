package pricing

import (
	"embed"
	"io/fs"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the pricing tables (pricing_models, pricing_overrides), for `tollgate migrate`
// and tests.
var Migrations = migrate.Source{Name: "pricing", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time; this cannot fail
	}
	return sub
}
