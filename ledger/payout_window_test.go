package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestPayoutsSince: the sum and count of a paywall's payouts within a window, by the
// database's clock. Rows are aged by moving their created_at back, as time passing would:
// payouts older than the window, failed ones and another paywall's are left out.
func TestPayoutsSince(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 100_000)
	for _, pw := range []string{"pw", "other"} {
		if _, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "earn-" + pw, Wallet: w, Paywall: pw, Split: ledger.Split{DeveloperMicro: 40_000}}); err != nil {
			t.Fatal(err)
		}
	}
	request := func(paywall string, amount int64) ledger.Payout {
		t.Helper()
		p, err := f.l.RequestPayout(ctx, ledger.PayoutRequest{
			Key: fmt.Sprintf("po-%s-%d", paywall, amount), Paywall: paywall, ChainID: "137", To: addr(0xbeef), AmountMicro: amount,
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	age := func(p ledger.Payout, by time.Duration) {
		t.Helper()
		if _, err := f.db.Pool.Exec(ctx, `UPDATE ledger_payouts SET created_at = created_at - $2::BIGINT * INTERVAL '1 microsecond' WHERE id = $1`,
			p.ID, by.Microseconds()); err != nil {
			t.Fatal(err)
		}
	}

	request("pw", 100)                                 // requested, just now
	settled := request("pw", 200)                      // settled, just now
	failed := request("pw", 400)                       // failed: never counts
	age(request("pw", 800), 23*time.Hour)              // inside 24 hours, outside 1 hour
	age(request("pw", 1600), 25*time.Hour)             // outside 24 hours, inside 48
	age(request("pw", 3200), 24*time.Hour+time.Minute) // just outside 24 hours
	request("other", 10_000)                           // another paywall's
	if _, err := f.l.SettlePayout(ctx, settled.ID, "0xhash"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.FailPayout(ctx, failed.ID, "reverted"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		paywall string
		window  time.Duration
		want    ledger.PayoutWindow
	}{
		{"one hour", "pw", time.Hour, ledger.PayoutWindow{TotalMicro: 300, Count: 2}},
		{"24 hours", "pw", 24 * time.Hour, ledger.PayoutWindow{TotalMicro: 1100, Count: 3}},
		{"48 hours", "pw", 48 * time.Hour, ledger.PayoutWindow{TotalMicro: 5900, Count: 5}},
		{"another paywall", "other", 24 * time.Hour, ledger.PayoutWindow{TotalMicro: 10_000, Count: 1}},
		{"a paywall without payouts", "nobody", 24 * time.Hour, ledger.PayoutWindow{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.l.PayoutsSince(ctx, tt.paywall, tt.window)
			if err != nil || got != tt.want {
				t.Errorf("PayoutsSince(%q, %v) = %+v, %v; want %+v", tt.paywall, tt.window, got, err, tt.want)
			}
		})
	}

	for _, bad := range []struct {
		paywall string
		window  time.Duration
	}{{"", time.Hour}, {" ", time.Hour}, {"pw", 0}, {"pw", -time.Hour}, {"pw", 999 * time.Nanosecond}} {
		_, err := f.l.PayoutsSince(ctx, bad.paywall, bad.window)
		wantErr(t, err, ledger.ErrInvalid)
	}
	f.check()
}
