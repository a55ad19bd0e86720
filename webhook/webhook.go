// Package webhook tells apps when money moves. It owns webhook_endpoints (one URL and sealed
// signing secret per paywall) and webhook_events (the outbox). It writes nothing to the
// ledger: events are read from it (the book of record) after they commit. An Outbox's Scan
// turns new transfers and finished payouts of paywalls that have a webhook into events, and its
// Deliver POSTs them, signed, until the app answers 2xx or a day has passed (at least once:
// receivers dedupe by the event id).
package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
)

// secretPurpose is what a sealed signing secret is bound to, besides its paywall.
const secretPurpose = "webhook signing_secret"

// Errors.
var (
	// ErrInvalidURL: the webhook URL is not an absolute https URL (http only for loopback hosts).
	ErrInvalidURL = errors.New("webhook: invalid URL")
	// ErrNoSecretsKey: paywall.secrets_key is not set, so no signing secret can be sealed.
	ErrNoSecretsKey = errors.New("webhook: paywall.secrets_key is not set; webhook signing secrets are sealed with it")
)

// Options tune an Outbox. The zero value is usable.
type Options struct {
	// Overlap is how far before its cursor each scan reads again (default 30s); see Scan.
	Overlap time.Duration
	// BackoffMin is the wait after the first failed attempt (default 10s); each failure
	// doubles it, up to BackoffMax (default 1h).
	BackoffMin, BackoffMax time.Duration
	// GiveUpAfter is how long after it was recorded an event is tried (default 24h); then it is
	// marked failed.
	GiveUpAfter time.Duration
	// Timeout bounds one POST (default 10s).
	Timeout time.Duration
	// Lease is how long a claimed event is left to its deliverer before another replica may
	// try it (default 1m; at least twice Timeout, so that it outlasts a POST and recording
	// its outcome).
	Lease time.Duration
	// Batch is how many events one Deliver claims at once (default 16); they are sent at once.
	Batch int
	// Interval is Run's pause between rounds (default 2s).
	Interval time.Duration
	// Keep is how long a finished event (delivered, failed or cancelled) stays in the outbox
	// before Prune deletes it (default 7 days): the outbox would otherwise keep a row, body
	// included, for every charged request forever. Scans reread only Overlap behind their
	// cursor, so a deleted event is never recorded again.
	Keep time.Duration
	// PreviousSecretsKeys open secrets sealed before a rotation of paywall.secrets_key.
	PreviousSecretsKeys []*paywall.SecretsKey
	// Client sends the POSTs (default: a plain http.Client); New uses a copy that never
	// follows redirects.
	Client  *http.Client
	Logger  *slog.Logger
	Metrics *Metrics
}

// Metrics count deliveries; register them in serve's registry with NewMetrics.
type Metrics struct {
	Deliveries *prometheus.CounterVec // result: delivered, retried, failed
	Backlog    prometheus.Gauge
}

// NewMetrics makes the webhook metrics and registers them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result: delivered (2xx), retried (failed, tried again later), failed (given up).",
		}, []string{"result"}),
		Backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_webhook_backlog", Help: "Webhook events not delivered yet (pending in the outbox).",
		}),
	}
	for _, r := range []string{"delivered", "retried", "failed"} {
		m.Deliveries.WithLabelValues(r)
	}
	reg.MustRegister(m.Deliveries, m.Backlog)
	return m
}

// Outbox produces and delivers webhook events. It is safe for concurrent use, and every
// replica may run one on the same database.
type Outbox struct {
	pool    *pgxpool.Pool
	ledger  *ledger.Ledger
	secrets *paywall.SecretsKey // nil: secrets can be neither sealed nor opened
	opts    Options
}

// New returns an Outbox on a migrated database. secrets is paywall.secrets_key (may be nil).
func New(pool *pgxpool.Pool, l *ledger.Ledger, secrets *paywall.SecretsKey, opts Options) *Outbox {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.Overlap, 30*time.Second)
	def(&opts.BackoffMin, 10*time.Second)
	def(&opts.BackoffMax, time.Hour)
	def(&opts.GiveUpAfter, 24*time.Hour)
	def(&opts.Timeout, 10*time.Second)
	def(&opts.Lease, time.Minute)
	def(&opts.Interval, 2*time.Second)
	def(&opts.Keep, 7*24*time.Hour)
	// A shorter lease would let another deliverer send an event whose POST is still waiting
	// for its answer.
	opts.Lease = max(opts.Lease, 2*opts.Timeout)
	if opts.Batch <= 0 {
		opts.Batch = 16
	}
	client := http.Client{}
	if opts.Client != nil {
		client = *opts.Client // a copy: the caller's client may serve others, who follow redirects
	}
	// A redirect is an answer other than 2xx: retried, never followed with the signed body
	// (whose answer would deliver the event), whoever made the client.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.Client = &client
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Outbox{pool: pool, ledger: l, secrets: secrets, opts: opts}
}

// ValidateURL checks a webhook URL: absolute https with a host, or http to a loopback host
// (localhost, 127.0.0.0/8, ::1: tests and development); no user info (it would be a
// credential in the configuration and the logs), no fragment and a port, if any, from 1 to
// 65535; at most 2,048 bytes.
// It can return: ErrInvalidURL, saying what is wrong.
func ValidateURL(raw string) error {
	if len(raw) > 2048 {
		return fmt.Errorf("%w: %d bytes, at most 2048", ErrInvalidURL, len(raw))
	}
	u, err := url.Parse(raw)
	if err != nil { // the message quotes the URL already
		return fmt.Errorf("%w: %q does not parse (%w); use one such as https://app.example.com/tollgate/webhook", ErrInvalidURL, raw, withoutURL(err))
	}
	if !u.IsAbs() || u.Opaque != "" {
		return fmt.Errorf("%w: %q is not an absolute URL such as https://app.example.com/tollgate/webhook", ErrInvalidURL, raw)
	}
	host := u.Hostname()
	// url.Parse checks that a port is digits, not that it is one: every POST to port 0 or
	// 99999 would fail for a day.
	port, portErr := strconv.Atoi(u.Port())
	switch {
	case host == "":
		return fmt.Errorf("%w: %q has no host", ErrInvalidURL, raw)
	case u.Port() != "" && (portErr != nil || port < 1 || port > 65535):
		return fmt.Errorf("%w: %q has port %s; a port is 1 to 65535", ErrInvalidURL, raw, u.Port())
	case u.User != nil:
		return fmt.Errorf("%w: %q carries user info; authenticate requests by their signature instead", ErrInvalidURL, raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("%w: %q has a fragment", ErrInvalidURL, raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(host):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("%w: %q must be https (http only for localhost and loopback addresses)", ErrInvalidURL, raw)
	}
	return fmt.Errorf("%w: %q must be https, not %s", ErrInvalidURL, raw, u.Scheme)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SetEndpoint sends paywallID's events to rawURL from now on (events of money that moved
// before are not sent, but for the Overlap before it, which the first scan reads again), with
// a fresh signing secret, which it returns (stored sealed: shown this once). Setting it again
// replaces the URL and the secret; the ledger is read on from where it was.
// It can return: ErrInvalidURL, ErrNoSecretsKey.
func (o *Outbox) SetEndpoint(ctx context.Context, paywallID, rawURL string) (string, error) {
	if err := ValidateURL(rawURL); err != nil {
		return "", err
	}
	if o.secrets == nil {
		return "", ErrNoSecretsKey
	}
	secret := newSecret()
	_, err := o.pool.Exec(ctx, `INSERT INTO webhook_endpoints (paywall, url, secret_sealed) VALUES ($1, $2, $3)
		ON CONFLICT (paywall) DO UPDATE SET url = excluded.url, secret_sealed = excluded.secret_sealed`,
		paywallID, rawURL, o.secrets.Seal(secretPurpose, paywallID, secret))
	if err != nil {
		return "", fmt.Errorf("webhook: store the endpoint: %w", err)
	}
	return secret, nil
}

// RemoveEndpoint turns paywallID's webhook off: nothing more is recorded for it, and its events
// not delivered yet are cancelled. It reports whether there was one.
func (o *Outbox) RemoveEndpoint(ctx context.Context, paywallID string) (bool, error) {
	var removed bool
	err := pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM webhook_endpoints WHERE paywall = $1`, paywallID)
		if err != nil {
			return err
		}
		removed = tag.RowsAffected() > 0
		_, err = tx.Exec(ctx, `UPDATE webhook_events SET status = 'cancelled', finished_at = now(), last_error = 'webhook turned off'
			WHERE paywall = $1 AND status = 'pending'`, paywallID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("webhook: remove the endpoint: %w", err)
	}
	return removed, nil
}

// ResealSecrets seals again with the secrets key every signing secret that only a previous key
// (PreviousSecretsKeys) opens, during a rotation of paywall.secrets_key, and reports how many
// it sealed again. Each update is conditional on the value it read, so a secret replaced
// meanwhile (set-webhook) is left as it is; running it again does nothing. A secret no key
// opens is left as it is; the others are sealed again all the same, and then every such
// paywall is named in one *paywall.NoKeyOpensError (with the count of what was sealed again).
// It can return: *paywall.NoKeyOpensError (a paywall.ErrSealedCredential).
func (o *Outbox) ResealSecrets(ctx context.Context) (int, error) {
	if o.secrets == nil || len(o.opts.PreviousSecretsKeys) == 0 {
		return 0, nil
	}
	rows, err := o.pool.Query(ctx, `SELECT paywall, secret_sealed FROM webhook_endpoints ORDER BY created_at, paywall`)
	if err != nil {
		return 0, fmt.Errorf("webhook: read the signing secrets: %w", err)
	}
	type endpoint struct{ Paywall, Sealed string }
	eps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[endpoint])
	if err != nil {
		return 0, fmt.Errorf("webhook: read the signing secrets: %w", err)
	}
	resealed := 0
	var noKey []string
	for _, ep := range eps {
		secret, current, err := paywall.OpenSealed(o.secrets, o.opts.PreviousSecretsKeys, secretPurpose, ep.Paywall, ep.Sealed)
		switch {
		case err != nil:
			noKey = append(noKey, ep.Paywall)
			continue
		case current:
			continue
		}
		tag, err := o.pool.Exec(ctx, `UPDATE webhook_endpoints SET secret_sealed = $3 WHERE paywall = $1 AND secret_sealed = $2`,
			ep.Paywall, ep.Sealed, o.secrets.Seal(secretPurpose, ep.Paywall, secret))
		if err != nil {
			return resealed, fmt.Errorf("webhook: seal the signing secret of paywall %s again: %w", ep.Paywall, err)
		}
		resealed += int(tag.RowsAffected())
	}
	if len(noKey) > 0 {
		return resealed, fmt.Errorf("webhook: seal the signing secrets again: %w", &paywall.NoKeyOpensError{What: "webhook signing secret", Paywalls: noKey})
	}
	return resealed, nil
}

// Run scans and delivers every Interval until ctx ends, and keeps the backlog gauge current.
func (o *Outbox) Run(ctx context.Context) {
	wait.Every(ctx, o.opts.Interval, func() { o.round(ctx) })
}

// round is one scan, then deliveries until nothing is due (at most 50 batches, so that a
// long backlog leaves time to scan).
func (o *Outbox) round(ctx context.Context) {
	if _, err := o.Scan(ctx); err != nil && ctx.Err() == nil {
		o.opts.Logger.Warn("webhook: scan failed", "err", err)
	}
	for range 50 {
		n, err := o.Deliver(ctx)
		if err != nil && ctx.Err() == nil {
			o.opts.Logger.Warn("webhook: delivery round failed", "err", err)
		}
		if err != nil || n < o.opts.Batch {
			break
		}
	}
	if _, err := o.Prune(ctx); err != nil && ctx.Err() == nil {
		o.opts.Logger.Warn("webhook: pruning finished events failed", "err", err)
	}
	if o.opts.Metrics != nil {
		var n int64
		if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_events WHERE status = 'pending'`).Scan(&n); err == nil {
			o.opts.Metrics.Backlog.Set(float64(n))
		}
	}
}

// pruneBatch is how many finished events one statement of Prune deletes, and pruneBatches
// how many statements one Prune runs at most (Run prunes every round, so a backlog drains
// over a few rounds without one long transaction).
const (
	pruneBatch   = 500
	pruneBatches = 10
)

// Prune deletes the events that finished more than Keep ago, by the database's clock, and
// reports how many. Pending events are never deleted. Every replica may prune at once.
func (o *Outbox) Prune(ctx context.Context) (int, error) {
	deleted := 0
	for range pruneBatches {
		tag, err := o.pool.Exec(ctx, `DELETE FROM webhook_events WHERE id IN (
			SELECT id FROM webhook_events WHERE finished_at < now() - $1::INTERVAL AND status <> 'pending' LIMIT $2)`, micros(o.opts.Keep), pruneBatch)
		if err != nil {
			return deleted, fmt.Errorf("webhook: prune finished events: %w", err)
		}
		deleted += int(tag.RowsAffected())
		if tag.RowsAffected() < pruneBatch {
			break
		}
	}
	return deleted, nil
}

// micros spells a duration for `$n::INTERVAL`, the same on PostgreSQL and CockroachDB.
func micros(d time.Duration) string { return fmt.Sprintf("%d microseconds", d.Microseconds()) }

// withoutURL is err without the *url.Error around it, which only adds the operation and the URL:
// what is wrong, for a message that names the URL already or must not (the paywall's).
func withoutURL(err error) error {
	if uerr, ok := errors.AsType[*url.Error](err); ok {
		return uerr.Err
	}
	return err
}
