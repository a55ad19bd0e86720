// Package testdb gives each test its own fresh PostgreSQL database, migrated and dropped at the
// end of the test. It talks to the real server named by TOLLGATE_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres), never to a fake.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/migrate"
)

// AdminURL is the URL of the database the tests connect to in order to create their own.
func AdminURL() string {
	if u := os.Getenv("TOLLGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// DB is a throwaway database.
type DB struct {
	Name string
	URL  string // connection URL for the new database
	Pool *pgxpool.Pool
}

// New creates a database named after the test, applies the given migrations, and drops it
// (closing every connection first) when the test ends. The pool it returns allows
// maxConns connections (0 means pgxpool's default).
func New(t testing.TB, sources ...migrate.Source) *DB {
	t.Helper()
	return NewWithPool(t, 0, sources...)
}

// NewWithPool is New with an explicit pool size, for tests that run many workers.
func NewWithPool(t testing.TB, maxConns int32, sources ...migrate.Source) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	name := dbName(t.Name())
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("testdb: connect to %s: %v (is PostgreSQL running? see README)", redact(AdminURL()), err)
	}
	defer func() { _ = admin.Close(ctx) }()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testdb: create database %s: %v", name, err)
	}
	t.Cleanup(func() { drop(t, name) })

	u, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatalf("testdb: parse admin URL: %v", err)
	}
	u.Path = "/" + name
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatalf("testdb: parse URL: %v", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testdb: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := migrate.Apply(ctx, pool, sources...); err != nil {
		t.Fatalf("testdb: migrate: %v", err)
	}
	return &DB{Name: name, URL: u.String(), Pool: pool}
}

func drop(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Errorf("testdb: connect to drop %s: %v", name, err)
		return
	}
	defer func() { _ = admin.Close(ctx) }()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("testdb: drop %s: %v", name, err)
	}
}

// dbName turns a test name into a unique, valid database name.
func dbName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 40 {
		base = base[:40]
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	return "tg_" + base + "_" + hex.EncodeToString(suffix[:])
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Must is a helper for test setup statements.
func (db *DB) Must(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("testdb: %s: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
