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
	holds         *prometheus.CounterVec
	heldMicro     prometheus.Counter
	captures      *prometheus.CounterVec
	capturedMicro prometheus.Counter
	shortfall     prometheus.Counter
	estimated     *prometheus.CounterVec
	voids         prometheus.Counter
	limitErrors   prometheus.Counter
	openStreams   prometheus.Gauge
	// Background settlement (settler.go).
	settlePending    prometheus.Gauge
	settleRetries    *prometheus.CounterVec
	settleBackground *prometheus.CounterVec
	phases           [numPhases]prometheus.Observer
	calls            [numCalls]prometheus.Observer
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered, for tests
// and benchmarks).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_requests_total", Help: "Requests seen by the ext_proc server, by how they ended.",
		}, []string{"outcome"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_holds_total", Help: "Hold attempts by result (reserved, insufficient, error).",
		}, []string{"result"}),
		heldMicro: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_extproc_held_micro_usdc_total", Help: "Micro-USDC reserved by holds.",
		}),
		captures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_captures_total", Help: "Captures by source of the usage (reported, estimated).",
		}, []string{"usage"}),
		capturedMicro: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_extproc_captured_micro_usdc_total", Help: "Micro-USDC charged by captures.",
		}),
		shortfall: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_extproc_shortfall_micro_usdc_total", Help: "Micro-USDC of overruns the wallet could not cover.",
		}),
		estimated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_estimated_settlements_total", Help: "Settlements from an estimate, by reason.",
		}, []string{"reason"}),
		voids: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_extproc_voids_total", Help: "Holds voided (upstream errors, requests never sent).",
		}),
		limitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_extproc_limit_errors_total", Help: "Requests admitted without caps because Redis failed.",
		}),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_extproc_open_streams", Help: "ext_proc streams being processed.",
		}),
		settlePending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_extproc_settlements_retrying", Help: "Captures and voids being retried in the background.",
		}),
		settleRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_settle_retries_total", Help: "Background capture or void attempts that failed and were retried, by op.",
		}, []string{"op"}),
		settleBackground: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_extproc_background_settlements_total",
			Help: "Captures and voids handed to the background, by op and how they ended (settled, failed, expiring, abandoned).",
		}, []string{"op", "result"}),
	}
	phase := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_extproc_phase_seconds",
		Help:    "Time spent answering one ext_proc message, by phase (settle: the capture or void).",
		Buckets: []float64{5e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
	}, []string{"phase"})
	for i, n := range phaseNames {
		m.phases[i] = phase.WithLabelValues(n)
	}
	call := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_extproc_store_seconds",
		Help:    "Time of one call to a store (paywall_key, price, authorization: cached lookups; caps: Redis; balance, hold, capture, void: the ledger), whatever its result.",
		Buckets: []float64{5e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
	}, []string{"call"})
	for i, n := range callNames {
		m.calls[i] = call.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.holds, m.heldMicro, m.captures, m.capturedMicro, m.shortfall,
			m.estimated, m.voids, m.limitErrors, m.openStreams, m.settlePending, m.settleRetries, m.settleBackground, phase, call)
	}
	return m
}

func (m *Metrics) observe(phase int, start time.Time) {
	m.phases[phase].Observe(time.Since(start).Seconds())
}

// storeCall records one store call's time.
func (m *Metrics) storeCall(call int, start time.Time) {
	m.calls[call].Observe(time.Since(start).Seconds())
}
