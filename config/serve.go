package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Serve configures `tollgate serve`: the ext_proc gRPC server, the HTTP API and hosted pages,
// and the admin (metrics and health) listener.
type Serve struct {
	GRPCAddr  string `yaml:"grpc_addr"`  // ext_proc, for Envoy
	HTTPAddr  string `yaml:"http_addr"`  // API and hosted pages, routed through Envoy
	AdminAddr string `yaml:"admin_addr"` // /metrics, /healthz; private
	// PublicURL is where users reach the hosted pages (through Envoy); links point there.
	PublicURL string `yaml:"public_url"`
	// LinkSecret signs link tokens (authorize, top-up); at least 32 bytes.
	LinkSecret string `yaml:"link_secret" secret:"true"`
	// LinkTTL is how long a link stays valid.
	LinkTTL time.Duration `yaml:"link_ttl"`
	// ShutdownGrace bounds how long shutdown waits for open streams to finish on their own;
	// the streams still open then are cancelled and settled from an estimate.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`

	// Provider is the built-in provider that built-in paywalls use, with the operator's key.
	Provider Provider `yaml:"provider"`
	// FeeBps is the platform fee in basis points of every charge (0…10000).
	FeeBps int64 `yaml:"fee_bps"`
	// RoutingHeader is the request header the Envoy routes match on to pick the upstream.
	RoutingHeader string `yaml:"routing_header"`
	// HoldTTL is how long a hold lives if the server dies before capturing it; the sweeper then
	// releases it. It also bounds a per-user concurrency slot. Longer than any response.
	HoldTTL time.Duration `yaml:"hold_ttl"`
	// DefaultMaxTokens is the completion budget when neither request nor paywall sets one.
	DefaultMaxTokens int64 `yaml:"default_max_tokens"`
	// MinCompletionTokens: below this affordable budget (when the paywall sets none), the user
	// gets the top-up message.
	MinCompletionTokens int64 `yaml:"min_completion_tokens"`
	// MaxTokensLimit is the largest max_tokens a request may ask for.
	MaxTokensLimit int64 `yaml:"max_tokens_limit"`
	// PromptMarginPct is added to the prompt's token estimate when sizing a hold.
	PromptMarginPct int64 `yaml:"prompt_margin_pct"`
	// MaxBodyBytes bounds a request body (Envoy's buffer limit should match).
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// GRPCMaxRecvBytes is the gRPC receive limit: a buffered body plus framing must fit.
	GRPCMaxRecvBytes int `yaml:"grpc_max_recv_bytes"`
	// MessageBudget bounds the store calls behind one ext_proc answer; keep it below the
	// filter's message_timeout (envoy/envoy.yaml: 2s), or Envoy answers 504 first.
	MessageBudget time.Duration `yaml:"message_budget"`
	// SettleTimeout bounds one capture or void (with its retries).
	SettleTimeout time.Duration `yaml:"settle_timeout"`
	// MaxEventBytes bounds one SSE event buffered across chunks.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// SweepInterval is how often this replica releases expired holds; SweepBatch bounds one
	// sweep.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	SweepBatch    int           `yaml:"sweep_batch"`

	// API bounds the HTTP API's money moves and how long it keeps idempotent answers.
	API ServeAPI `yaml:"api"`
}

// ServeAPI configures the HTTP API (package api, docs/api.md).
type ServeAPI struct {
	// MaxChargeMicro bounds one manual charge (POST …/charges).
	MaxChargeMicro int64 `yaml:"max_charge_micro"`
	// MinPayoutMicro is the smallest withdrawal; the largest is settle.payouts.max_micro.
	MinPayoutMicro int64 `yaml:"min_payout_micro"`
	// DailyPayoutMicro caps what one paywall may ask to withdraw in any 24 hours.
	DailyPayoutMicro int64 `yaml:"daily_payout_micro"`
	// IdempotencyRetention is how long the answer to an Idempotency-Key is kept for retries.
	IdempotencyRetention time.Duration `yaml:"idempotency_retention"`
}

func defaultServeAPI() ServeAPI {
	return ServeAPI{
		MaxChargeMicro:       1_000_000_000,  // 1,000 USDC
		MinPayoutMicro:       1_000_000,      // 1 USDC
		DailyPayoutMicro:     10_000_000_000, // 10,000 USDC
		IdempotencyRetention: 24 * time.Hour,
	}
}

// maxUSDCMicro bounds every amount setting: a billion USDC, far beyond any real one and far
// from int64 overflow when amounts are added up.
const maxUSDCMicro = 1_000_000_000 * 1_000_000

func (a ServeAPI) problems() []error {
	var p []error
	bad := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	if a.MaxChargeMicro < 1 || a.MaxChargeMicro > maxUSDCMicro {
		bad("serve.api.max_charge_micro: must be 1…%d micro-USDC, got %d", int64(maxUSDCMicro), a.MaxChargeMicro)
	}
	if a.MinPayoutMicro < 1 || a.MinPayoutMicro > maxUSDCMicro {
		bad("serve.api.min_payout_micro: must be 1…%d micro-USDC, got %d", int64(maxUSDCMicro), a.MinPayoutMicro)
	}
	if a.DailyPayoutMicro < max(a.MinPayoutMicro, 1) || a.DailyPayoutMicro > maxUSDCMicro {
		bad("serve.api.daily_payout_micro: must be min_payout_micro (%d)…%d micro-USDC, got %d", a.MinPayoutMicro, int64(maxUSDCMicro), a.DailyPayoutMicro)
	}
	if a.IdempotencyRetention < time.Hour || a.IdempotencyRetention > 30*24*time.Hour {
		bad("serve.api.idempotency_retention: must be 1h…720h, got %s", a.IdempotencyRetention)
	}
	return p
}

// Provider is the built-in LLM provider.
type Provider struct {
	// Name is the provider's account in the ledger (what it is owed), e.g. "openrouter".
	Name string `yaml:"name"`
	// APIKey is the operator's credential, sent upstream for built-in paywalls.
	APIKey string `yaml:"api_key" secret:"true"`
	// Upstream is the routing header value of the provider's Envoy route (default: Name).
	Upstream string `yaml:"upstream"`
	// GenerationURL is the provider's record of each generation (OpenRouter's GET
	// /api/v1/generation?id=), asked for the usage of a request whose stream ended early.
	GenerationURL string `yaml:"generation_url"`
	// GenerationWait is how long such a request's capture waits for that record before it
	// charges the estimate; 0 never asks.
	GenerationWait time.Duration `yaml:"generation_wait"`
}

func defaultServe() Serve {
	return Serve{
		GRPCAddr:            "127.0.0.1:9001",
		HTTPAddr:            "127.0.0.1:9002",
		AdminAddr:           "127.0.0.1:9003",
		PublicURL:           "http://127.0.0.1:10000",
		LinkTTL:             30 * time.Minute,
		ShutdownGrace:       30 * time.Second,
		Provider:            Provider{Name: "openrouter", GenerationURL: "https://openrouter.ai/api/v1/generation", GenerationWait: time.Minute},
		FeeBps:              500,
		RoutingHeader:       "x-tollgate-upstream",
		HoldTTL:             15 * time.Minute,
		DefaultMaxTokens:    1024,
		MinCompletionTokens: 16,
		MaxTokensLimit:      1_000_000,
		PromptMarginPct:     20,
		MaxBodyBytes:        8 << 20,
		GRPCMaxRecvBytes:    64 << 20,
		MessageBudget:       1500 * time.Millisecond,
		SettleTimeout:       10 * time.Second,
		MaxEventBytes:       1 << 20,
		SweepInterval:       30 * time.Second,
		SweepBatch:          500,
		API:                 defaultServeAPI(),
	}
}

func (s Serve) problems() []error {
	var p []error
	bad := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	for _, a := range []struct{ name, addr string }{
		{"serve.grpc_addr", s.GRPCAddr}, {"serve.http_addr", s.HTTPAddr}, {"serve.admin_addr", s.AdminAddr},
	} {
		if a.addr == "" {
			bad("%s: required", a.name)
		}
	}
	if !absHTTPURL(s.PublicURL) {
		bad("serve.public_url: must be an absolute http(s) URL, got %q", s.PublicURL)
	}
	if s.LinkSecret != "" && len(s.LinkSecret) < 32 {
		p = append(p, errors.New("serve.link_secret: must be at least 32 bytes"))
	}
	if s.LinkTTL <= 0 {
		bad("serve.link_ttl: must be positive, got %s", s.LinkTTL)
	}
	if s.ShutdownGrace < 0 {
		bad("serve.shutdown_grace: must not be negative, got %s", s.ShutdownGrace)
	}
	if s.Provider.Name == "" {
		bad("serve.provider.name: required (the built-in provider's ledger account, e.g. openrouter)")
	}
	if s.FeeBps < 0 || s.FeeBps > 10_000 {
		bad("serve.fee_bps: must be 0…10000 basis points, got %d", s.FeeBps)
	}
	if !validHeaderName(s.RoutingHeader) {
		bad("serve.routing_header: must be a lower-case header name (not :pseudo, host or x-envoy-*), got %q", s.RoutingHeader)
	}
	if s.HoldTTL < time.Minute || s.HoldTTL > 24*time.Hour {
		bad("serve.hold_ttl: must be 1m…24h, got %s", s.HoldTTL)
	}
	if s.MaxTokensLimit < 1 {
		bad("serve.max_tokens_limit: must be at least 1, got %d", s.MaxTokensLimit)
	}
	if s.DefaultMaxTokens < 1 || s.DefaultMaxTokens > s.MaxTokensLimit {
		bad("serve.default_max_tokens: must be 1…max_tokens_limit (%d), got %d", s.MaxTokensLimit, s.DefaultMaxTokens)
	}
	if s.MinCompletionTokens < 1 {
		bad("serve.min_completion_tokens: must be at least 1, got %d", s.MinCompletionTokens)
	}
	if s.PromptMarginPct < 0 || s.PromptMarginPct > 1000 {
		bad("serve.prompt_margin_pct: must be 0…1000, got %d", s.PromptMarginPct)
	}
	if s.MaxBodyBytes < 1<<10 {
		bad("serve.max_body_bytes: must be at least 1024, got %d", s.MaxBodyBytes)
	}
	if s.GRPCMaxRecvBytes < s.MaxBodyBytes+64<<10 {
		bad("serve.grpc_max_recv_bytes: must be at least max_body_bytes + 64KiB (%d), got %d", s.MaxBodyBytes+64<<10, s.GRPCMaxRecvBytes)
	}
	if s.MessageBudget <= 0 || s.MessageBudget > time.Minute {
		bad("serve.message_budget: must be positive and at most 1m, got %s", s.MessageBudget)
	}
	if s.Provider.GenerationWait < 0 || s.Provider.GenerationWait > 10*time.Minute {
		bad("serve.provider.generation_wait: must be 0 (never ask)…10m, got %s", s.Provider.GenerationWait)
	}
	if s.Provider.GenerationWait > 0 && !absHTTPURL(s.Provider.GenerationURL) {
		bad("serve.provider.generation_url: must be an absolute http(s) URL when generation_wait is set, got %q", s.Provider.GenerationURL)
	}
	if s.SettleTimeout <= 0 {
		bad("serve.settle_timeout: must be positive, got %s", s.SettleTimeout)
	}
	if s.MaxEventBytes < 4<<10 {
		bad("serve.max_event_bytes: must be at least 4096, got %d", s.MaxEventBytes)
	}
	if s.SweepInterval <= 0 {
		bad("serve.sweep_interval: must be positive, got %s", s.SweepInterval)
	}
	if s.SweepBatch < 1 {
		bad("serve.sweep_batch: must be at least 1, got %d", s.SweepBatch)
	}
	p = append(p, s.API.problems()...)
	return p
}

// validHeaderName reports whether h is a header the ext_proc server may set on a request.
func validHeaderName(h string) bool {
	if h == "" || h == "host" || strings.HasPrefix(h, "x-envoy-") || h != strings.ToLower(h) {
		return false
	}
	for _, c := range h {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// absHTTPURL reports whether s is an absolute http(s) URL with a host.
func absHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
