package extproc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// fakeLedger is an in-memory stand-in for the ledger at the Ledger seam, for unit tests and
// the benchmarks: holds, captures with overrun and shortfall, voids, idempotent by key. The
// real ledger is used by the integration tests.
type fakeLedger struct {
	mu       sync.Mutex
	wallets  map[string]*fakeWallet
	holds    map[string]*ledger.Hold
	byKey    map[string]string // hold key → hold id
	captures map[string]ledger.CaptureRequest
	charged  map[string]int64 // hold id → micro-USDC debited by its capture
	voids    int
	balances int   // Balance calls
	failHold error // returned by Hold when set
	// refuse makes the next refuse holds fail with ErrInsufficientFunds whatever the balance,
	// as when another request of the same wallet takes the money first.
	refuse   int
	holdKeys []string // the key of every Hold call, in order
	n        int
}

type fakeWallet struct{ posted, held int64 }

func newFakeLedger() *fakeLedger {
	return &fakeLedger{wallets: map[string]*fakeWallet{}, holds: map[string]*ledger.Hold{},
		byKey: map[string]string{}, captures: map[string]ledger.CaptureRequest{}, charged: map[string]int64{}}
}

func (l *fakeLedger) deposit(wallet string, micro int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.wallets[wallet]
	if w == nil {
		w = &fakeWallet{}
		l.wallets[wallet] = w
	}
	w.posted += micro
}

func (l *fakeLedger) Hold(ctx context.Context, r ledger.HoldRequest) (ledger.Hold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holdKeys = append(l.holdKeys, r.Key)
	if l.failHold != nil {
		return ledger.Hold{}, l.failHold
	}
	if l.refuse > 0 {
		l.refuse--
		return ledger.Hold{}, ledger.ErrInsufficientFunds
	}
	if id, ok := l.byKey[r.Key]; ok {
		return *l.holds[id], nil
	}
	w := l.wallets[r.Wallet]
	if w == nil {
		return ledger.Hold{}, ledger.ErrUnknownAccount
	}
	if r.AmountMicro <= 0 {
		return ledger.Hold{}, ledger.ErrInvalid
	}
	if w.posted-w.held < r.AmountMicro {
		return ledger.Hold{}, ledger.ErrInsufficientFunds
	}
	w.held += r.AmountMicro
	l.n++
	h := &ledger.Hold{ID: fmt.Sprintf("hold-%d", l.n), Wallet: r.Wallet, Paywall: r.Paywall, AmountMicro: r.AmountMicro,
		Status: ledger.HoldOpen, ExpiresAt: time.Now().Add(r.TTL)}
	l.holds[h.ID] = h
	l.byKey[r.Key] = h.ID
	return *h, nil
}

func (l *fakeLedger) Capture(ctx context.Context, r ledger.CaptureRequest) (ledger.CaptureResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.holds[r.HoldID]
	if h == nil {
		return ledger.CaptureResult{}, ledger.ErrHoldNotFound
	}
	if prev, ok := l.captures[r.HoldID]; ok && prev.Key == r.Key {
		// The same key again: the first result, as the ledger's idempotency keys promise.
		if prev.Split != r.Split {
			return ledger.CaptureResult{}, ledger.ErrIdempotencyConflict
		}
		charged := l.charged[r.HoldID]
		want := r.Split.TotalMicro()
		return ledger.CaptureResult{ChargedMicro: charged, ReleasedMicro: max(h.AmountMicro-charged, 0), ShortfallMicro: want - charged}, nil
	}
	if h.Status != ledger.HoldOpen {
		return ledger.CaptureResult{}, ledger.ErrHoldFinished
	}
	w := l.wallets[h.Wallet]
	want := r.Split.TotalMicro()
	w.held -= h.AmountMicro
	charged := min(want, w.posted-w.held) // the hold plus what else is available
	w.posted -= charged
	h.Status = ledger.HoldCaptured
	l.captures[r.HoldID] = r
	l.charged[r.HoldID] = charged
	return ledger.CaptureResult{ChargedMicro: charged, ReleasedMicro: max(h.AmountMicro-charged, 0), ShortfallMicro: want - charged}, nil
}

func (l *fakeLedger) Void(ctx context.Context, holdID string) (ledger.Hold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.holds[holdID]
	if h == nil {
		return ledger.Hold{}, ledger.ErrHoldNotFound
	}
	if h.Status == ledger.HoldCaptured {
		return ledger.Hold{}, ledger.ErrHoldFinished
	}
	if h.Status == ledger.HoldOpen {
		l.wallets[h.Wallet].held -= h.AmountMicro
		h.Status = ledger.HoldVoided
		l.voids++
	}
	return *h, nil
}

func (l *fakeLedger) Balance(ctx context.Context, wallet string) (ledger.WalletBalance, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.balances++
	w := l.wallets[wallet]
	if w == nil {
		return ledger.WalletBalance{}, ledger.ErrUnknownAccount
	}
	return ledger.WalletBalance{PostedMicro: w.posted, HeldMicro: w.held, AvailableMicro: w.posted - w.held}, nil
}

// state returns a wallet's posted and held money and the number of open holds.
func (l *fakeLedger) state(wallet string) (posted, held int64, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.holds {
		if h.Status == ledger.HoldOpen {
			open++
		}
	}
	if w := l.wallets[wallet]; w != nil {
		return w.posted, w.held, open
	}
	return 0, 0, open
}

func (l *fakeLedger) onlyCapture() (ledger.CaptureRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.captures {
		if len(l.captures) == 1 {
			return c, true
		}
	}
	return ledger.CaptureRequest{}, false
}

// fakePaywalls serves paywalls and authorizations from maps.
type fakePaywalls struct {
	mu    sync.Mutex
	keys  map[string]paywall.Paywall
	auths map[string]string // paywallID + "/" + user → wallet
}

func (f *fakePaywalls) ByKey(ctx context.Context, key string) (paywall.Paywall, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.keys[key]; ok {
		return p, nil
	}
	return paywall.Paywall{}, paywall.ErrUnknownKey
}

func (f *fakePaywalls) Authorization(ctx context.Context, paywallID, userID string) (paywall.Authorization, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.auths[paywallID+"/"+userID]; ok {
		return paywall.Authorization{PaywallID: paywallID, UserID: userID, Wallet: w}, nil
	}
	return paywall.Authorization{}, paywall.ErrNotAuthorized
}

// fakePrices prices models from a map, the same for every paywall.
type fakePrices map[string]pricing.Price

func (f fakePrices) Lookup(ctx context.Context, paywallID, model string) (pricing.Price, error) {
	if p, ok := f[model]; ok {
		return p, nil
	}
	return pricing.Price{}, pricing.ErrUnpricedModel
}

// fakeLinks makes recognisable links.
type fakeLinks struct{}

func (fakeLinks) URL(paywallID, userID string, p paywall.Purpose) string {
	return "https://pay.example/" + string(p) + "?pw=" + paywallID + "&u=" + userID
}

// fakeClock is a fixed time.
type fakeClock struct{ t time.Time }

func (c fakeClock) Now() time.Time { return c.t }

// price returns a price of in and out micro-USDC per token (USDC per 1M tokens).
func price(in, out int64) pricing.Price {
	return pricing.Price{Input: pricing.NewDecimal(in, 0), Output: pricing.NewDecimal(out, 0)}
}

// balanceReads is how many times Balance was called.
func (l *fakeLedger) balanceReads() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.balances
}
