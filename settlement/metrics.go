package settlement

import (
	"math/big"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the settlement worker's Prometheus metrics, labelled by chain id. One Metrics
// serves every worker of a process; register it on a private registry.
type Metrics struct {
	topups         *prometheus.CounterVec
	openTopUps     *prometheus.GaugeVec
	deposits       *prometheus.CounterVec
	depositedMicro *prometheus.CounterVec
	unassigned     *prometheus.CounterVec
	openUnassigned *prometheus.GaugeVec
	payouts        *prometheus.CounterVec
	openPayouts    *prometheus.GaugeVec
	broadcasts     *prometheus.CounterVec
	replacements   *prometheus.CounterVec
	finalBlock     *prometheus.GaugeVec
	lagBlocks      *prometheus.GaugeVec
	lagSeconds     *prometheus.GaugeVec
	hotUSDC        *prometheus.GaugeVec
	hotNative      *prometheus.GaugeVec
	leaseHeld      *prometheus.GaugeVec
	rpcCalls       *prometheus.CounterVec
	tickErrors     *prometheus.CounterVec
}

// payoutSent is the move of a payout whose transaction now carries its authorization: a value of
// tollgate_settle_payouts_total's status label, not a stored status.
const payoutSent = "sent"

// The values of the labels LabelValues lists: for status, a counter's moves and the statuses a
// gauge of open items counts (open zeroes those that have none).
var (
	topUpMoves         = []TopUpStatus{TopUpSubmitted, TopUpCredited, TopUpFailed}
	openTopUpStatuses  = []string{string(TopUpSigned), string(TopUpSubmitted)}
	payoutMoves        = []string{payoutSent, payoutSettled, payoutFailed}
	openPayoutStatuses = []string{payoutQueued, payoutSending, payoutConfirming, payoutFailing}
	broadcastResults   = []string{broadcastAccepted, broadcastKnown, broadcastError}
	depositKinds       = []string{depositTopUp, depositTransfer}
	tickSteps          = []string{stepTransactions, stepPayouts, stepTopUps, stepDeposits, stepLease}
)

// The values of tollgate_settle_broadcasts_total's result label: the node took the
// transaction, had it (or its nonce) already, or failed.
const (
	broadcastAccepted = "accepted"
	broadcastKnown    = "known"
	broadcastError    = "error"
)

// The values of the deposits' kind label (and a deposit's kind in the ledger's metadata): a
// top-up's transfer, or a plain transfer from a linked address.
const (
	depositTopUp    = purposeTopUp
	depositTransfer = "transfer"
)

// The steps of a worker's round (Tick), the values of tick errors' step label.
const (
	stepTransactions = "transactions"
	stepPayouts      = "payouts"
	stepTopUps       = "top-ups"
	stepDeposits     = "deposits"
	stepLease        = "lease"
)

// The values of tollgate_settle_rpc_calls_total's result label: the node answered, or not.
const (
	rpcOK    = "ok"
	rpcError = "error"
)

// LabelValues returns, by metric and then label, every value the worker sets on the labels it
// lists: what an alerting rule can select (deploy's rules test checks the rules against it).
// The labels left out take values known only at run time (chain, method) or are not listed yet.
func LabelValues() map[string]map[string][]string {
	moves := make([]string, len(topUpMoves))
	for i, s := range topUpMoves {
		moves[i] = string(s)
	}
	return map[string]map[string][]string{
		"tollgate_settle_topups_total":                       {"status": moves},
		"tollgate_settle_open_topups":                        {"status": slices.Clone(openTopUpStatuses)},
		"tollgate_settle_payouts_total":                      {"status": slices.Clone(payoutMoves)},
		"tollgate_settle_open_payouts":                       {"status": slices.Clone(openPayoutStatuses)},
		"tollgate_settle_rpc_calls_total":                    {"result": {rpcOK, rpcError}},
		"tollgate_settle_broadcasts_total":                   {"result": slices.Clone(broadcastResults)},
		"tollgate_settle_deposits_credited_total":            {"kind": slices.Clone(depositKinds)},
		"tollgate_settle_deposits_credited_micro_usdc_total": {"kind": slices.Clone(depositKinds)},
		"tollgate_settle_tick_errors_total":                  {"step": slices.Clone(tickSteps)},
	}
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append([]string{"chain"}, labels...))
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append([]string{"chain"}, labels...))
	}
	m := &Metrics{
		topups: counter("tollgate_settle_topups_total",
			"Top-ups this worker moved to a status: submitted (relayed, by us or someone else), credited, failed.", "status"),
		openTopUps: gauge("tollgate_settle_open_topups",
			"Top-ups waiting for the relay (signed) or for finality (submitted), as the active worker last counted them.", "status"),
		deposits: counter("tollgate_settle_deposits_credited_total",
			"Deposits credited to wallets at finality, by kind (topup, transfer).", "kind"),
		depositedMicro: counter("tollgate_settle_deposits_credited_micro_usdc_total",
			"Micro-USDC credited to wallets at finality, by kind.", "kind"),
		unassigned: counter("tollgate_settle_deposits_unassigned_total",
			"Final transfers to the treasury from addresses no user had linked, stored for an operator."),
		openUnassigned: gauge("tollgate_settle_unassigned_deposits",
			"Transfers to the treasury waiting for a wallet (tollgate settle unassigned), as the active worker last counted them."),
		payouts: counter("tollgate_settle_payouts_total",
			"Payouts this worker moved to a status: sent (a transaction carries its authorization), settled, failed.", "status"),
		openPayouts: gauge("tollgate_settle_open_payouts",
			"Payouts in progress by status (queued, sending, confirming, failing), as the active worker last counted them.", "status"),
		broadcasts: counter("tollgate_settle_broadcasts_total",
			"Signed transactions sent to the node, by result (accepted, known: the node had it or its nonce, error).", "result"),
		replacements: counter("tollgate_settle_replacements_total",
			"Stuck transactions replaced with at least 10% higher fees."),
		finalBlock: gauge("tollgate_settle_last_finalized_block",
			"The last final block whose deposits the watcher fully processed."),
		lagBlocks: gauge("tollgate_settle_finality_lag_blocks",
			"Blocks between the chain's head and its newest final block."),
		lagSeconds: gauge("tollgate_settle_finality_lag_seconds",
			"Seconds between the timestamps of the chain's head and its newest final block."),
		hotUSDC: gauge("tollgate_settle_hot_wallet_usdc",
			"The hot wallet's USDC balance, in USDC."),
		hotNative: gauge("tollgate_settle_hot_wallet_native",
			"The hot wallet's balance of the chain's native currency (gas money), in whole coins (10^18 wei)."),
		leaseHeld: gauge("tollgate_settle_lease_held",
			"1 while this worker holds the hot wallet's lease on the chain (it is the active one), else 0."),
		rpcCalls: counter("tollgate_settle_rpc_calls_total",
			"Calls to the chain's node, by method and result (ok, or error: no answer from the node).", "method", "result"),
		tickErrors: counter("tollgate_settle_tick_errors_total",
			"Failed steps of the worker's rounds, by step (transactions, payouts, top-ups, deposits, lease).", "step"),
	}
	if reg != nil {
		reg.MustRegister(m.topups, m.openTopUps, m.deposits, m.depositedMicro, m.unassigned, m.openUnassigned,
			m.payouts, m.openPayouts, m.broadcasts, m.replacements, m.finalBlock, m.lagBlocks, m.lagSeconds,
			m.hotUSDC, m.hotNative, m.leaseHeld, m.rpcCalls, m.tickErrors)
	}
	return m
}

// chainMetrics are the metrics of one chain, with the chain label applied.
type chainMetrics struct {
	m     *Metrics
	chain string
}

func (m *Metrics) forChain(chainID string) chainMetrics {
	c := chainMetrics{m: m, chain: chainID}
	// Series that should read 0, not be absent, before anything happened: increase() over a
	// counter whose first sample is already 1 reads 0, and an alert would miss the first event.
	m.replacements.WithLabelValues(chainID)
	m.unassigned.WithLabelValues(chainID)
	m.leaseHeld.WithLabelValues(chainID).Set(0)
	for _, s := range topUpMoves {
		m.topups.WithLabelValues(chainID, string(s))
	}
	for _, s := range payoutMoves {
		m.payouts.WithLabelValues(chainID, s)
	}
	for _, r := range broadcastResults {
		m.broadcasts.WithLabelValues(chainID, r)
	}
	for _, k := range depositKinds {
		m.deposits.WithLabelValues(chainID, k)
		m.depositedMicro.WithLabelValues(chainID, k)
	}
	for _, s := range tickSteps {
		m.tickErrors.WithLabelValues(chainID, s)
	}
	return c
}

// topUp counts a top-up's move to status, one of topUpMoves.
func (c chainMetrics) topUp(status TopUpStatus) {
	c.m.topups.WithLabelValues(c.chain, string(status)).Inc()
}

func (c chainMetrics) deposit(kind string, micro int64) {
	c.m.deposits.WithLabelValues(c.chain, kind).Inc()
	c.m.depositedMicro.WithLabelValues(c.chain, kind).Add(float64(micro))
}

func (c chainMetrics) unassignedSeen() { c.m.unassigned.WithLabelValues(c.chain).Inc() }

// payout counts a payout's move to status, one of payoutMoves.
func (c chainMetrics) payout(status string) { c.m.payouts.WithLabelValues(c.chain, status).Inc() }

func (c chainMetrics) broadcast(result string) { c.m.broadcasts.WithLabelValues(c.chain, result).Inc() }

func (c chainMetrics) replacement() { c.m.replacements.WithLabelValues(c.chain).Inc() }

func (c chainMetrics) finalProcessed(block uint64) {
	c.m.finalBlock.WithLabelValues(c.chain).Set(float64(block))
}

func (c chainMetrics) finalityLag(blocks uint64, seconds int64) {
	c.m.lagBlocks.WithLabelValues(c.chain).Set(float64(blocks))
	c.m.lagSeconds.WithLabelValues(c.chain).Set(float64(seconds))
}

func (c chainMetrics) lease(held bool) {
	v := 0.0
	if held {
		v = 1
	}
	c.m.leaseHeld.WithLabelValues(c.chain).Set(v)
}

// balances sets the hot wallet's balances; both are shown in whole units, as an operator
// reads them (a gauge is a float; these are for dashboards and alerts, never for money).
func (c chainMetrics) balances(usdcMicro, nativeWei *big.Int) {
	c.m.hotUSDC.WithLabelValues(c.chain).Set(ratio(usdcMicro, 6))
	c.m.hotNative.WithLabelValues(c.chain).Set(ratio(nativeWei, 18))
}

func (c chainMetrics) rpc(method string, ok bool) {
	result := rpcOK
	if !ok {
		result = rpcError
	}
	c.m.rpcCalls.WithLabelValues(c.chain, method, result).Inc()
}

func (c chainMetrics) tickError(step string) { c.m.tickErrors.WithLabelValues(c.chain, step).Inc() }

// open sets the gauge of one kind of open items (top-ups, payouts) to counts, zeroing the
// statuses that have none.
func (c chainMetrics) open(g *prometheus.GaugeVec, statuses []string, counts map[string]int64) {
	for _, s := range statuses {
		g.WithLabelValues(c.chain, s).Set(float64(counts[s]))
	}
}

// forget drops the gauges only the active worker keeps current.
func (c chainMetrics) forget() {
	only := prometheus.Labels{"chain": c.chain}
	for _, g := range []*prometheus.GaugeVec{c.m.openTopUps, c.m.openPayouts, c.m.openUnassigned, c.m.hotUSDC, c.m.hotNative} {
		g.DeletePartialMatch(only)
	}
}

func (c chainMetrics) unassignedOpen(n int64) {
	c.m.openUnassigned.WithLabelValues(c.chain).Set(float64(n))
}

// ratio is x / 10^decimals as a float, for display.
func ratio(x *big.Int, decimals int) float64 {
	if x == nil {
		return 0
	}
	f, _ := new(big.Rat).SetFrac(x, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)).Float64()
	return f
}
