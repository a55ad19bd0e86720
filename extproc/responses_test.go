package extproc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tollgate-dev/tollgate/extproc/generation/generationtest"
	"github.com/tollgate-dev/tollgate/paywall"
)

// respBody is a Responses API request with extra members before its input.
func respBody(extra string) string { return `{"model":"m1",` + extra + `"input":"Hello there"}` }

// responseEvent is one Responses API stream event of type typ with the members in rest.
func responseEvent(typ, rest string) string {
	return fmt.Sprintf("event: %s\ndata: {\"type\":%q,\"sequence_number\":1,%s}\n\n", typ, typ, rest)
}

func textDelta(s string) string {
	return responseEvent("response.output_text.delta",
		fmt.Sprintf(`"item_id":"msg_1","output_index":0,"content_index":0,"delta":%q,"logprobs":[]`, s))
}

// responseObject is a finished response with usage, as a body or inside an event.
func responseObject(status string, in, out, reasoning int) string {
	return fmt.Sprintf(`{"id":"resp_42","object":"response","status":%q,"error":null,"model":"m1",`+
		`"output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Hi there","annotations":[]}]}],`+
		`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}}`,
		status, in, out, reasoning, in+out)
}

func completedEvent(in, out int) string {
	return responseEvent("response.completed", `"response":`+responseObject("completed", in, out, 0))
}

func TestResponseStreamChargedFromUsage(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	chunks := []string{
		responseEvent("response.created", `"response":{"id":"resp_42","object":"response","status":"in_progress","error":null,"usage":null}`),
		textDelta("Hi"), textDelta(" there"), completedEvent(30, 20),
	}
	res := run(t, c, exchange{path: "/v1/alice/responses", key: testKey,
		body: `{"model":"m1","stream":true,"input":[{"role":"user","content":[{"type":"input_text","text":"Hello there"}]}]}`, chunks: chunks})
	if res.immediate != nil {
		t.Fatalf("immediate response %d: %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
	}
	// Rewritten for the upstream: the budget as max_output_tokens and the user, nothing of
	// chat's (no max_tokens, stream_options or usage member), the path without the user.
	sent := sentBody(t, res)
	if sent["max_output_tokens"] != float64(100) || sent["user"] != testUser || sent["input"] == nil {
		t.Errorf("rewritten body %v", sent)
	}
	for _, k := range []string{"max_tokens", "stream_options", "usage"} {
		if _, ok := sent[k]; ok {
			t.Errorf("rewritten body has %q: %v", k, sent)
		}
	}
	if p, _ := header(res.reqBody.GetResponse().GetHeaderMutation(), ":path"); p != responsesPath {
		t.Errorf(":path %q", p)
	}
	if res.respHeaders.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" {
		t.Errorf("mode override %v", res.respHeaders.GetModeOverride())
	}
	// The client sees every event as the upstream sent it: a response's usage is its own.
	if want := strings.Join(chunks, ""); res.clientBody != want {
		t.Errorf("client saw\n%q\nwant\n%q", res.clientBody, want)
	}
	for _, ch := range res.chunks {
		if ch.GetResponse().GetBodyMutation() != nil {
			t.Errorf("chunk mutated: %v", ch)
		}
	}
	// 30 in × 1 + 20 out × 2 = 70 micro, +20 % markup = 84.
	capt, ok := env.ledger.onlyCapture()
	if !ok || capt.Split.TotalMicro() != 84 || capt.Estimated || capt.Split.ProviderMicro != 70 ||
		capt.Metadata["provider_id"] != "resp_42" || capt.Metadata["completion_tokens"] != "20" {
		t.Errorf("capture %+v", capt)
	}
	if posted, held, open := env.ledger.state(testWallet); posted != 1_000_000-84 || held != 0 || open != 0 {
		t.Errorf("wallet posted %d held %d, open holds %d", posted, held, open)
	}
	if value(t, s.metrics.forwarded.WithLabelValues("responses")) != 1 || value(t, s.metrics.forwarded.WithLabelValues("chat")) != 0 {
		t.Error("the forwarded metric does not count the response as one")
	}
}

func TestResponseJSONChargedFromUsage(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	body := responseObject("incomplete", 10, 5, 2)
	res := run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, ctype: "application/json",
		body: respBody(`"max_output_tokens":5,"instructions":"Be brief.",`), chunks: []string{body[:40], body[40:]}})
	if res.clientBody != body {
		t.Errorf("JSON body changed: %q", res.clientBody)
	}
	if sentBody(t, res)["max_output_tokens"] != float64(5) {
		t.Errorf("max_output_tokens not kept: %v", sentBody(t, res))
	}
	// (10×1 + 5×2) × 1.2 = 24; an incomplete response (cut by max_output_tokens) is charged too.
	capt, ok := env.ledger.onlyCapture()
	if !ok || capt.Split.TotalMicro() != 24 || capt.Estimated || capt.Metadata["provider_id"] != "resp_42" ||
		capt.Metadata["reasoning_tokens"] != "2" {
		t.Errorf("capture %+v", capt)
	}
}

// TestResponseCutStreamEstimated: the client leaves before response.completed; the charge is
// the prompt estimate plus the output streamed so far, counted from the deltas' bytes.
func TestResponseCutStreamEstimated(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, body: respBody(`"stream":true,`),
		chunks: []string{textDelta(strings.Repeat("x", 40)), textDelta(strings.Repeat("y", 20)), completedEvent(1, 1)}, cancelAfter: 2})
	capt := waitCapture(t, env.ledger)
	// 60 bytes of deltas: 15 tokens. The prompt: 3 per request + 4 per message + "Hello there".
	if !capt.Estimated || capt.Metadata["estimate_reason"] != "client_gone" || capt.Metadata["completion_tokens"] != "15" ||
		capt.Metadata["prompt_tokens"] != fmt.Sprint(tokensPerRequest+tokensPerMessage+textTokens("Hello there")) {
		t.Errorf("capture %+v", capt)
	}
}

// TestResponsePaywallMessages: without an authorization, or without the money, a response
// request is answered with the link as a response (or its stream of events) that the OpenAI SDK
// reads like any other, and nothing is held.
func TestResponsePaywallMessages(t *testing.T) {
	for _, tt := range []struct {
		name    string
		user    string
		balance int64
		stream  bool
		link    string
	}{
		{"authorize json", "bob", 1_000_000, false, "https://pay.example/authorize?pw=pw1&u=bob"},
		{"authorize stream", "bob", 1_000_000, true, "https://pay.example/authorize?pw=pw1&u=bob"},
		{"top up json", testUser, 30, false, "https://pay.example/topup?pw=pw1&u=alice"},
		{"top up stream", testUser, 30, true, "https://pay.example/topup?pw=pw1&u=alice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), tt.balance)
			c := startServer(t, s)
			res := run(t, c, exchange{path: responsesPath, key: testKey, user: tt.user, body: respBody(fmt.Sprintf(`"stream":%v,`, tt.stream))})
			ir := res.immediate
			if ir == nil || ir.GetStatus().GetCode() != http.StatusOK {
				t.Fatalf("want a 200 paywall message, got %v", ir)
			}
			ct, _ := header(ir.GetHeaders(), "content-type")
			var text string
			if !tt.stream {
				if ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				var r responses.Response
				if err := json.Unmarshal(ir.GetBody(), &r); err != nil {
					t.Fatal(err)
				}
				if r.Status != "completed" || r.Model != "m1" || r.Usage.TotalTokens != 0 || !strings.HasPrefix(r.ID, "resp_") {
					t.Errorf("response %s", ir.GetBody())
				}
				text = r.OutputText()
			} else {
				text = readResponseStream(t, ct, ir.GetBody())
			}
			if !strings.Contains(text, tt.link) {
				t.Errorf("message %q lacks the link %q", text, tt.link)
			}
			if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
				t.Errorf("money held after a paywall message: %d, %d holds", held, open)
			}
		})
	}
}

// readResponseStream decodes a Responses API stream with the OpenAI SDK's own decoder and
// checks the events a client builds the message from; it returns the message's text.
func readResponseStream(t *testing.T, contentType string, body []byte) string {
	t.Helper()
	res := &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(strings.NewReader(string(body)))}
	stream := ssestream.NewStream[responses.ResponseStreamEventUnion](ssestream.NewDecoder(res), nil)
	var types []string
	var deltas strings.Builder
	var final responses.Response
	for i := 0; stream.Next(); i++ {
		ev := stream.Current()
		if ev.SequenceNumber != int64(i) {
			t.Errorf("event %d has sequence number %d", i, ev.SequenceNumber)
		}
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			deltas.WriteString(ev.Delta)
		case "response.completed":
			final = ev.AsResponseCompleted().Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("the SDK could not read the stream: %v\n%s", err, body)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added " +
		"response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events %s", got)
	}
	if final.Status != "completed" || final.OutputText() != deltas.String() {
		t.Errorf("completed response %q, deltas %q", final.OutputText(), deltas.String())
	}
	return deltas.String()
}

// TestResponseBYOKForwardsWhatTheDeveloperPays: on a paywall with its own key, stored context
// and hosted tools go to the developer's upstream (the developer pays for them there); the
// user is charged the usage reported.
func TestResponseBYOKForwardsWhatTheDeveloperPays(t *testing.T) {
	pw := testPaywall()
	pw.Mode, pw.Upstream, pw.UpstreamKey = paywall.ModeBYOK, "demo", "sk-dev-own"
	env, s := newFakeEnv(t, pw, 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, ctype: "application/json",
		body:   respBody(`"previous_response_id":"resp_0","tools":[{"type":"web_search"}],`),
		chunks: []string{responseObject("completed", 10, 5, 0)}})
	if res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	if sent := sentBody(t, res); sent["previous_response_id"] != "resp_0" || sent["tools"] == nil {
		t.Errorf("rewritten body %v", sent)
	}
	if a, _ := header(res.reqBody.GetResponse().GetHeaderMutation(), "authorization"); a != "Bearer sk-dev-own" {
		t.Errorf("authorization %q", a)
	}
	if capt, ok := env.ledger.onlyCapture(); !ok || capt.Split.TotalMicro() != 24 || capt.Split.ProviderMicro != 0 {
		t.Errorf("capture %+v", capt)
	}
}

func TestParseResponsesRequest(t *testing.T) {
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	r, bad := parseResponsesRequest([]byte(`{"model":"m1","user":"u","stream":true,"max_output_tokens":50,`+
		`"instructions":"Be brief.","tools":[{"type":"function","name":"f"},{"type":"custom","name":"g"}],`+
		`"input":[{"role":"user","content":"Hello there"},{"type":"function_call_output","call_id":"c1","output":"42"},`+
		`{"role":"user","content":[{"type":"input_image","image_url":"data:x"}]}]}`), lim)
	if bad != nil {
		t.Fatal(bad.Message)
	}
	if r.Model != "m1" || r.User != "u" || !r.Stream || r.MaxTokens != 50 || r.Choices != 1 ||
		len(r.Unpriced) != 0 || len(r.Stored) != 0 {
		t.Errorf("%+v", r)
	}
	// The input, the instructions and the tool definitions are counted; an image as a media part.
	if r.PromptTokens <= tokensPerMediaPart+textTokens("Hello there")+textTokens("Be brief.") {
		t.Errorf("prompt estimate %d", r.PromptTokens)
	}
	r, bad = parseResponsesRequest([]byte(`{"model":"m1","input":"x","prompt":{"id":"pmpt_1"},"plugins":[{"id":"web"}],"tools":[{"type":"local_shell"},{"type":"mcp"}]}`), lim)
	if bad != nil || strings.Join(r.Stored, ",") != "prompt" || strings.Join(r.Unpriced, ",") != "plugins,tools[1]" {
		t.Errorf("%+v %v", r, bad)
	}
	// The input may be all stored upstream.
	r, bad = parseResponsesRequest([]byte(`{"model":"m1","previous_response_id":"resp_1","instructions":"Be brief."}`), lim)
	if bad != nil || strings.Join(r.Stored, ",") != "previous_response_id" || r.PromptTokens != tokensPerRequest+textTokens("Be brief.") {
		t.Errorf("%+v %v", r, bad)
	}
}

// FuzzParseResponsesRequest: no panic; a refusal is a clear 400; an accepted request has a
// model, a positive estimate and a budget within the limit, and its rewrite is JSON that
// carries exactly the budget (as max_output_tokens) and user and parses back the same.
func FuzzParseResponsesRequest(f *testing.F) {
	for _, s := range []string{
		respBody(""),
		respBody(`"stream":true,"max_output_tokens":5,"instructions":"日本語",`),
		`{"model":"m1","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_file","file_id":"f"}]},{"type":"reasoning","summary":[]}]}`,
		`{"model":"m1","input":"x","tools":[{"type":"web_search"}],"previous_response_id":"r","background":false}`,
		`{"model":"m1","input":[]}`, `{"model":"m1","input":"x","background":true}`,
		`[]`, `{}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	lim := requestLimits{MaxBodyBytes: 1 << 20, MaxTokens: 100_000}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, bad := parseResponsesRequest(body, lim)
		if bad != nil {
			if bad.Status != 400 || bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a clear 400: %+v", bad)
			}
			return
		}
		if r.Model == "" || r.PromptTokens <= 0 || r.MaxTokens < 0 || r.MaxTokens > lim.MaxTokens || r.Choices != 1 {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		out, err := r.rewriteBody(rewrite{User: "u-1", MaxTokens: 42, MaxTokenKey: []string{"max_output_tokens"}})
		if err != nil {
			t.Fatalf("rewrite failed: %v", err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("rewrite is not JSON: %v\n%s", err, out)
		}
		if string(got["user"]) != `"u-1"` || string(got["max_output_tokens"]) != "42" {
			t.Fatalf("rewrite %s", out)
		}
		again, bad := parseResponsesRequest(out, lim)
		if bad != nil || again.Model != r.Model || again.Stream != r.Stream || again.PromptTokens != r.PromptTokens {
			t.Fatalf("rewrite does not parse back: %+v %+v", again, bad)
		}
	})
}

// TestResponseUsageOnlyFromFinalEvents: a usage object on an earlier event (a provider filling
// one in on response.created) is not the response's: a stream cut after it is estimated, not
// charged that usage.
func TestResponseUsageOnlyFromFinalEvents(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, body: respBody(`"stream":true,`), cancelAfter: 2,
		chunks: []string{
			responseEvent("response.created", `"response":{"id":"resp_42","usage":{"input_tokens":0,"output_tokens":0,"total_tokens":0}}`),
			textDelta(strings.Repeat("z", 400)), completedEvent(1, 1)}})
	if capt := waitCapture(t, env.ledger); !capt.Estimated || capt.Metadata["completion_tokens"] != "100" {
		t.Errorf("capture %+v", capt)
	}
}

// TestResponseEndingsCharged: a stream that ends in response.incomplete or response.failed is
// charged the usage that event carries; an error event without one leaves the estimate, marked
// as the upstream's error.
func TestResponseEndingsCharged(t *testing.T) {
	for _, tt := range []struct {
		name, last  string
		total       int64
		estimated   bool
		reason, err string
	}{
		{"incomplete", responseEvent("response.incomplete", `"response":`+responseObject("incomplete", 10, 5, 0)), 24, false, "", ""},
		{"failed", responseEvent("response.failed", `"response":{"id":"resp_42","status":"failed","error":{"code":"server_error","message":"model crashed"},`+
			`"usage":{"input_tokens":10,"output_tokens":5}}`), 24, false, "", ""},
		{"error event", responseEvent("error", `"code":"server_error","message":"overloaded"`), 0, true, "upstream_error_event", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000)
			c := startServer(t, s)
			run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, body: respBody(`"stream":true,`),
				chunks: []string{textDelta("abcd"), tt.last}})
			capt, ok := env.ledger.onlyCapture()
			if !ok || capt.Estimated != tt.estimated || capt.Metadata["estimate_reason"] != tt.reason ||
				(!tt.estimated && capt.Split.TotalMicro() != tt.total) {
				t.Errorf("capture %+v", capt)
			}
		})
	}
}

// TestResponseOversizedEventsCharged: a response's events repeat the request, so a request with
// megabytes of instructions streams events of megabytes, in many chunks; they are read whole
// and the response charged its usage. An event larger still than the scanner allows stops the
// scanning, and the usage is then read from the stream's last bytes.
func TestResponseOversizedEventsCharged(t *testing.T) {
	big := strings.Repeat("Be brief. ", 150_000) // 1.5 MB
	for _, tt := range []struct {
		name, instructions, echo string
	}{
		{"large instructions, repeated", big, big},
		{"an event beyond any limit", "Be brief.", big + big + big + big}, // 6 MB from a short request
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000_000)
			c := startServer(t, s)
			stream := responseEvent("response.created", fmt.Sprintf(`"response":{"id":"resp_42","instructions":%q,"usage":null}`, tt.echo)) +
				textDelta("Hi") + responseEvent("response.completed",
				fmt.Sprintf(`"response":{"id":"resp_42","instructions":%q,"output":[],"usage":{"input_tokens":300000,"output_tokens":50000}}`, tt.echo))
			var chunks []string
			for rest := stream; rest != ""; {
				n := min(len(rest), 16<<10)
				chunks, rest = append(chunks, rest[:n]), rest[n:]
			}
			res := run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, chunks: chunks,
				body: fmt.Sprintf(`{"model":"m1","stream":true,"instructions":%q,"input":"hi","max_output_tokens":60000}`, tt.instructions)})
			if res.clientBody != stream {
				t.Error("the stream was changed")
			}
			// (300,000 × 1 + 50,000 × 2) × 1.2 = 480,000.
			if capt, ok := env.ledger.onlyCapture(); !ok || capt.Estimated || capt.Split.TotalMicro() != 480_000 {
				t.Errorf("capture %+v", capt)
			}
		})
	}
}

// TestResponseCutNeverAsksForTheProviderRecord: the built-in provider's generation record is
// looked up by a chat completion's id; a cut response is charged its estimate at once.
func TestResponseCutNeverAsksForTheProviderRecord(t *testing.T) {
	fake := generationtest.Start(t, "sk-or-operator", "resp_42", 0, `{"data":{"id":"resp_42","native_tokens_prompt":31,"native_tokens_completion":95}}`)
	e := providerRecordReplica(t, fake.URL, 30*time.Second, testJournal(t))
	run(t, e.client, exchange{path: responsesPath, key: testKey, user: testUser, body: respBody(`"stream":true,`), cancelAfter: 2,
		chunks: []string{responseEvent("response.created", `"response":{"id":"resp_42","usage":null}`), textDelta("abcd"), completedEvent(1, 1)}})
	capt := waitCapture(t, e.ledger.fakeLedger)
	if !capt.Estimated || capt.Metadata["usage_source"] != "" || capt.Metadata["provider_id"] != "resp_42" || fake.Asks.Load() != 0 {
		t.Errorf("capture %+v after %d asks", capt, fake.Asks.Load())
	}
}

// TestResponseFreeModel: a model priced at zero holds and charges nothing, and is served.
func TestResponseFreeModel(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 0)
	c := startServer(t, s)
	res := run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, body: `{"model":"free","input":"hi"}`,
		ctype: "application/json", chunks: []string{responseObject("completed", 10, 5, 0)}})
	if res.immediate != nil || sentBody(t, res)["max_output_tokens"] == nil {
		t.Fatalf("not forwarded: %v", res.immediate)
	}
	if len(env.ledger.holdKeys) != 0 || len(env.ledger.captures) != 0 {
		t.Errorf("%d holds, %d captures for a free model", len(env.ledger.holdKeys), len(env.ledger.captures))
	}
}

// TestResponseLargeEchoCutStreamEstimated: the scanner holds a response's megabyte events, so
// the output streamed after them is still counted when the client leaves before the end.
func TestResponseLargeEchoCutStreamEstimated(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000_000)
	c := startServer(t, s)
	big := strings.Repeat("Be brief. ", 150_000) // 1.5 MB
	var chunks []string
	for rest := responseEvent("response.created", fmt.Sprintf(`"response":{"id":"resp_42","instructions":%q,"usage":null}`, big)); rest != ""; {
		n := min(len(rest), 16<<10)
		chunks, rest = append(chunks, rest[:n]), rest[n:]
	}
	chunks = append(chunks, textDelta(strings.Repeat("z", 400)), completedEvent(1, 1))
	run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, chunks: chunks, cancelAfter: len(chunks) - 1,
		body: fmt.Sprintf(`{"model":"m1","stream":true,"instructions":%q,"input":"hi"}`, big)})
	if capt := waitCapture(t, env.ledger); !capt.Estimated || capt.Metadata["completion_tokens"] != "100" {
		t.Errorf("capture %+v", capt)
	}
}

// TestResponseBudgetAtLeast16: a response's budget is clamped to what the wallet affords like a
// chat completion's, but never below OpenAI's least max_output_tokens (16): below it, the
// top-up message.
func TestResponseBudgetAtLeast16(t *testing.T) {
	// The prompt estimate of "Hello there" is 10 tokens, 12 with the margin: a budget of n costs
	// (12 + 2n) × 1.2 µUSDC.
	for _, tt := range []struct {
		balance int64
		budget  float64 // 0: the top-up message
	}{{44, 0}, {60, 19}} {
		env, s := newFakeEnv(t, testPaywall(), tt.balance)
		c := startServer(t, s)
		res := run(t, c, exchange{path: responsesPath, key: testKey, user: testUser, body: respBody(""),
			ctype: "application/json", chunks: []string{responseObject("completed", 1, 1, 0)}})
		if tt.budget == 0 {
			if a, _ := header(res.immediate.GetHeaders(), ActionHeader); a != string(ActionTopUp) || len(env.ledger.captures) != 0 {
				t.Errorf("balance %d: got %v", tt.balance, res.immediate)
			}
			continue
		}
		if res.immediate != nil || sentBody(t, res)["max_output_tokens"] != tt.budget {
			t.Errorf("balance %d: got %v, sent %v", tt.balance, res.immediate, res.reqBody)
		}
	}
}
