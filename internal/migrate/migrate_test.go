package migrate_test

import (
	"context"
	"embed"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/testdb"
)

func TestApplyIsOrderedAndIdempotent(t *testing.T) {
	db := testdb.New(t)
	src := migrate.Source{Name: "demo", FS: fstest.MapFS{
		"0002_add_col.sql": {Data: []byte("ALTER TABLE demo ADD COLUMN IF NOT EXISTS note TEXT")},
		"0001_create.sql":  {Data: []byte("CREATE TABLE IF NOT EXISTS demo (id UUID PRIMARY KEY DEFAULT gen_random_uuid())")},
		"README.md":        {Data: []byte("not a migration")},
	}}
	ctx := t.Context()
	n, err := migrate.Apply(ctx, db.Pool, src)
	if err != nil || n != 2 {
		t.Fatalf("first Apply = %d, %v; want 2, nil", n, err)
	}
	n, err = migrate.Apply(ctx, db.Pool, src)
	if err != nil || n != 0 {
		t.Fatalf("second Apply = %d, %v; want 0, nil", n, err)
	}
	db.Must(t, "INSERT INTO demo (note) VALUES ('ok')")
}

func TestApplyConcurrentReplicas(t *testing.T) {
	db := testdb.New(t)
	src := migrate.Source{Name: "demo", FS: fstest.MapFS{
		"0001_create.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS demo (id INT PRIMARY KEY)")},
		"0002_index.sql":  {Data: []byte("CREATE INDEX IF NOT EXISTS demo_id ON demo (id)")},
	}}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = migrate.Apply(context.Background(), db.Pool, src) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	var count int
	if err := db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations WHERE source = 'demo'").Scan(&count); err != nil || count != 2 {
		t.Fatalf("schema_migrations rows = %d, %v; want 2", count, err)
	}
}

func TestLoadRejectsBadNames(t *testing.T) {
	tests := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"no version", fstest.MapFS{"create.sql": {}}, "name must look like 0001_description.sql"},
		{"zero version", fstest.MapFS{"0000_x.sql": {}}, "name must look like"},
		{"duplicate", fstest.MapFS{"0001_a.sql": {}, "0001_b.sql": {}}, "version 1 used by both 0001_a.sql and 0001_b.sql"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := migrate.Load(migrate.Source{Name: "demo", FS: tt.fs})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestApplyReportsFailingMigration(t *testing.T) {
	db := testdb.New(t)
	src := migrate.Source{Name: "demo", FS: fstest.MapFS{
		"0001_bad.sql": {Data: []byte("CREATE TABLE demo (id NOSUCHTYPE)")},
	}}
	_, err := migrate.Apply(t.Context(), db.Pool, src)
	if err == nil || !strings.Contains(err.Error(), "apply demo/0001_bad.sql") {
		t.Fatalf("Apply error = %v, want it to name the failing file", err)
	}
}

func TestEmbedded(t *testing.T) {
	// A folder that is not embedded is reported when the migrations are read, naming the source.
	_, err := migrate.Load(migrate.Embedded("demo", embed.FS{}, "migrations"))
	if err == nil || !strings.Contains(err.Error(), "read demo migrations") {
		t.Fatalf("Load of a missing folder: error = %v, want it to name the source", err)
	}
	// A folder name that is not a valid path is a mistake in the source code: it panics.
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "demo migrations") {
			t.Fatalf("Embedded with an invalid folder: recover() = %v, want a panic naming the source", r)
		}
	}()
	migrate.Embedded("demo", embed.FS{}, "../migrations")
}
