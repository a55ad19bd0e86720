package paywall

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/pgtx"
	"github.com/tollgate-dev/tollgate/internal/tiercache"
	"github.com/tollgate-dev/tollgate/pricing"
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// PlatformFeeBps is the platform's fee; Create, Update and SetMarkup refuse a built-in
	// paywall whose markup cannot cover it (pricing.CheckBuiltinMarkup).
	PlatformFeeBps int64
	// BuiltinUpstream is the routing header value of built-in paywalls (default "openrouter").
	BuiltinUpstream string
	// LocalTTL bounds how long this replica trusts its in-process cache if an invalidation
	// message is lost. Messages normally arrive within milliseconds, and every (re)subscription
	// flushes the cache, so the default with Redis is 10s: most users send less than a request a
	// second, and a shorter life would put a Redis round trip on nearly every request. Without
	// Redis there are no messages, and the default is 1s.
	LocalTTL time.Duration
	// RedisTTL bounds a shared Redis cache entry (default 1m); it matters only if an
	// invalidation could not reach Redis at all.
	RedisTTL time.Duration
	// MaxLocalEntries bounds each in-process cache (default 100,000).
	MaxLocalEntries int
	Logger          *slog.Logger
	// SecretsKey seals BYOK upstream credentials in the database and in Redis (from
	// paywall.secrets_key). Without it built-in paywalls work, and storing or reading a BYOK
	// paywall fails with ErrNoSecretsKey.
	SecretsKey *SecretsKey
	// PreviousSecretsKeys are former secrets keys, while the secrets key is being rotated (from
	// paywall.previous_secrets_keys): a credential that does not open with SecretsKey is opened
	// with each of them in turn. Nothing is sealed with them; SealCredentials (`tollgate
	// migrate`) seals what they open again with SecretsKey. They need SecretsKey.
	PreviousSecretsKeys []*SecretsKey

	// noBus turns the invalidation messages off, for the test that proves the TTL safety net.
	noBus bool
}

// maxTxAttempts bounds the retries of one transaction on serialization failures.
const maxTxAttempts = 8

// Store keeps paywalls, keys and authorizations in the database, cached in-process and in
// Redis. It is safe for concurrent use. Close stops its invalidation listener.
type Store struct {
	pool   *pgxpool.Pool
	opts   Options
	bus    *tiercache.Bus // nil without Redis
	byKey  *tiercache.Cache[[sha256.Size]byte, Paywall]
	byUser *tiercache.Cache[authKey, Authorization]
	// opened spares ByKey an AES-GCM open per request; see openedCredentials.
	opened openedCredentials
}

// authKey names an authorization in the cache.
type authKey struct{ paywallID, userID string }

// NewStore returns a Store on a migrated database. rdb may be nil (a single replica, or a
// command-line tool): caches are then in-process only. prefix is put before every Redis key
// and channel.
func NewStore(pool *pgxpool.Pool, rdb *redis.Client, prefix string, opts Options) *Store {
	if opts.BuiltinUpstream == "" {
		opts.BuiltinUpstream = "openrouter"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LocalTTL <= 0 {
		opts.LocalTTL = time.Second
		if rdb != nil && !opts.noBus {
			opts.LocalTTL = 10 * time.Second
		}
	}
	s := &Store{pool: pool, opts: opts}
	s.opened = openedCredentials{m: map[sealedFor]string{}, max: cmp.Or(opts.MaxLocalEntries, 100_000)}
	if rdb != nil && !opts.noBus {
		s.bus = tiercache.NewBus(rdb, prefix+"paywall:invalidate", opts.Logger)
	}
	s.byKey = tiercache.New(rdb, s.bus, prefix+"paywall:", tiercache.Config[[sha256.Size]byte, Paywall]{
		Name:       "key",
		Load:       s.loadByHash,
		Key:        func(h [sha256.Size]byte) string { return hex.EncodeToString(h[:]) },
		ParseKey:   parseHashKey,
		Shared:     true,
		LocalTTL:   opts.LocalTTL,
		RedisTTL:   opts.RedisTTL,
		MaxEntries: opts.MaxLocalEntries,
		Logger:     opts.Logger,
	})
	s.byUser = tiercache.New(rdb, s.bus, prefix+"paywall:", tiercache.Config[authKey, Authorization]{
		Name:       "auth",
		Load:       s.loadAuthorization,
		Key:        func(k authKey) string { return k.paywallID + ":" + k.userID },
		ParseKey:   parseAuthKey,
		Shared:     true,
		LocalTTL:   opts.LocalTTL,
		RedisTTL:   opts.RedisTTL,
		MaxEntries: opts.MaxLocalEntries,
		Logger:     opts.Logger,
	})
	return s
}

func parseHashKey(s string) ([sha256.Size]byte, bool) {
	var h [sha256.Size]byte
	n, err := hex.Decode(h[:], []byte(s))
	return h, err == nil && n == sha256.Size
}

func parseAuthKey(s string) (authKey, bool) {
	pw, user, ok := strings.Cut(s, ":") // a paywall id is a UUID: no ':'
	return authKey{pw, user}, ok
}

// WaitReady waits until this replica listens for invalidations (immediately without Redis).
func (s *Store) WaitReady(ctx context.Context) error { return s.bus.WaitReady(ctx) }

// Close stops the invalidation listener.
func (s *Store) Close() error { return s.bus.Close() }

const paywallColumns = `id::TEXT, name, owner, mode, upstream, upstream_key, markup_bps, default_max_tokens,
	min_completion_tokens, template_authorize, template_topup, payout_address, max_concurrent,
	rate_per_minute, created_at`

// scanPaywall reads a row of paywallColumns. A built-in paywall's Upstream is always the
// configured one (Options.BuiltinUpstream), whatever was stored when it was created, so that
// changing the configuration re-routes every built-in paywall.
func (s *Store) scanPaywall(row pgx.Row) (Paywall, error) {
	var p Paywall
	var maxConc, rate int64
	err := row.Scan(&p.ID, &p.Name, &p.Owner, &p.Mode, &p.Upstream, &p.UpstreamKey, &p.MarkupBps,
		&p.DefaultMaxTokens, &p.MinCompletionTokens, &p.Templates.Authorize, &p.Templates.TopUp,
		&p.PayoutAddress, &maxConc, &rate, &p.CreatedAt)
	p.MaxConcurrent, p.RatePerMinute = int(maxConc), int(rate)
	p.CreatedAt = p.CreatedAt.UTC()
	if p.Mode == ModeBuiltin {
		p.Upstream = s.opts.BuiltinUpstream
	}
	return p, err
}

// Create stores a new paywall and returns it, defaults filled in, with its API key — shown
// this once: only its SHA-256 is kept. A BYOK paywall's credential is stored sealed.
// It can return: ErrInvalid, ErrNoSecretsKey (a BYOK paywall without Options.SecretsKey).
func (s *Store) Create(ctx context.Context, p Paywall) (Paywall, string, error) {
	p, err := p.normalize(s.opts.BuiltinUpstream, s.opts.PlatformFeeBps)
	if err != nil {
		return Paywall{}, "", err
	}
	key, hash, err := newKey()
	if err != nil {
		return Paywall{}, "", err
	}
	if p.Mode == ModeBYOK && s.opts.SecretsKey == nil {
		return Paywall{}, "", fmt.Errorf("%w: a BYOK paywall's upstream credential cannot be stored without it", ErrNoSecretsKey)
	}
	// The id is made here, not by the database: a sealed credential is bound to it.
	p.ID = newPaywallID()
	stored := p
	if err := s.sealCredential(&stored); err != nil {
		return Paywall{}, "", err
	}
	row := s.pool.QueryRow(ctx, `INSERT INTO paywalls (id, name, owner, mode, upstream, upstream_key,
		markup_bps, default_max_tokens, min_completion_tokens, template_authorize, template_topup,
		payout_address, max_concurrent, rate_per_minute, key_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		RETURNING created_at`,
		p.ID, p.Name, p.Owner, p.Mode, p.Upstream, stored.UpstreamKey, p.MarkupBps, p.DefaultMaxTokens,
		p.MinCompletionTokens, p.Templates.Authorize, p.Templates.TopUp, p.PayoutAddress,
		int64(p.MaxConcurrent), int64(p.RatePerMinute), hash[:])
	if err := row.Scan(&p.CreatedAt); err != nil {
		return Paywall{}, "", fmt.Errorf("paywall: create: %w", err)
	}
	p.CreatedAt = p.CreatedAt.UTC()
	// A key that was presented before it existed may be cached as unknown.
	s.byKey.Invalidate(ctx, hash)
	return p, key, nil
}

// ByKey returns the paywall of an API key, its credential opened. It is on every request's
// path: a cached answer costs a hash and two map lookups (the caches hold the credential
// sealed; what it opens to is remembered in-process).
// It can return: ErrUnknownKey, ErrNoSecretsKey, ErrSealedCredential.
func (s *Store) ByKey(ctx context.Context, apiKey string) (Paywall, error) {
	h, ok := hashKey(apiKey)
	if !ok {
		return Paywall{}, ErrUnknownKey
	}
	p, found, err := s.byKey.Get(ctx, h)
	if err == nil && found && p.Mode == ModeBYOK && !isSealed(p.UpstreamKey) {
		// A Redis copy written before credentials were sealed: drop it (everywhere) and read
		// the database, which loadByHash only accepts sealed.
		s.byKey.Invalidate(ctx, h)
		p, found, err = s.byKey.Get(ctx, h)
	}
	if err != nil {
		return Paywall{}, err
	}
	if !found {
		return Paywall{}, ErrUnknownKey
	}
	if err := s.openCredential(&p); err != nil {
		return Paywall{}, err
	}
	return p, nil
}

func (s *Store) loadByHash(ctx context.Context, h [sha256.Size]byte) (Paywall, bool, error) {
	p, err := s.scanPaywall(s.pool.QueryRow(ctx, `SELECT `+paywallColumns+` FROM paywalls WHERE key_hash = $1`, h[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return Paywall{}, false, nil
	}
	if err != nil {
		return Paywall{}, false, fmt.Errorf("paywall: by key: %w", err)
	}
	if p.Mode == ModeBYOK && !isSealed(p.UpstreamKey) {
		// Never into the caches: Redis must not hold a plaintext credential.
		return Paywall{}, false, s.openCredential(&p)
	}
	return p, true, nil
}

// Get returns a paywall, its credential opened.
// It can return: ErrNotFound, ErrNoSecretsKey, ErrSealedCredential.
func (s *Store) Get(ctx context.Context, id string) (Paywall, error) {
	id, ok := normalizeID(id)
	if !ok {
		return Paywall{}, fmt.Errorf("%w: %q is not a paywall id", ErrNotFound, id)
	}
	p, err := s.scanPaywall(s.pool.QueryRow(ctx, `SELECT `+paywallColumns+` FROM paywalls WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Paywall{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Paywall{}, fmt.Errorf("paywall: get: %w", err)
	}
	if err := s.openCredential(&p); err != nil {
		return Paywall{}, err
	}
	return p, nil
}

// List returns every paywall, oldest first, with BYOK credentials left out (UpstreamKey
// empty): listing needs no secrets key, and one credential that does not open cannot hide
// the others (Get opens one; CheckCredentials checks them all).
func (s *Store) List(ctx context.Context) ([]Paywall, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+paywallColumns+` FROM paywalls ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("paywall: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Paywall, error) { return s.scanPaywall(r) })
	if err != nil {
		return nil, fmt.Errorf("paywall: list: %w", err)
	}
	for i := range out {
		out[i].UpstreamKey = ""
	}
	return out, nil
}

// RotateKey gives a paywall a new API key, shown this once; the old key stops working on
// every replica (within milliseconds, at worst Options.LocalTTL).
// It can return: ErrNotFound.
func (s *Store) RotateKey(ctx context.Context, id string) (string, error) {
	id, ok := normalizeID(id)
	if !ok {
		return "", fmt.Errorf("%w: %q is not a paywall id", ErrNotFound, id)
	}
	key, hash, err := newKey()
	if err != nil {
		return "", err
	}
	var old []byte
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT key_hash FROM paywalls WHERE id = $1 FOR UPDATE`, id).Scan(&old); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE paywalls SET key_hash = $2, updated_at = now() WHERE id = $1`, id, hash[:])
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return "", fmt.Errorf("paywall: rotate key: %w", err)
	}
	s.byKey.Invalidate(ctx, [sha256.Size]byte(old), hash)
	return key, nil
}

// SetMarkup changes a paywall's markup (basis points over the model price).
// It can return: ErrNotFound, ErrInvalid (out of range, or a built-in paywall's markup that
// cannot cover the platform fee), ErrNoSecretsKey, ErrSealedCredential (a BYOK paywall's
// credential is sealed again with a new nonce, so it must open).
func (s *Store) SetMarkup(ctx context.Context, id string, bps int64) error {
	_, err := s.update(ctx, id, true, func(p *Paywall) { p.MarkupBps = bps })
	return err
}

// SetUpstreamKey replaces a BYOK paywall's upstream credential, sealed under the current secrets
// key. The stored one is not opened first: this is how a credential that no longer opens (the
// secrets key was lost or replaced) is set again. Every replica uses the new one within a
// second.
// It can return: ErrNotFound, ErrInvalid (a built-in paywall, an empty or malformed credential),
// ErrNoSecretsKey.
func (s *Store) SetUpstreamKey(ctx context.Context, id, credential string) error {
	_, err := s.update(ctx, id, false, func(p *Paywall) { p.UpstreamKey = credential })
	return err
}

// Update changes a paywall's settings to those of p (all but ID, Mode and CreatedAt, which
// cannot change, and a built-in paywall's Upstream, which is the configured one) and returns
// the stored result. A BYOK credential is stored sealed; the stored one is not opened, since
// p's replaces it.
// It can return: ErrNotFound, ErrInvalid, ErrNoSecretsKey.
func (s *Store) Update(ctx context.Context, p Paywall) (Paywall, error) {
	return s.update(ctx, p.ID, false, func(cur *Paywall) {
		id, mode, created := cur.ID, cur.Mode, cur.CreatedAt
		*cur = p
		cur.ID, cur.Mode, cur.CreatedAt = id, mode, created
		if mode == ModeBuiltin {
			cur.Upstream = s.opts.BuiltinUpstream
		}
	})
}

// update reads a paywall under a lock, applies change, checks and writes the result. With
// open false the stored credential is not opened (change must set a new one).
func (s *Store) update(ctx context.Context, id string, open bool, change func(*Paywall)) (Paywall, error) {
	id, ok := normalizeID(id)
	if !ok {
		return Paywall{}, fmt.Errorf("%w: %q is not a paywall id", ErrNotFound, id)
	}
	var out Paywall
	var hash []byte
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.scanPaywall(tx.QueryRow(ctx, `SELECT `+paywallColumns+` FROM paywalls WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if open {
			if err := s.openCredential(&cur); err != nil {
				return err
			}
		} else {
			cur.UpstreamKey = ""
		}
		change(&cur)
		if out, err = cur.normalize(s.opts.BuiltinUpstream, s.opts.PlatformFeeBps); err != nil {
			return err
		}
		stored := out
		if err := s.sealCredential(&stored); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE paywalls SET name = $2, owner = $3, upstream = $4, upstream_key = $5,
			markup_bps = $6, default_max_tokens = $7, min_completion_tokens = $8, template_authorize = $9,
			template_topup = $10, payout_address = $11, max_concurrent = $12, rate_per_minute = $13,
			updated_at = now()
			WHERE id = $1 RETURNING key_hash`,
			id, out.Name, out.Owner, out.Upstream, stored.UpstreamKey, out.MarkupBps, out.DefaultMaxTokens,
			out.MinCompletionTokens, out.Templates.Authorize, out.Templates.TopUp, out.PayoutAddress,
			int64(out.MaxConcurrent), int64(out.RatePerMinute)).Scan(&hash)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Paywall{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNoSecretsKey), errors.Is(err, ErrSealedCredential):
		return Paywall{}, err
	case err != nil:
		return Paywall{}, fmt.Errorf("paywall: update: %w", err)
	}
	s.byKey.Invalidate(ctx, [sha256.Size]byte(hash))
	return out, nil
}

// Authorization returns the wallet a paywall's user authorized. It is on every request's
// path: a cached answer costs a map lookup.
// It can return: ErrBadUserID, ErrNotAuthorized.
func (s *Store) Authorization(ctx context.Context, paywallID, userID string) (Authorization, error) {
	if err := ValidUserID(userID); err != nil {
		return Authorization{}, err
	}
	id, ok := normalizeID(paywallID)
	if !ok {
		return Authorization{}, ErrNotAuthorized
	}
	a, found, err := s.byUser.Get(ctx, authKey{id, userID})
	if err != nil {
		return Authorization{}, err
	}
	if !found {
		return Authorization{}, ErrNotAuthorized
	}
	return a, nil
}

// loadAuthorization reads a live authorization; k.paywallID is a normalized id.
func (s *Store) loadAuthorization(ctx context.Context, k authKey) (Authorization, bool, error) {
	a := Authorization{PaywallID: k.paywallID, UserID: k.userID}
	err := s.pool.QueryRow(ctx, `SELECT wallet, created_at FROM paywall_authorizations
		WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL`, k.paywallID, k.userID).Scan(&a.Wallet, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Authorization{}, false, nil
	}
	if err != nil {
		return Authorization{}, false, fmt.Errorf("paywall: authorization: %w", err)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, true, nil
}

// Authorize links a paywall's user to a wallet. Authorizing the same wallet again returns the
// existing link; another wallet replaces it (the old link is kept as revoked). The change
// takes effect on every replica within milliseconds (at worst Options.LocalTTL).
// It can return: ErrNotFound, ErrBadUserID, ErrBadWallet.
func (s *Store) Authorize(ctx context.Context, paywallID, userID, wallet string) (Authorization, error) {
	if err := ValidUserID(userID); err != nil {
		return Authorization{}, err
	}
	wallet, err := NormalizeWallet(wallet)
	if err != nil {
		return Authorization{}, err
	}
	id, ok := normalizeID(paywallID)
	if !ok {
		return Authorization{}, fmt.Errorf("%w: %q is not a paywall id", ErrNotFound, paywallID)
	}
	a := Authorization{PaywallID: id, UserID: userID, Wallet: wallet}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var curID, curWallet string
		err := tx.QueryRow(ctx, `SELECT id::TEXT, wallet, created_at FROM paywall_authorizations
			WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL FOR UPDATE`, id, userID).
			Scan(&curID, &curWallet, &a.CreatedAt)
		switch {
		case err == nil && curWallet == wallet:
			return nil
		case err == nil:
			if _, err := tx.Exec(ctx, `UPDATE paywall_authorizations SET revoked_at = now() WHERE id = $1`, curID); err != nil {
				return err
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO paywall_authorizations (paywall_id, user_id, wallet)
			VALUES ($1, $2, $3) RETURNING created_at`, id, userID, wallet).Scan(&a.CreatedAt)
	})
	if pgtx.Code(err) == "23503" { // foreign key: no such paywall
		return Authorization{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Authorization{}, fmt.Errorf("paywall: authorize: %w", err)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	s.byUser.Invalidate(ctx, authKey{id, userID})
	return a, nil
}

// Revoke ends a user's authorization of a paywall, on every replica within milliseconds (at
// worst Options.LocalTTL).
// It can return: ErrBadUserID, ErrNotAuthorized (there was none to revoke).
func (s *Store) Revoke(ctx context.Context, paywallID, userID string) error {
	if err := ValidUserID(userID); err != nil {
		return err
	}
	id, ok := normalizeID(paywallID)
	if !ok {
		return ErrNotAuthorized
	}
	tag, err := s.pool.Exec(ctx, `UPDATE paywall_authorizations SET revoked_at = now()
		WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL`, id, userID)
	if err != nil {
		return fmt.Errorf("paywall: revoke: %w", err)
	}
	// Invalidate even when nothing changed: a caller retrying a revocation whose invalidation
	// failed must not leave replicas with the old answer.
	s.byUser.Invalidate(ctx, authKey{id, userID})
	if tag.RowsAffected() == 0 {
		return ErrNotAuthorized
	}
	return nil
}

// inTx runs fn in a serializable transaction, retried whole (bounded, honouring ctx) on
// serialization failures, deadlocks, and unique violations (two first authorizations racing:
// the retry sees the winner). COMMIT's own error is returned, not ignored.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgtx.Run(ctx, s.pool, pgtx.Options{IsoLevel: pgx.Serializable, Attempts: maxTxAttempts, Retry: []string{"23505"}}, fn)
}

// normalizeID returns a paywall id (a UUID) in the database's lower-case form, or false when
// it is not one — so a malformed id is "not found" instead of a database error. An id already
// in that form is returned as is, without allocating (it is on the request path).
func normalizeID(id string) (string, bool) {
	if len(id) != 36 {
		return "", false
	}
	upper := false
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			upper = true
		default:
			return "", false
		}
	}
	if upper {
		return strings.ToLower(id), true
	}
	return id, true
}

// newPaywallID returns a random (version 4) UUID in the database's lower-case form.
func newPaywallID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error (it crashes the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CheckMarkups reports every built-in paywall whose markup cannot cover a platform fee of
// feeBps — for `tollgate serve` to call at start, because raising serve.fee_bps above a stored
// markup would make the developer's share of that paywall's charges negative (Split would
// then lower the fee instead). It returns nil when all is well.
// It can return: ErrInvalid (naming each paywall), pricing.ErrBadFee.
func (s *Store) CheckMarkups(ctx context.Context, feeBps int64) error {
	if err := pricing.CheckFee(feeBps); err != nil {
		return err
	}
	all, err := s.List(ctx)
	if err != nil {
		return err
	}
	var probs []error
	for _, p := range all {
		if p.Mode != ModeBuiltin {
			continue
		}
		if err := pricing.CheckBuiltinMarkup(p.MarkupBps, feeBps); err != nil {
			probs = append(probs, fmt.Errorf("paywall %s (%s): %w", p.ID, p.Name, err))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(probs...))
	}
	return nil
}
