package extproc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// embeddingsReply is an embeddings response with n vectors of dims floats and prompt tokens.
func embeddingsReply(n, dims, prompt int) string {
	vec := "[" + strings.TrimSuffix(strings.Repeat("-0.0123456789,", dims), ",") + "]"
	data := make([]string, n)
	for i := range data {
		data[i] = fmt.Sprintf(`{"object":"embedding","index":%d,"embedding":%s}`, i, vec)
	}
	return fmt.Sprintf(`{"object":"list","data":[%s],"model":"m1","usage":{"prompt_tokens":%d,"total_tokens":%d}}`,
		strings.Join(data, ","), prompt, prompt)
}

func TestEmbeddingsChargedFromUsage(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	reply := embeddingsReply(2, 8, 30)
	res := run(t, c, exchange{path: "/v1/alice/embeddings", key: testKey, ctype: "application/json",
		body: `{"model":"m1","input":["Hello there","General Kenobi"],"dimensions":8}`, chunks: []string{reply}})
	if res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	sent := sentBody(t, res)
	if sent["user"] != testUser || sent["dimensions"] != float64(8) {
		t.Errorf("rewritten body %v", sent)
	}
	for _, k := range []string{"max_tokens", "max_output_tokens", "stream_options", "usage"} {
		if _, ok := sent[k]; ok {
			t.Errorf("rewritten body has %q: %v", k, sent)
		}
	}
	if p, _ := header(res.reqBody.GetResponse().GetHeaderMutation(), ":path"); p != embeddingsPath {
		t.Errorf(":path %q", p)
	}
	if res.clientBody != reply {
		t.Error("the response was changed")
	}
	// Streamed through (the vectors may be more than Envoy would buffer), content-length kept.
	if res.respHeaders.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" ||
		res.respHeaders.GetResponseHeaders().GetResponse().GetHeaderMutation() != nil {
		t.Errorf("response headers answered %v", res.respHeaders)
	}
	// The hold was the input alone: two texts of 3 and 4 tokens, +20 % margin = 9 tokens × 1,
	// +20 % markup: 10.8 → 11 µUSDC. No completion budget.
	env.ledger.mu.Lock()
	held := env.ledger.holds["hold-1"].AmountMicro
	env.ledger.mu.Unlock()
	if held != 11 {
		t.Errorf("held %d µUSDC", held)
	}
	if value(t, s.metrics.forwarded.WithLabelValues("embeddings")) != 1 {
		t.Error("the forwarded metric does not count the embeddings request")
	}
	// 30 tokens × 1, +20 % = 36.
	capt, ok := env.ledger.onlyCapture()
	if !ok || capt.Split.TotalMicro() != 36 || capt.Estimated || capt.Metadata["prompt_tokens"] != "30" || capt.Metadata["completion_tokens"] != "0" {
		t.Errorf("capture %+v", capt)
	}
}

// TestEmbeddingsLargeReply: megabytes of vectors streamed through in chunks are read for their
// usage at either end of the body, without keeping or decoding the vectors, and nothing of them
// is changed; a usage in the middle of megabytes is not found, and the input is estimated.
func TestEmbeddingsLargeReply(t *testing.T) {
	last := embeddingsReply(100, 3072, 500) // ~4 MB, usage last
	usage := `"usage":{"prompt_tokens":500,"total_tokens":500}`
	i := strings.Index(last, `"data"`)
	first := `{` + usage + `,` + strings.Replace(last[i:], ","+usage, "", 1)
	data := strings.Index(last, `"model"`)
	middle := last[:i] + `"data":[` + strings.Repeat(`{"embedding":[0.5]},`, 50_000) + `{}],` + usage + `,"more":` + last[i+7:data-1] + `}`
	for _, tt := range []struct {
		name, reply string
		charged     int64
		estimated   bool
	}{
		{"usage last", last, 600, false},
		{"usage first", first, 600, false},
		{"usage in the middle", middle, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000)
			c := startServer(t, s)
			var chunks []string
			for rest := tt.reply; rest != ""; {
				n := min(len(rest), 100<<10)
				chunks, rest = append(chunks, rest[:n]), rest[n:]
			}
			res := run(t, c, exchange{path: embeddingsPath, key: testKey, user: testUser, ctype: "application/json",
				body: `{"model":"m1","input":"Hello there"}`, chunks: chunks})
			if res.clientBody != tt.reply {
				t.Error("the response was changed")
			}
			capt, ok := env.ledger.onlyCapture()
			if !ok || capt.Estimated != tt.estimated || (!tt.estimated && capt.Split.TotalMicro() != tt.charged) {
				t.Errorf("capture %+v", capt)
			}
		})
	}
}

func TestEmbeddingsWithoutUsageEstimated(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{path: embeddingsPath, key: testKey, user: testUser, ctype: "application/json",
		body: `{"model":"m1","input":[[1,2,3,4,5],[6,7]]}`, chunks: []string{`{"object":"list","data":[],"model":"m1"}`}})
	// The estimate is the input: 7 token ids, nothing produced.
	capt, ok := env.ledger.onlyCapture()
	if !ok || !capt.Estimated || capt.Metadata["prompt_tokens"] != "7" || capt.Metadata["completion_tokens"] != "0" {
		t.Errorf("capture %+v", capt)
	}
}

// TestEmbeddingsPaywall: without an authorization or the money, embeddings get 402 with the
// link in OpenAI's error shape; a wallet that cannot pay for the input is told so after one
// refused hold and one balance read (there is no budget to lower).
func TestEmbeddingsPaywall(t *testing.T) {
	for _, tt := range []struct {
		name, user, code, link string
		action                 Action
		balance                int64
	}{
		{"authorize", "bob", "authorization_required", "https://pay.example/authorize?pw=pw1&u=bob", ActionAuthorize, 1_000_000},
		{"top up", testUser, "insufficient_funds", "https://pay.example/topup?pw=pw1&u=alice", ActionTopUp, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), tt.balance)
			c := startServer(t, s)
			res := run(t, c, exchange{path: embeddingsPath, key: testKey, user: tt.user,
				body: `{"model":"m1","input":"` + strings.Repeat("word ", 40) + `"}`})
			ir := res.immediate
			if ir == nil || ir.GetStatus().GetCode() != http.StatusPaymentRequired {
				t.Fatalf("want 402, got %v", ir)
			}
			if a, _ := header(ir.GetHeaders(), ActionHeader); a != string(tt.action) {
				t.Errorf("action header %q", a)
			}
			var e struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(ir.GetBody(), &e); err != nil || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.link) {
				t.Errorf("body %s", ir.GetBody())
			}
			if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
				t.Errorf("money held: %d, %d holds", held, open)
			}
			if tt.action == ActionTopUp && (len(env.ledger.holdKeys) != 1 || env.ledger.balanceReads() != 1) {
				t.Errorf("%d holds and %d balance reads for an input the wallet cannot pay", len(env.ledger.holdKeys), env.ledger.balanceReads())
			}
		})
	}
}

func TestEstimateEmbeddingsInput(t *testing.T) {
	for in, want := range map[string]int64{
		`"Hello there"`:                   3,
		`""`:                              1, // at least one token per input
		`["a","",""]`:                     3,
		`[1,2,3]`:                         3,
		`[[1,2],[3,4,5]]`:                 5,
		`[{"type":"text","text":"abcd"}]`: 1,
		`[{"type":"image_url","image_url":{"url":"data:x"}}]`: tokensPerMediaPart,
	} {
		if got, bad := estimateEmbeddingsInput(json.RawMessage(in)); bad != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, bad, want)
		}
	}
	// Token ids are whole numbers ≥ 0, and an array holds texts or ids, not both (the forms are
	// shared with a legacy completion's prompt: textInputs).
	for _, in := range []string{``, `null`, `[]`, `{}`, `7`, `[[]]`, `[true]`, `[null]`, `[-1]`, `[1.5]`, `[1,"a"]`, `["a",1]`} {
		if _, bad := estimateEmbeddingsInput(json.RawMessage(in)); bad == nil || bad.Status != 400 {
			t.Errorf("%s accepted", in)
		}
	}
}

// FuzzParseEmbeddingsRequest: no panic; a refusal is a clear 400; an accepted request has a
// model and a positive estimate (a priced model never holds nothing), and its rewrite sets the
// user and no budget, and parses back the same.
func FuzzParseEmbeddingsRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m1","input":"x"}`, `{"model":"m1","input":["a","b"],"dimensions":8,"encoding_format":"base64"}`,
		`{"model":"m1","input":[[1,2],[3]]}`, `{"model":"m1","input":[{"type":"image_url"}]}`, `{"model":"m1","input":[]}`,
		`{"model":"m1","models":["m2"],"input":"x"}`, `[]`, `{}`, ``,
	} {
		f.Add([]byte(s))
	}
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, bad := parseEmbeddingsRequest(body, lim)
		if bad != nil {
			if bad.Status != 400 || bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a clear 400: %+v", bad)
			}
			return
		}
		if r.Model == "" || r.PromptTokens <= 0 || r.MaxTokens != 0 {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		out, err := r.rewriteBody(rewrite{User: "u-1"})
		if err != nil {
			t.Fatalf("rewrite failed: %v", err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil || string(got["user"]) != `"u-1"` {
			t.Fatalf("rewrite %s: %v", out, err)
		}
		again, bad := parseEmbeddingsRequest(out, lim)
		if bad != nil || again.Model != r.Model || again.PromptTokens != r.PromptTokens {
			t.Fatalf("rewrite does not parse back: %+v %+v", again, bad)
		}
	})
}

// TestEmbeddingsHoldAgainWhenTheMoneyIsBack: a refused hold whose wallet covers the input by
// the time its balance is read (another request's hold was released) is held again, not
// answered with the top-up message.
func TestEmbeddingsHoldAgainWhenTheMoneyIsBack(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	env.ledger.refuse = 1
	c := startServer(t, s)
	res := run(t, c, exchange{path: embeddingsPath, key: testKey, user: testUser, body: `{"model":"m1","input":"x"}`,
		ctype: "application/json", chunks: []string{embeddingsReply(1, 2, 3)}})
	if res.immediate != nil || len(env.ledger.holdKeys) != 2 || env.ledger.balanceReads() != 1 {
		t.Fatalf("answered %v after %d holds and %d balance reads", res.immediate, len(env.ledger.holdKeys), env.ledger.balanceReads())
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 4 {
		t.Errorf("capture %+v", capt)
	}
}

// TestBodyTooLargeToKeep: a JSON body larger than the server keeps whole (4 × max_body_bytes)
// is passed through and metered from its ends (64 KiB each): an embeddings reply is charged its
// usage, so is a completion that fits in one end, and a larger completion (whose ends are not
// JSON on their own) its estimate.
func TestBodyTooLargeToKeep(t *testing.T) {
	completion := func(n int) string {
		return `{"id":"gen-9","choices":[{"message":{"role":"assistant","content":"` + strings.Repeat("x", n) +
			`"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`
	}
	const chat = `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`
	for _, tt := range []struct {
		name, path, body, reply string
		charged                 int64 // 0: estimated
	}{
		{"embeddings", embeddingsPath, `{"model":"m1","input":"Hello there"}`, embeddingsReply(10, 100, 500), 600},
		{"completion within an end", chatPath, chat, completion(20_000), 24},
		{"completion beyond both ends", chatPath, chat, completion(200_000), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlakyReplica(t, 10*time.Minute, funded(&flakyLedger{}), testJournal(t), func(c *Config, _ *Deps) { c.MaxBodyBytes = 1024 })
			var chunks []string
			for rest := tt.reply; rest != ""; {
				n := min(len(rest), 1000)
				chunks, rest = append(chunks, rest[:n]), rest[n:]
			}
			res := run(t, e.client, exchange{path: tt.path, key: testKey, user: testUser, body: tt.body, ctype: "application/json", chunks: chunks})
			if res.clientBody != tt.reply {
				t.Error("the response was changed")
			}
			capt := waitCapture(t, e.ledger.fakeLedger)
			if capt.Estimated != (tt.charged == 0) || (tt.charged != 0 && capt.Split.TotalMicro() != tt.charged) {
				t.Errorf("capture %+v", capt)
			}
		})
	}
}
