package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// refundRequest is the optional body of POST …/charges/{id}/refund.
type refundRequest struct {
	Reason string `json:"reason,omitempty"`
}

// refundJSON answers a successful refund.
type refundJSON struct {
	ID          string    `json:"id"` // the reversal's transfer id
	Success     bool      `json:"success"`
	Refunded    string    `json:"refunded"` // the charge's id
	User        string    `json:"user"`
	Wallet      string    `json:"wallet"`
	Amount      string    `json:"amount"`
	AmountMicro int64     `json:"amount_micro"`
	Currency    string    `json:"currency"`
	Reason      string    `json:"reason"`
	CreatedAt   time.Time `json:"created_at"`
}

// parseChargeID reads a charge id from a path: a UUID in its 8-4-4-4-12 hex form, either case,
// returned in lower case (the ledger's spelling, so that "ABC…" and "abc…" are one request).
// Other spellings a UUID library would take (braces, urn:uuid:, no dashes) are refused: ids
// are only ever copied from answers, and one spelling keeps the idempotency hash honest.
func parseChargeID(s string) (string, bool) {
	if !ledger.ValidUUID(s) {
		return "", false
	}
	return strings.ToLower(s), true
}

// pathChargeID reads the charge id of the request's path; on failure it has written the 400.
func pathChargeID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := parseChargeID(r.PathValue("id"))
	if !ok {
		badRequest(w, "invalid_charge_id", "id",
			fmt.Sprintf("The charge id must be the id a charge answered, a UUID such as 5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d; got %q.", r.PathValue("id")))
	}
	return id, ok
}

// postRefund gives a charge of this paywall's user back, once per Idempotency-Key and once per
// charge: the whole transfer is reversed, so the wallet gets everything back and the earnings
// and the platform fee return their shares.
//
// The user's authorization is not checked: a refund only gives money back, to the wallet the
// charge took it from (named by the transfer, not by the authorization), so an app can still
// refund a user who has revoked it since, or connected another wallet.
func (s *Server) postRefund(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	chargeID, ok := pathChargeID(w, r)
	if !ok {
		return
	}
	var req refundRequest
	if !decodeOptionalBody(w, r, &req) {
		return
	}
	if problem := textProblem("reason", req.Reason); problem != "" {
		badRequest(w, "invalid_reason", "reason", problem)
		return
	}
	normalized := struct {
		User     string
		ChargeID string
		Reason   string
	}{user, chargeID, req.Reason}
	s.idempotent(w, r, pw, "refund", key, normalized, func(w http.ResponseWriter) {
		s.refund(w, r, pw, user, key, chargeID, req.Reason)
	})
}

func (s *Server) refund(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user, key, chargeID, reason string) {
	t, err := s.deps.Ledger.GetTransfer(r.Context(), chargeID)
	if err != nil && !errors.Is(err, ledger.ErrTransferNotFound) {
		s.unavailable(w, r, "read the charge", err)
		return
	}
	c, err := ownCharge(t, pw.ID, user)
	if err == nil {
		err = c.refundProblem()
	}
	switch {
	case errors.Is(err, errNotRefundable):
		notFoundError(w, "No charge of this user has that id (it must be a charge or a request of this paywall's, not a refund, top-up or withdrawal).")
		return
	case errors.Is(err, errProviderPaid):
		conflict(w, "provider_cost_not_refundable", fmt.Sprintf(
			"This request went through the built-in provider, which has been paid its cost (%s USDC) already; refunding it would make the platform pay that cost, so apps cannot refund it. Apps can refund manual charges and requests through their own provider key (BYOK).",
			pricing.FormatUSDC(c.providerMicro)))
		return
	case errors.Is(err, errNothingCharged):
		conflict(w, "nothing_to_refund", "This request took nothing from the wallet, so there is nothing to give back.")
		return
	}
	rev, err := s.deps.Ledger.Reverse(r.Context(), ledger.ReverseRequest{
		// The paywall and the app's key, like charges': racing retries of one refund reverse once.
		Key: "api:refund:" + pw.ID + ":" + key, TransferID: chargeID, Reason: reason,
		// So that the refund shows in the paywall's view of the wallet's history (visibleTo).
		Metadata: map[string]string{ledger.MetaPaywall: pw.ID, ledger.MetaUser: user},
	})
	switch {
	case errors.Is(err, ledger.ErrAlreadyReversed), errors.Is(err, ledger.ErrInsufficientFunds):
		// A refund racing this one may have drained the earnings before its reversal was
		// visible here: then the charge is refunded, and that is the answer, not the earnings.
		prev, perr := s.deps.Ledger.Reversal(r.Context(), chargeID)
		switch {
		case perr == nil:
			conflict(w, "already_refunded", fmt.Sprintf(
				"This charge was refunded before (refund %s, %s); a charge is refunded once, and nothing more was given back.",
				prev.ID, prev.CreatedAt.UTC().Format(time.RFC3339)))
		case errors.Is(err, ledger.ErrAlreadyReversed):
			conflict(w, "already_refunded", "This charge was refunded before; a charge is refunded once, and nothing more was given back.")
		default:
			s.insufficientEarnings(w, r, pw.ID, "their share of this refund ("+pricing.FormatUSDC(c.developerMicro)+" USDC)",
				" They were withdrawn since the charge; nothing was refunded.")
		}
	case errors.Is(err, ledger.ErrTransferNotFound), errors.Is(err, ledger.ErrNotReversible):
		// Checked above from the transfer itself; the ledger agrees, or this is a bug.
		notFoundError(w, "No charge of this user has that id.")
	case err != nil:
		s.ledgerFailure(w, r, "refund", err)
	default:
		s.opts.Logger.InfoContext(r.Context(), "refund", "paywall", pw.ID, "user", user, "charge", chargeID,
			"amount_micro", c.walletMicro, "transfer", rev.ID)
		writeJSON(w, http.StatusCreated, refundJSON{
			ID: rev.ID, Success: true, Refunded: chargeID, User: user, Wallet: c.wallet,
			Amount: pricing.FormatUSDC(c.walletMicro), AmountMicro: c.walletMicro, Currency: currency,
			Reason: reason, CreatedAt: rev.CreatedAt.UTC(),
		})
	}
}

// chargeLegs are the legs of a transfer that matter to a refund.
type chargeLegs struct {
	wallet         string // the wallet the transfer debited, as it recorded it
	walletMicro    int64  // what the wallet paid, all of which a refund gives back
	developerMicro int64  // the paywall's share, which its earnings give back
	providerMicro  int64  // the built-in provider's share
}

var (
	// errNotRefundable: not a charge or capture of this paywall's user; the API answers as if
	// the id did not exist, so no paywall learns of another's transfers.
	errNotRefundable = errors.New("api: not a charge of this paywall's user")
	// errProviderPaid: a built-in capture; the provider's cost was paid out of the platform's
	// pocket and the ledger's reversal would take it from the provider-costs account.
	errProviderPaid = errors.New("api: the provider was paid for this request")
	// errNothingCharged: a capture that debited nothing (its whole charge was shortfall).
	errNothingCharged = errors.New("api: nothing was charged")
)

// refundProblem reports why an app may not refund its own charge c (errProviderPaid,
// errNothingCharged), or nil.
func (c chargeLegs) refundProblem() error {
	switch {
	case c.providerMicro > 0:
		return errProviderPaid
	case c.walletMicro == 0:
		return errNothingCharged
	}
	return nil
}

// ownCharge checks, from the transfer alone, that it is a manual charge or a request's capture
// whose metadata names this paywall and this user, debiting one wallet and crediting only this
// paywall's earnings, the platform fee and (built-in requests) a provider, and returns its legs.
// A zero Transfer (not found) is errNotRefundable.
func ownCharge(t ledger.Transfer, paywallID, user string) (chargeLegs, error) {
	var c chargeLegs
	if (t.Kind != ledger.KindCharge && t.Kind != ledger.KindCapture) ||
		t.Metadata[ledger.MetaPaywall] != paywallID || t.Metadata[ledger.MetaUser] != user {
		return c, errNotRefundable
	}
	for _, e := range t.Entries {
		switch {
		case e.AmountMicro == 0:
		case e.Account.Kind == ledger.KindWallet && c.wallet == "" && e.AmountMicro < 0:
			c.wallet, c.walletMicro = e.Account.Ref, -e.AmountMicro
		case e.Account.Kind == ledger.KindEarnings && e.Account.Ref == paywallID && e.AmountMicro > 0:
			c.developerMicro += e.AmountMicro
		case e.Account.Kind == ledger.KindPlatformFees && e.AmountMicro > 0:
		case e.Account.Kind == ledger.KindProviderCosts && e.AmountMicro > 0:
			c.providerMicro += e.AmountMicro
		default:
			// A second wallet, another paywall's earnings, money flowing the other way: not
			// the shape of a charge this paywall made, whatever its metadata says.
			return chargeLegs{}, errNotRefundable
		}
	}
	return c, nil
}

// chargeStateJSON answers GET …/charges/{id}: one of the user's charges or requests, as the
// ledger holds it, and its refund.
type chargeStateJSON struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"` // "charge" (manual) or "request" (billed through the proxy: chat, responses, embeddings, legacy completions)
	User        string            `json:"user"`
	Wallet      string            `json:"wallet"`
	Amount      string            `json:"amount"` // what the wallet paid
	AmountMicro int64             `json:"amount_micro"`
	Currency    string            `json:"currency"`
	Description string            `json:"description,omitempty"`
	Model       string            `json:"model,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"` // the app's own keys, as it sent them
	CreatedAt   time.Time         `json:"created_at"`
	// Refundable says whether POST …/refund can give it back now; Refund is the refund, or null.
	Refundable bool             `json:"refundable"`
	Refund     *refundStateJSON `json:"refund"`
}

type refundStateJSON struct {
	ID        string    `json:"id"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// getCharge reads one of the user's charges or requests by the id its answer (or the history)
// gave, with its refund: an app can learn whether a charge stands, was refunded, or may be.
// Like a refund, it needs no authorization: the charge names its wallet.
func (s *Server) getCharge(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	id, ok := pathChargeID(w, r)
	if !ok {
		return
	}
	t, err := s.deps.Ledger.GetTransfer(r.Context(), id)
	if err != nil && !errors.Is(err, ledger.ErrTransferNotFound) {
		s.unavailable(w, r, "read the charge", err)
		return
	}
	c, err := ownCharge(t, pw.ID, user)
	if err != nil {
		notFoundError(w, "No charge of this user has that id (it must be a charge or a request of this paywall's).")
		return
	}
	out := chargeStateJSON{
		ID: t.ID, Kind: "charge", User: user, Wallet: c.wallet, Amount: pricing.FormatUSDC(c.walletMicro),
		AmountMicro: c.walletMicro, Currency: currency, Description: t.Metadata[ledger.MetaDescription], CreatedAt: t.CreatedAt.UTC(),
	}
	if t.Kind == ledger.KindCapture {
		out.Kind, out.Model = "request", t.Metadata[ledger.MetaModel]
	}
	for k, v := range t.Metadata {
		if app, ok := strings.CutPrefix(k, ledger.MetaAppPrefix); ok {
			if out.Metadata == nil {
				out.Metadata = map[string]string{}
			}
			out.Metadata[app] = v
		}
	}
	rev, err := s.deps.Ledger.Reversal(r.Context(), id)
	switch {
	case err == nil:
		out.Refund = &refundStateJSON{ID: rev.ID, Reason: rev.Metadata[ledger.MetaReason], CreatedAt: rev.CreatedAt.UTC()}
	case errors.Is(err, ledger.ErrTransferNotFound):
		out.Refundable = c.refundProblem() == nil
	default:
		s.unavailable(w, r, "read the charge's refund", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
