package mainlib

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	// A value no key opens stops neither reseal: each seals the rest, and migrate names every
	// such paywall at the end, in one message.
	var noKey noKeyOpensReport
	sealed, err := store.SealCredentials(ctx)
	if err = noKey.add(err); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if sealed.Sealed > 0 {
		if _, err := fmt.Fprintf(env.stdout, "migrate: %d BYOK upstream credential(s) sealed with paywall.secrets_key\n", sealed.Sealed); err != nil {
			return err
		}
	}
	if len(previous) == 0 {
		return noKey.err() // nil: without previous keys SealCredentials opens no sealed value
	}
	// Webhook signing secrets are sealed with the same key (no Redis copies).
	hooks, err := webhook.New(pool, nil, secrets, webhook.Options{PreviousSecretsKeys: previous}).ResealSecrets(ctx)
	if err = noKey.add(err); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := fmt.Fprintf(env.stdout, "migrate: %d BYOK upstream credential(s) and %d webhook signing secret(s) sealed again with paywall.secrets_key\n",
		sealed.Resealed, hooks); err != nil {
		return err
	}
	if len(noKey) > 0 {
		return noKey.err()
	}
	_, err = fmt.Fprintln(env.stdout, "migrate: every sealed value opens with paywall.secrets_key; "+
		"if every replica and command already has the new key, paywall.previous_secrets_keys can now be removed")
	return err
}

// noKeyOpensReport gathers what SealCredentials and ResealSecrets found that no key opens, for
// one message that names every paywall and says what to do.
type noKeyOpensReport []*paywall.NoKeyOpensError

// add keeps err if it is a *paywall.NoKeyOpensError and returns any other error.
func (r *noKeyOpensReport) add(err error) error {
	if e, ok := errors.AsType[*paywall.NoKeyOpensError](err); ok {
		*r = append(*r, e)
		return nil
	}
	return err
}

// err is the report as an error (an ErrSealedCredential), or nil when it is empty.
func (r noKeyOpensReport) err() error {
	if len(r) == 0 {
		return nil
	}
	return r
}

func (r noKeyOpensReport) Error() string {
	n := 0
	for _, e := range r {
		n += len(e.Paywalls)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "migrate: %d sealed value(s) open with neither paywall.secrets_key nor any of paywall.previous_secrets_keys and were left as they are "+
		"(everything else is now sealed with paywall.secrets_key):\n", n)
	for _, e := range r {
		fmt.Fprintf(&b, "  the %s of paywall(s) %s\n", e.What, strings.Join(e.Paywalls, ", "))
	}
	b.WriteString("For each, add the key it was sealed with to paywall.previous_secrets_keys and run `tollgate migrate` again, or set it again: " +
		"an upstream credential with `tollgate paywall set-upstream-key ID` (reads it from standard input), " +
		"a signing secret with `tollgate paywall set-webhook ID -url URL` (the webhook's URL; it prints a new secret, to give the app).")
	return b.String()
}

// Unwrap makes the report an ErrSealedCredential for errors.Is.
func (r noKeyOpensReport) Unwrap() []error {
	errs := make([]error, len(r))
	for i, e := range r {
		errs[i] = e
	}
	return errs
}
