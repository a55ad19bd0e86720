package mainlib

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/paywall"
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
	secrets, err := secretsKey(cfg)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
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
	if _, err := fmt.Fprintf(env.stdout, "migrate: %d migration(s) applied; schema is current\n", n); err != nil {
		return err
	}
	// BYOK credentials stored in plaintext by a version before sealing are sealed here. Redis
	// copies of them are dropped by the first replica that reads one (paywall.Store.ByKey).
	sealed, err := paywall.NewStore(pool, nil, "", paywall.Options{SecretsKey: secrets}).SealCredentials(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if sealed > 0 {
		_, err = fmt.Fprintf(env.stdout, "migrate: %d BYOK upstream credential(s) sealed with paywall.secrets_key\n", sealed)
	}
	return err
}
