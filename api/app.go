package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// currency labels every amount; the API never converts to fiat.
const currency = "USDC"

// authorization answers GET …/authorization.
type authorizationJSON struct {
	User         string     `json:"user"`
	Authorized   bool       `json:"authorized"`
	Wallet       string     `json:"wallet,omitempty"`
	AuthorizedAt *time.Time `json:"authorized_at,omitempty"`
	// Link and Message are set when the user has not authorized: the connect page, and the
	// paywall's text with it (what the chat would show).
	Link    string `json:"link,omitempty"`
	Message string `json:"message,omitempty"`
}

func (s *Server) getAuthorization(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, user)
	switch {
	case errors.Is(err, paywall.ErrNotAuthorized):
		link := s.deps.Links.URL(pw.ID, user, paywall.PurposeAuthorize)
		writeJSON(w, http.StatusOK, authorizationJSON{User: user, Link: link, Message: pw.AuthorizeMessage(link)})
	case err != nil:
		s.unavailable(w, r, "read the authorization", err)
	default:
		at := a.CreatedAt.UTC()
		writeJSON(w, http.StatusOK, authorizationJSON{User: user, Authorized: true, Wallet: a.Wallet, AuthorizedAt: &at})
	}
}

// revokeJSON answers DELETE …/authorization.
type revokeJSON struct {
	User       string `json:"user"`
	Authorized bool   `json:"authorized"` // always false afterwards
	Revoked    bool   `json:"revoked"`    // false when there was nothing to revoke
}

func (s *Server) revokeAuthorization(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	err := s.deps.Paywalls.Revoke(r.Context(), pw.ID, user)
	switch {
	case errors.Is(err, paywall.ErrNotAuthorized):
		writeJSON(w, http.StatusOK, revokeJSON{User: user})
	case err != nil:
		s.unavailable(w, r, "revoke the authorization", err)
	default:
		s.opts.Logger.InfoContext(r.Context(), "authorization revoked", "paywall", pw.ID, "user", user)
		writeJSON(w, http.StatusOK, revokeJSON{User: user, Revoked: true})
	}
}

// authorized returns the user's authorization, or answers 403 with the paywall's authorize
// message and returns false.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) (paywall.Authorization, bool) {
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, user)
	if errors.Is(err, paywall.ErrNotAuthorized) {
		link := s.deps.Links.URL(pw.ID, user, paywall.PurposeAuthorize)
		writeAction(w, actionAuthorize, pw.AuthorizeMessage(link), link)
		return paywall.Authorization{}, false
	}
	if err != nil {
		s.unavailable(w, r, "read the authorization", err)
		return paywall.Authorization{}, false
	}
	return a, true
}

// balanceJSON is a wallet's money. Every amount is USDC, as a decimal string and in micro-USDC.
type balanceJSON struct {
	User string `json:"user,omitempty"`
	WalletBalanceJSON
	// Pending is USDC seen arriving on chain but not final yet (not spendable).
	Pending      string `json:"pending"`
	PendingMicro int64  `json:"pending_micro"`
}

// WalletBalanceJSON is a wallet's ledger balance as the API shows it, and `tollgate ledger
// balance -json` too: every amount as a USDC decimal string and in micro-USDC.
type WalletBalanceJSON struct {
	Wallet         string `json:"wallet"`
	Currency       string `json:"currency"`
	Available      string `json:"available"`
	AvailableMicro int64  `json:"available_micro"`
	Held           string `json:"held"`
	HeldMicro      int64  `json:"held_micro"`
	Posted         string `json:"posted"`
	PostedMicro    int64  `json:"posted_micro"`
}

// NewWalletBalanceJSON is wallet's balance b as the API shows it.
func NewWalletBalanceJSON(wallet string, b ledger.WalletBalance) WalletBalanceJSON {
	return WalletBalanceJSON{
		Wallet: wallet, Currency: currency,
		Available: pricing.FormatUSDC(b.AvailableMicro), AvailableMicro: b.AvailableMicro,
		Held: pricing.FormatUSDC(b.HeldMicro), HeldMicro: b.HeldMicro,
		Posted: pricing.FormatUSDC(b.PostedMicro), PostedMicro: b.PostedMicro,
	}
}

// walletBalance reads a wallet's balance; a wallet never credited has none.
func (s *Server) walletBalance(r *http.Request, wallet string) (balanceJSON, error) {
	b, err := s.deps.Ledger.Balance(r.Context(), wallet)
	if err != nil && !errors.Is(err, ledger.ErrUnknownAccount) {
		return balanceJSON{}, err
	}
	pending, err := s.pendingMicro(r, wallet)
	if err != nil {
		return balanceJSON{}, err
	}
	return balanceJSON{
		WalletBalanceJSON: NewWalletBalanceJSON(wallet, b),
		Pending:           pricing.FormatUSDC(pending), PendingMicro: pending,
	}, nil
}

func (s *Server) getBalance(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	a, ok := s.authorized(w, r, pw, user)
	if !ok {
		return
	}
	b, err := s.walletBalance(r, a.Wallet)
	if err != nil {
		s.unavailable(w, r, "read the balance", err)
		return
	}
	b.User = user
	writeJSON(w, http.StatusOK, b)
}

// linkJSON answers GET …/topup-link.
type linkJSON struct {
	User      string    `json:"user"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) getTopUpLink(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	if _, ok := s.authorized(w, r, pw, user); !ok {
		return
	}
	writeJSON(w, http.StatusOK, linkJSON{
		User:      user,
		URL:       s.deps.Links.URL(pw.ID, user, paywall.PurposeTopUp),
		ExpiresAt: s.opts.Now().Add(s.opts.LinkTTL).UTC().Truncate(time.Second),
	})
}

// menuItem is one labelled link for an app's UI.
type menuItem struct {
	ID    string `json:"id"` // connect, balance, topup, history, disconnect
	Label string `json:"label"`
	URL   string `json:"url"`
}

type menuJSON struct {
	User       string     `json:"user"`
	Authorized bool       `json:"authorized"`
	Items      []menuItem `json:"items"`
}

// getMenu lists the links a UI can show the user. Every link opens a hosted page, so the app
// needs no key in the browser; disconnecting happens on the wallet page.
func (s *Server) getMenu(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, user)
	if errors.Is(err, paywall.ErrNotAuthorized) {
		writeJSON(w, http.StatusOK, menuJSON{User: user, Items: []menuItem{
			{ID: "connect", Label: "Connect wallet", URL: s.deps.Links.URL(pw.ID, user, paywall.PurposeAuthorize)},
		}})
		return
	}
	if err != nil {
		s.unavailable(w, r, "read the authorization", err)
		return
	}
	b, err := s.walletBalance(r, a.Wallet)
	if err != nil {
		s.unavailable(w, r, "read the balance", err)
		return
	}
	walletURL := s.deps.Links.URL(pw.ID, user, paywall.PurposeWallet)
	writeJSON(w, http.StatusOK, menuJSON{User: user, Authorized: true, Items: []menuItem{
		{ID: "balance", Label: "Balance: " + b.Available + " " + currency, URL: walletURL},
		{ID: "topup", Label: "Top up", URL: s.deps.Links.URL(pw.ID, user, paywall.PurposeTopUp)},
		{ID: "history", Label: "History", URL: walletURL + "#history"},
		{ID: "disconnect", Label: "Disconnect wallet", URL: walletURL + "#disconnect"},
	}})
}

// HistoryItemJSON is one movement of an account's money (a wallet's or a paywall's earnings),
// as the API and `tollgate ledger history -json` show it.
type HistoryItemJSON struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"` // deposit, capture, charge, reversal, payout
	Amount      string            `json:"amount"`
	AmountMicro int64             `json:"amount_micro"` // signed: positive adds to the account
	Currency    string            `json:"currency"`
	CreatedAt   time.Time         `json:"created_at"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// NewHistoryItemJSON is the ledger's history item as the API shows it.
func NewHistoryItemJSON(it ledger.HistoryItem) HistoryItemJSON {
	return HistoryItemJSON{
		ID: it.TransferID, Kind: string(it.Kind), Amount: pricing.FormatUSDC(it.AmountMicro),
		AmountMicro: it.AmountMicro, Currency: currency, CreatedAt: it.CreatedAt.UTC(), Metadata: it.Metadata,
	}
}

type historyJSON struct {
	User   string            `json:"user,omitempty"`
	Wallet string            `json:"wallet"`
	Items  []HistoryItemJSON `json:"items"`
	// Next is the cursor of the next page; "" on the last one.
	Next string `json:"next"`
}

// visibleTo reports whether a paywall may see a wallet's history item. The wallet is shared
// by every paywall its owner authorized: a paywall sees the top-ups and its own charges, never
// what the person spent in another app.
func visibleTo(it ledger.HistoryItem, paywallID string) bool {
	switch it.Kind {
	case ledger.KindDeposit:
		return true
	default:
		return it.Metadata[ledger.MetaPaywall] == paywallID
	}
}

// walletHistory reads one page of a wallet's history as a paywall may see it.
func (s *Server) walletHistory(r *http.Request, wallet, paywallID string) (historyJSON, error) {
	items, next, err := s.accountHistory(r, ledger.Wallet(wallet), func(it ledger.HistoryItem) bool { return visibleTo(it, paywallID) })
	return historyJSON{Wallet: wallet, Items: items, Next: next}, err
}

// accountHistory reads one page of an account's history (the request's cursor and limit), the
// items keep allows. An account the ledger does not know yet has an empty history.
// It can return errBadLimit, errBadCursor and the ledger's errors.
func (s *Server) accountHistory(r *http.Request, a ledger.Account, keep func(ledger.HistoryItem) bool) ([]HistoryItemJSON, string, error) {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return nil, "", errBadLimit
		}
		limit = n
	}
	page, err := s.deps.Ledger.History(r.Context(), a, r.URL.Query().Get("cursor"), limit)
	switch {
	case errors.Is(err, ledger.ErrUnknownAccount):
		return []HistoryItemJSON{}, "", nil
	case errors.Is(err, ledger.ErrInvalid):
		return nil, "", errBadCursor
	case err != nil:
		return nil, "", err
	}
	items := []HistoryItemJSON{}
	for _, it := range page.Items {
		if keep(it) {
			items = append(items, NewHistoryItemJSON(it))
		}
	}
	return items, page.Next, nil
}

var (
	errBadLimit  = errors.New("limit must be a whole number from 1 to 200")
	errBadCursor = errors.New("cursor is not one this API returned")
)

func (s *Server) getHistory(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string) {
	a, ok := s.authorized(w, r, pw, user)
	if !ok {
		return
	}
	s.writeHistory(w, r, a.Wallet, pw.ID, user)
}

// writeHistory answers one page of a wallet's history as the paywall may see it.
func (s *Server) writeHistory(w http.ResponseWriter, r *http.Request, wallet, paywallID, user string) {
	h, err := s.walletHistory(r, wallet, paywallID)
	if s.historyFailed(w, r, err) {
		return
	}
	h.User = user
	writeJSON(w, http.StatusOK, h)
}

// historyFailed answers a history read's error, if there is one, and says so.
func (s *Server) historyFailed(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, errBadLimit):
		badRequest(w, "invalid_limit", "limit", "The limit must be a whole number from 1 to 200.")
	case errors.Is(err, errBadCursor):
		badRequest(w, "invalid_cursor", "cursor", "The cursor is not one this API returned; start again without it.")
	default:
		s.unavailable(w, r, "read the history", err)
	}
	return true
}
