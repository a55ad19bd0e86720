package extproc

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/paywall"
)

// textChunk is a legacy completion stream's chunk carrying text.
func textChunk(text string) string {
	return fmt.Sprintf("data: {\"id\":\"gen-43\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"text\":%q,\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n", text)
}

// textUsageChunk is the usage chunk a legacy completion stream sends when asked.
func textUsageChunk(prompt, completion int) string {
	return fmt.Sprintf("data: {\"id\":\"gen-43\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", prompt, completion, prompt+completion)
}

func TestCompletionStreamChargedFromUsage(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{path: "/v1/alice/completions", key: testKey, body: `{"model":"m1","prompt":"Once upon a time","stream":true,"max_tokens":100}`,
		chunks: []string{textChunk("there was"), textChunk(" a wallet"), textUsageChunk(30, 20), "data: [DONE]\n\n"}})
	if res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	sent := sentBody(t, res)
	if sent["max_tokens"] != float64(100) || sent["user"] != testUser || sent["prompt"] != "Once upon a time" ||
		sent["stream_options"].(map[string]any)["include_usage"] != true || sent["usage"].(map[string]any)["include"] != true {
		t.Errorf("rewritten body %v", sent)
	}
	if p, _ := header(res.reqBody.GetResponse().GetHeaderMutation(), ":path"); p != completionsPath {
		t.Errorf(":path %q", p)
	}
	// The client did not ask for the usage: it sees the text and [DONE] only.
	if want := textChunk("there was") + textChunk(" a wallet") + "data: [DONE]\n\n"; res.clientBody != want {
		t.Errorf("client saw %q", res.clientBody)
	}
	// 30 in × 1 + 20 out × 2 = 70, +20 % markup = 84.
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 84 || capt.Metadata["provider_id"] != "gen-43" ||
		capt.Metadata["api"] != "completions" {
		t.Errorf("capture %+v", capt)
	}
	if value(t, s.metrics.forwarded.WithLabelValues("completions")) != 1 {
		t.Error("the forwarded metric does not count the completion")
	}
}

func TestCompletionJSONCharged(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	reply := `{"id":"gen-43","object":"text_completion","created":1,"model":"m1","choices":[{"text":"there was a wallet","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}`
	res := run(t, c, exchange{path: completionsPath, key: testKey, user: testUser, ctype: "application/json",
		body: `{"model":"m1","prompt":"Once upon a time","stream_options":null}`, chunks: []string{reply}})
	if res.clientBody != reply {
		t.Errorf("the completion was changed: %q", res.clientBody)
	}
	// No max_tokens: the API's own default (16), not the paywall's chat default (100 here),
	// is what is held for and sent.
	if sent := sentBody(t, res); sent["stream_options"] != nil || sent["max_tokens"] != float64(16) {
		t.Errorf("rewritten body %v", sent)
	}
	env.ledger.mu.Lock()
	held := env.ledger.holds["hold-1"].AmountMicro
	env.ledger.mu.Unlock()
	// Prompt 4 tokens, 5 with the margin, + 16 × 2 = 37, +20 % = 44.4 → 45.
	if held != 45 {
		t.Errorf("held %d µUSDC, want 45", held)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 84 {
		t.Errorf("capture %+v", capt)
	}
}

// TestCompletionHoldsEveryCompletion: each prompt gets best_of completions, each of which may
// use the whole budget: the hold covers them all.
func TestCompletionHoldsEveryCompletion(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{path: completionsPath, key: testKey, user: testUser, ctype: "application/json",
		body: `{"model":"m1","prompt":["abcd","efgh"],"n":2,"best_of":3,"max_tokens":10}`, chunks: []string{`{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":60}}`}})
	env.ledger.mu.Lock()
	held := env.ledger.holds["hold-1"].AmountMicro
	env.ledger.mu.Unlock()
	// Prompt: 2 tokens, 3 with the 20 % margin, × 1; completions: 2 prompts × 3 × 10 tokens × 2.
	// (3 + 120) × 1.2 = 147.6 → 148.
	if held != 148 {
		t.Errorf("held %d µUSDC, want 148", held)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 147 { // (2 + 120) × 1.2 = 146.4 → 147
		t.Errorf("capture %+v", capt)
	}
}

// TestCompletionCutStreamEstimated: a client that leaves mid-stream is charged the estimate,
// which counts the choices' text.
func TestCompletionCutStreamEstimated(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{path: completionsPath, key: testKey, user: testUser, body: `{"model":"m1","prompt":"Hello there","stream":true}`,
		chunks: []string{textChunk("aaaaaaaa"), textChunk("bbbb"), textChunk("never sent"), textUsageChunk(1, 1)}, cancelAfter: 2})
	capt := waitCapture(t, env.ledger)
	// Prompt 3 tokens + 2 text events (12 bytes → 3 tokens) × 2 = 9 × 1.2 → 11.
	if !capt.Estimated || capt.Metadata["estimate_reason"] != "client_gone" || capt.Metadata["completion_tokens"] != "3" || capt.Split.TotalMicro() != 11 {
		t.Errorf("capture %+v", capt)
	}
}

// TestCompletionPaywallMessage: without an authorization or the money, the answer is a
// text_completion (or its stream) whose text carries the link, as a chat's would.
func TestCompletionPaywallMessage(t *testing.T) {
	for _, tt := range []struct {
		name, user, link string
		balance          int64
		stream           bool
	}{
		{"authorize", "bob", "https://pay.example/authorize?pw=pw1&u=bob", 1_000_000, false},
		{"top up, streamed", testUser, "https://pay.example/topup?pw=pw1&u=alice", 5, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), tt.balance)
			c := startServer(t, s)
			res := run(t, c, exchange{path: completionsPath, key: testKey, user: tt.user,
				body: fmt.Sprintf(`{"model":"m1","prompt":"Hello","stream":%v}`, tt.stream)})
			ir := res.immediate
			if ir == nil || ir.GetStatus().GetCode() != 200 {
				t.Fatalf("want a 200 paywall message, got %v", ir)
			}
			body := string(ir.GetBody())
			if tt.stream {
				if !strings.HasSuffix(body, "data: [DONE]\n\n") {
					t.Fatalf("stream %q", body)
				}
				body = strings.TrimPrefix(strings.SplitN(body, "\n\n", 2)[0], "data: ")
			}
			var m struct {
				Object  string
				Choices []struct {
					Text string
				}
			}
			if err := json.Unmarshal([]byte(body), &m); err != nil || m.Object != "text_completion" || len(m.Choices) != 1 || !strings.Contains(m.Choices[0].Text, tt.link) {
				t.Errorf("message %s (%v)", ir.GetBody(), err)
			}
			if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
				t.Errorf("money held: %d, %d holds", held, open)
			}
		})
	}
}

// TestCompletionUnpricedOptions: a built-in paywall refuses what the provider bills beyond the
// model's tokens; a BYOK paywall passes it on.
func TestCompletionUnpricedOptions(t *testing.T) {
	body := `{"model":"m1","prompt":"Hi","models":["m2"]}`
	_, s := newFakeEnv(t, testPaywall(), 1_000_000)
	res := run(t, startServer(t, s), exchange{path: completionsPath, key: testKey, user: testUser, body: body})
	if ir := res.immediate; ir == nil || ir.GetStatus().GetCode() != 400 || !strings.Contains(string(ir.GetBody()), "'models'") {
		t.Errorf("built-in answered %v", ir)
	}
	pw := testPaywall()
	pw.Mode, pw.UpstreamKey, pw.Upstream = paywall.ModeBYOK, "sk-byok", "byok-a"
	_, s = newFakeEnv(t, pw, 1_000_000)
	res = run(t, startServer(t, s), exchange{path: completionsPath, key: testKey, user: testUser, body: body,
		ctype: "application/json", chunks: []string{`{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}`}})
	if res.immediate != nil || sentBody(t, res)["models"] == nil {
		t.Errorf("BYOK answered %v", res.immediate)
	}
}

func TestParseCompletionsRequest(t *testing.T) {
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	for _, tt := range []struct {
		body           string
		prompt, choice int64
	}{
		{`{"model":"m","prompt":"Hello there"}`, 3, 1},
		{`{"model":"m","prompt":""}`, 1, 1},
		{`{"model":"m","prompt":["a","bcdefgh"],"n":3}`, 3, 6},
		{`{"model":"m","prompt":[1,2,3,4,5]}`, 5, 1},
		{`{"model":"m","prompt":[[1,2],[3]],"best_of":4,"n":2}`, 3, 8},
		{`{"model":"m","prompt":["abcd",[7,8]],"suffix":"efgh"}`, 5, 2},
		{`{"model":"m","prompt":"x","n":null,"best_of":null,"suffix":null,"max_tokens":null}`, 1, 1},
	} {
		r, bad := parseCompletionsRequest([]byte(tt.body), lim)
		if bad != nil || r.PromptTokens != tt.prompt || r.Choices != tt.choice {
			t.Errorf("%s: prompt %d, choices %d, %v; want %d, %d", tt.body, r.PromptTokens, r.Choices, bad, tt.prompt, tt.choice)
		}
	}
	for body, code := range map[string]string{
		`{"model":"m"}`:                                    "missing_prompt",
		`{"model":"m","prompt":null}`:                      "missing_prompt",
		`{"model":"m","prompt":[]}`:                        "missing_prompt",
		`{"model":"m","prompt":7}`:                         "invalid_type",
		`{"model":"m","prompt":[1,"a"]}`:                   "invalid_type",
		`{"model":"m","prompt":["a",1]}`:                   "invalid_type",
		`{"model":"m","prompt":[[]]}`:                      "invalid_type",
		`{"model":"m","prompt":[-1]}`:                      "invalid_type",
		`{"model":"m","prompt":[1.5]}`:                     "invalid_type",
		`{"model":"m","prompt":{"text":"a"}}`:              "invalid_type",
		`{"model":"m","prompt":"a","suffix":3}`:            "invalid_type",
		`{"model":"m","prompt":"a","max_tokens":0}`:        "invalid_max_tokens",
		`{"model":"m","prompt":"a","n":0}`:                 "invalid_n",
		`{"model":"m","prompt":"a","best_of":21}`:          "invalid_best_of",
		`{"model":"m","prompt":"a","n":3,"best_of":2}`:     "invalid_best_of",
		`{"model":"m","prompt":["a","b","c"],"n":50}`:      "too_many_completions",
		`{"model":"m","prompt":"a","stream_options":true}`: "invalid_type",
		`{"prompt":"a"}`:                                   "missing_model",
	} {
		if _, bad := parseCompletionsRequest([]byte(body), lim); bad == nil || bad.Code != code || bad.Status != 400 {
			t.Errorf("%s: %+v, want %s", body, bad, code)
		}
	}
	// Too many completions: the param names what made them many.
	many := `["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p"]`
	for body, param := range map[string]string{
		`{"model":"m","prompt":["a","b","c"],"n":50}`:                             "n",
		`{"model":"m","prompt":["a","b","c","d","e","f","g"],"n":2,"best_of":20}`: "best_of",
		`{"model":"m","prompt":[` + strings.Repeat(`"a",`, 128) + `"a"]}`:         "prompt",
		`{"model":"m","prompt":` + many + `,"n":9}`:                               "n",
	} {
		if _, bad := parseCompletionsRequest([]byte(body), lim); bad == nil || bad.Code != "too_many_completions" || bad.Param != param {
			t.Errorf("%s: %+v, want too_many_completions for %s", body, bad, param)
		}
	}
}

// FuzzParseCompletionsRequest: no panic; a refusal is a clear 400; an accepted request has a
// model, a positive estimate and 1…maxCompletionChoices completions, and its rewrite bounds the
// budget by max_tokens alone and parses back the same.
func FuzzParseCompletionsRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m1","prompt":"x"}`, `{"model":"m1","prompt":["a","b"],"n":2,"best_of":3,"suffix":"z","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m1","prompt":[[1,2],[3]]}`, `{"model":"m1","prompt":[1,2]}`, `{"model":"m1","prompt":[]}`,
		`{"model":"m1","models":["m2"],"prompt":"x","max_tokens":5}`, `[]`, `{}`, ``,
	} {
		f.Add([]byte(s))
	}
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, bad := parseCompletionsRequest(body, lim)
		if bad != nil {
			if bad.Status != 400 || bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a clear 400: %+v", bad)
			}
			return
		}
		if r.Model == "" || r.PromptTokens <= 0 || r.Choices < 1 || r.Choices > maxCompletionChoices || r.MaxTokens < 0 || r.MaxTokens > lim.MaxTokens {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		out, err := r.rewriteBody(rewrite{User: "u-1", MaxTokens: 42, ForceUsage: r.Stream, OpenRouter: true, MaxTokenKey: []string{"max_tokens"}})
		if err != nil {
			t.Fatalf("rewrite failed: %v", err)
		}
		var sent map[string]json.RawMessage
		if json.Unmarshal(out, &sent) != nil || (sent["max_completion_tokens"] != nil && !isNull(sent["max_completion_tokens"])) {
			t.Fatalf("rewrite %s carries a budget key besides max_tokens", out)
		}
		again, bad := parseCompletionsRequest(out, lim)
		if bad != nil || again.Model != r.Model || again.PromptTokens != r.PromptTokens || again.Choices != r.Choices ||
			again.MaxTokens != 42 || again.User != "u-1" || (r.Stream && !again.IncludeUsage) {
			t.Fatalf("rewrite %s does not parse back: %+v %+v", out, again, bad)
		}
	})
}

// TestCompletionBudgetKeyIsMaxTokens: a legacy completion's budget is max_tokens. Chat's
// max_completion_tokens is not one of its parameters, and the rewrite bounds max_tokens only,
// so one sent along would reach the upstream above the budget held for: an upstream that honours
// it could generate more than the hold covers. It is refused, saying which key to use, and
// nothing is held.
func TestCompletionBudgetKeyIsMaxTokens(t *testing.T) {
	for _, body := range []string{
		`{"model":"m1","prompt":"Hi","max_tokens":10,"max_completion_tokens":100000}`,
		`{"model":"m1","prompt":"Hi","max_completion_tokens":100000}`,
	} {
		env, s := newFakeEnv(t, testPaywall(), 1_000_000)
		res := run(t, startServer(t, s), exchange{path: completionsPath, key: testKey, user: testUser, body: body,
			ctype: "application/json", chunks: []string{`{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}`}})
		if res.immediate == nil {
			t.Errorf("%s: forwarded as %v", body, sentBody(t, res))
			continue
		}
		var e struct {
			Error struct{ Code, Param, Message string }
		}
		if err := json.Unmarshal(res.immediate.GetBody(), &e); err != nil || res.immediate.GetStatus().GetCode() != 400 ||
			e.Error.Code != "unsupported_parameter" || e.Error.Param != "max_completion_tokens" || !strings.Contains(e.Error.Message, "'max_tokens'") {
			t.Errorf("%s: answered %d %s", body, res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
		}
		if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
			t.Errorf("%s: money held: %d, %d holds", body, held, open)
		}
	}
}
