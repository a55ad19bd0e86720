package extproc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome is how a request ended, the label of tollgate_extproc_requests_total.
type Outcome string

// Outcomes.
const (
	OutcomePassThrough     Outcome = "pass_through"    // not a /v1/ path: untouched
	OutcomeUnbilled        Outcome = "unbilled"        // GET /v1/models: routed to the paywall's upstream, not billed
	OutcomeUnsupported     Outcome = "unsupported"     // 404/405: a /v1/ endpoint or method Tollgate does not serve
	OutcomeUnauthenticated Outcome = "unauthenticated" // 401: no or unknown API key
	OutcomeBadRequest      Outcome = "bad_request"     // 400
	OutcomeAuthorize       Outcome = "authorize"       // paywall message: authorize
	OutcomeTopUp           Outcome = "topup"           // paywall message: top up
	OutcomeRateLimited     Outcome = "rate_limited"    // 429
	OutcomeUnavailable     Outcome = "unavailable"     // 503: a store did not answer
	OutcomeUpstreamError   Outcome = "upstream_error"  // non-2xx from the upstream: hold voided
	OutcomeCharged         Outcome = "charged"         // captured from the upstream's usage
	OutcomeEstimated       Outcome = "estimated"       // captured from an estimate
	OutcomeFree            Outcome = "free"            // the price was zero: nothing held
	OutcomeSettleFailed    Outcome = "settle_failed"   // the capture or void failed; the hold will expire
)

var outcomes = []Outcome{OutcomePassThrough, OutcomeUnbilled, OutcomeUnsupported, OutcomeUnauthenticated, OutcomeBadRequest,
	OutcomeAuthorize, OutcomeTopUp, OutcomeRateLimited, OutcomeUnavailable, OutcomeUpstreamError, OutcomeCharged,
	OutcomeEstimated, OutcomeFree, OutcomeSettleFailed}

// Why a charge was estimated: the reason label of tollgate_extproc_estimated_settlements_total
// and the capture's ledger.MetaEstimateReason.
const (
	reasonNoUsage            = "no_usage"             // the stream or body ended without a usable usage
	reasonUpstreamErrorEvent = "upstream_error_event" // the stream reported an error instead
	reasonCostError          = "cost_error"           // the reported usage could not be priced: the hold is charged
	reasonClientGone         = "client_gone"          // the client went away mid-stream
	reasonStreamClosed       = "stream_closed"        // Envoy closed the ext_proc stream before the end
	reasonStreamError        = "stream_error"         // the ext_proc stream failed
	reasonProcessingError    = "processing_error"     // answering a message failed
	reasonShutdown           = "shutdown"             // the server stopped before the end
)

// The values of the other labels, set by the code and created at zero by NewMetrics.
const (
	holdReserved, holdInsufficient, holdError = "reserved", "insufficient", "error" // holds_total{result}
	usageReported, usageEstimated             = "reported", "estimated"             // captures_total{usage}
	costReported, costPriced                  = "reported", "priced"                // provider_cost…{source}
	// background_settlements_total{result}
	bgSettled, bgFailed, bgExpiring, bgAbandoned, bgHandedOver = "settled", "failed", "expiring", "abandoned", "handed_over"
	// provider_records_total{result}
	recordUsed, recordNoneInTime, recordUnreadable = "used", "none_in_time", "unreadable"
)

var estimateReasons = []string{reasonNoUsage, reasonUpstreamErrorEvent, reasonCostError, reasonClientGone,
	reasonStreamClosed, reasonStreamError, reasonProcessingError, reasonShutdown}

// Phases, the label of tollgate_extproc_phase_seconds.
const (
	phaseRequestHeaders = iota
	phaseRequestBody
	phaseResponseHeaders
	phaseResponseBody
	phaseSettle
	numPhases
)

var phaseNames = [numPhases]string{"request_headers", "request_body", "response_headers", "response_body", "settle"}

// Store calls, the label of tollgate_extproc_store_seconds: what a phase waits on.
const (
	callPaywallKey = iota
	callPrice
	callAuthorization
	callCaps
	callBalance
	callHold
	callCapture
	callVoid
	numCalls
)

var callNames = [numCalls]string{"paywall_key", "price", "authorization", "caps", "balance", "hold", "capture", "void"}

// Metrics are the server's Prometheus metrics. Register them on a private registry.
type Metrics struct {
	requests      *prometheus.CounterVec
	forwarded     *prometheus.CounterVec
	holds         *prometheus.CounterVec
	heldMicro     prometheus.Counter
	captures      *prometheus.CounterVec
	capturedMicro prometheus.Counter
	providerCost  *prometheus.CounterVec
	shortfall     prometheus.Counter
	estimated     *prometheus.CounterVec
	voids         prometheus.Counter
	limitErrors   prometheus.Counter
	openStreams   prometheus.Gauge
	// Background settlement (settler.go).
	settlePending    prometheus.Gauge
	journaled        prometheus.Gauge
	settleRetries    *prometheus.CounterVec
	settleBackground *prometheus.CounterVec
	providerRecords  *prometheus.CounterVec
	phases           [numPhases]prometheus.Observer
	calls            [numCalls]prometheus.Observer
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered, for tests
// and benchmarks).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests:      counterVec("tollgate_extproc_requests_total", "Requests seen by the ext_proc server, by how they ended.", "outcome"),
		forwarded:     counterVec("tollgate_extproc_forwarded_total", "Billed requests sent upstream, by API (chat, responses, embeddings, completions).", "api"),
		holds:         counterVec("tollgate_extproc_holds_total", "Hold attempts by result (reserved, insufficient, error).", "result"),
		heldMicro:     counter("tollgate_extproc_held_micro_usdc_total", "Micro-USDC reserved by holds."),
		captures:      counterVec("tollgate_extproc_captures_total", "Captures by source of the usage (reported, estimated).", "usage"),
		capturedMicro: counter("tollgate_extproc_captured_micro_usdc_total", "Micro-USDC charged by captures."),
		providerCost: counterVec("tollgate_extproc_provider_cost_micro_usd_total",
			"The built-in provider's cost of the requests whose usage reported one: as it reported (source=reported) and as the price catalog priced it (source=priced).", "source"),
		shortfall:   counter("tollgate_extproc_shortfall_micro_usdc_total", "Micro-USDC of overruns the wallet could not cover."),
		estimated:   counterVec("tollgate_extproc_estimated_settlements_total", "Settlements from an estimate, by reason.", "reason"),
		voids:       counter("tollgate_extproc_voids_total", "Holds voided (upstream errors, requests never sent)."),
		limitErrors: counter("tollgate_extproc_limit_errors_total", "Requests admitted without caps because Redis failed."),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_extproc_open_streams", Help: "ext_proc streams being processed.",
		}),
		settlePending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_extproc_settlements_retrying", Help: "Captures and voids being retried in the background.",
		}),
		journaled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_extproc_settlements_journaled",
			Help: "Captures and voids in the settlement journal, being retried by any replica (read every recovery poll).",
		}),
		settleRetries: counterVec("tollgate_extproc_settle_retries_total",
			"Background capture or void attempts that failed and were retried, by op.", "op"),
		settleBackground: counterVec("tollgate_extproc_background_settlements_total",
			"Captures and voids handed to the background, by op and how they ended (settled, failed, expiring, abandoned, handed_over).", "op", "result"),
		providerRecords: counterVec("tollgate_extproc_provider_records_total",
			"Cut built-in streams by what their capture used: the provider's record of the generation (used), or the estimate (none_in_time; unreadable: a record that could not be read or priced).", "result"),
	}
	phase := latencies("tollgate_extproc_phase_seconds",
		"Time spent answering one ext_proc message, by phase (settle: the capture or void).",
		"phase", phaseNames[:], m.phases[:])
	call := latencies("tollgate_extproc_store_seconds",
		"Time of one call to a store (paywall_key, price, authorization: cached lookups; caps: Redis; balance, hold, capture, void: the ledger), whatever its result.",
		"call", callNames[:], m.calls[:])
	// Every series a rule may select exists from the start, at zero: increase() over a counter
	// whose first sample is already 1 reads 0, and would miss the first failure.
	for _, o := range outcomes {
		m.requests.WithLabelValues(string(o))
	}
	for a := range apis {
		m.forwarded.WithLabelValues(apis[a].label)
	}
	zero(m.holds, holdReserved, holdInsufficient, holdError)
	zero(m.captures, usageReported, usageEstimated)
	zero(m.providerCost, costReported, costPriced)
	zero(m.estimated, estimateReasons...)
	zero(m.settleRetries, opCapture, opVoid)
	for _, op := range []string{opCapture, opVoid} {
		for _, result := range []string{bgSettled, bgFailed, bgExpiring, bgAbandoned, bgHandedOver} {
			m.settleBackground.WithLabelValues(op, result)
		}
	}
	zero(m.providerRecords, recordUsed, recordNoneInTime, recordUnreadable)
	if reg != nil {
		reg.MustRegister(m.requests, m.forwarded, m.holds, m.heldMicro, m.captures, m.capturedMicro, m.providerCost, m.shortfall,
			m.estimated, m.voids, m.limitErrors, m.openStreams, m.settlePending, m.journaled, m.settleRetries, m.settleBackground, m.providerRecords, phase, call)
	}
	return m
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// zero creates v's series for each value of its one label, at zero.
func zero(v *prometheus.CounterVec, values ...string) {
	for _, x := range values {
		v.WithLabelValues(x)
	}
}

// latencyBuckets span a cached lookup (microseconds) to a slow ledger call (a second).
var latencyBuckets = []float64{5e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// latencies returns a histogram of seconds by label and puts its observer for values[i] in
// observers[i], so the request path never looks a label up.
func latencies(name, help, label string, values []string, observers []prometheus.Observer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets}, []string{label})
	for i, v := range values {
		observers[i] = h.WithLabelValues(v)
	}
	return h
}

func (m *Metrics) observe(phase int, start time.Time) {
	m.phases[phase].Observe(time.Since(start).Seconds())
}

// storeCall records one store call's time.
func (m *Metrics) storeCall(call int, start time.Time) {
	m.calls[call].Observe(time.Since(start).Seconds())
}
