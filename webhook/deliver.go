package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/paywall"
)

// claimed is an event a deliverer has leased, with where it goes.
type claimed struct {
	ID, Paywall, Type, Body string
	Attempts                int
	URL, Sealed             *string // nil: the webhook was turned off
}

// Deliver claims up to Batch due events and POSTs them at once, and reports how many it
// claimed. Claiming is one short transaction (SELECT … FOR UPDATE SKIP LOCKED, then pushing
// each event's next attempt a Lease ahead), so replicas never take the same event and none
// waits for another; the POSTs happen outside any transaction. A deliverer that dies leaves
// its events to be claimed again when the lease ends (at least once).
func (o *Outbox) Deliver(ctx context.Context) (int, error) {
	var events []claimed
	err := pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id FROM webhook_events WHERE status = 'pending' AND next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED`, o.opts.Batch)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(ids) == 0 {
			return err
		}
		rows, err = tx.Query(ctx, `WITH c AS (
				UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = now() + $2::INTERVAL
				WHERE id = ANY($1) RETURNING id, paywall, type, body, attempts)
			SELECT c.id, c.paywall, c.type, c.body, c.attempts, w.url, w.secret_sealed
			FROM c LEFT JOIN webhook_endpoints w ON w.paywall = c.paywall`, ids, micros(o.opts.Lease))
		if err != nil {
			return err
		}
		events, err = pgx.CollectRows(rows, pgx.RowToStructByPos[claimed])
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("webhook: claim events: %w", err)
	}
	var wg sync.WaitGroup
	for _, ev := range events {
		wg.Go(func() { o.deliverOne(ctx, ev) })
	}
	wg.Wait()
	return len(events), nil
}

// deliverOne sends one claimed event and records the outcome.
func (o *Outbox) deliverOne(ctx context.Context, ev claimed) {
	log := o.opts.Logger.With("event", ev.ID, "paywall", ev.Paywall, "type", ev.Type, "attempt", ev.Attempts)
	if ev.URL == nil {
		if _, err := o.pool.Exec(ctx, `UPDATE webhook_events SET status = 'cancelled', finished_at = now(), last_error = 'webhook turned off'
			WHERE id = $1 AND status = 'pending'`, ev.ID); err != nil {
			log.Warn("webhook: cancel event", "err", err)
		}
		return
	}
	secret, _, err := paywall.OpenSealed(o.secrets, o.opts.PreviousSecretsKeys, secretPurpose, ev.Paywall, *ev.Sealed)
	if err != nil {
		// Not the app's fault: the operator's key is wrong or missing. Retried like a failure.
		o.failed(ctx, log, ev, "the signing secret: "+err.Error())
		return
	}
	status, err := o.post(ctx, *ev.URL, secret, ev)
	switch {
	case err != nil:
		o.failed(ctx, log, ev, err.Error())
	case status < 200 || status > 299:
		o.failed(ctx, log, ev, "answered "+strconv.Itoa(status))
	default:
		// Also an event cancelled while it was being sent (its webhook turned off meanwhile):
		// the app has it.
		if _, err := o.pool.Exec(ctx, `UPDATE webhook_events SET status = 'delivered', finished_at = now(), last_error = NULL
			WHERE id = $1 AND status IN ('pending', 'cancelled')`, ev.ID); err != nil {
			log.Warn("webhook: record a delivery (it will be sent again)", "err", err)
			return
		}
		o.count("delivered")
	}
}

// post sends the body, signed now, and returns the answer's status. Its body is read (a little)
// and dropped, so that the connection is reused.
func (o *Outbox) post(ctx context.Context, target, secret string, ev claimed) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.opts.Timeout)
	defer cancel()
	body := []byte(ev.Body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tollgate-Webhooks/1")
	req.Header.Set("Tollgate-Event-Id", ev.ID)
	req.Header.Set("Tollgate-Signature", Signature(secret, time.Now(), body))
	resp, err := o.opts.Client.Do(req)
	if err != nil {
		var uerr interface{ Timeout() bool }
		if errors.As(err, &uerr) && uerr.Timeout() {
			return 0, fmt.Errorf("no answer within %s", o.opts.Timeout)
		}
		// Why (no such host, a certificate, a refused connection) is what the app's developer
		// must fix; the URL, which the error names too, is the paywall's and is dropped.
		return 0, fmt.Errorf("could not reach the URL: %w", withoutURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// failed schedules the next attempt after an exponential backoff, or gives the event up when
// that attempt would come later than GiveUpAfter after it was recorded.
func (o *Outbox) failed(ctx context.Context, log *slog.Logger, ev claimed, why string) {
	backoff := o.opts.BackoffMin
	for i := 1; i < ev.Attempts && backoff < o.opts.BackoffMax; i++ {
		backoff *= 2
	}
	backoff = min(backoff, o.opts.BackoffMax)
	var status string
	err := o.pool.QueryRow(ctx, `UPDATE webhook_events SET
			status = CASE WHEN now() + $2::INTERVAL > created_at + $3::INTERVAL THEN 'failed' ELSE 'pending' END,
			finished_at = CASE WHEN now() + $2::INTERVAL > created_at + $3::INTERVAL THEN now() ELSE NULL END,
			next_attempt_at = now() + $2::INTERVAL, last_error = $4
		WHERE id = $1 AND status = 'pending' RETURNING status`,
		ev.ID, micros(backoff), micros(o.opts.GiveUpAfter), why).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows): // turned off meanwhile
	case err != nil:
		log.Warn("webhook: record a failed attempt (retried when its lease ends)", "err", err, "why", why)
	case status == "failed":
		log.Error("webhook: event given up", "why", why, "after", o.opts.GiveUpAfter)
		o.count("failed")
	default:
		log.Warn("webhook: delivery failed; will retry", "why", why, "retry_in", backoff.Round(time.Millisecond))
		o.count("retried")
	}
}

func (o *Outbox) count(result string) {
	if o.opts.Metrics != nil {
		o.opts.Metrics.Deliveries.WithLabelValues(result).Inc()
	}
}
