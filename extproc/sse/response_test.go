package sse

import (
	"errors"
	"testing"
)

func TestParseResponse(t *testing.T) {
	usage := `"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":19}`
	tests := []struct {
		name      string
		in        string
		id        string
		want      *Usage
		errWant   error
		errMsg    string
		outputLen int
	}{
		{name: "whole body", in: `{"id":"resp_1","object":"response","status":"completed","error":null,` +
			`"output":[{"type":"reasoning","summary":[]},{"type":"message","content":[{"type":"output_text","text":"Hello"},{"type":"refusal","refusal":"no"}]},` +
			`{"type":"function_call","name":"f","arguments":"{\"a\":1}"},{"type":"odd","content":"a string"}],` + usage + `}`,
			id: "resp_1", want: &Usage{PromptTokens: 12, CompletionTokens: 7, CachedTokens: 4, ReasoningTokens: 2}, outputLen: len("Hello") + len(`{"a":1}`)},
		{name: "completed event", in: `{"type":"response.completed","sequence_number":9,"response":{"id":"resp_2","output":[],` + usage + `}}`,
			id: "resp_2", want: &Usage{PromptTokens: 12, CompletionTokens: 7, CachedTokens: 4, ReasoningTokens: 2}},
		{name: "in-progress event with a usage, not the response's", in: `{"type":"response.in_progress","response":{"id":"resp_5","usage":{"input_tokens":0,"output_tokens":0}}}`, id: "resp_5"},
		{name: "incomplete event", in: `{"type":"response.incomplete","response":{"id":"resp_6",` + usage + `}}`,
			id: "resp_6", want: &Usage{PromptTokens: 12, CompletionTokens: 7, CachedTokens: 4, ReasoningTokens: 2}},
		{name: "created event, usage null", in: `{"type":"response.created","response":{"id":"resp_3","usage":null,"error":null}}`, id: "resp_3"},
		{name: "failed event", in: `{"type":"response.failed","response":{"id":"resp_4","error":{"code":"server_error","message":"model crashed"},"usage":null}}`,
			id: "resp_4", errMsg: "model crashed"},
		{name: "error event", in: `{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null,"sequence_number":3}`, errMsg: "slow down"},
		{name: "error event without a message", in: `{"type":"error","sequence_number":3}`, errMsg: "upstream error"},
		{name: "missing output tokens", in: `{"type":"response.completed","response":{"usage":{"input_tokens":3}}}`, errWant: ErrBadUsage},
		{name: "negative", in: `{"usage":{"input_tokens":-1,"output_tokens":1}}`, errWant: ErrBadUsage},
		{name: "reasoning over output", in: `{"usage":{"input_tokens":1,"output_tokens":1,"output_tokens_details":{"reasoning_tokens":2}}}`, errWant: ErrBadUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseResponse([]byte(tt.in))
			if tt.errWant != nil {
				if !errors.Is(err, tt.errWant) {
					t.Fatalf("err %v, want %v", err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (c.Usage == nil) != (tt.want == nil) || (c.Usage != nil && *c.Usage != *tt.want) {
				t.Errorf("usage %+v, want %+v", c.Usage, tt.want)
			}
			if c.ID != tt.id || c.Error != tt.errMsg || c.OutputBytes != tt.outputLen {
				t.Errorf("id %q error %q output %d", c.ID, c.Error, c.OutputBytes)
			}
		})
	}
	if _, err := ParseResponse([]byte(`{"type":`)); err == nil {
		t.Error("truncated JSON parsed")
	}
}

// TestScannerResponseEvents: in a Responses API stream the scanner flags the events that carry
// usage or an error, and counts the deltas' text (not the done events', which repeat it).
func TestScannerResponseEvents(t *testing.T) {
	in := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null,\"error\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\\\"lo\"}\n\n" +
		"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"Hel\\\"lo\"}\n\n" +
		"event: error\ndata: {\"type\": \"error\",\"message\":\"boom\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n"
	evs, _ := scanAll(t, 0, []byte(in))
	if len(evs) != 5 {
		t.Fatalf("%d events", len(evs))
	}
	for i, want := range []struct {
		usage, err bool
		content    int
	}{{false, false, 0}, {false, false, len(`Hel\"lo`)}, {false, false, 0}, {false, true, 0}, {true, false, 0}} {
		if ev := evs[i]; ev.HasUsage != want.usage || ev.HasError != want.err || ev.ContentBytes != want.content {
			t.Errorf("event %d: usage %v error %v content %d, want %+v", i, ev.HasUsage, ev.HasError, ev.ContentBytes, want)
		}
	}
}

// FuzzParseResponse: any bytes, no panic in ParseResponse or ParseResponseTail; usage that
// parses is within the bounds ParseCompletion promises.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(`{"type":"response.completed","response":{"id":"r","output":[{"content":[{"text":"x"}]}],"usage":{"input_tokens":1,"output_tokens":2,"input_tokens_details":{"cached_tokens":1}}}}`))
	f.Add([]byte(`{"type":"error","message":"x"}`))
	f.Add([]byte(`{"id":"r","output":[1,"a",{"arguments":"{}"}],"error":"boom"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) (Completion, error){ParseResponse, ParseResponseTail} {
			c, err := parse(data)
			if err != nil || c.Usage == nil {
				continue
			}
			u := *c.Usage
			if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.PromptTokens > maxTokenCount || u.CompletionTokens > maxTokenCount ||
				u.CachedTokens+u.CacheWriteTokens > u.PromptTokens || u.ReasoningTokens > u.CompletionTokens || c.OutputBytes > len(data) {
				t.Fatalf("usage out of bounds: %+v from %s", c, data)
			}
		}
	})
}

func TestParseResponseTail(t *testing.T) {
	final := `"},"output":[],"usage":{"input_tokens":3,"output_tokens":5,"output_tokens_details":{"reasoning_tokens":1}},"user":null,"metadata":{}},"sequence_number":9}` + "\n\n"
	c, err := ParseResponseTail([]byte(`…the end of a long "usage" string` + final))
	if err != nil || c.Usage == nil || *c.Usage != (Usage{PromptTokens: 3, CompletionTokens: 5, ReasoningTokens: 1}) {
		t.Errorf("%+v %v", c.Usage, err)
	}
	for _, tail := range []string{`…"usage":null}}`, `nothing here`, ``} {
		if c, err := ParseResponseTail([]byte(tail)); err != nil || c.Usage != nil {
			t.Errorf("%q: %+v %v", tail, c.Usage, err)
		}
	}
	if _, err := ParseResponseTail([]byte(`"usage":{"input_tokens":-1,"output_tokens":1}`)); !errors.Is(err, ErrBadUsage) {
		t.Errorf("negative usage: %v", err)
	}
}

// TestReportedCost: a provider's usage.cost (USD) is read as micro-USD beside the token counts,
// in chat and responses usage alike; a cost that is not a sane number is not reported, and
// never costs the usage.
func TestReportedCost(t *testing.T) {
	for cost, want := range map[string]int64{`0.5`: 500_000, `0.0000914`: 91, `0`: 0, `-1`: -1, `1e400`: -1, `"0.5"`: -1, `null`: -1, `1e10`: -1} {
		for _, parse := range []func([]byte) (Completion, error){ParseCompletion, ParseResponse} {
			body := `{"usage":{"prompt_tokens":1,"completion_tokens":2,"input_tokens":1,"output_tokens":2,"cost":` + cost + `}}`
			c, err := parse([]byte(body))
			if err != nil || c.Usage == nil || c.Usage.CompletionTokens != 2 {
				t.Fatalf("%s: %+v %v", body, c.Usage, err)
			}
			if got := c.Usage.CostMicro; c.Usage.CostReported != (want >= 0) || (want >= 0 && got != want) {
				t.Errorf("cost %s: %d reported %v, want %d", cost, got, c.Usage.CostReported, want)
			}
		}
	}
}

// TestParseCompletionOutputBytes: a whole completion's output is counted for an estimate, also
// when the body is cut short and its usage cannot be read.
func TestParseCompletionOutputBytes(t *testing.T) {
	whole := `{"id":"gen-1","choices":[{"message":{"role":"assistant","content":"Hello","reasoning":"hm"}}]}`
	if c, err := ParseCompletion([]byte(whole)); err != nil || c.OutputBytes != len("Hello")+len("hm") || c.ID != "gen-1" {
		t.Errorf("%+v %v", c, err)
	}
	if c, err := ParseCompletion([]byte(whole[:len(whole)-3])); err == nil || c.OutputBytes != len("Hello")+len("hm") {
		t.Errorf("cut short: %+v %v", c, err)
	}
}
