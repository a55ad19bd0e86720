package api

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/tollgate-dev/tollgate/api/pages"
	"github.com/tollgate-dev/tollgate/api/siwe"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/settlement"
)

// TopUps are the settlement side of top-ups (*settlement.TopUps).
type TopUps interface {
	// Create can return settlement.ErrInvalidTopUp, settlement.ErrUnknownChain.
	Create(ctx context.Context, r settlement.TopUpRequest) (settlement.TopUpIntent, error)
	// Submit can return settlement.ErrTopUpNotFound, ErrTopUpExpired, ErrBadSignature,
	// ErrContractCall.
	Submit(ctx context.Context, id, signatureHex string) (settlement.TopUp, error)
	// Get can return settlement.ErrTopUpNotFound.
	Get(ctx context.Context, id string) (settlement.TopUp, error)
	PendingDeposits(ctx context.Context, wallet string) ([]settlement.Deposit, error)
	Chains() []settlement.Chain
}

// linkHeader carries the page's link token on the pages' API calls, so that it never sits in
// a query string of an XHR (and in access logs twice).
const linkHeader = "X-Tollgate-Link"

func (s *Server) addPageRoutes(add func(method, pattern string, h http.HandlerFunc)) {
	add("GET", "/connect", s.page("connect.html"))
	add("GET", "/topup", s.page("topup.html"))
	add("GET", "/wallet", s.page("wallet.html"))
	add("GET", "/assets/{file}", s.asset)

	add("GET", "/pages/v1/connect", s.withLink(paywall.PurposeAuthorize, s.connectInfo))
	add("POST", "/pages/v1/connect/challenge", s.withLink(paywall.PurposeAuthorize, s.connectChallenge))
	add("POST", "/pages/v1/connect/verify", s.withLink(paywall.PurposeAuthorize, s.connectVerify))

	add("GET", "/pages/v1/topup", s.withLink(paywall.PurposeTopUp, s.topUpInfo))
	add("POST", "/pages/v1/topups", s.withLink(paywall.PurposeTopUp, s.createTopUp))
	add("GET", "/pages/v1/topups/{id}", s.withLink(paywall.PurposeTopUp, s.getTopUp))
	add("POST", "/pages/v1/topups/{id}/signature", s.withLink(paywall.PurposeTopUp, s.signTopUp))

	add("GET", "/pages/v1/wallet", s.withLink(paywall.PurposeWallet, s.walletInfo))
	add("GET", "/pages/v1/wallet/history", s.withLink(paywall.PurposeWallet, s.walletHistoryPage))
	add("POST", "/pages/v1/wallet/disconnect", s.withLink(paywall.PurposeWallet, s.walletDisconnect))
}

// pageHeaders keep the pages to their own scripts and keep the link token out of Referer.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
}

// page serves one of the embedded HTML pages. The page reads its link token from its own URL;
// the server renders nothing user-specific into the HTML.
func (s *Server) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := fs.ReadFile(pages.FS, name)
		if err != nil {
			s.unavailable(w, r, "load the page", err)
			return
		}
		pageHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body) //nolint:gosec // static HTML embedded at build time; nothing of the request is in it
	}
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name != path.Base(name) || strings.HasSuffix(name, ".html") {
		notFoundError(w, "No such asset.")
		return
	}
	body, err := fs.ReadFile(pages.FS, name)
	if err != nil {
		notFoundError(w, "No such asset.")
		return
	}
	pageHeaders(w.Header())
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(body) //nolint:gosec // a file embedded at build time, picked by base name (not HTML)
}

// linkHandler serves a page's API call for the paywall and user of a verified link token.
// Single-use state (a used connect link, its sign-in count) keys on c.ID, the token's random
// id, never on the token's text.
type linkHandler func(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall)

// withLink verifies the link token for the page's purpose and finds its paywall.
func (s *Server) withLink(p paywall.Purpose, next linkHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w.Header())
		token := r.Header.Get(linkHeader)
		if token == "" {
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "missing_link", "",
				"Open this page from the link the app gave you.")
			return
		}
		c, err := s.deps.Links.Verify(token, p)
		switch {
		case errors.Is(err, paywall.ErrExpiredToken):
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "link_expired", "",
				"This link has expired. Go back to the app and send your message again to get a fresh link.")
			return
		case err != nil:
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_link", "",
				"This link is not valid for this page. Go back to the app and use the link it gave you.")
			return
		}
		pw, err := s.deps.Paywalls.Get(r.Context(), c.PaywallID)
		if errors.Is(err, paywall.ErrNotFound) {
			notFoundError(w, "The app this link is for no longer exists.")
			return
		}
		if err != nil {
			s.unavailable(w, r, "find the app", err)
			return
		}
		next(w, r, c, pw)
	}
}

// usedLinkKey is the Redis key that marks a connect link used, by the link's id.
func (s *Server) usedLinkKey(c paywall.LinkClaims) string {
	return s.opts.RedisPrefix + "api:link-used:" + c.ID
}

// linkUsed reports whether a connect link already authorized a wallet.
func (s *Server) linkUsed(ctx context.Context, c paywall.LinkClaims) (bool, error) {
	n, err := s.deps.Redis.Exists(ctx, s.usedLinkKey(c)).Result()
	return n > 0, err
}

type chainJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// connectInfoJSON is what the connect page shows before the user signs.
type connectInfoJSON struct {
	Paywall    string   `json:"paywall"`
	User       string   `json:"user"`
	Authorized bool     `json:"authorized"`
	Wallet     string   `json:"wallet,omitempty"`
	LinkUsed   bool     `json:"link_used"`
	ChainIDs   []string `json:"chain_ids"`
}

func (s *Server) chainIDStrings() []string {
	out := make([]string, len(s.opts.ChainIDs))
	for i, id := range s.opts.ChainIDs {
		out[i] = strconv.FormatUint(id, 10)
	}
	return out
}

func (s *Server) connectInfo(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	used, err := s.linkUsed(r.Context(), c)
	if err != nil {
		s.unavailable(w, r, "check the link", err)
		return
	}
	out := connectInfoJSON{Paywall: pw.Name, User: c.UserID, LinkUsed: used, ChainIDs: s.chainIDStrings()}
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, c.UserID)
	switch {
	case errors.Is(err, paywall.ErrNotAuthorized):
	case err != nil:
		s.unavailable(w, r, "read the authorization", err)
		return
	default:
		out.Authorized, out.Wallet = true, a.Wallet
	}
	writeJSON(w, http.StatusOK, out)
}

// maxChallengesPerLink bounds the sign-in messages (and Redis nonces) one link can ask for;
// a person needs a few, a script filling Redis needs many.
const maxChallengesPerLink = 20

// countChallenge counts a link's sign-in messages and returns how many it asked for so far.
func (s *Server) countChallenge(ctx context.Context, c paywall.LinkClaims) (int64, error) {
	key := s.opts.RedisPrefix + "api:challenges:" + c.ID
	pipe := s.deps.Redis.TxPipeline()
	n := pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, s.opts.LinkTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	return n.Val(), nil
}

type challengeRequest struct {
	Address string `json:"address"`
	ChainID string `json:"chain_id"` // decimal or 0x-hex, as the wallet reports it
}

type challengeJSON struct {
	Message string `json:"message"`
}

// connectChallenge writes the Sign-In with Ethereum message for the wallet to sign, with a
// fresh single-use nonce and the link's random id as Request ID, so the signature is good for
// this link only, for SignInTTL.
func (s *Server) connectChallenge(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	var req challengeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !common.IsHexAddress(req.Address) || !strings.HasPrefix(req.Address, "0x") || len(req.Address) != 42 {
		badRequest(w, "invalid_address", "address", "The wallet address must be 0x and 40 hex digits.")
		return
	}
	chainID, ok := s.acceptedChain(req.ChainID)
	if !ok {
		badRequest(w, "unsupported_chain", "chain_id",
			"Switch your wallet to one of these networks (chain ids): "+strings.Join(s.chainIDStrings(), ", ")+".")
		return
	}
	if used, err := s.linkUsed(r.Context(), c); err != nil {
		s.unavailable(w, r, "check the link", err)
		return
	} else if used {
		conflict(w, "link_used", "This link was already used to connect a wallet. Ask the app for a new link to connect another one.")
		return
	}
	if n, err := s.countChallenge(r.Context(), c); err != nil {
		s.unavailable(w, r, "start the sign-in", err)
		return
	} else if n > maxChallengesPerLink {
		writeError(w, http.StatusTooManyRequests, "invalid_request_error", "too_many_sign_ins", "",
			"Too many sign-in attempts with this link. Ask the app for a new link.")
		return
	}
	nonce, err := s.deps.Nonces.Issue(r.Context(), s.opts.SignInTTL)
	if err != nil {
		s.unavailable(w, r, "start the sign-in", err)
		return
	}
	now := s.opts.Now().UTC().Truncate(time.Second)
	m := siwe.Message{
		Domain:         s.signInDomain,
		Address:        common.HexToAddress(req.Address),
		Statement:      signInStatement(pw.Name, c.UserID),
		URI:            s.signInURI,
		Version:        "1",
		ChainID:        chainID,
		Nonce:          nonce,
		IssuedAt:       now,
		ExpirationTime: now.Add(s.opts.SignInTTL),
		RequestID:      c.ID,
	}
	writeJSON(w, http.StatusOK, challengeJSON{Message: m.String()})
}

// parseChainID reads a chain id as wallets and apps write it: "137" or "0x89".
func parseChainID(raw string) (uint64, error) {
	if strings.HasPrefix(raw, "0x") {
		return hexutil.DecodeUint64(raw)
	}
	return strconv.ParseUint(raw, 10, 64)
}

// acceptedChain parses a chain id ("137" or "0x89") and reports whether it is accepted.
func (s *Server) acceptedChain(raw string) (uint64, bool) {
	id, err := parseChainID(raw)
	if err != nil || !slices.Contains(s.opts.ChainIDs, id) {
		return 0, false
	}
	return id, true
}

// signInStatement is the sentence the wallet shows. EIP-4361 allows only RFC 3986 characters
// and spaces in it, so anything else in the paywall's name becomes a space (user ids are made
// of allowed characters only, see paywall.ValidUserID).
func signInStatement(paywallName, user string) string {
	name := siwe.SanitizeStatement(paywallName)
	if name == "" {
		name = "this app"
	}
	return "Connect this wallet to " + name + " as user " + user + ". " + name + " may then charge it in USDC for what you use."
}

type verifyRequest struct {
	Message   string `json:"message"`
	Signature string `json:"signature"` // 0x-hex
}

type connectedJSON struct {
	Authorized bool   `json:"authorized"`
	Wallet     string `json:"wallet"`
	User       string `json:"user"`
	Paywall    string `json:"paywall"`
}

// connectVerify checks the signed message (format, domain, URI, chain, link, time), the
// signature (EIP-191, or EIP-1271 for a contract wallet), uses up the nonce and the link, and
// authorizes the wallet for the link's user.
func (s *Server) connectVerify(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	var req verifyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	m, err := siwe.Parse(req.Message)
	if err != nil {
		badRequest(w, "invalid_message", "message", "The signed message is not a valid Sign-In with Ethereum message: "+strings.TrimPrefix(err.Error(), "siwe: ")+".")
		return
	}
	err = m.Check(siwe.Expect{
		Domain: s.signInDomain, URI: s.signInURI, ChainIDs: s.opts.ChainIDs, RequestID: c.ID,
		Now: s.opts.Now(), MaxAge: s.opts.SignInTTL,
	})
	switch {
	case errors.Is(err, siwe.ErrExpired), errors.Is(err, siwe.ErrNotYetValid):
		badRequest(w, "sign_in_expired", "message", "The sign-in took too long (or your clock is off); press Connect again.")
		return
	case err != nil:
		badRequest(w, "sign_in_mismatch", "message", "The signed message is not the one this page asked for ("+strings.TrimPrefix(err.Error(), "siwe: ")+"); press Connect again.")
		return
	}
	sig, err := hexutil.Decode(req.Signature)
	if err != nil || len(sig) == 0 || len(sig) > 4096 {
		badRequest(w, "invalid_signature", "signature", "The signature must be 0x-prefixed hex, as the wallet returns it.")
		return
	}
	err = s.deps.Signatures.Verify(r.Context(), req.Message, m.Address, m.ChainID, sig)
	switch {
	case errors.Is(err, siwe.ErrBadSignature):
		badRequest(w, "invalid_signature", "signature", "The signature is not from the wallet named in the message.")
		return
	case err != nil:
		s.unavailable(w, r, "check the contract wallet's signature", err)
		return
	}
	if err := s.deps.Nonces.Consume(r.Context(), m.Nonce); errors.Is(err, paywall.ErrNonceUsed) {
		conflict(w, "nonce_used", "This sign-in was already used or has expired; press Connect again.")
		return
	} else if err != nil {
		s.unavailable(w, r, "check the sign-in", err)
		return
	}
	first, err := s.deps.Redis.SetNX(r.Context(), s.usedLinkKey(c), "1", s.opts.LinkTTL).Result()
	if err != nil {
		s.unavailable(w, r, "use up the link", err)
		return
	}
	if !first {
		conflict(w, "link_used", "This link was already used to connect a wallet. Ask the app for a new link to connect another one.")
		return
	}
	wallet := strings.ToLower(m.Address.Hex())
	a, err := s.deps.Paywalls.Authorize(r.Context(), pw.ID, c.UserID, wallet)
	if err != nil {
		// Give the link back: nothing was authorized.
		_ = s.deps.Redis.Del(context.WithoutCancel(r.Context()), s.usedLinkKey(c)).Err()
		s.unavailable(w, r, "save the authorization", err)
		return
	}
	s.opts.Logger.InfoContext(r.Context(), "wallet authorized", "paywall", pw.ID, "user", c.UserID, "wallet", a.Wallet)
	writeJSON(w, http.StatusOK, connectedJSON{Authorized: true, Wallet: a.Wallet, User: c.UserID, Paywall: pw.Name})
}

// topUpInfoJSON is what the top-up page shows before the user picks an amount.
type topUpInfoJSON struct {
	Paywall    string       `json:"paywall"`
	User       string       `json:"user"`
	Authorized bool         `json:"authorized"`
	ConnectURL string       `json:"connect_url,omitempty"`
	Enabled    bool         `json:"enabled"` // false: top-ups are not configured here
	Balance    *balanceJSON `json:"balance,omitempty"`
	Chains     []chainJSON  `json:"chains"`
	Min        string       `json:"min"`
	Max        string       `json:"max"`
}

func (s *Server) topUpInfo(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	out := topUpInfoJSON{
		Paywall: pw.Name, User: c.UserID, Enabled: s.deps.TopUps != nil, Chains: []chainJSON{},
		Min: pricing.FormatUSDC(s.opts.TopUpMinMicro), Max: pricing.FormatUSDC(s.opts.TopUpMaxMicro),
	}
	if s.deps.TopUps != nil {
		for _, ch := range s.deps.TopUps.Chains() {
			out.Chains = append(out.Chains, chainJSON{ID: ch.ID, Name: ch.Name})
		}
	}
	b, connectURL, ok := s.pageBalance(w, r, c, pw)
	if !ok {
		return
	}
	out.Authorized, out.Balance, out.ConnectURL = b != nil, b, connectURL
	writeJSON(w, http.StatusOK, out)
}

// pageBalance reads the balance of the wallet the link's user connected, or, when there is
// none, returns the connect page's link instead. It returns false when it has answered an error.
func (s *Server) pageBalance(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) (*balanceJSON, string, bool) {
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, c.UserID)
	if errors.Is(err, paywall.ErrNotAuthorized) {
		return nil, s.deps.Links.URL(pw.ID, c.UserID, paywall.PurposeAuthorize), true
	}
	if err != nil {
		s.unavailable(w, r, "read the authorization", err)
		return nil, "", false
	}
	b, err := s.walletBalance(r, a.Wallet)
	if err != nil {
		s.unavailable(w, r, "read the balance", err)
		return nil, "", false
	}
	return &b, "", true
}

type createTopUpRequest struct {
	Amount  string `json:"amount"`
	ChainID string `json:"chain_id,omitempty"` // "" = the first configured chain
}

type topUpIntentJSON struct {
	ID          string          `json:"id"`
	Wallet      string          `json:"wallet"`
	ChainID     string          `json:"chain_id"`
	Amount      string          `json:"amount"`
	AmountMicro int64           `json:"amount_micro"`
	Currency    string          `json:"currency"`
	TypedData   json.RawMessage `json:"typed_data"` // for eth_signTypedData_v4
	ValidBefore time.Time       `json:"valid_before"`
}

// createTopUp asks settlement for an EIP-3009 TransferWithAuthorization from the user's
// authorized wallet to the treasury, for the page to have signed.
func (s *Server) createTopUp(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	if s.deps.TopUps == nil {
		writeError(w, http.StatusServiceUnavailable, "server_error", "topups_disabled", "", "Top-ups are not configured on this deployment.")
		return
	}
	var req createTopUpRequest
	if !decodeBody(w, r, &req) {
		return
	}
	amount, ok := parseAmount(w, req.Amount, s.opts.TopUpMaxMicro)
	if !ok {
		return
	}
	if amount < s.opts.TopUpMinMicro {
		badRequest(w, "amount_too_small", "amount", "A top-up must be at least "+pricing.FormatUSDC(s.opts.TopUpMinMicro)+" USDC.")
		return
	}
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, c.UserID)
	if errors.Is(err, paywall.ErrNotAuthorized) {
		writeError(w, http.StatusForbidden, "invalid_request_error", "authorization_required", "",
			"Connect a wallet first: "+s.deps.Links.URL(pw.ID, c.UserID, paywall.PurposeAuthorize))
		return
	}
	if err != nil {
		s.unavailable(w, r, "read the authorization", err)
		return
	}
	intent, err := s.deps.TopUps.Create(r.Context(), settlement.TopUpRequest{
		Wallet: a.Wallet, AmountMicro: amount, ChainID: req.ChainID, PaywallID: pw.ID, UserID: c.UserID,
	})
	switch {
	case errors.Is(err, settlement.ErrUnknownChain):
		badRequest(w, "unsupported_chain", "chain_id", "Top-ups are not possible on that network.")
		return
	case errors.Is(err, settlement.ErrInvalidTopUp):
		badRequest(w, "invalid_topup", "amount", strings.TrimPrefix(err.Error(), "settlement: invalid top-up request: ")+".")
		return
	case err != nil:
		s.unavailable(w, r, "start the top-up", err)
		return
	}
	t, err := s.deps.TopUps.Get(r.Context(), intent.ID)
	if err != nil {
		s.unavailable(w, r, "start the top-up", err)
		return
	}
	writeJSON(w, http.StatusCreated, topUpIntentJSON{
		ID: intent.ID, Wallet: a.Wallet, ChainID: t.ChainID, Amount: pricing.FormatUSDC(amount), AmountMicro: amount,
		Currency: currency, TypedData: intent.TypedData, ValidBefore: intent.ValidBefore.UTC(),
	})
}

// topUpJSON is a top-up's state as the page follows it.
type topUpJSON struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"` // awaiting_signature, signed, submitted, credited, failed
	Wallet      string    `json:"wallet"`
	ChainID     string    `json:"chain_id"`
	Amount      string    `json:"amount"`
	AmountMicro int64     `json:"amount_micro"`
	Currency    string    `json:"currency"`
	TxHash      string    `json:"tx_hash,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func toTopUpJSON(t settlement.TopUp) topUpJSON {
	return topUpJSON{
		ID: t.ID, Status: string(t.Status), Wallet: t.Wallet, ChainID: t.ChainID,
		Amount: pricing.FormatUSDC(t.AmountMicro), AmountMicro: t.AmountMicro, Currency: currency,
		TxHash: t.TxHash, Reason: t.Reason, UpdatedAt: t.UpdatedAt.UTC(),
	}
}

// ownTopUp reads a top-up that belongs to the link's paywall and user; any other is answered
// as not found.
func (s *Server) ownTopUp(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims) (settlement.TopUp, bool) {
	if s.deps.TopUps == nil {
		writeError(w, http.StatusServiceUnavailable, "server_error", "topups_disabled", "", "Top-ups are not configured on this deployment.")
		return settlement.TopUp{}, false
	}
	t, err := s.deps.TopUps.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, settlement.ErrTopUpNotFound) || (err == nil && (t.PaywallID != c.PaywallID || t.UserID != c.UserID)) {
		notFoundError(w, "No top-up of yours has that id.")
		return settlement.TopUp{}, false
	}
	if err != nil {
		s.unavailable(w, r, "read the top-up", err)
		return settlement.TopUp{}, false
	}
	return t, true
}

func (s *Server) getTopUp(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, _ paywall.Paywall) {
	if t, ok := s.ownTopUp(w, r, c); ok {
		writeJSON(w, http.StatusOK, toTopUpJSON(t))
	}
}

type signTopUpRequest struct {
	Signature string `json:"signature"` // 0x-hex, from eth_signTypedData_v4 (an EOA's 65 bytes or a contract wallet's, any length)
}

func (s *Server) signTopUp(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, _ paywall.Paywall) {
	var req signTopUpRequest
	if !decodeBody(w, r, &req) {
		return
	}
	t, ok := s.ownTopUp(w, r, c)
	if !ok {
		return
	}
	t, err := s.deps.TopUps.Submit(r.Context(), t.ID, req.Signature)
	switch {
	case errors.Is(err, settlement.ErrBadSignature):
		badRequest(w, "invalid_signature", "signature", "The signature is not your wallet's signature of this top-up; sign again with the connected wallet.")
	case errors.Is(err, settlement.ErrTopUpExpired):
		writeError(w, http.StatusGone, "invalid_request_error", "topup_expired", "", "This top-up expired; start a new one.")
	case errors.Is(err, settlement.ErrContractCall):
		// The chain did not answer whether the contract wallet signed: the signature may be
		// good, so retry rather than sign again (as sign-in does).
		s.unavailable(w, r, "check the contract wallet's signature", err)
	case err != nil:
		s.unavailable(w, r, "take the signature", err)
	default:
		s.opts.Logger.InfoContext(r.Context(), "top-up signed", "topup", t.ID, "paywall", c.PaywallID, "user", c.UserID)
		writeJSON(w, http.StatusOK, toTopUpJSON(t))
	}
}

// pendingMicro sums the wallet's deposits seen on chain and not final yet.
func (s *Server) pendingMicro(r *http.Request, wallet string) (int64, error) {
	if s.deps.TopUps == nil {
		return 0, nil
	}
	ds, err := s.deps.TopUps.PendingDeposits(r.Context(), wallet)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, d := range ds {
		sum += d.AmountMicro
	}
	return sum, nil
}

// walletInfoJSON is what the wallet page shows.
type walletInfoJSON struct {
	Paywall    string       `json:"paywall"`
	User       string       `json:"user"`
	Authorized bool         `json:"authorized"`
	Balance    *balanceJSON `json:"balance,omitempty"`
	TopUpURL   string       `json:"topup_url,omitempty"`
	ConnectURL string       `json:"connect_url,omitempty"`
}

func (s *Server) walletInfo(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	out := walletInfoJSON{Paywall: pw.Name, User: c.UserID}
	b, connectURL, ok := s.pageBalance(w, r, c, pw)
	if !ok {
		return
	}
	out.Authorized, out.Balance, out.ConnectURL = b != nil, b, connectURL
	if b != nil {
		out.TopUpURL = s.deps.Links.URL(pw.ID, c.UserID, paywall.PurposeTopUp)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) walletHistoryPage(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	a, err := s.deps.Paywalls.Authorization(r.Context(), pw.ID, c.UserID)
	if errors.Is(err, paywall.ErrNotAuthorized) {
		writeError(w, http.StatusForbidden, "invalid_request_error", "authorization_required", "", "No wallet is connected for this app.")
		return
	}
	if err != nil {
		s.unavailable(w, r, "read the authorization", err)
		return
	}
	s.writeHistory(w, r, a.Wallet, pw.ID, "")
}

func (s *Server) walletDisconnect(w http.ResponseWriter, r *http.Request, c paywall.LinkClaims, pw paywall.Paywall) {
	err := s.deps.Paywalls.Revoke(r.Context(), pw.ID, c.UserID)
	if err != nil && !errors.Is(err, paywall.ErrNotAuthorized) {
		s.unavailable(w, r, "disconnect the wallet", err)
		return
	}
	s.opts.Logger.InfoContext(r.Context(), "wallet disconnected from the page", "paywall", pw.ID, "user", c.UserID)
	writeJSON(w, http.StatusOK, revokeJSON{User: c.UserID, Revoked: err == nil})
}
