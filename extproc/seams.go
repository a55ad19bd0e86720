// Package extproc is Tollgate's Envoy external processor (envoy.service.ext_proc.v3): for each
// chat completion it finds the paywall and the user, checks the authorization, reserves a hold
// on the user's wallet, rewrites the request for the upstream, meters the streamed or buffered
// response, and captures the charge when the response ends — or settles from an estimate when
// the client goes away.
//
// One Processor serves one gRPC stream (one HTTP request), with one method per phase; Server
// owns the Recv/Send loop, cancellation, health and graceful shutdown. The ledger, paywall
// lookups, prices, links, caps and the clock are reached through the small interfaces below,
// so tests can put fakes at those seams and the benchmarks can run without a database.
//
// The request path must stay free of chain code: extproc imports neither go-ethereum nor
// settlement/ (deps_test.go checks it).
package extproc

import (
	"context"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/journal"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// Ledger is the part of the book of record the request path uses (*ledger.Ledger).
type Ledger interface {
	// Hold can return ledger.ErrInsufficientFunds, ledger.ErrUnknownAccount and others.
	Hold(ctx context.Context, r ledger.HoldRequest) (ledger.Hold, error)
	// Capture can return ledger.ErrHoldExpired, ledger.ErrHoldFinished, ledger.ErrAmbiguous …
	Capture(ctx context.Context, r ledger.CaptureRequest) (ledger.CaptureResult, error)
	// Void can return ledger.ErrHoldFinished, ledger.ErrAmbiguous …
	Void(ctx context.Context, holdID string) (ledger.Hold, error)
	// Balance can return ledger.ErrUnknownAccount (a wallet never credited).
	Balance(ctx context.Context, wallet string) (ledger.WalletBalance, error)
}

// Paywalls are the lookups of paywalls and authorizations (*paywall.Store).
type Paywalls interface {
	// ByKey can return paywall.ErrUnknownKey.
	ByKey(ctx context.Context, apiKey string) (paywall.Paywall, error)
	// Authorization can return paywall.ErrNotAuthorized, paywall.ErrBadUserID.
	Authorization(ctx context.Context, paywallID, userID string) (paywall.Authorization, error)
}

// Prices give a model's price for a paywall (*pricing.Catalog).
type Prices interface {
	// Lookup can return pricing.ErrUnpricedModel.
	Lookup(ctx context.Context, paywallID, model string) (pricing.Price, error)
}

// Links make the hosted-page links of paywall messages (paywall.Links).
type Links interface {
	URL(paywallID, userID string, p paywall.Purpose) string
}

// Limiter enforces per-user concurrency and rate caps (*limits.Limiter). Acquire returns
// a non-nil release func when it admitted the request; the caller must call it exactly once.
type Limiter interface {
	// Acquire can return ErrTooManyConcurrent or ErrRateLimited (wrapped).
	Acquire(ctx context.Context, key string, maxConcurrent, perMinute int, requestID string) (release func(context.Context), err error)
}

// Generations are the built-in provider's records of what a generation used
// (*generation.Client: OpenRouter's /api/v1/generation).
type Generations interface {
	// Usage can return generation.ErrNotYet (ask again later) and generation.ErrBadAnswer.
	Usage(ctx context.Context, id string) (pricing.Usage, error)
}

// Journal keeps the settlements retried in the background where every replica sees them
// (*journal.Journal, in Redis): leased to the replica retrying them, taken over by another
// when that replica stops or dies.
type Journal interface {
	// Put records data under id, leased to the caller for lease.
	Put(ctx context.Context, id string, data []byte, lease time.Duration) error
	// Renew extends the caller's lease; it can return journal.ErrNotFound.
	Renew(ctx context.Context, id string, lease time.Duration) error
	// Release ends the caller's lease at once.
	Release(ctx context.Context, id string) error
	// Done removes the entry.
	Done(ctx context.Context, id string) error
	// Claim takes up to max entries nobody holds, leasing each to the caller.
	Claim(ctx context.Context, max int, lease time.Duration) ([]journal.Job, error)
	// Len counts the entries.
	Len(ctx context.Context) (int64, error)
}

// Clock tells the time; tests substitute a fake.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
