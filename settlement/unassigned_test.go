package settlement

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// TestUnassignedDeposits: final transfers from unlinked addresses are stored once, credited to
// nobody; an operator assigns one to a wallet exactly once (again to the same wallet: no
// change; to another: refused), and neither the watcher — rescanning, or seeing the sender
// link the address later — nor a second operator can credit it again; a deposit whose sender
// links the address is credited to the sender by the watcher, and then cannot be assigned
// elsewhere.
func TestUnassignedDeposits(t *testing.T) {
	e := newSimEnv(t)
	reg := prometheus.NewRegistry()
	w := e.workerWith(func(c *WorkerConfig) { c.Metrics = NewMetrics(reg) })
	metric := func(name string, labels ...string) float64 {
		t.Helper()
		return chainMetric(t, reg, e.chain.ID, name, labels...)
	}
	first, second := chaintest.Key(t), chaintest.Key(t)
	e.fund(first, 5_000_000)
	e.fund(second, 5_000_000)
	e.tick(w)
	for _, s := range []struct {
		key   *ecdsaKey
		micro int64
	}{{first, 3_000_000}, {second, 2_000_000}} {
		if _, err := e.send.Transfer(t.Context(), s.key, e.chain.Token, e.treasury, s.micro); err != nil {
			t.Fatal(err)
		}
	}
	e.tick(w) // seen, not final: nothing stored yet
	if got := e.listUnassigned(false); len(got) != 0 {
		t.Fatalf("unassigned before finality: %+v", got)
	}
	e.finalize(w)
	e.db.Must(t, `UPDATE settlement_cursors SET block_number = 0`) // a rescan stores nothing twice
	e.tick(w)

	list := e.listUnassigned(false)
	if len(list) != 2 {
		t.Fatalf("unassigned: %+v", list)
	}
	dep := map[common.Address]UnassignedDeposit{}
	for _, d := range list {
		dep[common.HexToAddress(d.From)] = d
		if d.Status != "unassigned" || d.Wallet != "" || d.ChainID != e.chain.ID || d.BlockNumber == 0 ||
			d.LedgerKey != d.ChainID+":"+d.TxHash+":"+strconv.Itoa(d.LogPos) || d.Token != lowerHex(e.chain.Token) {
			t.Fatalf("unassigned deposit %+v", d)
		}
	}
	d1, d2 := dep[addrOf(first)], dep[addrOf(second)]
	if d1.AmountMicro != 3_000_000 || d2.AmountMicro != 2_000_000 {
		t.Fatalf("amounts %d, %d", d1.AmountMicro, d2.AmountMicro)
	}
	if e.balance(addrOf(first)) != 0 || e.balance(addrOf(second)) != 0 {
		t.Fatal("an unlinked sender was credited")
	}
	if seen, open := metric("tollgate_settle_deposits_unassigned_total"), metric("tollgate_settle_unassigned_deposits"); seen != 2 || open != 2 {
		t.Fatalf("metrics: %v unassigned seen, %v open; want 2 and 2", seen, open)
	}

	ops := NewUnassigned(e.db.Pool, e.ledger, nil)
	x, y := common.HexToAddress("0x00000000000000000000000000000000000a11ce"), common.HexToAddress("0x0000000000000000000000000000000000000b0b")
	got, err := ops.Assign(t.Context(), d1.ID, x.Hex())
	if err != nil || got.Status != "assigned" || got.Wallet != lowerHex(x) || got.AssignedBy != "operator" || got.TransferID == "" {
		t.Fatalf("assign: %+v, %v", got, err)
	}
	again, err := ops.Assign(t.Context(), d1.ID, lowerHex(x))
	if err != nil || again.TransferID != got.TransferID {
		t.Fatalf("assigning again to the same wallet: %+v, %v", again, err)
	}
	if _, err := ops.Assign(t.Context(), d1.ID, y.Hex()); !errors.Is(err, ErrDepositAssigned) {
		t.Fatalf("assigning to another wallet: %v, want ErrDepositAssigned", err)
	}

	// Both senders link their addresses. The watcher credits the second's deposit to it, and
	// never the first's, which the operator assigned; a full rescan changes nothing.
	e.link(addrOf(first))
	e.link(addrOf(second))
	e.clock.Advance(relinkEvery)
	e.tick(w)
	e.db.Must(t, `UPDATE settlement_cursors SET block_number = 0`)
	e.tick(w)
	e.finalize(w)
	if got := e.get(ops, d2.ID); got.Status != "assigned" || got.Wallet != lowerHex(addrOf(second)) || got.AssignedBy != "watcher" {
		t.Fatalf("second deposit after its sender linked: %+v", got)
	}
	if _, err := ops.Assign(t.Context(), d2.ID, x.Hex()); !errors.Is(err, ErrDepositAssigned) {
		t.Fatalf("assigning the watcher's deposit elsewhere: %v, want ErrDepositAssigned", err)
	}
	if _, err := ops.Assign(t.Context(), d2.ID, addrOf(second).Hex()); err != nil {
		t.Fatalf("assigning the watcher's deposit to its wallet: %v", err)
	}
	for _, b := range []struct {
		who  common.Address
		want int64
	}{{x, 3_000_000}, {y, 0}, {addrOf(first), 0}, {addrOf(second), 2_000_000}} {
		if got := e.balance(b.who); got != b.want {
			t.Errorf("%s holds %d, want %d", b.who.Hex(), got, b.want)
		}
	}
	if open, credited := metric("tollgate_settle_unassigned_deposits"), metric("tollgate_settle_deposits_credited_total", "kind", "transfer"); open != 0 || credited != 1 {
		t.Errorf("metrics: %v open, %v transfers credited by the watcher; want 0 and 1", open, credited)
	}
	if left := e.listUnassigned(false); len(left) != 0 {
		t.Errorf("still unassigned: %+v", left)
	}
	if all := e.listUnassigned(true); len(all) != 2 {
		t.Errorf("all: %+v", all)
	}
	e.checkInvariants()
}

// TestAssignRaces: two operators assigning one deposit to different wallets at once credit it
// once; an assignment interrupted after its claim (the ledger did not answer) is finished by
// assigning to the same wallet, and refused for another; a key the ledger already credited to
// another wallet is refused, and the claim given up.
func TestAssignRaces(t *testing.T) {
	e := newSimEnv(t)
	w := e.worker(nil, nil)
	senders := []*ecdsaKey{chaintest.Key(t), chaintest.Key(t), chaintest.Key(t)}
	for _, k := range senders {
		e.fund(k, 1_000_000)
	}
	e.tick(w)
	for _, k := range senders {
		if _, err := e.send.Transfer(t.Context(), k, e.chain.Token, e.treasury, 1_000_000); err != nil {
			t.Fatal(err)
		}
	}
	e.finalize(w)
	byFrom := map[string]UnassignedDeposit{}
	for _, d := range e.listUnassigned(false) {
		byFrom[d.From] = d
	}
	race, interrupted, taken := byFrom[lowerHex(addrOf(senders[0]))], byFrom[lowerHex(addrOf(senders[1]))], byFrom[lowerHex(addrOf(senders[2]))]
	wallets := []common.Address{
		common.HexToAddress("0x00000000000000000000000000000000000000a1"),
		common.HexToAddress("0x00000000000000000000000000000000000000a2"),
	}

	ops := NewUnassigned(e.db.Pool, e.ledger, nil)
	var wg sync.WaitGroup
	var won atomic.Int64
	errs := make([]error, len(wallets))
	for i, wallet := range wallets {
		wg.Go(func() {
			if _, err := ops.Assign(t.Context(), race.ID, wallet.Hex()); err == nil {
				won.Add(1)
			} else {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || e.balance(wallets[0])+e.balance(wallets[1]) != 1_000_000 {
		t.Fatalf("%d assignments won (%v); balances %d and %d", won.Load(), errs, e.balance(wallets[0]), e.balance(wallets[1]))
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrDepositAssigned) {
			t.Fatalf("the losing assignment: %v", err)
		}
	}

	down := &unansweringLedger{Depositor: e.ledger}
	down.fail.Store(true)
	if _, err := NewUnassigned(e.db.Pool, down, nil).Assign(t.Context(), interrupted.ID, wallets[0].Hex()); !errors.Is(err, errCrash) {
		t.Fatalf("assign with the ledger down: %v", err)
	}
	if got := e.get(ops, interrupted.ID); got.Status != "assigning" || got.Wallet != lowerHex(wallets[0]) {
		t.Fatalf("interrupted assignment: %+v", got)
	}
	e.clock.Advance(relinkEvery)
	e.tick(w) // the watcher leaves an operator's claim alone
	if _, err := ops.Assign(t.Context(), interrupted.ID, wallets[1].Hex()); !errors.Is(err, ErrDepositAssigned) {
		t.Fatalf("assigning an interrupted claim elsewhere: %v", err)
	}
	if got, err := ops.Assign(t.Context(), interrupted.ID, wallets[0].Hex()); err != nil || got.Status != "assigned" {
		t.Fatalf("finishing the interrupted assignment: %+v, %v", got, err)
	}

	// The ledger credited the key to someone else (say, from a restored backup of this table).
	if _, err := e.ledger.Deposit(t.Context(), ledger.DepositRequest{Key: taken.LedgerKey, ChainID: taken.ChainID,
		Wallet: lowerHex(wallets[1]), AmountMicro: taken.AmountMicro}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Assign(t.Context(), taken.ID, wallets[0].Hex()); !errors.Is(err, ErrDepositAssigned) {
		t.Fatalf("assigning a key the ledger credited elsewhere: %v", err)
	}
	if got := e.get(ops, taken.ID); got.Status != "unassigned" || got.Wallet != "" {
		t.Fatalf("the refused claim was not given up: %+v", got)
	}
	if got := e.balance(wallets[0]) + e.balance(wallets[1]); got != 3_000_000 {
		t.Fatalf("credited %d in all, want 3000000 (each deposit once)", got)
	}

	for _, bad := range []struct {
		id, wallet string
		want       error
	}{
		{"not-an-id", wallets[0].Hex(), ErrDepositNotFound},
		{"00000000-0000-0000-0000-000000000000", wallets[0].Hex(), ErrDepositNotFound},
		{race.ID, "0x1234", ErrInvalidWallet},
		{race.ID, "0x0000000000000000000000000000000000000000", ErrInvalidWallet},
	} {
		if _, err := ops.Assign(t.Context(), bad.id, bad.wallet); !errors.Is(err, bad.want) {
			t.Errorf("Assign(%q, %q): %v, want %v", bad.id, bad.wallet, err, bad.want)
		}
	}
	checkLedgerSums(t, e.db)
}

func (e *simEnv) listUnassigned(all bool) []UnassignedDeposit {
	e.t.Helper()
	list, err := NewUnassigned(e.db.Pool, e.ledger, nil).List(e.t.Context(), all)
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

func (e *simEnv) get(u *Unassigned, id string) UnassignedDeposit {
	e.t.Helper()
	d, err := u.Get(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// unansweringLedger is the ledger at the process boundary, not answering deposits while fail
// is set (the operator's process lost the database between its claim and the credit).
type unansweringLedger struct {
	Depositor
	fail atomic.Bool
}

func (u *unansweringLedger) Deposit(ctx context.Context, r ledger.DepositRequest) (ledger.Transfer, error) {
	if u.fail.Load() {
		return ledger.Transfer{}, errCrash
	}
	return u.Depositor.Deposit(ctx, r)
}
