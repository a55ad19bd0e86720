package extproc

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/generation"
	"github.com/tollgate-dev/tollgate/extproc/generation/generationtest"
	"github.com/tollgate-dev/tollgate/pricing"
)

// providerRecordReplica is a flaky-ledger replica (its ledger never fails) whose built-in
// requests cut short ask the endpoint at url for the provider's record, for up to wait.
func providerRecordReplica(t *testing.T, url string, wait time.Duration, j Journal) *flakyEnv {
	t.Helper()
	return newFlakyReplica(t, 10*time.Minute, funded(&flakyLedger{}), j, func(c *Config, d *Deps) {
		c.GenerationWait = wait
		d.Generations = generation.New(url, "sk-or-operator", nil)
	})
}

var cutStream = []string{sseChunk("aaaaaaaa"), sseChunk("bbbb"), sseChunk("never sent"), usageChunk(1, 1)}

// TestClientGoneChargesTheProviderRecord: a built-in request whose client went away is
// charged what the provider's record says the generation used — asked again while the record
// is not there yet — not the estimate, and the capture says where its figures came from. The
// figures are journaled too, so that a replica taking over would charge them.
func TestClientGoneChargesTheProviderRecord(t *testing.T) {
	fake := generationtest.Start(t, "sk-or-operator", "gen-42", 2, `{"data":{"id":"gen-42","native_tokens_prompt":31,"native_tokens_completion":95,
		"native_tokens_reasoning":5,"native_tokens_cached":0,"cancelled":true}}`)
	j := testJournal(t)
	e := providerRecordReplica(t, fake.URL, 30*time.Second, j)
	run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: cutStream, cancelAfter: 2})
	capt := waitCapture(t, e.ledger.fakeLedger)
	usage := pricing.Usage{PromptTokens: 31, CompletionTokens: 95, ReasoningTokens: 5}
	want, err := price(1, 2).CostMicro(usage, testPaywall().MarkupBps)
	if err != nil {
		t.Fatal(err)
	}
	if capt.Estimated || capt.Split.TotalMicro() != want || capt.Metadata["usage_source"] != "provider_record" ||
		capt.Metadata["completion_tokens"] != "95" || capt.Metadata["reasoning_tokens"] != "5" || capt.Metadata["estimate_reason"] != "" {
		t.Fatalf("capture %+v, want %d from the provider's record", capt, want)
	}
	if n := fake.Asks.Load(); n != 3 {
		t.Errorf("asked the provider %d times, want 2 not-yet answers and the record", n)
	}
	e.settled(t, 5*time.Second)
	if got := value(t, e.metrics.requests.WithLabelValues(string(OutcomeCharged))); got != 1 {
		t.Errorf("charged outcomes %v, want 1 (not estimated)", got)
	}
	if got := value(t, e.metrics.providerRecords.WithLabelValues("used")); got != 1 {
		t.Errorf("provider records used %v, want 1", got)
	}
	if n := journalLen(t, j); n != 0 {
		t.Errorf("%d settlements left in the journal", n)
	}
	if !strings.Contains(e.logs.String(), "charging the provider's record of the usage") {
		t.Error("the refinement was not logged")
	}
}

// TestClientGoneChargesTheEstimateWithoutARecord: when the provider has no record within
// serve.generation_wait, or answers something unreadable, the estimate is charged, as without
// a provider to ask.
func TestClientGoneChargesTheEstimateWithoutARecord(t *testing.T) {
	for name, tt := range map[string]struct {
		notYet int32
		record string
		result string
	}{
		"never recorded": {-1, "", "none_in_time"},
		"unreadable":     {0, `{"data":{"native_tokens_prompt":-3}}`, "unreadable"},
	} {
		t.Run(name, func(t *testing.T) {
			fake := generationtest.Start(t, "sk-or-operator", "gen-42", tt.notYet, tt.record)
			e := providerRecordReplica(t, fake.URL, 300*time.Millisecond, nil)
			start := time.Now()
			run(t, e.client, exchange{key: testKey, user: testUser, body: streamBody, chunks: cutStream, cancelAfter: 2})
			capt := waitCapture(t, e.ledger.fakeLedger)
			// The estimate of TestClientGoneSettlesEstimate.
			if !capt.Estimated || capt.Metadata["estimate_reason"] != "client_gone" || capt.Split.TotalMicro() != 21 {
				t.Fatalf("capture %+v, want the estimate", capt)
			}
			if tt.notYet < 0 && time.Since(start) < 300*time.Millisecond {
				t.Errorf("charged the estimate after %s, before the wait was over", time.Since(start))
			}
			e.settled(t, 5*time.Second)
			if got := value(t, e.metrics.requests.WithLabelValues(string(OutcomeEstimated))); got != 1 {
				t.Errorf("estimated outcomes %v, want 1", got)
			}
			if got := value(t, e.metrics.providerRecords.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("provider records %s %v, want 1", tt.result, got)
			}
		})
	}
}

// TestSetUsageMeta: a capture's metadata carries the counts of the usage it charges, and none
// left over from the usage it replaces (the provider's record in place of a reported usage
// that could not be priced).
func TestSetUsageMeta(t *testing.T) {
	meta := map[string]string{"model": "m1"}
	setUsageMeta(meta, pricing.Usage{PromptTokens: 7, CompletionTokens: 9, CachedTokens: 3, ReasoningTokens: 2})
	want := map[string]string{"model": "m1", "prompt_tokens": "7", "completion_tokens": "9", "cached_tokens": "3", "reasoning_tokens": "2"}
	if !maps.Equal(meta, want) {
		t.Fatalf("metadata %v, want %v", meta, want)
	}
	setUsageMeta(meta, pricing.Usage{PromptTokens: 1, CompletionTokens: 0})
	want = map[string]string{"model": "m1", "prompt_tokens": "1", "completion_tokens": "0"}
	if !maps.Equal(meta, want) {
		t.Fatalf("metadata %v, want %v", meta, want)
	}
}
