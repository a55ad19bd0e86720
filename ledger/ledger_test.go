package ledger_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
)

// fixture is a ledger on a fresh database.
type fixture struct {
	t  *testing.T
	db *testdb.DB
	l  *ledger.Ledger
}

func newFixture(t *testing.T, opts ledger.Options) *fixture {
	t.Helper()
	db := testdb.New(t, ledger.Migrations)
	return &fixture{t: t, db: db, l: ledger.New(db.Pool, opts)}
}

func addr(i int) string { return fmt.Sprintf("0x%040x", i) }

// fund deposits amount into wallet under a fresh key.
func (f *fixture) fund(wallet string, amount int64) ledger.Transfer {
	f.t.Helper()
	tr, err := f.l.Deposit(f.t.Context(), ledger.DepositRequest{
		Key: fmt.Sprintf("fund:%s:%d:%d", wallet, amount, time.Now().UnixNano()), ChainID: "137", Wallet: wallet, AmountMicro: amount,
	})
	if err != nil {
		f.t.Fatalf("deposit: %v", err)
	}
	return tr
}

func (f *fixture) hold(key, wallet, paywall string, amount int64, ttl time.Duration) ledger.Hold {
	f.t.Helper()
	h, err := f.l.Hold(f.t.Context(), ledger.HoldRequest{Key: key, Wallet: wallet, AmountMicro: amount, Paywall: paywall, TTL: ttl})
	if err != nil {
		f.t.Fatalf("hold %s: %v", key, err)
	}
	return h
}

func (f *fixture) balance(wallet string) ledger.WalletBalance {
	f.t.Helper()
	b, err := f.l.Balance(f.t.Context(), wallet)
	if err != nil {
		f.t.Fatalf("balance: %v", err)
	}
	return b
}

func (f *fixture) wantBalance(wallet string, posted, held int64) {
	f.t.Helper()
	b := f.balance(wallet)
	if b.PostedMicro != posted || b.HeldMicro != held || b.AvailableMicro != posted-held {
		f.t.Fatalf("balance of %s = %+v, want posted %d held %d", wallet, b, posted, held)
	}
}

// sum returns the posted total of an account over its shards, straight from the database.
func (f *fixture) sum(a ledger.Account) int64 {
	f.t.Helper()
	var s int64
	err := f.db.Pool.QueryRow(f.t.Context(),
		`SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = $1 AND ref = $2`, string(a.Kind), a.Ref).Scan(&s)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// check runs the invariant checker and fails on any violation.
func (f *fixture) check() {
	f.t.Helper()
	v, err := ledgercheck.Check(f.t.Context(), f.db.Pool)
	if err != nil {
		f.t.Fatalf("checker: %v", err)
	}
	for _, s := range v {
		f.t.Errorf("invariant violated: %s", s)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

func TestEnsureAccount(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	for _, a := range []ledger.Account{ledger.Wallet("0x" + "AB" + fmt.Sprintf("%038x", 7)), ledger.Earnings("pw"), ledger.PlatformFees(),
		ledger.ProviderCosts("openrouter"), ledger.Treasury("137"), ledger.PayoutsInFlight("137")} {
		for range 2 { // twice is harmless
			if err := f.l.EnsureAccount(ctx, a); err != nil {
				t.Fatalf("EnsureAccount(%v): %v", a, err)
			}
		}
	}
	// A fresh Ledger (no cache) creating them again is harmless too.
	if err := ledger.New(f.db.Pool, ledger.Options{Shards: 4}).EnsureAccount(ctx, ledger.Earnings("pw")); err != nil {
		t.Fatal(err)
	}
	var wallets, earnings int
	if err := f.db.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM ledger_balances WHERE kind = 'wallet'),
		(SELECT count(*) FROM ledger_balances WHERE kind = 'earnings')`).Scan(&wallets, &earnings); err != nil {
		t.Fatal(err)
	}
	if wallets != 1 || earnings != 4 {
		t.Fatalf("balance rows: %d wallet, %d earnings; want 1 and 4 (shards)", wallets, earnings)
	}
	for _, bad := range []ledger.Account{{Kind: "nope", Ref: "x"}, ledger.Wallet("0x12"), ledger.Wallet("0x" + fmt.Sprintf("%039x", 1) + "g"),
		{Kind: ledger.KindPlatformFees, Ref: "x"}, ledger.Earnings(""), ledger.Treasury(" ")} {
		wantErr(t, f.l.EnsureAccount(ctx, bad), ledger.ErrInvalid)
	}
}

func TestDeposit(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	req := ledger.DepositRequest{Key: "137:0xtx:1", ChainID: "137", Wallet: w, AmountMicro: 5_000_000, Metadata: map[string]string{"tx": "0xtx"}}
	first, err := f.l.Deposit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Kind != ledger.KindDeposit || len(first.Entries) != 2 || first.Metadata["tx"] != "0xtx" {
		t.Fatalf("deposit = %+v", first)
	}
	f.wantBalance(w, 5_000_000, 0)
	if got := f.sum(ledger.Treasury("137")); got != -5_000_000 {
		t.Fatalf("treasury = %d, want -5000000 (it may go negative)", got)
	}

	t.Run("replay with the same request returns the first transfer", func(t *testing.T) {
		again := req
		again.Metadata = map[string]string{"reported-by": "another worker"} // metadata is not part of the request
		tr, err := f.l.Deposit(t.Context(), again)
		if err != nil || tr.ID != first.ID || tr.Metadata["tx"] != "0xtx" {
			t.Fatalf("replay = %+v, %v; want transfer %s", tr, err, first.ID)
		}
		f.wantBalance(w, 5_000_000, 0)
	})
	t.Run("same key, different request is a conflict", func(t *testing.T) {
		for _, mod := range []func(*ledger.DepositRequest){
			func(r *ledger.DepositRequest) { r.AmountMicro++ },
			func(r *ledger.DepositRequest) { r.Wallet = addr(2) },
			func(r *ledger.DepositRequest) { r.ChainID = "80002" },
		} {
			r := req
			mod(&r)
			_, err := f.l.Deposit(t.Context(), r)
			wantErr(t, err, ledger.ErrIdempotencyConflict)
		}
		f.wantBalance(w, 5_000_000, 0)
	})
	t.Run("invalid requests", func(t *testing.T) {
		for name, r := range map[string]ledger.DepositRequest{
			"empty key":     {ChainID: "137", Wallet: w, AmountMicro: 1},
			"reserved key":  {Key: "ledger:x", ChainID: "137", Wallet: w, AmountMicro: 1},
			"no chain":      {Key: "k", Wallet: w, AmountMicro: 1},
			"bad wallet":    {Key: "k", ChainID: "137", Wallet: "alice", AmountMicro: 1},
			"zero amount":   {Key: "k", ChainID: "137", Wallet: w},
			"negative":      {Key: "k", ChainID: "137", Wallet: w, AmountMicro: -1},
			"absurd amount": {Key: "k", ChainID: "137", Wallet: w, AmountMicro: 1 << 62},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := f.l.Deposit(t.Context(), r)
				wantErr(t, err, ledger.ErrInvalid)
			})
		}
	})
	f.check()
}

func TestHold(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 1000)
	req := ledger.HoldRequest{Key: "req-1", Wallet: w, AmountMicro: 600, Paywall: "pw", TTL: time.Minute}
	h, err := f.l.Hold(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != ledger.HoldOpen || h.AmountMicro != 600 || h.Wallet != w || time.Until(h.ExpiresAt) < 50*time.Second {
		t.Fatalf("hold = %+v", h)
	}
	f.wantBalance(w, 1000, 600)

	t.Run("insufficient funds changes nothing", func(t *testing.T) {
		_, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: "req-2", Wallet: w, AmountMicro: 401, Paywall: "pw", TTL: time.Minute})
		wantErr(t, err, ledger.ErrInsufficientFunds)
		f.wantBalance(w, 1000, 600)
	})
	t.Run("replay returns the first hold even when the money is gone", func(t *testing.T) {
		again, err := f.l.Hold(t.Context(), req)
		if err != nil || again.ID != h.ID {
			t.Fatalf("replay = %+v, %v", again, err)
		}
		f.wantBalance(w, 1000, 600)
	})
	t.Run("same key, different request", func(t *testing.T) {
		r := req
		r.AmountMicro = 10
		_, err := f.l.Hold(t.Context(), r)
		wantErr(t, err, ledger.ErrIdempotencyConflict)
		r = req
		r.Paywall = "other"
		_, err = f.l.Hold(t.Context(), r)
		wantErr(t, err, ledger.ErrIdempotencyConflict)
	})
	t.Run("a failed key may succeed later", func(t *testing.T) {
		r := ledger.HoldRequest{Key: "req-3", Wallet: w, AmountMicro: 900, Paywall: "pw", TTL: time.Minute}
		_, err := f.l.Hold(t.Context(), r)
		wantErr(t, err, ledger.ErrInsufficientFunds)
		f.fund(w, 1000)
		h3, err := f.l.Hold(t.Context(), r)
		if err != nil {
			t.Fatalf("hold after top-up: %v", err)
		}
		f.wantBalance(w, 2000, 1500)
		if _, err := f.l.Void(t.Context(), h3.ID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("hold keys and transfer keys are separate namespaces", func(t *testing.T) {
		if _, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: req.Key, HoldID: h.ID, Split: ledger.Split{DeveloperMicro: 100}}); err != nil {
			t.Fatalf("capture keyed like its hold: %v", err)
		}
	})
	t.Run("unknown wallet", func(t *testing.T) {
		_, err := f.l.Hold(t.Context(), ledger.HoldRequest{Key: "req-4", Wallet: addr(99), AmountMicro: 1, Paywall: "pw", TTL: time.Minute})
		wantErr(t, err, ledger.ErrUnknownAccount)
	})
	t.Run("invalid requests", func(t *testing.T) {
		for name, r := range map[string]ledger.HoldRequest{
			"no key":      {Wallet: w, AmountMicro: 1, Paywall: "pw", TTL: time.Minute},
			"bad wallet":  {Key: "k", Wallet: "0x1", AmountMicro: 1, Paywall: "pw", TTL: time.Minute},
			"no paywall":  {Key: "k", Wallet: w, AmountMicro: 1, TTL: time.Minute},
			"zero amount": {Key: "k", Wallet: w, Paywall: "pw", TTL: time.Minute},
			"no ttl":      {Key: "k", Wallet: w, AmountMicro: 1, Paywall: "pw"},
			"huge ttl":    {Key: "k", Wallet: w, AmountMicro: 1, Paywall: "pw", TTL: 365 * 24 * time.Hour},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := f.l.Hold(t.Context(), r)
				wantErr(t, err, ledger.ErrInvalid)
			})
		}
	})
	f.check()
}

func TestCapture(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 10_000)
	h := f.hold("h1", w, "pw", 3000, time.Minute)
	split := ledger.Split{ProviderMicro: 1000, Provider: "openrouter", FeeMicro: 200, DeveloperMicro: 800}
	req := ledger.CaptureRequest{Key: "c1", HoldID: h.ID, Split: split, Estimated: true, Metadata: map[string]string{"model": "m"}}
	res, err := f.l.Capture(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChargedMicro != 2000 || res.ReleasedMicro != 1000 || res.ShortfallMicro != 0 {
		t.Fatalf("capture = %+v", res)
	}
	if res.Transfer.Metadata["estimated"] != "true" || res.Transfer.Metadata["model"] != "m" {
		t.Fatalf("metadata = %v", res.Transfer.Metadata)
	}
	f.wantBalance(w, 8000, 0)
	for a, want := range map[ledger.Account]int64{ledger.ProviderCosts("openrouter"): 1000, ledger.PlatformFees(): 200, ledger.Earnings("pw"): 800} {
		if got := f.sum(a); got != want {
			t.Errorf("%v = %d, want %d", a, got, want)
		}
	}
	if g, err := f.l.GetHold(ctx, h.ID); err != nil || g.Status != ledger.HoldCaptured {
		t.Fatalf("hold after capture = %+v, %v", g, err)
	}

	t.Run("replay", func(t *testing.T) {
		again, err := f.l.Capture(t.Context(), req)
		if err != nil || again.Transfer.ID != res.Transfer.ID || again.ChargedMicro != 2000 || again.ReleasedMicro != 1000 {
			t.Fatalf("replay = %+v, %v", again, err)
		}
		f.wantBalance(w, 8000, 0)
	})
	t.Run("same key, different split", func(t *testing.T) {
		r := req
		r.Split.DeveloperMicro++
		_, err := f.l.Capture(t.Context(), r)
		wantErr(t, err, ledger.ErrIdempotencyConflict)
	})
	t.Run("same key, another operation", func(t *testing.T) {
		_, err := f.l.Charge(t.Context(), ledger.ChargeRequest{Key: "c1", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrIdempotencyConflict)
	})
	t.Run("captured hold with a new key", func(t *testing.T) {
		r := req
		r.Key = "c1-bis"
		_, err := f.l.Capture(t.Context(), r)
		wantErr(t, err, ledger.ErrHoldFinished)
	})
	t.Run("voided hold", func(t *testing.T) {
		h := f.hold("h-void", w, "pw", 10, time.Minute)
		if _, err := f.l.Void(t.Context(), h.ID); err != nil {
			t.Fatal(err)
		}
		_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-void", HoldID: h.ID, Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrHoldFinished)
	})
	t.Run("unknown hold", func(t *testing.T) {
		_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-x", HoldID: "4a7c8e4e-0000-4000-8000-000000000000", Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrHoldNotFound)
		_, err = f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-x", HoldID: "not-a-uuid", Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrHoldNotFound)
	})
	t.Run("expired hold", func(t *testing.T) {
		h := f.hold("h-exp", w, "pw", 10, time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-exp", HoldID: h.ID, Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrHoldExpired)
		if g, _ := f.l.GetHold(t.Context(), h.ID); g.Status != ledger.HoldExpired {
			t.Fatalf("GetHold of an expired hold = %+v", g)
		}
		if n, err := f.l.SweepExpiredHolds(t.Context(), 0); err != nil || n != 1 {
			t.Fatalf("sweep = %d, %v", n, err)
		}
		_, err = f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-exp", HoldID: h.ID, Split: ledger.Split{DeveloperMicro: 1}})
		wantErr(t, err, ledger.ErrHoldExpired)
	})
	t.Run("zero charge releases everything", func(t *testing.T) {
		before := f.balance(w)
		h := f.hold("h-zero", w, "pw", 500, time.Minute)
		res, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-zero", HoldID: h.ID})
		if err != nil || res.ChargedMicro != 0 || res.ReleasedMicro != 500 || len(res.Transfer.Entries) != 0 {
			t.Fatalf("zero capture = %+v, %v", res, err)
		}
		f.wantBalance(w, before.PostedMicro, before.HeldMicro)
	})
	t.Run("invalid splits", func(t *testing.T) {
		h := f.hold("h-inv", w, "pw", 500, time.Minute)
		for name, s := range map[string]ledger.Split{
			"negative fee":          {FeeMicro: -1, DeveloperMicro: 2},
			"negative developer":    {DeveloperMicro: -1},
			"provider without name": {ProviderMicro: 1},
			"absurd":                {DeveloperMicro: 1 << 62},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{Key: "c-inv", HoldID: h.ID, Split: s})
				wantErr(t, err, ledger.ErrInvalid)
			})
		}
		_, err := f.l.Capture(t.Context(), ledger.CaptureRequest{HoldID: h.ID})
		wantErr(t, err, ledger.ErrInvalid)
	})
	f.check()
}

func TestCaptureOverrun(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		funds, hold              int64
		split                    ledger.Split
		charged, shortfall       int64
		provider, fee, developer int64
	}{
		{"covered by the available balance", 1000, 100, ledger.Split{ProviderMicro: 150, Provider: "p", FeeMicro: 30, DeveloperMicro: 120},
			300, 0, 150, 30, 120},
		{"shortfall taken from the developer", 250, 100, ledger.Split{ProviderMicro: 150, Provider: "p", FeeMicro: 30, DeveloperMicro: 120},
			250, 50, 150, 30, 70},
		{"then from the fee", 170, 100, ledger.Split{ProviderMicro: 150, Provider: "p", FeeMicro: 30, DeveloperMicro: 120},
			170, 130, 150, 20, 0},
		{"then from the provider", 100, 100, ledger.Split{ProviderMicro: 150, Provider: "p", FeeMicro: 30, DeveloperMicro: 120},
			100, 200, 100, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, ledger.Options{Shards: 2})
			w := addr(1)
			f.fund(w, tc.funds)
			h := f.hold("h", w, "pw", tc.hold, time.Minute)
			req := ledger.CaptureRequest{Key: "c", HoldID: h.ID, Split: tc.split}
			res, err := f.l.Capture(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if res.ChargedMicro != tc.charged || res.ShortfallMicro != tc.shortfall || res.ReleasedMicro != 0 {
				t.Fatalf("capture = charged %d shortfall %d released %d; want %d %d 0", res.ChargedMicro, res.ShortfallMicro, res.ReleasedMicro, tc.charged, tc.shortfall)
			}
			f.wantBalance(w, tc.funds-tc.charged, 0)
			for a, want := range map[ledger.Account]int64{ledger.ProviderCosts("p"): tc.provider, ledger.PlatformFees(): tc.fee, ledger.Earnings("pw"): tc.developer} {
				if got := f.sum(a); got != want {
					t.Errorf("%v = %d, want %d", a, got, want)
				}
			}
			again, err := f.l.Capture(t.Context(), req)
			if err != nil || again.Transfer.ID != res.Transfer.ID || again.ShortfallMicro != tc.shortfall || again.ChargedMicro != tc.charged {
				t.Fatalf("replay = %+v, %v", again, err)
			}
			f.check()
		})
	}
}

func TestVoid(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 1000)
	h := f.hold("h1", w, "pw", 400, time.Minute)
	v, err := f.l.Void(ctx, h.ID)
	if err != nil || v.Status != ledger.HoldVoided || v.ID != h.ID || v.AmountMicro != 400 {
		t.Fatalf("void = %+v, %v", v, err)
	}
	f.wantBalance(w, 1000, 0)
	again, err := f.l.Void(ctx, h.ID)
	if err != nil || again.Status != ledger.HoldVoided {
		t.Fatalf("second void = %+v, %v", again, err)
	}
	f.wantBalance(w, 1000, 0)

	captured := f.hold("h2", w, "pw", 100, time.Minute)
	if _, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "c2", HoldID: captured.ID, Split: ledger.Split{DeveloperMicro: 50}}); err != nil {
		t.Fatal(err)
	}
	_, err = f.l.Void(ctx, captured.ID)
	wantErr(t, err, ledger.ErrHoldFinished)

	late := f.hold("h3", w, "pw", 100, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if v, err := f.l.Void(ctx, late.ID); err != nil || v.Status != ledger.HoldVoided {
		t.Fatalf("void of an unswept expired hold = %+v, %v (it should release it)", v, err)
	}
	swept := f.hold("h4", w, "pw", 100, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if n, err := f.l.SweepExpiredHolds(ctx, 10); err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	_, err = f.l.Void(ctx, swept.ID)
	wantErr(t, err, ledger.ErrHoldExpired)

	_, err = f.l.Void(ctx, "4a7c8e4e-0000-4000-8000-000000000000")
	wantErr(t, err, ledger.ErrHoldNotFound)
	_, err = f.l.Void(ctx, "x")
	wantErr(t, err, ledger.ErrHoldNotFound)
	f.wantBalance(w, 950, 0)
	f.check()
}

func TestCharge(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 1000)
	req := ledger.ChargeRequest{Key: "ch1", Wallet: w, Paywall: "pw", Split: ledger.Split{FeeMicro: 100, DeveloperMicro: 500}}
	tr, err := f.l.Charge(ctx, req)
	if err != nil || tr.Kind != ledger.KindCharge {
		t.Fatalf("charge = %+v, %v", tr, err)
	}
	f.wantBalance(w, 400, 0)
	if f.sum(ledger.PlatformFees()) != 100 || f.sum(ledger.Earnings("pw")) != 500 {
		t.Fatal("fee or earnings not credited")
	}
	again, err := f.l.Charge(ctx, req)
	if err != nil || again.ID != tr.ID {
		t.Fatalf("replay = %+v, %v (even though the wallet could not pay it again)", again, err)
	}
	r := req
	r.Split.FeeMicro = 0
	_, err = f.l.Charge(ctx, r)
	wantErr(t, err, ledger.ErrIdempotencyConflict)

	_, err = f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch2", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 401}})
	wantErr(t, err, ledger.ErrInsufficientFunds)
	h := f.hold("h", w, "pw", 300, time.Minute)
	_, err = f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch3", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 101}})
	wantErr(t, err, ledger.ErrInsufficientFunds) // held money is not available
	f.wantBalance(w, 400, 300)
	if _, err := f.l.Void(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	_, err = f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch4", Wallet: addr(2), Paywall: "pw", Split: ledger.Split{DeveloperMicro: 1}})
	wantErr(t, err, ledger.ErrUnknownAccount)
	for name, s := range map[string]ledger.Split{
		"provider share": {ProviderMicro: 1, Provider: "p", DeveloperMicro: 1},
		"nothing":        {},
		"negative":       {FeeMicro: -5, DeveloperMicro: 10},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.l.Charge(t.Context(), ledger.ChargeRequest{Key: "ch5", Wallet: w, Paywall: "pw", Split: s})
			wantErr(t, err, ledger.ErrInvalid)
		})
	}
	f.check()
}

func TestPayouts(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	to := addr(0xbeef)
	f.fund(w, 10_000)
	// Earnings spread over several shards.
	for i := range 8 {
		if _, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: fmt.Sprintf("ch%d", i), Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 500}}); err != nil {
			t.Fatal(err)
		}
	}
	req := ledger.PayoutRequest{Key: "po1", Paywall: "pw", ChainID: "137", To: to, AmountMicro: 3000}
	p, err := f.l.RequestPayout(ctx, req)
	if err != nil || p.Status != ledger.PayoutRequested || p.AmountMicro != 3000 || p.To != to {
		t.Fatalf("payout = %+v, %v", p, err)
	}
	e, err := f.l.Earnings(ctx, "pw")
	if err != nil || e != (ledger.EarningsBalance{AvailableMicro: 1000, InFlightMicro: 3000}) {
		t.Fatalf("earnings = %+v, %v", e, err)
	}
	if again, err := f.l.RequestPayout(ctx, req); err != nil || again.ID != p.ID {
		t.Fatalf("replay = %+v, %v", again, err)
	}
	r := req
	r.AmountMicro = 1
	_, err = f.l.RequestPayout(ctx, r)
	wantErr(t, err, ledger.ErrIdempotencyConflict)
	_, err = f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po2", Paywall: "pw", ChainID: "137", To: to, AmountMicro: 1001})
	wantErr(t, err, ledger.ErrInsufficientFunds)
	_, err = f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po3", Paywall: "nobody", ChainID: "137", To: to, AmountMicro: 1})
	wantErr(t, err, ledger.ErrUnknownAccount)
	_, err = f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po3", Paywall: "pw", ChainID: "137", To: "nope", AmountMicro: 1})
	wantErr(t, err, ledger.ErrInvalid)

	settled, err := f.l.SettlePayout(ctx, p.ID, "0xhash")
	if err != nil || settled.Status != ledger.PayoutSettled || settled.TxHash != "0xhash" {
		t.Fatalf("settle = %+v, %v", settled, err)
	}
	if again, err := f.l.SettlePayout(ctx, p.ID, "0xhash"); err != nil || again.Status != ledger.PayoutSettled {
		t.Fatalf("settle again = %+v, %v", again, err)
	}
	_, err = f.l.SettlePayout(ctx, p.ID, "0xother")
	wantErr(t, err, ledger.ErrPayoutFinished)
	_, err = f.l.FailPayout(ctx, p.ID, "late")
	wantErr(t, err, ledger.ErrPayoutFinished)
	_, err = f.l.SettlePayout(ctx, p.ID, "")
	wantErr(t, err, ledger.ErrInvalid)
	if got := f.sum(ledger.Treasury("137")); got != -10_000+3000 {
		t.Fatalf("treasury = %d", got)
	}

	q, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po4", Paywall: "pw", ChainID: "137", To: to, AmountMicro: 700})
	if err != nil {
		t.Fatal(err)
	}
	failed, err := f.l.FailPayout(ctx, q.ID, "reverted")
	if err != nil || failed.Status != ledger.PayoutFailed || failed.Reason != "reverted" {
		t.Fatalf("fail = %+v, %v", failed, err)
	}
	if again, err := f.l.FailPayout(ctx, q.ID, "reverted"); err != nil || again.Status != ledger.PayoutFailed {
		t.Fatalf("fail again = %+v, %v", again, err)
	}
	_, err = f.l.SettlePayout(ctx, q.ID, "0x1")
	wantErr(t, err, ledger.ErrPayoutFinished)
	e, _ = f.l.Earnings(ctx, "pw")
	if e != (ledger.EarningsBalance{AvailableMicro: 1000, PaidOutMicro: 3000}) {
		t.Fatalf("earnings = %+v", e)
	}
	_, err = f.l.SettlePayout(ctx, "4a7c8e4e-0000-4000-8000-000000000000", "0x1")
	wantErr(t, err, ledger.ErrPayoutNotFound)
	_, err = f.l.FailPayout(ctx, "x", "")
	wantErr(t, err, ledger.ErrPayoutNotFound)
	_, err = f.l.GetPayout(ctx, "4a7c8e4e-0000-4000-8000-000000000000")
	wantErr(t, err, ledger.ErrPayoutNotFound)

	open, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po5", Paywall: "pw", ChainID: "137", To: to, AmountMicro: 10})
	if err != nil {
		t.Fatal(err)
	}
	all, err := f.l.Payouts(ctx, "pw", "", 0)
	if err != nil || !slices.Equal(ids(all), []string{open.ID, q.ID, p.ID}) {
		t.Fatalf("all payouts newest first = %v, %v", ids(all), err)
	}
	mine, err := f.l.Payouts(ctx, "pw", "", 2)
	if err != nil || len(mine) != 2 || mine[0].ID != open.ID {
		t.Fatalf("paywall payouts newest first = %v, %v", ids(mine), err)
	}
	for status, want := range map[ledger.PayoutStatus]string{ledger.PayoutRequested: open.ID, ledger.PayoutSettled: p.ID, ledger.PayoutFailed: q.ID} {
		ps, err := f.l.Payouts(ctx, "pw", status, 10)
		if err != nil || len(ps) != 1 || ps[0].ID != want {
			t.Fatalf("%s payouts = %v, %v; want [%s]", status, ids(ps), err, want)
		}
	}
	if ps, err := f.l.Payouts(ctx, "nobody", "", 10); err != nil || len(ps) != 0 {
		t.Fatalf("payouts of another paywall = %v, %v", ids(ps), err)
	}
	_, err = f.l.Payouts(ctx, "pw", "bogus", 10)
	wantErr(t, err, ledger.ErrInvalid)
	_, err = f.l.Payouts(ctx, "", "", 10)
	wantErr(t, err, ledger.ErrInvalid)
	_, err = f.l.Earnings(ctx, "nobody")
	wantErr(t, err, ledger.ErrUnknownAccount)
	f.check()
}

// TestRequestedPayoutsPages: one chain's payouts in flight, oldest first, page by page, with
// other chains' payouts and finished ones left out.
func TestRequestedPayoutsPages(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 100_000)
	if _, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch", Wallet: w, Paywall: "pw", Split: ledger.Split{DeveloperMicro: 50_000}}); err != nil {
		t.Fatal(err)
	}
	var want []string // chain 137's requested payouts, in order
	for i := range 12 {
		chain := "137"
		if i%3 == 0 {
			chain = "8453"
		}
		p, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: fmt.Sprintf("po%d", i), Paywall: "pw", ChainID: chain, To: addr(0xbeef), AmountMicro: 100})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case chain != "137":
		case i == 4:
			if _, err := f.l.SettlePayout(ctx, p.ID, "0x"+strings.Repeat("ab", 32)); err != nil {
				t.Fatal(err)
			}
		case i == 7:
			if _, err := f.l.FailPayout(ctx, p.ID, "payee blacklisted"); err != nil {
				t.Fatal(err)
			}
		default:
			want = append(want, p.ID)
		}
	}
	var got []string
	var after ledger.Payout
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatalf("paging does not end: %v", got)
		}
		ps, err := f.l.RequestedPayouts(ctx, "137", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.ChainID != "137" || p.Status != ledger.PayoutRequested {
				t.Errorf("listed %+v", p)
			}
		}
		got = append(got, ids(ps)...)
		if len(ps) < 3 {
			break
		}
		after = ps[len(ps)-1]
	}
	if !slices.Equal(got, want) {
		t.Errorf("requested payouts of chain 137 = %v, want %v", got, want)
	}
	if ps, err := f.l.RequestedPayouts(ctx, "1", ledger.Payout{}, 0); err != nil || len(ps) != 0 {
		t.Errorf("a chain without payouts = %v, %v", ids(ps), err)
	}
	f.check()
}

func ids(ps []ledger.Payout) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func TestReverse(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	dep := f.fund(w, 10_000)

	// Refund a capture whose earnings were credited to one shard, after other captures spread
	// earnings over more; the reversal takes money from whichever shards hold it.
	var capture ledger.CaptureResult
	for i := range 6 {
		h := f.hold(fmt.Sprintf("h%d", i), w, "pw", 1000, time.Minute)
		res, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: fmt.Sprintf("c%d", i), HoldID: h.ID,
			Split: ledger.Split{ProviderMicro: 300, Provider: "openrouter", FeeMicro: 100, DeveloperMicro: 400}})
		if err != nil {
			t.Fatal(err)
		}
		capture = res
	}
	f.wantBalance(w, 10_000-6*800, 0)
	req := ledger.ReverseRequest{Key: "refund-1", TransferID: capture.Transfer.ID, Reason: "bad answer"}
	rev, err := f.l.Reverse(ctx, req)
	if err != nil || rev.Kind != ledger.KindReversal || rev.Metadata["reason"] != "bad answer" {
		t.Fatalf("reverse = %+v, %v", rev, err)
	}
	f.wantBalance(w, 10_000-5*800, 0)
	for a, want := range map[ledger.Account]int64{ledger.ProviderCosts("openrouter"): 1500, ledger.PlatformFees(): 500, ledger.Earnings("pw"): 2000} {
		if got := f.sum(a); got != want {
			t.Errorf("%v = %d, want %d", a, got, want)
		}
	}
	if again, err := f.l.Reverse(ctx, req); err != nil || again.ID != rev.ID {
		t.Fatalf("replay = %+v, %v", again, err)
	}
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-1", TransferID: dep.ID})
	wantErr(t, err, ledger.ErrIdempotencyConflict)
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-2", TransferID: capture.Transfer.ID})
	wantErr(t, err, ledger.ErrAlreadyReversed)
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-3", TransferID: rev.ID})
	wantErr(t, err, ledger.ErrNotReversible)
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-4", TransferID: "4a7c8e4e-0000-4000-8000-000000000000"})
	wantErr(t, err, ledger.ErrTransferNotFound)
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{TransferID: dep.ID})
	wantErr(t, err, ledger.ErrInvalid)

	// The deposit was spent: reversing it would take the wallet below zero.
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "chargeback", TransferID: dep.ID})
	wantErr(t, err, ledger.ErrInsufficientFunds)
	// Earnings paid out cannot be refunded.
	ch, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch", Wallet: w, Paywall: "pw2", Split: ledger.Split{DeveloperMicro: 100}})
	if err != nil {
		t.Fatal(err)
	}
	po, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{Key: "po", Paywall: "pw2", ChainID: "137", To: addr(5), AmountMicro: 100})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-5", TransferID: ch.ID})
	wantErr(t, err, ledger.ErrInsufficientFunds)
	st, err := f.l.History(ctx, ledger.Earnings("pw2"), "", 10)
	if err != nil || len(st.Items) != 2 || st.Items[0].Kind != ledger.KindPayoutRequest {
		t.Fatalf("earnings history = %+v, %v", st, err)
	}
	_, err = f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-6", TransferID: st.Items[0].TransferID})
	wantErr(t, err, ledger.ErrNotReversible)
	if _, err := f.l.FailPayout(ctx, po.ID, "no gas"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund-5", TransferID: ch.ID}); err != nil {
		t.Fatalf("refund after the payout failed: %v", err)
	}
	// A fresh deposit can be reversed (a chain reorganisation).
	dep2 := f.fund(addr(2), 77)
	if _, err := f.l.Reverse(ctx, ledger.ReverseRequest{Key: "reorg", TransferID: dep2.ID}); err != nil {
		t.Fatal(err)
	}
	f.wantBalance(addr(2), 0, 0)
	f.check()
}

func TestHistory(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	w := addr(1)
	var want []string
	for i := range 7 {
		want = append([]string{f.fund(w, int64(i+1)).ID}, want...)
	}
	var got []string
	cursor := ""
	pages := 0
	for {
		page, err := f.l.History(ctx, ledger.Wallet(w), cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range page.Items {
			got = append(got, it.TransferID)
			if it.Kind != ledger.KindDeposit || it.AmountMicro <= 0 {
				t.Fatalf("item = %+v", it)
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if pages != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history in %d pages = %v, want newest first %v", pages, got, want)
	}
	_, err := f.l.History(ctx, ledger.Wallet(w), "garbage!", 3)
	wantErr(t, err, ledger.ErrInvalid)
	_, err = f.l.History(ctx, ledger.Wallet(addr(9)), "", 3)
	wantErr(t, err, ledger.ErrUnknownAccount)
	_, err = f.l.History(ctx, ledger.Account{Kind: "x"}, "", 3)
	wantErr(t, err, ledger.ErrInvalid)
	tr := f.l
	if page, err := tr.History(ctx, ledger.Treasury("137"), "", 100); err != nil || len(page.Items) != 7 || page.Items[0].AmountMicro != -7 {
		t.Fatalf("treasury history = %+v, %v", page, err)
	}
}

func TestSweepExpiredHolds(t *testing.T) {
	f := newFixture(t, ledger.Options{})
	ctx := t.Context()
	const wallets, perWallet = 5, 20
	for i := range wallets {
		f.fund(addr(i), 10_000)
		for j := range perWallet {
			ttl := time.Millisecond
			if j%4 == 0 {
				ttl = time.Hour // stays open
			}
			f.hold(fmt.Sprintf("h%d-%d", i, j), addr(i), "pw", 10, ttl)
		}
	}
	time.Sleep(20 * time.Millisecond)
	// Several "replicas" sweep at once, in small batches: every expired hold is released once.
	results := make(chan int, 8)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			total := 0
			for {
				n, err := f.l.SweepExpiredHolds(ctx, 7)
				if err != nil {
					errs <- err
					results <- total
					return
				}
				if n == 0 {
					break
				}
				total += n
			}
			errs <- nil
			results <- total
		}()
	}
	total := 0
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += <-results
	}
	if want := wallets * perWallet * 3 / 4; total != want {
		t.Fatalf("released %d holds, want %d", total, want)
	}
	for i := range wallets {
		f.wantBalance(addr(i), 10_000, perWallet/4*10)
	}
	f.check()
}
