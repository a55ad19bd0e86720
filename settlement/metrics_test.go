package settlement

import (
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// TestWorkerMetrics: after a relayed top-up, a plain transfer and a payout, the metrics say
// what happened: top-ups and payouts by status, deposits credited by kind and amount,
// broadcasts, the watcher's last final block and the finality lag, the hot wallet's balances,
// the lease, and no work left open.
func TestWorkerMetrics(t *testing.T) {
	e := newSimEnv(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	w := e.workerWith(func(c *WorkerConfig) { c.Metrics = m })
	id := e.chain.ID
	if v, ok := metricValue(t, reg, "tollgate_settle_lease_held", "chain", id); !ok || v != 0 {
		t.Fatalf("lease held %v (%v) before the first tick, want 0", v, ok)
	}
	// Counters an alert's increase() reads exist at zero before anything happened, for every
	// value the worker sets: a series born at 1 reads as no increase.
	for name, labels := range LabelValues() {
		if strings.Contains(name, "_open_") || name == "tollgate_settle_rpc_calls_total" {
			continue // gauges the worker sets as it counts; rpc calls are by method too
		}
		for label, values := range labels {
			for _, v := range values {
				if got, ok := metricValue(t, reg, name, "chain", id, label, v); !ok || got != 0 {
					t.Errorf("%s{%s=%q} is %v (present %v) before the first tick, want 0", name, label, v, got, ok)
				}
			}
		}
	}

	user := chaintest.Key(t)
	e.fund(user, 10_000_000)
	tu := e.topUp(user, 4_000_000)
	e.tick(w)
	if v, _ := metricValue(t, reg, "tollgate_settle_open_topups", "chain", id, "status", "submitted"); v != 1 {
		t.Fatalf("open submitted top-ups %v, want 1", v)
	}
	e.until(w, "top-up credited", func() bool { return e.topUpStatus(tu.ID).Status == TopUpCredited })
	e.link(addrOf(user))
	if _, err := e.send.Transfer(t.Context(), user, e.chain.Token, e.treasury, 1_500_000); err != nil {
		t.Fatal(err)
	}
	e.finalize(w)

	e.earn(addrOf(user), 3_000_000)
	if err := e.send.Mint(t.Context(), e.owner, e.chain.Token, addrOf(e.hot), 20_000_000); err != nil {
		t.Fatal(err)
	}
	p := e.requestPayout(common.HexToAddress("0x00000000000000000000000000000000000b0b02"), 2_000_000)
	e.until(w, "payout settled", func() bool { return e.payout(p.ID).Status == ledger.PayoutSettled })
	e.clock.Advance(balanceEvery) // the next tick reads the balances again
	e.tick(w)

	val := func(name string, labels ...string) float64 {
		t.Helper()
		return chainMetric(t, reg, id, name, labels...)
	}
	hotMicro := e.tokenBalance(addrOf(e.hot))
	if hotMicro != 18_000_000 {
		t.Errorf("hot wallet holds %d micro-USDC on chain, want 18000000", hotMicro)
	}
	native, _ := e.client.BalanceAt(t.Context(), addrOf(e.hot), nil)
	var cursor int64
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT block_number FROM settlement_cursors`).Scan(&cursor); err != nil {
		t.Fatal(err)
	}
	fin, _ := e.client.HeaderByNumber(t.Context(), finalizedTag)
	head, _ := e.client.HeaderByNumber(t.Context(), nil)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tollgate_settle_topups_total", []string{"status", "submitted"}, 1},
		{"tollgate_settle_topups_total", []string{"status", "credited"}, 1},
		{"tollgate_settle_deposits_credited_total", []string{"kind", "topup"}, 1},
		{"tollgate_settle_deposits_credited_total", []string{"kind", "transfer"}, 1},
		{"tollgate_settle_deposits_credited_micro_usdc_total", []string{"kind", "topup"}, 4_000_000},
		{"tollgate_settle_deposits_credited_micro_usdc_total", []string{"kind", "transfer"}, 1_500_000},
		{"tollgate_settle_payouts_total", []string{"status", "sent"}, 1},
		{"tollgate_settle_payouts_total", []string{"status", "settled"}, 1},
		{"tollgate_settle_broadcasts_total", []string{"result", "accepted"}, 2},
		{"tollgate_settle_replacements_total", nil, 0},
		{"tollgate_settle_lease_held", nil, 1},
		{"tollgate_settle_open_topups", []string{"status", "signed"}, 0},
		{"tollgate_settle_open_topups", []string{"status", "submitted"}, 0},
		{"tollgate_settle_open_payouts", []string{"status", "queued"}, 0},
		{"tollgate_settle_open_payouts", []string{"status", "sending"}, 0},
		{"tollgate_settle_hot_wallet_usdc", nil, 18},
		{"tollgate_settle_hot_wallet_native", nil, ratio(native, 18)},
		{"tollgate_settle_last_finalized_block", nil, float64(cursor)},
		{"tollgate_settle_finality_lag_blocks", nil, float64(head.Number.Uint64() - fin.Number.Uint64())},
	} {
		if got := val(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if cursor == 0 || ratio(native, 18) <= 0 {
		t.Errorf("cursor %d, native balance %s", cursor, native)
	}
	// Each status set is one LabelValues lists (the alerting rules are checked against it).
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if values, listed := LabelValues()[f.GetName()][l.GetName()]; listed && !slices.Contains(values, l.GetValue()) {
					t.Errorf("%s{%s=%q}: LabelValues lists %v", f.GetName(), l.GetName(), l.GetValue(), values)
				}
			}
		}
	}
	if got := val("tollgate_settle_rpc_calls_total", "method", "eth_getLogs", "result", "ok"); got == 0 {
		t.Error("no eth_getLogs calls counted")
	}
	for _, step := range tickSteps {
		if v, _ := metricValue(t, reg, "tollgate_settle_tick_errors_total", "chain", id, "step", step); v != 0 {
			t.Errorf("tollgate_settle_tick_errors_total{step=%q} = %v: the step failed", step, v)
		}
	}
	// Re-scanning credited blocks counts nothing again.
	e.db.Must(t, `UPDATE settlement_cursors SET block_number = 0`)
	e.tick(w)
	if got := val("tollgate_settle_deposits_credited_total", "kind", "transfer"); got != 1 {
		t.Errorf("transfer deposits %v after a rescan, want 1", got)
	}

	// A worker that loses the lease shows it and drops the gauges only the active one keeps.
	b := e.workerWith(func(c *WorkerConfig) { c.Metrics = NewMetrics(nil); c.Holder = "other" })
	e.clock.Advance(2 * time.Minute)
	e.tick(b)
	if err := w.Tick(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale worker: %v", err)
	}
	if got := val("tollgate_settle_lease_held"); got != 0 {
		t.Errorf("lease held %v after losing it", got)
	}
	if _, ok := metricValue(t, reg, "tollgate_settle_hot_wallet_usdc", "chain", id); ok {
		t.Errorf("a worker without the lease still shows the hot wallet balance")
	}
	e.checkInvariants()
}

// TestWorkerHealth: a worker is healthy while starting and while active; unhealthy once the
// node has not answered for rpc_unhealthy_after (a revert is an answer, not a failure), and
// healthy again when it answers; unhealthy after another worker took its lease; a worker
// that never held the lease is a healthy standby.
func TestWorkerHealth(t *testing.T) {
	e := newSimEnv(t)
	node := &unreachableNode{ChainClient: e.client}
	w := e.workerWith(func(c *WorkerConfig) { c.Client = node; c.RPCUnhealthyAfter = 30 * time.Second })
	check := func(w *Worker, healthy bool, lease, problem string) {
		t.Helper()
		h := w.Health()
		if h.Healthy != healthy || h.Lease != lease || (problem != "" && !strings.Contains(strings.Join(h.Problems, "; "), problem)) {
			t.Fatalf("health %+v, want healthy=%v lease=%s problem %q", h, healthy, lease, problem)
		}
	}
	check(w, true, "starting", "")
	e.tick(w)
	check(w, true, "active", "")

	// A call the node refuses (a revert) is an answer.
	if _, err := w.client.EstimateGas(t.Context(), ethereum.CallMsg{From: addrOf(e.hot), To: &e.chain.Token, Data: usdc.PackTransfer(e.treasury, bigInt(1))}); err == nil {
		t.Fatal("a transfer from an empty hot wallet estimated")
	}
	e.clock.Advance(time.Minute)
	check(w, true, "active", "")

	node.down.Store(true)
	if err := w.Tick(t.Context()); err == nil {
		t.Fatal("tick with the node down succeeded")
	}
	e.clock.Advance(29 * time.Second)
	check(w, true, "active", "")
	e.clock.Advance(time.Second)
	if err := w.Tick(t.Context()); err == nil {
		t.Fatal("tick with the node down succeeded")
	}
	check(w, false, "active", "the chain's node has not answered for 30s")
	node.down.Store(false)
	e.tick(w)
	check(w, true, "active", "")

	standby := e.workerWith(func(c *WorkerConfig) { c.Holder = "standby" })
	if err := standby.Tick(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("standby: %v", err)
	}
	check(standby, true, "standby", "")

	e.clock.Advance(2 * time.Minute) // w stops renewing; the standby takes over
	e.tick(standby)
	check(standby, true, "active", "")
	if err := w.Tick(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale worker: %v", err)
	}
	check(w, false, "lost", "lease was lost")
}

// unreachableNode is the chain's node at the process boundary, which stops answering (as when
// the RPC provider is down) while down is set.
type unreachableNode struct {
	ChainClient
	down atomic.Bool
}

var errUnreachable = errors.New("unreachableNode: dial tcp 127.0.0.1:8545: connect: connection refused")

func (u *unreachableNode) err() error {
	if u.down.Load() {
		return errUnreachable
	}
	return nil
}

func (u *unreachableNode) HeaderByNumber(ctx context.Context, n *big.Int) (*types.Header, error) {
	if err := u.err(); err != nil {
		return nil, err
	}
	return u.ChainClient.HeaderByNumber(ctx, n)
}

func (u *unreachableNode) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	if err := u.err(); err != nil {
		return nil, err
	}
	return u.ChainClient.FilterLogs(ctx, q)
}

func (u *unreachableNode) CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error) {
	if err := u.err(); err != nil {
		return nil, err
	}
	return u.ChainClient.CallContract(ctx, msg, block)
}

func (u *unreachableNode) BalanceAt(ctx context.Context, a common.Address, block *big.Int) (*big.Int, error) {
	if err := u.err(); err != nil {
		return nil, err
	}
	return u.ChainClient.BalanceAt(ctx, a, block)
}

// chainMetric is the value of one chain's series of metric name with the given labels; the test
// fails if there is no such series (so that an absent gauge never reads as 0).
func chainMetric(t *testing.T, reg *prometheus.Registry, chainID, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(t, reg, name, append([]string{"chain", chainID}, labels...)...)
	if !ok {
		t.Errorf("no series %s{chain=%s %v}", name, chainID, labels)
	}
	return v
}

// metricValue reads the value of the series of metric name whose labels include the given
// name/value pairs, and reports whether there is one.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
