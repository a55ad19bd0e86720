package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// chargeRequest is the body of POST …/charges.
type chargeRequest struct {
	// Amount is USDC as a decimal string with at most 6 places ("0.25").
	Amount      string            `json:"amount"`
	Description string            `json:"description,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// chargeJSON answers a successful charge.
type chargeJSON struct {
	ID          string            `json:"id"`
	Success     bool              `json:"success"`
	User        string            `json:"user"`
	Wallet      string            `json:"wallet"`
	Amount      string            `json:"amount"`
	AmountMicro int64             `json:"amount_micro"`
	Currency    string            `json:"currency"`
	Description string            `json:"description,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	Message     string            `json:"message"`
}

// Bounds of a charge's free-form fields.
const (
	maxDescriptionLen = 500
	maxMetadataKeys   = 20
	maxMetadataKeyLen = 40
	maxMetadataValLen = 500
)

// parseAmount reads a positive USDC amount within max; on a problem it has answered 400.
func parseAmount(w http.ResponseWriter, s string, maxMicro int64) (int64, bool) {
	micro, err := pricing.ParseUSDC(s)
	if err != nil {
		badRequest(w, "invalid_amount", "amount",
			fmt.Sprintf("The amount must be USDC as a decimal string with at most 6 places, such as \"0.25\"; got %q.", s))
		return 0, false
	}
	if micro <= 0 {
		badRequest(w, "invalid_amount", "amount", "The amount must be more than 0 USDC.")
		return 0, false
	}
	if micro > maxMicro {
		badRequest(w, "amount_too_large", "amount",
			fmt.Sprintf("The amount must be at most %s USDC; got %s.", pricing.FormatUSDC(maxMicro), s))
		return 0, false
	}
	return micro, true
}

// textProblem reports what is wrong with a free-form text field (a charge's description, a
// refund's reason), or "". NUL is refused because the ledger keeps metadata as JSONB, which
// cannot hold it: the write would fail as if the database were down.
func textProblem(field, s string) string {
	if !utf8.ValidString(s) || len(s) > maxDescriptionLen || strings.ContainsRune(s, 0) {
		return fmt.Sprintf("The %s must be UTF-8 text (no NUL) of at most %d bytes.", field, maxDescriptionLen)
	}
	return ""
}

// checkMetadata reports what is wrong with a charge's description and metadata, or "".
func checkMetadata(desc string, meta map[string]string) string {
	if problem := textProblem("description", desc); problem != "" {
		return problem
	}
	if len(meta) > maxMetadataKeys {
		return fmt.Sprintf("The metadata may have at most %d keys; it has %d.", maxMetadataKeys, len(meta))
	}
	for k, v := range meta {
		if k == "" || len(k) > maxMetadataKeyLen || !utf8.ValidString(k) || strings.ContainsAny(k, "\x00") {
			return fmt.Sprintf("Metadata keys must be 1 to %d bytes of text.", maxMetadataKeyLen)
		}
		if len(v) > maxMetadataValLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return fmt.Sprintf("Metadata value of %q must be UTF-8 text (no NUL) of at most %d bytes.", k, maxMetadataValLen)
		}
	}
	return ""
}

// postCharge debits the user's wallet once per Idempotency-Key: the platform's fee and the
// rest to the paywall's earnings. A user who has not authorized the paywall gets 403, one who
// cannot afford it 402, both with the paywall's message and link, as the chat would show.
func (s *Server) postCharge(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	var req chargeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	amount, ok := parseAmount(w, req.Amount, s.opts.MaxChargeMicro)
	if !ok {
		return
	}
	if problem := checkMetadata(req.Description, req.Metadata); problem != "" {
		badRequest(w, "invalid_metadata", "metadata", problem)
		return
	}
	normalized := struct {
		User        string
		AmountMicro int64
		Description string
		Metadata    map[string]string
	}{user, amount, req.Description, req.Metadata}
	s.idempotent(w, r, pw, "charge", key, normalized, func(w http.ResponseWriter) {
		s.charge(w, r, pw, user, key, amount, req)
	})
}

func (s *Server) charge(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user, key string, amount int64, req chargeRequest) {
	a, ok := s.authorized(w, r, pw, user)
	if !ok {
		return
	}
	split, err := pricing.Split(amount, 0, s.opts.FeeBps, "")
	if err != nil {
		s.unavailable(w, r, "price the charge", err)
		return
	}
	meta := map[string]string{ledger.MetaPaywall: pw.ID, ledger.MetaUser: user}
	if req.Description != "" {
		meta[ledger.MetaDescription] = req.Description
	}
	for k, v := range req.Metadata {
		meta[ledger.MetaAppPrefix+k] = v
	}
	t, err := s.deps.Ledger.Charge(r.Context(), ledger.ChargeRequest{
		Key: "api:charge:" + pw.ID + ":" + key, Wallet: a.Wallet, Paywall: pw.ID, Split: split, Metadata: meta,
	})
	switch {
	case errors.Is(err, ledger.ErrInsufficientFunds), errors.Is(err, ledger.ErrUnknownAccount):
		b, berr := s.deps.Ledger.Balance(r.Context(), a.Wallet)
		if berr != nil && !errors.Is(berr, ledger.ErrUnknownAccount) {
			s.unavailable(w, r, "read the balance", berr)
			return
		}
		link := s.deps.Links.URL(pw.ID, user, paywall.PurposeTopUp)
		writeAction(w, actionTopUp, pw.TopUpMessage(link, b.AvailableMicro), link)
	case err != nil:
		s.ledgerFailure(w, r, "charge", err)
	default:
		s.opts.Logger.InfoContext(r.Context(), "manual charge", "paywall", pw.ID, "user", user, "amount_micro", amount, "transfer", t.ID)
		writeJSON(w, http.StatusCreated, chargeJSON{
			ID: t.ID, Success: true, User: user, Wallet: a.Wallet,
			Amount: pricing.FormatUSDC(amount), AmountMicro: amount, Currency: currency,
			Description: req.Description, Metadata: req.Metadata, CreatedAt: t.CreatedAt.UTC(),
			Message: "Charged " + pricing.FormatUSDC(amount) + " " + currency + ".",
		})
	}
}

// ledgerFailure answers the ledger errors that every POST moving money shares: the ledger's
// copy of the Idempotency-Key bound to another request (409), a commit whose outcome is not
// known (503: the same key learns it, and never moves money twice), and anything else (503).
// noun names the operation ("charge", "refund", "withdrawal").
func (s *Server) ledgerFailure(w http.ResponseWriter, r *http.Request, noun string, err error) {
	switch {
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		conflict(w, "idempotency_key_reused",
			"This Idempotency-Key was already used with a different request. Use a new key for a new "+noun+".")
	case errors.Is(err, ledger.ErrAmbiguous):
		writeError(w, http.StatusServiceUnavailable, "server_error", "outcome_unknown", "",
			"The "+noun+"'s outcome is not known yet; retry with the same Idempotency-Key to learn it (it will not happen twice).")
	default:
		s.unavailable(w, r, "record the "+noun, err)
	}
}
