package fakeupstream

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/respjson"
	"github.com/openai/openai-go/v3/responses"
)

// post sends a chat completion and returns the status, the body and the error reading it.
func post(t *testing.T, url, body string, h map[string]string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	return resp.StatusCode, string(b), err
}

func TestFakeUpstream(t *testing.T) {
	f := New(Options{Name: "t", RequireKey: "k", CompletionTokens: 5})
	srv := httptest.NewServer(f)
	defer srv.Close()
	msgs := `"messages":[{"role":"user","content":"one two three"}]`
	tests := []struct {
		name, body string
		header     map[string]string
		check      func(t *testing.T, status int, body string, err error, rec Request)
	}{
		{"json with usage, capped by max_tokens", `{"model":"m","max_tokens":3,` + msgs + `}`, nil, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 200 || !strings.Contains(b, `"content":"w1 w2 w3 "`) || !strings.Contains(b, `"finish_reason":"length"`) || rec.Usage != (Usage{PromptTokens: 6, CompletionTokens: 3}) {
				t.Fatalf("%d %s %+v", st, b, rec.Usage)
			}
		}},
		{"stream without usage", `{"model":"m","stream":true,` + msgs + `}`, nil, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 200 || strings.Contains(b, `"usage"`) || !strings.HasSuffix(b, "data: [DONE]\n\n") || strings.Count(b, "data: ") != 8 {
				t.Fatalf("%d %q", st, b)
			}
		}},
		{"stream with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs + `}`, map[string]string{"x-fake-split-bytes": "5", "x-fake-comment": "1"}, func(t *testing.T, st int, b string, _ error, rec Request) {
			if !rec.IncludeUsage || !strings.Contains(b, `"usage":{`) || !strings.HasPrefix(b, ": OPENROUTER PROCESSING") {
				t.Fatalf("%q", b)
			}
		}},
		{"error status", `{"model":"m",` + msgs + `}`, map[string]string{"x-fake-status": "429"}, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 429 || !strings.Contains(b, `"error"`) {
				t.Fatalf("%d %s", st, b)
			}
		}},
		{"wrong key", `{}`, map[string]string{"Authorization": "Bearer nope"}, func(t *testing.T, st int, _ string, _ error, rec Request) {
			if st != 401 || rec.Authorization != "Bearer nope" {
				t.Fatalf("%d %+v", st, rec)
			}
		}},
		{"mid-stream disconnect", `{"model":"m","stream":true,` + msgs + `}`, map[string]string{"x-fake-disconnect-after": "2"}, func(t *testing.T, st int, b string, err error, rec Request) {
			if err == nil || strings.Contains(b, "[DONE]") {
				t.Fatalf("stream not cut: %q", b)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.Reset()
			status, b, err := post(t, srv.URL, tc.body, tc.header)
			reqs := f.Requests()
			if len(reqs) != 1 {
				t.Fatalf("recorded %d requests", len(reqs))
			}
			tc.check(t, status, b, err, reqs[0])
		})
	}
}

// responsesClient is the real OpenAI SDK pointed at a fake with 5-word completions.
func responsesClient(t *testing.T) (*Server, *httptest.Server, openai.Client) {
	t.Helper()
	f := New(Options{Name: "t", RequireKey: "k", CompletionTokens: 5})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv, openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("k"), option.WithMaxRetries(0))
}

// generation reads the fake's record of a completion the way a gateway asks OpenRouter for it.
func generation(t *testing.T, url, id string) (prompt, completion int64) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/v1/generation?id="+id, nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Data struct {
			Prompt     int64 `json:"native_tokens_prompt"`
			Completion int64 `json:"native_tokens_completion"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("generation %s: %d %v", id, resp.StatusCode, err)
	}
	return body.Data.Prompt, body.Data.Completion
}

// missingRequired names the members the SDK marks api:"required" that the fake left out.
func missingRequired(r responses.Response) []string {
	var missing []string
	for name, f := range map[string]respjson.Field{
		"id": r.JSON.ID, "access_programs": r.JSON.AccessPrograms, "created_at": r.JSON.CreatedAt,
		"error": r.JSON.Error, "incomplete_details": r.JSON.IncompleteDetails, "instructions": r.JSON.Instructions,
		"metadata": r.JSON.Metadata, "model": r.JSON.Model, "object": r.JSON.Object, "output": r.JSON.Output,
		"parallel_tool_calls": r.JSON.ParallelToolCalls, "temperature": r.JSON.Temperature,
		"tool_choice": r.JSON.ToolChoice, "tools": r.JSON.Tools, "top_p": r.JSON.TopP,
	} {
		if f.Raw() == respjson.Omitted {
			missing = append(missing, name)
		}
	}
	return missing
}

// itemList is a Responses input of two user messages, one with string content and one with an
// input_text part: 3+2 + 3+3 = 11 prompt tokens.
func itemList() responses.ResponseNewParamsInputUnion {
	return responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
		responses.ResponseInputItemParamOfMessage("one two", responses.EasyInputMessageRoleUser),
		responses.ResponseInputItemParamOfMessage(responses.ResponseInputMessageContentListParam{
			responses.ResponseInputContentParamOfInputText("three four five")}, responses.EasyInputMessageRoleUser),
	}}
}

func TestResponses(t *testing.T) {
	f, srv, client := responsesClient(t)
	tests := []struct {
		name       string
		params     responses.ResponseNewParams
		text       string
		status     responses.ResponseStatus
		incomplete string
		usage      Usage
		maxTokens  int64
	}{
		{"string input with instructions", responses.ResponseNewParams{Model: "m", User: openai.String("u1"),
			Instructions: openai.String("be brief"), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three")}},
			"w1 w2 w3 w4 w5 ", responses.ResponseStatusCompleted, "", Usage{PromptTokens: 5, CompletionTokens: 5}, 0},
		{"item list capped by max_output_tokens", responses.ResponseNewParams{Model: "m", User: openai.String("u1"),
			MaxOutputTokens: openai.Int(3), Input: itemList()},
			"w1 w2 w3 ", responses.ResponseStatusIncomplete, "max_output_tokens", Usage{PromptTokens: 11, CompletionTokens: 3}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.Reset()
			var raw *http.Response
			resp, err := client.Responses.New(t.Context(), tc.params, option.WithResponseInto(&raw))
			if err != nil {
				t.Fatal(err)
			}
			if ct := raw.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if resp.OutputText() != tc.text || resp.Status != tc.status || resp.IncompleteDetails.Reason != tc.incomplete {
				t.Errorf("text %q status %q incomplete %q", resp.OutputText(), resp.Status, resp.IncompleteDetails.Reason)
			}
			u := resp.Usage
			if u.InputTokens != tc.usage.PromptTokens || u.OutputTokens != tc.usage.CompletionTokens || u.TotalTokens != u.InputTokens+u.OutputTokens {
				t.Errorf("usage %+v, want %+v", u, tc.usage)
			}
			suffix, ok := strings.CutPrefix(resp.ID, "resp_fake-t-")
			if !ok || len(resp.Output) != 1 || resp.Output[0].ID != "msg_fake-t-"+suffix || resp.Output[0].Role != "assistant" {
				t.Errorf("id %q output %+v", resp.ID, resp.Output)
			}
			if m := missingRequired(*resp); len(m) > 0 {
				t.Errorf("required members missing: %v", m)
			}
			reqs := f.Requests()
			if len(reqs) != 1 || reqs[0].Stream || reqs[0].User != "u1" || reqs[0].MaxTokens != tc.maxTokens || reqs[0].Usage != tc.usage {
				t.Fatalf("recorded %+v", reqs)
			}
			if p, c := generation(t, srv.URL, resp.ID); p != tc.usage.PromptTokens || c != tc.usage.CompletionTokens {
				t.Errorf("generation record %d/%d, want %+v", p, c, tc.usage)
			}
		})
	}
}

func TestResponsesStreaming(t *testing.T) {
	f, _, client := responsesClient(t)
	start := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
	end := []string{"response.output_text.done", "response.content_part.done", "response.output_item.done"}
	tests := []struct {
		name   string
		params responses.ResponseNewParams
		header map[string]string
		deltas []string
		last   string
		usage  Usage
	}{
		{"two words a delta, split writes, comment", responses.ResponseNewParams{Model: "m", Input: itemList()},
			map[string]string{"x-fake-words-per-chunk": "2", "x-fake-split-bytes": "7", "x-fake-comment": "1"},
			[]string{"w1 w2 ", "w3 w4 ", "w5 "}, "response.completed", Usage{PromptTokens: 11, CompletionTokens: 5}},
		{"capped by max_output_tokens", responses.ResponseNewParams{Model: "m", MaxOutputTokens: openai.Int(3),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three")}},
			nil, []string{"w1 ", "w2 ", "w3 "}, "response.incomplete", Usage{PromptTokens: 3, CompletionTokens: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.Reset()
			var opts []option.RequestOption
			for k, v := range tc.header {
				opts = append(opts, option.WithHeader(k, v))
			}
			stream := client.Responses.NewStreaming(t.Context(), tc.params, opts...)
			var types, deltas []string
			var last responses.ResponseStreamEventUnion
			for stream.Next() {
				last = stream.Current()
				if last.SequenceNumber != int64(len(types)) {
					t.Errorf("event %d %s has sequence_number %d", len(types), last.Type, last.SequenceNumber)
				}
				types = append(types, last.Type)
				if last.Type == "response.output_text.delta" {
					deltas = append(deltas, last.Delta)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			var want []string
			want = append(want, start...)
			for range tc.deltas {
				want = append(want, "response.output_text.delta")
			}
			want = append(append(want, end...), tc.last)
			if !slices.Equal(types, want) || !slices.Equal(deltas, tc.deltas) {
				t.Fatalf("events %v deltas %q", types, deltas)
			}
			r := last.Response
			u := r.Usage
			if r.OutputText() != strings.Join(deltas, "") || string(r.Status) != strings.TrimPrefix(tc.last, "response.") ||
				u.InputTokens != tc.usage.PromptTokens || u.OutputTokens != tc.usage.CompletionTokens || u.TotalTokens != u.InputTokens+u.OutputTokens {
				t.Errorf("final response %q %q usage %+v, want %+v", r.OutputText(), r.Status, u, tc.usage)
			}
			if m := missingRequired(r); len(m) > 0 {
				t.Errorf("required members missing: %v", m)
			}
			if reqs := f.Requests(); len(reqs) != 1 || !reqs[0].Stream || reqs[0].Usage != tc.usage {
				t.Fatalf("recorded %+v", reqs)
			}
		})
	}
}

func TestResponsesStreamCut(t *testing.T) {
	f, srv, client := responsesClient(t)
	stream := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "m",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three")}},
		option.WithHeader("x-fake-disconnect-after", "2"))
	var id, text string
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.created":
			id = ev.Response.ID
		case "response.output_text.delta":
			text += ev.Delta
		}
	}
	if stream.Err() == nil || text != "w1 w2 " || slices.Contains(types, "response.completed") {
		t.Fatalf("stream not cut after 2 deltas: err %v text %q events %v", stream.Err(), text, types)
	}
	want := Usage{PromptTokens: 3, CompletionTokens: 5} // the generation ran to its end
	if reqs := f.Requests(); len(reqs) != 1 || reqs[0].Status != http.StatusOK || reqs[0].Usage != want {
		t.Fatalf("recorded %+v", reqs)
	}
	if p, c := generation(t, srv.URL, id); p != want.PromptTokens || c != want.CompletionTokens {
		t.Errorf("generation record %d/%d, want %+v", p, c, want)
	}
}

// TestResponsesWire checks the framing the SDK does not: every event is named, in an "event:"
// line matching its JSON type, and nothing follows the terminal event.
func TestResponsesWire(t *testing.T) {
	_, srv, _ := responsesClient(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/responses",
		strings.NewReader(`{"model":"m","stream":true,"input":"hi"}`))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("x-fake-split-bytes", "5")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%v %q", err, resp.Header.Get("Content-Type"))
	}
	frames := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n")
	if len(frames) != 13 { // 4 opening events, 5 deltas, 4 closing
		t.Fatalf("%d frames: %q", len(frames), b)
	}
	for i, fr := range frames {
		name, data, ok := strings.Cut(fr, "\ndata: ")
		var ev struct {
			Type string `json:"type"`
			Seq  *int   `json:"sequence_number"`
		}
		if !ok || json.Unmarshal([]byte(data), &ev) != nil || name != "event: "+ev.Type || ev.Seq == nil || *ev.Seq != i {
			t.Errorf("frame %d: %q", i, fr)
		}
	}
	if !strings.HasPrefix(frames[12], "event: response.completed\n") {
		t.Errorf("last frame %q", frames[12])
	}
}

// TestEmbeddings reads the fake's vectors and usage with the real SDK, for each shape of input
// the API takes: one vector per text or token-id list, the usage the words of each text (at
// least 1) or the number of ids.
func TestEmbeddings(t *testing.T) {
	f, _, client := responsesClient(t)
	tests := []struct {
		name    string
		input   openai.EmbeddingNewParamsInputUnion
		vectors int
		tokens  int64
	}{
		{"one string", openai.EmbeddingNewParamsInputUnion{OfString: openai.String("one two three")}, 1, 3},
		{"strings, one empty", openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one two", ""}}, 2, 3},
		{"token ids", openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: []int64{7, 8, 9, 10}}, 1, 4},
		{"lists of token ids", openai.EmbeddingNewParamsInputUnion{OfArrayOfTokenArrays: [][]int64{{7, 8}, {9}}}, 2, 3},
	}
	for _, tc := range tests {
		for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
			t.Run(tc.name+" "+string(format), func(t *testing.T) {
				f.Reset()
				res, err := client.Embeddings.New(t.Context(), openai.EmbeddingNewParams{Model: "m", Input: tc.input, EncodingFormat: format, User: openai.String("u1")})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Data) != tc.vectors || res.Usage.PromptTokens != tc.tokens || res.Usage.TotalTokens != tc.tokens {
					t.Fatalf("%d vectors, usage %+v; want %d vectors, %d tokens", len(res.Data), res.Usage, tc.vectors, tc.tokens)
				}
				for i, d := range res.Data {
					vec := make([]float32, len(d.Embedding)) // the fake's float32s, as either encoding carries them
					for j, x := range d.Embedding {
						vec[j] = float32(x)
					}
					if d.Index != int64(i) || !slices.Equal(vec, []float32{0.1, 0.2, 0.3, 0.4}) {
						t.Errorf("vector %d: index %d, %v", i, d.Index, d.Embedding)
					}
				}
				if reqs := f.Requests(); len(reqs) != 1 || reqs[0].User != "u1" || reqs[0].Usage != (Usage{PromptTokens: tc.tokens}) {
					t.Fatalf("recorded %+v", reqs)
				}
			})
		}
	}
}

// TestTake checks that Take hands each request over once and forgets the generation records.
func TestTake(t *testing.T) {
	f, srv, _ := responsesClient(t)
	if st, _, err := post(t, srv.URL, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, nil); st != http.StatusOK || err != nil {
		t.Fatalf("%d %v", st, err)
	}
	taken := f.Take()
	if len(taken) != 1 || taken[0].Usage != (Usage{PromptTokens: 4, CompletionTokens: 5}) {
		t.Fatalf("took %+v", taken)
	}
	if again, left := f.Take(), f.Requests(); len(again) != 0 || len(left) != 0 {
		t.Errorf("after Take: took %+v, left %+v", again, left)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/generation?id=chatcmpl-fake-t-1", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("generation record after Take: %d, want 404", resp.StatusCode)
	}
}
