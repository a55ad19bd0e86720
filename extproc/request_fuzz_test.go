package extproc

import (
	"encoding/json"
	"testing"
)

// FuzzParseChatRequest checks the request parser's promises on any input: no panic; a refusal
// is a 400 with a code and a message; an accepted request has a model, at least one message,
// a budget within the limit and a positive prompt estimate; and its rewrite is valid JSON that
// keeps the model and carries exactly the budget and user Tollgate set.
func FuzzParseChatRequest(f *testing.F) {
	for _, s := range []string{
		streamBody,
		`{"model":"m1","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}],"max_tokens":5,"max_completion_tokens":7}`,
		`{"model":"m1","stream":true,"stream_options":{"include_usage":false,"x":1},"user":"bob","messages":[{"role":"system","content":"日本語"}]}`,
		`{"model":"m1","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
		`{"model":"m1","model":"m2","messages":[]}`,
		`{"model":"m1","messages":[{"role":"user","content":"x"}]} trailing`,
		"{\"model\":\"\xff\"}",
		`[]`, `{}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, bad := parseChatRequest(body, lim)
		if bad != nil {
			if bad.Status != 400 || bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a clear 400: %+v", bad)
			}
			var e map[string]map[string]any
			if err := json.Unmarshal(bad.body(), &e); err != nil || e["error"]["code"] != bad.Code {
				t.Fatalf("error body %s: %v", bad.body(), err)
			}
			return
		}
		if r.Model == "" || r.PromptTokens <= 0 || r.MaxTokens < 0 || r.MaxTokens > lim.MaxTokens {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		keys := r.MaxTokensKeys
		if len(keys) == 0 {
			keys = []string{"max_tokens"}
		}
		out, err := r.rewriteBody(rewrite{User: "u-1", MaxTokens: 42, ForceUsage: r.Stream, OpenRouter: true, MaxTokenKey: keys})
		if err != nil {
			t.Fatalf("rewrite failed: %v", err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("rewrite is not JSON: %v\n%s", err, out)
		}
		var model string
		if json.Unmarshal(got["model"], &model) != nil || model != r.Model {
			t.Fatalf("model changed: %s", got["model"])
		}
		if string(got["user"]) != `"u-1"` {
			t.Fatalf("user %s", got["user"])
		}
		for _, k := range keys {
			if string(got[k]) != "42" {
				t.Fatalf("%s = %s, want 42", k, got[k])
			}
		}
		if r.Stream {
			var so struct {
				IncludeUsage bool `json:"include_usage"`
			}
			if json.Unmarshal(got["stream_options"], &so) != nil || !so.IncludeUsage {
				t.Fatalf("stream_options %s", got["stream_options"])
			}
		}
		// The rewrite parses again, to the same request.
		again, bad := parseChatRequest(out, lim)
		if bad != nil || again.Model != r.Model || again.Stream != r.Stream || again.PromptTokens != r.PromptTokens {
			t.Fatalf("rewrite does not parse back: %+v %+v", again, bad)
		}
	})
}
