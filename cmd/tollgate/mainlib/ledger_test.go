package mainlib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/api"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
)

// books is a CLI on a ledger with a deposit, a built-in request's capture, two manual charges
// and the app's refund (reversal) of the second, made through the ledger's API as the server
// and the API make them.
type books struct {
	*cli
	book                                       *ledger.Ledger
	paywall, wallet                            string // the wallet as typed (mixed case)
	deposit, capture, charge, charge2, refund2 string // transfer ids
}

const booksWallet = "0x00000000000000000000000000000000000A11CE"

func newBooks(t *testing.T) *books {
	t.Helper()
	c := newCLI(t)
	b := &books{cli: c, book: ledger.New(c.db.Pool, ledger.Options{}), paywall: c.createPaywall().ID, wallet: booksWallet}
	ctx := t.Context()
	dep, err := b.book.Deposit(ctx, ledger.DepositRequest{Key: "137:0xtx:1", ChainID: "137", Wallet: b.wallet, AmountMicro: 10_000_000,
		Metadata: map[string]string{"tx": "0xtx"}})
	if err != nil {
		t.Fatal(err)
	}
	b.deposit = dep.ID
	h, err := b.book.Hold(ctx, ledger.HoldRequest{Key: "req-1", Wallet: b.wallet, Paywall: b.paywall, AmountMicro: 1_000_000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	capture, err := b.book.Capture(ctx, ledger.CaptureRequest{Key: "req-1", HoldID: h.ID,
		Split:    ledger.Split{ProviderMicro: 300_000, Provider: "openrouter", FeeMicro: 50_000, DeveloperMicro: 150_000},
		Metadata: map[string]string{"paywall": b.paywall, "user": "alice", "model": "openai/gpt-4o-mini", "request_id": "req-1"}})
	if err != nil {
		t.Fatal(err)
	}
	b.capture = capture.Transfer.ID
	for i, id := range []*string{&b.charge, &b.charge2} {
		ch, err := b.book.Charge(ctx, ledger.ChargeRequest{Key: "api:charge:" + string(rune('a'+i)), Wallet: b.wallet, Paywall: b.paywall,
			Split:    ledger.Split{FeeMicro: 10_000, DeveloperMicro: 190_000},
			Metadata: map[string]string{"paywall": b.paywall, "user": "alice", "description": "Pro plan"}})
		if err != nil {
			t.Fatal(err)
		}
		*id = ch.ID
	}
	rev, err := b.book.Reverse(ctx, ledger.ReverseRequest{Key: "api:refund:x", TransferID: b.charge2, Reason: "charged twice",
		Metadata: map[string]string{"paywall": b.paywall, "user": "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	b.refund2 = rev.ID
	return b
}

// balance is the wallet's posted balance.
func (b *books) balance() int64 {
	b.t.Helper()
	bal, err := b.book.Balance(b.t.Context(), b.wallet)
	if err != nil {
		b.t.Fatal(err)
	}
	return bal.PostedMicro
}

// transfers counts the ledger's transfers.
func (b *books) transfers() int {
	b.t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(b.t.Context(), `SELECT count(*) FROM ledger_transfers`).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// contains fails the test for each of want that out lacks.
func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// spaced matches label and value separated by the spaces of an aligned column.
func spaced(t *testing.T, what, out, label, value string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + ` +` + regexp.QuoteMeta(value)).MatchString(out) {
		t.Errorf("%s lacks %q  %q:\n%s", what, label, value, out)
	}
}

func TestLedgerBalanceAndEarnings(t *testing.T) {
	b := newBooks(t)
	// 10 deposited, 0.50 captured, 0.20 charged twice, the second refunded.
	out := b.mustRun("ledger", "balance", b.wallet)
	spaced(t, "balance", out, "wallet", strings.ToLower(b.wallet))
	spaced(t, "balance", out, "available", "9.30 USDC")
	spaced(t, "balance", out, "held", "0.00 USDC")
	spaced(t, "balance", out, "posted", "9.30 USDC")
	var bal walletBalanceJSON
	if err := json.Unmarshal([]byte(b.mustRun("ledger", "balance", "-json", b.wallet)), &bal); err != nil ||
		bal.AvailableMicro != 9_300_000 || bal.Available != "9.30" || bal.Currency != "USDC" || !bal.InLedger {
		t.Errorf("balance -json: %+v %v", bal, err)
	}
	stranger := "0x00000000000000000000000000000000000000b0"
	out = b.mustRun("ledger", "balance", stranger)
	spaced(t, "a stranger's balance", out, "available", "0.00 USDC")
	contains(t, "a stranger's balance", out, "never credited")

	out = b.mustRun("ledger", "earnings", b.paywall)
	spaced(t, "earnings", out, "available", "0.34 USDC")
	spaced(t, "earnings", out, "in flight", "0.00 USDC")
	spaced(t, "earnings", out, "paid out", "0.00 USDC")
	var earn api.EarningsJSON
	if err := json.Unmarshal([]byte(b.mustRun("ledger", "earnings", strings.ToUpper(b.paywall), "-json")), &earn); err != nil ||
		earn.AvailableMicro != 340_000 || earn.Paywall != b.paywall || earn.Currency != "USDC" {
		t.Errorf("earnings -json: %+v %v", earn, err)
	}
	// A paywall that earned nothing yet has zero earnings; an id no paywall has is a mistake.
	idle := b.createPaywall()
	spaced(t, "an idle paywall's earnings", b.mustRun("ledger", "earnings", idle.ID), "available", "0.00 USDC")
	if _, err := b.run("ledger", "earnings", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d"); err == nil ||
		!strings.Contains(err.Error(), "no paywall has id") || ExitCode(err) != 1 {
		t.Errorf("earnings of an unknown paywall: %v", err)
	}
}

func TestLedgerHistory(t *testing.T) {
	b := newBooks(t)
	out := b.mustRun("ledger", "history", b.wallet)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "TIME") || lines[6] != "(last page)" {
		t.Fatalf("history: a header, 5 transfers and the last-page line, got:\n%s", out)
	}
	want := []struct{ kind, amount, id, what string }{ // newest first
		{"reversal", "+0.20 USDC", b.refund2, `paywall=` + b.paywall + ` user=alice reason="charged twice"`},
		{"charge", "-0.20 USDC", b.charge2, `paywall=` + b.paywall + ` user=alice description="Pro plan"`},
		{"charge", "-0.20 USDC", b.charge, `description="Pro plan"`},
		{"capture", "-0.50 USDC", b.capture, `paywall=` + b.paywall + ` user=alice model=openai/gpt-4o-mini`},
		{"deposit", "+10.00 USDC", b.deposit, ""},
	}
	for i, w := range want {
		f := strings.Fields(lines[i+1])
		if len(f) < 5 || f[1] != w.kind || f[2]+" "+f[3] != w.amount || f[4] != w.id || !strings.Contains(lines[i+1], w.what) {
			t.Errorf("row %d = %q, want %+v", i, lines[i+1], w)
		}
		if _, err := time.Parse(time.RFC3339, f[0]); err != nil {
			t.Errorf("row %d time: %v", i, err)
		}
	}

	// Pages: the cursor printed at the end of one opens the next.
	var seen []string
	args := []string{"ledger", "history", b.wallet, "-limit", "2"}
	for page := 0; ; page++ {
		out := b.mustRun(args...)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) >= 5 && f[0] != "TIME" && f[0] != "next:" {
				seen = append(seen, f[4])
			}
		}
		last := out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]
		if strings.HasPrefix(last, "(last page)") {
			break
		}
		if page > 3 || !strings.HasPrefix(last, "next: tollgate ledger history") {
			t.Fatalf("page %d ends with %q", page, last)
		}
		args = strings.Fields(strings.TrimPrefix(strings.TrimSpace(last), "next: tollgate "))
	}
	if strings.Join(seen, " ") != strings.Join([]string{b.refund2, b.charge2, b.charge, b.capture, b.deposit}, " ") {
		t.Errorf("paged history = %v", seen)
	}

	var page historyPageJSON
	if err := json.Unmarshal([]byte(b.mustRun("ledger", "history", b.wallet, "-json", "-limit", "1")), &page); err != nil ||
		len(page.Items) != 1 || page.Items[0].ID != b.refund2 || page.Items[0].AmountMicro != 200_000 || page.Next == "" ||
		page.Items[0].Metadata["reason"] != "charged twice" {
		t.Errorf("history -json: %+v %v", page, err)
	}
	if out := b.mustRun("ledger", "history", "0x00000000000000000000000000000000000000b0"); !strings.Contains(out, "No transfers") {
		t.Errorf("a stranger's history: %q", out)
	}
}

func TestLedgerShow(t *testing.T) {
	b := newBooks(t)
	out := b.mustRun("ledger", "show", b.capture)
	spaced(t, "show capture", out, "transfer", b.capture)
	spaced(t, "show capture", out, "kind", "capture")
	spaced(t, "show capture", out, "key", "req-1")
	contains(t, "show capture", out, "-0.50 USDC", "wallet "+strings.ToLower(b.wallet), "+0.30 USDC", "provider_costs openrouter",
		"+0.05 USDC", "platform_fees", "+0.15 USDC", "earnings "+b.paywall, "model: openai/gpt-4o-mini", "user: alice")
	spaced(t, "show capture", out, "reversed", "no")

	out = b.mustRun("ledger", "show", strings.ToUpper(b.charge2))
	spaced(t, "show refunded charge", out, "reversed", "by "+b.refund2)
	contains(t, "show refunded charge", out, "(reason: charged twice)")
	refund := b.mustRun("ledger", "show", b.refund2)
	spaced(t, "show refund", refund, "reverses", b.charge2)
	spaced(t, "show refund", refund, "reversed", "no (a reversal cannot be reversed)")

	var shown transferJSON
	if err := json.Unmarshal([]byte(b.mustRun("ledger", "show", b.charge2, "-json")), &shown); err != nil ||
		shown.Kind != "charge" || len(shown.Entries) != 3 || shown.ReversedBy == nil || shown.ReversedBy.ID != b.refund2 ||
		shown.Metadata["description"] != "Pro plan" || shown.Reverses != "" || shown.ReversedBy.Reverses != b.charge2 {
		t.Errorf("show -json: %+v %v", shown, err)
	}
	if _, err := b.run("ledger", "show", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d"); err == nil ||
		!strings.Contains(err.Error(), "no transfer has id") || ExitCode(err) != 1 {
		t.Errorf("show of an unknown id: %v", err)
	}
}

func TestLedgerCheck(t *testing.T) {
	b := newBooks(t)
	out := b.mustRun("ledger", "check")
	contains(t, "check", out, fmt.Sprintf("ledger: all %d invariants hold", ledgercheck.Count()))
	var ok ledgerCheckJSON
	if err := json.Unmarshal([]byte(b.mustRun("ledger", "check", "-json")), &ok); err != nil || !ok.OK || len(ok.Violations) != 0 {
		t.Errorf("check -json: %+v %v", ok, err)
	}

	// Money from nowhere: a balance that no entry explains.
	if _, err := b.db.Pool.Exec(t.Context(), `UPDATE ledger_balances SET posted = posted + 1 WHERE kind = 'wallet'`); err != nil {
		t.Fatal(err)
	}
	out, err := b.run("ledger", "check")
	if !errors.Is(err, errViolations) || ExitCode(err) != 1 {
		t.Fatalf("check of a broken ledger: %v (exit %d)", err, ExitCode(err))
	}
	contains(t, "check of a broken ledger", out, "ledger: VIOLATED: materialized posted balances equal the sum of their entries",
		strings.ToLower(b.wallet), "ledger: VIOLATED: total money is conserved (balances)")
	if strings.Contains(out, "invariants hold") {
		t.Errorf("a broken ledger holds:\n%s", out)
	}
	var broken ledgerCheckJSON
	out, err = b.run("ledger", "check", "-json")
	if jerr := json.Unmarshal([]byte(out), &broken); jerr != nil || broken.OK || len(broken.Violations) < 2 || ExitCode(err) != 1 {
		t.Errorf("check -json of a broken ledger: %+v %v %v", broken, jerr, err)
	}
}

func TestLedgerReverse(t *testing.T) {
	b := newBooks(t)
	before, count := b.balance(), b.transfers()

	// Without -yes: what it would do, and nothing done.
	out := b.mustRun("ledger", "reverse", b.charge, "-key", "ticket-7", "-reason", "goodwill")
	contains(t, "reverse without -yes", out, "Would reverse charge "+b.charge, `description="Pro plan"`,
		"+0.20 USDC", "wallet "+strings.ToLower(b.wallet), "-0.19 USDC", "earnings "+b.paywall, "Nothing was changed", "-yes")
	if b.balance() != before || b.transfers() != count {
		t.Fatal("reverse without -yes moved money")
	}

	// With -yes: reversed once; the same key prints the same reversal.
	first := b.mustRun("ledger", "reverse", b.charge, "-key", "ticket-7", "-reason", "goodwill", "-yes")
	contains(t, "reverse -yes", first, "Reversed charge "+b.charge+": reversal ", "+0.20 USDC", "goodwill")
	if got := b.balance(); got != before+200_000 {
		t.Fatalf("balance after the reversal = %d, want %d", got, before+200_000)
	}
	if again := b.mustRun("ledger", "reverse", b.charge, "-yes", "-key", "ticket-7", "-reason", "goodwill"); again != first {
		t.Errorf("replay printed\n%s\nfirst\n%s", again, first)
	}
	rev, err := b.book.Reversal(t.Context(), b.charge)
	if err != nil {
		t.Fatal(err)
	}
	if b.balance() != before+200_000 || b.transfers() != count+1 {
		t.Error("the replay moved money")
	}
	wantMeta := map[string]string{"reason": "goodwill", "by": "operator", "paywall": b.paywall, "user": "alice"}
	for k, v := range wantMeta {
		if rev.Metadata[k] != v {
			t.Errorf("reversal metadata %s = %q, want %q (%v)", k, rev.Metadata[k], v, rev.Metadata)
		}
	}
	if rev.IdempotencyKey != operatorKeyPrefix+"ticket-7" {
		t.Errorf("reversal key %q", rev.IdempotencyKey)
	}
	contains(t, "history after the reversal", b.mustRun("ledger", "history", b.wallet, "-limit", "1"),
		rev.ID, "reason=goodwill by=operator", "paywall="+b.paywall)

	// Another key: already reversed, naming the reversal, with or without -yes.
	for _, yes := range [][]string{{"-yes"}, nil} {
		_, err = b.run(append([]string{"ledger", "reverse", b.charge, "-key", "ticket-8", "-reason", "again"}, yes...)...)
		if err == nil || !strings.Contains(err.Error(), "already reversed by "+rev.ID) || ExitCode(err) != 1 {
			t.Errorf("a second reversal %v: %v", yes, err)
		}
	}

	// A built-in request's capture: the provider's cost comes back too.
	out = b.mustRun("ledger", "reverse", b.capture, "-key", "ticket-9", "-reason", "provider outage", "-yes")
	contains(t, "reverse a capture", out, "+0.50 USDC", "-0.30 USDC", "provider_costs openrouter")
	if got := b.balance(); got != before+700_000 {
		t.Errorf("balance after the capture's reversal = %d", got)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"deposit spent", []string{b.deposit, "-key", "k1"}, "wallet " + strings.ToLower(b.wallet) + " has 9.99 USDC available and the reversal takes back 10.00 USDC"},
		{"a reversal", []string{b.refund2, "-key", "k2"}, "is a reversal, which cannot be reversed"},
		{"unknown id", []string{"5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d", "-key", "k3"}, "no transfer has id"},
		{"key of another reversal", []string{b.deposit, "-key", "ticket-7"}, `-key "ticket-7" was used before`},
	}
	// Spend a cent so the deposit cannot come back whole.
	if _, err := b.book.Charge(t.Context(), ledger.ChargeRequest{Key: "spend", Wallet: b.wallet, Paywall: b.paywall,
		Split: ledger.Split{FeeMicro: 10_000}}); err != nil {
		t.Fatal(err)
	}
	before, count = b.balance(), b.transfers()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.run(append([]string{"ledger", "reverse", "-reason", "r", "-yes"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || ExitCode(err) != 1 {
				t.Errorf("error %v (exit %d), want %q", err, ExitCode(err), tt.want)
			}
		})
	}
	if b.balance() != before || b.transfers() != count {
		t.Error("a refused reversal moved money")
	}
}

// TestLedgerReverseEarningsWithdrawn: a charge whose earnings were withdrawn since cannot be
// reversed, and the error names the paywall's earnings.
func TestLedgerReverseEarningsWithdrawn(t *testing.T) {
	b := newBooks(t)
	if _, err := b.book.RequestPayout(t.Context(), ledger.PayoutRequest{Key: "w", Paywall: b.paywall, ChainID: "137",
		To: "0x00000000000000000000000000000000000000c0", AmountMicro: 340_000}); err != nil {
		t.Fatal(err)
	}
	_, err := b.run("ledger", "reverse", b.charge, "-key", "k", "-reason", "r", "-yes")
	if err == nil || !strings.Contains(err.Error(), "earnings "+b.paywall+" has 0.00 USDC available and the reversal takes back 0.19 USDC (withdrawn since)") {
		t.Errorf("reversal of withdrawn earnings: %v", err)
	}
	spaced(t, "earnings after the payout", b.mustRun("ledger", "earnings", b.paywall), "in flight", "0.34 USDC")
}

func TestLedgerBadInput(t *testing.T) {
	b := newBooks(t)
	before, count := b.balance(), b.transfers()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown subcommand", []string{"ledger", "fix"}, `unknown ledger subcommand "fix"`},
		{"bad address", []string{"ledger", "balance", "0x12"}, "WALLET must be a 0x address"},
		{"address without 0x", []string{"ledger", "history", strings.TrimPrefix(b.wallet, "0x") + "00"}, "WALLET must be a 0x address"},
		{"no wallet", []string{"ledger", "balance"}, "wants WALLET"},
		{"bad paywall id", []string{"ledger", "earnings", "demo"}, "PAYWALL_ID must be a UUID"},
		{"bad limit", []string{"ledger", "history", b.wallet, "-limit", "0"}, "-limit must be between 1 and 500"},
		{"bad cursor", []string{"ledger", "history", b.wallet, "-cursor", "nope"}, `-cursor "nope" is not a cursor`},
		{"bad transfer id", []string{"ledger", "show", "123"}, "TRANSFER_ID must be a UUID"},
		{"reverse bad id", []string{"ledger", "reverse", "x", "-key", "k", "-reason", "r", "-yes"}, "TRANSFER_ID must be a UUID"},
		{"reverse without key", []string{"ledger", "reverse", b.charge, "-reason", "r", "-yes"}, "needs -key"},
		{"reverse without reason", []string{"ledger", "reverse", b.charge, "-key", "k", "-yes"}, "and -reason"},
		{"reverse key too long", []string{"ledger", "reverse", b.charge, "-key", strings.Repeat("k", 240), "-reason", "r", "-yes"}, "-key is longer than 239 bytes"},
		{"reverse two ids", []string{"ledger", "reverse", b.charge, b.capture, "-key", "k", "-reason", "r", "-yes"}, "wants TRANSFER_ID"},
		{"unknown flag", []string{"ledger", "reverse", b.charge, "-key", "k", "-reason", "r", "-force"}, "not defined: -force"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.run(tt.args...)
			if !errors.Is(err, errUsage) || ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v (exit %d), want a usage error saying %q", err, ExitCode(err), tt.want)
			}
		})
	}
	if b.balance() != before || b.transfers() != count {
		t.Error("bad input moved money")
	}
}

func TestLedgerUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := Main(t.Context(), []string{"ledger"}, &out, &errOut); !errors.Is(err, errUsage) || ExitCode(err) != 2 ||
		!strings.Contains(err.Error(), "ledger needs a subcommand") || !strings.Contains(out.String(), "reverse") {
		t.Errorf("ledger without a subcommand: %v %q", err, out.String())
	}
	out.Reset()
	if err := Main(t.Context(), []string{"help"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "ledger") {
		t.Errorf("help: %v %q", err, out.String())
	}
	out.Reset()
	if err := Main(t.Context(), []string{"ledger", "help"}, &out, &errOut); err != nil {
		t.Errorf("ledger help: %v", err)
	}
	contains(t, "ledger help", out.String(), "check", "off-peak", "balance", "earnings", "history", "show", "reverse", "-yes")
	errOut.Reset()
	if err := Main(t.Context(), []string{"ledger", "reverse", "-h"}, &out, &errOut); err != nil {
		t.Errorf("reverse -h: %v", err)
	}
	contains(t, "reverse -h", errOut.String(), "-key", "-reason", "-yes")
	errOut.Reset()
	if err := Main(t.Context(), []string{"ledger", "check", "-h"}, &out, &errOut); err != nil {
		t.Errorf("check -h: %v", err)
	}
	contains(t, "check -h", errOut.String(), "off-peak")
}
