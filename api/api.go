// Package api is Tollgate's HTTP side, served by `tollgate serve` behind Envoy:
//
//   - the JSON API for apps (authenticated with the paywall's key, the user named in the path
//     or by X-Paywall-User): authorization status and link, revocation, balance, top-up link,
//     manual charges and refunds, the user menu and history;
//   - the developer's API: earnings, withdrawals and their status;
//   - the hosted pages a user opens from a paywall message: connect (Sign-In with Ethereum),
//     top-up (an EIP-3009 authorization signed by the wallet) and wallet (balance, history);
//   - the OpenAPI document of all of it.
//
// Money in answers is always USDC: a decimal string and the same amount in micro-USDC.
// Errors are JSON in OpenAI's error shape. A paywall only ever sees its own users, and a page
// only the one wallet its link token is for.
//
// The package owns one table (api_idempotency, see api/schema): the answers to POSTs made with
// an Idempotency-Key.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/siwe"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
)

// Paywalls are the paywall store's lookups and authorizations (*paywall.Store).
type Paywalls interface {
	// ByKey can return paywall.ErrUnknownKey.
	ByKey(ctx context.Context, apiKey string) (paywall.Paywall, error)
	// Get can return paywall.ErrNotFound.
	Get(ctx context.Context, id string) (paywall.Paywall, error)
	// Authorization can return paywall.ErrNotAuthorized, paywall.ErrBadUserID.
	Authorization(ctx context.Context, paywallID, userID string) (paywall.Authorization, error)
	// Authorize can return paywall.ErrNotFound, paywall.ErrBadUserID, paywall.ErrBadWallet.
	Authorize(ctx context.Context, paywallID, userID, wallet string) (paywall.Authorization, error)
	// Revoke can return paywall.ErrNotAuthorized, paywall.ErrBadUserID.
	Revoke(ctx context.Context, paywallID, userID string) error
}

// Ledger is the part of the book of record the API reads and writes (*ledger.Ledger).
type Ledger interface {
	Balance(ctx context.Context, wallet string) (ledger.WalletBalance, error)
	History(ctx context.Context, a ledger.Account, cursor string, limit int) (ledger.HistoryPage, error)
	Charge(ctx context.Context, r ledger.ChargeRequest) (ledger.Transfer, error)
	// GetTransfer and Reversal can return ledger.ErrTransferNotFound.
	GetTransfer(ctx context.Context, transferID string) (ledger.Transfer, error)
	Reversal(ctx context.Context, transferID string) (ledger.Transfer, error)
	Reverse(ctx context.Context, r ledger.ReverseRequest) (ledger.Transfer, error)
	Earnings(ctx context.Context, paywallID string) (ledger.EarningsBalance, error)
	RequestPayout(ctx context.Context, r ledger.PayoutRequest) (ledger.Payout, error)
	GetPayout(ctx context.Context, payoutID string) (ledger.Payout, error)
	Payouts(ctx context.Context, paywallID string, status ledger.PayoutStatus, limit int) ([]ledger.Payout, error)
	PayoutsSince(ctx context.Context, paywallID string, window time.Duration) (ledger.PayoutWindow, error)
}

// Links make and check the hosted pages' link tokens (paywall.Links).
type Links interface {
	URL(paywallID, userID string, p paywall.Purpose) string
	// Verify can return paywall.ErrBadToken, paywall.ErrExpiredToken.
	Verify(token string, p paywall.Purpose) (paywall.LinkClaims, error)
}

// Nonces are Sign-In with Ethereum's single-use nonces (*paywall.Nonces).
type Nonces interface {
	Issue(ctx context.Context, ttl time.Duration) (string, error)
	// Consume can return paywall.ErrNonceUsed.
	Consume(ctx context.Context, nonce string) error
}

// Deps are the stores and services the API uses.
type Deps struct {
	Pool     *pgxpool.Pool // api_idempotency
	Redis    *redis.Client // used-up connect links
	Paywalls Paywalls
	Ledger   Ledger
	Links    Links
	Nonces   Nonces
	// TopUps creates and takes top-up signatures; nil means top-ups are not configured and
	// the top-up page says so.
	TopUps TopUps
	// Signatures verifies Sign-In with Ethereum signatures (EOAs, and EIP-1271 contract
	// wallets when it has a ContractCaller).
	Signatures siwe.Verifier
}

// Options configure the API. PublicURL is required.
type Options struct {
	// PublicURL is where users reach the pages through Envoy (https://pay.example.com). Its
	// host is the Sign-In with Ethereum domain.
	PublicURL string
	// ChainIDs are the chains a wallet may sign in on (the configured settlement chains).
	ChainIDs []uint64
	// RedisPrefix is put before every Redis key.
	RedisPrefix string
	// FeeBps is the platform's fee on manual charges.
	FeeBps int64
	// MaxChargeMicro bounds one manual charge (default 1,000 USDC; serve.api.max_charge_micro).
	MaxChargeMicro int64
	// MinPayoutMicro, MaxPayoutMicro and DailyPayoutMicro bound withdrawals (defaults 1 USDC,
	// 1,000 USDC, 10,000 USDC per paywall per 24 hours; serve.api.min_payout_micro,
	// settle.payouts.max_micro, serve.api.daily_payout_micro). New refuses a minimum above
	// the maximum or above the daily cap: no withdrawal could pass.
	MinPayoutMicro, MaxPayoutMicro, DailyPayoutMicro int64
	// PayoutChains are the chains (decimal ids) a withdrawal may be paid on, in order; a
	// request names one with chain_id, or gets the first (default: ChainIDs).
	PayoutChains []string
	// TopUpMinMicro and TopUpMaxMicro bound a top-up (defaults 0.10 and 10,000 USDC; keep
	// them equal to settle.topups, which settlement enforces too).
	TopUpMinMicro, TopUpMaxMicro int64
	// SignInTTL is how long a Sign-In with Ethereum message (and its nonce) stays valid
	// (default 10 minutes).
	SignInTTL time.Duration
	// LinkTTL is how long link tokens live; a used connect link is remembered that long
	// (default 30 minutes).
	LinkTTL time.Duration
	// IdempotencyRetention is how long the answer to an Idempotency-Key is kept (default
	// DefaultIdempotencyRetention, 24 hours; serve.api.idempotency_retention); Run prunes older ones every PruneInterval
	// (default 10 minutes), PruneBatch rows per statement (default 1,000).
	IdempotencyRetention time.Duration
	PruneInterval        time.Duration
	PruneBatch           int
	Now                  func() time.Time
	Logger               *slog.Logger
}

// Server serves the API and the pages. It is safe for concurrent use.
type Server struct {
	deps Deps
	opts Options
	// signInDomain and signInURI are what sign-in messages name: the public URL's authority
	// and its connect page, as a browser shows them (see signInOrigin).
	signInDomain, signInURI string
	idem                    *idempotency
	routes                  []route
	mux                     *http.ServeMux
	// handler wraps mux with the access log and panic recovery.
	handler http.Handler
	// payoutGate bounds the withdrawals holding or waiting for a payout lock (lockPayouts).
	payoutGate chan struct{}
	// openAPI is the document as JSON, built once.
	openAPI []byte
}

// New checks the options and builds the server.
func New(deps Deps, opts Options) (*Server, error) {
	u, err := url.Parse(opts.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api: public URL must be an absolute http(s) URL, got %q", opts.PublicURL)
	}
	if deps.Pool == nil || deps.Redis == nil || deps.Paywalls == nil || deps.Ledger == nil || deps.Links == nil || deps.Nonces == nil {
		return nil, errors.New("api: Pool, Redis, Paywalls, Ledger, Links and Nonces are required")
	}
	if len(opts.ChainIDs) == 0 {
		return nil, errors.New("api: at least one chain id is needed for Sign-In with Ethereum")
	}
	if opts.FeeBps < 0 || opts.FeeBps > 10_000 {
		return nil, fmt.Errorf("api: platform fee %d bps is outside 0…10000", opts.FeeBps)
	}
	setDefault(&opts.MaxChargeMicro, 1_000_000_000)
	setDefault(&opts.MinPayoutMicro, 1_000_000)
	setDefault(&opts.MaxPayoutMicro, 1_000_000_000)
	setDefault(&opts.DailyPayoutMicro, 10_000_000_000)
	setDefault(&opts.TopUpMinMicro, 100_000)
	setDefault(&opts.TopUpMaxMicro, 10_000_000_000)
	if opts.MinPayoutMicro > opts.MaxPayoutMicro || opts.MinPayoutMicro > opts.DailyPayoutMicro {
		return nil, fmt.Errorf("api: the smallest withdrawal (%d micro-USDC) is above the largest (%d) or the daily cap (%d): no withdrawal could pass",
			opts.MinPayoutMicro, opts.MaxPayoutMicro, opts.DailyPayoutMicro)
	}
	if len(opts.PayoutChains) == 0 {
		for _, id := range opts.ChainIDs {
			opts.PayoutChains = append(opts.PayoutChains, strconv.FormatUint(id, 10))
		}
	}
	for _, id := range opts.PayoutChains {
		if n, err := strconv.ParseUint(id, 10, 64); err != nil || strconv.FormatUint(n, 10) != id {
			return nil, fmt.Errorf("api: payout chain id %q is not a decimal chain id", id)
		}
	}
	setDefault(&opts.SignInTTL, 10*time.Minute)
	setDefault(&opts.LinkTTL, 30*time.Minute)
	setDefault(&opts.IdempotencyRetention, DefaultIdempotencyRetention)
	setDefault(&opts.PruneInterval, defaultPruneInterval)
	setDefault(&opts.PruneBatch, defaultPruneBatch)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	doc, err := OpenAPIJSON()
	if err != nil {
		return nil, err
	}
	domain, origin := signInOrigin(u)
	s := &Server{deps: deps, opts: opts, idem: &idempotency{pool: deps.Pool}, openAPI: doc,
		payoutGate:   make(chan struct{}, max(1, deps.Pool.Config().MaxConns/4)),
		signInDomain: domain, signInURI: origin + strings.TrimRight(u.EscapedPath(), "/") + "/connect"}
	s.routes = s.routeTable()
	s.mux = http.NewServeMux()
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.pattern, rt.handler)
	}
	s.mux.HandleFunc("/", s.notFound)
	s.handler = s.newHandler()
	return s, nil
}

// signInOrigin returns the public URL's authority as EIP-4361 wants it in a message's domain,
// and its origin (scheme://authority). A wallet compares the domain with the page's
// location.host, which a browser writes with a lower-case host, brackets around an IPv6
// address, and no port when it is the scheme's default: so https://Pay.Example.com:443 signs
// in as "pay.example.com", http://x:80 as "x", and https://x:8443 keeps "x:8443".
func signInOrigin(u *url.URL) (domain, origin string) {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	domain = host
	port := u.Port()
	if defaultPort := (scheme == "https" && port == "443") || (scheme == "http" && port == "80"); port != "" && !defaultPort {
		domain = host + ":" + port
	}
	return domain, scheme + "://" + domain
}

// setDefault sets *v to d unless it is positive.
func setDefault[T ~int | ~int64](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// Handler returns the HTTP handler of the API and the pages (the Server itself).
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP serves the API and the pages: every answer is logged, and a panicking handler
// answers 500 (as JSON) instead of taking the process down.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) newHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.opts.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if v := recover(); v != nil {
				// A bug in one handler must not take the process down with every stream.
				s.opts.Logger.ErrorContext(r.Context(), "api: handler panicked", "path", r.URL.Path, "panic", fmt.Sprint(v))
				if !rec.wrote {
					writeError(rec, http.StatusInternalServerError, "server_error", "internal_error", "", "Something went wrong on our side; please retry.")
				}
			}
			level := slog.LevelDebug
			if rec.status >= 500 {
				level = slog.LevelWarn
			}
			s.opts.Logger.Log(r.Context(), level, "api request", "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "duration", s.opts.Now().Sub(start))
		}()
		if !s.canonical(rec, r) {
			return
		}
		s.mux.ServeHTTP(rec, r)
	})
}

// canonical answers, as JSON, the requests http.ServeMux would answer itself with a redirect
// or a plain-text page, and reports whether r may go on to the mux: a path with empty, "." or
// ".." segments (ServeMux redirects it to the cleaned path with an HTML body) and a request
// without a path (CONNECT host:port, OPTIONS *). Such a path is 404, not a redirect: clients
// build paths from a base URL, a redirect would hide their mistake, and following one with a
// POST that moves money is not something to invite.
func (s *Server) canonical(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, "/") {
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "",
			fmt.Sprintf("No such endpoint: %s %s. The API is described at /api/v1/openapi.json.", r.Method, r.RequestURI))
		return false
	}
	if r.Method == http.MethodConnect { // ServeMux matches CONNECT paths as they are
		return true
	}
	if clean := cleanPath(p); clean != p {
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "",
			fmt.Sprintf("No such endpoint: %s %s. Paths must be canonical (no empty, . or .. segments); did you mean %s?", r.Method, p, clean))
		return false
	}
	return true
}

// cleanPath is the path http.ServeMux serves for p (its own canonical form): path.Clean,
// keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// statusRecorder remembers the status a handler wrote, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// route is one entry of the mux; the OpenAPI test checks the table against the document.
type route struct {
	method, pattern string
	handler         http.Handler
}

func (s *Server) routeTable() []route {
	var rs []route
	add := func(method, pattern string, h http.HandlerFunc) {
		rs = append(rs, route{method, pattern, h})
	}
	// The app's API: every user endpoint twice, with the user in the path or in X-Paywall-User.
	for _, prefix := range []string{"/api/v1/users/{user}", "/api/v1/user"} {
		add("GET", prefix+"/authorization", s.withUser(s.getAuthorization))
		add("DELETE", prefix+"/authorization", s.withUser(s.revokeAuthorization))
		add("GET", prefix+"/balance", s.withUser(s.getBalance))
		add("GET", prefix+"/topup-link", s.withUser(s.getTopUpLink))
		add("POST", prefix+"/charges", s.withUser(s.postCharge))
		add("GET", prefix+"/charges/{id}", s.withUser(s.getCharge))
		add("POST", prefix+"/charges/{id}/refund", s.withUser(s.postRefund))
		add("GET", prefix+"/menu", s.withUser(s.getMenu))
		add("GET", prefix+"/history", s.withUser(s.getHistory))
	}
	// The developer's API.
	add("GET", "/api/v1/earnings", s.withPaywall(s.getEarnings))
	add("GET", "/api/v1/earnings/history", s.withPaywall(s.getEarningsHistory))
	add("POST", "/api/v1/payouts", s.withPaywall(s.postPayout))
	add("GET", "/api/v1/payouts", s.withPaywall(s.listPayouts))
	add("GET", "/api/v1/payouts/{id}", s.withPaywall(s.getPayout))
	// The document.
	add("GET", "/api/v1/openapi.json", s.getOpenAPI)
	// The hosted pages and what their scripts call.
	s.addPageRoutes(add)
	return rs
}

// notFound answers every request the routes do not match: 405 with Allow when the path
// exists for other methods, else 404, both as JSON.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"GET", "POST", "DELETE"} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "",
			fmt.Sprintf("%s is not allowed on %s; use %s.", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "",
		fmt.Sprintf("No such endpoint: %s %s. The API is described at /api/v1/openapi.json.", r.Method, r.URL.Path))
}
