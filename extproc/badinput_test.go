package extproc

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// moneyView is how the bad-input table sees the ledger, fake or real.
type moneyView struct {
	// wallet returns the wallet's posted and held micro-USDC.
	wallet func(t *testing.T) (posted, held int64)
	// openHolds counts the holds neither captured, voided nor expired.
	openHolds func(t *testing.T) int
	// lastCapture returns the newest capture's charge and whether it was estimated; ok is
	// false when there is none newer than the previous call.
	lastCapture func(t *testing.T) (chargedMicro int64, estimated bool, ok bool)
}

// badInputEnv is a server, a key, an authorized user, and a key that was revoked.
type badInputEnv struct {
	client     extprocv3.ExternalProcessorClient
	key        string
	revokedKey string
	user       string
	money      moneyView
}

const okMessages = `"messages":[{"role":"user","content":"Hello there"}]`

// badInputRows are malformed and hostile requests and upstream replies. A row with status is
// refused with that OpenAI-shaped error and moves no money; a row with settle is forwarded
// and settles as described, never leaving a hold open or charging more than it held.
func badInputRows(env badInputEnv) []struct {
	name   string
	ex     exchange
	status int
	code   string
	settle string // "estimated" or "void"
} {
	k, u, rp, ep := env.key, env.user, responsesPath, embeddingsPath
	body := func(extra string) string { return `{"model":"m1",` + extra + okMessages + `}` }
	big := `{"model":"m1","messages":[{"role":"user","content":"` + strings.Repeat("a", 5<<20) + `"}]}`
	usage := func(p, c int) string { return usageChunk(p, c) }
	return []struct {
		name   string
		ex     exchange
		status int
		code   string
		settle string
	}{
		{name: "invalid JSON", ex: exchange{key: k, user: u, body: `{"model":"m1",`}, status: 400, code: "invalid_json"},
		{name: "JSON array", ex: exchange{key: k, user: u, body: `[1,2]`}, status: 400, code: "invalid_json"},
		{name: "trailing garbage", ex: exchange{key: k, user: u, body: body("") + `x`}, status: 400, code: "invalid_json"},
		{name: "duplicate key", ex: exchange{key: k, user: u, body: `{"model":"m1","stream":false,"stream":true,` + okMessages + `}`}, status: 400, code: "invalid_json"},
		{name: "empty body", ex: exchange{key: k, user: u, body: ``}, status: 400, code: "invalid_json"},
		{name: "no body at all", ex: exchange{key: k, user: u, noBody: true}, status: 400, code: "missing_body"},
		{name: "invalid UTF-8", ex: exchange{key: k, user: u, body: "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"}, status: 400, code: "invalid_utf8"},
		{name: "5 MB body", ex: exchange{key: k, user: u, body: big}, status: 400, code: "request_too_large"},
		{name: "missing user", ex: exchange{key: k, body: body("")}, status: 400, code: "missing_user"},
		{name: "oversized user", ex: exchange{key: k, user: strings.Repeat("u", 129), body: body("")}, status: 400, code: "invalid_user"},
		{name: "user with a space", ex: exchange{key: k, user: "al ice", body: body("")}, status: 400, code: "invalid_user"},
		{name: "user with a slash in the body", ex: exchange{key: k, body: body(`"user":"a/b",`)}, status: 400, code: "invalid_user"},
		{name: "non-ASCII user", ex: exchange{key: k, body: body(`"user":"zoë",`)}, status: 400, code: "invalid_user"},
		{name: "user not a string", ex: exchange{key: k, body: body(`"user":42,`)}, status: 400, code: "invalid_user"},
		{name: "percent-encoded path user", ex: exchange{path: "/v1/a%2Fb/chat/completions", key: k, body: body("")}, status: 400, code: "invalid_user"},
		{name: "unbilled endpoint with a valid key", ex: exchange{path: "/v1/images/generations", key: k, user: u, body: `{"model":"m1","prompt":"x"}`}, status: 404, code: "unsupported_endpoint"},
		{name: "model listing path escaping to another endpoint", ex: exchange{path: "/v1/models/..%2Fembeddings", key: k,
			headers: map[string]string{":method": "GET"}, noBody: true}, status: 400, code: "invalid_model"},
		{name: "no API key", ex: exchange{user: u, body: body("")}, status: 401, code: "missing_api_key"},
		{name: "not a tollgate key", ex: exchange{key: "sk-openai", user: u, body: body("")}, status: 401, code: "missing_api_key"},
		{name: "unknown key", ex: exchange{key: "tg_unknown", user: u, body: body("")}, status: 401, code: "invalid_api_key"},
		{name: "revoked key", ex: exchange{key: env.revokedKey, user: u, body: body("")}, status: 401, code: "invalid_api_key"},
		{name: "unpriced model", ex: exchange{key: k, user: u, body: `{"model":"nope/unpriced",` + okMessages + `}`}, status: 400, code: "model_not_priced"},
		{name: "missing model", ex: exchange{key: k, user: u, body: `{` + okMessages + `}`}, status: 400, code: "missing_model"},
		{name: "model not a string", ex: exchange{key: k, user: u, body: `{"model":7,` + okMessages + `}`}, status: 400, code: "invalid_model"},
		{name: "negative max_tokens", ex: exchange{key: k, user: u, body: body(`"max_tokens":-5,`)}, status: 400, code: "invalid_max_tokens"},
		{name: "zero max_tokens", ex: exchange{key: k, user: u, body: body(`"max_tokens":0,`)}, status: 400, code: "invalid_max_tokens"},
		{name: "absurd max_tokens", ex: exchange{key: k, user: u, body: body(`"max_tokens":1000000000000,`)}, status: 400, code: "invalid_max_tokens"},
		{name: "fractional max_completion_tokens", ex: exchange{key: k, user: u, body: body(`"max_completion_tokens":1.5,`)}, status: 400, code: "invalid_max_tokens"},
		{name: "string max_tokens", ex: exchange{key: k, user: u, body: body(`"max_tokens":"10",`)}, status: 400, code: "invalid_max_tokens"},
		{name: "n out of range", ex: exchange{key: k, user: u, body: body(`"n":129,`)}, status: 400, code: "invalid_n"},
		{name: "n not a number", ex: exchange{key: k, user: u, body: body(`"n":"2",`)}, status: 400, code: "invalid_n"},
		{name: "fallback models on the built-in provider", ex: exchange{key: k, user: u, body: body(`"models":["m1","openai/gpt-4o"],`)}, status: 400, code: "unsupported_parameter"},
		{name: "web search plugin on the built-in provider", ex: exchange{key: k, user: u, body: body(`"plugins":[{"id":"web"}],`)}, status: 400, code: "unsupported_parameter"},
		{name: "a server tool on the built-in provider", ex: exchange{key: k, user: u, body: body(`"tools":[{"type":"openrouter:web_search"}],`)}, status: 400, code: "unsupported_parameter"},
		{name: "tools not an array", ex: exchange{key: k, user: u, body: body(`"tools":"web",`)}, status: 400, code: "invalid_type"},
		{name: "web_search_options on the built-in provider", ex: exchange{key: k, user: u, body: body(`"web_search_options":{},`)}, status: 400, code: "unsupported_parameter"},
		{name: "no messages", ex: exchange{key: k, user: u, body: `{"model":"m1"}`}, status: 400, code: "missing_messages"},
		{name: "empty messages", ex: exchange{key: k, user: u, body: `{"model":"m1","messages":[]}`}, status: 400, code: "missing_messages"},
		{name: "messages not an array", ex: exchange{key: k, user: u, body: `{"model":"m1","messages":"hi"}`}, status: 400, code: "invalid_type"},
		{name: "message without role", ex: exchange{key: k, user: u, body: `{"model":"m1","messages":[{"content":"hi"}]}`}, status: 400, code: "invalid_type"},
		{name: "stream not a boolean", ex: exchange{key: k, user: u, body: body(`"stream":"yes",`)}, status: 400, code: "invalid_type"},
		{name: "stream_options not an object", ex: exchange{key: k, user: u, body: body(`"stream":true,"stream_options":true,`)}, status: 400, code: "invalid_type"},

		// The Responses API's own refusals.
		{name: "response: no input", ex: exchange{path: rp, key: k, user: u, body: `{"model":"m1"}`}, status: 400, code: "missing_input"},
		{name: "response: empty input array", ex: exchange{path: rp, key: k, user: u, body: `{"model":"m1","input":[]}`}, status: 400, code: "missing_input"},
		{name: "response: input a number", ex: exchange{path: rp, key: k, user: u, body: `{"model":"m1","input":7}`}, status: 400, code: "invalid_type"},
		{name: "response: input item not an object", ex: exchange{path: rp, key: k, user: u, body: `{"model":"m1","input":["hi"]}`}, status: 400, code: "invalid_type"},
		{name: "response: instructions not a string", ex: exchange{path: rp, key: k, user: u, body: respBody(`"instructions":["x"],`)}, status: 400, code: "invalid_type"},
		{name: "response: zero max_output_tokens", ex: exchange{path: rp, key: k, user: u, body: respBody(`"max_output_tokens":0,`)}, status: 400, code: "invalid_max_tokens"},
		{name: "response: background", ex: exchange{path: rp, key: k, user: u, body: respBody(`"background":true,`)}, status: 400, code: "unsupported_parameter"},
		{name: "response: background not a boolean", ex: exchange{path: rp, key: k, user: u, body: respBody(`"background":"yes",`)}, status: 400, code: "invalid_type"},
		{name: "response: previous_response_id on the built-in provider", ex: exchange{path: rp, key: k, user: u, body: respBody(`"previous_response_id":"resp_1",`)}, status: 400, code: "unsupported_parameter"},
		{name: "response: conversation on the built-in provider", ex: exchange{path: rp, key: k, user: u, body: respBody(`"conversation":"conv_1",`)}, status: 400, code: "unsupported_parameter"},
		{name: "response: hosted web search on the built-in provider", ex: exchange{path: rp, key: k, user: u, body: respBody(`"tools":[{"type":"function","name":"f"},{"type":"web_search"}],`)}, status: 400, code: "unsupported_parameter"},
		{name: "response: tools not an array", ex: exchange{path: rp, key: k, user: u, body: respBody(`"tools":{"type":"function"},`)}, status: 400, code: "invalid_type"},
		{name: "response: missing user", ex: exchange{path: rp, key: k, body: respBody("")}, status: 400, code: "missing_user"},
		{name: "response: stored response read", ex: exchange{path: rp + "/resp_1", key: k, user: u, headers: map[string]string{":method": "GET"}, noBody: true}, status: 404, code: "unsupported_endpoint"},

		// Embeddings' own refusals.
		{name: "embeddings: no input", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1"}`}, status: 400, code: "missing_input"},
		{name: "embeddings: empty input", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","input":[]}`}, status: 400, code: "missing_input"},
		{name: "embeddings: input an object", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","input":{"text":"x"}}`}, status: 400, code: "invalid_type"},
		{name: "embeddings: an empty token list", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","input":[[]]}`}, status: 400, code: "invalid_type"},
		{name: "embeddings: fallback models on the built-in provider", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","models":["m2"],"input":"x"}`}, status: 400, code: "unsupported_parameter"},
		{name: "embeddings: unpriced model", ex: exchange{path: ep, key: k, user: u, body: `{"model":"nope/unpriced","input":"x"}`}, status: 400, code: "model_not_priced"},

		// Upstream replies that are malformed, truncated or without usage.
		{name: "SSE garbage", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{"data: {not json\n\n", "\x00\x01garbage\n\n", "data: [DONE]\n\n"}}, settle: "estimated"},
		{name: "SSE truncated mid-event", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("partial answer"), `data: {"id":"gen-42","choices":[{"delta":{"content":"cut`}}, settle: "estimated"},
		{name: "SSE without usage", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("a"), sseChunk("b"), "data: [DONE]\n\n"}}, settle: "estimated"},
		{name: "SSE negative usage", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("a"), usage(-10, 5), "data: [DONE]\n\n"}}, settle: "estimated"},
		{name: "SSE mid-stream error", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("a"), "data: {\"error\":{\"message\":\"provider overloaded\",\"code\":502}}\n\n", "data: [DONE]\n\n"}}, settle: "estimated"},
		{name: "SSE event over the size limit, then the usage", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{"data: " + strings.Repeat("x", 2<<20), "\n\n", usage(3, 3), "data: [DONE]\n\n"}}, settle: "charged"},
		{name: "SSE event over the size limit, unfinished", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("a"), "data: " + strings.Repeat("x", 2<<20), "data: [DONE]\n\n"}}, settle: "estimated"},
		{name: "JSON body not JSON", ex: exchange{key: k, user: u, body: body(""), ctype: "application/json",
			chunks: []string{`{"id":"x","choices":[`}}, settle: "estimated"},
		{name: "empty 200 body", ex: exchange{key: k, user: u, body: body(""), ctype: "application/json",
			chunks: []string{""}}, settle: "estimated"},
		{name: "response: SSE without its completed event", ex: exchange{path: rp, key: k, user: u, body: respBody(`"stream":true,`),
			chunks: []string{responseEvent("response.created", `"response":{"id":"resp_1","usage":null}`), textDelta("partial")}}, settle: "estimated"},
		{name: "response: SSE error event", ex: exchange{path: rp, key: k, user: u, body: respBody(`"stream":true,`),
			chunks: []string{textDelta("a"), responseEvent("error", `"code":"server_error","message":"overloaded"`)}}, settle: "estimated"},
		{name: "response: usage without output_tokens", ex: exchange{path: rp, key: k, user: u, body: respBody(`"stream":true,`),
			chunks: []string{textDelta("a"), responseEvent("response.completed", `"response":{"id":"resp_1","usage":{"input_tokens":3}}`)}}, settle: "estimated"},
		{name: "response: JSON body not JSON", ex: exchange{path: rp, key: k, user: u, body: respBody(""), ctype: "application/json",
			chunks: []string{`{"id":"resp_1","output":[`}}, settle: "estimated"},
		{name: "embeddings: reply without usage", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","input":"x"}`, ctype: "application/json",
			chunks: []string{`{"object":"list","data":[{"embedding":[0.1]}]}`}}, settle: "estimated"},
		{name: "embeddings: reply cut in its usage", ex: exchange{path: ep, key: k, user: u, body: `{"model":"m1","input":"x"}`, ctype: "application/json",
			chunks: []string{`{"object":"list","data":[],"usage":{"prompt_tok`}}, settle: "estimated"},
		{name: "upstream 503", ex: exchange{key: k, user: u, body: body(`"stream":true,`), status: "503", ctype: "application/json",
			chunks: []string{`{"error":{"message":"down"}}`}}, settle: "void"},
		// Last: it empties the wallet (the overrun beyond the balance is a shortfall).
		{name: "SSE absurd usage capped at the balance", ex: exchange{key: k, user: u, body: body(`"stream":true,`),
			chunks: []string{sseChunk("a"), usage(1, 1_000_000_000), "data: [DONE]\n\n"}}, settle: "charged"},
	}
}

func testBadInput(t *testing.T, env badInputEnv) {
	for _, row := range badInputRows(env) {
		t.Run(row.name, func(t *testing.T) {
			posted0, held0 := env.money.wallet(t)
			env.money.lastCapture(t) // forget earlier captures
			res := run(t, env.client, row.ex)
			posted, held := env.money.wallet(t)
			if held != held0 || env.money.openHolds(t) != 0 {
				t.Fatalf("a hold was left open: held %d → %d, %d open", held0, held, env.money.openHolds(t))
			}
			charged, estimated, captured := env.money.lastCapture(t)
			if row.status != 0 {
				ir := res.immediate
				if ir == nil {
					t.Fatalf("forwarded; want %d %s", row.status, row.code)
				}
				if int(ir.GetStatus().GetCode()) != row.status {
					t.Errorf("status %d, want %d: %s", ir.GetStatus().GetCode(), row.status, ir.GetBody())
				}
				var e struct {
					Error struct{ Message, Type, Code string }
				}
				if err := json.Unmarshal(ir.GetBody(), &e); err != nil || e.Error.Code != row.code || e.Error.Message == "" || e.Error.Type == "" {
					t.Errorf("not the OpenAI error %q: %s", row.code, ir.GetBody())
				}
				if ct, _ := header(ir.GetHeaders(), "content-type"); ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				if posted != posted0 || captured {
					t.Errorf("money moved for a refused request: posted %d → %d", posted0, posted)
				}
				return
			}
			if res.immediate != nil {
				t.Fatalf("refused: %d %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
			}
			switch row.settle {
			case "void":
				if posted != posted0 || captured {
					t.Errorf("charged %d for an upstream error", posted0-posted)
				}
			case "estimated", "charged":
				if !captured || estimated != (row.settle == "estimated") {
					t.Fatalf("captured %v estimated %v, want %s", captured, estimated, row.settle)
				}
				if posted0-posted != charged || posted < 0 {
					t.Errorf("wallet moved %d, capture says %d", posted0-posted, charged)
				}
			}
			// Every byte of the upstream's reply reached the client (no usage chunk was asked
			// for, so only a complete usage chunk may be missing).
			if row.settle != "void" && !strings.Contains(strings.Join(row.ex.chunks, ""), "usage\":{") {
				if got, want := res.clientBody, strings.Join(row.ex.chunks, ""); got != want {
					t.Errorf("client saw %d bytes, upstream sent %d", len(got), len(want))
				}
			}
		})
	}
}

// TestBadInput runs the table with fakes at the seams; TestBadInputReal (integration_test.go)
// runs it against the real ledger, paywall store, PostgreSQL and Redis.
func TestBadInput(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	env.paywalls.keys["tg_revoked"] = testPaywall()
	c := startServer(t, s)
	delete(env.paywalls.keys, "tg_revoked") // revoked after the server saw it once
	seen := 0
	testBadInput(t, badInputEnv{
		client: c, key: testKey, revokedKey: "tg_revoked", user: testUser,
		money: moneyView{
			wallet: func(t *testing.T) (int64, int64) {
				p, h, _ := env.ledger.state(testWallet)
				return p, h
			},
			openHolds: func(t *testing.T) int {
				_, _, open := env.ledger.state(testWallet)
				return open
			},
			lastCapture: func(t *testing.T) (int64, bool, bool) {
				env.ledger.mu.Lock()
				defer env.ledger.mu.Unlock()
				if len(env.ledger.captures) == seen {
					return 0, false, false
				}
				seen = len(env.ledger.captures)
				// The newest capture is the hold with the highest number.
				var last string
				for id := range env.ledger.captures {
					if len(id) > len(last) || (len(id) == len(last) && id > last) {
						last = id
					}
				}
				c := env.ledger.captures[last]
				return env.ledger.charged[last], c.Estimated, true
			},
		},
	})
}

// TestBadInputStatusCodes keeps the rows honest: every refusal is 400, 401 or 404.
func TestBadInputStatusCodes(t *testing.T) {
	for _, row := range badInputRows(badInputEnv{}) {
		if row.status != 0 && row.status != http.StatusBadRequest && row.status != http.StatusUnauthorized && row.status != http.StatusNotFound {
			t.Errorf("%s: status %d", row.name, row.status)
		}
		if (row.status == 0) == (row.settle == "") {
			t.Errorf("%s: a row either refuses or settles", row.name)
		}
	}
}
