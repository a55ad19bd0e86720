package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/pricing"
)

// Event types.
const (
	EventChargeCreated  = "charge.created"  // a manual charge
	EventRequestCharged = "request.charged" // a request's capture
	EventChargeRefunded = "charge.refunded" // a reversal of a charge or request
	EventPayoutSettled  = "payout.settled"
	EventPayoutFailed   = "payout.failed"
)

// Event is what a webhook POSTs. ID is stable (type:source id): every replica and every rescan
// makes the same one, and receivers dedupe by it.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"` // when the money moved (the ledger's time)
	Paywall   string    `json:"paywall"`
	Data      any       `json:"data"`
}

// chargeData is the data of charge.created and request.charged.
type chargeData struct {
	ChargeID             string            `json:"charge_id"`
	User                 string            `json:"user"`
	Wallet               string            `json:"wallet"`
	Amount               string            `json:"amount"` // what the wallet paid
	AmountMicro          int64             `json:"amount_micro"`
	DeveloperAmount      string            `json:"developer_amount"` // the paywall's share
	DeveloperAmountMicro int64             `json:"developer_amount_micro"`
	Currency             string            `json:"currency"`
	Description          string            `json:"description,omitempty"`
	Metadata             map[string]string `json:"metadata,omitempty"`
	RequestID            string            `json:"request_id,omitempty"`
	API                  string            `json:"api,omitempty"` // chat, responses, embeddings, completions
	Model                string            `json:"model,omitempty"`
	PromptTokens         *int64            `json:"prompt_tokens,omitempty"`
	CompletionTokens     *int64            `json:"completion_tokens,omitempty"`
	CachedTokens         *int64            `json:"cached_tokens,omitempty"`
	ReasoningTokens      *int64            `json:"reasoning_tokens,omitempty"`
	Estimated            *bool             `json:"estimated,omitempty"`
}

type refundData struct {
	RefundID             string `json:"refund_id"`
	ChargeID             string `json:"charge_id"`
	User                 string `json:"user"`
	Wallet               string `json:"wallet"`
	Amount               string `json:"amount"` // what the wallet got back
	AmountMicro          int64  `json:"amount_micro"`
	DeveloperAmount      string `json:"developer_amount"` // what the paywall's earnings gave back
	DeveloperAmountMicro int64  `json:"developer_amount_micro"`
	Currency             string `json:"currency"`
	Reason               string `json:"reason,omitempty"`
}

type payoutData struct {
	PayoutID    string `json:"payout_id"`
	Amount      string `json:"amount"`
	AmountMicro int64  `json:"amount_micro"`
	Currency    string `json:"currency"`
	ChainID     string `json:"chain_id"`
	To          string `json:"to"`
	TxHash      string `json:"tx_hash,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

const scanPage = 500

// Scan records, for every paywall with a webhook, the events of what moved since its cursor,
// and reports how many it recorded. Every replica may scan at once: an event's id is its
// primary key and it is inserted with ON CONFLICT DO NOTHING, so each is recorded once.
//
// Why the overlap: a transfer's created_at is its transaction's start (now()), but it becomes
// visible at its commit, later. A transaction that started before a scan and committed after it
// has a created_at below the cursor that scan left. So each scan reads again from Overlap (30 s)
// before the cursor: a transfer committing within 30 s of its start is still found; the rows
// read twice insert nothing. Ledger transactions are short (seconds at most, with retries);
// one longer than the overlap would be missed (TestScanOverlap shows both sides).
func (o *Outbox) Scan(ctx context.Context) (int, error) {
	// Start is the database's clock (the one that dates transfers) as this scan begins:
	// everything that committed before it is read by this scan; what committed after it, by the
	// next (overlap).
	rows, err := o.pool.Query(ctx, `SELECT paywall, scanned_to, now() FROM webhook_endpoints ORDER BY paywall`)
	if err != nil {
		return 0, fmt.Errorf("webhook: read the endpoints: %w", err)
	}
	type cursor struct {
		Paywall   string
		At, Start time.Time
	}
	cursors, err := pgx.CollectRows(rows, pgx.RowToStructByPos[cursor])
	if err != nil {
		return 0, fmt.Errorf("webhook: read the endpoints: %w", err)
	}
	// One paywall's failure (its cursor then stays, so the next scan reads its window again)
	// does not hold up the others'.
	total := 0
	var errs []error
	for _, c := range cursors {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		n, err := o.scanPaywall(ctx, c.Paywall, c.At, c.Start)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook: scan paywall %s: %w", c.Paywall, err))
		}
	}
	return total, errors.Join(errs...)
}

func (o *Outbox) scanPaywall(ctx context.Context, paywallID string, cursor, start time.Time) (int, error) {
	from := cursor.Add(-o.opts.Overlap)
	n, err := o.scanTransfers(ctx, paywallID, from)
	if err != nil {
		return n, err
	}
	m, err := o.scanPayouts(ctx, paywallID, from)
	if err != nil {
		return n + m, err
	}
	// Monotonic: a slower replica's older start never moves the cursor back.
	_, err = o.pool.Exec(ctx, `UPDATE webhook_endpoints SET scanned_to = $2 WHERE paywall = $1 AND scanned_to < $2`, paywallID, start)
	return n + m, err
}

// scanTransfers reads the transfers that moved the paywall's earnings since from, through the
// entries' (kind, ref, created_at) index, in pages.
func (o *Outbox) scanTransfers(ctx context.Context, paywallID string, from time.Time) (int, error) {
	after, afterID, recorded := from, "00000000-0000-0000-0000-000000000000", 0
	for {
		rows, err := o.pool.Query(ctx, `SELECT e.created_at, e.transfer_id::TEXT, t.kind
			FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
			WHERE e.kind = 'earnings' AND e.ref = $1 AND (e.created_at, e.transfer_id) > ($2, $3::UUID)
			  AND t.kind IN ('capture', 'charge', 'reversal')
			ORDER BY e.created_at, e.transfer_id LIMIT $4`, paywallID, after, afterID, scanPage)
		if err != nil {
			return recorded, err
		}
		type found struct {
			At   time.Time
			ID   string
			Kind string
		}
		page, err := pgx.CollectRows(rows, pgx.RowToStructByPos[found])
		if err != nil {
			return recorded, err
		}
		ids := make([]string, 0, len(page))
		for _, f := range page {
			ids = append(ids, eventID(typeOf(ledger.TransferKind(f.Kind)), f.ID))
		}
		known, err := o.existing(ctx, ids)
		if err != nil {
			return recorded, err
		}
		for i, f := range page {
			if known[ids[i]] {
				continue
			}
			t, err := o.ledger.GetTransfer(ctx, f.ID)
			if err != nil {
				return recorded, err
			}
			ev, ok := transferEvent(t, paywallID)
			if !ok {
				continue
			}
			n, err := o.record(ctx, ev)
			recorded += n
			if err != nil {
				return recorded, err
			}
		}
		if len(page) < scanPage {
			return recorded, nil
		}
		after, afterID = page[len(page)-1].At, page[len(page)-1].ID
	}
}

// scanPayouts reads the paywall's payouts settled or failed since from. A paywall has few
// payouts (a daily cap), read through the (paywall, created_at) index.
func (o *Outbox) scanPayouts(ctx context.Context, paywallID string, from time.Time) (int, error) {
	rows, err := o.pool.Query(ctx, `SELECT id::TEXT, status, amount, chain_id, to_address, COALESCE(tx_hash, ''), COALESCE(reason, ''), updated_at
		FROM ledger_payouts WHERE paywall = $1 AND status IN ('settled', 'failed') AND updated_at >= $2`, paywallID, from)
	if err != nil {
		return 0, err
	}
	type payout struct {
		ID, Status string
		Amount     int64
		Chain, To  string
		Tx, Reason string
		FinishedAt time.Time
	}
	ps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[payout])
	if err != nil {
		return 0, err
	}
	recorded := 0
	for _, p := range ps {
		typ := EventPayoutSettled
		if p.Status == string(ledger.PayoutFailed) {
			typ = EventPayoutFailed
		}
		n, err := o.record(ctx, Event{ID: eventID(typ, p.ID), Type: typ, CreatedAt: p.FinishedAt.UTC(), Paywall: paywallID,
			Data: payoutData{PayoutID: p.ID, Amount: pricing.FormatUSDC(p.Amount), AmountMicro: p.Amount, Currency: "USDC",
				ChainID: p.Chain, To: p.To, TxHash: p.Tx, Reason: p.Reason}})
		recorded += n
		if err != nil {
			return recorded, err
		}
	}
	return recorded, nil
}

// existing returns which of ids the outbox holds already, so a rescan reads no transfer twice.
func (o *Outbox) existing(ctx context.Context, ids []string) (map[string]bool, error) {
	known := map[string]bool{}
	if len(ids) == 0 {
		return known, nil
	}
	rows, err := o.pool.Query(ctx, `SELECT id FROM webhook_events WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, id := range got {
		known[id] = true
	}
	return known, err
}

// record inserts ev into the outbox unless it is there; it reports 1 if it inserted it.
func (o *Outbox) record(ctx context.Context, ev Event) (int, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return 0, err
	}
	tag, err := o.pool.Exec(ctx, `INSERT INTO webhook_events (id, paywall, type, body) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO NOTHING`, ev.ID, ev.Paywall, ev.Type, string(body))
	return int(tag.RowsAffected()), err
}

func eventID(typ, source string) string { return typ + ":" + source }

func typeOf(k ledger.TransferKind) string {
	switch k {
	case ledger.KindCharge:
		return EventChargeCreated
	case ledger.KindCapture:
		return EventRequestCharged
	case ledger.KindReversal:
		return EventChargeRefunded
	}
	return ""
}

// transferEvent makes the event of a transfer of paywallID's, from its entries and metadata;
// ok is false for a transfer that is not the paywall's charge, request or refund.
func transferEvent(t ledger.Transfer, paywallID string) (Event, bool) {
	typ := typeOf(t.Kind)
	if typ == "" || t.Metadata[ledger.MetaPaywall] != paywallID {
		return Event{}, false
	}
	var wallet string
	var walletMicro, devMicro int64
	for _, e := range t.Entries {
		switch {
		case e.Account.Kind == ledger.KindWallet:
			wallet, walletMicro = e.Account.Ref, e.AmountMicro
		case e.Account.Kind == ledger.KindEarnings && e.Account.Ref == paywallID:
			devMicro = e.AmountMicro
		}
	}
	ev := Event{ID: eventID(typ, t.ID), Type: typ, CreatedAt: t.CreatedAt.UTC(), Paywall: paywallID}
	if t.Kind == ledger.KindReversal {
		ev.Data = refundData{RefundID: t.ID, ChargeID: t.Reverses, User: t.Metadata[ledger.MetaUser], Wallet: wallet,
			Amount: pricing.FormatUSDC(walletMicro), AmountMicro: walletMicro,
			DeveloperAmount: pricing.FormatUSDC(-devMicro), DeveloperAmountMicro: -devMicro,
			Currency: "USDC", Reason: t.Metadata[ledger.MetaReason]}
		return ev, true
	}
	d := chargeData{ChargeID: t.ID, User: t.Metadata[ledger.MetaUser], Wallet: wallet,
		Amount: pricing.FormatUSDC(-walletMicro), AmountMicro: -walletMicro,
		DeveloperAmount: pricing.FormatUSDC(devMicro), DeveloperAmountMicro: devMicro, Currency: "USDC"}
	if t.Kind == ledger.KindCharge {
		d.Description = t.Metadata[ledger.MetaDescription]
		for k, v := range t.Metadata {
			if app, ok := strings.CutPrefix(k, ledger.MetaAppPrefix); ok {
				if d.Metadata == nil {
					d.Metadata = map[string]string{}
				}
				d.Metadata[app] = v
			}
		}
	} else {
		d.RequestID, d.API, d.Model = t.Metadata[ledger.MetaRequestID], t.Metadata[ledger.MetaAPI], t.Metadata[ledger.MetaModel]
		d.PromptTokens, d.CompletionTokens = count(t.Metadata, ledger.MetaPromptTokens), count(t.Metadata, ledger.MetaCompletionTokens)
		d.CachedTokens, d.ReasoningTokens = count(t.Metadata, ledger.MetaCachedTokens), count(t.Metadata, ledger.MetaReasoningTokens)
		_, estimated := t.Metadata[ledger.MetaEstimateReason]
		d.Estimated = &estimated
	}
	ev.Data = d
	return ev, true
}

// count reads a token count the ledger's metadata holds (written by serve); nil when absent.
func count(meta map[string]string, key string) *int64 {
	n, err := strconv.ParseInt(meta[key], 10, 64)
	if err != nil {
		return nil
	}
	return &n
}
