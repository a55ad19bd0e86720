package extproc

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestMetricsStartAtZero: every labelled counter exists from the start, at zero, with each
// value the code sets, so that a rule's increase() sees the first event (a series born at 1
// reads as no increase at all).
func TestMetricsStartAtZero(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s %v starts at %v", mf.GetName(), m.GetLabel(), v)
			}
			if len(m.GetLabel()) > 0 {
				series[mf.GetName()]++
			}
		}
	}
	for name, want := range map[string]int{
		"tollgate_extproc_requests_total":                len(outcomes),
		"tollgate_extproc_forwarded_total":               len(apis),
		"tollgate_extproc_holds_total":                   3,
		"tollgate_extproc_captures_total":                2,
		"tollgate_extproc_provider_cost_micro_usd_total": 2,
		"tollgate_extproc_estimated_settlements_total":   len(estimateReasons),
		"tollgate_extproc_settle_retries_total":          2,
		"tollgate_extproc_background_settlements_total":  2 * 5,
		"tollgate_extproc_provider_records_total":        3,
	} {
		if series[name] != want {
			t.Errorf("%s: %d series at start, want %d", name, series[name], want)
		}
	}
}
