package mainlib

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/webhook"
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
	secrets, previous, err := secretsKeys(cfg)
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
	// BYOK credentials stored in plaintext by a version before sealing are sealed here (their
	// Redis copies are dropped by the first replica that reads one: paywall.Store.ByKey), and,
	// during a key rotation, those sealed with a previous key are sealed again with the secrets
	// key. Their Redis copies hold the old value, which only the previous key opens: migrate
	// drops them then (and tells the replicas to), so it needs Redis during a rotation.
	var rdb *redis.Client
	if len(previous) > 0 {
		if rdb, err = openRedis(ctx, cfg.Redis); err != nil {
			return fmt.Errorf("migrate: rotating paywall.secrets_key: %w", err)
		}
		defer func() { _ = rdb.Close() }()
	}
	store := paywall.NewStore(pool, rdb, cfg.Redis.Prefix, paywall.Options{SecretsKey: secrets, PreviousSecretsKeys: previous})
	defer func() { _ = store.Close() }()
	sealed, err := store.SealCredentials(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if sealed.Sealed > 0 {
		if _, err := fmt.Fprintf(env.stdout, "migrate: %d BYOK upstream credential(s) sealed with paywall.secrets_key\n", sealed.Sealed); err != nil {
			return err
		}
	}
	if len(previous) == 0 {
		return nil
	}
	// Webhook signing secrets are sealed with the same key (no Redis copies).
	hooks, err := webhook.New(pool, nil, secrets, webhook.Options{PreviousSecretsKeys: previous}).ResealSecrets(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	_, err = fmt.Fprintf(env.stdout, "migrate: %d BYOK upstream credential(s) and %d webhook signing secret(s) sealed again with paywall.secrets_key; "+
		"if every replica and command already has the new key, paywall.previous_secrets_keys can now be removed\n", sealed.Resealed, hooks)
	return err
}
