// Package migrate applies the embedded, ordered SQL migrations that each Tollgate package owns.
//
// A package that owns tables embeds a folder of files named NNNN_description.sql and exposes
// it as a [Source]. Each file holds exactly one statement, because CockroachDB does not make a
// schema change atomic inside an explicit transaction: one DDL per transaction is the portable
// rule (../shared/DESIGN.md §3). Applied versions are recorded in schema_migrations, so running
// Apply again is harmless, and replicas racing to migrate at start agree through the table's
// primary key.
package migrate

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Source is one package's migrations: files NNNN_name.sql at the root of FS.
type Source struct {
	Name string // the owning package, e.g. "ledger"
	FS   fs.FS
}

// Embedded is the Source named name whose files are the folder dir of an embedded FS, as in
//
//	//go:embed migrations/*.sql
//	var migrationFiles embed.FS
//	var Migrations = migrate.Embedded("ledger", migrationFiles, "migrations")
//
// It panics only if dir is not a valid path, a mistake in the source code that the first test
// of the package reveals.
func Embedded(name string, files embed.FS, dir string) Source {
	sub, err := fs.Sub(files, dir)
	if err != nil {
		panic(fmt.Sprintf("migrate: %s migrations: %v", name, err))
	}
	return Source{Name: name, FS: sub}
}

// Migration is one parsed migration file.
type Migration struct {
	Source  string
	Version int
	Name    string
	SQL     string
}

// Load reads and orders a source's migrations. It can return an error for a file whose name
// does not start with a version number, or for two files with the same version.
func Load(src Source) ([]Migration, error) {
	entries, err := fs.ReadDir(src.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s migrations: %w", src.Name, err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		prefix, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migrate: %s/%s: name must look like 0001_description.sql", src.Name, e.Name())
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrate: %s: version %d used by both %s and %s", src.Name, v, other, e.Name())
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(src.FS, e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrate: read %s/%s: %w", src.Name, e.Name(), err)
		}
		out = append(out, Migration{Source: src.Name, Version: v, Name: e.Name(), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	source TEXT NOT NULL,
	version INT NOT NULL,
	name TEXT NOT NULL,
	applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (source, version)
)`

// Apply runs every migration of every source that the database has not recorded yet, in the
// order given: sources first, versions within a source. It reports the number applied.
func Apply(ctx context.Context, pool *pgxpool.Pool, sources ...Source) (int, error) {
	if _, err := pool.Exec(ctx, createTable); err != nil && !isDuplicateTable(err) {
		return 0, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied := 0
	for _, src := range sources {
		ms, err := Load(src)
		if err != nil {
			return applied, err
		}
		for _, m := range ms {
			ok, err := apply(ctx, pool, m)
			if err != nil {
				return applied, err
			}
			if ok {
				applied++
			}
		}
	}
	return applied, nil
}

// apply runs one migration and records it. The statement and its record are two transactions
// (one DDL per transaction); if a replica dies between them, the next run replays the DDL, so
// migrations are written to be re-runnable (IF NOT EXISTS).
func apply(ctx context.Context, pool *pgxpool.Pool, m Migration) (bool, error) {
	var done bool
	err := pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE source = $1 AND version = $2)`,
		m.Source, m.Version).Scan(&done)
	if err != nil {
		return false, fmt.Errorf("migrate: check %s/%s: %w", m.Source, m.Name, err)
	}
	if done {
		return false, nil
	}
	if _, err := pool.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil && !isDuplicateTable(err) {
		return false, fmt.Errorf("migrate: apply %s/%s: %w", m.Source, m.Name, err)
	}
	_, err = pool.Exec(ctx,
		`INSERT INTO schema_migrations (source, version, name) VALUES ($1, $2, $3)
		 ON CONFLICT (source, version) DO NOTHING`, m.Source, m.Version, m.Name)
	if err != nil {
		return false, fmt.Errorf("migrate: record %s/%s: %w", m.Source, m.Name, err)
	}
	return true, nil
}

// isDuplicateTable reports whether err says the relation already exists. Two replicas can both
// pass "IF NOT EXISTS" and race on PostgreSQL's catalog; the loser's error is harmless.
func isDuplicateTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "23505" || pgErr.Code == "42710")
}
