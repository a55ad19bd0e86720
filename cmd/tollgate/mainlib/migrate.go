package mainlib

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/schema"
)

func runMigrate(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "migrate")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env, *path)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("migrate: open database: %w", err)
	}
	defer pool.Close()
	n, err := migrate.Apply(ctx, pool, schema.All()...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.stdout, "migrate: %d migration(s) applied; schema is current\n", n)
	return err
}
