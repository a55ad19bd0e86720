package extproc

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

const (
	testKey    = "tg_test_key"
	testWallet = "0x00000000000000000000000000000000000000a1"
	testUser   = "alice"
)

// fakeEnv is a server on a real gRPC listener with fakes at the ledger, paywall and price
// seams.
type fakeEnv struct {
	ledger   *fakeLedger
	paywalls *fakePaywalls
	server   *Server
}

func newFakeEnv(t testing.TB, pw paywall.Paywall, balance int64) (*fakeEnv, *Server) {
	t.Helper()
	l := newFakeLedger()
	if balance >= 0 {
		l.deposit(testWallet, balance)
	}
	pws := &fakePaywalls{keys: map[string]paywall.Paywall{testKey: pw},
		auths: map[string]string{pw.ID + "/" + testUser: testWallet}}
	s, err := NewServer(Config{FeeBps: 500, ProviderKey: "sk-or-operator", PromptMarginPct: 20}, Deps{
		Ledger: l, Paywalls: pws,
		Prices: fakePrices{"m1": price(1, 2), "free": {Input: pricing.NewDecimal(0, 0), Output: pricing.NewDecimal(0, 0)}},
		Links:  fakeLinks{}, Clock: fakeClock{time.Unix(1764200000, 0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeEnv{ledger: l, paywalls: pws, server: s}, s
}

func sseChunk(content string) string {
	return fmt.Sprintf("data: {\"id\":\"gen-42\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}],\"usage\":null}\n\n", content)
}

func usageChunk(prompt, completion int) string {
	return fmt.Sprintf("data: {\"id\":\"gen-42\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", prompt, completion, prompt+completion)
}

// sentBody decodes the request body the server sent upstream.
func sentBody(t *testing.T, res result) map[string]any {
	t.Helper()
	var sent map[string]any
	if err := json.Unmarshal(res.reqBody.GetResponse().GetBodyMutation().GetBody(), &sent); err != nil {
		t.Fatalf("rewritten body is not JSON: %v", err)
	}
	return sent
}

const streamBody = `{"model":"m1","stream":true,"messages":[{"role":"user","content":"Hello there"}]}`

func TestStreamChargedFromUsage(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{
		": OPENROUTER PROCESSING\n\n", sseChunk("Hi"), sseChunk(" there"), usageChunk(30, 20), "data: [DONE]\n\n",
	}})
	if res.immediate != nil {
		t.Fatalf("immediate response %d: %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
	}
	// The request went upstream rewritten, with the operator's key and the routing header.
	cr := res.reqBody.GetResponse()
	if !cr.GetClearRouteCache() {
		t.Error("route cache not cleared")
	}
	body := cr.GetBodyMutation().GetBody()
	var sent map[string]any
	if err := json.Unmarshal(body, &sent); err != nil {
		t.Fatalf("rewritten body is not JSON: %v", err)
	}
	if sent["max_tokens"] != float64(100) || sent["user"] != testUser ||
		sent["stream_options"].(map[string]any)["include_usage"] != true {
		t.Errorf("rewritten body %s", body)
	}
	if cl, _ := header(cr.GetHeaderMutation(), "content-length"); cl != fmt.Sprint(len(body)) {
		t.Errorf("content-length %q, body %d bytes", cl, len(body))
	}
	if a, _ := header(cr.GetHeaderMutation(), "authorization"); a != "Bearer sk-or-operator" {
		t.Errorf("authorization %q", a)
	}
	if u, _ := header(cr.GetHeaderMutation(), "x-tollgate-upstream"); u != "openrouter" {
		t.Errorf("routing header %q", u)
	}
	if !removes(cr.GetHeaderMutation(), "x-paywall-user") {
		t.Error("x-paywall-user not removed")
	}
	// SSE switched to STREAMED, content-length removed.
	if res.respHeaders.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" {
		t.Errorf("mode override %v", res.respHeaders.GetModeOverride())
	}
	if !removes(res.respHeaders.GetResponseHeaders().GetResponse().GetHeaderMutation(), "content-length") {
		t.Error("content-length not removed")
	}
	// The client did not ask for usage: it never sees the usage chunk.
	if strings.Contains(res.clientBody, "prompt_tokens") || !strings.Contains(res.clientBody, "[DONE]") ||
		!strings.Contains(res.clientBody, " there") {
		t.Errorf("client saw %q", res.clientBody)
	}
	// Charged exactly: 30 in × 1 + 20 out × 2 = 70 micro, +20 % markup = 84.
	capt, ok := env.ledger.onlyCapture()
	if !ok {
		t.Fatal("no capture")
	}
	if capt.Split.TotalMicro() != 84 || capt.Estimated || capt.Split.ProviderMicro != 70 ||
		capt.Metadata["provider_id"] != "gen-42" {
		t.Errorf("capture %+v", capt)
	}
	if posted, held, open := env.ledger.state(testWallet); posted != 1_000_000-84 || held != 0 || open != 0 {
		t.Errorf("wallet posted %d held %d, open holds %d", posted, held, open)
	}
}

func TestClientAskedForUsageSeesIt(t *testing.T) {
	_, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	body := `{"model":"m1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`
	res := run(t, c, exchange{key: testKey, user: testUser, body: body, chunks: []string{
		sseChunk("a"), usageChunk(5, 1), "data: [DONE]\n\n"}})
	if !strings.Contains(res.clientBody, `"prompt_tokens":5`) {
		t.Errorf("usage chunk hidden from a client that asked for it: %q", res.clientBody)
	}
	for _, ch := range res.chunks {
		if ch.GetResponse().GetBodyMutation() != nil {
			t.Errorf("chunk mutated: %v", ch)
		}
	}
}

// TestUsageChunkSplitAcrossChunks: the usage event arrives in three pieces, glued to the
// content before it and [DONE] after it; the client still sees every other byte, in order.
func TestUsageChunkSplitAcrossChunks(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	all := sseChunk("one") + sseChunk("two") + usageChunk(30, 20) + "data: [DONE]\n\n"
	u := strings.Index(all, `"usage":{`)
	pieces := []string{all[:u-20], all[u-20 : u+10], all[u+10 : len(all)-5], all[len(all)-5:]}
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: pieces})
	if want := sseChunk("one") + sseChunk("two") + "data: [DONE]\n\n"; res.clientBody != want {
		t.Errorf("client saw\n%q\nwant\n%q", res.clientBody, want)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 84 {
		t.Errorf("capture %+v", capt)
	}
}

func TestNonStreamCharged(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	resp := `{"id":"gen-9","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`
	res := run(t, c, exchange{key: testKey, user: testUser, ctype: "application/json",
		body: `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`, chunks: []string{resp}})
	if res.respHeaders.GetModeOverride() != nil {
		t.Error("JSON response switched to STREAMED")
	}
	if res.clientBody != resp {
		t.Errorf("JSON body changed: %q", res.clientBody)
	}
	if _, ok := sentBody(t, res)["stream_options"]; ok {
		t.Error("stream_options set on a non-stream request")
	}
	// (10×1 + 5×2) × 1.2 = 24.
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 24 || capt.Estimated ||
		capt.Metadata["provider_id"] != "gen-9" {
		t.Errorf("capture %+v", capt)
	}
}

func TestPaywallMessages(t *testing.T) {
	tests := []struct {
		name    string
		user    string
		balance int64
		stream  bool
		action  Action
		link    string
	}{
		{"authorize json", "bob", 1_000_000, false, ActionAuthorize, "https://pay.example/authorize?pw=pw1&u=bob"},
		{"authorize stream", "bob", 1_000_000, true, ActionAuthorize, "https://pay.example/authorize?pw=pw1&u=bob"},
		{"top up json", testUser, 30, false, ActionTopUp, "https://pay.example/topup?pw=pw1&u=alice"},
		{"top up stream", testUser, 30, true, ActionTopUp, "https://pay.example/topup?pw=pw1&u=alice"},
		{"top up never deposited", testUser, -1, false, ActionTopUp, "https://pay.example/topup?pw=pw1&u=alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), tt.balance)
			c := startServer(t, s)
			body := fmt.Sprintf(`{"model":"m1","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, tt.stream)
			res := run(t, c, exchange{key: testKey, user: tt.user, body: body})
			ir := res.immediate
			if ir == nil || ir.GetStatus().GetCode() != http.StatusOK {
				t.Fatalf("want a 200 paywall message, got %v", ir)
			}
			if a, _ := header(ir.GetHeaders(), ActionHeader); a != string(tt.action) {
				t.Errorf("action header %q", a)
			}
			text := assertCompletion(t, ir, tt.stream)
			if !strings.Contains(text, tt.link) {
				t.Errorf("message %q lacks the link %q", text, tt.link)
			}
			if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
				t.Errorf("money held after a paywall message: %d, %d holds", held, open)
			}
		})
	}
}

// assertCompletion checks that a paywall message is a valid chat completion (or SSE stream of
// chunks ending in [DONE]) with zero usage and finish_reason stop, and returns its text.
func assertCompletion(t *testing.T, ir interface {
	GetBody() []byte
}, stream bool) string {
	t.Helper()
	type choice struct {
		Message      struct{ Role, Content string }
		Delta        struct{ Role, Content string }
		FinishReason *string `json:"finish_reason"`
	}
	type completion struct {
		ID, Object, Model string
		Choices           []choice
		Usage             *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	body := string(ir.GetBody())
	if !stream {
		var c completion
		if err := json.Unmarshal([]byte(body), &c); err != nil || c.Object != "chat.completion" || len(c.Choices) != 1 ||
			c.Choices[0].Message.Role != "assistant" || c.Usage == nil || c.Usage.PromptTokens != 0 ||
			c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
			t.Fatalf("not a chat completion: %s (%v)", body, err)
		}
		return c.Choices[0].Message.Content
	}
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("stream does not end in [DONE]: %q", body)
	}
	var text strings.Builder
	finished := false
	for _, ev := range strings.Split(strings.TrimSuffix(body, "data: [DONE]\n\n"), "\n\n") {
		if ev == "" {
			continue
		}
		var c completion
		if err := json.Unmarshal([]byte(strings.TrimPrefix(ev, "data: ")), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("bad chunk %q: %v", ev, err)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
			if ch.FinishReason != nil && *ch.FinishReason == "stop" {
				finished = true
			}
		}
	}
	if !finished {
		t.Errorf("no finish_reason stop in %q", body)
	}
	return text.String()
}

// TestHoldSizing: an affordable request costs one ledger call before it leaves, the hold of
// its whole budget; a refused one reads the balance, clamps the budget to it and holds again;
// a hold refused after that (another request of the wallet took the money first) is sized
// again, at most maxHoldAttempts times, and then the user gets the top-up message. Every
// attempt has its own hold key.
func TestHoldSizing(t *testing.T) {
	// The prompt estimate is 3 + 4 + 1 (role) + 3 ("Hello there") = 11 tokens, 14 with the
	// 20 % margin: 14 × 1 × 1.2 = 16.8 micro. 200 micro leaves room for
	// ⌊(200/1.2 − 14) / 2⌋ = 76 completion tokens of the 100 asked for.
	tests := []struct {
		name         string
		balance      int64
		refuse       int     // holds refused whatever the balance
		maxTokens    float64 // the budget sent upstream; 0: the top-up message instead
		balanceReads int
		holds        int
	}{
		{"affordable: the whole budget, no balance read", 1_000_000, 0, 100, 0, 1},
		{"clamped after the whole budget was refused", 200, 0, 76, 1, 2},
		{"sized again after losing the money to another request", 1_000_000, 2, 100, 2, 3},
		{"top-up message after losing it every time", 1_000_000, maxHoldAttempts + 1, 0, maxHoldAttempts, maxHoldAttempts + 1},
		{"top-up message when the clamp leaves too little", 20, 0, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), tt.balance)
			env.ledger.refuse = tt.refuse
			c := startServer(t, s)
			res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{usageChunk(11, 76), "data: [DONE]\n\n"}})
			if tt.maxTokens == 0 {
				if a, _ := header(res.immediate.GetHeaders(), ActionHeader); a != string(ActionTopUp) {
					t.Fatalf("answer %v, want the top-up message", res.immediate)
				}
			} else {
				if res.immediate != nil {
					t.Fatalf("refused: %s", res.immediate.GetBody())
				}
				if sent := sentBody(t, res); sent["max_tokens"] != tt.maxTokens {
					t.Errorf("max_tokens %v, want %v", sent["max_tokens"], tt.maxTokens)
				}
				if _, ok := env.ledger.onlyCapture(); !ok {
					t.Error("not charged")
				}
			}
			if posted, held, open := env.ledger.state(testWallet); posted < 0 || held != 0 || open != 0 {
				t.Errorf("posted %d held %d, %d holds open", posted, held, open)
			}
			if n := env.ledger.balanceReads(); n != tt.balanceReads {
				t.Errorf("%d balance reads, want %d", n, tt.balanceReads)
			}
			env.ledger.mu.Lock()
			keys := env.ledger.holdKeys
			env.ledger.mu.Unlock()
			if len(keys) != tt.holds {
				t.Fatalf("hold keys %q, want %d holds", keys, tt.holds)
			}
			// holds_total counts hold attempts: each refused one once, the clamp's verdict not at all.
			reserved := 0
			if tt.maxTokens != 0 {
				reserved = 1
			}
			if got := testutil.ToFloat64(s.metrics.holds.WithLabelValues("insufficient")); got != float64(tt.holds-reserved) {
				t.Errorf("holds_total{insufficient} = %v, want %d", got, tt.holds-reserved)
			}
			if got := testutil.ToFloat64(s.metrics.holds.WithLabelValues("reserved")); got != float64(reserved) {
				t.Errorf("holds_total{reserved} = %v, want %d", got, reserved)
			}
			for i, k := range keys {
				if want := strings.TrimSuffix(keys[0], ":0") + fmt.Sprintf(":%d", i); !strings.HasPrefix(k, "tg:hold:") || k != want {
					t.Errorf("hold %d has key %q, want %q: one key per attempt", i, k, want)
				}
			}
		})
	}
}

func TestUserFromPathPrefix(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{path: "/v1/alice/chat/completions?x=1", key: testKey, ctype: "application/json",
		body:   `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`,
		chunks: []string{`{"id":"g","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`}})
	if p, _ := header(res.reqBody.GetResponse().GetHeaderMutation(), ":path"); p != "/v1/chat/completions?x=1" {
		t.Errorf(":path %q", p)
	}
	if _, ok := env.ledger.onlyCapture(); !ok {
		t.Error("not charged")
	}
}

func TestUserFromBody(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{key: testKey, ctype: "application/json",
		body:   `{"model":"m1","user":"alice","messages":[{"role":"user","content":"hi"}]}`,
		chunks: []string{`{"id":"g","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`}})
	if _, ok := env.ledger.onlyCapture(); !ok {
		t.Error("not charged")
	}
}

func TestBYOKCredentials(t *testing.T) {
	pw := testPaywall()
	pw.Mode, pw.Upstream, pw.UpstreamKey = paywall.ModeBYOK, "demo", "sk-dev-own"
	env, s := newFakeEnv(t, pw, 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{usageChunk(10, 10), "data: [DONE]\n\n"}})
	m := res.reqBody.GetResponse().GetHeaderMutation()
	if a, _ := header(m, "authorization"); a != "Bearer sk-dev-own" {
		t.Errorf("authorization %q", a)
	}
	if u, _ := header(m, "x-tollgate-upstream"); u != "demo" {
		t.Errorf("routing %q", u)
	}
	if _, ok := sentBody(t, res)["usage"]; ok {
		t.Error("OpenRouter's usage flag sent to a BYOK upstream")
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.ProviderMicro != 0 {
		t.Errorf("BYOK capture owes the built-in provider: %+v", capt)
	}
}

// TestPassThrough: paths outside /v1/ are not Tollgate's (Envoy's API and page routes do not
// even run the filter): every message is answered CONTINUE, whatever key they carry.
func TestPassThrough(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	for _, ex := range []exchange{
		{path: "/api/v1/paywalls", key: testKey, body: `{"x":1}`, status: "200", ctype: "application/json", chunks: []string{`{"data":[]}`}},
		{path: "/connect?t=abc", key: "whatever", body: `{"input":"x"}`, ctype: "application/json", chunks: []string{`{}`}},
		{path: "/v2/chat/completions", body: "{}", chunks: []string{"data: x\n\n"}},
		{path: "/healthz", headers: map[string]string{":method": "GET"}, noBody: true},
	} {
		res := run(t, c, ex)
		if res.immediate != nil || res.reqHeaders.GetResponse() != nil || res.reqBody.GetResponse() != nil {
			t.Errorf("%s: touched: %v %v", ex.path, res.reqHeaders, res.reqBody)
		}
		for _, ch := range res.chunks {
			if ch.GetResponse() != nil {
				t.Errorf("%s: response chunk touched", ex.path)
			}
		}
	}
	if _, _, open := env.ledger.state(testWallet); open != 0 || len(env.ledger.holds) != 0 {
		t.Error("a pass-through request reserved money")
	}
}

func TestUpstreamErrorVoids(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	for _, st := range []string{"429", "500", "400"} {
		res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, status: st, ctype: "application/json",
			chunks: []string{`{"error":{"message":"nope"}}`}})
		if res.respHeaders.GetModeOverride() != nil {
			t.Errorf("%s: error switched to STREAMED", st)
		}
	}
	if posted, held, open := env.ledger.state(testWallet); posted != 1_000_000 || held != 0 || open != 0 {
		t.Errorf("charged for upstream errors: posted %d held %d open %d", posted, held, open)
	}
	if env.ledger.voids != 3 {
		t.Errorf("%d voids, want 3", env.ledger.voids)
	}
}

func TestClientGoneSettlesEstimate(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	chunks := []string{sseChunk("aaaaaaaa"), sseChunk("bbbb"), sseChunk("never sent"), usageChunk(1, 1)}
	run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: chunks, cancelAfter: 2})
	capt := waitCapture(t, env.ledger)
	// Estimate: prompt 11 tokens (no margin) + 2 content events (12 bytes → 3 tokens): 11 + 3×2 = 17 × 1.2 → 21.
	if !capt.Estimated || capt.Metadata["estimate_reason"] != "client_gone" || capt.Split.TotalMicro() != 21 ||
		capt.Metadata["provider_id"] != "gen-42" {
		t.Errorf("capture %+v", capt)
	}
}

func waitCapture(t *testing.T, l *fakeLedger) ledger.CaptureRequest {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, ok := l.onlyCapture(); ok {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no capture")
	return ledger.CaptureRequest{}
}

func TestFreeModelHoldsNothing(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 0)
	c := startServer(t, s)
	res := run(t, c, exchange{key: testKey, user: testUser, body: `{"model":"free","stream":true,"messages":[{"role":"user","content":"x"}]}`,
		chunks: []string{usageChunk(1, 1), "data: [DONE]\n\n"}})
	if res.immediate != nil {
		t.Fatalf("free model refused: %s", res.immediate.GetBody())
	}
	if len(env.ledger.holds) != 0 || len(env.ledger.captures) != 0 {
		t.Error("money moved for a free model")
	}
}

// TestUsageOnAContentChunkIsKept: some upstreams put usage on the last content chunk; that
// chunk carries text the client needs, so it is metered but never hidden.
func TestUsageOnAContentChunkIsKept(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	last := "data: {\"id\":\"gen-7\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"end\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":20}}\n\n"
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{sseChunk("a"), last, "data: [DONE]\n\n"}})
	if !strings.Contains(res.clientBody, `"content":"end"`) {
		t.Errorf("content chunk hidden: %q", res.clientBody)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 84 {
		t.Errorf("capture %+v", capt)
	}
}

// TestMaxTokensKeys: the budget goes out under the key the client used; the built-in
// provider also gets max_tokens, which it documents.
func TestMaxTokensKeys(t *testing.T) {
	for _, tt := range []struct {
		mode paywall.Mode
		in   string
		want []string
	}{
		{paywall.ModeBuiltin, `"max_completion_tokens":50,`, []string{"max_completion_tokens", "max_tokens"}},
		{paywall.ModeBYOK, `"max_completion_tokens":50,`, []string{"max_completion_tokens"}},
		{paywall.ModeBYOK, ``, []string{"max_tokens"}},
	} {
		pw := testPaywall()
		if tt.mode == paywall.ModeBYOK {
			pw.Mode, pw.Upstream, pw.UpstreamKey = paywall.ModeBYOK, "demo", "sk-dev"
		}
		_, s := newFakeEnv(t, pw, 1_000_000)
		c := startServer(t, s)
		res := run(t, c, exchange{key: testKey, user: testUser, body: `{"model":"m1",` + tt.in + `"messages":[{"role":"user","content":"x"}]}`,
			ctype: "application/json", chunks: []string{`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`}})
		sent := sentBody(t, res)
		for _, k := range []string{"max_tokens", "max_completion_tokens"} {
			_, got := sent[k]
			if want := slices.Contains(tt.want, k); got != want {
				t.Errorf("%s %q: %s present %v, want %v", tt.mode, tt.in, k, got, want)
			}
		}
	}
}

// TestCRLineEndingsMetered: an upstream that ends its SSE lines with a lone '\r' (the SSE
// specification allows it) or with a "\r\n" cut between two chunks is metered like any other:
// the usage chunk is found and hidden, the charge comes from it. The usage event is the last
// chunk and ends in a lone '\r', which only the end of the stream confirms.
func TestCRLineEndingsMetered(t *testing.T) {
	cr := func(s string) string { return strings.ReplaceAll(s, "\n", "\r") }
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	tests := []struct {
		name   string
		chunks []string
		client string
	}{
		{"lone cr, usage last", []string{cr(sseChunk("Hi")), cr(sseChunk(" there")), cr(usageChunk(30, 20))},
			cr(sseChunk("Hi")) + cr(sseChunk(" there"))},
		{"crlf cut between chunks", []string{crlf(sseChunk("Hi")) + "data: {\"id\":\"gen-42\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":20}}\r\n\r",
			"\ndata: [DONE]\r\n\r", "\n"},
			crlf(sseChunk("Hi")) + "data: [DONE]\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000)
			c := startServer(t, s)
			res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: tt.chunks})
			if res.clientBody != tt.client {
				t.Errorf("client saw\n%q\nwant\n%q", res.clientBody, tt.client)
			}
			if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 84 {
				t.Errorf("capture %+v, want 84 from the usage", capt)
			}
		})
	}
}

// TestOversizedEventThenUsage: an event over serve.max_event_bytes (an image model streams a
// picture as one delta) reaches the client unread, and the usage chunk after it is still found,
// hidden and charged: the scanner resumes at the end of the large event.
func TestOversizedEventThenUsage(t *testing.T) {
	image := "data: {\"id\":\"gen-42\",\"choices\":[{\"index\":0,\"delta\":{\"images\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64," +
		strings.Repeat("iVBORw0K", 200_000) + "\"}}]}}]}\n\n" // 1.6 MB, over the 1 MiB default
	stream := sseChunk("Here it is") + image + usageChunk(30, 20) + "data: [DONE]\n\n"
	var chunks []string
	for rest := stream; rest != ""; {
		n := min(len(rest), 16<<10)
		chunks, rest = append(chunks, rest[:n]), rest[n:]
	}
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	logs := &lockedLog{}
	s.log = slog.New(slog.NewJSONHandler(logs, nil))
	c := startServer(t, s)
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: chunks})
	if n := strings.Count(logs.String(), "over the scanner's limit"); n != 1 {
		t.Errorf("the oversized event was logged %d times, want once:\n%s", n, logs)
	}
	if want := sseChunk("Here it is") + image + "data: [DONE]\n\n"; res.clientBody != want {
		t.Errorf("client saw %d bytes, want %d: the image whole and the usage chunk hidden", len(res.clientBody), len(want))
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 84 {
		t.Errorf("capture %+v, want 84 from the usage", capt)
	}
}

// TestChoicesHeldForEach: with n choices each may use the whole completion budget, so the
// clamp divides what the wallet affords by n and the hold covers n budgets; the wallet can
// never be asked for more than it had.
func TestChoicesHeldForEach(t *testing.T) {
	// As in TestAffordabilityClamp, 200 micro affords 76 completion tokens: 19 per choice.
	env, s := newFakeEnv(t, testPaywall(), 200)
	c := startServer(t, s)
	body := `{"model":"m1","n":4,"stream":true,"messages":[{"role":"user","content":"Hello there"}]}`
	res := run(t, c, exchange{key: testKey, user: testUser, body: body, chunks: []string{usageChunk(11, 76), "data: [DONE]\n\n"}})
	sent := sentBody(t, res)
	if sent["max_tokens"] != float64(19) || sent["n"] != float64(4) {
		t.Errorf("max_tokens %v n %v, want 19 per choice for 4 choices", sent["max_tokens"], sent["n"])
	}
	env.ledger.mu.Lock()
	held := env.ledger.holds["hold-1"].AmountMicro
	env.ledger.mu.Unlock()
	// (14 prompt × 1 + 76 completion × 2) × 1.2 = 199.2 → 200.
	if held != 200 {
		t.Errorf("held %d, want the cost of 4 × 19 completion tokens (200)", held)
	}
	if posted, h, _ := env.ledger.state(testWallet); posted != 200-env.ledger.charged["hold-1"] || posted < 0 || h != 0 {
		t.Errorf("posted %d held %d", posted, h)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 196 {
		t.Errorf("capture %+v, want (11 + 76×2) × 1.2 = 196", capt)
	}
}

// TestUnpricedOptionsOnlyRefusedForBuiltin: fallback models and plugins would make the
// built-in provider bill the operator for more than Tollgate charges; a BYOK upstream is the
// developer's own, so its requests pass them on. Empty or null values are harmless.
func TestUnpricedOptionsOnlyRefusedForBuiltin(t *testing.T) {
	byok := testPaywall()
	byok.Mode, byok.Upstream, byok.UpstreamKey = paywall.ModeBYOK, "demo", "sk-dev"
	for _, tt := range []struct {
		pw      paywall.Paywall
		extra   string
		refused bool
	}{
		{testPaywall(), `"models":["m1","x/y"],`, true},
		{testPaywall(), `"plugins":[{"id":"web"}],`, true},
		{testPaywall(), `"models":null,"plugins":[],`, false},
		{byok, `"models":["m1","x/y"],"plugins":[{"id":"web"}],`, false},
	} {
		_, s := newFakeEnv(t, tt.pw, 1_000_000)
		c := startServer(t, s)
		res := run(t, c, exchange{key: testKey, user: testUser, ctype: "application/json",
			body:   `{"model":"m1",` + tt.extra + `"messages":[{"role":"user","content":"x"}]}`,
			chunks: []string{`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`}})
		if refused := res.immediate != nil && res.immediate.GetStatus().GetCode() == 400; refused != tt.refused {
			t.Errorf("%s %s: refused %v, want %v (%v)", tt.pw.Mode, tt.extra, refused, tt.refused, res.immediate)
		}
	}
}

// TestProviderReportedCostRecorded: the built-in provider's own figure for what a request cost
// it (OpenRouter's usage.cost) is kept beside the catalog's, in the capture and the metrics;
// the user is charged the catalog's price either way, and a malformed cost costs nothing.
func TestProviderReportedCostRecorded(t *testing.T) {
	for _, tt := range []struct {
		name, cost string
		reported   string // "": not recorded
	}{
		{"reported", `0.000091`, "91"},
		{"malformed", `"a lot"`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000)
			c := startServer(t, s)
			usage := fmt.Sprintf("data: {\"id\":\"gen-42\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":20,\"cost\":%s}}\n\n", tt.cost)
			run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{sseChunk("Hi"), usage, "data: [DONE]\n\n"}})
			capt, ok := env.ledger.onlyCapture()
			if !ok || capt.Estimated || capt.Split.TotalMicro() != 84 || capt.Metadata["provider_reported_cost_micro"] != tt.reported {
				t.Fatalf("capture %+v", capt)
			}
			reported, priced := value(t, s.metrics.providerCost.WithLabelValues("reported")), value(t, s.metrics.providerCost.WithLabelValues("priced"))
			if tt.reported != "" && (reported != 91 || priced != 70) || tt.reported == "" && (reported != 0 || priced != 0) {
				t.Errorf("provider cost metrics: reported %v, priced %v", reported, priced)
			}
		})
	}
}
